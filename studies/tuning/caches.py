"""A real-data study's feature cache: built once, in a Ray task after Ray starts and before the trials.

With `feature_cache` the frozen backbone's tokens of every image are computed once (salgl_core/features.py) and
every trial trains on them. On synthetic data that takes seconds and the driver does it (plan.check_inputs). On
real data it is the whole dataset through the backbone (COCO 2014: 123,287 images through ResNet-101): minutes on
a GPU, hours on the CPU head node a study's driver often runs on. So `build_in_ray` runs it as one Ray task that
asks for one GPU when the cluster has GPUs (a CPU task with one node's CPUs otherwise), once Ray runs and the
storage path has been checked, before the Tuner starts; the driver has only checked the cache's size
(plan.check_inputs, before Ray starts). Each trial's fit() then finds the cache by its key (features.feature_key);
a trial that does not (see below) builds its own, as without this module.

Where: `<storage-path>/feature-caches/` when --storage-path is a folder, which on a multi-node cluster is one every
node mounts at the same path (studies.tuning.storage checks that before the task runs): the task on one node writes
the cache that every node's trials read. The trials get it as `cache_dir` (the export, a machine-local folder,
leaves it out). With a URI storage path (s3://...) nothing can memory-map the cache there: it stays where
features.py puts it by default ($SALGL_CACHE, else <repo>/.cache/synthetic) on the task's node, and trials on other
nodes build their own. A --cache-dir given on the command line is kept. Synthetic data keeps its cache beside the
generated images, built by the driver. The folder outlives the run: every study of the same images, backbone,
weights, size and dtype reuses it (delete it by hand; `make clean` only reaches the default storage path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from salgl_core.config import ConfigError, ExperimentConfig
from studies.tuning.storage import is_uri, storage_root

# Under the storage path, beside <study>/<run> folders: a name no study has (study names are identifiers).
CACHE_FOLDER = "feature-caches"


def built_in_task(flat: dict[str, Any]) -> bool:
    """Whether a study of this flat config builds its feature cache in a Ray task: real data with feature_cache."""
    return bool(flat["feature_cache"]) and flat["dataset"] != "synthetic"


def with_storage_cache(flat: dict[str, Any], storage_path: str | Path | None) -> dict[str, Any]:
    """`flat` with cache_dir <storage-path>/feature-caches when the Ray task builds its cache, the storage path is
    a folder and no cache_dir was given; else `flat` unchanged."""
    if not built_in_task(flat) or flat["cache_dir"] is not None:
        return flat
    root = storage_root(storage_path)
    return flat if is_uri(root) else {**flat, "cache_dir": str(Path(root) / CACHE_FOLDER)}


def _build(flats: list[dict[str, Any]], threads: int) -> list[dict[str, Any]]:
    """The Ray task: every config's two caches built (or found) on this worker's device; what was done."""
    import torch

    from salgl_core.device import resolve_device
    from salgl_core.features import build_feature_cache

    if threads:
        torch.set_num_threads(threads)
    done = []
    for flat in flats:
        cfg = ExperimentConfig.from_flat(flat)
        device = str(resolve_device(cfg.train.device))
        for split, c in build_feature_cache(cfg, log=None).items():
            done.append({"split": split, "root": str(c.root), "shape": list(c.shape), "built": c.built,
                         "seconds": round(c.seconds, 1), "device": device, "dtype": cfg.train.feature_cache_dtype})
    return done


def build_in_ray(configs: Sequence[ExperimentConfig], cluster: dict[str, Any], explicit_device: bool,
                 log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Build the caches of those `configs` that need the task (built_in_task) in one Ray task: one GPU when the
    cluster has any (unless --set device chose the CPU), else the CPUs of its largest node, which no trial uses
    yet. Returns what the task did per split (nothing when no config needs it). A user's mistake (a corrupt
    image, a token beyond float16) comes back as its own ConfigError / DataError, in one line."""
    flats: list[dict[str, Any]] = []
    for cfg in configs:
        flat = cfg.to_flat()
        if built_in_task(flat) and flat not in flats:
            flats.append(flat)
    if not flats:
        return []
    import ray

    from salgl_core.data import DataError

    # The trials' device follows their resources; the task's follows the cluster's (--set device=... is kept).
    gpu = cluster.get("gpus", 0) >= 1 and (not explicit_device or flats[0]["device"] != "cpu")
    if not explicit_device:
        flats = [{**f, "device": "cuda" if gpu else "cpu"} for f in flats]
    node_cpus = max(int(n.get("Resources", {}).get("CPU", 1)) for n in ray.nodes() if n.get("Alive"))
    resources = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": max(1, node_cpus)}
    where = "a Ray task on 1 GPU" if gpu else f"a Ray task on {max(1, node_cpus)} CPU(s)"
    log(f"feature cache: the backbone's tokens of every image, once, in {where}")
    task = ray.remote(max_retries=0, **resources)(_build)
    try:
        done = ray.get(task.remote(flats, 0 if gpu else max(1, node_cpus)))
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, (ConfigError, DataError)):
            raise type(e.cause)(str(e.cause)) from None
        raise
    for d in done:
        what = f"built in {d['seconds']:g} s on {d['device']}" if d["built"] else "found (reused)"
        log(f"feature cache: {d['split']} {'x'.join(map(str, d['shape']))} {d['dtype']} {what}: {d['root']}")
    return done
