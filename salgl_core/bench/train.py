"""Train benchmark: training throughput (images/s) and peak GPU memory of a recipe's model at its resolution.

Each configuration (AMP dtype x channels_last x torch.compile) is measured twice: on tensors already on
the device (the model's ceiling) and fed by the real training loader on generated JPEGs (decode, the
recipe's augmentations, collate, host-to-device copy). One step is what `engine.train_one_epoch` does:
autocast forward, ASL + scene entropy losses, (scaled) backward, AdamW, EMA update. The model is the
recipe's (K, outmess, normalize, label vectors) with random-init weights, so nothing is downloaded.
torch.compile is measured with channels_last on only unless --full-grid (each compile takes a minute or
more); a configuration that fails (out of memory, a compile error) records its error and the rest go on.

Without CUDA the same command runs small (small CNN at 64 px, batch 4, 2 steps) so tests can run it.

    python -m salgl_core.bench train [--recipe paper-coco-r101-448] [--amp fp16 bf16] [--channels-last on off]
                                     [--compile off on] [--batch N] [--steps N] [--loader-batches N]
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from salgl_core.bench.attention import _device_info, _sync
from salgl_core.config import BACKBONES, DataConfig, ModelConfig, available_cpus
from salgl_core.data import build_loader
from salgl_core.data.images import MultiLabelDataset
from salgl_core.data.transforms import train_transform
from salgl_core.device import resolve_device
from salgl_core.ema import ModelEMA
from salgl_core.losses import SALGLLoss
from salgl_core.model import build_model
from salgl_core.presets import RECIPES, recipe_config

SUMMARY = "training throughput and peak memory of a recipe's model: on-device tensors and the real loader"
# Small shapes for a CPU (chosen automatically without CUDA, or with --small).
SMALL = {"backbone": "small_cnn", "image_size": 64, "batch": 4, "steps": 2, "warmup": 1, "loader_batches": 2,
         "model": {"att_dim": 32, "enc_heads": 4, "enc_ffn": 64}}


def _write_jpeg(job: tuple[str, int, int]) -> None:
    """A smooth random colour field plus noise: content JPEG compresses like a photo, not like flat colour."""
    path, size, seed = job
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    noisy = np.asarray(low, dtype=np.int16) + rng.integers(-24, 25, (size, size, 3), dtype=np.int16)
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def generate_jpegs(folder: Path, n: int, size: int, processes: int) -> list[str]:
    jobs = [(str(folder / f"{i:06d}.jpg"), size, i) for i in range(n)]
    if processes > 1 and n > 16:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            pool.map(_write_jpeg, jobs, chunksize=8)
    else:
        for job in jobs:
            _write_jpeg(job)
    return [j[0] for j in jobs]


def _model_config(recipe: dict[str, Any], small: bool, backbone: str | None) -> ModelConfig:
    fields = {k: v for k, v in recipe.items() if k in ModelConfig.__dataclass_fields__}
    fields["backbone_weights"] = None  # random init: nothing to download, same FLOPs
    if small:
        fields.update(SMALL["model"], backbone=SMALL["backbone"])
    if backbone:
        fields["backbone"] = backbone
    return ModelConfig(**fields)


def _step_fn(model: torch.nn.Module, run: torch.nn.Module, ema: ModelEMA, crit: SALGLLoss,
             opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, device: torch.device,
             dtype: torch.dtype | None):
    """One training step; `run` is the model or its compiled wrapper (whose state_dict keys differ, so the
    EMA reads the model itself)."""
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = run(x, y)
        loss, _ = crit(out.logits, out.scene_probs, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        ema.update(model)
    return step


def _rate(images: int, seconds: float) -> float:
    return round(images / max(seconds, 1e-9), 2)


def measure(cfg: ModelConfig, classes: int, dataset: str, class_names: list[str] | None, device: torch.device,
            amp: str, channels_last: bool, compile_: bool, batch: int, image_size: int, warmup: int, steps: int,
            loader: Any, loader_batches: int, compile_backend: str) -> dict[str, Any]:
    """One configuration: tensor-fed and loader-fed images/s, step time, peak memory."""
    out: dict[str, Any] = {"amp": amp, "channels_last": channels_last, "compile": compile_, "error": None}
    cuda = device.type == "cuda"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp) if cuda else None  # as the engine: CUDA only
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        torch.manual_seed(0)
        model = build_model(cfg, classes, dataset, class_names).to(device).train().to(memory_format=fmt)
        ema = ModelEMA(model, 0.9997)
        crit = SALGLLoss(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
        scaler = torch.amp.GradScaler(device.type, enabled=cuda and amp == "fp16")
        run = torch.compile(model, backend=compile_backend) if compile_ else model
        step = _step_fn(model, run, ema, crit, opt, scaler, device, dtype)
        x = torch.randn(batch, 3, image_size, image_size, device=device).contiguous(memory_format=fmt)
        y = (torch.rand(batch, classes, device=device) < 0.05).float()
        t0 = time.perf_counter()
        for _ in range(warmup):  # includes the compilation
            step(x, y)
        _sync(device)
        out["warmup_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(x, y)
        _sync(device)
        dt = time.perf_counter() - t0
        out["tensors"] = {"images_per_s": _rate(steps * batch, dt), "step_ms": round(1000 * dt / steps, 2)}
        if loader is not None:
            it = iter(loader)
            next(it)  # untimed: worker start-up
            n = 0
            t0 = time.perf_counter()
            for b in itertools.islice(it, loader_batches):
                xb = b["images"].to(device, non_blocking=True).contiguous(memory_format=fmt)
                step(xb, b["targets"].to(device, non_blocking=True))
                n += xb.shape[0]
            _sync(device)
            dt = time.perf_counter() - t0
            out["loader"] = {"images_per_s": _rate(n, dt), "images": n}
    except Exception as e:  # out of memory, a compile failure: record it, measure the next configuration
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    finally:
        out["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None
        if cuda:
            torch.cuda.empty_cache()
    return out


def _grid(args: argparse.Namespace, cuda: bool) -> list[tuple[str, bool, bool]]:
    amps = args.amp or (["fp16", "bf16"] if cuda else ["none"])
    layouts = [v == "on" for v in (args.channels_last or (["on", "off"] if cuda else ["off"]))]
    compiles = [v == "on" for v in (args.compile or (["off", "on"] if cuda else ["off"]))]
    combos = list(itertools.product(amps, layouts, compiles))
    if not args.full_grid and True in layouts:  # compile once per dtype, in the faster layout
        combos = [(a, cl, c) for a, cl, c in combos if not (c and not cl)]
    return combos


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="paper-coco-r101-448", choices=tuple(RECIPES), metavar="NAME",
                   help="the recipe whose model, resolution and augmentations are measured "
                        "(default: paper-coco-r101-448)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu or cuda[:N] (default: auto)")
    p.add_argument("--amp", nargs="+", choices=("none", "fp16", "bf16"), default=None,
                   help="AMP dtypes to measure (default: fp16 bf16 on CUDA; none on CPU, where autocast is off)")
    p.add_argument("--channels-last", nargs="+", choices=("on", "off"), default=None,
                   help="memory formats to measure (default: on off with CUDA, off on CPU)")
    p.add_argument("--compile", nargs="+", choices=("off", "on"), default=None,
                   help="torch.compile off/on (default: off on with CUDA, off on CPU)")
    p.add_argument("--compile-backend", default="inductor", metavar="NAME",
                   help="torch.compile backend (default: inductor; 'eager' checks the wiring quickly)")
    p.add_argument("--full-grid", action="store_true",
                   help="also compile with channels_last off (default: compile with channels_last on only)")
    p.add_argument("--small", action=argparse.BooleanOptionalAction, default=None,
                   help="small shapes (small CNN, 64 px, batch 4, 2 steps); default: on without CUDA")
    p.add_argument("--backbone", choices=BACKBONES, default=None, help="override the recipe's backbone")
    p.add_argument("--image-size", type=int, default=None, metavar="N", help="default: the recipe's (64 small)")
    p.add_argument("--batch", type=int, default=None, metavar="N", help="default: the recipe's batch size (4 small)")
    p.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="untimed steps first, compilation included (default: 3; 1 small)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="timed tensor-fed steps (default: 8; 2 small)")
    p.add_argument("--loader-batches", type=int, default=None, metavar="N",
                   help="timed loader-fed steps; 0 skips the loader (default: 12; 2 small)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="loader worker processes (default: min(8, CPUs); 0 small)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    small = (not cuda) if args.small is None else args.small
    if cuda:
        torch.backends.cudnn.benchmark = True
    recipe = recipe_config(args.recipe)
    cfg = _model_config(recipe, small, args.backbone)
    dataset = recipe["dataset"]
    class_names = None
    if cfg.label_embedding in ("bert", "glove"):
        from salgl_core.embeddings import shipped_class_names

        class_names = shipped_class_names(dataset)
    classes = len(class_names) if class_names else 80
    size = args.image_size or (SMALL["image_size"] if small else recipe["image_size"])
    batch = args.batch or (SMALL["batch"] if small else recipe["batch_size"])
    warmup = args.warmup if args.warmup is not None else (SMALL["warmup"] if small else 3)
    steps = args.steps or (SMALL["steps"] if small else 8)
    loader_batches = args.loader_batches if args.loader_batches is not None else (
        SMALL["loader_batches"] if small else 12)
    workers = args.workers if args.workers is not None else (0 if small else min(8, available_cpus()))
    out: dict[str, Any] = {
        "benchmark": "train", **_device_info(device), "recipe": args.recipe, "small": small,
        "shape": {"backbone": cfg.backbone, "image_size": size, "batch": batch, "classes": classes,
                  "num_scenes": cfg.num_scenes, "label_embedding": cfg.label_embedding},
        "warmup": warmup, "steps": steps, "loader_batches": loader_batches, "workers": workers,
        "compile_backend": args.compile_backend,
    }
    with tempfile.TemporaryDirectory(prefix="salgl-bench-train-") as tmp:
        loader = None
        if loader_batches > 0:
            t0 = time.perf_counter()
            n = batch * (loader_batches + 1)
            paths = generate_jpegs(Path(tmp), n, size, max(1, available_cpus()))
            labels = (np.random.default_rng(0).random((n, classes)) < 0.05).astype(np.uint8)
            data_cfg = DataConfig(dataset=dataset, image_size=size, randaugment=recipe["randaugment"],
                                  cutout=recipe["cutout"])
            ds = MultiLabelDataset(paths, labels, class_names or [f"c{i}" for i in range(classes)],
                                   train_transform(data_cfg), size)
            loader = build_loader(ds, batch, shuffle=True, num_workers=workers, drop_last=True, seed=0)
            out["jpegs"] = {"images": n, "size": size, "generation_s": round(time.perf_counter() - t0, 2),
                            "augmentations": f"{recipe['randaugment']} RandAugment, cutout {recipe['cutout']}"}
            # The pipeline alone (no model): the ceiling the loader puts on the loader-fed numbers.
            it = iter(loader)
            next(it)
            t0 = time.perf_counter()
            got = sum(b["images"].shape[0] for b in itertools.islice(it, loader_batches))
            out["loader_only"] = {"images_per_s": _rate(got, time.perf_counter() - t0), "images": got}
        out["runs"] = [measure(cfg, classes, dataset, class_names, device, amp, cl, comp, batch, size, warmup, steps,
                               loader, loader_batches, args.compile_backend)
                       for amp, cl, comp in _grid(args, cuda)]
    ok = [r for r in out["runs"] if r["error"] is None]
    out["best"] = max(ok, key=lambda r: r["tensors"]["images_per_s"]) if ok else None
    return out
