"""The Ray cluster a study runs on: start or join it, keep its dashboard local, size the trials to it.

`resources` decides each trial's GPU share and CPUs and how many trials run at once from what the
cluster has (`cluster_info`) and the resource flags.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import ray

from studies.search import ray_temp_dir
from studies.spec import StudyError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def dashboard_warning(args: argparse.Namespace) -> str | None:
    """The warning to print when the Ray dashboard (which runs submitted jobs) would listen beyond this machine."""
    if args.no_dashboard or args.dashboard_host in LOCAL_HOSTS:
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
    temp_dir = str(Path(args.ray_temp_dir).resolve()) if args.ray_temp_dir else None
    ctx = ray.init(include_dashboard=not args.no_dashboard, dashboard_host=args.dashboard_host,
                   dashboard_port=args.dashboard_port, log_to_driver=False, **ray_temp_dir(temp_dir))
    if not args.no_dashboard and ctx.dashboard_url:
        token = os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")
        auth = (f"token authentication is on: paste the token from {token} (`ray get-auth-token` prints it) "
                "when the page asks" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
                else "token authentication is off (RAY_AUTH_MODE)")
        print(f"Ray dashboard: http://{ctx.dashboard_url}  ({auth})", flush=True)
    return True


def cluster_info() -> dict[str, Any]:
    """{nodes, cpus, gpus} of the running Ray cluster (study.json's provenance.ray_cluster)."""
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


def tune_env(concurrent: int) -> None:
    """Ray Tune settings that only environment variables reach."""
    # Every epoch's checkpoint (num_to_keep=1) makes Ray sync its experiment state, which is what keeps a
    # crash cheap; Ray warns about such frequent syncs, needlessly here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # With a custom searcher Ray keeps one trial pending at a time, so the second of two free slots would
    # wait for the first trial's worker to start (seconds each). Let every free slot fill at once.
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(concurrent)
