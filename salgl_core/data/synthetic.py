"""The embedded synthetic dataset: scene-dependent label co-occurrence, written as a real COCO dataset.

SALGL's claim is that labels co-occur differently in different (latent) scenes, so one global
co-occurrence graph blurs structure that K per-scene graphs keep. This generator builds data with
that property in which context (which other objects are present) genuinely helps: objects are small,
noisy and sometimes occluded, and the background only weakly hints at the scene.

Generative process (all randomness from `synthetic_seed`):

1. Classes. C classes, each a distinct (shape, colour) pair out of 8 shapes x 8 colours, named
   "c00_red_disc", "c01_green_square", ...
2. World (depends on seed, K, C only). Each class joins 1 to 3 of the K latent scenes (never more
   than K). Each scene partitions its classes into co-occurrence groups of 2 or 3 (a leftover class
   is a group of its own), with no class pair grouped together in two scenes (for extreme K/C, as
   few such pairs as possible): a class shared by two scenes has different partners in each
   (e.g. c03 appears with c07 in scene 0, with c12 in scene 2).
   Each scene draws group weights ~ Dirichlet(2), so its label distribution differs too. Scene
   frequencies ~ Dirichlet(10) (mildly unbalanced).
3. Image labels. Draw the scene z. Draw 1 group, a second with p 0.45 and a third with p 0.1
   (without replacement, by the scene's group weights). Each member of a drawn group is present with
   p 0.85 (at least one per group). With p 0.1 one more class, uniform over all C, is added as clutter.
   On average about 3 labels an image, like COCO.
4. Background, weakly informative on purpose: mid-grey with a small scene tint (~14/255) and faint
   stripes (amplitude 6/255) whose orientation and period belong to the scene, but with p 0.4 the
   background is taken from a uniformly random scene instead of z; plus per-image brightness/tint
   jitter and pixel noise. Two knobs set how visible the scene is, for studies of when SALGL can
   discover scenes (learned-vs-true scene NMI, and the gap between learned and oracle scenes, against
   visibility): `synthetic_scene_visibility` (default 0.6) is the probability that the background
   comes from z rather than from a uniformly random scene (0: the background says nothing about z,
   only the objects do; 1: every background shows z), and `synthetic_scene_cue` (default 1)
   multiplies the tint and stripe amplitude. They change backgrounds only: the random draws happen in
   the same order at every value, so one seed gives the same scenes, labels and objects (boxes,
   colours) whatever the knobs; the json's "tint" is the cue-1 tint. Their defaults generate exactly
   the dataset of before the knobs.
5. Objects: one instance per label (two with p 0.25), side 5 to 30 px at 64 px (log-uniform; 30 px is
   about a quarter of the image), colour jittered, placed anywhere with up to 30% outside the frame,
   drawn largest first so small objects stay visible; with p 0.15 an object is partly covered by a
   grey occluder patch; with p 0.3 an image gets thin random lines as clutter; pixel noise on top;
   2x supersampled, JPEG quality 92 without chroma subsampling (colour is part of a class's identity).

Output (a COCO instances json per split, readable by `salgl_core.data.coco`): every annotation has a
bbox ([x, y, w, h] clipped to the image), area and a box polygon; every image entry has the extra
fields "scene_id" (the latent scene z) and "background_scene_id" (the scene the background was drawn
from, z or a random one); the top-level "scenes" key
describes the world (classes, groups, weights). Images are 64 x 64, whatever `image_size` is: the
transform resizes, so one dataset serves every resolution.

Determinism: the labels, boxes and json are a function of the parameters alone; the JPEG bytes also
depend on the libjpeg that Pillow ships (identical for one installation).

Cache: `<cache>/synthetic-v<version>-<hash of the parameters>/`, where <cache> is cfg.cache_dir, else
$SALGL_CACHE, else <repo root>/.cache/synthetic. A second call with the same parameters reuses the
folder. The dataset is built in a temporary folder and renamed into place, so concurrent callers
never see half a dataset, and the one that loses the race uses the winner's copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from salgl_core.config import DATA_PATH_FIELDS, DataConfig
from salgl_core.data.bundle import DatasetBundle
from salgl_core.data.coco import coco_bundle
from salgl_core.data.errors import DataError
from salgl_core.io import publish_dir
from salgl_core.registry import datasets

log = logging.getLogger(__name__)

# Part of the cache key: bump it whenever the generated content changes, or stale caches get reused.
# Still 1 after the scene visibility/cue knobs: at their defaults they generate the same bytes as
# before (tests/test_data_synthetic.py checks a checksum recorded before they existed), and they are
# in the cache key themselves, so no cache of other content can be reused.
VERSION = 1
SIZE = 64
_SS = 2  # supersampling factor for drawing
SHAPES = ("disc", "square", "triangle", "ring", "cross", "diamond", "bar", "frame")
COLOURS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 225), "yellow": (235, 205, 40),
    "magenta": (205, 50, 205), "cyan": (40, 205, 215), "orange": (245, 135, 30), "white": (248, 248, 248),
}
_COLOUR_NAMES = tuple(COLOURS)

# Generative constants (see the module docstring).
P_SECOND_GROUP, P_THIRD_GROUP, P_MEMBER, P_CLUTTER_CLASS = 0.45, 0.10, 0.85, 0.10
P_SECOND_INSTANCE, P_OCCLUDER, P_CLUTTER_LINES = 0.25, 0.15, 0.3
# The default scene visibility. It also fixes the layout of the random stream (see `background_scene`),
# so it stays a constant when `synthetic_scene_visibility` varies.
P_BACKGROUND_FROM_SCENE = 0.6
TINT, STRIPE_AMPLITUDE = 14.0, 6.0  # the scene cue at synthetic_scene_cue = 1
MIN_SIDE, MAX_SIDE = 5.0, 30.0


@dataclass
class SyntheticPaths:
    root: Path
    train_images: Path
    train_annotations: Path
    val_images: Path
    val_annotations: Path
    # Whether this call generated the data (False: reused the cache) and how long that took.
    generated: bool = False
    seconds: float = 0.0


def default_cache_dir() -> Path:
    env = os.environ.get("SALGL_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".cache" / "synthetic"


def cache_root(cfg: DataConfig) -> Path:
    """Where the synthetic data goes, and next to it the feature caches (features.py) and pretrained small-CNN
    weights (pretrain.py): cfg.cache_dir, else $SALGL_CACHE, else <repo>/.cache/synthetic."""
    return Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()


def synthetic_params(cfg: DataConfig) -> dict[str, int | float]:
    """Everything the generated content depends on: the cache key, and the json's info.params."""
    return {"version": VERSION, "size": SIZE, "train": cfg.synthetic_train_images, "val": cfg.synthetic_val_images,
            "scenes": cfg.synthetic_scenes, "classes": cfg.synthetic_classes, "seed": cfg.synthetic_seed,
            # float(): visibility 1 and 1.0 are the same dataset, so they must hash alike.
            "visibility": float(cfg.synthetic_scene_visibility), "cue": float(cfg.synthetic_scene_cue)}


