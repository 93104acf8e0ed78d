import contextlib
import dataclasses
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from salgl_core.config import DataConfig
from salgl_core.data import DataError, build_datasets
from salgl_core.data.coco import load_coco_split

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SOURCES = {"coco128": SHARED / "coco128", "coco_tiny": SHARED / "coco_tiny_train2017"}
pytestmark = pytest.mark.skipif(not (SHARED / "coco128").is_dir() or not (SHARED / "coco_tiny_train2017").is_dir(),
                                reason="../shared/data/coco128 and coco_tiny_train2017 are not available")


def ann(src: str) -> Path:
    return SOURCES[src] / "annotations" / "instances_train2017.json"


def imgs(src: str) -> Path:
    return SOURCES[src] / "train2017"


def oracle(ann_file: Path, keep_unannotated: bool) -> dict[int, set[int]]:
    """image id -> set of class indices, straight from pycocotools' public API."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_file))
    cat_ids = sorted(coco.getCatIds())
    out = {}
    for img_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        if anns or keep_unannotated:
            out[img_id] = {cat_ids.index(a["category_id"]) for a in anns}
    return out


def explicit_cfg(train: str = "coco128", val: str = "coco_tiny", **kw) -> DataConfig:
    return DataConfig(dataset="coco", train_images=str(imgs(train)), train_annotations=str(ann(train)),
                      val_images=str(imgs(val)), val_annotations=str(ann(val)), **kw)


@pytest.mark.parametrize("src", ["coco128", "coco_tiny"])
@pytest.mark.parametrize("keep", [False, True])
def test_labels_agree_with_pycocotools(src, keep):
    split = load_coco_split(imgs(src), ann(src), keep_unannotated=keep)
    want = oracle(ann(src), keep)
    assert split.image_ids == list(want)
    assert split.labels.shape == (len(want), 80)
    for row, img_id in enumerate(split.image_ids):
        assert set(np.flatnonzero(split.labels[row])) == want[img_id]
    names = json.loads(ann(src).read_text())["categories"]
    assert split.class_names == [c["name"] for c in sorted(names, key=lambda c: c["id"])]
    assert split.class_names[:3] == ["person", "bicycle", "car"] and split.class_names[-1] == "toothbrush"


def test_unannotated_images_dropped_or_kept():
    dropped = build_datasets(explicit_cfg())
    kept = build_datasets(explicit_cfg(keep_unannotated=True))
    assert len(dropped.train) == 126 and len(kept.train) == 128
    assert dropped.info["train_unannotated_dropped"] == 2 and kept.info["train_unannotated_dropped"] == 0
    assert (dropped.train_labels.sum(1) > 0).all()
    assert (kept.train_labels.sum(1) == 0).sum() == 2
    # 80 classes although only 71 appear in coco128; coco_tiny covers all 80.
    assert dropped.num_classes == 80 and int((dropped.train_labels.sum(0) > 0).sum()) == 71
    assert int((dropped.val_labels.sum(0) > 0).sum()) == 80
    assert dropped.val_true_scenes is None and dropped.val_ignore is None


def test_items_and_2017_paths():
    b = build_datasets(explicit_cfg(image_size=64))
    img, target, ignore, index, scene = b.train[5]
    assert img.shape == (3, 64, 64) and target.dtype == torch.float32 and ignore.dtype == torch.bool
    assert index == 5 and target.tolist() == b.train_labels[5].tolist() and not ignore.any() and scene == -1
    path = str(b.train.paths[5])
    assert os.path.basename(path) == f"{b.train.ids[5]:012d}.jpg" and os.path.dirname(path) == str(imgs("coco128"))


def make_2014_tree(root: Path) -> None:
    """A COCO 2014 layout: symlinks named COCO_<split>2014_<id>.jpg and jsons rewritten to those names."""
    (root / "annotations").mkdir(parents=True)
    for split, src in (("train", "coco128"), ("val", "coco_tiny")):
        doc = json.loads(ann(src).read_text())
        (root / f"{split}2014").mkdir()
        for im in doc["images"]:
            new = f"COCO_{split}2014_{im['id']:012d}.jpg"
            os.symlink(imgs(src) / im["file_name"], root / f"{split}2014" / new)
            im["file_name"] = new
        (root / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(doc))


def test_2014_root_layout_matches_2017_files(tmp_path):
    make_2014_tree(tmp_path)
    b14 = build_datasets(DataConfig(dataset="coco", data_root=str(tmp_path), image_size=64))
    b17 = build_datasets(explicit_cfg(image_size=64))
    assert np.array_equal(b14.train_labels, b17.train_labels) and np.array_equal(b14.val_labels, b17.val_labels)
    assert b14.info["train_annotations"].endswith("instances_train2014.json")
    assert os.path.basename(str(b14.train.paths[0])).startswith("COCO_train2014_")
    assert b14.train[0][0].shape == b17.train[0][0].shape == (3, 64, 64)


def test_2017_root_layout(tmp_path):
    (tmp_path / "annotations").mkdir()
    os.symlink(imgs("coco128"), tmp_path / "train2017")
    os.symlink(imgs("coco_tiny"), tmp_path / "val2017")
    os.symlink(ann("coco128"), tmp_path / "annotations" / "instances_train2017.json")
    os.symlink(ann("coco_tiny"), tmp_path / "annotations" / "instances_val2017.json")
    b = build_datasets(DataConfig(dataset="coco", data_root=str(tmp_path)))
    assert (len(b.train), len(b.val)) == (126, 80)
    assert b.info["val_images"] == str(tmp_path / "val2017")


def test_missing_root_is_one_clear_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=rf"{missing} does not exist: expected a COCO root.*--data-root"):
        build_datasets(DataConfig(dataset="coco", data_root=str(missing)))


def test_missing_annotation_file(tmp_path):
    (tmp_path / "train2014").mkdir()
    with pytest.raises(DataError, match=r"expected a COCO instances json at .*instances_train2014\.json.*"
                                        r"--train-annotations or --data-root"):
        build_datasets(DataConfig(dataset="coco", data_root=str(tmp_path)))
    cfg = dataclasses.replace(explicit_cfg(), train_annotations=str(tmp_path / "instances.json"))
    with pytest.raises(DataError, match=r"instances\.json does not exist: expected a COCO instances json"):
        build_datasets(cfg)


def test_missing_image_folder(tmp_path):
    cfg = dataclasses.replace(explicit_cfg(), val_images=str(tmp_path / "val2014"))
    with pytest.raises(DataError, match=rf"{tmp_path / 'val2014'} does not exist: .*--val-images"):
        build_datasets(cfg)
    cfg = dataclasses.replace(explicit_cfg(), train_images=None)
    with pytest.raises(DataError, match="train_images and data_root are both unset"):
        build_datasets(cfg)


def test_missing_image_file(tmp_path):
    doc = json.loads(ann("coco_tiny").read_text())
    doc["images"].append({**doc["images"][0], "id": 99999999, "file_name": "000099999999.jpg"})
    doc["annotations"].append({**doc["annotations"][0], "id": 99999999, "image_id": 99999999})
    bad = tmp_path / "instances.json"
    bad.write_text(json.dumps(doc))
    cfg = dataclasses.replace(explicit_cfg(), val_annotations=str(bad))
    with pytest.raises(DataError, match=r"1 of 81 image files listed by .*instances\.json are missing, "
                                        r"e\.g\. .*000099999999\.jpg"):
        build_datasets(cfg)


def test_malformed_json(tmp_path):
    bad = tmp_path / "instances.json"
    bad.write_text('{"images": [')
    with pytest.raises(DataError, match=r"instances\.json is not a valid COCO instances json"):
        load_coco_split(imgs("coco128"), bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="expected a dict with 'images'"):
        load_coco_split(imgs("coco128"), bad)


def test_train_and_val_categories_must_match(tmp_path):
    doc = json.loads(ann("coco_tiny").read_text())
    doc["categories"] = doc["categories"][:-1]
    doc["annotations"] = [a for a in doc["annotations"] if a["category_id"] != 90]
    other = tmp_path / "instances.json"
    other.write_text(json.dumps(doc))
    cfg = dataclasses.replace(explicit_cfg(), val_annotations=str(other))
    with pytest.raises(DataError, match="categories of .* differ"):
        build_datasets(cfg)
