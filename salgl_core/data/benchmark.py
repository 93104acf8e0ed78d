"""Throughput of the training data pipeline: decode + augment + collate through a DataLoader.

Measured per worker count on real COCO files (../shared/data/coco128 and coco_tiny_train2017, official
train recipe at 448 px) and on the synthetic data (64 px, its light recipe), beside bare JPEG decoding
(PIL open + convert("RGB")) of the same files. The first batch of each loader is not timed (worker
start-up); it is reported separately.

    python -m salgl_core.data.benchmark [--workers 0 1 2] [--batches 10] [--shared-root ../shared]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from salgl_core.config import DataConfig
from salgl_core.data import build_loader
from salgl_core.data.coco import load_coco_split
from salgl_core.data.images import MultiLabelDataset
from salgl_core.data.synthetic import generate_synthetic
from salgl_core.data.transforms import train_transform

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_SOURCES = {"coco128": "coco128", "coco_tiny": "coco_tiny_train2017"}


def _data_dir(shared_root: str | os.PathLike | None) -> Path:
    root = Path(shared_root) if shared_root is not None else REPO_ROOT.parent / "shared"
    return root / "data" if (root / "data").is_dir() else root


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
        except StopIteration:  # small sets: keep going over further epochs (workers persist)
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


def loader_benchmark(workers: Sequence[int] = (0, 1, 2), batches: int = 10,
                     shared_root: str | os.PathLike | None = None, real_batch_size: int = 16,
                     synthetic_batch_size: int = 64) -> dict[str, Any]:
    """Images/s of the train pipeline per worker count and of bare decoding; a JSON-able dict."""
    out: dict[str, Any] = {
        "benchmark": "loader", "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "workers": list(workers),
        "sources": {},
    }
    data_dir = _data_dir(shared_root)
    real_cfg = DataConfig(dataset="coco", image_size=448)  # official recipe: flip + cutout + RandAugment
    for name, folder in REAL_SOURCES.items():
        root = data_dir / folder
        ann = root / "annotations" / "instances_train2017.json"
        if not ann.is_file():
            out["sources"][name] = {"skipped": f"{ann} not found"}
            continue
        split = load_coco_split(root / "train2017", ann)
        ds = MultiLabelDataset(split.paths, split.labels, split.class_names, train_transform(real_cfg), 448)
        out["sources"][name] = {"recipe": "official train (448 px)", **_measure(ds, workers, real_batch_size,
                                                                                 batches)}
    syn_cfg = DataConfig(dataset="synthetic", image_size=64)
    t0 = time.perf_counter()
    p = generate_synthetic(syn_cfg)
    gen = {"generated": p.generated, "seconds": round(time.perf_counter() - t0, 3), "root": str(p.root)}
    split = load_coco_split(p.train_images, p.train_annotations)
    ds = MultiLabelDataset(split.paths, split.labels, split.class_names, train_transform(syn_cfg), 64)
    out["sources"]["synthetic"] = {"recipe": "synthetic train (64 px)", "generation": gen,
                                   **_measure(ds, workers, synthetic_batch_size, batches)}
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts to time")
    ap.add_argument("--batches", type=int, default=10, help="timed batches per worker count")
    ap.add_argument("--shared-root", default=None,
                    help="folder holding data/coco128 and data/coco_tiny_train2017 (default: ../shared)")
    args = ap.parse_args(argv)
    result = loader_benchmark(workers=args.workers, batches=args.batches, shared_root=args.shared_root)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