def folder_name(params: dict[str, int | float]) -> str:
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return f"synthetic-v{VERSION}-{digest}"


def class_names(num_classes: int) -> list[str]:
    # (shape, (row + shape) mod 8) is injective for < 64 classes, and neighbouring ids differ in both.
    names = []
    for c in range(num_classes):
        s, row = c % len(SHAPES), c // len(SHAPES)
        names.append(f"c{c:02d}_{_COLOUR_NAMES[(row + s) % len(_COLOUR_NAMES)]}_{SHAPES[s]}")
    return names


def _chunk(members: list[int], rng: np.random.Generator) -> list[list[int]]:
    groups, i = [], 0
    while i < len(members):
        size = int(rng.choice([2, 3]))
        groups.append(members[i:i + size])
        i += size
    return groups


def make_world(seed: int, num_scenes: int, num_classes: int) -> dict[str, Any]:
    """Scene definitions: which classes each scene has, their co-occurrence groups and weights."""
    rng = np.random.default_rng([seed, num_scenes, num_classes, VERSION, 7])
    k_, c_ = num_scenes, num_classes
    best: tuple[int, list[list[list[int]]], list[list[int]]] | None = None
    for _ in range(200):
        members: list[list[int]] = [[] for _ in range(k_)]
        for c in range(c_):
            r = min(int(rng.choice([1, 2, 2, 3])), k_)
            for k in rng.choice(k_, size=r, replace=False):
                members[int(k)].append(c)
        for k in range(k_):
            while len(members[k]) < 3:  # every scene needs at least one real group
                extra = int(rng.integers(c_))
                if extra not in members[k]:
                    members[k].append(extra)
        groups = [_chunk([int(c) for c in rng.permutation(m)], rng) for m in members]
        seen: set[tuple[int, int]] = set()
        clashes = 0
        for gs in groups:
            p = {(a, b) for g in gs for a in g for b in g if a < b}
            clashes += len(seen & p)
            seen |= p
        if best is None or clashes < best[0]:
            best = (clashes, groups, members)
        if clashes == 0:
            break
    # Many scenes over few classes may force a repeated pair; then keep the world with the fewest.
    _, groups, members = best
    scenes = []
    for k in range(k_):
        angle = np.pi * (k + rng.uniform(-0.15, 0.15)) / k_
        tint = rng.normal(size=3)
        scenes.append({
            "id": k, "classes": sorted(int(c) for c in members[k]), "groups": groups[k],
            "group_weights": rng.dirichlet(np.full(len(groups[k]), 2.0)).round(6).tolist(),
            "tint": (TINT * tint / np.linalg.norm(tint)).round(3).tolist(),
            "stripe_angle": round(float(angle), 6), "stripe_period": round(float(rng.uniform(6, 16)), 4),
        })
    prior = rng.dirichlet(np.full(k_, 10.0)).round(6)
    prior = (prior / prior.sum()).tolist()
    return {"scenes": scenes, "scene_prior": prior}


