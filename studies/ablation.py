"""Shared Ray Tune + Optuna wiring of the SALGL studies (scene_count, graph_depth, momentum, tune).

A study is a `StudySpec` (the config field it sweeps and its default values, or a joint search space)
plus the flags defined here. The driver checks everything a user can get wrong (flags, config values,
data paths, backbone weights, label embeddings) before Ray starts. Then a Ray Tune `Tuner` runs with
Optuna as the searcher: `GridSampler` over (axis value x seed) and FIFO scheduling for the one-axis
ablations, so every point runs its full length; TPE with ASHA early stopping for the joint search.
Each trial asks for its GPU share and CPUs, trains with `salgl_core.engine.fit` and reports every
epoch with a checkpoint. `ExportCallback` writes results/<study>/<run>/ as trials report; the Optuna
study is a journal file in the same folder; Ray's own experiment folder (trial checkpoints, what
--resume restores) lives under the git-ignored .ray_results/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import ray
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from salgl_core.cli import add_config_arguments
from salgl_core.config import (
    DATA_PATH_FIELDS,
    DATASETS,
    FIELD_OWNER,
    ConfigError,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    paper_preset,
    synthetic_preset,
)
from salgl_core.metrics import METRIC_PROTOCOL
from studies.export import OPTUNA_JOURNAL, SCHEMA_VERSION, TERMINAL, StudyExport, provenance, utc_now, write_json

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO / "results"
DEFAULT_STORAGE = REPO / ".ray_results"
METRIC, MODE = "mAP_ema", "max"
PAPER = ExperimentConfig().to_flat()

# The default study on the embedded synthetic data, sized so that `python studies/scene_count.py`
# (8 trials, 2 at a time on 2 cores, data generation included) ends well inside 10 minutes, with trials
# long enough (about a minute) that Ray's fixed costs stay small. Few optimiser steps in all (~190), so
# the weight EMA's horizon is shortened to match (0.95: ~20 steps).
CPU_STUDY = {"synthetic_train_images": 1200, "synthetic_val_images": 400, "batch_size": 32, "epochs": 5,
             "ema_decay": 0.95}
# --smoke: a seconds-long study for tests.
SMOKE = {"synthetic_train_images": 32, "synthetic_val_images": 16, "synthetic_classes": 8, "synthetic_scenes": 2,
         "image_size": 32, "epochs": 1, "batch_size": 8, "att_dim": 16, "enc_heads": 2, "enc_ffn": 32,
         "ema_decay": 0.5}
# Flags that only say how to run, not what: the ones --resume takes from the new command line.
RUNTIME_FLAGS = ("address", "dashboard_host", "dashboard_port", "no_dashboard", "ray_temp_dir", "verbose")
# Config fields with a flag of their own (--data-root sets data_root, ...).
CONFIG_FLAGS = ("dataset", "data_root", "train_images", "train_annotations", "val_images", "val_annotations",
                "cache_dir", "backbone", "backbone_weights", "image_size", "epochs", "batch_size", "lr",
                "num_workers")


# (wall seconds of earlier sessions of this run, this driver's start time), set by `main`: the export
# callback runs in this process and counts wall time from here, Ray's start and data generation included.
_SESSION: dict[str, tuple[float, float]] = {}


class StudyError(ValueError):
    """A study flag or run folder is wrong; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """What a study sweeps. `axis` + `values` for a one-axis ablation; `space` for a joint search."""

    study: str
    script: str
    description: str
    axis: str | None = None
    values: tuple = ()
    # base flat config, seeds -> (Optuna distributions, the paper's point in that space)
    space: Callable[[dict[str, Any], list[int]], tuple[dict[str, BaseDistribution], dict[str, Any]]] | None = None
    default_seeds: tuple[int, ...] = (0, 1)
    default_samples: int = 16


# ---------------------------------------------------------------------------------------------------
# command line


