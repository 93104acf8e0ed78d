"""What `--resume` needs: the arguments a run was started with (study_args.json in its Ray folder), restored
with only how to run it now taken from the new command line, and the command line that finishes a run."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from studies.design.spec import StudyError, StudySpec
from studies.tuning.storage import Folder, is_default, runs_found, storage_root

# The file in a run's Ray folder that holds the arguments it was started with (what --resume reuses).
STUDY_ARGS = "study_args.json"

# Flags that only say how to run, not what: the ones --resume takes from the new command line.
RUNTIME_FLAGS = ("address", "dashboard_host", "dashboard_port", "no_dashboard", "ray_temp_dir", "verbose",
                 "keep_checkpoints", "gpu_memory_gb")

def saved_args(args: argparse.Namespace, **resolved: Any) -> dict[str, Any]:
    """What study_args.json keeps of a new run: its flags, with what was decided at start (`resolved`:
    run name, resources) and absolute output folders, so --resume from anywhere runs the same study."""
    return {**vars(args), **resolved, "results_dir": str(Path(args.results_dir).resolve()),
            "storage_path": storage_root(args.storage_path)}


def restore_args(args: argparse.Namespace, spec: StudySpec) -> argparse.Namespace:
    """The arguments of the run `--resume --name RUN` continues; StudyError if there is no such run."""
    from ray import tune

    if not args.name:
        raise StudyError(f"--resume needs --name RUN; runs of {spec.study} found in "
                         f"{runs_found(args.storage_path, spec.study)}")
    exp_dir = Folder(args.storage_path) / spec.study / args.name
    if not exp_dir.has_file(STUDY_ARGS) or not tune.Tuner.can_restore(str(exp_dir)):
        # Typically the run was started with another --storage-path (or on another cluster, whose shared
        # storage this machine does not see): say what is where.
        raise StudyError(f"nothing to resume at {exp_dir}: no run {args.name} of {spec.study} was started there "
                         f"(check --name, and pass the --storage-path the run was started with). Runs of "
                         f"{spec.study} found in {runs_found(args.storage_path, spec.study)}")
    stored = json.loads(exp_dir.read_text(STUDY_ARGS))
    # The trackers are callbacks Ray restores with the run (studies.tuning.trackers): they cannot change now.
    given, started = sorted(set(getattr(args, "log_to", None) or [])), sorted(set(stored.get("log_to") or []))
    if given and given != started:
        logs = " and ".join(started) or "no tracker"
        raise StudyError(f"--log-to {' '.join(given)}: run {args.name} logs to {logs}, fixed when it started; resume "
                         "it without --log-to")
    # What the run was started with wins, except how to run it now (which cluster, dashboard, output).
    return argparse.Namespace(**{**vars(args), **stored, **{k: getattr(args, k) for k in RUNTIME_FLAGS},
                                 "resume": True, "overwrite": False})


def resume_command(args: argparse.Namespace, spec: StudySpec, run: str) -> str:
    """The command line that finishes this run after an interrupt or a crash."""
    cmd = [sys.executable, *spec.command(), "--resume", "--name", run]
    if not is_default(args.storage_path):
        cmd += ["--storage-path", storage_root(args.storage_path)]
    if args.address:
        cmd += ["--address", args.address]
    if getattr(args, "keep_checkpoints", False):  # a runtime flag: --resume takes it from its own command line
        cmd += ["--keep-checkpoints"]
    return shlex.join(cmd)
