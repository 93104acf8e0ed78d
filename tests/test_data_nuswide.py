import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from salgl_core.config import DataConfig
from salgl_core.data import DataError, build_datasets
from salgl_core.data.nuswide import image_key

# Concepts81.txt order is the class order; deliberately not alphabetical here to show it is not re-sorted.
CONCEPTS = ["zebra", "airport", "animal", "beach", "sky"]
# (Imagelist.txt line, labels, split list(s) it is in, whether its file exists)
IMAGES = [
    ("actor\\0001_2124494179.jpg", {"airport"}, ("train",), True),
    ("C:\\ImageData\\Flickr\\actor\\0002_174174086.jpg", {"animal", "beach"}, ("test",), True),
    ("beach\\0003_3.jpg", set(), ("train",), False),  # no positive concept: dropped, file not needed
    ("beach\\0004_4.jpg", {"beach"}, ("test",), True),
    ("zebra\\0005_5.jpg", {"zebra"}, (), False),  # in neither split
    ("zebra\\0006_6.jpg", {"animal", "zebra"}, ("train",), True),
    ("sky\\0007_7.jpg", {"sky"}, ("train", "test"), True),  # in both: test wins, as officially
]


def write_fixture(root: Path, images_dir: str = "Flickr") -> Path:
    (root / "ImageList").mkdir(parents=True)
    (root / "Groundtruth" / "AllLabels").mkdir(parents=True)
    (root / "Concepts81.txt").write_text("\n".join(CONCEPTS) + "\n")
    (root / "ImageList" / "Imagelist.txt").write_text("\r\n".join(line for line, *_ in IMAGES) + "\r\n")
    for split, name in (("train", "TrainImagelist.txt"), ("test", "TestImagelist.txt")):
        lines = [line.split("Flickr\\")[-1] for line, _, splits, _ in IMAGES if split in splits]
        (root / "ImageList" / name).write_text("\n".join(lines) + "\n")
    for k, c in enumerate(CONCEPTS):
        end = "\r\n" if k % 2 else " \n"  # both line endings and trailing blanks occur in the wild
        (root / "Groundtruth" / "AllLabels" / f"Labels_{c}.txt").write_text(
            "".join(("1" if c in labels else "0") + end for _, labels, *_ in IMAGES))
    for i, (line, _, _, exists) in enumerate(IMAGES):
        if exists:
            path = root / images_dir / image_key(line)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40 + i, 30), (10 * i, 20, 30)).save(path)
    return root


def cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(dataset="nuswide", data_root=str(root), image_size=32, **kw)


def names(b, split: str) -> list[tuple[str, set[str]]]:
    ds, labels = (b.train, b.train_labels) if split == "train" else (b.val, b.val_labels)
    return [(k, {b.class_names[c] for c in np.flatnonzero(labels[i])}) for i, k in enumerate(ds.ids)]


def test_official_layout(tmp_path):
    b = build_datasets(cfg(write_fixture(tmp_path)))
    assert b.class_names == CONCEPTS and b.num_classes == 5
    assert names(b, "train") == [("actor/0001_2124494179.jpg", {"airport"}), ("zebra/0006_6.jpg", {"animal", "zebra"})]
    assert names(b, "val") == [("actor/0002_174174086.jpg", {"animal", "beach"}), ("beach/0004_4.jpg", {"beach"}),
                               ("sky/0007_7.jpg", {"sky"})]
    assert b.info["train_unlabelled_dropped"] == 1 and b.info["val_unlabelled_dropped"] == 0
    assert b.val_ignore is None and b.val_true_scenes is None
    assert str(b.train.paths[0]) == str(tmp_path / "Flickr" / "actor" / "0001_2124494179.jpg")
    img, target, ignore, index, scene = b.val[2]
    assert img.shape == (3, 32, 32) and target.tolist() == [0, 0, 0, 0, 1] and index == 2 and not ignore.any()
    assert scene == -1  # NUS-WIDE records no scenes


def test_images_folder_alternatives(tmp_path):
    root = write_fixture(tmp_path / "a", images_dir="images")
    assert len(build_datasets(cfg(root)).train) == 2
    other = tmp_path / "elsewhere"
    os.rename(root / "images", other)
    b = build_datasets(cfg(root, train_images=str(other), val_images=str(other)))
    assert str(b.val.paths[0]).startswith(str(other))


def test_image_key():
    assert image_key("C:\\ImageData\\Flickr\\actor\\0001_2124494179.jpg") == "actor/0001_2124494179.jpg"
    assert image_key("actor\\0001_2124494179.jpg  \r") == "actor/0001_2124494179.jpg"
    assert image_key("actor/0001_2124494179.jpg") == "actor/0001_2124494179.jpg"


def test_missing_root_and_files(tmp_path):
    with pytest.raises(DataError, match="nuswide needs data_root"):
        build_datasets(DataConfig(dataset="nuswide"))
    with pytest.raises(DataError, match=rf"{tmp_path / 'x'} does not exist: expected the NUS-WIDE folder"):
        build_datasets(cfg(tmp_path / "x"))
    root = write_fixture(tmp_path / "r")
    (root / "Groundtruth" / "AllLabels" / "Labels_beach.txt").unlink()
    with pytest.raises(DataError, match=r"Labels_beach\.txt does not exist: expected the ground truth of concept"):
        build_datasets(cfg(root))
    (root / "Concepts81.txt").unlink()
    with pytest.raises(DataError, match=r"Concepts81\.txt does not exist: expected the 81 NUS-WIDE concept names"):
        build_datasets(cfg(root))


def test_missing_image_is_named(tmp_path):
    root = write_fixture(tmp_path)
    (root / "Flickr" / "beach" / "0004_4.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of 3 image files listed by .*TestImagelist\.txt are missing, "
                                        r"e\.g\. .*Flickr/beach/0004_4\.jpg"):
        build_datasets(cfg(root))


def test_malformed_label_file(tmp_path):
    root = write_fixture(tmp_path)
    f = root / "Groundtruth" / "AllLabels" / "Labels_sky.txt"
    f.write_text("0\n" * 6)
    with pytest.raises(DataError, match=r"Labels_sky\.txt must hold one 0 or 1 a line for each of the 7 images"):
        build_datasets(cfg(root))
    f.write_text("0\n" * 6 + "2\n")
    with pytest.raises(DataError, match=r"1 of them not 0/1"):
        build_datasets(cfg(root))