def get_args_parser(spec: StudySpec) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python studies/{spec.study}.py", description=spec.description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="With no arguments: the embedded synthetic dataset, the small CNN, CPU-sized. With --dataset coco "
               "and no other overrides: the paper's recipe (ResNet-101, 448 px, batch 128, 80 epochs), one GPU "
               "per trial. Results: <results-dir>/<study>/<name>/ (see results/README.md).")
    d = p.add_argument_group("data and model (default: the dataset's preset)")
    d.add_argument("--dataset", choices=DATASETS, default="synthetic",
                   help="synthetic (embedded, generated on first use) or a real dataset with the paper's recipe")
    d.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other config field (salgl_core/config.py), VALUE in JSON: --set soft_assignment=true")
    # The common config fields get the same generated flags (and help) as `python -m salgl_core.train`.
    add_config_arguments(p, only=CONFIG_FLAGS[1:])
    s = p.add_argument_group("study")
    if spec.axis:
        s.add_argument("--values", nargs="+", metavar="V",
                       help=f"the {spec.axis} values to sweep (default: {' '.join(map(str, spec.values))}); "
                            f"the paper's value ({PAPER[spec.axis]}) is always added")
    else:
        s.add_argument("--num-samples", type=int, default=None,
                       help=f"trials to sample (default: {spec.default_samples}; the paper's point is one of them)")
        s.add_argument("--grace-period", type=int, default=None,
                       help="ASHA: epochs every trial runs before it can be stopped (default: epochs // 4, >= 1); "
                            "no trial is stopped at its last epoch")
        s.add_argument("--reduction-factor", type=float, default=3.0, help="ASHA: keep the top 1/factor per rung")
    seeds = " ".join(map(str, spec.default_seeds))
    s.add_argument("--seeds", nargs="+", type=int, default=None,
                   help=f"training seeds, one trial per (value, seed) (default: {seeds})")
    s.add_argument("--searcher-seed", type=int, default=0, help="seed of the Optuna sampler")
    s.add_argument("--smoke", action="store_true", help="a seconds-long run on tiny synthetic data (for tests)")
    r = p.add_argument_group("resources")
    r.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs per trial, fractions allowed (default: 1 when the Ray cluster has GPUs, else 0)")
    r.add_argument("--cpus-per-trial", type=float, default=None,
                   help="CPUs per trial (default: 1 on CPU; with GPUs, the cluster's CPUs shared by the trials "
                        "that fit on its GPUs at once)")
    r.add_argument("--max-concurrent", type=int, default=None, help="at most this many trials at once")
    r.add_argument("--max-failures", type=int, default=1,
                   help="retries of a failed trial, from its last checkpoint")
    g = p.add_argument_group("Ray")
    g.add_argument("--address", default=None,
                   help="join an existing Ray cluster (RAY_ADDRESS works too); default: start Ray locally")
    g.add_argument("--dashboard-host", default="127.0.0.1",
                   help="where a locally started Ray dashboard listens; it runs submitted jobs: keep it local")
    g.add_argument("--dashboard-port", type=int, default=8265)
    g.add_argument("--no-dashboard", action="store_true", help="start Ray without its dashboard")
    g.add_argument("--ray-temp-dir", default=None, help="Ray's session folder (default: /tmp/ray)")
    g.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0,
                   help="Ray Tune's own progress tables (0: only this script's one line per trial event)")
    o = p.add_argument_group("output")
    o.add_argument("--name", default=None, help="run name (default: the start time, e.g. 2025-06-03_090000)")
    o.add_argument("--results-dir", default=str(DEFAULT_RESULTS), help="the export goes to <this>/<study>/<name>/")
    o.add_argument("--storage-path", default=str(DEFAULT_STORAGE),
                   help="Ray's experiment folder (checkpoints; shared storage on a multi-node cluster)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace an existing run of the same --name (its export and its Ray folder)")
    o.add_argument("--resume", action="store_true",
                   help="finish the interrupted run --name: finished trials are not run again")
    return p


def _parse_set(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise StudyError(f"--set {item!r} is invalid: expected FIELD=VALUE, e.g. --set soft_assignment=true")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare string such as a path
        out[key.strip()] = value
    return out


def _axis_value(spec: StudySpec, raw: str) -> Any:
    kind = {"int": int, "float": float}.get(_field_type(spec.axis), str)
    try:
        return kind(raw)
    except ValueError:
        raise StudyError(f"--values {raw!r} is invalid: {spec.axis} takes {kind.__name__} values") from None


def _field_type(name: str) -> str:
    cls = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}[FIELD_OWNER[name]]
    return next(str(f.type) for f in dataclasses.fields(cls) if f.name == name)


# ---------------------------------------------------------------------------------------------------
# the plan: everything the study will run, checked before Ray starts


@dataclasses.dataclass
class Plan:
    spec: StudySpec
    run: str
    run_dir: Path
    exp_dir: Path
    base: dict[str, Any]
    seeds: list[int]
    values: list[Any]
    space: dict[str, BaseDistribution]
    paper_config: dict[str, Any]
    points: list[dict[str, Any]]
    num_samples: int
    explicit_device: bool
    asha: dict[str, Any] | None = None


