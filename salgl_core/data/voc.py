"""PASCAL VOC 2007, as the official `scripts/voc2007.py` prepares it.

Layout: `<data_root>` is VOCdevkit/VOC2007 itself, or a folder containing VOC2007/ or VOCdevkit/VOC2007/:
    Annotations/<id>.xml   ImageSets/Main/trainval.txt   ImageSets/Main/test.txt   JPEGImages/<id>.jpg
Splits: trainval is the train split, test the val split.
Classes: the 20 VOC classes in alphabetical order (aeroplane ... tvmonitor). The official script derives
the list from the trainval labels, which on the real data is these 20 in this order; fixing it keeps
small subsets at 20 classes.
Labels: train images are positive for every class they have an object of, "difficult" ones included.
In the test split a class is positive only if the image has a non-difficult object of it; when all its
objects are difficult the pair is negative and set in the ignore mask (left out of that class's AP).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from salgl_core.config import DataConfig
from salgl_core.data.bundle import DatasetBundle, make_bundle
from salgl_core.data.errors import DataError
from salgl_core.data.images import check_files_exist, require_dir, require_file
from salgl_core.registry import datasets

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_HINT = "pass --data-root pointing at VOCdevkit/VOC2007 or a folder that contains VOCdevkit/VOC2007"


def resolve_voc_root(cfg: DataConfig) -> Path:
    if cfg.data_root is None:
        raise DataError(f"dataset voc2007 needs data_root: {_HINT}")
    explicit = [f for f in ("train_images", "train_annotations", "val_images", "val_annotations")
                if getattr(cfg, f) is not None]
    if explicit:
        raise DataError(f"dataset voc2007 reads the standard layout under data_root only; unset {explicit}")
    root = require_dir(cfg.data_root, "VOCdevkit/VOC2007 or a folder containing it", _HINT)
    for cand in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if (cand / "Annotations").is_dir():
            return cand
    raise DataError(f"{root} is not a VOC 2007 folder: expected Annotations/ ImageSets/Main/ JPEGImages/ in it, "
                    f"in {root / 'VOC2007'} or in {root / 'VOCdevkit' / 'VOC2007'}; {_HINT}")


def parse_voc_xml(path: Path) -> dict[str, list[bool]]:
    """{class name: [difficult flag of each object]} of one annotation file."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as e:
        raise DataError(f"{path} is not a valid VOC annotation XML ({e})") from None
    objects: dict[str, list[bool]] = {}
    for obj in tree.getroot().iter("object"):
        name = obj.findtext("name")
        if name is None:
            raise DataError(f"{path}: an <object> has no <name>")
        name = name.strip().lower()
        if name not in VOC_CLASSES:
            raise DataError(f"{path}: unknown class {name!r}; expected one of the 20 VOC classes")
        difficult = (obj.findtext("difficult") or "0").strip()
        objects.setdefault(name, []).append(difficult not in ("", "0"))
    return objects


def load_voc_split(root: Path, split: str, test_protocol: bool) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """(image paths, labels uint8 [N, 20], ignore bool [N, 20], ids) of ImageSets/Main/<split>.txt."""
    list_file = require_file(root / "ImageSets" / "Main" / f"{split}.txt", f"the VOC {split} image-id list",
                             _HINT)
    ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{list_file} lists no image ids")
    ann_dir = require_dir(root / "Annotations", "the VOC annotation XML files", _HINT)
    img_dir = require_dir(root / "JPEGImages", "the VOC JPEG images", _HINT)
    rank = {c: i for i, c in enumerate(VOC_CLASSES)}
    labels = np.zeros((len(ids), len(VOC_CLASSES)), dtype=np.uint8)
    ignore = np.zeros((len(ids), len(VOC_CLASSES)), dtype=bool)
    xmls = [str(ann_dir / f"{i}.xml") for i in ids]
    check_files_exist(xmls, str(list_file), f"expected one annotation XML per listed id in {ann_dir}",
                      what="annotation files")
    for row, xml in enumerate(xmls):
        for name, difficult in parse_voc_xml(Path(xml)).items():
            if test_protocol and all(difficult):
                ignore[row, rank[name]] = True
            else:
                labels[row, rank[name]] = 1
    paths = [str(img_dir / f"{i}.jpg") for i in ids]
    check_files_exist(paths, str(list_file), f"expected one JPEG per listed id in {img_dir}")
    return paths, labels, ignore, ids


def load_voc(cfg: DataConfig) -> tuple[tuple, tuple, dict[str, Any]]:
    root = resolve_voc_root(cfg)
    train = load_voc_split(root, "trainval", test_protocol=False)
    val = load_voc_split(root, "test", test_protocol=True)
    info = {"root": str(root), "train_split": str(root / "ImageSets/Main/trainval.txt"),
            "val_split": str(root / "ImageSets/Main/test.txt"), "val_ignored_pairs": int(val[2].sum())}
    return train, val, info


@datasets.register("voc2007")
def voc2007_bundle(cfg: DataConfig) -> DatasetBundle:
    (tp, tl, _, tid), (vp, vl, vign, vid), info = load_voc(cfg)
    return make_bundle(cfg, (tp, tl, tid), (vp, vl, vid), list(VOC_CLASSES), info, val_ignore=vign)
