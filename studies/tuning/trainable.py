"""The Ray trainable: one SALGL training run in a Ray worker, a report per epoch (with a checkpoint every
checkpoint_every epochs) and a final report with one.

This is all a worker imports of the studies (besides salgl_core), so it stays small. The trial runs in
its own working directory, so every path in its config is absolute (see studies.tuning.plan.base_config).
What the driver cannot know is settled here, from the trial's own share of the node: the data-loader workers
of num_workers auto and the torch threads (from the trial's CPUs), and a cuda:N device (the trial sees only its
own GPUs).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from salgl_core.config import ExperimentConfig
from studies.design.spec import METRIC, arm_config
from studies.exports.predictions import write_transfer
from studies.tuning.monitor import placement, publish, trial_name


def _epoch_metrics(m: dict[str, Any]) -> dict[str, Any]:
    # Lists stay out of Ray's result logs; scene usage goes to scenes/<trial>.json at the end.
    return {k: v for k, v in m.items() if not isinstance(v, list)}


def train_trial(config: dict[str, Any], base_config: dict[str, Any], threads: int = 1,
                monitor: dict[str, Any] | None = None, arms: dict[str, dict[str, Any]] | None = None) -> None:
    """Ray trainable: one SALGL training run; a report per epoch (with a checkpoint on checkpoint_every's epochs
    before the last), then a final report with one.
    `config` holds what the searcher chose (axis value, seed, ...); `base_config` everything else;
    `monitor` ({study, run, axis}) names the trial in the Ray metrics it publishes (studies.tuning.monitor);
    `arms` ({arm: overrides}, a study of named arms) turns the chosen arm into config fields.
    Every report says where the trial runs (node id and IP, GPU ids): a retry may run elsewhere."""
    import torch

    where = placement()
    # `threads` is the trial's CPU request (--cpus-per-trial, at least 1), what Ray reserved for it.
    cfg, torch_threads, notes = settle_trial({**base_config, **arm_config(config, arms)}, max(1, threads),
                                             [i for i in where["gpu_ids"].split(",") if i])
    for line in notes:
        print(line, flush=True)
    torch.set_num_threads(torch_threads)
    trial_id = tune.get_context().get_trial_id()
    tags = None if monitor is None else {"study": monitor["study"], "run": monitor["run"],
                                         "trial": trial_name(monitor["study"], monitor.get("axis"), config, trial_id)}
    # The engine's files go to the trial's working directory, which Ray never syncs (the trial folder
    # itself is copied to storage with every experiment snapshot); the checkpoint reaches storage through
    # `tune.report` below, so the folder is deleted at the end.
    out = Path.cwd().resolve() / f"fit-{trial_id}"
    out.mkdir(parents=True, exist_ok=True)
    try:
        _train(cfg, out, where, tags)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def settle_trial(flat: dict[str, Any], cpus: int, gpu_ids: list[str]) -> tuple[ExperimentConfig, int, list[str]]:
    """What the driver cannot know, settled from the trial's own share of its node (`cpus` CPUs, the GPUs `gpu_ids`):
    the trial's config, num_workers auto resolved from `cpus` (min(8, cpus - 1): salgl_core.data.resolve_num_workers)
    and a cuda:N device mapped (trial_device); torch's threads, the CPUs the loader's workers leave (at least 1:
    workers + threads = cpus, so the trial never oversubscribes its share); the lines to log. An explicit
    num_workers stays as it is."""
    from salgl_core.data import resolve_num_workers
    from salgl_core.engine import loader_workers

    flat = {**flat, "num_workers": resolve_num_workers(flat["num_workers"], cpus)}
    flat["device"], note = trial_device(flat["device"], gpu_ids)
    cfg = ExperimentConfig.from_flat(flat)
    return cfg, max(1, cpus - loader_workers(cfg, cpus)), [note] if note else []


def trial_device(name: str, gpu_ids: list[str]) -> tuple[str, str | None]:
    """The device a trial trains on for TrainConfig.device `name`, the trial having the GPUs `gpu_ids` (Ray's ids;
    the process sees only those, renumbered from cuda:0), and a log line when that changes it. cuda:N names a GPU
    of the node, an ordinal the trial may not have: it becomes 'cuda', the trial's first GPU. Without GPUs (and
    for auto, cpu, cuda) `name` stays as it is."""
    if not name.startswith("cuda:") or not gpu_ids:
        return name, None
    return "cuda", (f"device {name} -> cuda: a trial sees only the GPU(s) Ray gave it (node GPU "
                    f"{', '.join(gpu_ids)}, numbered from cuda:0 inside the trial); it trains on the first")


def _train(cfg: ExperimentConfig, out: Path, where: dict[str, str], tags: dict[str, str] | None) -> None:
    from salgl_core.checkpoint import checkpoint_due
    from salgl_core.engine import CHECKPOINT, DivergedError, fit

    resume = False
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            shutil.copy2(Path(d) / CHECKPOINT, out / CHECKPOINT)
        resume = True
    started = time.time()
    last: dict[str, Any] = {}
    t = cfg.train

    def on_epoch(m: dict[str, Any]) -> None:
        last.clear()
        last.update(_epoch_metrics(m), **where, trial_started=started, reported_at=time.time())
        if tags is not None:
            publish(tags, last)
        # On checkpoint_every's epochs the engine has just written checkpoint.pt (atomically). The last epoch's is
        # left to the final report, sent right after with the same file: one copy to storage instead of two.
        if checkpoint_due(m["epoch"], t.epochs, t.checkpoint_every) and m["epoch"] < t.epochs:
            _report_with_checkpoint(out / CHECKPOINT, dict(last))
        else:
            tune.report(dict(last))

    try:
        res = fit(cfg, out, on_epoch=on_epoch, resume=resume, save_best=False)
    except DivergedError as e:
        # Deterministic, so no retry: report it as the trial's outcome. The searcher sees the worst score.
        tune.report({**last, METRIC: 0.0, "final": True, "trial_status": "DIVERGED", "error": str(e),
                     **where, "trial_started": started, "reported_at": time.time()})
    else:
        final = _epoch_metrics(res.epochs[-1]) if res.epochs else {}
        # The final report's checkpoint also carries the reported model's validation predictions, the way
        # they reach the driver from any node (studies.exports.predictions); checkpoint.pt stays in it, so a retry of
        # a trial that had finished resumes after its last epoch.
        _report_with_checkpoint(out / CHECKPOINT, {
            **final, "final": True, "trial_status": "FINISHED", "error": "", **where, "trial_started": started,
            "reported_at": time.time(), "scene_report": json.dumps(res.scene_report)}, res.predictions)


def _report_with_checkpoint(checkpoint: Path, metrics: dict[str, Any],
                            predictions: dict[str, Any] | None = None) -> None:
    """tune.report with a Tune checkpoint of `checkpoint` (and the predictions' transfer file). Ray copies the
    folder to the experiment folder before `report` returns; a hard link avoids a second copy of a large file."""
    with tempfile.TemporaryDirectory(dir=checkpoint.parent) as tmp:
        try:
            os.link(checkpoint, Path(tmp) / checkpoint.name)
        except OSError:
            shutil.copy2(checkpoint, Path(tmp) / checkpoint.name)
        if predictions is not None:
            write_transfer(tmp, predictions)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
