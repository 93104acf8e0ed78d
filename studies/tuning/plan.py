"""The plan of a study run: what it will run, built from the command line and checked before Ray starts.

`make_plan` turns the flags into a `GridPlan` (a one-axis ablation: every (value, seed) point, each run
to its last epoch) or a `SearchPlan` (a joint search: sampled points, the recipe's first, ASHA when there
is more than one epoch). Both start from `base_config`: the recipe (--recipe, or --dataset's paper recipe,
or the synthetic preset) < the studies' synthetic sizing < --smoke < flags < --set, validated by the config
classes, with absolute paths (trials run in working directories of their own). "The paper's
configuration" of a plan is its recipe's value of the swept axis (the synthetic preset's on synthetic data).
`check_inputs` then builds the data and the model once, so a user's mistake surfaces here, not in a worker.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import os
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from salgl_core.config import DATA_PATH_FIELDS, ExperimentConfig, field_spec
from salgl_core.presets import get_recipe, recipe_config
from studies.analysis import timing
from studies.design.cli import axis_value, check_axis_not_set, parse_set, study_config
from studies.design.paths import REPO
from studies.design.spec import ARM, METRIC, MODE, StudyError, StudySpec
from studies.exports.files import portable_config, utc_now
from studies.exports.schema import OPTUNA_JOURNAL, PREDICTIONS_DIR, REPORTED_METRIC, SCHEMA_VERSION
from studies.exports.writer import provenance
from studies.tuning.caches import built_in_task, with_storage_cache
from studies.tuning.storage import experiment_dir


@dataclasses.dataclass
class Plan(abc.ABC):
    """What every study run has: where it goes, the base config, the seeds, the space Optuna samples."""

    spec: StudySpec
    run: str
    run_dir: Path  # the export: <results-dir>/<study>/<run>
    exp_dir: str  # Ray's experiment folder, <storage-path>/<study>/<run>: a path or a URI (studies.tuning.storage)
    base: dict[str, Any]
    seeds: list[int]
    explicit_device: bool  # --set device=...: keep it whatever the cluster has
    space: dict[str, BaseDistribution]
    paper_config: dict[str, Any]  # the searched fields at the paper's configuration (seed excluded)
    num_samples: int

    sampler: ClassVar[str]
    scheduler: ClassVar[str]

    @property
    def points(self) -> list[dict[str, Any]]:
        """Points the searcher evaluates before sampling."""
        return []

    def trial_base(self, gpus_per_trial: float) -> dict[str, Any]:
        """The base config the trials get: the device follows the resources unless --set device chose one."""
        base = dict(self.base)
        if not self.explicit_device:
            base["device"] = "auto" if gpus_per_trial > 0 else "cpu"
        return base

    def device_note(self) -> str | None:
        """What the driver says about --set device=cuda:N: an index of the node's GPUs means nothing to a trial, which
        sees only the GPUs Ray gives it (the trial maps it to 'cuda': studies.tuning.trainable.trial_device)."""
        device = str(self.base["device"])
        if not (self.explicit_device and device.startswith("cuda:")):
            return None
        return (f"note: device {device}: each trial sees only the GPU(s) Ray gives it, numbered from cuda:0, so its "
                "trials train on their own first GPU ('cuda'); Ray, not the index, chooses which GPU")

    @abc.abstractmethod
    def study_keys(self) -> dict[str, Any]:
        """This kind of plan's own study.json keys (axis, grid or search space, scheduler settings)."""

    def trial_label(self, flat: dict[str, Any]) -> str:
        """What tells this plan's trials apart in a console line, besides the seed."""
        return ""


@dataclasses.dataclass
class GridPlan(Plan):
    """A one-axis ablation: Optuna's GridSampler over (value x seed), FIFO: every trial runs to the end."""

    values: list[Any] = dataclasses.field(default_factory=list)
    # A study of named arms: {arm: config overrides}, resolved from the base config (studies.design.spec.ARM).
    arms: dict[str, dict[str, Any]] | None = None

    sampler: ClassVar[str] = "GridSampler"
    scheduler: ClassVar[str] = "FIFO"

    @property
    def axis(self) -> str:
        assert self.spec.axis is not None
        return self.spec.axis

    def grid(self) -> dict[str, list[Any]]:
        return {self.axis: list(self.values), "seed": list(self.seeds)}

    def study_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {"axis": self.axis, "axis_values": list(self.values)}
        if self.arms is not None:
            keys["arms"] = {v: self.arms[v] for v in self.values}
        return keys

    def trial_label(self, flat: dict[str, Any]) -> str:
        return f"{self.axis}={flat[self.axis]} "


