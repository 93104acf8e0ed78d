"""Does a trial's training fit its share of a GPU? Checked before any trial starts, and before Ray when it can be.

Ray packs trials by GPU count, not memory: --gpus-per-trial 0.25 puts four trials on one card whatever each
needs, and a trial that runs out of memory is retried once, then marked ERROR. So the study estimates the GPU
memory of one trial (salgl_core.memory: one training step traced on fake tensors, seconds on a CPU) and compares
it with the trial's share of one GPU's memory (`gpu_share`: Ray puts floor(1 / g) trials of --gpus-per-trial g on
a card, so 0.4 is 1/2 of it and 0.6 all of it; a trial trains on one device, so a second GPU adds no memory).
One GPU's memory is, in this order: --gpu-memory-gb; the driver's own GPU when Ray runs here (not with --address /
RAY_ADDRESS, whose workers may have other cards); once Ray runs, the cluster's `accelerator_type:*` resources
through KNOWN_GPU_GB. Without any, one line gives the estimate and says packing was not checked. Studies whose
trials use no GPU (gpus_per_trial 0: CPU runs, the smoke path) skip all of it.

When: with --gpus-per-trial given and the card known from the driver, before Ray starts (`before_ray`); else as
soon as Ray has sized the trials (`after_ray`, runner.resources), still before the first trial.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from salgl_core.config import ExperimentConfig
from studies.design.spec import StudyError
from studies.tuning.plan import GridPlan, Plan, input_configs

if TYPE_CHECKING:  # salgl_core.memory imports torch: only when a study's trials use GPUs
    from salgl_core.memory import MemoryEstimate

GB = 10**9  # as salgl_core.memory.GB and the cards' data sheets
# Ray's accelerator_type of NVIDIA cards (ray.util.accelerators; the model from the NVML device name) -> the memory
# of one card in GB. Ray calls both A100s "A100" unless the node was started with the -40G / -80G label.
KNOWN_GPU_GB: dict[str, tuple[float, ...]] = {
    "A10G": (24,), "L4": (24,), "A100": (40, 80), "A100-40G": (40,), "A100-80G": (80,), "H100": (80,),
    "H200": (141,),
}
ESTIMATE_CMD = "python -m salgl_core.bench memory"


def _joins_cluster(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "address", None) or os.environ.get("RAY_ADDRESS"))


def driver_gpu(args: argparse.Namespace) -> tuple[tuple[float, ...], str] | None:
    """One GPU's memory in GB (one value, or the possible ones) and where it came from, as known before Ray: the
    flag, else this machine's first GPU when the study starts Ray here."""
    flag = getattr(args, "gpu_memory_gb", None)  # absent from runs started before the flag existed
    if flag is not None:
        if not flag > 0:
            raise StudyError(f"--gpu-memory-gb {flag:g} is invalid: expected the memory of one GPU in GB, e.g. 80")
        return (float(flag),), f"--gpu-memory-gb {flag:g}"
    if _joins_cluster(args):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return (props.total_memory / GB,), f"this machine's {props.name}"


def ray_gpu(nodes: list[dict[str, Any]]) -> tuple[tuple[float, ...], str] | str:
    """One GPU's memory from the GPU nodes' accelerator types (the smallest card, where trials may land), or why
    it is not known."""
    kinds = sorted({k.split(":", 1)[1] for n in nodes if n.get("Alive") and n.get("Resources", {}).get("GPU")
                    for k in n.get("Resources", {}) if k.startswith("accelerator_type:")})
    if not kinds:
        return "Ray reports no GPU type"
    unknown = [k for k in kinds if k not in KNOWN_GPU_GB]
    if unknown:
        return f"Ray reports GPU type {', '.join(unknown)}, whose memory this study does not know"
    smallest = min(kinds, key=lambda k: min(KNOWN_GPU_GB[k]))
    return KNOWN_GPU_GB[smallest], f"Ray's accelerator type {smallest}"


def _memory_key(cfg: ExperimentConfig) -> tuple:
    # What sets the shapes a trial trains: configs equal here need one trace.
    t, d = cfg.train, cfg.data
    return (repr(cfg.model), d.dataset, d.image_size, d.synthetic_classes, t.batch_size, t.amp, t.channels_last,
            t.feature_cache)


def memory_configs(plan: Plan) -> list[ExperimentConfig]:
    """The configs whose memory a plan's trials may need: its first point, every arm, every value of its axis (a
    batch or image size may be the axis). A joint search's sampled points are not known before it runs: its first
    point stands for them (studies/tune.py samples no batch or image size)."""
    configs = input_configs(plan)
    if isinstance(plan, GridPlan) and plan.arms is None:
        configs += [ExperimentConfig.from_flat({**plan.base, plan.axis: v}) for v in plan.values]
    return configs


