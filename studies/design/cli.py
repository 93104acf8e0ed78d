"""The study scripts' command line: the parser, `--set FIELD=VALUE`, `--values` as the axis field's type.

Every study script has the same flags (the one-axis ablations `--values`, the joint search
`--num-samples` and ASHA's two); the common config fields get the flags `python -m salgl_core.train`
generates. What `--resume` restores is in studies/tuning/resume.py.

Light on purpose: no torch, Ray or Optuna at import, so `--help` and argument errors answer at once;
studies/script.py imports the runner (and with it Ray) only once the arguments parse.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from salgl_core.cli import (
    HOW_THE_PRESET_IS_CHOSEN,
    add_config_arguments,
    add_recipe_argument,
    recipes_epilog,
    shown_recipe,
)
from salgl_core.config import DATASETS, ConfigError, ExperimentConfig, check_field, field_spec, ignored_fields
from salgl_core.presets import SMOKE, STUDY_SYNTHETIC, Recipe, choose_recipe
from studies.design.paths import DEFAULT_RESULTS, DEFAULT_STORAGE
from studies.design.spec import StudyError, StudySpec

# Config fields with a flag of their own (--data-root sets data_root, ...).
CONFIG_FLAGS = ("dataset", "data_root", "train_images", "train_annotations", "val_images", "val_annotations",
                "cache_dir", "backbone", "backbone_weights", "image_size", "epochs", "batch_size", "lr",
                "num_workers", "checkpoint_every", "init_from")
# `--log-to` (studies/tuning/trackers.py) and the W&B project runs go to unless --wandb-project says otherwise.
TRACKERS = ("mlflow", "wandb")
WANDB_PROJECT = "salgl"


def study_preset(recipe: Recipe, smoke: bool) -> dict[str, Any]:
    """What a study starts from before its flags: the recipe's overrides, then on synthetic data the
    studies' sizing (STUDY_SYNTHETIC), then --smoke's."""
    flat = recipe.overrides()
    if recipe.dataset == "synthetic":
        flat.update(STUDY_SYNTHETIC)
    if smoke:
        flat.update(SMOKE)
    return flat


def get_args_parser(spec: StudySpec, argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The study's parser; its --help shows the defaults of the preset `argv` chooses (--recipe /
    --dataset / --smoke in it; none: the synthetic preset with the studies' sizing)."""
    recipe = shown_recipe(argv)
    smoke = "--smoke" in (argv or [])
    shown = {**recipe.config(), **study_preset(recipe, smoke)}
    where = (f"recipe {recipe.name}" if recipe.paper else
             "the synthetic preset with the studies' sizing, used without --dataset/--recipe")
    p = argparse.ArgumentParser(
        prog=spec.prog(), formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(f"{spec.description} {HOW_THE_PRESET_IS_CHOSEN}", 100),
        epilog=textwrap.fill("With no arguments: the embedded synthetic dataset, the small CNN, CPU-sized. With "
                             "--dataset coco and no other overrides: recipe paper-coco-r101-448, one GPU per trial. "
                             "Results: <results-dir>/<study>/<name>/ (see results/README.md).", 100)
        + "\n\n" + recipes_epilog())
    d = p.add_argument_group(f"data and model (defaults: {where})")
    add_recipe_argument(d)
    d.add_argument("--dataset", choices=DATASETS, default=None,
                   help="synthetic (embedded, generated on first use) or a real dataset; alone it means that "
                        "dataset's paper recipe (default: synthetic)")
    d.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other config field (salgl_core/config.py), VALUE in JSON: --set soft_assignment=true "
                        "(repeatable)")
    # The common config fields get the same generated flags (and help) as `python -m salgl_core.train`.
    add_config_arguments(p, only=CONFIG_FLAGS[1:], shown_defaults=shown, shown_from=where)
    s = p.add_argument_group("study")
    if spec.arms is not None:
        s.add_argument("--values", nargs="+", metavar="ARM", choices=spec.values,
                       help=f"the arms to run (default: all of {' '.join(spec.values)}); the reference arm "
                            f"{spec.reference_arm} is always added")
    elif spec.axis:
        f = field_spec(spec.axis)
        default = f"default: {' '.join(map(str, spec.values))}" if spec.values else "required for a new run"
        s.add_argument("--values", nargs="+", metavar="V",
                       help=f"the {spec.axis} values to sweep ({default}), each {f.check.expected(f.type)}; the "
                            f"value of {recipe.reference} ({shown[spec.axis]}) is always added. {spec.axis}: {f.help}")
    else:
        s.add_argument("--num-samples", type=int, default=None, metavar="N",
                       help=f"trials to sample (default: {spec.default_samples}; {recipe.reference} is the first)")
        s.add_argument("--grace-period", type=int, default=None, metavar="N",
                       help="ASHA: epochs every trial runs before it can be stopped (default: epochs // 4, >= 1); "
                            "no trial is stopped at its last epoch")
        s.add_argument("--reduction-factor", type=float, default=3.0, metavar="X",
                       help="ASHA: keep the top 1/factor per rung (default: 3)")
        s.add_argument("--repeats", type=int, default=1, metavar="N",
                       help="train every sampled configuration with N seeds (--seeds, default 0 to N-1) and give the "
                            "searcher their mean; N x --num-samples trials. Turns ASHA off, which would judge single "
                            "seeds (default: 1)")
    seeds = " ".join(map(str, spec.default_seeds))
    s.add_argument("--seeds", nargs="+", type=int, default=None, metavar="S",
                   help=f"training seeds, one trial per (value, seed) (default: {seeds})")
    s.add_argument("--searcher-seed", type=int, default=0, metavar="S", help="seed of the Optuna sampler (default: 0)")
    s.add_argument("--smoke", action="store_true", help="a seconds-long run on tiny synthetic data (for tests)")
    r = p.add_argument_group("resources")
    r.add_argument("--gpus-per-trial", type=float, default=None, metavar="X",
                   help="GPUs per trial, fractions allowed (default: 1 when the Ray cluster has GPUs, else 0)")
    r.add_argument("--gpu-memory-gb", type=float, default=None, metavar="X",
                   help="the memory of one GPU of the cluster, in GB (e.g. 80 for an H100 or A100 80GB, 24 for an A10G "
                        "or L4). A trial whose estimated training memory exceeds its share (--gpus-per-trial x this) "
                        "is refused before it starts (default: this machine's GPU when Ray runs here, else the GPU "
                        "type Ray reports, for the types studies/tuning/packing.py knows)")
    r.add_argument("--cpus-per-trial", type=float, default=None, metavar="X",
                   help="CPUs per trial (default: 1 on CPU; with GPUs, the cluster's CPUs shared by the trials "
                        "that fit on its GPUs at once)")
    r.add_argument("--max-concurrent", type=int, default=None, metavar="N",
                   help="at most this many trials at once (default: as many as the resources fit)")
    r.add_argument("--max-failures", type=int, default=1, metavar="N",
                   help="retries of a failed trial, from its last checkpoint (default: 1)")
    g = p.add_argument_group("Ray")
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="join an existing Ray cluster (RAY_ADDRESS works too); default: start Ray locally")
    g.add_argument("--dashboard-host", default="127.0.0.1", metavar="HOST",
                   help="where a locally started Ray dashboard listens; it runs submitted jobs: keep it local "
                        "(default: 127.0.0.1)")
    g.add_argument("--dashboard-port", type=int, default=8265, metavar="PORT",
                   help="port of a locally started Ray dashboard (default: 8265)")
    g.add_argument("--no-dashboard", action="store_true", help="start Ray without its dashboard")
    g.add_argument("--ray-temp-dir", default=None, metavar="DIR", help="Ray's session folder (default: /tmp/ray)")
    g.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0,
                   help="Ray Tune's own progress tables (default 0: only this script's one line per trial event)")
    g.add_argument("--reuse-actors", action="store_true",
                   help="start each trial in the worker process of a finished one: saves a worker start (seconds "
                        "per trial, which counts with many short trials), but the Ray dashboard then names the "
                        "workers after the study instead of each one after its trial")
    o = p.add_argument_group("output")
    o.add_argument("--name", default=None, help="run name (default: the start time, e.g. 2025-06-03_090000)")
    o.add_argument("--results-dir", default=str(DEFAULT_RESULTS), metavar="DIR",
                   help="the export goes to <this>/<study>/<name>/ (default: runs/ in the repository, "
                        "git-ignored; results/ holds the committed examples)")
    o.add_argument("--storage-path", default=str(DEFAULT_STORAGE), metavar="PATH",
                   help="Ray's experiment folder (experiment state, trial checkpoints): a folder, or a URI such as "
                        "s3://bucket/prefix (pyarrow filesystems). On a multi-node cluster it must be storage every "
                        "node reaches (an NFS mount at the same path, or a URI); the study checks this before it "
                        "starts (default: .ray_results/ in the repository, this machine only)")
    o.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the trials' checkpoints in Ray's folder after the study finishes (by default they "
                        "are deleted then: they only serve --resume; an unfinished study always keeps them)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace an existing run of the same --name (its export and its Ray folder)")
    o.add_argument("--resume", action="store_true",
                   help="finish the interrupted run --name: finished trials are not run again")
    t = p.add_argument_group("experiment trackers")
    t.add_argument("--log-to", action="append", choices=TRACKERS, default=[],
                   help="also log every trial (full config, tags, per-epoch metrics, node and GPU) and, at the end, "
                        "the analysis to MLflow or W&B, offline by default (repeatable; needs pip install -e "
                        "'.[trackers]')")
    t.add_argument("--mlflow-uri", default=None, metavar="URI",
                   help="MLflow tracking URI: a server http://host:port or any MLflow store URI (default: a local "
                        "SQLite store, sqlite:///<results-dir>/mlflow/mlflow.db, artifacts in "
                        "<results-dir>/mlflow/artifacts)")
    t.add_argument("--wandb-project", default=WANDB_PROJECT, metavar="NAME",
                   help=f"W&B project (default: {WANDB_PROJECT}; the entity: WANDB_ENTITY, else your default one)")
    t.add_argument("--wandb-mode", choices=("offline", "online"), default="offline",
                   help="offline (default): W&B runs stay in <results-dir>/wandb/ until `wandb sync` uploads them, "
                        "no internet needed; online: streamed to W&B, which needs `wandb login` or WANDB_API_KEY")
    return p