def base_config(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """The flat config every trial starts from: preset < --smoke < flags < --set. Validated."""
    flat = {**synthetic_preset(), **CPU_STUDY} if args.dataset == "synthetic" else paper_preset(args.dataset)
    if args.smoke:
        flat.update(SMOKE)
    # Generated flags are absent from `args` unless typed (argparse.SUPPRESS); "none" already parsed to None.
    flat.update({name: getattr(args, name) for name in CONFIG_FLAGS[1:] if hasattr(args, name)})
    sets = _parse_set(args.set)
    if args.smoke and args.dataset != "synthetic":
        raise StudyError("--smoke runs on the synthetic dataset only; drop --dataset or --smoke")
    flat.update(sets)
    # ExperimentConfig names unknown fields and out-of-range values (ConfigError).
    flat = ExperimentConfig.from_flat(flat).to_flat()
    return _absolute_paths(flat), "device" in sets


def _absolute_paths(flat: dict[str, Any]) -> dict[str, Any]:
    """Trials run in working directories of their own: every path they get must be absolute."""
    from salgl_core.data.synthetic import default_cache_dir

    out = dict(flat)
    for name in DATA_PATH_FIELDS:
        if out[name] is not None:
            out[name] = str(Path(out[name]).expanduser().resolve())
    if out["dataset"] == "synthetic" and out["cache_dir"] is None:
        out["cache_dir"] = str(default_cache_dir().expanduser().resolve())  # $SALGL_CACHE may be relative
    for name, suffixes in (("backbone_weights", (".pth", ".pt")), ("label_embedding", (".npy",))):
        v = out[name]
        if isinstance(v, str) and (v.endswith(suffixes) or os.sep in v):
            out[name] = str(Path(v).expanduser().resolve())
    return out


def make_plan(args: argparse.Namespace, spec: StudySpec) -> Plan:
    base, explicit_device = base_config(args)
    seeds = list(args.seeds) if args.seeds else ([0] if args.smoke else list(spec.default_seeds))
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"--seeds {seeds} repeats a seed")
    for s in seeds:
        ExperimentConfig.from_flat({**base, "seed": s})
    if spec.axis:
        if spec.axis in _parse_set(args.set):
            raise StudyError(f"{spec.axis} is this study's axis: give its values with --values, not --set")
        paper_value = PAPER[spec.axis]
        if args.values:
            values = [_axis_value(spec, v) for v in args.values]
        elif args.smoke:
            values = [paper_value, next(v for v in spec.values if v != paper_value)]
        else:
            values = list(spec.values)
        if len(set(values)) != len(values):
            raise StudyError(f"--values {values} repeats a value")
        for v in values:
            ExperimentConfig.from_flat({**base, spec.axis: v})
        if paper_value not in values:
            print(f"note: adding the paper's {spec.axis} = {paper_value} to --values (always part of an ablation)")
            values.append(paper_value)
        values = sorted(values)
        space = {spec.axis: CategoricalDistribution(values), "seed": CategoricalDistribution(seeds)}
        paper_config = {spec.axis: paper_value}
        points: list[dict[str, Any]] = []
        num_samples = len(values) * len(seeds)
    else:
        assert spec.space is not None
        space, paper_point = spec.space(base, seeds)
        paper_config = {k: v for k, v in paper_point.items() if k != "seed"}
        values, points = [], [paper_point]
        ExperimentConfig.from_flat({**base, **paper_point})
        num_samples = args.num_samples if args.num_samples is not None else (
            2 if args.smoke else spec.default_samples)
        if num_samples < 1:
            raise StudyError(f"--num-samples {num_samples} is invalid: expected an integer >= 1")
        asha = _asha(args, int(base["epochs"]))
    run = args.name or datetime.now().strftime("%Y-%m-%d_%H%M%S")
    if not run or "/" in run or run.startswith("."):
        raise StudyError(f"--name {run!r} is invalid: expected a plain folder name")
    run_dir = Path(args.results_dir).resolve() / spec.study / run
    exp_dir = Path(args.storage_path).resolve() / spec.study / run
    return Plan(spec, run, run_dir, exp_dir, base, seeds, values, space, paper_config, points, num_samples,
                explicit_device, asha if not spec.axis else None)


