"""Epochs benchmark: what one run's epoch costs on this machine, split into training, evaluation and the rest.

Two runs, each one fit() in this process (issue 19's before/after figures):
  real     the real-image run: EfficientNet-Lite0 at 224 px trained end to end on the 208 COCO 2017 images of
           --real-data (coco128 trains, coco_tiny_train2017 validates: the CI study's split), the COCO recipe's
           label vectors and K = 6 with a CPU-sized head (gnn_steps 1, no outmess, no encoder layer, att_dim 64,
           as tests/test_studies_real_images.py), batch 16, lr 1e-3, the real loader with --workers workers
  cached   the studies' cached-feature trial: the synthetic preset + presets.STUDY_SYNTHETIC (the frozen small
           CNN's tokens cached once; the pretraining and the cache build are one-off costs outside the figures)
Per epoch: train_s (training steps), eval_s (the live and the EMA model scored), and wall_s, the time from one
epoch's end to the next (checkpoint and epochs.csv included, as in a study trial). Peak RSS of this process and of
its largest child (a loader worker). --threads sets torch's threads (a study trial runs with its CPUs: 1 by
default). Run it on an idle machine: it times wall clock.

    python -m salgl_core.bench epochs real [--epochs 10] [--workers 2] [--threads 2] [--real-data DIR]
    python -m salgl_core.bench epochs cached [--epochs 8] [--threads 1]

Only salgl_core's public API is used (config, presets, fit), so the file also runs against an older checkout:
`PYTHONPATH=OLD python salgl_core/bench/epochs.py real` times that checkout's code with the same settings.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

SUMMARY = "per-epoch train / evaluation / wall seconds and peak RSS of the real-image run and the cached trial"
DEFAULT_REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
ANNOTATIONS = "annotations/instances_train2017.json"


def real_config(real_data: Path, epochs: int, workers: int) -> dict[str, Any]:
    from salgl_core.presets import choose_recipe

    train, val = real_data / "coco128", real_data / "coco_tiny_train2017"
    for d in (train, val):
        if not (d / ANNOTATIONS).is_file():
            raise SystemExit(f"error: {d / ANNOTATIONS} not found; pass --real-data, the folder holding coco128 and "
                             "coco_tiny_train2017 (../shared/data)")
    return {**choose_recipe(None, "coco").overrides(), "backbone": "efficientnet_lite0", "image_size": 224,
            "epochs": epochs, "batch_size": 16, "lr": 1e-3, "gnn_steps": 1, "outmess": False, "enc_layers": 0,
            "att_dim": 64, "num_workers": workers, "early_stop_patience": 0, "device": "cpu",
            "train_images": str(train / "train2017"), "train_annotations": str(train / ANNOTATIONS),
            "val_images": str(val / "train2017"), "val_annotations": str(val / ANNOTATIONS)}


def cached_config(epochs: int) -> dict[str, Any]:
    from salgl_core.presets import STUDY_SYNTHETIC, synthetic_preset

    return {**synthetic_preset(), **STUDY_SYNTHETIC, "epochs": epochs, "seed": 0, "device": "cpu"}


def _peak_mb(who: int) -> int:
    return round(resource.getrusage(who).ru_maxrss / 1024)  # kilobytes on Linux


def measure(flat: dict[str, Any]) -> dict[str, Any]:
    """One fit() of `flat` in a temporary run folder: per-epoch figures, their means and peak RSS."""
    from salgl_core.config import ExperimentConfig
    from salgl_core.engine import fit

    cfg = ExperimentConfig.from_flat(flat)
    ends: list[float] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        res = fit(cfg, out, log=None, on_epoch=lambda _: ends.append(time.perf_counter()))
    ep = res.epochs
    # An epoch's wall time runs from the previous epoch's report (the first: from the first epoch's start).
    starts = [ends[0] - ep[0]["seconds"], *ends[:-1]]
    wall = [e - s for s, e in zip(starts, ends, strict=True)]
    mean = lambda xs: round(sum(xs) / len(xs), 3)  # noqa: E731
    return {"epochs": len(ep), "fit_s": round(time.perf_counter() - t0, 1),
            "train_s": [round(e["train_seconds"], 2) for e in ep], "eval_s": [round(e["eval_seconds"], 2) for e in ep],
            "wall_s": [round(w, 2) for w in wall],
            "mean_train_s": mean([e["train_seconds"] for e in ep]),
            "mean_eval_s": mean([e["eval_seconds"] for e in ep]), "mean_wall_s": mean(wall),
            "best_mAP_ema": round(res.best_mAP_ema, 2), "last_mAP": round(ep[-1]["mAP"], 2),
            "peak_rss_mb": _peak_mb(resource.RUSAGE_SELF),
            "peak_rss_mb_largest_child": _peak_mb(resource.RUSAGE_CHILDREN)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=("real", "cached"), help="the real-image run or the cached-feature study trial")
    p.add_argument("--epochs", type=int, default=None, metavar="N", help="epochs (default: real 10, cached 8)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="real: data-loader workers (default: 2)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads (default: real 2, cached 1, as a study trial with one CPU)")
    p.add_argument("--real-data", type=Path, default=DEFAULT_REAL_DATA, metavar="DIR",
                   help="real: the folder holding coco128 and coco_tiny_train2017 (default: ../shared/data)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import salgl_core

    real = args.kind == "real"
    threads = args.threads or (2 if real else 1)
    torch.set_num_threads(threads)
    epochs = args.epochs or (10 if real else 8)
    flat = real_config(args.real_data, epochs, args.workers) if real else cached_config(epochs)
    return {"kind": args.kind, "code": str(Path(salgl_core.__file__).parent), "threads": threads,
            **({"workers": args.workers} if real else {}), **measure(flat)}


if __name__ == "__main__":
    _p = argparse.ArgumentParser(description=SUMMARY)
    add_arguments(_p)
    print(json.dumps(run(_p.parse_args())))
