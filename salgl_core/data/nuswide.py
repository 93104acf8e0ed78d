r"""NUS-WIDE (81 concepts), as the official `scripts/nuswide.py` prepares it.

Accepted layout (the official NUS-WIDE download, unpacked under `data_root`):

    <data_root>/Concepts81.txt                          the 81 concept names, one a line; their order is
                                                        the class order (alphabetical: airport ... zebra)
    <data_root>/ImageList/Imagelist.txt                 every image (269,648 lines in the full set)
    <data_root>/ImageList/TrainImagelist.txt            the train split   (--train-annotations overrides)
    <data_root>/ImageList/TestImagelist.txt             the test split    (--val-annotations overrides)
    <data_root>/Groundtruth/AllLabels/Labels_<concept>.txt
                                                        one 0 or 1 a line, line i = line i of Imagelist.txt
    <data_root>/Flickr/<folder>/<file>.jpg              the images (or <data_root>/images/...;
                                                        --train-images / --val-images override)

Image-list lines are Windows paths such as `actor\0001_2124494179.jpg` (some copies carry a prefix like
`C:\ImageData\Flickr\actor\0001_2124494179.jpg`). Every line is reduced to its last two components,
`actor/0001_2124494179.jpg`, which is both the key that matches the three lists and the path of the
image under the images folder.

As in the official script: items follow Imagelist.txt order; an image in both split lists counts as test;
an image with no positive concept is dropped. Only the images that are kept must exist (the official
script also demands files it then drops).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from salgl_core.config import DataConfig
from salgl_core.data.bundle import DatasetBundle, make_bundle
from salgl_core.data.errors import DataError
from salgl_core.data.images import check_files_exist, require_dir, require_file
from salgl_core.registry import datasets

_HINT = "pass --data-root pointing at the NUS-WIDE folder (Concepts81.txt, ImageList/, Groundtruth/, Flickr/)"


def image_key(line: str) -> str:
    parts = [p for p in line.strip().replace("\\", "/").split("/") if p]
    return "/".join(parts[-2:])


def read_image_list(path: Path) -> list[str]:
    keys = [image_key(line) for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip()]
    if not keys:
        raise DataError(f"{path} lists no images; expected one image path a line")
    return keys


def read_label_column(path: Path, n: int) -> np.ndarray:
    # A byte scan instead of parsing 269,648 lines x 81 files in Python.
    digits = path.read_bytes().translate(None, b" \t\r\n")
    col = np.frombuffer(digits, dtype=np.uint8) - ord("0")
    if len(col) != n or (col > 1).any():
        raise DataError(f"{path} must hold one 0 or 1 a line for each of the {n} images of "
                        f"ImageList/Imagelist.txt (found {len(digits)} non-blank characters, "
                        f"{int((col > 1).sum())} of them not 0/1)")
    return col


def resolve_nuswide(cfg: DataConfig) -> dict[str, Path]:
    if cfg.data_root is None:
        raise DataError(f"dataset nuswide needs data_root: {_HINT}")
    root = require_dir(cfg.data_root, "the NUS-WIDE folder", _HINT)
    p: dict[str, Path] = {"root": root}
    p["concepts"] = require_file(root / "Concepts81.txt", "the 81 NUS-WIDE concept names, one a line", _HINT)
    p["all_list"] = require_file(root / "ImageList" / "Imagelist.txt", "the list of all NUS-WIDE images", _HINT)
    for split, name, fld in (("train", "TrainImagelist.txt", "train_annotations"),
                             ("val", "TestImagelist.txt", "val_annotations")):
        given = getattr(cfg, fld)
        p[f"{split}_list"] = require_file(given or root / "ImageList" / name, f"the NUS-WIDE {split} image list",
                                          f"pass --{fld.replace('_', '-')} or {_HINT}")
    p["labels"] = require_dir(root / "Groundtruth" / "AllLabels", "the Labels_<concept>.txt files", _HINT)
    default_images = next((root / d for d in ("Flickr", "images") if (root / d).is_dir()), root / "Flickr")
    for split in ("train", "val"):
        fld = f"{split}_images"
        p[fld] = require_dir(getattr(cfg, fld) or default_images, "the NUS-WIDE image folders (<folder>/<file>.jpg)",
                             f"pass --{fld.replace('_', '-')} or {_HINT}")
    return p


def load_nuswide(cfg: DataConfig) -> tuple[tuple, tuple, list[str], dict[str, Any]]:
    """((paths, labels, keys) of train, same of val, the 81 concept names, info)."""
    p = resolve_nuswide(cfg)
    concepts = [c.strip() for c in p["concepts"].read_text().splitlines() if c.strip()]
    all_keys = read_image_list(p["all_list"])
    n = len(all_keys)
    labels = np.zeros((n, len(concepts)), dtype=np.uint8)
    for j, c in enumerate(concepts):
        labels[:, j] = read_label_column(require_file(p["labels"] / f"Labels_{c}.txt",
                                                      f"the ground truth of concept {c!r}", _HINT), n)
    listed = {"train": read_image_list(p["train_list"]), "val": read_image_list(p["val_list"])}
    split_of = dict.fromkeys(listed["train"], 0)
    split_of.update(dict.fromkeys(listed["val"], 1))
    known = set(all_keys)
    has_label = labels.any(axis=1)
    out = []
    info: dict[str, Any] = {k: str(v) for k, v in p.items()}
    for flag, split in ((0, "train"), (1, "val")):
        rows = [i for i, k in enumerate(all_keys) if split_of.get(k) == flag]
        kept = [i for i in rows if has_label[i]]
        keys = [all_keys[i] for i in kept]
        paths = [os.path.join(p[f"{split}_images"], k) for k in keys]
        check_files_exist(paths, str(p[f"{split}_list"]),
                          f"expected the images under {p[f'{split}_images']}; {_HINT}")
        out.append((paths, labels[kept], keys))
        info[f"{split}_listed"] = len(rows)
        info[f"{split}_unlabelled_dropped"] = len(rows) - len(kept)
        # Split-list entries absent from Imagelist.txt have no labels; the official script skips them too.
        info[f"{split}_not_in_imagelist"] = sum(k not in known for k in listed[split])
    return out[0], out[1], concepts, info


@datasets.register("nuswide")
def nuswide_bundle(cfg: DataConfig) -> DatasetBundle:
    train, val, concepts, info = load_nuswide(cfg)
    return make_bundle(cfg, train, val, concepts, info)
