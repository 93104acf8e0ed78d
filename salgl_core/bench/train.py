"""Train benchmark: training throughput (images/s) and peak GPU memory of a recipe's model at its resolution.

Each configuration (AMP dtype x channels_last x torch.compile) is timed on uint8 batches already on the
device (the model's ceiling); then the fastest one is timed fed by the real training loader on generated
COCO-like JPEGs (640x480, resized by the recipe's train transform: decode, augmentations, collate,
host-to-device copy), after a warm-up of workers x prefetch batches so that the workers' queue does not
count (bench/loader.py: `steady_loader`). One step is what `training.train_one_epoch` does: to_model_input
(normalised on the device), autocast forward, ASL + scene entropy losses, (scaled) backward, AdamW, EMA
update. The model is the recipe's (K, outmess, normalize, label vectors) with random-init weights, so
nothing is downloaded. torch.compile is measured with channels_last on only unless --full-grid; its
compilation is reported apart (compile_s) from its steady-state images/s. A configuration that fails (out
of memory, a compile error) records its error and the rest go on.

Output: JSON lines, each printed and flushed as soon as it is measured, so a run stopped by a time limit
keeps what finished:
    {"record": "setup", ...}       device, recipe, shapes, the configurations to come
    {"record": "loader", ...}      the loader alone: steady-state images/s, warm-up batches, workers
    {"record": "config", ...}      one per configuration: tensor-fed images/s, step_ms, warmup_s (compile_s), peak MB
    {"record": "loader_fed", ...}  the fastest configuration fed by the loader: images/s, data_wait_share, peak MB
    {"record": "summary", ...}     the figures to judge: best tensor-fed and loader-fed images/s, loader alone,
                                   data-wait share, peak memory, loader_keeps_up (bench/records.py `summarize`,
                                   which tools/gpu_check.sh also applies to whatever lines a stopped run left)

Without CUDA the same command runs small (small CNN at 64 px, batch 4, 2 steps) so tests can run it.

    python -m salgl_core.bench train [--recipe paper-coco-r101-448] [--amp fp16 bf16] [--channels-last on off]
                                     [--compile off on] [--batch N] [--steps N] [--loader-batches N]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salgl_core.bench.attention import _device_info, _sync
from salgl_core.bench.loader import COCO_LIKE_SIZE, generate_jpegs, loader_rate, steady_loader
from salgl_core.bench.records import best_config, summarize
from salgl_core.config import AUTO_WORKERS, BACKBONES, DataConfig, ModelConfig
from salgl_core.data import available_cpus, resolve_num_workers
from salgl_core.data.images import MultiLabelDataset
from salgl_core.data.transforms import to_model_input, train_transform
from salgl_core.device import amp_dtype, resolve_device
from salgl_core.ema import ModelEMA
from salgl_core.losses import SALGLLoss
from salgl_core.model import build_model
from salgl_core.presets import RECIPES, recipe_config

SUMMARY = "training throughput and peak memory of a recipe's model: on-device tensors and the real loader (JSON lines)"
# Small shapes for a CPU (chosen automatically without CUDA, or with --small).
SMALL = {"backbone": "small_cnn", "image_size": 64, "batch": 4, "steps": 2, "warmup": 1, "loader_batches": 2,
         "model": {"att_dim": 32, "enc_heads": 4, "enc_ffn": 64}}
MAX_JPEGS = 512  # distinct generated files, cycled beyond: decoding costs the same, generating does not

Step = Callable[[torch.Tensor, torch.Tensor], None]


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
    """One training step on model-ready inputs; `run` is the model or its compiled wrapper (whose state_dict
    keys differ, so the EMA reads the model itself)."""
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


class _Setup:
    """What every configuration shares: the model config, its classes, the device, the compile backend."""

    def __init__(self, cfg: ModelConfig, classes: int, dataset: str, class_names: list[str] | None,
                 device: torch.device, compile_backend: str) -> None:
        self.cfg, self.classes, self.dataset, self.class_names = cfg, classes, dataset, class_names
        self.device, self.compile_backend = device, compile_backend

    def batch_step(self, amp: str, channels_last: bool, compile_: bool) -> Step:
        """A fresh model, optimizer and EMA; the step over a loader batch (uint8 images anywhere, targets)."""
        device, cuda = self.device, self.device.type == "cuda"
        dtype = amp_dtype(amp) if cuda else None  # as the engine
        torch.manual_seed(0)
        model = build_model(self.cfg, self.classes, self.dataset, self.class_names).to(device).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        ema = ModelEMA(model, 0.9997)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
        scaler = torch.amp.GradScaler(device.type, enabled=cuda and amp == "fp16")
        run = torch.compile(model, backend=self.compile_backend) if compile_ else model
        step = _step_fn(model, run, ema, SALGLLoss(self.cfg), opt, scaler, device, dtype)

        def batch_step(images: torch.Tensor, targets: torch.Tensor) -> None:
            step(to_model_input(images, device, channels_last), targets.to(device, non_blocking=True))
        return batch_step


def _rate(images: int, seconds: float) -> float:
    return round(images / max(seconds, 1e-9), 2)


def _guarded(device: torch.device, head: dict[str, Any], body: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Run `body(out)` on a record: its error (out of memory, a compile failure) recorded, not raised, and the
    peak GPU memory of what it did added."""
    out = {**head, "error": None}
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        body(out)
    except Exception as e:  # measure the next configuration
        out["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    finally:
        out["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None
        if cuda:
            gc.collect()  # the model, optimizer and EMA of this configuration, before the next one's peak
            torch.cuda.empty_cache()
    return out


def measure_tensors(setup: _Setup, amp: str, channels_last: bool, compile_: bool, batch: int, image_size: int,
                    warmup: int, steps: int) -> dict[str, Any]:
    """One configuration on a uint8 batch already on the device: images/s, step time, warm-up, peak memory."""
    device = setup.device
    warmup = max(warmup, 1) if compile_ else warmup  # the compilation stays out of the timed steps

    def body(out: dict[str, Any]) -> None:
        step = setup.batch_step(amp, channels_last, compile_)
        x = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8, device=device)
        y = (torch.rand(batch, setup.classes, device=device) < 0.05).float()
        t0 = time.perf_counter()
        for _ in range(warmup):  # the compilation, cudnn's algorithm search
            step(x, y)
        _sync(device)
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(steps):
            step(x, y)
        _sync(device)
        dt = time.perf_counter() - t0
        out["tensors"] = {"images_per_s": _rate(steps * batch, dt), "step_ms": round(1000 * dt / steps, 2)}
        out["warmup_s"] = round(warm, 3)
        if compile_:  # the warm-up beyond as many steady-state steps: what compiling cost
            out["compile_s"] = round(max(0.0, warm - warmup * dt / steps), 3)

    return _guarded(device, {"record": "config", "amp": amp, "channels_last": channels_last, "compile": compile_},
                    body)


def measure_loader_fed(setup: _Setup, amp: str, channels_last: bool, compile_: bool, ds: MultiLabelDataset,
                       batch: int, workers: int, batches: int) -> dict[str, Any]:
    """One configuration fed by the training loader, timed in its steady state: images/s and the share of the
    timed window the training loop spent waiting for the next batch (near 0 when the loader keeps up; host time,
    so on CUDA, where the host runs ahead of the GPU, an upper bound on the GPU's idle share)."""
    device = setup.device

    def body(out: dict[str, Any]) -> None:
        step = setup.batch_step(amp, channels_last, compile_)
        loader, skip = steady_loader(ds, batch, workers, batches)
        out.update(workers=loader.num_workers, warmup_batches=skip)
        it = iter(loader)
        for _ in range(skip):  # untimed: worker start-up and the batches they queued meanwhile
            b = next(it)
            step(b["images"], b["targets"])
        _sync(device)
        n, wait = 0, 0.0
        t0 = time.perf_counter()
        for _ in range(batches):
            t = time.perf_counter()
            b = next(it)
            wait += time.perf_counter() - t
            step(b["images"], b["targets"])
            n += b["images"].shape[0]
        _sync(device)
        dt = time.perf_counter() - t0
        del it
        out.update(images_per_s=_rate(n, dt), images=n, batches=batches, data_wait_share=round(wait / dt, 3))

    return _guarded(device, {"record": "loader_fed", "amp": amp, "channels_last": channels_last,
                             "compile": compile_}, body)


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
                   help="untimed steps first, compilation included, at least 1 when compiling (default: 3; 1 small)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="timed tensor-fed steps (default: 8; 2 small)")
    p.add_argument("--loader-batches", type=int, default=None, metavar="N",
                   help="timed loader batches, after a warm-up of workers x prefetch batches; 0 skips the loader "
                        "(default: 16; 2 small)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="loader worker processes (default: auto, as a training run: min(8, CPUs - 1); 0 small)")


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)  # one line each, at once: a time limit keeps what finished


def measure_all(args: argparse.Namespace, emit: Callable[[dict[str, Any]], None] = _emit) -> list[dict[str, Any]]:
    """Measure what `args` asks, passing each record to `emit` as soon as it is complete; all the records."""
    t_start = time.perf_counter()
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
        SMALL["loader_batches"] if small else 16)
    workers = args.workers if args.workers is not None else (0 if small else AUTO_WORKERS)
    grid = _grid(args, cuda)
    records: list[dict[str, Any]] = []

    def put(record: dict[str, Any]) -> None:
        records.append(record)
        emit(record)

    put({"record": "setup", "benchmark": "train", **_device_info(device), "recipe": args.recipe, "small": small,
         "shape": {"backbone": cfg.backbone, "image_size": size, "batch": batch, "classes": classes,
                   "num_scenes": cfg.num_scenes, "label_embedding": cfg.label_embedding},
         "warmup": warmup, "steps": steps, "loader_batches": loader_batches,
         "workers": resolve_num_workers(workers, available_cpus()), "compile_backend": args.compile_backend,
         "configs": [{"amp": a, "channels_last": cl, "compile": c} for a, cl, c in grid]})
    setup = _Setup(cfg, classes, dataset, class_names, device, args.compile_backend)
    with tempfile.TemporaryDirectory(prefix="salgl-bench-train-") as tmp:
        ds = None
        if loader_batches > 0:
            t0 = time.perf_counter()
            n = min(MAX_JPEGS, batch * (loader_batches + 1))
            paths = generate_jpegs(Path(tmp), n, max(1, available_cpus()))
            labels = (np.random.default_rng(0).random((n, classes)) < 0.05).astype(np.uint8)
            data_cfg = DataConfig(dataset=dataset, image_size=size, randaugment=recipe["randaugment"],
                                  cutout=recipe["cutout"])
            ds = MultiLabelDataset(paths, labels, class_names or [f"c{i}" for i in range(classes)],
                                   train_transform(data_cfg), size)
            jpegs = {"files": n, "size": list(COCO_LIKE_SIZE), "generation_s": round(time.perf_counter() - t0, 2),
                     "augmentations": f"{recipe['randaugment']} RandAugment, cutout {recipe['cutout']}"}
            # The pipeline alone (no model): the ceiling the loader puts on the loader-fed numbers.
            put({"record": "loader", "jpegs": jpegs, **loader_rate(ds, batch, workers, loader_batches)})
        for amp, cl, comp in grid:
            put(measure_tensors(setup, amp, cl, comp, batch, size, warmup, steps))
        best = best_config(records)
        if ds is not None and best is not None:
            put(measure_loader_fed(setup, best["amp"], best["channels_last"], best["compile"], ds, batch, workers,
                                   loader_batches))
    put(summarize(records, time.perf_counter() - t_start))
    return records


def run(args: argparse.Namespace) -> None:
    """Print the records as JSON lines (the command's output); nothing is left for the caller to print."""
    measure_all(args)
    sys.stdout.flush()