def sample_labels(world: dict[str, Any], num_classes: int, rng: np.random.Generator) -> tuple[int, list[int]]:
    scenes = world["scenes"]
    z = int(rng.choice(len(scenes), p=world["scene_prior"]))
    sc = scenes[z]
    groups, w = sc["groups"], np.asarray(sc["group_weights"])
    n = min(1 + int(rng.random() < P_SECOND_GROUP) + int(rng.random() < P_THIRD_GROUP), len(groups))
    labels: set[int] = set()
    for g in rng.choice(len(groups), size=n, replace=False, p=w / w.sum()):
        members = groups[int(g)]
        keep = [c for c in members if rng.random() < P_MEMBER]
        labels.update(keep or [members[int(rng.integers(len(members)))]])
    if rng.random() < P_CLUTTER_CLASS:
        labels.add(int(rng.integers(num_classes)))
    return z, sorted(labels)


def background_scene(z: int, num_scenes: int, visibility: float, rng: np.random.Generator) -> int:
    """z with probability `visibility`, else a uniformly random scene (z itself by chance 1/K).

    The stream is consumed as the generator did before visibility was a knob (one uniform u, then one
    integer r only when u >= P_BACKGROUND_FROM_SCENE), whatever `visibility` is: so the draws after
    these (stripe phase, jitter, objects, clutter) never depend on it, and the default stays byte
    identical. Then u < visibility picks z; otherwise the random scene is r when there is one, else it
    is read off u itself: u is uniform on [visibility, P_BACKGROUND_FROM_SCENE) there, independent of
    everything else, so rescaling it gives a uniform scene without a draw.
    """
    u = float(rng.random())
    r = int(rng.integers(num_scenes)) if u >= P_BACKGROUND_FROM_SCENE else None
    if u < visibility:
        return z
    if r is not None:
        return r
    return min(int(num_scenes * (u - visibility) / (P_BACKGROUND_FROM_SCENE - visibility)), num_scenes - 1)


