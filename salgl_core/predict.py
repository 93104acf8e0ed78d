"""Scoring a model on a loader: one pass of the validation data for the live and the EMA model (SALGL.md section 2:
both are evaluated after every epoch with the official protocol), and the batch handling training shares with it.

A batch's uint8 images are normalised on the device (`to_device`); the scene ids a model is given come from
ModelConfig.scene_source (`batch_scenes`). Precision on CUDA follows TrainConfig.eval_precision (`eval_precision`:
fp32 = the official evaluate.py; tf32; bf16 autocast); on CPU evaluation always computes in float32. Scores are
sigmoid(float32 logits) whatever the forward's precision, so the metrics (salgl_core.metrics) see float32.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch.utils.data import DataLoader

from salgl_core.config import ModelConfig
from salgl_core.data.transforms import to_model_input
from salgl_core.model import SALGL, random_scenes


def to_device(batch: dict, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's images (uint8, normalised on the device: data.transforms.to_model_input) and targets on `device`."""
    images = to_model_input(batch["images"], device, channels_last)  # uint8 normalised on the device
    return images, batch["targets"].to(device, non_blocking=True)


def batch_scenes(batch: dict, cfg: ModelConfig, split: str) -> torch.Tensor | None:
    """The scene ids the model is given (ModelConfig.scene_source): None for learned (SALGL's classifier
    decides), the batch's true ids for the oracle, and for random the fixed ids of `random_scenes`, computed
    from the dataset index and split alone, so that the control never reads the true ids."""
    if cfg.scene_source == "oracle":
        return batch["scene"]
    if cfg.scene_source == "random":
        return random_scenes(batch["index"], split, cfg.num_scenes)
    return None


def eval_settings(device: torch.device, precision: str) -> tuple[bool | None, torch.dtype | None]:
    """What TrainConfig.eval_precision means on `device`: (TF32 on or off, None = leave the flags alone; the autocast
    dtype, None = none). On CPU nothing changes: evaluation runs in float32."""
    if device.type != "cuda":
        return None, None
    return precision != "fp32", (torch.bfloat16 if precision == "bf16" else None)


@contextmanager
def eval_precision(device: torch.device, precision: str) -> Iterator[None]:
    """Evaluate in `precision` (eval_settings), the TF32 flags restored afterwards (training keeps its own)."""
    tf32, dtype = eval_settings(device, precision)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@torch.no_grad()
def predict_models(models: Sequence[SALGL], loader: DataLoader, device: torch.device, precision: str = "fp32",
                   channels_last: bool = False, split: str = "val",
                   share_backbone: bool = False) -> list[dict[str, np.ndarray]]:
    """One pass of `loader`: each batch is decoded once and scored by every model (a model and its EMA copy: they
    share the config, so the given scene ids are computed once). Per model: sigmoid scores (float32, from float32
    logits), targets, ignore mask, argmax scene and dataset index of every image of `split`. With
    `share_backbone` the backbone of models[0] runs once per batch and every model takes its output: only right
    when all backbones are equal (a frozen one, not yet swapped for a feature cache; engine._shared_backbone).
    `precision`: TrainConfig.eval_precision (on CUDA; CPU computes in float32)."""
    for m in models:
        m.eval()
    scores: list[list[torch.Tensor]] = [[] for _ in models]
    scenes: list[list[torch.Tensor]] = [[] for _ in models]
    targets, ignore, index = [], [], []
    with eval_precision(device, precision):
        for batch in loader:
            if batch["images"].shape[0] == 0:
                continue
            images = to_model_input(batch["images"], device, channels_last)  # the targets stay on the host
            given = batch_scenes(batch, models[0].cfg, split)
            if share_backbone:
                images = models[0].backbone(images)
            for i, m in enumerate(models):
                out = m(images, scenes=given, from_features=share_backbone)
                # Kept on the device until the pass ends: one copy to the host, not one per batch.
                scores[i].append(torch.sigmoid(out.logits.float()))
                scenes[i].append(out.scene_probs.argmax(dim=1))
            targets.append(batch["targets"])
            ignore.append(batch["ignore"])
            index.append(batch["index"])
    cat = lambda xs: torch.cat(xs).cpu().numpy() if xs else np.zeros((0,))  # noqa: E731
    shared = {"targets": cat(targets), "ignore": cat(ignore).astype(bool), "index": cat(index)}
    return [{"scores": cat(s), **shared, "scenes": cat(z)} for s, z in zip(scores, scenes, strict=True)]


def predict(model: SALGL, loader: DataLoader, device: torch.device, precision: str = "fp32",
            channels_last: bool = False, split: str = "val") -> dict[str, np.ndarray]:
    """`predict_models` for one model."""
    return predict_models([model], loader, device, precision, channels_last, split)[0]
