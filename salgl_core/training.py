"""One epoch of training steps (SALGL.md section 2): AdamW, OneCycleLR stepped per iteration, the model EMA updated
after every step, ASL + the scene entropy terms, AMP on CUDA. salgl_core/engine.py runs it once per epoch.

Precision on CUDA: TF32 matmuls and convolutions whenever mixed precision is on (amp fp16 / bf16): autocast already
runs the big products in 16 bits, and TF32 only speeds up what it leaves in float32. amp none means float32 was
asked for, so TF32 stays off. Set once per fit (`set_tf32`), through the public torch.backends flags.

Host syncs per training step: none. A non-finite loss is recorded on the device (its first step and loss terms) and
checked every FINITE_CHECK_EVERY steps and at the end of the epoch, where DivergedError names the first bad step;
the loss sums stay on the device until the epoch ends. The optimizer is AdamW's fused kernel on CUDA and its
multi-tensor (foreach) form otherwise (`adamw_kernel`; `use_adamw_kernel` after a resume); with fp16 the fused kernel
takes GradScaler's scale and inf flag on the device, so dynamic loss scaling reads nothing back either (the foreach
form would: GradScaler checks the flag on the host before an unfused step).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader

from salgl_core.config import ExperimentConfig
from salgl_core.device import amp_dtype
from salgl_core.ema import ModelEMA
from salgl_core.losses import SALGLLoss
from salgl_core.model import SALGL
from salgl_core.predict import batch_scenes, to_device


class DivergedError(RuntimeError):
    """A loss became NaN or infinite; training cannot continue from here."""

    def __init__(self, epoch: int, step: int, losses: dict[str, float]) -> None:
        self.epoch, self.step, self.losses = epoch, step, losses
        super().__init__(f"training diverged at epoch {epoch}, step {step} (counted from the start of the run): "
                         f"non-finite loss {losses}; lower --lr or use --amp none")


def _autocast(device: torch.device, amp: str):
    dtype = amp_dtype(amp)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32,
                          enabled=device.type == "cuda" and dtype is not None)


def set_tf32(device: torch.device, amp: str) -> None:
    """Training's TF32 rule (module docstring): on CUDA, TF32 exactly when amp is fp16 or bf16; CPU untouched."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = amp != "none"


def adamw_kernel(params: Sequence[torch.Tensor]) -> dict[str, bool]:
    """AdamW's implementation flags: the fused kernel when every parameter is a floating-point CUDA tensor, else the
    multi-tensor foreach form (the same update as the default per-parameter loop, in fewer ops)."""
    fused = bool(params) and all(p.device.type == "cuda" and p.is_floating_point() for p in params)
    return {"fused": fused, "foreach": not fused}


def train_one_epoch(model: SALGL, ema: ModelEMA, criterion: SALGLLoss, loader: DataLoader,
                    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                    scaler: torch.amp.GradScaler, cfg: ExperimentConfig, device: torch.device, epoch: int,
                    progress: bool = False) -> dict[str, float]:
    model.train()
    channels_last = cfg.train.channels_last
    sums: dict[str, torch.Tensor] = {}
    images_seen, skipped, steps = 0, 0, 0
    finite = _FiniteWatch(device)
    start = time.perf_counter()
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)
    for step, batch in enumerate(it, start=1):
        skipped += int(batch.get("skipped", 0))
        if batch["images"].shape[0] == 0:
            continue
        images, targets = to_device(batch, device, channels_last)
        with _autocast(device, cfg.train.amp):
            out = model(images, targets, batch_scenes(batch, cfg.model, "train"))
        loss, terms = criterion(out.logits, out.scene_probs, targets)
        finite.record(loss, terms, step)
        if step % FINITE_CHECK_EVERY == 0:
            finite.check(epoch, (epoch - 1) * len(loader))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        ema.update(model)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v * images.shape[0]
        images_seen += images.shape[0]
        steps += 1
    finite.check(epoch, (epoch - 1) * len(loader))
    seconds = time.perf_counter() - start
    n = max(images_seen, 1)
    out_metrics = {k: float(v) / n for k, v in sums.items()}
    out_metrics.update(train_seconds=seconds, images_per_second=images_seen / max(seconds, 1e-9),
                       skipped_images=skipped, steps=steps)
    return out_metrics


# Training steps between two checks of the device-side finiteness flag (each check is one host sync).
FINITE_CHECK_EVERY = 50


class _FiniteWatch:
    """Records the first step whose loss is not finite, on the device (no host sync per step); check() raises
    DivergedError for it."""

    def __init__(self, device: torch.device) -> None:
        self.first = torch.zeros((), dtype=torch.long, device=device)  # 0 = every loss so far finite
        self.terms: torch.Tensor | None = None  # the loss terms of that step
        self.names: list[str] = []

    def record(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], step: int) -> None:
        new = ~torch.isfinite(loss.detach()) & (self.first == 0)
        values = torch.stack([v.float() for v in terms.values()])
        if self.terms is None:
            self.names, self.terms = list(terms), torch.zeros_like(values)
        self.first = torch.where(new, step, self.first)
        self.terms = torch.where(new, values, self.terms)

    def check(self, epoch: int, steps_before: int) -> None:
        first = int(self.first)
        if first:
            raise DivergedError(epoch, steps_before + first, dict(zip(self.names, self.terms.tolist(), strict=True)))


def use_adamw_kernel(optimizer: torch.optim.Optimizer) -> None:
    """After load_state_dict: AdamW's kernel of this machine (adamw_kernel), not the one of the run that saved it. The
    fused kernel wants each step count as a float32 tensor on its parameter's device, where a foreach (CPU) checkpoint
    left it on the CPU; torch's load_state_dict placed it by the saved flags."""
    for group in optimizer.param_groups:
        group.update(adamw_kernel(group["params"]))
        if group["fused"]:
            for p in group["params"]:
                state = optimizer.state.get(p, {})
                if "step" in state:
                    state["step"] = state["step"].to(p.device, torch.float32)
