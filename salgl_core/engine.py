"""The training loop: plain functions, the official recipe (SALGL.md section 2).

AdamW on all parameters, OneCycleLR stepped per iteration (20% warm-up), model EMA (its copy averages
the co-occurrence counts too), ASL + scene entropy terms, AMP on CUDA, channels_last. After every
epoch both the live and the EMA model are evaluated with the official protocol, a checkpoint is written
atomically (every checkpoint_every epochs and at the last), and the epoch's metrics go to a callback (what the Ray
trainable wraps).

Resume is exact: model, EMA, optimizer, scheduler, grad scaler, RNG states and history are restored,
and the data order of epoch e depends only on (seed, e).

The EMA's per-step decay comes from the number of training batches per epoch when ema_epoch_retention is set
(salgl_core/ema.py step_decay), so it is known once the loaders exist. A run with init_from starts from
another run's weights (salgl_core/transfer.py) unless it resumes from its own checkpoint.

Evaluation: one pass of the validation loader per epoch; each batch is decoded once and scored by the live and the
EMA model (salgl_core/predict.py `predict_models`). With freeze_backbone and no feature cache both models hold the
same backbone, bit for bit (frozen weights, BatchNorm kept in eval mode, and the EMA's lerp of equal tensors is the
tensor itself), so it runs once per batch for both heads. Scores are sigmoid(float32 logits) and the metrics are
computed in float64 by salgl_core.metrics.evaluate whatever the precision of the forward.

One epoch of training steps, the AMP / TF32 rule, AdamW's kernel and the device-side finiteness check live in
salgl_core/training.py. Precision on CUDA (ignored on CPU, which always computes in float32):
- training: TF32 exactly when mixed precision is on (salgl_core/training.py `set_tf32`).
- evaluation: TrainConfig.eval_precision (fp32 = the official evaluate.py, TF32 off even for convolutions; tf32;
  bf16 autocast), applied around the evaluation pass only (predict.eval_precision), the training setting restored after.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from salgl_core.checkpoint import (
    BEST_EMA_PENDING,
    CHECKPOINT,
    capture_rng,
    checkpoint_due,
    commit_best,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    settle_pending_best,
)
from salgl_core.config import ExperimentConfig
from salgl_core.device import describe_device, resolve_device
from salgl_core.ema import ModelEMA, describe_step_decay, step_decay
from salgl_core.features import attach_feature_cache
from salgl_core.io import atomic_write_text
from salgl_core.losses import SALGLLoss
from salgl_core.metrics import evaluate, nmi
from salgl_core.model import SALGL, build_model
from salgl_core.predict import predict, predict_models
from salgl_core.presets import check_needs
from salgl_core.pretrain import resolve_backbone_weights
from salgl_core.report import best_predictions, scene_report
from salgl_core.training import DivergedError, adamw_kernel, set_tf32, train_one_epoch, use_adamw_kernel
from salgl_core.transfer import init_from


@dataclass
class FitResult:
    epochs: list[dict[str, Any]]
    best_epoch: int
    best_mAP_ema: float
    stopped_early: bool
    scene_report: dict[str, Any]
    class_names: list[str]
    device: str
    model: SALGL | None = field(default=None, repr=False)
    ema_model: SALGL | None = field(default=None, repr=False)
    # The validation predictions of the reported model (the EMA model at best_epoch), so its mAP can be
    # recomputed and bootstrapped later: scores float32 [N, C], targets float32 [N, C] (1/0), ignore bool
    # [N, C], image_ids [N] (the dataset's ids, else row numbers). None if no epoch ran or a checkpoint from
    # before they were kept was resumed after its best epoch.
    predictions: dict[str, np.ndarray] | None = field(default=None, repr=False)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def _write_epochs_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _summary_line(m: dict[str, Any]) -> str:
    return (f"epoch {m['epoch']}/{m['epochs']}  loss {m['loss_total']:.2f} (cls {m['loss_cls']:.2f} "
            f"Ls {m['loss_sample_entropy']:.3f} Lb {m['loss_batch_entropy']:.3f})  mAP {m['mAP']:.2f}  "
            f"EMA mAP {m['mAP_ema']:.2f}  CF1 {m['CF1']:.2f}  OF1 {m['OF1']:.2f}  {m['seconds']:.1f}s  "
            f"{m['images_per_second']:.0f} img/s" + (f"  skipped {m['skipped_images']}" if m["skipped_images"] else ""))


@dataclass
class _Run:
    """What fit() trains and with what: built once from the config, then stepped epoch by epoch."""

    cfg: ExperimentConfig
    device: torch.device
    device_name: str  # describe_device(device), what each epoch's row records
    bundle: Any  # a DatasetBundle; with feature_cache, its datasets read the cached backbone output
    class_names: list[str]
    model: SALGL
    ema: ModelEMA
    criterion: SALGLLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    generator: torch.Generator  # the training loader's shuffle order
    train_loader: DataLoader
    val_loader: DataLoader

    @property
    def true_scenes(self) -> np.ndarray | None:
        return getattr(self.bundle, "val_true_scenes", None)


@dataclass
class _Progress:
    """The epochs done so far (all of them, resumed ones included) and the best EMA epoch among them."""

    history: list[dict[str, Any]] = field(default_factory=list)
    # The best EMA epoch's validation scores (FitResult.predictions). They travel in the checkpoint, so they
    # survive a resume after that epoch and are always the scores of the epoch its history calls best.
    best_scores: dict[str, Any] | None = None
    start_epoch: int = 1

    @property
    def best(self) -> dict[str, Any] | None:
        return max(self.history, key=lambda m: m["mAP_ema"]) if self.history else None


def fit(cfg: ExperimentConfig, out_dir: str | Path | None = None, *,
        on_epoch: Callable[[dict[str, Any]], None] | None = None, resume: bool = False, progress: bool = False,
        log: Callable[[str], None] | None = print, data: Any | None = None, save_best: bool = True) -> FitResult:
    """Train SALGL with `cfg`; see the module docstring. Returns the history and the final scene report."""
    out = Path(out_dir).resolve() if out_dir is not None else None
    log = log or (lambda _: None)
    # A run that resumes continues from its own checkpoint: init_from only starts a fresh one.
    resuming = resume and out is not None and (out / CHECKPOINT).is_file()
    if resuming and cfg.train.init_from:
        log(f"init_from {cfg.train.init_from} not applied: resuming from {out / CHECKPOINT}")
    run = _build_run(cfg, data, log, init=not resuming)
    done = _start(run, out, resume, log)
    stopped_early = False
    avg = None  # the last epoch's EMA predictions, for the final scene report
    for epoch in range(done.start_epoch, cfg.train.epochs + 1):
        t0 = time.perf_counter()
        row = _train_epoch(run, epoch, progress)
        e0 = time.perf_counter()
        row, avg = _evaluate_epoch(run, row)
        _keep_if_best(run, done, row, avg, out if save_best else None)
        _finish_row(run, done, row, avg, t0, e0)
        done.history.append(row)
        stop = _stops_early(cfg, done, epoch)
        if out is not None:
            t = cfg.train
            _save_epoch(run, done, epoch, out, stop or checkpoint_due(epoch, t.epochs, t.checkpoint_every))
        log(_summary_line(row))
        if on_epoch is not None:
            on_epoch(row)
        if stop:
            best = done.best
            log(f"early stop: EMA mAP has not improved for {cfg.train.early_stop_patience} epochs (best "
                f"{best['mAP_ema']:.2f} at epoch {best['epoch']})")
            stopped_early = True
            break
    return _fit_result(run, done, avg, stopped_early)


def _build_run(cfg: ExperimentConfig, data: Any | None, log: Callable[[str], None], init: bool = True) -> _Run:
    """Seed, then build the data, the model (from init_from's weights with `init`), the loss, the optimizer, the
    loaders, the model's EMA, the schedule and the grad scaler, in this order: it fixes what each takes from the
    seeded random streams (loading weights and copying the model for the EMA take nothing)."""
    from salgl_core.data import build_datasets

    check_needs(cfg)  # before the data are indexed: a recipe's required field (init_from) is missing
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    device = resolve_device(cfg.train.device)
    set_tf32(device, cfg.train.amp)
    bundle = data if data is not None else build_datasets(cfg.data)
    class_names = list(bundle.class_names)
    model, bundle = _build_model(cfg, bundle, class_names, device, log, init)
    criterion = SALGLLoss(cfg.model)
    trainable = [p for p in model.parameters() if p.requires_grad]  # not a frozen backbone (freeze_backbone)
    optimizer = torch.optim.AdamW(trainable, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                  betas=(0.9, 0.999), eps=1e-8, **adamw_kernel(trainable))
    generator = torch.Generator()
    train_loader, val_loader = _build_loaders(cfg, bundle, generator)
    # The per-step decay needs the iterations per epoch (ema_epoch_retention): the EMA is built once they are known.
    t = cfg.train
    ema = ModelEMA(model, step_decay(t.ema_decay, t.ema_epoch_retention, len(train_loader)), cfg.model.comat_ema,
                   warmup=t.ema_warmup)
    log(describe_step_decay(t.ema_decay, t.ema_epoch_retention, len(train_loader)))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.train.lr,
                                                    total_steps=cfg.train.epochs * len(train_loader),
                                                    pct_start=cfg.train.pct_start)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and cfg.train.amp == "fp16")
    return _Run(cfg, device, describe_device(device), bundle, class_names, model, ema, criterion, optimizer,
                scheduler, scaler, generator, train_loader, val_loader)


def _build_model(cfg: ExperimentConfig, bundle: Any, class_names: list[str], device: torch.device,
                 log: Callable[[str], None], init: bool = True) -> tuple[SALGL, Any]:
    """The model on `device` (with `init` and init_from: loaded from that run), and the bundle it trains on (with
    feature_cache: its frozen backbone's cached output, computed from the loaded backbone)."""
    # The dataset and its class order let shipped label vectors ('bert', 'glove') be checked row by row.
    # backbone_weights 'synthetic-pretrained' becomes the cached file here (pretrained once; salgl_core/pretrain.py).
    model = build_model(resolve_backbone_weights(cfg, log), len(class_names), cfg.data.dataset, class_names).to(device)
    if init and cfg.train.init_from:
        init_from(model, cfg.train.init_from, log)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.train.feature_cache:  # train on the frozen backbone's cached output (salgl_core/features.py)
        bundle = attach_feature_cache(cfg, model, bundle, device, log)
    return model, bundle


def loader_workers(cfg: ExperimentConfig, cpus: int) -> int:
    """The DataLoader worker processes a run with `cfg` starts on `cpus` CPUs: DataConfig.num_workers (auto:
    salgl_core.data.resolve_num_workers), none with feature_cache (cached features are rows of a memory map:
    cheaper to read in-process than to start workers for)."""
    from salgl_core.data import resolve_num_workers

    return 0 if cfg.train.feature_cache else resolve_num_workers(cfg.data.num_workers, cpus)


def _build_loaders(cfg: ExperimentConfig, bundle: Any, generator: torch.Generator) -> tuple[DataLoader, DataLoader]:
    from salgl_core.data import available_cpus, build_loader

    nw = loader_workers(cfg, available_cpus())  # a study trial's config holds its count, from its own CPUs
    train_loader = build_loader(bundle.train, cfg.train.batch_size, True, nw, cfg.train.drop_last, generator=generator)
    val_loader = build_loader(bundle.val, cfg.train.batch_size, False, nw)
    if len(train_loader) == 0:
        raise ValueError(f"the training set has {len(bundle.train)} images, fewer than one batch of "
                         f"{cfg.train.batch_size}; lower --batch-size or pass --no-drop-last")
    return train_loader, val_loader


def _start(run: _Run, out: Path | None, resume: bool, log: Callable[[str], None]) -> _Progress:
    """With `resume`, restore the run from out/checkpoint.pt (if there is one) and return what it had done;
    the config is saved to out/config.json either way."""
    done = _Progress()
    if out is None:
        return done
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / CHECKPOINT).is_file():
        state = load_checkpoint(out / CHECKPOINT)
        run.model.load_state_dict(state["model"])
        run.ema.load_state_dict(state["ema"])  # also reads older checkpoints (the bare EMA model's state)
        run.optimizer.load_state_dict(state["optimizer"])
        use_adamw_kernel(run.optimizer)
        run.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] and run.scaler.is_enabled():  # a run saved without fp16 has an empty scaler state
            run.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        done.history = list(state["history"])
        done.best_scores = state.get("best_scores")  # absent from checkpoints written before it was kept
        done.start_epoch = int(state["epoch"]) + 1
        log(f"resumed from {out / CHECKPOINT} after epoch {state['epoch']}")
        dropped = settle_pending_best(out, int(state["epoch"]))
        if dropped:
            log(dropped)
    run.cfg.save(out / "config.json")
    return done


