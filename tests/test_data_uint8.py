"""The uint8 data path (issue 19, fault 3): transforms end in uint8 [3, S, S], `to_model_input` normalises on the
device, and `collate` stacks into shared memory inside a DataLoader worker. Every check compares against the float
path it replaced (ToTensor -> Normalize in the transform), written out here as the reference."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from salgl_core.config import DataConfig, ExperimentConfig
from salgl_core.data import SkippedImage, build_datasets, collate
from salgl_core.data.randaugment import OfficialRandAugment
from salgl_core.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CutoutPIL,
    eval_transform,
    to_model_input,
    train_transform,
)
from salgl_core.engine import fit
from salgl_core.presets import SMOKE, synthetic_preset
from salgl_core.pretrain import render_images

CPU = torch.device("cpu")
COCO = SHARED_DATA / "coco128" / "train2017"
EPS = torch.finfo(torch.float32).eps
# Both paths compute ((x / 255) - mean) / std in float32, three correctly rounded ops each (unit roundoff EPS / 2).
# The error of one path is at most EPS/2 * (1 / std + 2 |value|); |value| <= MAX_ABS, the largest normalised
# pixel. The two paths differ by at most twice that. (On a CPU they run the same kernels and agree exactly; CUDA
# divides by 255 as a multiplication by its reciprocal, which is what the bound is for.)
MAX_ABS = max(max(m, 1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
TOL = 2 * EPS / 2 * (1 / min(IMAGENET_STD) + 2 * MAX_ABS)
FLOAT_TAIL = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]  # what every transform ended in before


def old_float(steps: list) -> T.Compose:
    """A transform as it was before: `steps` then ToTensor -> Normalize."""
    return T.Compose([*steps, *FLOAT_TAIL])


def assert_same_input(uint8_images: torch.Tensor, float_images: torch.Tensor) -> None:
    got = to_model_input(uint8_images, CPU)
    assert got.dtype == torch.float32 and got.shape == float_images.shape
    torch.testing.assert_close(got, float_images, rtol=0, atol=TOL)


def synthetic_images(n: int = 4, size: int = 64) -> list[Image.Image]:
    arrays, _ = render_images(DataConfig(dataset="synthetic", image_size=size), n)
    return [Image.fromarray(a) for a in arrays]


def coco_images(n: int = 4) -> list[Image.Image]:
    if not COCO.is_dir():
        pytest.skip(f"{COCO} is absent (the real COCO images in ../shared)")
    out = []
    for f in sorted(COCO.glob("*.jpg"))[:n]:
        with Image.open(f) as im:
            out.append(im.convert("RGB"))
    return out


def test_tolerance_is_float32_rounding():
    assert 2.6 < MAX_ABS < 2.7 and 1e-6 < TOL < 2e-6


@pytest.mark.parametrize("source", ["coco", "synthetic"])
def test_to_model_input_equals_totensor_normalize(source):
    cfg = DataConfig(dataset=source, image_size=64)
    images = coco_images() if source == "coco" else synthetic_images()
    new, old = eval_transform(cfg), old_float(eval_transform(cfg).transforms[:-1])
    batch = torch.stack([new(im) for im in images])
    assert batch.dtype == torch.uint8 and batch.shape == (len(images), 3, 64, 64)
    reference = torch.stack([old(im) for im in images])
    assert_same_input(batch, reference)
    # Every pixel value and channel, not only the ones these images happen to hold.
    ramp = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16).contiguous()
    assert_same_input(ramp, FLOAT_TAIL[1](ramp[0].float() / 255)[None])


def _seeded(transform, img: Image.Image, seed: int) -> tuple[torch.Tensor, float]:
    """The transform's output under a fixed seed, and the next draw (equal draws: the same RNG use)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    out = transform(img)
    return out, torch.rand(()).item() + random.random() + np.random.rand()


def test_train_transforms_give_the_same_images_as_before():
    """The augmentations (same steps, same order, same random draws), then the old float tail vs the uint8 tail
    normalised by to_model_input: equal for the official real recipe, torchvision's RandAugment and the synthetic
    transforms. The reference recipes are spelt out as they were, independently of transforms.py."""
    s = 48
    cases = [
        (DataConfig(dataset="coco", image_size=s),
         [T.Resize((s, s)), T.RandomHorizontalFlip(), CutoutPIL(0.5), OfficialRandAugment()]),
        (DataConfig(dataset="coco", image_size=s, randaugment="torchvision", cutout=False),
         [T.Resize((s, s)), T.RandomHorizontalFlip(), T.RandAugment()]),
        (DataConfig(dataset="synthetic", image_size=64), [T.RandomHorizontalFlip()]),
        (DataConfig(dataset="synthetic", image_size=s), [T.Resize((s, s)), T.RandomHorizontalFlip()]),
    ]
    real = coco_images(2) if COCO.is_dir() else []
    images = [*synthetic_images(2), *real]
    for cfg, steps in cases:
        new, old = train_transform(cfg), old_float(steps)
        assert [type(t) for t in new.transforms] == [*map(type, steps), T.PILToTensor]
        for seed in range(4):  # seeds with and without a flip, different RandAugment ops
            for img in images:
                got, next_new = _seeded(new, img, seed)
                want, next_old = _seeded(old, img, seed)
                assert got.dtype == torch.uint8 and next_new == next_old
                assert_same_input(got[None], want[None])


