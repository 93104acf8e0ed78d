from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from salgl_core.config import DataConfig
from salgl_core.data import (
    CorruptImageError,
    DataError,
    MultiLabelDataset,
    SkippedImage,
    build_loader,
    collate,
)
from salgl_core.data.images import check_files_exist, load_image
from salgl_core.data.transforms import IMAGENET_MEAN, CutoutPIL, eval_transform, to_model_input, train_transform

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRUNCATED = SHARED / "voc_mmdet_fixture" / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000001.jpg"


def make_images(folder: Path, n: int, size: int = 24) -> list[str]:
    paths = []
    for i in range(n):
        p = folder / f"{i:03d}.jpg"
        Image.new("RGB", (size + i, size), (i * 20 % 256, 100, 200)).save(p)
        paths.append(str(p))
    return paths


def test_load_image_errors(tmp_path):
    with pytest.raises(DataError, match=rf"image file {tmp_path / 'nope.jpg'} does not exist"):
        load_image(tmp_path / "nope.jpg")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a jpeg")
    with pytest.raises(CorruptImageError, match=r"junk\.jpg is corrupt or truncated.*--skip-corrupt"):
        load_image(junk)
    assert issubclass(CorruptImageError, ValueError) and issubclass(DataError, ValueError)
    good = make_images(tmp_path, 1)[0]
    img = load_image(good)
    assert img.mode == "RGB" and img.size == (24, 24)


@pytest.mark.skipif(not TRUNCATED.is_file(), reason="../shared/data/voc_mmdet_fixture is not available")
def test_truncated_jpeg_is_corrupt():
    with pytest.raises(CorruptImageError, match=r"000001\.jpg.*truncated"):
        load_image(TRUNCATED)


def test_check_files_exist(tmp_path):
    paths = make_images(tmp_path, 3)
    check_files_exist(paths, "list.txt", "hint")
    with pytest.raises(DataError, match=r"2 of 5 image files listed by list\.txt are missing, e\.g\. .*a\.jpg "
                                        r"\(and 1 more\); hint"):
        check_files_exist([*paths, str(tmp_path / "a.jpg"), str(tmp_path / "sub" / "b.jpg")], "list.txt", "hint")


def dataset(tmp_path: Path, n: int = 10, skip: bool = False, corrupt: tuple[int, ...] = ()) -> MultiLabelDataset:
    paths = make_images(tmp_path, n)
    for i in corrupt:
        Path(paths[i]).write_bytes(b"\xff\xd8\xff broken")
    labels = np.eye(n, 4, dtype=np.uint8)
    ignore = np.zeros((n, 4), dtype=bool)
    ignore[1, 2] = True
    tf = eval_transform(DataConfig(dataset="coco", image_size=32))
    return MultiLabelDataset(paths, labels, ["a", "b", "c", "d"], tf, 32, ignore=ignore, skip_corrupt=skip)


def test_item_and_collate(tmp_path):
    ds = dataset(tmp_path, skip=True, corrupt=(3,))
    img, target, ignore, index, scene = ds[1]
    assert img.shape == (3, 32, 32) and img.dtype == torch.uint8
    assert target.dtype == torch.float32 and ignore.dtype == torch.bool
    assert target.tolist() == [0, 1, 0, 0] and ignore.tolist() == [False, False, True, False] and index == 1
    assert scene == -1  # this dataset records no scenes
    marker = ds[3]
    assert isinstance(marker, SkippedImage) and marker.path.endswith("003.jpg")
    batch = collate([ds[i] for i in range(5)])
    assert set(batch) == {"images", "targets", "ignore", "index", "scene", "skipped"}
    assert batch["scene"].dtype == torch.long and batch["scene"].tolist() == [-1] * 4
    assert batch["images"].shape == (4, 3, 32, 32) and batch["images"].dtype == torch.uint8
    assert batch["targets"].shape == (4, 4) and not batch["images"].is_shared()  # shared only inside a worker
    assert batch["ignore"].dtype == torch.bool and batch["index"].dtype == torch.long
    assert batch["index"].tolist() == [0, 1, 2, 4] and batch["skipped"] == 1
    assert torch.equal(batch["targets"][3], torch.tensor([0.0, 0, 0, 0]))
    empty = collate([marker])
    assert empty["images"].shape == (0, 3, 32, 32) and empty["images"].dtype == torch.uint8
    assert empty["skipped"] == 1 and empty["index"].numel() == 0
    assert empty["scene"].shape == (0,) and empty["scene"].dtype == torch.long


def test_items_and_batches_carry_the_true_scene(tmp_path):
    paths = make_images(tmp_path, 4)
    Path(paths[2]).write_bytes(b"\xff\xd8\xff broken")
    tf = eval_transform(DataConfig(dataset="coco", image_size=32))
    ds = MultiLabelDataset(paths, np.eye(4, 2, dtype=np.uint8), ["a", "b"], tf, 32, skip_corrupt=True,
                           scene_ids=np.array([2, 0, 1, 3]))
    assert [ds[i][4] for i in (0, 1, 3)] == [2, 0, 3]
    batch = collate([ds[3], ds[2], ds[1]])  # the skipped image's scene goes with it
    assert batch["index"].tolist() == [3, 1] and batch["scene"].tolist() == [3, 0] and batch["skipped"] == 1


