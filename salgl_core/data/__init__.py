"""Datasets for SALGL: synthetic (embedded default), MS-COCO, VOC 2007, NUS-WIDE.

`build_datasets(cfg)` checks every path and lists every image before anything starts (one `DataError`
naming the path and what was expected there), then returns train/val datasets whose items are
(image [3,S,S], target float32 [C], ignore bool [C], index). Images are decoded lazily; a corrupt one is
a `CorruptImageError`, or with `cfg.skip_corrupt` a marker that `collate` drops and counts.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from salgl_core.config import DataConfig
from salgl_core.data.errors import CorruptImageError, DataError
from salgl_core.data.images import MultiLabelDataset, SkippedImage, collate
from salgl_core.data.transforms import eval_transform, train_transform

__all__ = ["CorruptImageError", "DataError", "DatasetBundle", "MultiLabelDataset", "SkippedImage",
           "build_datasets", "build_loader", "collate", "seed_worker"]

log = logging.getLogger(__name__)


@dataclass
class DatasetBundle:
    train: MultiLabelDataset
    val: MultiLabelDataset
    class_names: list[str]
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)
    train_labels: np.ndarray | None = None  # float32 [N_train, C]
    val_labels: np.ndarray | None = None  # float32 [N_val, C]
    val_true_scenes: np.ndarray | None = None  # int64 [N_val], synthetic only
    val_ignore: np.ndarray | None = None  # bool [N_val, C], VOC only


def _bundle(cfg: DataConfig, train: tuple, val: tuple, names: list[str], info: dict[str, Any],
            train_scenes: np.ndarray | None = None, val_scenes: np.ndarray | None = None,
            val_ignore: np.ndarray | None = None) -> DatasetBundle:
    """train / val: (paths, labels [N, C], ids)."""
    common = {"class_names": names, "image_size": cfg.image_size, "skip_corrupt": cfg.skip_corrupt}
    tr = MultiLabelDataset(train[0], train[1], transform=train_transform(cfg), scene_ids=train_scenes,
                           ids=train[2], **common)
    va = MultiLabelDataset(val[0], val[1], transform=eval_transform(cfg), ignore=val_ignore,
                           scene_ids=val_scenes, ids=val[2], **common)
    info = {"dataset": cfg.dataset, **info, "num_train": len(tr), "num_val": len(va), "num_classes": len(names)}
    return DatasetBundle(train=tr, val=va, class_names=names, num_classes=len(names), info=info,
                         train_labels=tr.labels, val_labels=va.labels, val_true_scenes=va.scene_ids,
                         val_ignore=None if val_ignore is None else va.ignore)


def _coco_bundle(cfg: DataConfig, extra_info: dict[str, Any] | None = None) -> DatasetBundle:
    from salgl_core.data.coco import load_coco

    tr, va, info = load_coco(cfg)
    return _bundle(cfg, (tr.paths, tr.labels, tr.image_ids), (va.paths, va.labels, va.image_ids),
                   tr.class_names, {**info, **(extra_info or {})}, tr.scene_ids, va.scene_ids)


def build_datasets(cfg: DataConfig) -> DatasetBundle:
    """Resolve, check and index the dataset `cfg.dataset`; raises DataError naming any missing path."""
    if cfg.dataset == "synthetic":
        import dataclasses

        from salgl_core.data.synthetic import generate_synthetic, synthetic_params

        given = {f: getattr(cfg, f) for f in ("data_root", "train_images", "train_annotations", "val_images",
                                               "val_annotations") if getattr(cfg, f) is not None}
        if given:
            log.warning("dataset=synthetic generates its own data; ignoring %s", given)
        p = generate_synthetic(cfg)
        coco_cfg = dataclasses.replace(cfg, data_root=None, train_images=str(p.train_images),
                                       train_annotations=str(p.train_annotations), val_images=str(p.val_images),
                                       val_annotations=str(p.val_annotations))
        extra = {"synthetic_root": str(p.root), "synthetic_params": synthetic_params(cfg),
                 "synthetic_generated": p.generated, "synthetic_seconds": round(p.seconds, 3)}
        return _coco_bundle(coco_cfg, extra)
    if cfg.dataset == "coco":
        return _coco_bundle(cfg)
    if cfg.dataset == "voc2007":
        from salgl_core.data.voc import VOC_CLASSES, load_voc

        (tp, tl, _, tid), (vp, vl, vign, vid), info = load_voc(cfg)
        return _bundle(cfg, (tp, tl, tid), (vp, vl, vid), list(VOC_CLASSES), info, val_ignore=vign)
    if cfg.dataset == "nuswide":
        from salgl_core.data.nuswide import load_nuswide

        train, val, concepts, info = load_nuswide(cfg)
        return _bundle(cfg, train, val, concepts, info)
    raise DataError(f"unknown dataset {cfg.dataset!r}")  # DataConfig validation makes this unreachable


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
    which is what makes resume exact."""
    g = generator if generator is not None else torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, generator=g) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, collate_fn=collate, generator=g, worker_init_fn=seed_worker,
                      pin_memory=torch.cuda.is_available(), prefetch_factor=4 if num_workers > 0 else None)
