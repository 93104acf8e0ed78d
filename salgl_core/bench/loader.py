"""Loader benchmark: throughput of the training data pipeline (decode + augment + collate through the
training DataLoader) per worker count, beside bare JPEG decoding (PIL open + convert("RGB")) of the same
files. Sources: generated COCO-like JPEGs (640x480, always measured, official train recipe at 448 px),
the synthetic data (64 px, its light recipe) and, with --real-data, real COCO files (coco128 /
coco_tiny_train2017 in that folder, official train recipe at 448 px).

Steady state only: a loader's workers fill a queue of workers x prefetch_factor batches while the first
one is made, and a timing that starts after one batch counts that queue as free throughput (1.5-2x too
high at 2 workers). So the first `warmup_batches(loader)` batches are drawn untimed (the first one's time is
reported as start-up), then `batches` batches are timed; the dataset is cycled so that all of them come
from one pass (a new pass would restart the workers).

    python -m salgl_core.bench loader [--workers 0 1 2] [--batches 8] [--coco-like-images 64] [--real-data DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

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
# Generated stand-ins for COCO photos: COCO's commonest size and its encoding (4:4:4 chroma, quality ~90);
# the noise level puts the files near COCO's mean size (~160 KB) and bare decoding near its speed.
COCO_LIKE_SIZE = (640, 480)
COCO_LIKE_QUALITY = 90
_COCO_LIKE_NOISE = 14


def _write_jpeg(job: tuple[str, int]) -> None:
    """A smooth random colour field plus noise: it compresses like a photo, not like flat colour."""
    path, seed = job
    (w, h), rng = COCO_LIKE_SIZE, np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    noisy = np.asarray(low, dtype=np.int16) + rng.integers(-_COCO_LIKE_NOISE, _COCO_LIKE_NOISE + 1, (h, w, 3),
                                                           dtype=np.int16)
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=COCO_LIKE_QUALITY, subsampling=0)


def generate_jpegs(folder: Path, n: int, processes: int = 1) -> list[str]:
    """`n` COCO-like JPEGs (640x480) in `folder`; their paths. The train transform resizes them, as COCO's."""
    jobs = [(str(folder / f"{i:06d}.jpg"), i) for i in range(n)]
    if processes > 1 and n > 16:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.map(_write_jpeg, jobs, chunksize=8)
    else:
        for job in jobs:
            _write_jpeg(job)
    return [j[0] for j in jobs]


def warmup_batches(loader: DataLoader) -> int:
    """Batches to draw before timing: all that the workers may have queued (workers x prefetch_factor) while
    the first was made, or the first alone without workers (start-up, caches)."""
    return max(1, loader.num_workers * (loader.prefetch_factor or 0))


def steady_loader(ds: Dataset, batch_size: int, num_workers: int, batches: int,
                  seed: int = 0) -> tuple[DataLoader, int]:
    """The training loader (shuffled, full batches) over `ds` cycled to warm-up + `batches` batches in one
    pass, and its warm-up batch count. `num_workers` as build_loader takes it (-1: auto)."""
    skip = warmup_batches(build_loader(ds, batch_size, shuffle=True, num_workers=num_workers, seed=seed))
    cycled = Subset(ds, (np.arange((skip + batches) * batch_size) % len(ds)).tolist())
    return build_loader(cycled, batch_size, shuffle=True, num_workers=num_workers, drop_last=True, seed=seed), skip


def decode_rate(paths: Sequence[str], max_images: int = 200) -> dict[str, float]:
    paths = list(paths)[:max_images]
    t0 = time.perf_counter()
    for p in paths:
        with Image.open(p) as img:
            img.convert("RGB")
    dt = time.perf_counter() - t0
    return {"images": len(paths), "seconds": round(dt, 4), "images_per_s": round(len(paths) / dt, 1)}


def loader_rate(ds: Dataset, batch_size: int, num_workers: int, batches: int) -> dict[str, Any]:
    """Steady-state images/s of the training loader over `ds` (see the module docstring)."""
    loader, skip = steady_loader(ds, batch_size, num_workers, batches)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    for _ in range(skip - 1):
        next(it)
    n_img = 0
    t0 = time.perf_counter()
    for _ in range(batches):
        n_img += next(it)["images"].shape[0]
    dt = time.perf_counter() - t0
    del it
    return {"workers": loader.num_workers, "batch_size": batch_size, "warmup_batches": skip, "batches": batches,
            "images": n_img, "seconds": round(dt, 4), "images_per_s": round(n_img / dt, 1),
            "first_batch_s": round(first, 3)}


