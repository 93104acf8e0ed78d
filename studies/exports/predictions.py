"""A finished trial's validation predictions, from its Ray worker to the export's predictions/ folder.

The trial reports `schema.REPORTED_METRIC`, the EMA model at its best epoch; the engine keeps that model's
validation scores (`FitResult.predictions`). The worker, possibly on another node, writes them as one file
(`TRANSFER_FILE`) into the Tune checkpoint of its final report (`write_transfer`); the driver's callback
reads that one file from the checkpoint's filesystem, a local folder or the cluster's shared storage, never
the model checkpoint beside it, and writes predictions/<trial_id>.npz and, once per run,
predictions/targets.npz (`export_trial`, `save_predictions`, `save_targets`). numpy only in the worker.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from salgl_core.io import atomic_write_bytes
from studies.exports import schema

TRANSFER_FILE = "predictions.npz"
_ARRAYS = ("scores", "targets", "ignore", "image_ids")
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def _npz_bytes(compressed: bool, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def id_array(image_ids: Any, n: int) -> np.ndarray:
    """One id per score row as an npz-safe array: integers stay integers, anything else becomes fixed-width text,
    which loads without pickle."""
    ids = np.asarray(image_ids)
    if ids.shape != (n,):
        raise ValueError(f"image_ids must be a list of {n} ids (one per score row), got shape {ids.shape}")
    # Integers stay integers; anything else becomes fixed-width text, which loads without pickle.
    return ids.astype(np.int64) if ids.dtype.kind in "iu" else ids.astype(str)


def save_predictions(run_dir: str | Path, trial_id: str, scores: np.ndarray, image_ids: Any) -> Path:
    """Writes predictions/<trial_id>.npz: float16 `scores` [N, C] of the reported model and `image_ids` [N]."""
    if not _SAFE_ID.match(str(trial_id)):
        raise ValueError(f"trial_id {trial_id!r} cannot name a file: use letters, digits, '_', '-' or '.'")
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim != 2:
        raise ValueError(f"scores must be [N images, C classes], got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError(f"trial {trial_id}: scores contain NaN, so they cannot be ranked; save only finished trials")
    path = Path(run_dir) / schema.PREDICTIONS_DIR / f"{trial_id}.npz"
    # Uncompressed: float16 scores shrink only ~12% with zlib, and writing stays ~10x faster.
    atomic_write_bytes(path, _npz_bytes(False, scores=s.astype(np.float16), image_ids=id_array(image_ids, len(s))))
    return path


def save_targets(run_dir: str | Path, targets: np.ndarray, ignore: np.ndarray | None, image_ids: Any) -> Path:
    """Writes predictions/targets.npz once per run: int8 `targets` (1/0), bool `ignore` and `image_ids`."""
    t = np.asarray(targets)
    if t.ndim != 2 or not np.isin(t, (-1, 0, 1)).all():
        raise ValueError(f"targets must be [N, C] of 0/1 (-1 counts as 0), got shape {t.shape}")
    ign = np.zeros(t.shape, dtype=bool) if ignore is None else np.asarray(ignore, dtype=bool)
    if ign.shape != t.shape:
        raise ValueError(f"ignore shape {ign.shape} does not match targets shape {t.shape}")
    path = Path(run_dir) / schema.PREDICTIONS_DIR / schema.TARGETS_FILE
    atomic_write_bytes(path, _npz_bytes(True, targets=(t == 1).astype(np.int8), ignore=ign,
                                         image_ids=id_array(image_ids, len(t))))
    return path



def write_transfer(folder: str | Path, predictions: dict[str, np.ndarray]) -> Path:
    """Worker side: the predictions as `folder`/TRANSFER_FILE (float16 scores, as the export keeps them)."""
    ids = predictions["image_ids"]
    path = Path(folder) / TRANSFER_FILE
    np.savez(path, scores=np.asarray(predictions["scores"], dtype=np.float16),
             targets=(np.asarray(predictions["targets"]) == 1).astype(np.int8),
             ignore=np.asarray(predictions["ignore"], dtype=bool),
             image_ids=id_array(ids, len(ids)))
    return path


def read_transfer(checkpoint: Any) -> dict[str, np.ndarray]:
    """Driver side: the arrays of a Tune checkpoint's TRANSFER_FILE, read through the checkpoint's own
    filesystem (pyarrow: a local path or a URI). FileNotFoundError if the trial wrote none."""
    path = f"{checkpoint.path.rstrip('/')}/{TRANSFER_FILE}"
    try:
        with checkpoint.filesystem.open_input_stream(path) as f:
            data = f.read()
    except (FileNotFoundError, OSError) as e:
        raise FileNotFoundError(f"no {TRANSFER_FILE} in the trial's final checkpoint {checkpoint.path}") from e
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        missing = [k for k in _ARRAYS if k not in z.files]
        if missing:
            raise ValueError(f"{TRANSFER_FILE} in {checkpoint.path} lacks {missing}")
        return {k: z[k] for k in _ARRAYS}


def export_trial(run_dir: str | Path, trial_id: str, checkpoint: Any) -> Path:
    """Writes predictions/<trial_id>.npz from the trial's final checkpoint, and predictions/targets.npz if
    the run has none yet (every trial of a run is scored on the same validation images)."""
    if checkpoint is None:
        raise FileNotFoundError(f"trial {trial_id} ended without a checkpoint")
    arrays = read_transfer(checkpoint)
    if not (Path(run_dir) / schema.PREDICTIONS_DIR / schema.TARGETS_FILE).is_file():
        save_targets(run_dir, arrays["targets"], arrays["ignore"], arrays["image_ids"])
    return save_predictions(run_dir, trial_id, arrays["scores"], arrays["image_ids"])
