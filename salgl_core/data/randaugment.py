"""The official SALGL RandAugment: the UDA-style policy of the PyPI package `randaugment` (1.0.2), which the
official `lib/dataset.py` imports (`from randaugment import RandAugment`). Our own code, same outputs.

Policy (per image): one (op, magnitude) pair is drawn uniformly for each of two slots from 15 ops x
magnitudes 1..9; each slot is applied with probability 0.5. Magnitude m of 0..9 indexes a linear range:

    ShearX/Y     shear m*0.3/9, random sign, bicubic     TranslateX/Y  m*(150/331)/9 of the side (up to 45%),
    Rotate       m*30/9 degrees, always counter-clockwise    random sign, nearest
    Color, Contrast, Sharpness, Brightness: factor 1 +/- m*0.9/9 (random sign)
    Posterize    round(8 - 4m/9) bits                    Solarize      threshold 256 - 256m/9
    Cutout       a square of side round(20m/9) pixels (absolute, whatever the image size), grey (125, 122, 113)
    Invert, Equalize, AutoContrast: no magnitude
Geometric ops fill with grey 128. These quirks are the package's and are kept on purpose: rotation never
takes a negative angle (its random sign is commented out upstream), Cutout's size is in pixels, and Cutout
draws its centre from numpy's global RNG while everything else uses Python's `random`. Both generators
are seeded per DataLoader worker (`salgl_core.data.seed_worker`), so outputs are reproducible.

The package itself no longer runs on numpy >= 1.24 (it uses the removed `np.int`); tests compare this
module with it, pixel for pixel, when it is installed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

# The package's op list, in its order: the order decides which op a random draw picks.
OPS = ("Invert", "Cutout", "Sharpness", "AutoContrast", "Posterize", "ShearX", "TranslateX", "TranslateY",
       "ShearY", "Rotate", "Equalize", "Contrast", "Color", "Solarize", "Brightness")
MAGNITUDES = tuple(range(1, 10))
PROBABILITY = 0.5
FILL = (128, 128, 128)
CUTOUT_FILL = (125, 122, 113)

# Magnitude index (0..9) -> parameter, with np.linspace as upstream so every float is bit-identical.
_LEVELS = {
    "ShearX": np.linspace(0, 0.3, 10), "ShearY": np.linspace(0, 0.3, 10),
    "TranslateX": np.linspace(0, 150 / 331, 10), "TranslateY": np.linspace(0, 150 / 331, 10),
    "Rotate": np.linspace(0, 30, 10), "Color": np.linspace(0.0, 0.9, 10),
    "Posterize": np.round(np.linspace(8, 4, 10), 0).astype(int), "Solarize": np.linspace(256, 0, 10),
    "Contrast": np.linspace(0.0, 0.9, 10), "Sharpness": np.linspace(0.0, 0.9, 10),
    "Brightness": np.linspace(0.0, 0.9, 10), "Cutout": np.round(np.linspace(0, 20, 10), 0).astype(int),
}


def _sign() -> int:
    return random.choice((-1, 1))


def _affine(img: Image.Image, coeffs: tuple[float, ...], resample: Image.Resampling) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample, fillcolor=FILL)


def _cutout(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    # numpy's global RNG, x drawn before y, as upstream.
    x = np.random.randint(low=0, high=w)
    y = np.random.randint(low=0, high=h)
    box = (max(0, x - size // 2), max(0, y - size // 2), min(w, x + size // 2), min(h, y + size // 2))
    img = img.copy()
    img.paste(CUTOUT_FILL, box)
    return img


def _enhance(enhancer: type) -> Callable[[Image.Image, float], Image.Image]:
    return lambda img, v: enhancer(img).enhance(1 + v * _sign())


_OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "ShearX": lambda img, v: _affine(img, (1, v * _sign(), 0, 0, 1, 0), Image.Resampling.BICUBIC),
    "ShearY": lambda img, v: _affine(img, (1, 0, 0, v * _sign(), 1, 0), Image.Resampling.BICUBIC),
    "TranslateX": lambda img, v: _affine(img, (1, 0, v * img.size[0] * _sign(), 0, 1, 0), Image.Resampling.NEAREST),
    "TranslateY": lambda img, v: _affine(img, (1, 0, 0, 0, 1, v * img.size[1] * _sign()), Image.Resampling.NEAREST),
    "Rotate": lambda img, v: img.rotate(v, Image.Resampling.NEAREST, fillcolor=FILL),
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Posterize": lambda img, v: ImageOps.posterize(img, int(v)),
    "Solarize": lambda img, v: ImageOps.solarize(img, v),
    "AutoContrast": lambda img, v: ImageOps.autocontrast(img),
    "Equalize": lambda img, v: ImageOps.equalize(img),
    "Invert": lambda img, v: ImageOps.invert(img),
    "Cutout": lambda img, v: _cutout(img, int(v)),
}


def apply_op(img: Image.Image, op: str, magnitude: int) -> Image.Image:
    """Apply one op at magnitude 0..9 to an RGB image (draws its random sign or position as upstream)."""
    if op not in _OPS:
        raise ValueError(f"unknown RandAugment op {op!r}; expected one of {', '.join(OPS)}")
    if not 0 <= magnitude <= 9:
        raise ValueError(f"magnitude {magnitude} is out of range: expected 0..9")
    levels = _LEVELS.get(op)
    return _OPS[op](img, levels[magnitude] if levels is not None else 0)


class OfficialRandAugment:
    """The official training-time RandAugment (see the module docstring); input and output: RGB PIL images."""

    def __init__(self) -> None:
        self.pairs = [(op, m) for op in OPS for m in MAGNITUDES]

    def __call__(self, img: Image.Image) -> Image.Image:
        n = len(self.pairs)
        # Upstream enumerates all n * n two-slot policies and picks one with randint; same draw, same pair.
        first, second = divmod(random.randint(0, n * n - 1), n)
        for op, magnitude in (self.pairs[first], self.pairs[second]):
            if random.random() < PROBABILITY:
                img = apply_op(img, op, magnitude)
        return img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ops={len(OPS)}, magnitudes=1..9, p={PROBABILITY}, slots=2)"
