"""Training checkpoints that load with `torch.load(weights_only=True)`: tensors, numbers, strings,
lists and dicts only (RNG states are converted; no pickled objects)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salgl_core.io import atomic_writer

# A run folder's files: the checkpoint a resume continues from, and the EMA weights of its best epoch.
CHECKPOINT = "checkpoint.pt"
BEST_EMA = "best_ema.pt"
# A new best epoch's EMA weights wait here until the epoch's checkpoint is written (commit_best): with
# checkpoint_every > 1 a crash rolls the run back to its last checkpoint, and best_ema.pt must not hold an epoch the
# resumed history no longer has.
BEST_EMA_PENDING = ".best_ema.pending.pt"


def capture_rng() -> dict[str, Any]:
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": list(mt), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to `path`, atomically (a crash mid-write leaves the previous checkpoint intact). torch.save
    streams each tensor into the temporary file (a CUDA one through a CPU copy of that tensor alone), so the
    process never holds a serialized copy of the whole checkpoint (1.9 GB on ResNet-101) in memory."""
    with atomic_writer(path) as f:
        torch.save(obj, f)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    atomic_torch_save(state, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_due(epoch: int, epochs: int, every: int) -> bool:
    """Whether epoch `epoch` of `epochs` writes the checkpoint a resume continues from (TrainConfig.checkpoint_every
    = `every`): every `every`-th epoch (counted from the run's first, so a resumed run keeps the same epochs) and
    always the last; `every` 0: the last only. An early-stopped run also writes one at the epoch it stops."""
    return epoch == epochs or (every > 0 and epoch % every == 0)


def commit_best(out: Path) -> None:
    """After a checkpoint is written: the pending best EMA weights (if any) become best_ema.pt."""
    if (out / BEST_EMA_PENDING).is_file():
        (out / BEST_EMA_PENDING).replace(out / BEST_EMA)


def settle_pending_best(out: Path, restored_epoch: int) -> str | None:
    """On resume from the checkpoint of `restored_epoch`: pending best weights of that epoch or earlier are committed
    (a crash came between the checkpoint and the commit), later ones deleted (their epoch is trained again). Returns a
    line to log when a pending file was deleted."""
    pending = out / BEST_EMA_PENDING
    if not pending.is_file():
        return None
    epoch = int(torch.load(pending, map_location="cpu", weights_only=True)["epoch"])
    if epoch <= restored_epoch:
        commit_best(out)
        return None
    pending.unlink()
    return (f"best EMA weights of epoch {epoch} dropped: the run resumes after epoch {restored_epoch} and trains "
            "it again")