def check_args(args: argparse.Namespace, spec: StudySpec) -> None:
    """The mistakes visible in the arguments alone (a malformed --set, a --values item of the wrong type or
    outside the axis field's range); StudyError naming the flag, the field and what it takes."""
    sets = parse_set(args.set)
    if spec.arms is None and spec.axis:
        check_axis_not_set(spec.axis, sets)
    for key, value in sets.items():
        try:
            check_field(key, value)
        except ConfigError as e:
            raise StudyError(f"--set: {e}") from None
    if spec.arms is None and spec.axis:
        values = [axis_value(spec.axis, raw) for raw in getattr(args, "values", None) or ()]
    else:
        values = []
    # The whole trial config, rules across fields included: answered in a fraction of a second, before torch,
    # Ray and Optuna load (studies.tuning.plan builds the same config again, with absolute paths).
    flat, _ = study_config(args)
    for point in [{"seed": s} for s in args.seeds or ()] + [{spec.axis: v} for v in values]:
        ExperimentConfig.from_flat({**flat, **point})
    # A field the study sets on purpose must take effect: an axis or arm the config ignores would compare equals.
    chosen = [(set(sets) | ({spec.axis} if spec.axis and spec.arms is None else set()), flat)]
    if spec.arms is not None:
        chosen += [(set(sets) | set(arm), {**flat, **arm}) for arm in spec.arms(flat).values()]
    for fields_set, config in chosen:
        for name, why in ignored_fields(config).items():
            if name in fields_set:
                raise StudyError(why)