@dataclasses.dataclass
class SearchPlan(Plan):
    """A joint search: TPE samples the space, the paper's point first; ASHA stops weak trials early."""

    paper_point: dict[str, Any] = dataclasses.field(default_factory=dict)
    asha: dict[str, Any] | None = None
    # Seeds per sampled configuration (--repeats): repeat i trains with seeds[i] and the searcher is told the
    # mean (studies.tuning.search); num_samples counts trials, repeats included.
    repeats: int = 1

    sampler: ClassVar[str] = "TPESampler"

    @property
    def scheduler(self) -> str:  # type: ignore[override]
        return "ASHA" if self.asha else "FIFO"

    @property
    def points(self) -> list[dict[str, Any]]:
        return [self.paper_point]

    def study_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {"axis": None, "axis_values": None, "search_space": space_json(self.space)}
        if self.asha:
            keys["asha"] = self.asha
        return keys


# ---------------------------------------------------------------------------------------------------
# building a plan


def make_plan(args: argparse.Namespace, spec: StudySpec) -> Plan:
    """The plan for these flags; ConfigError / StudyError for anything a user got wrong."""
    base, explicit_device = base_config(args)
    repeats = getattr(args, "repeats", 1)  # a joint search's --repeats; absent elsewhere and from older runs
    seeds = list(args.seeds) if args.seeds else (list(range(repeats)) if repeats > 1 else [0] if args.smoke
                                                 else list(spec.default_seeds))
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"--seeds {seeds} repeats a seed")
    for s in seeds:
        ExperimentConfig.from_flat({**base, "seed": s})
    kind = _grid if spec.axis else _search
    fields = kind(args, spec, base, seeds)
    run = args.name or datetime.now().strftime("%Y-%m-%d_%H%M%S")
    if not run or "/" in run or run.startswith("."):
        raise StudyError(f"--name {run!r} is invalid: expected a plain folder name")
    common = {"spec": spec, "run": run, "run_dir": Path(args.results_dir).resolve() / spec.study / run,
              "exp_dir": experiment_dir(args.storage_path, spec.study, run), "base": base, "seeds": seeds,
              "explicit_device": explicit_device}
    return (GridPlan if spec.axis else SearchPlan)(**common, **fields)


