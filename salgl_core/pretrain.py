"""The small CNN pretrained on a disjoint synthetic split (backbone_weights='synthetic-pretrained'), cached by key.

A frozen backbone (freeze_backbone, and the cached-feature trials of salgl_core/features.py) is only as
good as its features, and a randomly initialised small CNN has none worth freezing. So the small CNN is
pretrained once as a plain multi-label classifier (global average pool + linear, BCE) on images from the
same synthetic world as the experiment (same generator seed, scenes, classes, scene visibility and cue) but
from an image stream of their own, disjoint from the train and val images (the generator seeds image i of
split s with [seed, s, i, version] for s = 0 train and 1 val; pretraining uses s = PRETRAIN_STREAM). The
labels it sees are object labels only, never scene ids.

Why not EfficientNet-Lite0 (the other offline-pretrained backbone): its tokens are 1280 channels wide,
which makes everything after the backbone (encoder, attention, the per-label graph head) about 100x
more expensive on a CPU than the small CNN's 128, and at the synthetic 64 px its stride 32 leaves a 2x2
token grid for the attention to look at; ImageNet features also know nothing of coloured synthetic shapes.

Cache: `<cache root>/pretrained-small_cnn-<hash>/small_cnn.pth` (+ meta.json: the key, the training
curve, a held-out mAP), under the synthetic data's cache root; the key is the data parameters that shape
the images plus the pretraining settings and the image size. Built in a temporary folder and renamed into
place, like the data. Training runs under its own seed inside `torch.random.fork_rng`, so resolving the
weights leaves the caller's random streams untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from salgl_core.backbone import SYNTHETIC_PRETRAINED, build_backbone
from salgl_core.config import ConfigError, DataConfig, ExperimentConfig, ModelConfig
from salgl_core.data.errors import DataError
from salgl_core.data.synthetic import cache_root
from salgl_core.data.transforms import SYNTHETIC_NATIVE_SIZE, to_model_input
from salgl_core.io import atomic_write_bytes, atomic_write_text, publish_dir

VERSION = 1  # part of the key: bump it when the pretraining procedure changes
PRETRAIN_STREAM = 1000  # the generator's split index for pretraining images (train 0, val 1)
WEIGHTS, META = "small_cnn.pth", "meta.json"


@dataclass(frozen=True)
class PretrainSettings:
    """How the small CNN is pretrained; every field is part of the cache key. The last `held_out` images are
    not trained on: their mAP in meta.json says how good the frozen features are."""

    # 2700 training images x 6 epochs: held-out mAP 79.7 (BCE 0.185); 78 s on 2 idle CPU cores, 370 s loaded.
    images: int = 3000
    held_out: int = 300
    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


DEFAULT_SETTINGS = PretrainSettings()


def pretrain_key(cfg: DataConfig, settings: PretrainSettings) -> dict[str, Any]:
    from salgl_core.data.synthetic import synthetic_params

    # The split sizes do not change the pretraining images (streams are per image); everything else does.
    data = {k: v for k, v in synthetic_params(cfg).items() if k not in ("train", "val")}
    return {"version": VERSION, "stream": PRETRAIN_STREAM, "data": data, "image_size": cfg.image_size,
            "settings": dataclasses.asdict(settings)}


def render_images(cfg: DataConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n pretraining images (uint8 [n, S, S, 3] at cfg.image_size, JPEG round trip as the data
    files) and their multi-hot labels (float32 [n, C])."""
    from salgl_core.data import synthetic as syn

    names = syn.class_names(cfg.synthetic_classes)
    world = syn.make_world(cfg.synthetic_seed, cfg.synthetic_scenes, cfg.synthetic_classes)
    yy, xx = np.mgrid[0:syn.SIZE, 0:syn.SIZE].astype(np.float32)
    grid = (yy, xx)
    s = cfg.image_size
    images = np.empty((n, s, s, 3), dtype=np.uint8)
    labels = np.zeros((n, cfg.synthetic_classes), dtype=np.float32)
    for i in range(n):
        rng = np.random.default_rng([cfg.synthetic_seed, PRETRAIN_STREAM, i, syn.VERSION])
        z, present = syn.sample_labels(world, len(names), rng)
        data, _, _ = syn.render_image(world, z, present, names, rng, grid, cfg.synthetic_scene_visibility,
                                      cfg.synthetic_scene_cue)
        img = Image.open(io.BytesIO(data)).convert("RGB")
        if s != SYNTHETIC_NATIVE_SIZE:  # as the evaluation transform's Resize (bilinear, antialiased)
            img = img.resize((s, s), Image.BILINEAR)
        images[i] = np.asarray(img)
        labels[i, present] = 1.0
    return images, labels


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 [B, S, S, 3] images as the model takes them (CPU)."""
    return to_model_input(x.permute(0, 3, 1, 2), torch.device("cpu"))


def _held_out_map(net: nn.Module, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    from salgl_core.metrics import evaluate

    net.eval()
    with torch.no_grad():
        scores = torch.cat([torch.sigmoid(net(_normalise(torch.from_numpy(x[i:i + batch]))))
                            for i in range(0, len(x), batch)])
    return float(evaluate(scores.numpy(), y)["mAP"])


def train_small_cnn(cfg: DataConfig, settings: PretrainSettings,
                    log: Callable[[str], None] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Pretrain the small CNN (GAP + linear head, BCE, AdamW + cosine, horizontal flips); returns its
    backbone state_dict and a report (loss per epoch, held-out mAP, seconds)."""
    t0 = time.perf_counter()
    x, y = render_images(cfg, settings.images)
    render_s = time.perf_counter() - t0
    n_train = settings.images - settings.held_out
    if n_train < settings.batch_size:
        raise ConfigError(f"pretraining needs at least one batch of {settings.batch_size} training images, "
                          f"got {settings.images} - {settings.held_out} held out")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        backbone, dim = build_backbone("small_cnn", None)
        net = nn.Sequential(backbone, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(dim, y.shape[1]))
        opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        steps = settings.epochs * (n_train // settings.batch_size)
        # OneCycle divides by the length of its warm-up and of its decay: each needs a step at least (10 steps
        # at pct_start 0.1 would give a warm-up of none); under 3 steps the rate stays constant.
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.lr, total_steps=steps,
                                                    pct_start=max(0.1, 2 / steps)) if steps >= 3 else None
        loss_fn = nn.BCEWithLogitsLoss()
        gen = torch.Generator().manual_seed(settings.seed)
        curve = []
        for epoch in range(settings.epochs):
            net.train()
            order = torch.randperm(n_train, generator=gen).numpy()
            total = 0.0
            for i in range(n_train // settings.batch_size):
                idx = np.sort(order[i * settings.batch_size:(i + 1) * settings.batch_size])
                xb, yb = _normalise(torch.from_numpy(x[idx])), torch.from_numpy(y[idx])
                flip = torch.rand(len(idx), generator=gen) < 0.5
                xb[flip] = xb[flip].flip(-1)
                loss = loss_fn(net(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total += loss.item() * len(idx)
            curve.append(round(total / (n_train // settings.batch_size * settings.batch_size), 5))
            if log:
                log(f"pretraining small_cnn: epoch {epoch + 1}/{settings.epochs}  BCE {curve[-1]:.4f}")
        held = _held_out_map(net, x[n_train:], y[n_train:], settings.batch_size) if settings.held_out else None
    report = {"bce_per_epoch": curve, "held_out_mAP": held, "render_seconds": round(render_s, 2),
              "seconds": round(time.perf_counter() - t0, 2)}
    return {k: v.detach().clone() for k, v in backbone.state_dict().items()}, report


def pretrained_small_cnn(cfg: DataConfig, settings: PretrainSettings = DEFAULT_SETTINGS,
                         log: Callable[[str], None] | None = None) -> Path:
    """The weights file of the small CNN pretrained for `cfg`'s synthetic world: reused from the cache, or
    trained now (25-80 s on 2 idle CPU cores at the default settings) and renamed into place."""
    key = pretrain_key(cfg, settings)
    name = "pretrained-small_cnn-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = cache_root(cfg)
    final = root / name
    if final.exists():
        if not (final / WEIGHTS).is_file() or not (final / META).is_file():
            raise DataError(f"pretrained weights folder {final} is incomplete; delete it and it will be rebuilt")
        return final / WEIGHTS
    root.mkdir(parents=True, exist_ok=True)
    if log:
        log(f"pretraining small_cnn once (under 2 min on 2 CPU cores) on {settings.images} synthetic images "
            f"of a disjoint stream -> {final}")
    state, report = train_small_cnn(cfg, settings, log)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=root))
    try:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(tmp / WEIGHTS, buf.getvalue())
        atomic_write_text(tmp / META, json.dumps({"key": key, **report}, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; other users' trials read it too
        publish_dir(tmp, final, (final / WEIGHTS).is_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / WEIGHTS


def resolve_backbone_weights(cfg: ExperimentConfig, log: Callable[[str], None] | None = None,
                             settings: PretrainSettings | None = None) -> ModelConfig:
    """cfg.model with backbone_weights 'synthetic-pretrained' replaced by the cached file (pretraining it
    first if needed); any other value is returned unchanged."""
    if cfg.model.backbone_weights != SYNTHETIC_PRETRAINED:
        return cfg.model
    path = pretrained_small_cnn(cfg.data, settings or DEFAULT_SETTINGS, log)
    return dataclasses.replace(cfg.model, backbone_weights=str(path))
