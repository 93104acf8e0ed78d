"""Cached-feature trials: the frozen backbone's output for every image, computed once into a memory-mapped cache.

With `freeze_backbone` the backbone is a fixed function of the image, so a trial that trains everything
after it (encoder, scene classifier, attention, GNN, head) can read its output instead of recomputing it
every epoch: on a CPU the backbone is most of a small-CNN step, and decoding/resizing JPEGs is the rest.
`TrainConfig.feature_cache` turns this on; `fit()` then trains on `FeatureDataset`s and calls the model
with `takes_features` set (model.py), everything else unchanged (losses, EMA, metrics, checkpoints).

The cache holds what the evaluation transform gives, for both splits: cached training therefore has NO
augmentation (no flip, RandAugment, cutout), unlike the end-to-end run. That is the price of the speed,
and the field's help says so.

Layout: `<cache root>/features-v<version>-<hash>/` with features.npy (float32 [N, D, h, w], read with
mmap_mode="r" so all trials on a node share its pages read-only), valid.npy (bool [N]: False for an image
skipped as corrupt) and meta.json (the key, shape, seconds to build). <cache root> is the synthetic data's:
cfg.cache_dir, else $SALGL_CACHE, else <repo>/.cache/synthetic. The hash covers every input the numbers
depend on (`feature_key`): the dataset's identity (synthetic: its generator parameters; real data: the
ordered image paths and the size and mtime of its annotation files), the split, the backbone name, a
hash of its weights (state_dict bytes, BatchNorm statistics included), the image size, the evaluation
transform's repr and the dtype. A folder is built in a temporary folder and renamed into place, so a
reader never sees half a cache; a concurrent builder that loses the race uses the winner's copy.

Storage (`TrainConfig.feature_cache_dtype`): float32 by default, which makes a cached run equal the end-to-end
frozen run within float rounding (tests/test_features.py); the sizes that matter on a CPU are small (the default
synthetic study: 1600 images x 128 x 8 x 8 x 4 B = 52 MB; the 206-image COCO subset with Lite0 at 224 px: 52 MB).
float16 halves full-COCO caches (ResNet-101 at 224 px: 123,287 images x 2048 x 7 x 7 x 2 B = 24.7 GB, not 49 GB):
each token is rounded to 11 significant bits (relative error <= 2^-11), and tests/test_features.py shows a cached
run's metrics stay within the tolerance that rounding allows. A token beyond float16's range stops the build.
Trials read either as float32 tensors.

Size limit: a cache above MAX_CACHE_GB is refused before anything is computed (check_cache_size). Every epoch of
every trial reads the whole cache through the page cache: beyond ~200 GB it no longer fits a GPU node's RAM, and
each epoch becomes a disk or NFS read of that size. Full COCO 2014 with ResNet-101 at 448 px is 198 GB in
float32 (2048 x 14 x 14 x 4 B = 1.6 MB an image) and 99 GB in float16; at 576 px float32 (327 GB) is refused.

    build_feature_cache(cfg)   a study builds both splits once before its trials (fit() reuses them): the driver
                               for synthetic data, a Ray task on a GPU for real data (studies/tuning/caches.py)
    check_cache_size(...)      the size refusal, also called by a study's driver before Ray starts
    attach_feature_cache(...)  what fit() calls: build or open the caches and swap the bundle's datasets
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from salgl_core.config import ConfigError, DataConfig, ExperimentConfig
from salgl_core.data.bundle import DatasetBundle
from salgl_core.data.errors import DataError
from salgl_core.data.images import NO_SCENE, MultiLabelDataset, SkippedImage
from salgl_core.data.synthetic import cache_root
from salgl_core.data.transforms import eval_transform, to_model_input
from salgl_core.device import resolve_device
from salgl_core.io import atomic_write_text, publish_dir
from salgl_core.pretrain import resolve_backbone_weights

# Part of the key: bump it when what is stored changes (layout, how the features are computed).
VERSION = 1
SPLITS = ("train", "val")
FEATURES, VALID, META = "features.npy", "valid.npy", "meta.json"
_TMP_PREFIX = ".tmp-features-"
# The largest cache (both splits) a build may write; the module docstring says why this size.
MAX_CACHE_GB = 200.0
_NP_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass
class FeatureCache:
    """One split's cache folder, and whether this call built it (False: reused) and how long that took."""

    root: Path
    split: str
    shape: tuple[int, ...]  # [N, D, h, w]
    built: bool = False
    seconds: float = 0.0

    @property
    def features(self) -> Path:
        return self.root / FEATURES

    @property
    def valid(self) -> Path:
        return self.root / VALID


