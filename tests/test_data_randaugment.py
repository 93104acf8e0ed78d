import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from salgl_core.data.randaugment import MAGNITUDES, OPS, OfficialRandAugment, apply_op
from salgl_core.data.transforms import RANDAUGMENT_POLICIES, CutoutPIL, real_train_transform

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _test_images() -> list[Image.Image]:
    """A non-square noisy gradient (catches width/height swaps) and, when ../shared is present, real COCO
    images at a small size."""
    rng = np.random.default_rng(0)
    h, w = 47, 61
    grad = np.linspace(0, 255, w)[None, :, None] * np.linspace(0.2, 1.0, h)[:, None, None]
    arr = np.clip(grad + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    images = [Image.fromarray(arr, "RGB")]
    coco = SHARED / "coco128" / "train2017"
    if coco.is_dir():
        for f in sorted(coco.glob("*.jpg"))[:3]:
            with Image.open(f) as im:
                images.append(im.convert("RGB").resize((72, 56)))
    return images


IMAGES = _test_images()


@pytest.fixture
def package(monkeypatch):
    pkg = pytest.importorskip("randaugment", reason="the PyPI package `randaugment` (the official code's "
                                                    "RandAugment) is not installed: pip install randaugment")
    # The package builds its magnitude tables with np.int, which numpy 1.24 removed (it is plain int).
    monkeypatch.setattr(np, "int", int, raising=False)
    return pkg


def _seeded(seed: int, fn, *args):
    """fn(*args) after seeding both generators, and the next draw of each (equal next draws: the same
    number of random numbers was consumed)."""
    random.seed(seed)
    np.random.seed(seed)
    out = fn(*args)
    return out, random.random(), np.random.random()


def _same(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("op", OPS)
def test_every_op_and_magnitude_matches_the_package(package, op):
    from randaugment.randaugment import SubPolicy

    def ours(img, m):
        random.random()  # the package's SubPolicy draws the slot's coin before the op
        out = apply_op(img, op, m)
        random.random()
        return out

    for img in IMAGES:
        for m in MAGNITUDES:  # the policy's 1..9 (upstream Cutout asserts on magnitude 0)
            for seed in (0, 1, 2):
                theirs = _seeded(seed, SubPolicy(1.0, op, m, 0.0, op, m), img)
                mine = _seeded(seed, ours, img, m)
                assert _same(mine[0], theirs[0]) and mine[1:] == theirs[1:], (op, m, seed, img.size)


def test_policy_matches_the_package_for_fixed_seeds(package):
    theirs_ra, ours_ra = package.RandAugment(), OfficialRandAugment()
    changed = 0
    for img in IMAGES:
        for seed in range(60):
            theirs = _seeded(seed, theirs_ra, img)
            mine = _seeded(seed, ours_ra, img)
            assert _same(mine[0], theirs[0]) and mine[1:] == theirs[1:], (seed, img.size)
            changed += not _same(mine[0], img)
    assert changed > 0.5 * 60 * len(IMAGES)  # each slot fires with p 0.5: 3/4 of images change


def test_policy_is_reproducible_and_covers_the_ops():
    ra = OfficialRandAugment()
    img = IMAGES[0]
    assert _same(_seeded(3, ra, img)[0], _seeded(3, ra, img)[0])
    outs = {_seeded(s, ra, img)[0].tobytes() for s in range(40)}
    assert len(outs) > 20  # different seeds, different augmentations
    assert len(ra.pairs) == 15 * 9 and {op for op, _ in ra.pairs} == set(OPS) and set(MAGNITUDES) == set(range(1, 10))


def test_policy_draw_is_uniform_over_ops():
    # The first slot's op is pairs[randint // 135].op: over many draws each op appears about 1/15 of the time.
    ra = OfficialRandAugment()
    seen = {op: 0 for op in OPS}
    random.seed(0)
    n = len(ra.pairs)
    for _ in range(3000):
        first, _ = divmod(random.randint(0, n * n - 1), n)
        seen[ra.pairs[first][0]] += 1
    assert min(seen.values()) > 3000 / 15 * 0.7


def test_op_details_by_hand():
    img = Image.new("RGB", (40, 30), (10, 20, 30))
    # Cutout: a grey square of round(20 m / 9) px, centre from numpy's RNG.
    np.random.seed(0)
    x, y = np.random.randint(0, 40), np.random.randint(0, 30)
    np.random.seed(0)
    out = np.asarray(apply_op(img, "Cutout", 9))  # side 20
    grey = (out == (125, 122, 113)).all(axis=2)
    ys, xs = np.nonzero(grey)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (max(0, x - 10), min(40, x + 10), max(0, y - 10),
                                                                 min(30, y + 10))
    assert _same(apply_op(img, "Cutout", 0), img)  # side 0: nothing painted
    assert np.asarray(apply_op(img, "Invert", 5))[0, 0].tolist() == [245, 235, 225]
    assert np.asarray(apply_op(img, "Solarize", 9))[0, 0].tolist() == [245, 235, 225]  # threshold 0
    assert np.asarray(apply_op(img, "Posterize", 9))[0, 0].tolist() == [0, 16, 16]  # 4 bits
    # Translate by 45% of the width: the left (or right) part is filled with grey 128.
    out = np.asarray(apply_op(img, "TranslateX", 9))
    assert (out == 128).all(axis=2).any(axis=0).sum() == round(150 / 331 * 40)
    with pytest.raises(ValueError, match="unknown RandAugment op"):
        apply_op(img, "Blur", 3)
    with pytest.raises(ValueError, match="out of range"):
        apply_op(img, "Rotate", 10)


def _steps(t: T.Compose) -> list[type]:
    return [type(s) for s in t.transforms]


def test_train_transform_policies_by_name():
    assert RANDAUGMENT_POLICIES == ("official", "torchvision", "none")
    tail = [T.PILToTensor]  # uint8: normalised on the device (transforms.to_model_input)
    assert _steps(real_train_transform(64, "official")) == [T.Resize, T.RandomHorizontalFlip, CutoutPIL,
                                                           OfficialRandAugment, *tail]
    assert _steps(real_train_transform(64, "torchvision", cutout=False)) == [T.Resize, T.RandomHorizontalFlip,
                                                                             T.RandAugment, *tail]
    assert _steps(real_train_transform(64, "none")) == [T.Resize, T.RandomHorizontalFlip, CutoutPIL, *tail]
    # The boolean of the current config: True is torchvision's policy (the behaviour so far), False none.
    assert _steps(real_train_transform(64, True)) == _steps(real_train_transform(64, "torchvision"))
    assert _steps(real_train_transform(64, False)) == _steps(real_train_transform(64, "none"))
    with pytest.raises(ValueError, match="official, torchvision, none"):
        real_train_transform(64, "uda")
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    x = real_train_transform(48, "official")(IMAGES[0])
    assert x.shape == (3, 48, 48) and x.dtype == torch.uint8
