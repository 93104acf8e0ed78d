"""How much wall time a study adds to its trials: on one node and on a simulated three-node cluster.

    python -m studies.bench_overhead                       # trials of ~1, 10 and 60 s; a few minutes
    python -m studies.bench_overhead --sizes 10 --trials 4

Each measurement is a whole study run by `runner.main` (plan, checks, searcher, Tuner, export callback,
a checkpoint per epoch) whose trainable sleeps instead of training: the same
reports and checkpoints as `studies.tuning.trainable.train_trial`, so what is measured is the study machinery,
not SALGL. overhead = (wall - preparation) / (summed trial time / trials at once) - 1, with the wall time, the
trial time (Tune's time_total_s, from a trial actor's start to its last report) and the one-off preparation
(data check, Ray's start: study.json `preparation`, reported apart as the study's summary does) from the export's
study.json; what is left of the wall time is Ray's per-trial bookkeeping, with a
fresh actor per trial (the default) or, measured once more, actors reused (--reuse-actors). The
cluster is ray.cluster_utils.Cluster: a head without CPUs and two one-CPU worker nodes, each its own
raylet on this machine; the single node has two CPUs, so both run two trials at once. Prints a table
and one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import ray
from ray.tune import ExperimentAnalysis

from studies import scene_count
from studies.tuning import runner
from studies.tuning.cluster import token_auth_on
from studies.tuning.internals import default_temp_dir, ray_temp_dir

# trial length (s) -> (epochs, trials): a few epochs each, so checkpoints and reports are part of it.
DEFAULT_TRIALS = {1: 4, 10: 4, 60: 4}
EPOCHS = {1: 1, 10: 5, 60: 6}


def sleeping_trial(epoch_seconds: float) -> Callable[..., None]:
    """A trainable with train_trial's signature and reports that sleeps `epoch_seconds` per epoch."""

    def sleep_trial(config: dict[str, Any], base_config: dict[str, Any], threads: int = 1,
                    monitor: dict[str, Any] | None = None, arms: dict[str, dict[str, Any]] | None = None) -> None:
        from ray import tune

        from studies.design.spec import METRIC
        from studies.tuning.monitor import placement

        epochs, where, started = int(base_config["epochs"]), placement(), time.time()
        start = 0
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:  # a retried trial goes on from its last epoch, as the real one does
            with checkpoint.as_directory() as d:
                start = int(Path(d, "epoch").read_text())
        m: dict[str, Any] = {}
        for epoch in range(start + 1, epochs + 1):
            time.sleep(epoch_seconds)
            m = {"epoch": epoch, "epochs": epochs, "mAP": 50.0, METRIC: 50.0, "best_mAP": 50.0,
                 "best_mAP_ema": 50.0, "best_epoch": epoch, "loss_total": 1.0, "lr": 1e-3,
                 "seconds": epoch_seconds, "images_per_second": 0.0, "device": "cpu", **where,
                 "trial_started": started, "reported_at": time.time()}
            with tempfile.TemporaryDirectory() as d:
                Path(d, "epoch").write_text(str(epoch))
                Path(d, "weights").write_bytes(os.urandom(1 << 20))  # a checkpoint of 1 MB to store
                tune.report(m, checkpoint=tune.Checkpoint.from_directory(d))
        tune.report({**m, "final": True, "trial_status": "FINISHED", "error": "", "reported_at": time.time()})

    return sleep_trial