def test_to_model_input_passes_floats_and_sets_the_layout():
    feats = torch.randn(2, 5, 3, 3)
    assert to_model_input(feats, CPU) is feats  # a cached-feature batch: nothing to do on its own device
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    cl = to_model_input(images, CPU, channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last) and not cl.is_contiguous()
    assert torch.equal(cl, to_model_input(images, CPU))
    assert images.dtype == torch.uint8  # the loader's batch is left alone
    assert to_model_input(torch.zeros(0, 3, 8, 8, dtype=torch.uint8), CPU).shape == (0, 3, 8, 8)
    with pytest.raises(TypeError, match="uint8 images or a float tensor, got torch.int64"):
        to_model_input(images.long(), CPU)
    with pytest.raises(ValueError, match=r"uint8 images \[B, 3, S, S\], got shape \(3, 8, 8\)"):
        to_model_input(images[0], CPU)


def test_smoke_fit_equals_the_float_path():
    """A whole SMOKE fit on uint8 batches (normalised in the engine) against the same fit whose datasets carry
    the old float transforms (passed through by to_model_input): the same metrics and weights."""
    cfg = ExperimentConfig.from_flat({**synthetic_preset(), **SMOKE, "epochs": 2, "deterministic": True})
    new = fit(cfg, log=None)
    old_data = build_datasets(cfg.data)
    for ds in (old_data.train, old_data.val):
        assert isinstance(ds.transform.transforms[-1], T.PILToTensor)
        ds.transform = old_float(ds.transform.transforms[:-1])
    old = fit(cfg, data=old_data, log=None)
    assert len(new.epochs) == len(old.epochs) == 2
    for a, b in zip(old.epochs, new.epochs, strict=True):
        for key in ("loss_total", "loss_cls", "mAP", "mAP_ema", "CF1", "OF1"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    np.testing.assert_allclose(new.predictions["scores"], old.predictions["scores"], rtol=0, atol=1e-5)
    for name, v in old.model.state_dict().items():
        torch.testing.assert_close(new.model.state_dict()[name], v, atol=1e-5, rtol=1e-5, msg=name)


class _Items(Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int):
        if i == 5:
            return SkippedImage(i, "x.jpg", (3, 4, 4), 2)
        image = torch.full((3, 4, 4), i, dtype=torch.uint8)
        return image, torch.tensor([float(i), 0.0]), torch.zeros(2, dtype=torch.bool), i, -1


def _collate_and_report(batch):
    """Runs in the worker: collate's batch and whether its tensors were allocated in shared memory there."""
    out = collate(batch)
    return out, {k: out[k].is_shared() for k in ("images", "targets", "ignore")}


def test_collate_in_a_worker_stacks_into_shared_memory():
    loader = DataLoader(_Items(), batch_size=3, num_workers=1, collate_fn=_collate_and_report)
    (first, shared_first), (second, shared_second) = list(loader)
    assert shared_first == shared_second == {"images": True, "targets": True, "ignore": True}
    assert first["images"].dtype == torch.uint8 and first["images"].shape == (3, 3, 4, 4)
    assert first["images"][:, 0, 0, 0].tolist() == [0, 1, 2] and first["targets"][:, 0].tolist() == [0, 1, 2]
    assert second["images"].shape == (2, 3, 4, 4) and second["skipped"] == 1 and second["index"].tolist() == [3, 4]
    # In the main process collate allocates ordinary memory, and an all-skipped batch keeps the uint8 dtype.
    assert not collate([_Items()[0]])["images"].is_shared()
    empty = collate([_Items()[5]])
    assert empty["images"].shape == (0, 3, 4, 4) and empty["images"].dtype == torch.uint8
    # A feature cache's skipped rows say float32 (features.FeatureDataset): its empty batches stay float.
    assert collate([SkippedImage(0, "x.jpg", (128, 4, 4), 8, torch.float32)])["images"].dtype == torch.float32


def test_bytes_per_batch():
    """What crosses /dev/shm per batch of the COCO recipe (128 x 3 x 448 x 448): a quarter of the float32 bytes."""
    shape = (128, 3, 448, 448)
    u8 = torch.empty(shape, dtype=torch.uint8, device="meta")
    f32 = torch.empty(shape, dtype=torch.float32, device="meta")
    assert u8.nbytes == 77_070_336 and f32.nbytes == 308_281_344 == 4 * u8.nbytes