def _measure(ds: MultiLabelDataset, workers: Sequence[int], batch_size: int, batches: int) -> dict[str, Any]:
    return {"image_size": ds.image_size, "images": len(ds), "decode": decode_rate(ds.paths),
            "loader": {str(w): loader_rate(ds, batch_size, w, batches) for w in workers}}


def _coco_like(n: int, workers: Sequence[int], batch_size: int, batches: int, cfg: DataConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="salgl-bench-loader-") as tmp:
        t0 = time.perf_counter()
        paths = generate_jpegs(Path(tmp), n, max(1, min(4, os.cpu_count() or 1)))
        gen = {"jpegs": n, "size": list(COCO_LIKE_SIZE), "quality": COCO_LIKE_QUALITY,
               "mean_kb": round(float(np.mean([os.path.getsize(p) for p in paths])) / 1e3, 1),
               "seconds": round(time.perf_counter() - t0, 3)}
        labels = (np.random.default_rng(0).random((n, 80)) < 0.05).astype(np.uint8)
        ds = MultiLabelDataset(paths, labels, [f"c{i}" for i in range(80)], train_transform(cfg), cfg.image_size)
        return {"recipe": f"official train ({cfg.image_size} px) on generated 640x480 JPEGs", "generation": gen,
                **_measure(ds, workers, batch_size, batches)}


def loader_benchmark(workers: Sequence[int] = (0, 1, 2), batches: int = 8,
                     real_data: str | os.PathLike | None = None, real_batch_size: int = 16,
                     synthetic_batch_size: int = 64, synthetic: DataConfig | None = None,
                     coco_like_images: int = 64) -> dict[str, Any]:
    """Images/s of the train pipeline per worker count and of bare decoding; a JSON-able dict.

    `real_data`: the folder holding coco128/ and coco_tiny_train2017/ (or its parent with data/); None
    measures the generated and synthetic data only. `synthetic`: its config (default: the default synthetic
    data). `coco_like_images`: distinct generated 640x480 JPEGs (cycled as needed; 0 skips that source)."""
    out: dict[str, Any] = {
        "benchmark": "loader", "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "workers": list(workers),
        "sources": {},
    }
    real_cfg = DataConfig(dataset="coco", image_size=448)  # official recipe: flip + cutout + RandAugment
    if coco_like_images > 0:
        out["sources"]["coco_like"] = _coco_like(coco_like_images, workers, real_batch_size, batches, real_cfg)
    else:
        out["sources"]["coco_like"] = {"skipped": "--coco-like-images 0"}
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
    p.add_argument("--batches", type=int, default=8, metavar="N",
                   help="timed batches per worker count, after the warm-up (default: 8)")
    p.add_argument("--coco-like-images", type=int, default=64, metavar="N",
                   help="distinct generated 640x480 JPEGs for the COCO-like source; 0 skips it (default: 64)")
    p.add_argument("--real-data", default=None, metavar="DIR",
                   help="folder holding coco128/ and coco_tiny_train2017/ (e.g. the shared test data folder); "
                        "default: none, the generated and synthetic data only")
    p.add_argument("--synthetic-batch-size", type=int, default=64, metavar="N",
                   help="batch size on the synthetic data (default: 64)")
    # The synthetic data to measure: the config's own flags, so sizes and cache match a training run's.
    add_config_arguments(p, only=SYNTHETIC_FLAGS, shown_defaults={})


def run(args: argparse.Namespace) -> dict[str, Any]:
    given = {k: getattr(args, k) for k in SYNTHETIC_FLAGS if hasattr(args, k)}
    synthetic = DataConfig(dataset="synthetic", image_size=64, **given)
    return loader_benchmark(workers=args.workers, batches=args.batches, real_data=args.real_data,
                            synthetic_batch_size=args.synthetic_batch_size, synthetic=synthetic,
                            coco_like_images=args.coco_like_images)