def weights_digest(module: nn.Module) -> str:
    """sha256 of the module's state_dict (names, dtypes, shapes and bytes, buffers included)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _file_identity(path: str) -> dict[str, Any]:
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def dataset_identity(cfg: DataConfig, bundle: DatasetBundle, dataset: MultiLabelDataset) -> dict[str, Any]:
    """What identifies the images of one split. Synthetic data is a pure function of its generator parameters
    (so a moved cache folder still matches); real data is its ordered image paths plus the size and mtime of
    the files its builder read (annotation files, split lists), so editing them rebuilds the cache."""
    if cfg.dataset == "synthetic" and "synthetic_params" in bundle.info:
        return {"dataset": "synthetic", "params": bundle.info["synthetic_params"], "images": len(dataset)}
    paths = hashlib.sha256("\n".join(map(str, dataset.paths)).encode()).hexdigest()
    files = sorted(str(v) for v in bundle.info.values() if isinstance(v, str) and os.path.isfile(v))
    return {"dataset": cfg.dataset, "images": len(dataset), "paths_sha256": paths,
            "folders": sorted({os.path.dirname(str(p)) for p in dataset.paths}),
            "files": [_file_identity(f) for f in files]}


def feature_key(cfg: ExperimentConfig, bundle: DatasetBundle, split: str, backbone: nn.Module,
                digest: str | None = None) -> dict[str, Any]:
    """Every input the cached numbers depend on; its hash names the folder."""
    dataset = bundle.train if split == "train" else bundle.val
    return {"version": VERSION, "split": split, "data": dataset_identity(cfg.data, bundle, dataset),
            "backbone": cfg.model.backbone, "weights_sha256": digest or weights_digest(backbone),
            "image_size": cfg.data.image_size, "transform": repr(eval_transform(cfg.data)),
            "dtype": cfg.train.feature_cache_dtype}


def folder_name(key: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"features-v{VERSION}-{key['split']}-{digest}"


def _is_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (FEATURES, VALID, META))


def _open(folder: Path, split: str) -> FeatureCache:
    meta = json.loads((folder / META).read_text())
    return FeatureCache(root=folder, split=split, shape=tuple(meta["shape"]))


def _clean_dead_tmp(root: Path) -> None:
    """Remove temporary folders left by builders of this host that died (the name records host and pid);
    a live builder's folder, or another host's, is never touched, however long its build takes."""
    host = socket.gethostname()
    for d in root.glob(f"{_TMP_PREFIX}*"):
        parts = d.name[len(_TMP_PREFIX):].split("~")
        if len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:  # alive, another user's
            pass


@torch.no_grad()
def token_shape(backbone: nn.Module, image_size: int, device: torch.device) -> tuple[int, ...]:
    """[D, h, w] of the backbone's output at `image_size`, from one blank image in eval mode (a training-mode
    BatchNorm would move its statistics); the backbone's mode is restored."""
    was_training = backbone.training
    backbone.eval()
    try:
        return tuple(backbone(torch.zeros(1, 3, image_size, image_size, device=device)).shape[1:])
    finally:
        backbone.train(was_training)


def check_cache_size(cfg: ExperimentConfig, images: int, shape: tuple[int, ...]) -> int:
    """The bytes `images` cached tokens of `shape` take in cfg's feature_cache_dtype; ConfigError in one line above
    MAX_CACHE_GB."""
    dtype = cfg.train.feature_cache_dtype
    size = images * int(np.prod(shape)) * np.dtype(_NP_DTYPES[dtype]).itemsize
    if size > MAX_CACHE_GB * 1e9:
        dims = "x".join(map(str, shape))
        cheaper = "a smaller image_size" if dtype == "float16" else "feature_cache_dtype float16, a smaller image_size"
        raise ConfigError(f"the feature cache would take {size / 1e9:.3g} GB ({images} images x {dims} tokens in "
                          f"{dtype}), above the {MAX_CACHE_GB:g} GB limit (salgl_core/features.py says why): use "
                          f"{cheaper}, or feature_cache false")
    return size