def _background(world: dict[str, Any], z: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray,
                visibility: float = P_BACKGROUND_FROM_SCENE, cue: float = 1.0) -> tuple[np.ndarray, int]:
    b = background_scene(z, len(world["scenes"]), visibility, rng)
    sc = world["scenes"][b]
    a, period = sc["stripe_angle"], sc["stripe_period"]
    phase = rng.uniform(0, 2 * np.pi)
    # cue multiplies only the scene's part; at cue 1 the products are exact, so the default is unchanged.
    stripes = STRIPE_AMPLITUDE * cue * np.sin(2 * np.pi * (np.cos(a) * xx + np.sin(a) * yy) / period + phase)
    base = 128.0 + rng.normal(0, 10) + cue * np.asarray(sc["tint"]) + rng.normal(0, 5, size=3)
    img = base[None, None, :] + stripes[:, :, None] + rng.normal(0, 6, size=(SIZE, SIZE, 3))
    return img, b


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float],
                colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
    t = max(2.0, s / 5)
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape in ("square", "bar"):
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=round(t))
    elif shape == "cross":
        draw.rectangle((x0, cy - s / 6, x1, cy + s / 6), fill=colour)
        draw.rectangle((cx - s / 6, y0, cx + s / 6, y1), fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif shape == "frame":
        draw.rectangle(box, outline=colour, width=round(t))
    else:  # pragma: no cover
        raise ValueError(shape)


def render_image(world: dict[str, Any], z: int, labels: list[int], names: list[str], rng: np.random.Generator,
                 grid: tuple[np.ndarray, np.ndarray], visibility: float = P_BACKGROUND_FROM_SCENE, cue: float = 1.0
                 ) -> tuple[bytes, list[tuple[int, list[float]]], int]:
    """JPEG bytes, [(class, [x, y, w, h])] per object, and the scene whose background was drawn."""
    bg, bg_scene = _background(world, z, rng, *grid, visibility=visibility, cue=cue)
    canvas = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8)).resize((SIZE * _SS,) * 2, Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    objects = []
    for c in labels:
        for _ in range(1 + int(rng.random() < P_SECOND_INSTANCE)):
            side = float(np.exp(rng.uniform(np.log(MIN_SIDE), np.log(MAX_SIDE))))
            objects.append((side, c))
    objects.sort(key=lambda o: -o[0])  # large first: small objects stay visible on top
    anns = []
    for side, c in objects:
        shape = names[c].rsplit("_", 1)[1]
        w, h = (side, side / 3) if shape == "bar" else (side, side)
        x0 = rng.uniform(-0.3 * w, SIZE - 0.7 * w)
        y0 = rng.uniform(-0.3 * h, SIZE - 0.7 * h)
        base = np.asarray(COLOURS[names[c].split("_")[1]], dtype=float)
        colour = tuple(int(v) for v in np.clip(base + rng.normal(0, 18, size=3), 0, 255))
        box = (x0 * _SS, y0 * _SS, (x0 + w) * _SS, (y0 + h) * _SS)
        _draw_shape(draw, shape, box, colour)
        if rng.random() < P_OCCLUDER:
            ow, oh = w * rng.uniform(0.25, 0.5), h * rng.uniform(0.25, 0.5)
            ox, oy = x0 + rng.uniform(0, w - ow), y0 + rng.uniform(0, h - oh)
            grey = int(rng.integers(60, 200))
            draw.rectangle((ox * _SS, oy * _SS, (ox + ow) * _SS, (oy + oh) * _SS), fill=(grey,) * 3)
        cx0, cy0 = max(x0, 0.0), max(y0, 0.0)
        cx1, cy1 = min(x0 + w, float(SIZE)), min(y0 + h, float(SIZE))
        anns.append((c, [round(cx0, 2), round(cy0, 2), round(cx1 - cx0, 2), round(cy1 - cy0, 2)]))
    if rng.random() < P_CLUTTER_LINES:
        for _ in range(int(rng.integers(1, 4))):
            pts = rng.uniform(0, SIZE * _SS, size=4).tolist()
            draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 256, size=3)), width=int(rng.integers(1, 3)))
    small = np.asarray(canvas.reduce(_SS), dtype=np.float32) + rng.normal(0, 4, size=(SIZE, SIZE, 3))
    return encode_jpeg(np.clip(small, 0, 255).astype(np.uint8)), anns, bg_scene


