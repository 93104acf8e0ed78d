"""Attention benchmark: the bilinear attention's forward+backward at COCO dimensions (C = 80 labels,
N = 196 tokens, D = 2048, rank 1024), reference vs exact fast path, and the whole SALGL-ResNet-101 train
step at 448 px (forward, backward, AdamW step), reference vs fast. Speedups are reference time / fast
time. Flags shrink every shape.

    python -m salgl_core.bench attention [--batch 32] [--step-batch 8] [--device cuda] [--amp bf16]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from salgl_core.attention import LowRankBilinearAttention
from salgl_core.config import BACKBONES, ModelConfig
from salgl_core.device import resolve_device
from salgl_core.losses import SALGLLoss
from salgl_core.model import build_model

SUMMARY = "bilinear attention and whole train step, reference vs fast"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    times.sort()
    return {"median_ms": 1000 * times[len(times) // 2], "min_ms": 1000 * times[0]}


def _peak_mb(device: torch.device, fn: Callable[[], None]) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def bench_attention(batch: int, device: torch.device, amp: str, warmup: int, repeats: int, labels: int = 80,
                    tokens: int = 196, dim: int = 2048, embed_dim: int = 768, rank: int = 1024) -> dict:
    C, N, D, E, A = labels, tokens, dim, embed_dim, rank
    torch.manual_seed(0)
    ref = LowRankBilinearAttention(D, E, A, fast=False).to(device)
    fast = LowRankBilinearAttention(D, E, A, fast=True).to(device)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(batch, N, D, device=device, requires_grad=True)
    e = torch.randn(C, E, device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def step(mod: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                feats, _ = mod(x, e)
            feats.float().sum().backward()
            mod.zero_grad(set_to_none=True)
            x.grad = None
        return run

    t_ref = _time(step(ref), device, warmup, repeats)
    t_fast = _time(step(fast), device, warmup, repeats)
    return {"attention_ref_ms": t_ref["median_ms"], "attention_fast_ms": t_fast["median_ms"],
            "attention_speedup": t_ref["median_ms"] / t_fast["median_ms"],
            "attention_ref_peak_mb": _peak_mb(device, step(ref)),
            "attention_fast_peak_mb": _peak_mb(device, step(fast)),
            "attention_shape": {"B": batch, "C": C, "N": N, "D": D, "E": E, "rank": A}}


def _train_step(model: torch.nn.Module, crit: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> Callable[[], None]:
    def run() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(x, y)
        loss, _ = crit(out.logits, out.scene_probs, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def bench_step(batch: int, device: torch.device, amp: str, warmup: int, repeats: int, labels: int = 80,
               image_size: int = 448, backbone: str = "resnet101", rank: int = 1024) -> dict:
    results = {}
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    y = (torch.rand(batch, labels, device=device) < 0.05).float()
    channels_last = device.type == "cuda"
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    for name, fast in (("ref", False), ("fast", True)):
        torch.manual_seed(0)
        cfg = ModelConfig(backbone=backbone, backbone_weights=None, fast_attention=fast, att_dim=rank)
        model = build_model(cfg, labels).to(device).train()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        crit = SALGLLoss(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)

        run = _train_step(model, crit, opt, x, y, device, dtype)
        t = _time(run, device, warmup, repeats)
        results[f"step_{name}_ms"] = t["median_ms"]
        results[f"step_{name}_peak_mb"] = _peak_mb(device, run)
        del model, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results["step_speedup"] = results["step_ref_ms"] / results["step_fast_ms"]
    results["step_shape"] = {"B": batch, "image_size": image_size, "backbone": backbone, "C": labels}
    return results


def _device_info(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, metavar="N", default=None,
                   help="attention batch (default: 32 on CUDA, 4 on CPU)")
    p.add_argument("--step-batch", type=int, metavar="N", default=None,
                   help="train-step batch (default: 32 on CUDA, 2 on CPU)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu or cuda[:N] (default: auto)")
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"),
                   help="autocast dtype (CUDA); none = float32 (default: none)")
    p.add_argument("--warmup", type=int, metavar="N", default=2, help="untimed iterations first (default: 2)")
    p.add_argument("--repeats", type=int, metavar="N", default=5, help="timed iterations, median reported (default: 5)")
    p.add_argument("--skip-step", action="store_true", help="only the attention benchmark")
    p.add_argument("--labels", type=int, metavar="N", default=80, help="C, labels (default: 80, COCO)")
    p.add_argument("--tokens", type=int, metavar="N", default=196,
                   help="N, image tokens of the attention (default: 196)")
    p.add_argument("--dim", type=int, metavar="N", default=2048, help="D, token width of the attention (default: 2048)")
    p.add_argument("--embed-dim", type=int, metavar="N", default=768,
                   help="E, label-embedding width (default: 768, BERT)")
    p.add_argument("--rank", type=int, metavar="N", default=1024, help="rank of the bilinear attention (default: 1024)")
    p.add_argument("--image-size", type=int, metavar="N", default=448, help="train-step image side (default: 448)")
    p.add_argument("--backbone", default="resnet101", choices=BACKBONES,
                   help="train-step backbone, random init (default: resnet101)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    out = {"benchmark": "attention", **_device_info(device),
           "dtype": args.amp if args.amp != "none" else "float32"}
    out.update(bench_attention(args.batch or (32 if cuda else 4), device, args.amp, args.warmup, args.repeats,
                               args.labels, args.tokens, args.dim, args.embed_dim, args.rank))
    if not args.skip_step:
        out.update(bench_step(args.step_batch or (32 if cuda else 2), device, args.amp, args.warmup, args.repeats,
                              args.labels, args.image_size, args.backbone, args.rank))
    return out