@torch.no_grad()
def _compute(folder: Path, dataset: MultiLabelDataset, backbone: nn.Module, device: torch.device,
             batch_size: int, num_workers: int, dtype: str = "float32") -> tuple[int, ...]:
    """Write features.npy (in `dtype`) and valid.npy of `dataset` (which must carry the evaluation transform)
    into `folder`."""
    from numpy.lib.format import open_memmap

    from salgl_core.data import build_loader

    backbone.eval()
    n = len(dataset)
    valid = np.zeros(n, dtype=bool)
    out = None
    np_dtype = _NP_DTYPES[dtype]
    for batch in build_loader(dataset, batch_size, shuffle=False, num_workers=num_workers):
        if batch["images"].shape[0] == 0:
            continue
        fmap = backbone(to_model_input(batch["images"], device)).float().cpu().numpy()
        with np.errstate(over="ignore"):  # an overflow is caught just below, with what to do
            stored = fmap.astype(np_dtype)
        if not np.isfinite(stored).all():  # beyond float16's range (65504): inf, which no trial could use
            raise DataError(f"the backbone's features reach {np.abs(fmap).max():.3g}, beyond {dtype}'s range "
                            f"(+-{np.finfo(np_dtype).max:g}); use feature_cache_dtype float32")
        if out is None:
            out = open_memmap(folder / FEATURES, mode="w+", dtype=np_dtype, shape=(n, *fmap.shape[1:]))
        idx = batch["index"].numpy()
        out[idx] = stored
        valid[idx] = True
    if out is None:  # no image at all (or all corrupt): an empty array of the right shape
        shape = token_shape(backbone, dataset.image_size, device)
        out = open_memmap(folder / FEATURES, mode="w+", dtype=np_dtype, shape=(n, *shape))
    out.flush()
    shape = tuple(out.shape)
    del out
    np.save(folder / VALID, valid)
    return shape