def _asha(args: argparse.Namespace, epochs: int) -> dict[str, Any] | None:
    """ASHA's settings, or None when a trial has a single epoch (nothing to stop early).

    Its rungs (grace * factor^k) stay below the last epoch (max_t = epochs - 1, and stop_last_trials off):
    a trial that reaches its last epoch runs to the end and sends the final report with its scenes.
    """
    if epochs < 2:
        return None
    grace = args.grace_period if args.grace_period is not None else max(1, epochs // 4)
    if not 1 <= grace < epochs:
        raise StudyError(f"--grace-period {grace} is invalid: expected 1 to {epochs - 1} (epochs - 1)")
    if not args.reduction_factor > 1:
        raise StudyError(f"--reduction-factor {args.reduction_factor} is invalid: expected a number > 1")
    return {"time_attr": "training_iteration", "grace_period": grace, "max_t": epochs - 1,
            "reduction_factor": args.reduction_factor}


def check_inputs(plan: Plan) -> list[str]:
    """Index the data (generating the synthetic set) and build the model once: every data, weights or
    embedding problem surfaces here, before Ray starts, instead of in every trial. Returns class names."""
    from salgl_core.data import build_datasets
    from salgl_core.model import build_model

    cfg = ExperimentConfig.from_flat({**plan.base, **plan.points[0]} if plan.points else plan.base)
    bundle = build_datasets(cfg.data)
    if cfg.train.drop_last and len(bundle.train) < cfg.train.batch_size:
        raise StudyError(f"the training set has {len(bundle.train)} images, fewer than one batch of "
                         f"{cfg.train.batch_size}: lower --batch-size")
    build_model(cfg.model, bundle.num_classes)
    return list(bundle.class_names)


def _space_json(space: dict[str, BaseDistribution]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, d in space.items():
        if isinstance(d, CategoricalDistribution):
            out[name] = {"type": "choice", "values": list(d.choices)}
        elif isinstance(d, IntDistribution):
            out[name] = {"type": "int", "low": d.low, "high": d.high}
        elif isinstance(d, FloatDistribution):
            out[name] = {"type": "loguniform" if d.log else "uniform", "low": d.low, "high": d.high}
    return out


# ---------------------------------------------------------------------------------------------------
# the trial (runs in a Ray worker, in its own working directory: absolute paths only)


def _epoch_metrics(m: dict[str, Any]) -> dict[str, Any]:
    # Lists stay out of Ray's result logs; scene usage goes to scenes/<trial>.json at the end.
    return {k: v for k, v in m.items() if not isinstance(v, list)}


def train_trial(config: dict[str, Any], base_config: dict[str, Any], threads: int = 1) -> None:
    """Ray trainable: one SALGL training run; a report (and a checkpoint) per epoch, then a final report.
    `config` holds what the searcher chose (axis value, seed, ...); `base_config` everything else."""
    import torch

    cfg = ExperimentConfig.from_flat({**base_config, **config})
    torch.set_num_threads(max(1, threads))
    gpu_ids = ",".join(str(i) for i in ray.get_gpu_ids())
    # The engine's files go to the trial's working directory, which Ray never syncs (the trial folder
    # itself is copied to storage with every experiment snapshot); the checkpoint reaches storage through
    # `tune.report` below, so the folder is deleted at the end.
    out = Path.cwd().resolve() / f"fit-{tune.get_context().get_trial_id()}"
    out.mkdir(parents=True, exist_ok=True)
    try:
        _train(cfg, out, gpu_ids)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _train(cfg: ExperimentConfig, out: Path, gpu_ids: str) -> None:
    from salgl_core.engine import CHECKPOINT, DivergedError, fit

    resume = False
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            shutil.copy2(Path(d) / CHECKPOINT, out / CHECKPOINT)
        resume = True
    started = time.time()
    last: dict[str, Any] = {}

    def on_epoch(m: dict[str, Any]) -> None:
        last.clear()
        last.update(_epoch_metrics(m), gpu_ids=gpu_ids, trial_started=started, reported_at=time.time())
        # The engine has just written checkpoint.pt atomically; Ray copies it to the experiment folder
        # before `report` returns. A hard link avoids a second copy of a large file.
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            try:
                os.link(out / CHECKPOINT, Path(tmp) / CHECKPOINT)
            except OSError:
                shutil.copy2(out / CHECKPOINT, Path(tmp) / CHECKPOINT)
            tune.report(dict(last), checkpoint=tune.Checkpoint.from_directory(tmp))

    try:
        res = fit(cfg, out, on_epoch=on_epoch, resume=resume, save_best=False)
    except DivergedError as e:
        # Deterministic, so no retry: report it as the trial's outcome. The searcher sees the worst score.
        tune.report({**last, METRIC: 0.0, "final": True, "trial_status": "DIVERGED", "error": str(e),
                     "gpu_ids": gpu_ids, "trial_started": started, "reported_at": time.time()})
    else:
        final = _epoch_metrics(res.epochs[-1]) if res.epochs else {}
        tune.report({**final, "final": True, "trial_status": "FINISHED", "error": "", "gpu_ids": gpu_ids,
                     "trial_started": started, "reported_at": time.time(),
                     "scene_report": json.dumps(res.scene_report)})


# ---------------------------------------------------------------------------------------------------
# the driver side: searcher, export callback


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its `study.stop()` once the grid is used up: that call is meant for
    `study.optimize` and raises under Ray's ask/tell; Ray ends the study after num_samples trials."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        return None


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch that survives a crash between two of Ray's experiment snapshots.

    A trial the searcher handed out after the last snapshot stays RUNNING in the Optuna journal, but
    the restored Ray experiment does not know it. Without this, GridSampler would count that grid point
    as taken and could hand out a duplicate instead; here such orphans are handed out again first.
    """

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        trials = self._ot_study.get_trials(deepcopy=False)
        known = {t.number for t in self._ot_trials.values()}
        self._orphans = [optuna.trial.Trial(self._ot_study, t._trial_id) for t in trials
                         if t.state == TrialState.RUNNING and t.number not in known]
        # The converse: a trial that finished after the snapshot is RUNNING for Ray, which runs it again
        # (it only re-evaluates from its last checkpoint); Optuna already has its result and refuses a second.
        finished = {t.number for t in trials if t.state.is_finished()}
        self._completed_trials.update(rid for rid, t in self._ot_trials.items() if t.number in finished)

    def suggest(self, trial_id: str) -> dict | None:
        orphans = getattr(self, "_orphans", [])
        if trial_id not in self._ot_trials and orphans:
            self._ot_trials[trial_id] = orphans.pop(0)
        return super().suggest(trial_id)

    # OptunaSearch warns about (and prints) every result of a trial it considers finished: quietly skip them.
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)


def _error_message(trial: Any) -> str:
    local = Path(trial.error_file) if trial.error_file else None
    text = local.read_text() if local is not None and local.is_file() else (trial.get_error() or "")
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    # Ray's error file holds the worker's traceback; its last line is "ExceptionType: message".
    return lines[-1][:2000] if lines else "the trial failed without a message; see Ray's trial folder"


class ExportCallback(tune.Callback):
    """Forwards trial events to `StudyExport`. Pickled with the experiment and reused by Tuner.restore,
    so it keeps plain data only and reloads the export from disk in `setup`."""

    def __init__(self, run_dir: str, meta: dict[str, Any], paper_config: dict[str, Any], n_trials: int,
                 axis: str | None) -> None:
        self.run_dir, self.meta, self.paper_config = run_dir, meta, paper_config
        self.n_trials, self.axis = n_trials, axis
        self.export: StudyExport | None = None
        self._pruned = False

    def setup(self, **info: Any) -> None:
        self.export = StudyExport.open(self.run_dir, self.meta, _SESSION.get(self.run_dir))
        self._pruned = False
        self.export.begin()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._pruned:
            self.export.prune({t.trial_id for t in trials})
            self._pruned = True

    def _flat(self, trial: Any) -> dict[str, Any]:
        return {**self.meta["base_config"], **trial.config}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        flat = self._flat(trial)
        is_paper = all(flat.get(k) == v for k, v in self.paper_config.items())
        if self.export.is_final(trial.trial_id):
            return  # finished before a crash; Ray only re-evaluates it (see StudyExport.is_final)
        self.export.trial_started(trial.trial_id, flat, int(flat["seed"]), is_paper)
        what = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.config.items())
        print(f"start    {trial.trial_id} {what}" + ("  (the paper's configuration)" if is_paper else ""), flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if not result.get("final") and "epoch" in result and not self.export.is_final(trial.trial_id):
            self.export.trial_epoch(trial.trial_id, result, seconds=result.get("time_total_s"))
            print(f"         {trial.trial_id} epoch {result['epoch']}/{result['epochs']}  mAP {result['mAP']:.2f}  "
                  f"EMA mAP {result[METRIC]:.2f}  loss {result['loss_total']:.2f}  {result['seconds']:.0f}s/epoch"
                  + (f"  GPU {result['gpu_ids']}" if result.get("gpu_ids") else ""), flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        r = trial.last_result or {}
        if r.get("final"):
            status, error = r["trial_status"], r.get("error") or None
            report = json.loads(r["scene_report"]) if r.get("scene_report") else None
        else:  # ended by the scheduler, which only stops trials before their last epoch
            status, error, report = "STOPPED", None, None
        if self.export.trial_ended(trial.trial_id, status, error, report, seconds=r.get("time_total_s")):
            self._print(trial, status, r, error)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"trial {trial.trial_id} failed ({_error_message(trial)}); retrying from its last checkpoint",
              flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        msg = _error_message(trial)
        if self.export.trial_ended(trial.trial_id, "ERROR", msg, seconds=(trial.last_result or {}).get("time_total_s")):
            self._print(trial, "ERROR", trial.last_result or {}, msg)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        rows = self.export.trials
        done = all(rows.get(t.trial_id, {}).get("status") in TERMINAL for t in trials)
        complete = done and sum(r.get("status") in TERMINAL for r in rows.values()) >= self.n_trials
        self.export.finish("FINISHED" if complete else "INTERRUPTED")

    def _print(self, trial: Any, status: str, r: dict, error: str | None) -> None:
        flat = self._flat(trial)
        what = f"{self.axis}={flat[self.axis]} " if self.axis else ""
        n = sum(x.get("status") in TERMINAL for x in self.export.trials.values())
        score = f"mAP_ema {r[METRIC]:.2f} (best {r.get('best_mAP_ema', 0):.2f}, epoch {r.get('best_epoch')})" \
            if status in ("FINISHED", "STOPPED") and METRIC in r else (error or "")
        secs = r.get("time_total_s")
        print(f"[{n}/{self.n_trials}] {status:<8} {trial.trial_id} {what}seed={flat['seed']}  {score}"
              + (f"  {secs:.0f}s" if secs else ""), flush=True)


# ---------------------------------------------------------------------------------------------------
# Ray


def dashboard_warning(args: argparse.Namespace) -> str | None:
    if args.no_dashboard or args.dashboard_host in ("127.0.0.1", "localhost", "::1"):
        return None
    return (f"WARNING: the Ray dashboard will listen on {args.dashboard_host}, not only on this machine. It accepts "
            "job submissions, which run arbitrary code here: expose it only on a network you trust, and keep "
            "token authentication on (RAY_AUTH_MODE=token, the default).")


def start_ray(args: argparse.Namespace) -> bool:
    """Join --address / RAY_ADDRESS, reuse a Ray already started in this process, or start one locally
    with the dashboard on 127.0.0.1. Returns whether this call started (and must stop) Ray."""
    if ray.is_initialized():
        return False
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        print(f"joined the Ray cluster at {address}")
        return True
    warning = dashboard_warning(args)
    if warning:
        print(warning, file=sys.stderr)
    ctx = ray.init(include_dashboard=not args.no_dashboard, dashboard_host=args.dashboard_host,
                   dashboard_port=args.dashboard_port, log_to_driver=False,
                   _temp_dir=str(Path(args.ray_temp_dir).resolve()) if args.ray_temp_dir else None)
    if not args.no_dashboard and ctx.dashboard_url:
        token = os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")
        auth = (f"token authentication is on: paste the token from {token} (`ray get-auth-token` prints it) "
                "when the page asks" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
                else "token authentication is off (RAY_AUTH_MODE)")
        print(f"Ray dashboard: http://{ctx.dashboard_url}  ({auth})", flush=True)
    return True


def cluster_info() -> dict[str, Any]:
    res = ray.cluster_resources()
    return {"nodes": sum(1 for n in ray.nodes() if n.get("Alive")), "cpus": res.get("CPU", 0.0),
            "gpus": res.get("GPU", 0.0)}


def resources(args: argparse.Namespace, cluster: dict[str, Any], n_trials: int) -> tuple[float, float, int]:
    """(GPUs per trial, CPUs per trial, trials that can run at once)."""
    gpus, cpus = cluster["gpus"], cluster["cpus"]
    g = args.gpus_per_trial if args.gpus_per_trial is not None else (1.0 if gpus >= 1 else 0.0)
    if g < 0 or (g > 1 and g != int(g)):
        raise StudyError(f"--gpus-per-trial {g} is invalid: expected a fraction in (0, 1] or a whole number")
    if g > gpus:
        raise StudyError(f"--gpus-per-trial {g} is more than the Ray cluster has ({gpus:g} GPUs)")
    fit_gpu = math.floor(gpus / g + 1e-9) if g > 0 else n_trials
    c = args.cpus_per_trial if args.cpus_per_trial is not None else (
        1.0 if g == 0 else max(1.0, math.floor(cpus / max(1, min(fit_gpu, n_trials)))))
    if c <= 0 or c > cpus:
        raise StudyError(f"--cpus-per-trial {c} is invalid: the Ray cluster has {cpus:g} CPUs")
    concurrent = min(n_trials, fit_gpu, math.floor(cpus / c + 1e-9), args.max_concurrent or n_trials)
    return g, c, max(1, concurrent)


def _tune_env(concurrent: int) -> None:
    # Every epoch's checkpoint (num_to_keep=1) makes Ray sync its experiment state, which is what keeps a
    # crash cheap; Ray warns about such frequent syncs, needlessly here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # With a custom searcher Ray keeps one trial pending at a time, so the second of two free slots would
    # wait for the first trial's worker to start (seconds each). Let every free slot fill at once.
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(concurrent)


def resume_command(args: argparse.Namespace, spec: StudySpec, run: str) -> str:
    cmd = [sys.executable, spec.script, "--resume", "--name", run]
    if Path(args.storage_path).resolve() != DEFAULT_STORAGE:
        cmd += ["--storage-path", str(Path(args.storage_path).resolve())]
    if args.address:
        cmd += ["--address", args.address]
    return shlex.join(cmd)


def _restore_args(args: argparse.Namespace, spec: StudySpec) -> argparse.Namespace:
    if not args.name:
        runs = sorted(p.name for p in (Path(args.storage_path).resolve() / spec.study).glob("*") if p.is_dir())
        raise StudyError(f"--resume needs --name RUN; runs of {spec.study} under {args.storage_path}: "
                         f"{', '.join(runs) or 'none'}")
    exp_dir = Path(args.storage_path).resolve() / spec.study / args.name
    saved = exp_dir / "study_args.json"
    if not saved.is_file() or not tune.Tuner.can_restore(str(exp_dir)):
        raise StudyError(f"nothing to resume at {exp_dir}: no such run of {spec.study} was started there "
                         "(check --name and --storage-path)")
    stored = json.loads(saved.read_text())
    # What the run was started with wins, except how to run it now (which cluster, dashboard, output).
    return argparse.Namespace(**{**vars(args), **stored, **{k: getattr(args, k) for k in RUNTIME_FLAGS},
                                 "resume": True, "overwrite": False})


# ---------------------------------------------------------------------------------------------------
# main


@dataclasses.dataclass
class Outcome:
    run_dir: Path
    status: str
    resume_command: str


def main(args: argparse.Namespace, spec: StudySpec) -> Outcome:
    """Run (or with --resume, finish) a study. Raises ConfigError / DataError / StudyError (and the
    backbone / embedding errors) for anything a user can fix, all before Ray starts."""
    t0 = time.time()
    if args.resume:
        args = _restore_args(args, spec)
    plan = make_plan(args, spec)
    if not args.resume and (plan.run_dir.exists() or plan.exp_dir.exists()):
        if not args.overwrite:
            raise StudyError(f"run {plan.run} of {spec.study} already exists ({plan.run_dir}); continue it with "
                             f"--resume --name {plan.run}, replace it with --overwrite, or pick another --name")
    class_names = check_inputs(plan)
    if not args.resume and args.overwrite:
        for d in (plan.run_dir, plan.exp_dir):
            shutil.rmtree(d, ignore_errors=True)
    started_ray = start_ray(args)
    try:
        return _run(args, spec, plan, class_names, t0)
    finally:
        if started_ray:
            ray.shutdown()


def _run(args: argparse.Namespace, spec: StudySpec, plan: Plan, class_names: list[str], t0: float) -> Outcome:
    cluster = cluster_info()
    g, c, concurrent = resources(args, cluster, plan.num_samples)
    _tune_env(concurrent)
    base = dict(plan.base)
    if not plan.explicit_device:
        base["device"] = "auto" if g > 0 else "cpu"
    resume_cmd = resume_command(args, spec, plan.run)
    meta = {
        "schema_version": SCHEMA_VERSION, "study": spec.study, "run": plan.run, "axis": spec.axis,
        "axis_values": plan.values if spec.axis else None,
        **({} if spec.axis else {"search_space": _space_json(plan.space)}),
        "sampler": "GridSampler" if spec.axis else "TPESampler", "scheduler": "ASHA" if plan.asha else "FIFO",
        **({"asha": plan.asha} if plan.asha else {}),
        "metric": METRIC, "mode": MODE, "metric_protocol": METRIC_PROTOCOL, "dataset": base["dataset"],
        "backbone": base["backbone"], "image_size": base["image_size"], "base_config": base,
        "paper_config": plan.paper_config, "seeds": plan.seeds, "class_names": class_names, "status": "RUNNING",
        "started": utc_now(t0), "finished": None, "n_trials": plan.num_samples, "n_finished": 0,
        "trial_seconds_total": 0.0, "wall_seconds": 0.0, "max_concurrent": concurrent,
        "provenance": provenance(REPO, cluster), "optuna_storage": OPTUNA_JOURNAL,
        "device": "cpu", "resources_per_trial": {"gpu": g, "cpu": c},
    }
    # The base config travels with the trainable, so a trial's config (what Ray shows and names folders
    # after) is just what the searcher chose.
    trainable = tune.with_resources(tune.with_parameters(train_trial, base_config=base, threads=max(1, int(c))),
                                    {"cpu": c, "gpu": g})
    print(f"{spec.study} {plan.run}: {plan.num_samples} trials, up to {concurrent} at once, {g:g} GPU and {c:g} "
          f"CPU each; export: {plan.run_dir}", flush=True)
    key = str(plan.run_dir)
    old = plan.run_dir / "study.json"
    earlier = json.loads(old.read_text()) if args.resume and old.is_file() else {}
    wall_before = float(earlier.get("wall_seconds") or 0.0)
    _SESSION[key] = (wall_before, t0)
    if args.resume:
        # The callback comes back from Ray's pickle with the first session's metadata; the export on disk
        # is what it reloads, so refresh what may differ this time (the cluster) there.
        ex = StudyExport.open(plan.run_dir, meta, _SESSION[key])
        ex.meta.update(provenance=meta["provenance"], max_concurrent=concurrent)
        ex.write_all()
        tuner = tune.Tuner.restore(str(plan.exp_dir), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    else:
        plan.exp_dir.mkdir(parents=True, exist_ok=True)
        saved = dict(vars(args))
        saved.update(name=plan.run, gpus_per_trial=g, cpus_per_trial=c,
                     results_dir=str(Path(args.results_dir).resolve()),
                     storage_path=str(Path(args.storage_path).resolve()))
        write_json(plan.exp_dir / "study_args.json", saved)
        tuner = _new_tuner(args, spec, plan, meta, trainable)
    try:
        tuner.fit()
    except KeyboardInterrupt:
        pass  # a second Ctrl-C: Ray's state is saved; the export says INTERRUPTED below
    except Exception:
        StudyExport.open(plan.run_dir, meta, _SESSION[key]).finish("FAILED")
        raise
    ex = StudyExport.open(plan.run_dir, meta, _SESSION[key])
    status = ex.meta.get("status")
    if status not in ("FINISHED", "INTERRUPTED"):
        status = "INTERRUPTED"
    ex.finish(status)
    _print_summary(spec, ex, plan, status, resume_cmd, concurrent)
    return Outcome(plan.run_dir, status, resume_cmd)


def _new_tuner(args: argparse.Namespace, spec: StudySpec, plan: Plan, meta: dict[str, Any],
               trainable: Any) -> tune.Tuner:
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(plan.run_dir / OPTUNA_JOURNAL)))
    if spec.axis:
        sampler: optuna.samplers.BaseSampler = GridSampler({spec.axis: plan.values, "seed": plan.seeds},
                                                           seed=args.searcher_seed)
        scheduler: Any = FIFOScheduler()
    else:
        sampler = optuna.samplers.TPESampler(seed=args.searcher_seed,
                                             n_startup_trials=max(2, min(10, plan.num_samples // 4)))
        scheduler = AsyncHyperBandScheduler(**plan.asha, stop_last_trials=False) if plan.asha else FIFOScheduler()
    searcher = ResumableOptunaSearch(space=plan.space, metric=METRIC, mode=MODE, sampler=sampler, storage=storage,
                                     study_name=f"{spec.study}/{plan.run}", points_to_evaluate=plan.points or None)
    callback = ExportCallback(str(plan.run_dir), meta, plan.paper_config, plan.num_samples, spec.axis)
    return tune.Tuner(
        trainable,
        # reuse_actors: a finished trial's worker process runs the next trial (same resources), which saves
        # a process start and the torch import, seconds per trial.
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=searcher, scheduler=scheduler,
                                    num_samples=plan.num_samples, max_concurrent_trials=args.max_concurrent,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=plan.run, storage_path=str(plan.exp_dir.parent), callbacks=[callback],
                                  failure_config=tune.FailureConfig(max_failures=args.max_failures),
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                  verbose=args.verbose, log_to_file=True),
    )


def _print_summary(spec: StudySpec, ex: StudyExport, plan: Plan, status: str, resume_cmd: str,
                   concurrent: int) -> None:
    rows = list(ex.trials.values())
    print(f"\n{spec.study} {plan.run}: {status}; export in {plan.run_dir}")
    if spec.axis:
        by_value: dict[str, list[float]] = {}
        for r in rows:
            if r.get("status") == "FINISHED" and r.get("best_mAP_ema") not in (None, ""):
                by_value.setdefault(str(r.get(spec.axis)), []).append(float(r["best_mAP_ema"]))
        for v in plan.values:
            xs = by_value.get(str(v), [])
            if xs:
                mean = sum(xs) / len(xs)
                sd = (sum((x - mean) ** 2 for x in xs) / max(len(xs) - 1, 1)) ** 0.5
                paper = "  (paper)" if v == plan.paper_config[spec.axis] else ""
                print(f"  {spec.axis} = {v!s:<6} best EMA mAP {mean:6.2f} +- {sd:4.2f} over {len(xs)} seed(s){paper}")
    trial_s, wall = ex.meta.get("trial_seconds_total", 0.0), ex.meta.get("wall_seconds", 0.0)
    if trial_s and wall:
        ideal = trial_s / concurrent
        print(f"  trial time {trial_s:.0f} s in all, {concurrent} at once -> ideal {ideal:.0f} s; "
              f"wall {wall:.0f} s (overhead {100 * (wall / ideal - 1):.0f}%)")
    errors = [r for r in rows if r.get("status") in ("ERROR", "DIVERGED")]
    for r in errors:
        print(f"  {r['status']} {r['trial_id']}: {r.get('error')}")
    print(f"  dashboard: streamlit run dashboards/app.py    optuna: optuna-dashboard {plan.run_dir / OPTUNA_JOURNAL}")
    if status == "INTERRUPTED":
        print(f"\ninterrupted; finish it with:\n  {resume_cmd}", flush=True)


def cli(spec: StudySpec, argv: list[str] | None = None) -> int:
    """Entry point of a study script: one clear line for a user error, exit code 2; 130 if interrupted."""
    from salgl_core.backbone import BackboneWeightsError
    from salgl_core.data import DataError
    from salgl_core.embeddings import LabelEmbeddingError

    args = get_args_parser(spec).parse_args(argv)
    try:
        outcome = main(args, spec)
    except (ConfigError, DataError, StudyError, BackboneWeightsError, LabelEmbeddingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted before the trials started", file=sys.stderr)
        return 130
    return 0 if outcome.status == "FINISHED" else 130
