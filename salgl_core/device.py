"""The torch device a run asks for (TrainConfig.device) and how it is named in logs and results."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but CUDA is not available; use --device cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    return "cpu"


def amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype of TrainConfig.amp ('fp16', 'bf16'); None for 'none'."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
