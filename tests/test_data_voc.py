import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from salgl_core.config import DataConfig
from salgl_core.data import CorruptImageError, DataError, build_datasets, build_loader
from salgl_core.data.voc import VOC_CLASSES

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXTURE = SHARED / "voc_mmdet_fixture"
VOC = FIXTURE / "VOCdevkit" / "VOC2007"
pytestmark = pytest.mark.skipif(not VOC.is_dir(), reason="../shared/data/voc_mmdet_fixture is not available")


def cfg(root: Path, **kw) -> DataConfig:
    return DataConfig(dataset="voc2007", data_root=str(root), image_size=64, **kw)


def labels_of(matrix: np.ndarray, row: int) -> set[str]:
    return {VOC_CLASSES[c] for c in np.flatnonzero(matrix[row])}


def copy_fixture(dst: Path) -> Path:
    """A writable VOC2007 copy: XML and split files copied, images symlinked."""
    root = dst / "VOCdevkit" / "VOC2007"
    shutil.copytree(VOC / "Annotations", root / "Annotations")
    shutil.copytree(VOC / "ImageSets", root / "ImageSets")
    (root / "JPEGImages").mkdir()
    for f in os.listdir(VOC / "JPEGImages"):
        os.symlink(VOC / "JPEGImages" / f, root / "JPEGImages" / f)
    return root


def test_classes_are_the_20_alphabetical():
    assert list(VOC_CLASSES) == sorted(VOC_CLASSES) and len(VOC_CLASSES) == 20
    label_txt = SHARED / "label_embeddings" / "voc2007" / "label.txt"
    if label_txt.is_file():  # the official order the BERT vectors were made in
        assert list(VOC_CLASSES) == label_txt.read_text().split()


@pytest.mark.parametrize("root", [VOC, VOC.parent, FIXTURE])
def test_labels_on_fixture(root):
    b = build_datasets(cfg(root))
    assert b.class_names == list(VOC_CLASSES) and b.num_classes == 20
    assert b.train.ids == ["000001", "000002", "000003", "000004", "000005"]
    want = [{"dog", "person"}, {"train"}, {"chair", "sofa"}, {"car"}, {"chair"}]
    assert [labels_of(b.train_labels, i) for i in range(5)] == want
    # 000005 has three non-difficult chairs (and two difficult ones): positive in test, nothing ignored.
    assert [labels_of(b.val_labels, i) for i in range(5)] == want
    assert b.val_ignore is not None and b.val_ignore.shape == (5, 20) and not b.val_ignore.any()
    assert b.info["root"] == str(VOC)


def test_difficult_only_pairs_are_ignored_in_test(tmp_path):
    root = copy_fixture(tmp_path)
    xml = root / "Annotations" / "000005.xml"
    xml.write_text(re.sub(r"<difficult>0</difficult>", "<difficult>1</difficult>", xml.read_text()))
    xml = root / "Annotations" / "000001.xml"
    text = xml.read_text()  # only the person (second object) becomes difficult
    i = text.index("<name>person</name>")
    xml.write_text(text[:i] + text[i:].replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    b = build_datasets(cfg(tmp_path))
    chair, person, dog = (VOC_CLASSES.index(c) for c in ("chair", "person", "dog"))
    # Training labels include difficult objects.
    assert b.train_labels[4, chair] == 1 and b.train_labels[0, person] == 1 and not b.train.ignore.any()
    # Test: all-difficult pairs are negative and ignored; the rest untouched.
    assert b.val_labels[4, chair] == 0 and b.val_ignore[4, chair]
    assert b.val_labels[0, person] == 0 and b.val_ignore[0, person]
    assert b.val_labels[0, dog] == 1 and not b.val_ignore[0, dog]
    assert int(b.val_ignore.sum()) == 2 == b.info["val_ignored_pairs"]
    assert b.val[4][2][chair].item() and not b.val[1][2].any()  # the item carries the mask


def test_truncated_image_is_reported_by_name():
    b = build_datasets(cfg(VOC))
    with pytest.raises(CorruptImageError, match=r"JPEGImages/000001\.jpg is corrupt or truncated.*--skip-corrupt"):
        b.train[0]
    assert b.train[1][0].shape == (3, 64, 64)
    with pytest.raises(CorruptImageError, match=r"000001\.jpg"):
        for _ in build_loader(b.val, batch_size=2, shuffle=False, num_workers=0):
            pass


def test_truncated_image_skipped_and_counted():
    b = build_datasets(cfg(VOC, skip_corrupt=True))
    batches = list(build_loader(b.train, batch_size=2, shuffle=False, num_workers=0))
    assert [x["skipped"] for x in batches] == [1, 0, 0]
    assert [x["index"].tolist() for x in batches] == [[1], [2, 3], [4]]
    assert sum(x["images"].shape[0] for x in batches) == 4
    assert batches[0]["targets"].shape == (1, 20) and batches[0]["ignore"].dtype == torch.bool
    # A batch made only of skipped images is empty, not an error.
    first = next(iter(build_loader(b.train, batch_size=1, shuffle=False)))
    assert first["skipped"] == 1 and first["images"].shape == (0, 3, 64, 64) and first["targets"].shape == (0, 20)


def test_missing_root_and_layout(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path / 'x'} does not exist: expected VOCdevkit/VOC2007"):
        build_datasets(cfg(tmp_path / "x"))
    with pytest.raises(DataError, match=rf"{tmp_path} is not a VOC 2007 folder: expected Annotations/"):
        build_datasets(cfg(tmp_path))
    with pytest.raises(DataError, match="voc2007 needs data_root"):
        build_datasets(DataConfig(dataset="voc2007"))


def test_missing_image_xml_and_split_file(tmp_path):
    root = copy_fixture(tmp_path / "a")
    os.unlink(root / "JPEGImages" / "000003.jpg")
    with pytest.raises(DataError, match=r"1 of 5 image files listed by .*trainval\.txt are missing, e\.g\. "
                                        r".*JPEGImages/000003\.jpg"):
        build_datasets(cfg(root))
    root = copy_fixture(tmp_path / "b")
    os.unlink(root / "Annotations" / "000004.xml")
    with pytest.raises(DataError, match=r"1 of 5 annotation files listed by .*trainval\.txt are missing, e\.g\. "
                                        r".*Annotations/000004\.xml"):
        build_datasets(cfg(root))
    root = copy_fixture(tmp_path / "c")
    os.unlink(root / "ImageSets" / "Main" / "test.txt")
    with pytest.raises(DataError, match=r"test\.txt does not exist: expected the VOC test image-id list"):
        build_datasets(cfg(root))


def test_malformed_xml(tmp_path):
    root = copy_fixture(tmp_path)
    xml = root / "Annotations" / "000002.xml"
    xml.write_text(xml.read_text().replace("<name>train</name>", "<name>tram</name>"))
    with pytest.raises(DataError, match=r"000002\.xml: unknown class 'tram'"):
        build_datasets(cfg(root))
    xml.write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"000002\.xml is not a valid VOC annotation XML"):
        build_datasets(cfg(root))