def encode_jpeg(pixels: np.ndarray) -> bytes:
    """The image as written: its pixels are the generator's content, these bytes also depend on libjpeg."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=92, subsampling=0)
    return buf.getvalue()


def _write_split(folder: Path, split: str, n: int, first_id: int, world: dict[str, Any], names: list[str],
                 seed: int, split_index: int, visibility: float = P_BACKGROUND_FROM_SCENE, cue: float = 1.0
                 ) -> dict[str, Any]:
    img_dir = folder / split
    img_dir.mkdir(parents=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    images, annotations = [], []
    for i in range(n):
        # One stream per image: the image does not depend on how many others are generated. The knobs
        # are not in its seed: one seed gives the same labels and objects at every visibility and cue.
        rng = np.random.default_rng([seed, split_index, i, VERSION])
        z, labels = sample_labels(world, len(names), rng)
        data, objs, bg_scene = render_image(world, z, labels, names, rng, (yy, xx), visibility, cue)
        img_id = first_id + i
        file_name = f"{img_id:012d}.jpg"
        (img_dir / file_name).write_bytes(data)
        images.append({"id": img_id, "file_name": file_name, "width": SIZE, "height": SIZE,
                       "scene_id": z, "background_scene_id": bg_scene})
        for c, (x, y, w, h) in objs:
            annotations.append({"id": len(annotations) + 1, "image_id": img_id, "category_id": c + 1,
                                "bbox": [x, y, w, h], "area": round(w * h, 2), "iscrowd": 0,
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    return {"images": images, "annotations": annotations}


def _paths(root: Path, generated: bool = False, seconds: float = 0.0) -> SyntheticPaths:
    return SyntheticPaths(root=root, train_images=root / "train", val_images=root / "val",
                          train_annotations=root / "annotations" / "instances_train.json",
                          val_annotations=root / "annotations" / "instances_val.json",
                          generated=generated, seconds=seconds)


def _is_complete(p: SyntheticPaths) -> bool:
    return p.train_annotations.is_file() and p.val_annotations.is_file()


def build_synthetic(folder: Path, params: dict[str, int | float]) -> None:
    """Write the whole dataset for `params` into `folder` (which must not exist yet)."""
    names = class_names(params["classes"])
    world = make_world(params["seed"], params["scenes"], params["classes"])
    categories = [{"id": c + 1, "name": n, "supercategory": n.rsplit("_", 1)[1]} for c, n in enumerate(names)]
    scenes = [{**s, "classes": [c + 1 for c in s["classes"]], "groups": [[c + 1 for c in g] for g in s["groups"]]}
              for s in world["scenes"]]
    (folder / "annotations").mkdir(parents=True)
    first_id = {"train": 1, "val": params["train"] + 1}
    for split_index, split in enumerate(("train", "val")):
        body = _write_split(folder, split, params[split], first_id[split], world, names, params["seed"],
                            split_index, params["visibility"], params["cue"])
        doc = {"info": {"description": "SALGL synthetic scene-dependent co-occurrence dataset "
                                       "(salgl_core.data.synthetic)", "version": VERSION, "params": params,
                        "split": split},
               "licenses": [], "categories": categories, "scenes": scenes, "scene_prior": world["scene_prior"],
               **body}
        (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc, separators=(",", ":")))
    (folder / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")


def _clean_stale_tmp(cache: Path, max_age_s: float = 3600.0) -> None:
    # Left behind only by a process killed mid-generation; generation takes seconds, not an hour.
    for d in cache.glob(".tmp-synthetic-*"):
        try:
            if time.time() - d.stat().st_mtime > max_age_s:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def generate_synthetic(cfg: DataConfig) -> SyntheticPaths:
    """Generate (or reuse from the cache) the synthetic dataset for `cfg`; returns its paths."""
    params = synthetic_params(cfg)
    name = folder_name(params)
    cache = cache_root(cfg)
    final = cache / name
    paths = _paths(final)
    if final.exists():
        if not _is_complete(paths):
            raise DataError(f"synthetic dataset folder {final} is incomplete (missing {paths.train_annotations.name} "
                            f"or {paths.val_annotations.name}); delete the folder and it will be regenerated")
        return paths
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the synthetic data cache {cache} ({e}); set cache_dir (--cache-dir) "
                        "or $SALGL_CACHE to a writable folder") from None
    _clean_stale_tmp(cache)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=cache))
    try:
        build_synthetic(tmp / "data", params)
        generated = publish_dir(tmp / "data", final, lambda: _is_complete(paths))  # False: another was first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _paths(final, generated=generated, seconds=time.perf_counter() - t0 if generated else 0.0)


@datasets.register("synthetic")
def synthetic_bundle(cfg: DataConfig) -> DatasetBundle:
    """Generate (or reuse) the data for `cfg`, then read it as the COCO files it is."""
    given = {f: getattr(cfg, f) for f in DATA_PATH_FIELDS if f != "cache_dir" and getattr(cfg, f) is not None}
    if given:
        log.warning("dataset=synthetic generates its own data; ignoring %s", given)
    p = generate_synthetic(cfg)
    coco_cfg = dataclasses.replace(cfg, data_root=None, train_images=str(p.train_images),
                                   train_annotations=str(p.train_annotations), val_images=str(p.val_images),
                                   val_annotations=str(p.val_annotations))
    bundle = coco_bundle(coco_cfg)
    bundle.info.update({"synthetic_root": str(p.root), "synthetic_params": synthetic_params(cfg),
                        "synthetic_generated": p.generated, "synthetic_seconds": round(p.seconds, 3)})
    return bundle