def _train_epoch(run: _Run, epoch: int, progress: bool) -> dict[str, Any]:
    """Train one epoch; the start of the epoch's row: its number, learning rate and training metrics."""
    cfg = run.cfg
    run.generator.manual_seed(cfg.train.seed * 100_003 + epoch)  # epoch e's data order depends on (seed, e) alone
    lr = run.optimizer.param_groups[0]["lr"]
    train_m = train_one_epoch(run.model, run.ema, run.criterion, run.train_loader, run.optimizer, run.scheduler,
                              run.scaler, cfg, run.device, epoch, progress)
    return {"epoch": epoch, "epochs": cfg.train.epochs, "lr": lr, "ema_step_decay": run.ema.decay,
            **{k: v for k, v in train_m.items() if k != "steps"}}


def _evaluate_epoch(run: _Run, m: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Evaluate the live and the EMA model on the validation set: the row `m` with both models' metrics, and the
    EMA model's predictions."""
    cfg, epoch = run.cfg, m["epoch"]
    # One pass for both models, in eval_precision (float32 on CPU, as the official evaluate.py).
    live, avg = predict_models([run.model, run.ema.module], run.val_loader, run.device, cfg.train.eval_precision,
                               cfg.train.channels_last, share_backbone=_shared_backbone(run))
    for name, pred in (("model", live), ("EMA model", avg)):
        if not np.isfinite(pred["scores"]).all():
            raise DivergedError(epoch, epoch * len(run.train_loader), {f"{name} validation scores": math.nan})
    ignore = live["ignore"] if live["ignore"].any() else None
    t, rule = cfg.train, cfg.train.cp_cr_rule
    m_live = evaluate(live["scores"], live["targets"], ignore, t.threshold, t.top_k, rule)
    m_ema = evaluate(avg["scores"], avg["targets"], ignore, t.threshold, t.top_k, rule)
    m = {**m, **m_live}
    m.update(mAP_ema=m_ema["mAP"], mAP_ema_present=m_ema["mAP_present"], CF1_ema=m_ema["CF1"], OF1_ema=m_ema["OF1"])
    return m, avg


def _shared_backbone(run: _Run) -> bool:
    """Whether the live and the EMA model hold the same backbone, so that evaluation runs it once per batch: a frozen
    backbone that still runs (no feature cache), checked tensor by tensor (one comparison per evaluation)."""
    if not run.cfg.model.freeze_backbone or run.model.takes_features:
        return False
    live, avg = run.model.backbone.state_dict(), run.ema.module.backbone.state_dict()
    return live.keys() == avg.keys() and all(torch.equal(live[k], avg[k]) for k in live)


def _keep_if_best(run: _Run, done: _Progress, m: dict[str, Any], avg: dict[str, np.ndarray],
                  out: Path | None) -> None:
    """If epoch `m` has the best EMA mAP so far, keep its EMA validation scores and, with `out`, the EMA model
    for out/best_ema.pt (pending until the epoch's checkpoint: checkpoint.commit_best)."""
    best = done.best
    if best is not None and not m["mAP_ema"] > best["mAP_ema"]:  # ties (and NaN) keep the earlier epoch
        return
    epoch = m["epoch"]
    done.best_scores = {"epoch": epoch, "scores": torch.from_numpy(avg["scores"]),
                        "index": torch.from_numpy(avg["index"])}
    if out is not None:
        save_checkpoint(out / BEST_EMA_PENDING, {"model": run.ema.module.state_dict(), "epoch": epoch,
                                         "config": run.cfg.to_flat(), "class_names": run.class_names})


def _finish_row(run: _Run, done: _Progress, m: dict[str, Any], avg: dict[str, np.ndarray], t0: float,
                e0: float) -> None:
    """Complete epoch `m`'s row (not yet in the history): the bests so far, timings, the EMA model's scene usage
    and, on synthetic data, its agreement with the true scenes."""
    rows = [*done.history, m]
    best = max(rows, key=lambda r: r["mAP_ema"])
    k = run.cfg.model.num_scenes
    usage = np.bincount(avg["scenes"].astype(np.int64), minlength=k)[:k] / max(len(avg["scenes"]), 1)
    ts = run.true_scenes
    m.update(best_mAP=max(r["mAP"] for r in rows), best_mAP_ema=best["mAP_ema"], best_epoch=best["epoch"],
             eval_seconds=time.perf_counter() - e0, seconds=time.perf_counter() - t0, scene_usage=usage.tolist(),
             scene_nmi=float(nmi(avg["scenes"], ts[avg["index"]])) if ts is not None else None,
             device=run.device_name)


def _save_epoch(run: _Run, done: _Progress, epoch: int, out: Path, checkpoint: bool = True) -> None:
    """epochs.csv after every epoch and, with `checkpoint` (TrainConfig.checkpoint_every's epochs), the checkpoint a
    resume continues from (RNG states included). The state dicts hold references to the tensors, not copies."""
    if checkpoint:
        save_checkpoint(out / CHECKPOINT, {
            "model": run.model.state_dict(), "ema": run.ema.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "epoch": epoch,
            "rng": capture_rng(), "history": done.history, "config": run.cfg.to_flat(),
            "class_names": run.class_names, "best_scores": done.best_scores})
        commit_best(out)  # after the checkpoint: a resume never finds best_ema.pt ahead of it
    _write_epochs_csv(out / "epochs.csv", done.history)


def _stops_early(cfg: ExperimentConfig, done: _Progress, epoch: int) -> bool:
    """The run stops after epoch `epoch`: the EMA mAP has not improved for more than early_stop_patience epochs."""
    patience = cfg.train.early_stop_patience
    return bool(patience) and epoch - done.best["epoch"] > patience


def _fit_result(run: _Run, done: _Progress, avg: dict[str, np.ndarray] | None, stopped_early: bool) -> FitResult:
    """The history, the best EMA epoch and its predictions, and the scene report of the last EMA model."""
    final = avg if avg is not None else predict(run.ema.module, run.val_loader, run.device,
                                                run.cfg.train.eval_precision, run.cfg.train.channels_last)
    ts = run.true_scenes[final["index"]] if run.true_scenes is not None else None
    report = scene_report(run.ema.module, final["scenes"], run.class_names, ts)
    best, kept = done.best, done.best_scores
    keep = kept is not None and best is not None and kept["epoch"] == best["epoch"]
    return FitResult(epochs=done.history, best_epoch=int(best["epoch"]) if best else 0,
                     best_mAP_ema=float(best["mAP_ema"]) if best else math.nan, stopped_early=stopped_early,
                     scene_report=report, class_names=run.class_names, device=run.device_name,
                     model=run.model, ema_model=run.ema.module,
                     predictions=best_predictions(run.bundle.val, kept) if keep else None)
