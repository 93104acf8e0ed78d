"""Image transforms: the official SALGL recipe for real data, a light one for the synthetic data.

Every transform ends in a uint8 tensor [3, S, S] (PILToTensor), not a normalised float one: batches cross the
DataLoader's process boundary through /dev/shm, and uint8 is a quarter of the bytes (a batch of 128 at 448 px is
77 MB, not 308 MB). `to_model_input` is the one place that normalises: it moves a uint8 batch to the device and
there converts it to float32, /255, minus the ImageNet mean, / std, the same arithmetic as the ToTensor ->
Normalize pair it replaces (tests/test_data_uint8.py). Every caller that feeds loader batches to a model calls it.

Real data, train (official `lib/dataset.py`, SALGL.md section 2):
    Resize((S, S)) -> RandomHorizontalFlip -> CutoutPIL(0.5, random colour) -> RandAugment -> PILToTensor,
    then Normalize(ImageNet mean/std) in to_model_input
Real data, test: Resize((S, S)) -> PILToTensor (normalised in to_model_input).
`cutout` switches the cutout step off; the RandAugment policy is chosen by name (RANDAUGMENT_POLICIES):
  "official"     the pip `randaugment` package's UDA-style policy the official code imports, rewritten in
                 `randaugment.py` (2 slots, each p 0.5, magnitudes 1-9 of 10, Invert and Cutout included)
  "torchvision"  torchvision's RandAugment (2 ops always applied, magnitude 9 of 31): not the official policy
  "none"         no RandAugment
The boolean of the current DataConfig maps True to "torchvision" (the behaviour so far) and False to "none".

Synthetic data, train: [Resize] -> RandomHorizontalFlip -> PILToTensor, whatever cfg.cutout and
cfg.randaugment say: the synthetic classes are defined by colour and shape, which colour operations
(posterize, solarize, equalize) and a cutout as large as the objects would destroy.
"""

from __future__ import annotations

import functools

import torch
from PIL import Image, ImageDraw
from torchvision import transforms as T

from salgl_core.config import DataConfig
from salgl_core.data.randaugment import OfficialRandAugment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SYNTHETIC_NATIVE_SIZE = 64


class CutoutPIL:
    """Paint one axis-aligned box of side `cutout_factor` x image side with a random colour.

    The box centre is uniform over the image and the box is clipped at the border, as in the
    official (ASL-derived) CutoutPIL. Randomness comes from torch so DataLoader worker seeding covers it.
    """

    def __init__(self, cutout_factor: float = 0.5) -> None:
        if not 0.0 < cutout_factor <= 1.0:
            raise ValueError(f"cutout_factor = {cutout_factor} must be in (0, 1]")
        self.cutout_factor = cutout_factor

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        cw, ch = int(self.cutout_factor * w + 0.5), int(self.cutout_factor * h + 0.5)
        r = torch.randint(0, 1 << 30, (5,)).tolist()
        xc, yc = r[0] % w, r[1] % h
        x1, x2 = max(xc - cw // 2, 0), min(xc + cw // 2, w)
        y1, y2 = max(yc - ch // 2, 0), min(yc + ch // 2, h)
        fill = (r[2] % 256, r[3] % 256, r[4] % 256)
        img = img.copy()
        ImageDraw.Draw(img).rectangle([x1, y1, x2, y2], fill=fill)
        return img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cutout_factor={self.cutout_factor})"


def _tail() -> list:
    return [T.PILToTensor()]  # uint8 [3, S, S]; to_model_input normalises on the device


@functools.lru_cache(maxsize=8)
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Made once per device: a fresh torch.tensor on a GPU would be a host-to-device copy every step.
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return mean, std


def to_model_input(images: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A loader batch as the model takes it: uint8 [B, 3, S, S] is moved to `device` (non_blocking, so a pinned
    batch overlaps the copy) and only then made float32, /255, minus the ImageNet mean, / std; a float tensor (a
    cached-feature batch, a test's normalised images) is only moved. channels_last is applied last when asked."""
    x = images.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"to_model_input takes uint8 images [B, 3, S, S], got shape {tuple(x.shape)}")
        mean, std = _imagenet_stats(x.device)
        # The ops of ToTensor (/255) and Normalize ((x - mean) / std) in their order; in place on the new
        # float tensor, so the device holds one float batch, not three.
        x = x.float().div_(255).sub_(mean).div_(std)
    elif not x.is_floating_point():
        raise TypeError(f"to_model_input takes uint8 images or a float tensor, got {x.dtype}")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


RANDAUGMENT_POLICIES = ("official", "torchvision", "none")


def randaugment_policy(randaugment: str | bool) -> str:
    """The policy name for a name or the legacy boolean (True = torchvision's, the behaviour before names)."""
    if isinstance(randaugment, bool):
        return "torchvision" if randaugment else "none"
    if randaugment not in RANDAUGMENT_POLICIES:
        raise ValueError(f"randaugment = {randaugment!r} is unknown; use one of {', '.join(RANDAUGMENT_POLICIES)}")
    return randaugment


def real_train_transform(image_size: int, randaugment: str | bool = "official", cutout: bool = True) -> T.Compose:
    """The official training transform for real images at image_size x image_size (see the module docstring)."""
    policy = randaugment_policy(randaugment)
    t: list = [T.Resize((image_size, image_size)), T.RandomHorizontalFlip()]
    if cutout:
        t.append(CutoutPIL(cutout_factor=0.5))
    if policy == "official":
        t.append(OfficialRandAugment())
    elif policy == "torchvision":
        t.append(T.RandAugment())
    return T.Compose(t + _tail())


def train_transform(cfg: DataConfig) -> T.Compose:
    s = cfg.image_size
    if cfg.dataset == "synthetic":
        resize = [] if s == SYNTHETIC_NATIVE_SIZE else [T.Resize((s, s))]
        return T.Compose([*resize, T.RandomHorizontalFlip(), *_tail()])
    return real_train_transform(s, cfg.randaugment, cfg.cutout)


def eval_transform(cfg: DataConfig) -> T.Compose:
    s = cfg.image_size
    if cfg.dataset == "synthetic" and s == SYNTHETIC_NATIVE_SIZE:
        return T.Compose(_tail())
    return T.Compose([T.Resize((s, s)), *_tail()])