def build_split(key: dict[str, Any], root: Path, dataset: MultiLabelDataset, backbone: nn.Module,
                device: torch.device, batch_size: int = 64, num_workers: int = 0,
                log: Callable[[str], None] | None = None) -> FeatureCache:
    """The cache of one split for `key`: reused if its folder exists, else computed and renamed into place."""
    split = key["split"]
    final = root / folder_name(key)
    if final.exists():
        if not _is_complete(final):
            raise DataError(f"feature cache folder {final} is incomplete (it needs {FEATURES}, {VALID} and {META}); "
                            "delete the folder and it will be rebuilt")
        return _open(final, split)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the feature cache folder {root} ({e}); set cache_dir (--cache-dir) or "
                        "$SALGL_CACHE to a writable folder") from None
    _clean_dead_tmp(root)
    if log:
        log(f"feature cache: computing {split} backbone features of {len(dataset)} images -> {final}")
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{socket.gethostname()}~{os.getpid()}~", dir=root))
    try:
        shape = _compute(tmp, dataset, backbone, device, batch_size, num_workers, key["dtype"])
        seconds = time.perf_counter() - t0
        meta = {"key": key, "shape": list(shape), "dtype": key["dtype"], "valid": int(np.load(tmp / VALID).sum()),
                "seconds": round(seconds, 3), "device": str(device), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_text(tmp / META, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; other users' trials on the node read it too
        built = publish_dir(tmp, final, lambda: _is_complete(final))  # False: another process finished first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cache = _open(final, split)
    cache.built, cache.seconds = built, seconds if built else 0.0
    return cache


class FeatureDataset(Dataset):
    """A split's cached backbone features with the image dataset's items: the image tensor is replaced by
    the features [D, h, w]; targets, ignore, index and scene are the image dataset's (same collate, same
    batch keys). Other attributes (labels, ignore, ids, scene_ids, class_names) are the image dataset's.

    The memory map is opened lazily in the process that reads it (a DataLoader worker opens its own)."""

    def __init__(self, images: MultiLabelDataset, cache: FeatureCache) -> None:
        if cache.shape[0] != len(images):
            raise DataError(f"feature cache {cache.root} holds {cache.shape[0]} rows for a split of {len(images)} "
                            "images; delete the folder and it will be rebuilt")
        self.images = images
        self.cache = cache
        self.valid = np.load(cache.valid)
        self._features: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("images", "cache", "valid", "_features"):
            raise AttributeError(name)
        return getattr(self.images, name)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_features": None}  # a spawned worker maps the file itself

    def __len__(self) -> int:
        return len(self.images)

    def features(self) -> np.ndarray:
        if self._features is None:
            self._features = np.load(self.cache.features, mmap_mode="r")
        return self._features

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int] | SkippedImage:
        ds = self.images
        if not self.valid[index]:
            return SkippedImage(index, str(ds.paths[index]), tuple(self.cache.shape[1:]), ds.num_classes, torch.float32)
        scene = NO_SCENE if ds.scene_ids is None else int(ds.scene_ids[index])
        # np.array copies the row out of the read-only map (torch refuses non-writable memory); float16 rows
        # become float32, what the model takes.
        row = np.array(self.features()[index], dtype=np.float32)
        return (torch.from_numpy(row), torch.from_numpy(ds.labels[index]),
                torch.from_numpy(ds.ignore[index]), index, scene)


def _eval_images(cfg: DataConfig, dataset: MultiLabelDataset) -> MultiLabelDataset:
    """The same images with the evaluation transform (the training split's own transform augments)."""
    out = copy.copy(dataset)
    out.transform = eval_transform(cfg)
    return out


def build_caches(cfg: ExperimentConfig, bundle: DatasetBundle, backbone: nn.Module, device: torch.device,
                 log: Callable[[str], None] | None = None) -> dict[str, FeatureCache]:
    """Build (or reuse) the train and val caches of `backbone`'s output for `cfg` and `bundle`."""
    if not cfg.model.freeze_backbone:
        raise ConfigError("feature caches need ModelConfig.freeze_backbone = True: a training backbone's "
                          "features change every step")
    root = cache_root(cfg.data)
    digest = weights_digest(backbone)
    keys = {split: feature_key(cfg, bundle, split, backbone, digest) for split in SPLITS}
    if not all((root / folder_name(k)).exists() for k in keys.values()):  # something to build: its size first
        check_cache_size(cfg, len(bundle.train) + len(bundle.val), token_shape(backbone, cfg.data.image_size, device))
    out = {}
    # The loader draws its shuffle seed from the global generator if it has none, and workers are seeded
    # from it: keep the caller's RNG streams exactly as they were, so a cached run matches an uncached one.
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for split in SPLITS:
            ds = _eval_images(cfg.data, bundle.train if split == "train" else bundle.val)
            out[split] = build_split(keys[split], root, ds, backbone, device, cfg.train.batch_size,
                                     cfg.data.num_workers, log)
    return out


def attach_feature_cache(cfg: ExperimentConfig, model: nn.Module, bundle: DatasetBundle, device: torch.device,
                         log: Callable[[str], None] | None = None) -> DatasetBundle:
    """What fit() does with feature_cache on: build or open the caches of `model.backbone`, make the model take
    features instead of images, and return the bundle with FeatureDatasets for train and val."""
    caches = build_caches(cfg, bundle, model.backbone, device, log)
    model.takes_features = True
    info = {"feature_cache": {s: {"root": str(c.root), "shape": list(c.shape), "built": c.built,
                                  "seconds": round(c.seconds, 3)} for s, c in caches.items()}}
    return dataclasses.replace(bundle, train=FeatureDataset(bundle.train, caches["train"]),
                               val=FeatureDataset(bundle.val, caches["val"]), info={**bundle.info, **info})


def build_feature_cache(cfg: ExperimentConfig, log: Callable[[str], None] | None = print) -> dict[str, FeatureCache]:
    """Build both splits' caches for `cfg` once, before a study's trials start (each trial's fit() then finds
    them). The backbone is built as fit() builds it (its weights resolved, initialised right after seeding
    with cfg.train.seed), so a random-init frozen backbone matches too; the key holds the weights' hash, so
    a mismatch would only mean fit() builds its own."""
    from salgl_core.backbone import build_backbone
    from salgl_core.data import build_datasets

    if not cfg.model.freeze_backbone:
        raise ConfigError("build_feature_cache needs ModelConfig.freeze_backbone = True (and is meant for "
                          "TrainConfig.feature_cache = True)")
    device = resolve_device(cfg.train.device)
    bundle = build_datasets(cfg.data)
    model_cfg = resolve_backbone_weights(cfg, log)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.train.seed)
        backbone, _ = build_backbone(model_cfg.backbone, model_cfg.backbone_weights)
    return build_caches(cfg, bundle, backbone.to(device).requires_grad_(False), device, log)