def test_corrupt_raises_without_skip(tmp_path):
    ds = dataset(tmp_path, corrupt=(2,))
    with pytest.raises(CorruptImageError, match=r"002\.jpg"):
        ds[2]


def test_loader_is_seeded_and_counts_skips(tmp_path):
    ds = dataset(tmp_path, n=12, skip=True, corrupt=(5, 7))

    def order(seed: int, workers: int) -> tuple[list[int], int]:
        batches = list(build_loader(ds, 4, shuffle=True, num_workers=workers, seed=seed))
        return [i for b in batches for i in b["index"].tolist()], sum(b["skipped"] for b in batches)

    a, skipped = order(0, 0)
    assert sorted(a) == [i for i in range(12) if i not in (5, 7)] and skipped == 2
    assert order(0, 0)[0] == a and order(1, 0)[0] != a
    assert order(0, 2) == (a, 2)  # worker processes see the same order and the same skips
    loader = build_loader(ds, 4, shuffle=False, num_workers=1, drop_last=True)
    assert loader.drop_last and not loader.persistent_workers  # re-seeded every pass: exact resume
    g = torch.Generator()
    g.manual_seed(3)
    first = [i for b in build_loader(ds, 4, shuffle=True, generator=g) for i in b["index"].tolist()]
    g.manual_seed(3)
    assert [i for b in build_loader(ds, 4, shuffle=True, generator=g) for i in b["index"].tolist()] == first


class RandomDataset(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        return (torch.zeros(3, 2, 2), torch.tensor([float(np.random.rand()), float(torch.rand(()))]),
                torch.zeros(2, dtype=torch.bool), i, -1)


def test_workers_seed_numpy_reproducibly():
    def draws(seed: int) -> list[float]:
        return [v for b in build_loader(RandomDataset(), 2, False, num_workers=2, seed=seed)
                for v in b["targets"][:, 0].tolist()]

    a = draws(3)
    assert a == draws(3) and a != draws(4)
    assert len(set(a)) == 8  # two workers do not repeat each other's numpy stream


def test_cutout_paints_one_box():
    torch.manual_seed(0)
    img = Image.new("RGB", (64, 64), (0, 0, 0))
    out = np.asarray(CutoutPIL(0.5)(img))
    assert np.asarray(img).max() == 0  # the input is left alone
    painted = out.any(axis=2)
    ys, xs = np.nonzero(painted)
    assert painted.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # one rectangle
    assert ys.max() - ys.min() + 1 <= 33 and xs.max() - xs.min() + 1 <= 33
    assert len({tuple(v) for v in out[painted]}) == 1
    sizes = []
    for _ in range(50):  # the box centre is uniform, so full boxes are common: side is half the image
        p = np.asarray(CutoutPIL(0.5)(img)).any(axis=2)
        sizes.append(p.sum())
    assert max(sizes) == 33 * 33


def names(t: T.Compose) -> list[str]:
    return [type(x).__name__ for x in t.transforms]


def test_official_recipe_and_switches():
    cfg = DataConfig(dataset="coco", image_size=448)  # the default policy is the official code's
    assert names(train_transform(cfg)) == ["Resize", "RandomHorizontalFlip", "CutoutPIL", "OfficialRandAugment",
                                           "PILToTensor"]
    assert train_transform(cfg).transforms[0].size == (448, 448)
    assert names(eval_transform(cfg)) == ["Resize", "PILToTensor"]
    off = DataConfig(dataset="voc2007", image_size=224, randaugment="none", cutout=False)
    assert names(train_transform(off)) == ["Resize", "RandomHorizontalFlip", "PILToTensor"]
    tv = DataConfig(dataset="coco", cutout=False, randaugment="torchvision")
    assert names(train_transform(tv))[2] == "RandAugment"
    syn = DataConfig(dataset="synthetic", image_size=64)  # cutout on and a RandAugment policy set: ignored
    assert names(train_transform(syn)) == ["RandomHorizontalFlip", "PILToTensor"]
    assert names(train_transform(DataConfig(dataset="synthetic", image_size=96)))[0] == "Resize"
    img = Image.new("RGB", (50, 30), tuple(int(255 * m) for m in IMAGENET_MEAN))
    x = eval_transform(cfg)(img)
    assert x.shape == (3, 448, 448) and x.dtype == torch.uint8
    assert to_model_input(x[None], torch.device("cpu")).abs().max() < 0.02  # the mean colour normalises to ~0
    y = train_transform(cfg)(img)
    assert y.shape == (3, 448, 448) and y.dtype == torch.uint8

