"""`DatasetBundle`, what every dataset builder returns: the train/val datasets with their labels and info."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from salgl_core.config import DataConfig
from salgl_core.data.images import MultiLabelDataset
from salgl_core.data.transforms import eval_transform, train_transform


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


def make_bundle(cfg: DataConfig, train: tuple, val: tuple, names: list[str], info: dict[str, Any],
                train_scenes: np.ndarray | None = None, val_scenes: np.ndarray | None = None,
                val_ignore: np.ndarray | None = None) -> DatasetBundle:
    """train / val: (paths, labels [N, C], ids); the transforms are the config's train / eval recipes."""
    common = {"class_names": names, "image_size": cfg.image_size, "skip_corrupt": cfg.skip_corrupt}
    tr = MultiLabelDataset(train[0], train[1], transform=train_transform(cfg), scene_ids=train_scenes,
                           ids=train[2], **common)
    va = MultiLabelDataset(val[0], val[1], transform=eval_transform(cfg), ignore=val_ignore,
                           scene_ids=val_scenes, ids=val[2], **common)
    info = {"dataset": cfg.dataset, **info, "num_train": len(tr), "num_val": len(va), "num_classes": len(names)}
    return DatasetBundle(train=tr, val=va, class_names=names, num_classes=len(names), info=info,
                         train_labels=tr.labels, val_labels=va.labels, val_true_scenes=va.scene_ids,
                         val_ignore=None if val_ignore is None else va.ignore)
