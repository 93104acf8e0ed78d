"""The study scripts' command line: the parser, `--set FIELD=VALUE`, and what `--resume` restores.

Every study script has the same flags (the one-axis ablations `--values`, the joint search
`--num-samples` and ASHA's two); the common config fields get the flags `python -m salgl_core.train`
generates. `--resume` takes what the run was started with from its Ray folder (study_args.json) and
only how to run it now (cluster, dashboard) from the new command line.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from salgl_core.cli import add_config_arguments
from salgl_core.config import DATASETS
from studies.export import REPO
from studies.spec import PAPER, StudyError, StudySpec

DEFAULT_RESULTS = REPO / "results"
DEFAULT_STORAGE = REPO / ".ray_results"
# The file in a run's Ray folder that holds the arguments it was started with (what --resume reuses).
STUDY_ARGS = "study_args.json"

# Flags that only say how to run, not what: the ones --resume takes from the new command line.
RUNTIME_FLAGS = ("address", "dashboard_host", "dashboard_port", "no_dashboard", "ray_temp_dir", "verbose")
# Config fields with a flag of their own (--data-root sets data_root, ...).
CONFIG_FLAGS = ("dataset", "data_root", "train_images", "train_annotations", "val_images", "val_annotations",
                "cache_dir", "backbone", "backbone_weights", "image_size", "epochs", "batch_size", "lr",
                "num_workers")


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


def saved_args(args: argparse.Namespace, **resolved: Any) -> dict[str, Any]:
    """What study_args.json keeps of a new run: its flags, with what was decided at start (`resolved`:
    run name, resources) and absolute output folders, so --resume from anywhere runs the same study."""
    return {**vars(args), **resolved, "results_dir": str(Path(args.results_dir).resolve()),
            "storage_path": str(Path(args.storage_path).resolve())}


def restore_args(args: argparse.Namespace, spec: StudySpec) -> argparse.Namespace:
    """The arguments of the run `--resume --name RUN` continues; StudyError if there is no such run."""
    from ray import tune

    if not args.name:
        runs = sorted(p.name for p in (Path(args.storage_path).resolve() / spec.study).glob("*") if p.is_dir())
        raise StudyError(f"--resume needs --name RUN; runs of {spec.study} under {args.storage_path}: "
                         f"{', '.join(runs) or 'none'}")
    exp_dir = Path(args.storage_path).resolve() / spec.study / args.name
    saved = exp_dir / STUDY_ARGS
    if not saved.is_file() or not tune.Tuner.can_restore(str(exp_dir)):
        raise StudyError(f"nothing to resume at {exp_dir}: no such run of {spec.study} was started there "
                         "(check --name and --storage-path)")
    stored = json.loads(saved.read_text())
    # What the run was started with wins, except how to run it now (which cluster, dashboard, output).
    return argparse.Namespace(**{**vars(args), **stored, **{k: getattr(args, k) for k in RUNTIME_FLAGS},
                                 "resume": True, "overwrite": False})


def resume_command(args: argparse.Namespace, spec: StudySpec, run: str) -> str:
    """The command line that finishes this run after an interrupt or a crash."""
    cmd = [sys.executable, spec.script, "--resume", "--name", run]
    if Path(args.storage_path).resolve() != DEFAULT_STORAGE:
        cmd += ["--storage-path", str(Path(args.storage_path).resolve())]
    if args.address:
        cmd += ["--address", args.address]
    return shlex.join(cmd)