def check_axis_not_set(axis: str, sets: dict[str, Any]) -> None:
    if axis in sets:
        raise StudyError(f"{axis} is this study's axis: give its values with --values, not --set")


def study_config(args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """The flat config every trial starts from: recipe < the studies' synthetic sizing < --smoke < flags < --set,
    validated (ConfigError), paths as typed. Returns it and whether --set chose the device."""
    # getattr: study_args.json of runs started before --recipe existed has no `recipe`.
    recipe = choose_recipe(getattr(args, "recipe", None), args.dataset)
    if args.smoke and recipe.dataset != "synthetic":
        raise StudyError("--smoke runs on the synthetic dataset only; drop --dataset/--recipe or --smoke")
    flat = study_preset(recipe, args.smoke)
    # Generated flags are absent from `args` unless typed (argparse.SUPPRESS); "none" already parsed to None.
    flat.update({name: getattr(args, name) for name in CONFIG_FLAGS[1:] if hasattr(args, name)})
    sets = parse_set(args.set)
    if "recipe" in sets or "dataset" in sets:
        raise StudyError("the recipe and the dataset are chosen with --recipe / --dataset, not --set")
    flat.update(sets)
    # ExperimentConfig names unknown fields and out-of-range values (ConfigError).
    return ExperimentConfig.from_flat(flat).to_flat(), "device" in sets


def axis_value(axis: str, raw: str) -> Any:
    """One `--values` item as the axis field's type, within its range; StudyError naming the field and what it
    takes otherwise."""
    f = field_spec(axis)
    value: Any = raw
    if f.type is bool:
        value = {"true": True, "false": False}.get(raw.lower(), raw)
    elif f.type in (int, float):
        try:
            value = f.type(raw)
        except ValueError:
            pass
    if value is raw and f.type is not str or not f.check.ok(value, f.type):
        raise StudyError(f"--values {raw!r} is invalid: {axis} takes {f.check.expected(f.type)}")
    return value


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set FIELD=VALUE` items -> {field: value}; VALUE is JSON, or else a bare string (a path)."""
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
