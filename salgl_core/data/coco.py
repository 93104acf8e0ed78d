"""MS-COCO (2014 or 2017 file naming) read with pycocotools, as the official `scripts/mscoco.py` does.

- Class index = rank of the category id among the json's categories sorted by id, so COCO always has
  80 classes in category-id order (person, bicycle, car, ...) even when some are absent from a subset;
  class names come from the json's categories.
- An image is positive for every category it has an annotation of (crowd annotations included).
- Images without any annotation are dropped, as the official script does, unless `keep_unannotated`
  (then they are all-negative).
- Image files are `<images folder>/<file_name from the json>`, so both train2014/COCO_train2014_*.jpg
  and train2017/000000*.jpg work.

Paths: explicit `train_images`, `train_annotations`, `val_images`, `val_annotations`, each overriding
the standard layout under `data_root`:
    <data_root>/train2014/  <data_root>/val2014/  <data_root>/annotations/instances_{train,val}2014.json
(or the same with 2017; 2014 is preferred when both are present). The synthetic dataset is read through
this same module; its image entries carry an extra "scene_id" that we expose as `scene_ids`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from salgl_core.config import DataConfig
from salgl_core.data.bundle import DatasetBundle, make_bundle
from salgl_core.data.errors import DataError
from salgl_core.data.images import check_files_exist, require_dir, require_file
from salgl_core.registry import datasets

YEARS = ("2014", "2017")


@dataclass
class CocoSplit:
    paths: list[str]
    labels: np.ndarray  # uint8 [N, C]
    class_names: list[str]
    category_ids: list[int]
    image_ids: list[int]
    scene_ids: np.ndarray | None
    num_listed: int
    num_unannotated: int


def resolve_coco_paths(cfg: DataConfig) -> dict[str, Path]:
    """Explicit paths where given, else the standard layout under data_root; checks they exist."""
    root = None
    if cfg.data_root is not None:
        root = require_dir(cfg.data_root, "a COCO root with train2014/ val2014/ annotations/ (or the 2017 names)",
                           "pass --data-root, or explicit --train-images/--train-annotations/--val-images/"
                           "--val-annotations")
    out: dict[str, Path] = {}
    for split in ("train", "val"):
        ann_field, img_field = f"{split}_annotations", f"{split}_images"
        ann, imgs = getattr(cfg, ann_field), getattr(cfg, img_field)
        year = YEARS[0]
        if ann is None:
            if root is None:
                raise DataError(f"no COCO {split} annotations: {ann_field} and data_root are both unset; "
                                f"pass --{ann_field.replace('_', '-')} or --data-root")
            candidates = [root / "annotations" / f"instances_{split}{y}.json" for y in YEARS]
            found = [(y, c) for y, c in zip(YEARS, candidates, strict=True) if c.is_file()]
            if not found:
                raise DataError(f"expected a COCO instances json at {candidates[0]} (or {candidates[1].name}); "
                                f"pass --{ann_field.replace('_', '-')} or --data-root")
            year, ann = found[0]
        out[ann_field] = require_file(ann, "a COCO instances json",
                                      f"pass --{ann_field.replace('_', '-')} or --data-root")
        if imgs is None:
            if root is None:
                raise DataError(f"no COCO {split} image folder: {img_field} and data_root are both unset; pass "
                                f"--{img_field.replace('_', '-')} (the folder of the images named in {ann}) "
                                "or --data-root")
            imgs = root / f"{split}{year}"
        out[img_field] = require_dir(imgs, f"the COCO {split} images named in {out[ann_field]}",
                                     f"pass --{img_field.replace('_', '-')} or --data-root")
    return out


def read_instances_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a valid COCO instances json ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("categories"), list) or not data["categories"]:
        raise DataError(f"{path} is not a COCO instances json: expected a dict with 'images', 'annotations' "
                        "and a non-empty 'categories' list")
    return data


def load_coco_split(images_dir: Path, ann_file: Path, keep_unannotated: bool = False) -> CocoSplit:
    """Label matrix of one split, in json image order, via pycocotools' index."""
    data = read_instances_json(ann_file)
    data.setdefault("annotations", [])
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    cat_ids = sorted(coco.getCatIds())
    rank = {cid: i for i, cid in enumerate(cat_ids)}
    names = [coco.cats[cid]["name"] for cid in cat_ids]

    img_ids = coco.getImgIds()
    keep = [i for i in img_ids if keep_unannotated or coco.imgToAnns.get(i)]
    labels = np.zeros((len(keep), len(cat_ids)), dtype=np.uint8)
    for row, img_id in enumerate(keep):
        for ann in coco.imgToAnns.get(img_id, []):
            try:
                labels[row, rank[ann["category_id"]]] = 1
            except KeyError:
                raise DataError(f"{ann_file}: annotation {ann.get('id')} of image {img_id} has category_id "
                                f"{ann.get('category_id')!r}, which is not among the json's categories") from None
    try:
        paths = [os.path.join(images_dir, coco.imgs[i]["file_name"]) for i in keep]
    except KeyError:
        raise DataError(f"{ann_file}: an image entry has no 'file_name'") from None
    scenes = [coco.imgs[i].get("scene_id") for i in keep]
    scene_ids = np.array(scenes, dtype=np.int64) if scenes and all(s is not None for s in scenes) else None
    check_files_exist(paths, str(ann_file),
                      f"expected the files named by the json's file_name fields under {images_dir}")
    return CocoSplit(paths=paths, labels=labels, class_names=names, category_ids=cat_ids, image_ids=keep,
                     scene_ids=scene_ids, num_listed=len(img_ids), num_unannotated=len(img_ids) - len(keep))


def load_coco(cfg: DataConfig) -> tuple[CocoSplit, CocoSplit, dict[str, Any]]:
    p = resolve_coco_paths(cfg)
    train = load_coco_split(p["train_images"], p["train_annotations"], cfg.keep_unannotated)
    val = load_coco_split(p["val_images"], p["val_annotations"], cfg.keep_unannotated)
    if train.category_ids != val.category_ids or train.class_names != val.class_names:
        raise DataError(f"the categories of {p['train_annotations']} and {p['val_annotations']} differ; "
                        "train and val must use the same category list")
    info = {k: str(v) for k, v in p.items()}
    for name, s in (("train", train), ("val", val)):
        info[f"{name}_listed"] = s.num_listed
        info[f"{name}_unannotated"] = s.num_unannotated
        info[f"{name}_unannotated_dropped"] = 0 if cfg.keep_unannotated else s.num_unannotated
    return train, val, info


@datasets.register("coco")
def coco_bundle(cfg: DataConfig) -> DatasetBundle:
    tr, va, info = load_coco(cfg)
    return make_bundle(cfg, (tr.paths, tr.labels, tr.image_ids), (va.paths, va.labels, va.image_ids),
                       tr.class_names, info, tr.scene_ids, va.scene_ids)
