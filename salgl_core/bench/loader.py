"""Loader benchmark: throughput of the training data pipeline (decode + augment + collate through the
training DataLoader) per worker count, beside bare JPEG decoding (PIL open + convert("RGB")) of the same
files. Sources: the synthetic data (64 px, its light recipe) and, with --real-data, real COCO files
(coco128 / coco_tiny_train2017 in that folder, official train recipe at 448 px). The first batch of each
loader is not timed (worker start-up); it is reported separately.

    python -m salgl_core.bench loader [--workers 0 1 2] [--batches 8] [--real-data DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from salgl_core.cli import add_config_arguments
from salgl_core.config import DataConfig
from salgl_core.data import build_loader
from salgl_core.data.coco import load_coco_split
from salgl_core.data.images import MultiLabelDataset
from salgl_core.data.synthetic import generate_synthetic
from salgl_core.data.transforms import train_transform

SUMMARY = "training data pipeline throughput vs bare JPEG decoding"
REAL_SOURCES = {"coco128": "coco128", "coco_tiny": "coco_tiny_train2017"}
SYNTHETIC_FLAGS = ("synthetic_train_images", "synthetic_val_images", "cache_dir")


def decode_rate(paths: Sequence[str], max_images: int = 200) -> dict[str, float]:
    paths = list(paths)[:max_images]
    t0 = time.perf_counter()
    for p in paths:
        with Image.open(p) as img:
            img.convert("RGB")
    dt = time.perf_counter() - t0
    return {"images": len(paths), "seconds": round(dt, 4), "images_per_s": round(len(paths) / dt, 1)}


def loader_rate(ds: MultiLabelDataset, batch_size: int, num_workers: int, batches: int) -> dict[str, float]:
    loader = build_loader(ds, batch_size, shuffle=True, num_workers=num_workers, drop_last=False, seed=0)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    n_img = n_batch = 0
    t0 = time.perf_counter()
    while n_batch < batches:
        try:
            batch = next(it)
        except StopIteration:  # small sets: keep going over further passes
            it = iter(loader)
            continue
        n_img += batch["images"].shape[0]
        n_batch += 1
    dt = time.perf_counter() - t0
    del it, loader
    return {"workers": num_workers, "batch_size": batch_size, "batches": n_batch, "images": n_img,
            "seconds": round(dt, 4), "images_per_s": round(n_img / dt, 1), "first_batch_s": round(first, 3)}


def _measure(ds: MultiLabelDataset, workers: Sequence[int], batch_size: int, batches: int) -> dict[str, Any]:
    return {"image_size": ds.image_size, "images": len(ds), "decode": decode_rate(ds.paths),
            "loader": {str(w): loader_rate(ds, batch_size, w, batches) for w in workers}}


def loader_benchmark(workers: Sequence[int] = (0, 1, 2), batches: int = 8,
                     real_data: str | os.PathLike | None = None, real_batch_size: int = 16,
                     synthetic_batch_size: int = 64, synthetic: DataConfig | None = None) -> dict[str, Any]:
    """Images/s of the train pipeline per worker count and of bare decoding; a JSON-able dict.

    `real_data`: the folder holding coco128/ and coco_tiny_train2017/ (or its parent with data/); None
    measures the synthetic data only. `synthetic`: its config (default: the default synthetic data)."""
    out: dict[str, Any] = {
        "benchmark": "loader", "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "workers": list(workers),
        "sources": {},
    }
    real_cfg = DataConfig(dataset="coco", image_size=448)  # official recipe: flip + cutout + RandAugment
    for name, folder in REAL_SOURCES.items():
        if real_data is None:
            out["sources"][name] = {"skipped": "no --real-data folder given"}
            continue
        root = Path(real_data) / "data" if (Path(real_data) / "data").is_dir() else Path(real_data)
        ann = root / folder / "annotations" / "instances_train2017.json"
        if not ann.is_file():
            out["sources"][name] = {"skipped": f"{ann} not found"}
            continue
        split = load_coco_split(root / folder / "train2017", ann)
        ds = MultiLabelDataset(split.paths, split.labels, split.class_names, train_transform(real_cfg), 448)
        out["sources"][name] = {"recipe": "official train (448 px)", **_measure(ds, workers, real_batch_size,
                                                                                 batches)}
    syn_cfg = synthetic or DataConfig(dataset="synthetic", image_size=64)
    t0 = time.perf_counter()
    p = generate_synthetic(syn_cfg)
    gen = {"generated": p.generated, "seconds": round(time.perf_counter() - t0, 3), "root": str(p.root)}
    split = load_coco_split(p.train_images, p.train_annotations)
    ds = MultiLabelDataset(split.paths, split.labels, split.class_names, train_transform(syn_cfg),
                           syn_cfg.image_size)
    out["sources"]["synthetic"] = {"recipe": f"synthetic train ({syn_cfg.image_size} px)", "generation": gen,
                                   **_measure(ds, workers, synthetic_batch_size, batches)}
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], metavar="N",
                   help="DataLoader worker counts to time (default: 0 1 2)")
    p.add_argument("--batches", type=int, default=8, metavar="N", help="timed batches per worker count (default: 8)")
    p.add_argument("--real-data", default=None, metavar="DIR",
                   help="folder holding coco128/ and coco_tiny_train2017/ (e.g. the shared test data folder); "
                        "default: none, the synthetic data only")
    p.add_argument("--synthetic-batch-size", type=int, default=64, metavar="N",
                   help="batch size on the synthetic data (default: 64)")
    # The synthetic data to measure: the config's own flags, so sizes and cache match a training run's.
    add_config_arguments(p, only=SYNTHETIC_FLAGS, shown_defaults={})


def run(args: argparse.Namespace) -> dict[str, Any]:
    given = {k: getattr(args, k) for k in SYNTHETIC_FLAGS if hasattr(args, k)}
    synthetic = DataConfig(dataset="synthetic", image_size=64, **given)
    return loader_benchmark(workers=args.workers, batches=args.batches, real_data=args.real_data,
                            synthetic_batch_size=args.synthetic_batch_size, synthetic=synthetic)
