"""Image transforms: the official SALGL recipe for real data, a light one for the synthetic data.

Real data, train (official `lib/dataset.py`, SALGL.md section 2):
    Resize((S, S)) -> RandomHorizontalFlip -> CutoutPIL(0.5, random colour) -> RandAugment -> ToTensor
    -> Normalize(ImageNet mean/std)
Real data, test: Resize((S, S)) -> ToTensor -> Normalize.
`cfg.cutout` / `cfg.randaugment` switch those two steps off.

Deviation: the official code takes RandAugment from the pip `randaugment` package; we use
torchvision's RandAugment (2 ops, magnitude 9), the same policy family, to add no dependency.

Synthetic data, train: [Resize] -> RandomHorizontalFlip -> ToTensor -> Normalize, whatever cfg.cutout and
cfg.randaugment say: the synthetic classes are defined by colour and shape, which colour operations
(posterize, solarize, equalize) and a cutout as large as the objects would destroy.
"""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw
from torchvision import transforms as T

from salgl_core.config import DataConfig

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
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(cfg: DataConfig) -> T.Compose:
    s = cfg.image_size
    if cfg.dataset == "synthetic":
        resize = [] if s == SYNTHETIC_NATIVE_SIZE else [T.Resize((s, s))]
        return T.Compose([*resize, T.RandomHorizontalFlip(), *_tail()])
    t: list = [T.Resize((s, s)), T.RandomHorizontalFlip()]
    if cfg.cutout:
        t.append(CutoutPIL(cutout_factor=0.5))
    if cfg.randaugment:
        t.append(T.RandAugment())
    return T.Compose(t + _tail())


def eval_transform(cfg: DataConfig) -> T.Compose:
    s = cfg.image_size
    if cfg.dataset == "synthetic" and s == SYNTHETIC_NATIVE_SIZE:
        return T.Compose(_tail())
    return T.Compose([T.Resize((s, s)), *_tail()])