def _grid(args: argparse.Namespace, spec: StudySpec, base: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    axis = spec.axis
    assert axis is not None
    if spec.arms is not None:
        return _arms(args, spec, base, seeds)
    check_axis_not_set(axis, parse_set(args.set))
    paper_value = recipe_config(base["recipe"])[axis]
    if args.values:
        values = [axis_value(axis, v) for v in args.values]
    elif args.smoke:
        values = [paper_value, next(v for v in spec.values if v != paper_value)]
    else:
        values = list(spec.values)
    if not values:
        raise StudyError(f"--values is required: the {axis} values to sweep")
    if len(set(values)) != len(values):
        raise StudyError(f"--values {values} repeats a value")
    for v in values:
        ExperimentConfig.from_flat({**base, axis: v})
    if paper_value not in values:
        print(f"note: adding {axis} = {paper_value} ({get_recipe(base['recipe']).reference}) to --values "
              "(always part of an ablation)")
        values.append(paper_value)
    values = sorted(values)
    return {"values": values, "space": {axis: CategoricalDistribution(values), "seed": CategoricalDistribution(seeds)},
            "paper_config": {axis: paper_value}, "num_samples": len(values) * len(seeds)}


def _arms(args: argparse.Namespace, spec: StudySpec, base: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """A study of named arms: every (arm, seed), the reference arm always included, in the spec's order."""
    assert spec.arms is not None and spec.reference_arm is not None
    arms = spec.arms(base)
    if args.values:
        unknown = [v for v in args.values if v not in spec.values]
        if unknown:
            raise StudyError(f"--values {' '.join(unknown)}: not an arm of this study ({' '.join(spec.values)})")
        missing = [v for v in args.values if v not in arms]
        if missing:
            raise StudyError(f"--values {' '.join(missing)}: not available on dataset {base['dataset']} "
                             f"(available: {' '.join(arms)})")
        chosen = set(args.values)
    elif args.smoke:
        chosen = {spec.reference_arm, next(a for a in arms if a != spec.reference_arm)}
    else:
        chosen = set(arms)
    if spec.reference_arm not in chosen:
        print(f"note: adding the reference arm {spec.reference_arm} to --values (always part of the study)")
        chosen.add(spec.reference_arm)
    values = [a for a in arms if a in chosen]
    if clash := sorted({k for v in values for k in arms[v]} & set(parse_set(args.set))):
        raise StudyError(f"--set {', '.join(clash)}: this study's arms set {'/'.join(clash)} themselves")
    for v in values:
        ExperimentConfig.from_flat({**base, **arms[v]})
    return {"values": values, "arms": arms,
            "space": {ARM: CategoricalDistribution(values), "seed": CategoricalDistribution(seeds)},
            "paper_config": {ARM: spec.reference_arm}, "num_samples": len(values) * len(seeds)}


def _search(args: argparse.Namespace, spec: StudySpec, base: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    assert spec.space is not None
    space, paper_point = spec.space(base, seeds)
    ExperimentConfig.from_flat({**base, **paper_point})
    num_samples = args.num_samples if args.num_samples is not None else (2 if args.smoke else spec.default_samples)
    if num_samples < 1:
        raise StudyError(f"--num-samples {num_samples} is invalid: expected an integer >= 1")
    repeats = getattr(args, "repeats", 1)
    if repeats < 1:
        raise StudyError(f"--repeats {repeats} is invalid: expected an integer >= 1")
    if repeats > 1:
        if len(seeds) != repeats:
            raise StudyError(f"--repeats {repeats} trains every configuration with {repeats} seeds, but --seeds gives "
                             f"{len(seeds)}: give {repeats} seeds or leave --seeds out (then 0 to {repeats - 1})")
        if args.grace_period is not None:
            raise StudyError("--grace-period sets ASHA, which --repeats turns off (ASHA would stop single seeds of a "
                             "configuration): drop one of the two")
        # Each repeat's seed is set by its index, not sampled: out of the searched space.
        space = {k: v for k, v in space.items() if k != "seed"}
        paper_point = {k: v for k, v in paper_point.items() if k != "seed"}
    return {"space": space, "paper_point": paper_point, "num_samples": num_samples * repeats,
            "paper_config": {k: v for k, v in paper_point.items() if k != "seed"},
            "asha": _asha(args, int(base["epochs"])) if repeats == 1 else None, "repeats": repeats}


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


def base_config(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """The flat config every trial starts from (studies.design.cli.study_config), its paths absolute (a real-data
    feature cache's under the storage path: studies.tuning.caches). Returns it and whether --set chose the device."""
    flat, explicit_device = study_config(args)
    return with_storage_cache(_absolute_paths(flat), args.storage_path), explicit_device


def _absolute_paths(flat: dict[str, Any]) -> dict[str, Any]:
    """Trials run in working directories of their own: every path they get must be absolute."""
    from salgl_core.data.synthetic import default_cache_dir

    out = dict(flat)
    for name in (*DATA_PATH_FIELDS, "init_from"):
        if out[name] is not None:
            out[name] = str(Path(out[name]).expanduser().resolve())
    if out["dataset"] == "synthetic" and out["cache_dir"] is None:
        out["cache_dir"] = str(default_cache_dir().expanduser().resolve())  # $SALGL_CACHE may be relative
    for name, suffixes in (("backbone_weights", (".pth", ".pt")), ("label_embedding", (".npy",))):
        v = out[name]
        if isinstance(v, str) and (v.endswith(suffixes) or os.sep in v):
            out[name] = str(Path(v).expanduser().resolve())
    return out


def check_inputs(plan: Plan, clock: timing.Stopwatch | None = None) -> list[str]:
    """Index the data (generating the synthetic set) and build the model once: every data, weights or
    embedding problem surfaces here, before Ray starts, instead of in every trial. Returns class names.
    Arms that change the data (the visibility study's) get theirs generated here too, not inside a trial.
    `clock` times each step (the closing summary names them: studies.analysis.timing)."""
    from salgl_core.data import build_datasets
    from salgl_core.model import build_model
    from salgl_core.presets import check_needs
    from salgl_core.pretrain import resolve_backbone_weights
    from salgl_core.transfer import init_from

    bundles: list[tuple[Any, Any]] = []  # (DataConfig, its bundle): one data check per distinct dataset
    clock = clock or timing.Stopwatch()
    for cfg in input_configs(plan):
        check_needs(cfg)  # e.g. a fine-tuning recipe without --init-from
        bundle = next((b for d, b in bundles if d == cfg.data), None)
        if bundle is None:
            with clock.step(timing.DATA):
                bundle = build_datasets(cfg.data)
            bundles.append((cfg.data, bundle))
            if cfg.train.drop_last and len(bundle.train) < cfg.train.batch_size:
                raise StudyError(f"the training set has {len(bundle.train)} images, fewer than one batch of "
                                 f"{cfg.train.batch_size}: lower --batch-size")
        # Every arm's model is built once here. backbone_weights 'synthetic-pretrained' is pretrained here, once,
        # before the trials (salgl_core/pretrain.py). A feature cache is built before the trials too, so they only
        # read it: here on synthetic data; on real data a Ray task builds it (studies.tuning.caches), its size checked
        # here.
        with clock.step(timing.PRETRAINING):
            model_cfg = resolve_backbone_weights(cfg, print)
        with clock.step(timing.MODEL):
            model = build_model(model_cfg, bundle.num_classes, cfg.data.dataset, bundle.class_names)
            if cfg.train.init_from:  # every trial starts from this run: a bad file is named here, with the table once
                init_from(model, cfg.train.init_from, print)
        if built_in_task(cfg.to_flat()):
            import torch

            from salgl_core.features import check_cache_size, token_shape

            check_cache_size(cfg, len(bundle.train) + len(bundle.val),
                             token_shape(model.backbone, cfg.data.image_size, torch.device("cpu")))
        elif cfg.train.feature_cache:
            from salgl_core.features import build_feature_cache

            with clock.step(timing.FEATURE_CACHE):
                build_feature_cache(cfg)
    return list(bundles[0][1].class_names)


def input_configs(plan: Plan, base: dict[str, Any] | None = None) -> list[ExperimentConfig]:
    """The configs whose data and model check_inputs checks (and whose feature caches are built): the first point
    of the plan, and every arm's. `base`: the plan's base config (default), or the trials' (Plan.trial_base)."""
    base = plan.base if base is None else base
    first = {**base, **plan.points[0]} if plan.points else base
    arms = [plan.arms[v] for v in plan.values] if isinstance(plan, GridPlan) and plan.arms else []
    return [ExperimentConfig.from_flat(first), *(ExperimentConfig.from_flat({**base, **a}) for a in arms)]


def space_json(space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """An Optuna search space as study.json's `search_space`: {field: {type, values | low, high}}."""
    out: dict[str, Any] = {}
    for name, d in space.items():
        if isinstance(d, CategoricalDistribution):
            out[name] = {"type": "choice", "values": list(d.choices)}
        elif isinstance(d, IntDistribution):
            out[name] = {"type": "int", "low": d.low, "high": d.high}
        elif isinstance(d, FloatDistribution):
            out[name] = {"type": "loguniform" if d.log else "uniform", "low": d.low, "high": d.high}
    return out


def study_note(spec: StudySpec) -> str:
    """What the dashboard shows above the study: its spec's note, else its axis field's (config metadata)."""
    if spec.note or spec.axis in (None, ARM):
        return spec.note
    return field_spec(spec.axis).note


def study_json(plan: Plan, *, base_config: dict[str, Any], class_names: list[str], cluster: dict[str, Any],
               gpus_per_trial: float, cpus_per_trial: float, max_concurrent: int, started: float,
               repo: Path = REPO) -> dict[str, Any]:
    """study.json of a new run (schema.STUDY_KEYS, plus schema.SEARCH_STUDY_KEYS for a joint search):
    what the plan runs, from which base config, on which cluster. The counters and `status` are what a
    run that has not started yet has; `StudyExport` keeps them up to date."""
    from salgl_core.metrics import metric_protocol  # torch: only the driver builds study.json

    return {
        "schema_version": SCHEMA_VERSION, "study": plan.spec.study, "run": plan.run, **plan.study_keys(),
        "sampler": plan.sampler, "scheduler": plan.scheduler, "metric": METRIC, "mode": MODE,
        "metric_protocol": metric_protocol(base_config["cp_cr_rule"]), "reported_metric": REPORTED_METRIC,
        "recipe": base_config["recipe"], "dataset": base_config["dataset"],
        "backbone": base_config["backbone"], "image_size": base_config["image_size"],
        "base_config": portable_config(base_config, repo), "paper_config": plan.paper_config, "seeds": plan.seeds,
        "class_names": class_names, "status": "RUNNING", "started": utc_now(started), "finished": None,
        "n_trials": plan.num_samples, "n_finished": 0, "trial_seconds_total": 0.0, "wall_seconds": 0.0,
        "max_concurrent": max_concurrent, "resources_per_trial": {"gpu": gpus_per_trial, "cpu": cpus_per_trial},
        "provenance": provenance(repo, cluster), "optuna_storage": OPTUNA_JOURNAL, "device": "cpu", "preparation": {},
        "predictions": PREDICTIONS_DIR, "note": study_note(plan.spec),
    }
