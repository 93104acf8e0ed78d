"""What the Ray dashboard shows of a study's trials: readable names, live progress metrics, and where each
trial runs.

Tune runs every function trainable as an actor of class `ImplicitFunc`, so the dashboard lists every
trial alike. `named_trainable` gives the trials a class of their own, `SalglTrial`, whose repr says what
the trial is (`scene_count K=4 seed=1`): Ray records an actor's repr when the actor starts and shows it
as the actor's name (`repr_name` in ray.util.state) and in its tasks' names (`scene_count K=4
seed=1.train`). It is recorded once per actor, so trials reuse no actors unless asked (--reuse-actors).
The class is built with the (developer-API) helper Tune itself turns functions into trainables with
(studies/tuning/internals.py).

`publish` runs in the trial's worker after every epoch and sets Ray metrics (ray.util.metrics gauges),
which each node's metrics agent exports for Prometheus as `ray_salgl_trial_*`, tagged with the study,
run and trial name: the dashboard's Metrics page (Grafana) charts them. `placement` says where the
trial runs: node id and IP, and the GPU ids Ray gave it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray

from salgl_core.config import field_spec
from studies.design.spec import ARM
from studies.tuning.internals import trainable_class

TRAINABLE_CLASS = "SalglTrial"
# epoch metric -> (Ray metric name, description); Ray's exporter prefixes the names with `ray_`.
PROGRESS = {
    "epoch": ("salgl_trial_epoch", "epochs the trial has finished"),
    "epochs": ("salgl_trial_epochs", "epochs the trial runs in all"),
    "mAP": ("salgl_trial_map", "mAP (percent) of the epoch just finished"),
    "mAP_ema": ("salgl_trial_map_ema", "EMA model's mAP (percent) of the epoch just finished"),
    "images_per_second": ("salgl_trial_images_per_second", "training images per second in the last epoch"),
}
TAG_KEYS = ("study", "run", "trial")

_gauges: dict[str, Any] = {}


def trial_name(study: str, axis: str | None, config: dict[str, Any], trial_id: str | None = None) -> str:
    """`scene_count K=4 seed=1` for a one-axis ablation; `tune <trial id> seed=0` for a joint search."""
    parts = [study]
    if axis == ARM and ARM in config:  # a study of named arms: the arm's name says it
        parts.append(str(config[ARM]))
    elif axis and axis in config:
        parts.append(f"{field_spec(axis).symbol or axis}={config[axis]}")  # the usual symbol: K=4
    elif trial_id:
        parts.append(trial_id)
    if "seed" in config:
        parts.append(f"seed={config['seed']}")
    return " ".join(parts)


def named_trainable(fn: Callable[[dict[str, Any]], Any], study: str, axis: str | None, run: str,
                    per_trial: bool = True) -> type:
    """The function trainable `fn` (one `config` argument, as `tune.with_parameters` returns it) as a Tune
    trainable class named SalglTrial whose actors carry the trial's readable name; with `per_trial` off
    (actors reused by several trials) the study's: `scene_count <run> worker`."""

    def describe(actor: Any) -> str:
        return trial_name(study, axis, actor.config, actor.trial_id) if per_trial else f"{study} {run} worker"

    return trainable_class(fn, TRAINABLE_CLASS, describe)


def placement() -> dict[str, str]:
    """Where the calling Ray worker runs: node id and IP, and the GPU ids Ray assigned ('' for none)."""
    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids())}


def publish(tags: dict[str, str], metrics: dict[str, Any]) -> None:
    """Set the trial's progress gauges from one epoch's metrics (tags: study, run, trial)."""
    from ray.util.metrics import Gauge

    for key, (name, description) in PROGRESS.items():
        value = metrics.get(key)
        if value is None:
            continue
        if name not in _gauges:
            _gauges[name] = Gauge(name, description=description, tag_keys=TAG_KEYS)
        _gauges[name].set(float(value), tags=tags)
