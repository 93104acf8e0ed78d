"""Datasets for SALGL: synthetic (embedded default), MS-COCO, VOC 2007, NUS-WIDE.

`build_datasets(cfg)` checks every path and lists every image before anything starts (one `DataError`
naming the path and what was expected there), then returns train/val datasets whose items are
(image uint8 [3,S,S], target float32 [C], ignore bool [C], index, scene), scene being the image's true scene id
or -1 where the dataset records none (only synthetic data does). Images are decoded lazily; a corrupt one is
a `CorruptImageError`, or with `cfg.skip_corrupt` a marker that `collate` drops and counts. Batches stay uint8
(a quarter of float32's bytes through the workers' shared memory); `transforms.to_model_input` normalises them
on the device, and every caller that feeds a batch to a model calls it.

Each dataset is one builder `(DataConfig) -> DatasetBundle` in its module, registered under its name in
`salgl_core.registry.datasets` (where the names are declared, torch-free, for the config).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from salgl_core.config import AUTO_WORKERS, DataConfig
from salgl_core.data import coco, nuswide, synthetic, voc  # noqa: F401  (importing them registers their builders)
from salgl_core.data.bundle import DatasetBundle
from salgl_core.data.errors import CorruptImageError, DataError
from salgl_core.data.images import MultiLabelDataset, SkippedImage, collate
from salgl_core.registry import datasets

__all__ = ["CorruptImageError", "DataError", "DatasetBundle", "MultiLabelDataset", "SkippedImage",
           "available_cpus", "build_datasets", "build_loader", "collate", "resolve_num_workers", "seed_worker"]

# Auto workers stop here: past 8, decoding outpaces one GPU and each worker costs memory and /dev/shm.
MAX_AUTO_WORKERS = 8


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's or a Ray worker's share), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_num_workers(requested: int, cpus: int) -> int:
    """DataLoader workers for DataConfig.num_workers = `requested` on `cpus` CPUs: an explicit count (>= 0) as it
    is; auto (-1) min(8, cpus - 1), one CPU staying with the training process (1 CPU: 0, loading in-process)."""
    if requested != AUTO_WORKERS:
        return requested
    return max(0, min(MAX_AUTO_WORKERS, int(cpus) - 1))


def build_datasets(cfg: DataConfig) -> DatasetBundle:
    """Resolve, check and index the dataset `cfg.dataset`; raises DataError naming any missing path."""
    return datasets.get(cfg.dataset)(cfg)


def seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy and random need the same by hand.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int = 0, drop_last: bool = False,
                 seed: int = 0, generator: torch.Generator | None = None) -> DataLoader:
    """DataLoader with `collate`, a seeded shuffle and seeded workers (the training loop's loader).

    Workers are not persistent: they are re-seeded from `generator` at every pass, so reseeding the
    generator per epoch makes the data order and augmentations of epoch e depend on (seed, e) alone,
    which is what makes resume exact. `num_workers` -1 (auto): from the CPUs this process may use (a study trial
    passes its own count, resolved from the trial's CPUs)."""
    num_workers = resolve_num_workers(num_workers, available_cpus())
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, generator=g) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, collate_fn=collate, generator=g, worker_init_fn=seed_worker,
                      pin_memory=torch.cuda.is_available(), prefetch_factor=4 if num_workers > 0 else None)
