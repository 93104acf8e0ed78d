"""Memory benchmark: the GPU memory one training trial of a recipe needs, estimated on any machine, no GPU needed.

One training step of the recipe's model is traced on fake tensors (salgl_core/memory.py: shapes only, no compute,
no memory) while every live tensor is counted; a margin for the CUDA context, cuDNN workspaces and fragmentation
is added. With --gpu-memory-gb it also says whether that fits one such GPU, and the largest batch that does.

    python -m salgl_core.bench memory [--recipe paper-coco-r101-448] [--batch-size N] [--image-size S]
                                      [--amp none|bf16|fp16] [--gpu-memory-gb 24]
"""

from __future__ import annotations

import argparse
from typing import Any

from salgl_core.config import ExperimentConfig
from salgl_core.memory import GB, MARGIN_BYTES, MARGIN_SHARE, estimate_train_memory, largest_batch
from salgl_core.presets import RECIPES, recipe_config

SUMMARY = "GPU memory of one training trial of a recipe (weights, gradients, AdamW, EMA, activations), traced on CPU"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="paper-coco-r101-448", choices=list(RECIPES),
                   help="the recipe whose training is estimated (default: paper-coco-r101-448)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N", help="default: the recipe's")
    p.add_argument("--image-size", type=int, default=None, metavar="S", help="default: the recipe's")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default=None, help="default: the recipe's")
    p.add_argument("--gpu-memory-gb", type=float, default=None, metavar="X",
                   help="the memory of one GPU in GB (10^9 bytes): say whether the estimate fits it, and the "
                        "largest batch that does (a few more traces)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    flat = recipe_config(args.recipe)
    for name in ("batch_size", "image_size", "amp"):
        if getattr(args, name) is not None:
            flat[name] = getattr(args, name)
    cfg = ExperimentConfig.from_flat(flat)
    est = estimate_train_memory(cfg)
    out: dict[str, Any] = {
        "benchmark": "memory", "recipe": args.recipe, "backbone": est.backbone, "image_size": est.image_size,
        "batch_size": est.batch_size, "amp": est.amp, **est.gb(), "trace_seconds": est.trace_seconds,
        "method": "one steady-state training step traced on fake tensors (CPU autocast at the recipe's dtype), live "
                  f"storages counted; margin = {MARGIN_BYTES / GB:g} GB + {MARGIN_SHARE:.0%} of the traced peak",
    }
    if args.gpu_memory_gb is not None:
        budget = args.gpu_memory_gb * GB
        out.update(gpu_memory_gb=args.gpu_memory_gb, fits=est.total <= budget,
                   largest_batch_size=largest_batch(cfg, budget, estimate=est))
    return out