def estimate(plan: Plan, classes: int) -> tuple[MemoryEstimate, ExperimentConfig]:
    """The largest estimate among the plan's configs (memory_configs; about 3 s each, the same ones once), and its
    config."""
    from salgl_core.memory import estimate_train_memory

    configs = {_memory_key(c): c for c in memory_configs(plan)}.values()
    return max(((estimate_train_memory(c, classes), c) for c in configs), key=lambda ec: ec[0].total)


def gpu_share(gpus_per_trial: float) -> float:
    """The part of one GPU's memory a trial of `gpus_per_trial` can count on: 1 / (the trials Ray puts on a card)."""
    if gpus_per_trial >= 1:
        return 1.0
    return 1.0 / math.floor(1.0 / gpus_per_trial + 1e-9)  # the epsilon: 1/3 written as 0.333 is three per card


def check(plan: Plan, classes: int, gpus_per_trial: float, card: tuple[tuple[float, ...], str]) -> str:
    """The line saying that a trial's estimate fits its share; StudyError in one line (with what to do) when it
    does not. `card`: one GPU's memory in GB (several values: either of those) and where that came from."""
    est, cfg = estimate(plan, classes)
    sizes, where = card
    share = gpu_share(gpus_per_trial)
    need = f"a trial needs about {est.total / GB:.1f} GB of GPU memory (estimate: {est.describe()})"
    if est.total <= share * min(sizes) * GB:
        return f"memory: {need}; its share, {_share(share, sizes, where)}, holds it"
    if est.total <= share * max(sizes) * GB:  # an A100 of 40 or 80 GB
        return (f"memory: {need}; its share, {_share(share, sizes, where)}, may not hold it: packing not checked "
                "(give --gpu-memory-gb)")
    raise StudyError(f"{need}, more than its share, {_share(share, sizes, where)}: "
                     f"{_advice(cfg, est, share, max(sizes), classes)} (`{ESTIMATE_CMD} --recipe {cfg.train.recipe} "
                     "--batch-size N` estimates other batch sizes)")


def _share(share: float, sizes: tuple[float, ...], where: str) -> str:
    card = " or ".join(f"{s:g}" for s in sizes)
    return f"{share:g} of one {card} GB GPU ({where}) = {' or '.join(f'{share * s:.1f}' for s in sizes)} GB"


def _advice(cfg: ExperimentConfig, est: MemoryEstimate, share: float, card_gb: float, classes: int) -> str:
    """What to do: fewer trials per GPU if one GPU holds a trial, a smaller batch, AMP."""
    from salgl_core.memory import largest_batch

    out = []
    per_gpu = math.floor(card_gb * GB / est.total)
    if per_gpu >= 1 and share < 1:
        out.append(f"raise --gpus-per-trial to {1 / per_gpu:.3g} ({per_gpu} trial{'s' if per_gpu > 1 else ''} "
                   "per GPU)")
    batch = largest_batch(cfg, share * card_gb * GB, classes, estimate=est)
    if batch >= 1:
        out.append(f"lower --batch-size to {batch} or less")
    if cfg.train.amp == "none":
        out.append("train with mixed precision (--set amp=bf16 or fp16)")
    if not out:
        return f"even batch 1 does not fit {share * card_gb:.1f} GB; use GPUs with more memory"
    return ", or ".join(out)


def before_ray(args: argparse.Namespace, plan: Plan, classes: int) -> None:
    """With --gpus-per-trial above 0 and the card known from the driver: check now (StudyError if it does not fit)."""
    g = args.gpus_per_trial
    if not g:  # not given (Ray decides: after_ray), or CPU trials
        return
    card = driver_gpu(args)
    if card is not None:
        _say(lambda: check(plan, classes, g, card))


def after_ray(args: argparse.Namespace, plan: Plan, classes: int, gpus_per_trial: float,
              nodes: list[dict[str, Any]]) -> None:
    """Once Ray has sized the trials: check if before_ray could not, with the card from the driver or from Ray."""
    if not gpus_per_trial:
        return
    card = driver_gpu(args)
    if args.gpus_per_trial and card is not None:
        return  # checked before Ray started
    found = card or ray_gpu(nodes)
    if not isinstance(found, str):
        _say(lambda: check(plan, classes, gpus_per_trial, found))
        return

    def unchecked() -> str:
        est, _ = estimate(plan, classes)
        return (f"memory: a trial needs about {est.total / GB:.1f} GB of GPU memory (estimate: {est.describe()}); "
                f"packing not checked: {found} (give --gpu-memory-gb)")

    _say(unchecked)


def _say(line: Callable[[], str]) -> None:
    """Print the line; an estimate that fails (a model the trace cannot run) must not stop the study: one line
    says so. A refusal (StudyError) goes on up."""
    try:
        text = line()
    except StudyError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        text = f"memory: the GPU memory estimate failed ({type(e).__name__}: {first}); packing not checked"
    print(text, flush=True)
