"""What a finished run reports besides its metrics: the learned scenes (per-scene co-occurrence probabilities,
scene usage, agreement with the true scenes on synthetic data) and the reported model's validation predictions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from salgl_core.metrics import contingency, nmi

if TYPE_CHECKING:
    from salgl_core.model import SALGL


def scene_report(model: SALGL, scenes: np.ndarray, class_names: list[str],
                 true_scenes: np.ndarray | None = None) -> dict[str, Any]:
    """Per-scene co-occurrence probabilities P(j | i, k), scene usage on validation images and, on
    synthetic data, the agreement between learned and true scenes."""
    co = model.cooccurrence
    k = co.counts.shape[0]
    usage = np.bincount(scenes.astype(np.int64), minlength=k)[:k] / max(len(scenes), 1)
    report: dict[str, Any] = {
        "num_scenes": k, "class_names": list(class_names),
        "cooccurrence_prob": np.round(co.probabilities().cpu().numpy(), 5).tolist(),
        "cooccurrence_counts_diag": np.round(torch.diagonal(co.counts, dim1=1, dim2=2).cpu().numpy(), 3).tolist(),
        "scene_usage": usage.tolist(), "true_scene_nmi": None, "contingency": None,
    }
    if true_scenes is not None and len(true_scenes) == len(scenes):
        kt = int(true_scenes.max()) + 1
        report["true_scene_nmi"] = float(nmi(scenes, true_scenes))
        report["contingency"] = contingency(scenes, true_scenes, k, kt).astype(int).tolist()
    return report


def best_predictions(val: Any, best: dict[str, Any]) -> dict[str, np.ndarray]:
    """FitResult.predictions from the checkpoint's `best_scores` ({epoch, scores, index}): the targets, the
    ignore mask and the image ids come from the validation dataset, row by row."""
    index = best["index"].numpy()
    ids = np.asarray(val.ids)[index] if val.ids is not None else index
    return {"scores": best["scores"].numpy(), "targets": val.labels[index], "ignore": val.ignore[index],
            "image_ids": ids}
