"""A finished trial's validation predictions, from its Ray worker to the export's predictions/ folder.

The trial reports `schema.REPORTED_METRIC`, the EMA model at its best epoch; the engine keeps that model's
validation scores (`FitResult.predictions`). The worker, possibly on another node, writes them as one file
(`TRANSFER_FILE`) into the Tune checkpoint of its final report (`write_transfer`); the driver's callback
reads that one file from the checkpoint's filesystem, a local folder or the cluster's shared storage, never
the model checkpoint beside it, and writes predictions/<trial_id>.npz and, once per run,
predictions/targets.npz with studies.analyze (`export_trial`). numpy only in the worker.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from studies import schema

TRANSFER_FILE = "predictions.npz"
_ARRAYS = ("scores", "targets", "ignore", "image_ids")


def write_transfer(folder: str | Path, predictions: dict[str, np.ndarray]) -> Path:
    """Worker side: the predictions as `folder`/TRANSFER_FILE (float16 scores, as the export keeps them)."""
    ids = np.asarray(predictions["image_ids"])
    path = Path(folder) / TRANSFER_FILE
    np.savez(path, scores=np.asarray(predictions["scores"], dtype=np.float16),
             targets=(np.asarray(predictions["targets"]) == 1).astype(np.int8),
             ignore=np.asarray(predictions["ignore"], dtype=bool),
             # Integer ids stay integers; anything else becomes fixed-width text, which loads without pickle.
             image_ids=ids.astype(np.int64) if ids.dtype.kind in "iu" else ids.astype(str))
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
    from studies.analyze import save_predictions, save_targets  # scipy: only the driver needs it

    if checkpoint is None:
        raise FileNotFoundError(f"trial {trial_id} ended without a checkpoint")
    arrays = read_transfer(checkpoint)
    if not (Path(run_dir) / schema.PREDICTIONS_DIR / schema.TARGETS_FILE).is_file():
        save_targets(run_dir, arrays["targets"], arrays["ignore"], arrays["image_ids"])
    return save_predictions(run_dir, trial_id, arrays["scores"], arrays["image_ids"])