def run_study(tmp: Path, name: str, seconds: int, n_trials: int, reuse: bool = False) -> dict[str, Any]:
    """One study of `n_trials` sleeping trials of about `seconds` each on the Ray this process joined."""
    epochs = EPOCHS.get(seconds, max(1, round(seconds / 10)))
    args = scene_count.get_args_parser().parse_args(
        ["--smoke", "--values", "4", "--seeds", *map(str, range(n_trials)), "--epochs", str(epochs),
         "--gpus-per-trial", "0", "--cpus-per-trial", "1", "--name", name, "--results-dir", str(tmp / "results"),
         "--storage-path", str(tmp / "ray"), *(["--reuse-actors"] if reuse else [])])
    t0 = time.time()
    with mock.patch.object(runner, "train_trial", sleeping_trial(seconds / epochs)):
        outcome = runner.main(args, scene_count.SPEC)
    meta = json.loads((outcome.run_dir / "study.json").read_text())
    assert outcome.status == "FINISHED", outcome
    ideal = meta["trial_seconds_total"] / meta["max_concurrent"]
    prep = sum((meta.get("preparation") or {}).values())
    # Where the overhead goes: until the first trial starts, and between a trial's end and the next start.
    spans = sorted((df["reported_at"].max() - df["time_total_s"].max(), df["reported_at"].max())
                   for df in ExperimentAnalysis(str(tmp / "ray" / "scene_count" / name)).trial_dataframes.values())
    at_once = meta["max_concurrent"]
    gaps = [start - max(e for _, e in spans[:i] if e <= start + 1e-3) for i, (start, _) in enumerate(spans)
            if i >= at_once and any(e <= start + 1e-3 for _, e in spans[:i])]
    return {"trial_seconds": seconds, "reuse_actors": reuse, "trials": n_trials, "at_once": at_once,
            "nodes": meta["provenance"]["ray_cluster"]["nodes"], "wall_s": round(meta["wall_seconds"], 1),
            "trial_s_total": round(meta["trial_seconds_total"], 1),
            "preparation_s": round(prep, 1),
            "overhead_pct": round(100 * ((meta["wall_seconds"] - prep) / ideal - 1), 1),
            "to_first_trial_s": round(spans[0][0] - t0, 1),
            "between_trials_s": round(sum(gaps) / len(gaps), 1) if gaps else None}


def measure(topology: str, sizes: dict[int, int], reuse: list[int], tmp: Path) -> list[dict[str, Any]]:
    """Start Ray as `topology` says (one node, or the simulated cluster), run every size, stop Ray."""
    from ray.cluster_utils import Cluster

    cluster = None
    try:
        if topology == "one node":
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, **ray_temp_dir(str(tmp)))
        else:
            # Its nodes listen on this machine's address: token authentication on, as every Ray we start.
            token_auth_on()
            # Cluster writes the head's address into Ray's default temp dir, which it does not create.
            os.makedirs(default_temp_dir(), exist_ok=True)
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": str(tmp),
                                                                    "include_dashboard": False})
            for _ in range(2):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False)
        rows = []
        runs = [(s, n, False) for s, n in sizes.items()] + [(s, n, True) for s, n in sizes.items() if s in reuse]
        for seconds, n, reused in runs:
            name = f"{topology[:3]}-{seconds}s" + ("-reuse" if reused else "")
            rows.append({"topology": topology, **run_study(tmp, name, seconds, n, reused)})
            print(f"# {rows[-1]}", flush=True)
        return rows
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m studies.bench_overhead", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_TRIALS),
                   help="trial lengths in seconds")
    p.add_argument("--trials", type=int, default=None, help="trials per size (default: 4 for each length)")
    p.add_argument("--topologies", nargs="+", choices=("node", "cluster"), default=["node", "cluster"])
    p.add_argument("--reuse", nargs="*", type=int, default=[10],
                   help="trial lengths to measure once more with --reuse-actors (a worker process per slot)")
    a = p.parse_args(argv)
    sizes = {s: a.trials or DEFAULT_TRIALS.get(s, 4) for s in a.sizes}
    # A study script imports torch and the library before its clock starts; do that here once, so the
    # first measurement is not the only one to pay for it.
    import salgl_core.data  # noqa: F401
    import salgl_core.model  # noqa: F401
    rows: list[dict[str, Any]] = []
    for topology in a.topologies:
        tmp = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # Ray's socket paths must stay short
        try:
            rows += measure("one node" if topology == "node" else "3-node cluster", sizes, a.reuse, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\n| topology | trial length | actors | trials | at once | wall (s) | preparation (s) | trial time (s) | "
          "overhead | to 1st trial (s) | between trials (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['topology']} | ~{r['trial_seconds']} s | {'reused' if r['reuse_actors'] else 'one per trial'} | "
              f"{r['trials']} | {r['at_once']} | {r['wall_s']} | {r['preparation_s']} | {r['trial_s_total']} | "
              f"{r['overhead_pct']}% | "
              f"{r['to_first_trial_s']} | {r['between_trials_s']} |")
    print(json.dumps({"study_overhead": rows}))
    return rows


if __name__ == "__main__":
    main()
