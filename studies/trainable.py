"""The Ray trainable: one SALGL training run in a Ray worker, a report and a checkpoint per epoch.

This is all a worker imports of the studies (besides salgl_core), so it stays small. The trial runs in
its own working directory, so every path in its config is absolute (see studies.plan.base_config).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from salgl_core.config import ExperimentConfig
from studies.spec import METRIC


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
