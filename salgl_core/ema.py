"""Model-weight EMA, as the official training code (timm's ModelEma): every floating-point entry of the
state_dict is averaged, buffers included. That covers the co-occurrence counts (official
`comat_ema=True`) and BatchNorm statistics; integer buffers are copied.

The per-step decay (`step_decay`): UNOFF sets it to 0.82^(1 / iterations per epoch), so the EMA keeps 82% of
its weights per epoch; it hard-codes the iterations for each dataset at batch 128 (utils/util.py get_ema_co:
641 COCO, 39 VOC 2007, 980 NUS-WIDE). We keep the rule, not the constant: with TrainConfig.ema_epoch_retention
above 0 the decay is retention^(1 / len(train loader)), so a smaller batch or a subset keeps the same share
per epoch (the constant for 641 iterations left the EMA model of a 13-iteration run at its random
initialisation: 0.99969^13 = 0.996 per epoch). With retention 0 the constant TrainConfig.ema_decay is used
(official 0.9997).

Optional warm-up (ours; off by default, as the official code): the decay of update number t (0-based) is
min(decay, (1 + t) / (10 + t)), the `num_updates` rule of TensorFlow's ExponentialMovingAverage. Without it,
0.9997 with 13 steps an epoch leaves the EMA model at its initial weights for a whole short run
(0.9997^130 = 0.96). The update count is saved in `state_dict()` (as module extra state), so a resumed run
continues the same decay schedule.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def step_decay(ema_decay: float, epoch_retention: float, steps_per_epoch: int) -> float:
    """The per-step EMA decay: epoch_retention^(1 / steps_per_epoch) when epoch_retention > 0 (the EMA then keeps
    exactly that share per epoch), else the constant ema_decay (TrainConfig's two fields)."""
    if epoch_retention > 0:
        if steps_per_epoch < 1:
            raise ValueError(f"an epoch of {steps_per_epoch} steps has no per-step EMA decay")
        return epoch_retention ** (1.0 / steps_per_epoch)
    return ema_decay


def describe_step_decay(ema_decay: float, epoch_retention: float, steps_per_epoch: int) -> str:
    """One log line: the per-step decay a run uses and where it comes from."""
    decay = step_decay(ema_decay, epoch_retention, steps_per_epoch)
    if epoch_retention > 0:
        return (f"EMA: {epoch_retention:g} per epoch over {steps_per_epoch} iterations -> per-step decay {decay:.6f} "
                f"(ema_epoch_retention; ema_decay {ema_decay:g} unused)")
    return (f"EMA: constant per-step decay {decay:g} (ema_decay; keeps {decay ** steps_per_epoch:.3g} per epoch of "
            f"{steps_per_epoch} iterations)")


class ModelEMA(nn.Module):
    def __init__(self, model: nn.Module, decay: float, comat_ema: bool = True, warmup: bool = False) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.comat_ema = comat_ema
        self.warmup = warmup
        self.updates = 0  # number of update() calls so far

    def current_decay(self) -> float:
        """The decay the next update() uses."""
        if self.warmup:
            return min(self.decay, (1 + self.updates) / (10 + self.updates))
        return self.decay

    def _copied(self, name: str, t: torch.Tensor) -> bool:
        # Integers are copied; with comat_ema off the EMA model uses the live counts (the official
        # --no-comat-ema makes the EMA copy point at the live buffer).
        return not t.dtype.is_floating_point or (not self.comat_ema and name.endswith("cooccurrence.counts"))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        live = model.state_dict()
        avg, src = [], []
        for name, ema_v in self.module.state_dict().items():
            v = live[name].detach()
            if self._copied(name, ema_v):
                ema_v.copy_(v)
            else:
                avg.append(ema_v)
                src.append(v.to(ema_v.dtype))
        # One fused multi-tensor op instead of hundreds of small kernels per step.
        torch._foreach_lerp_(avg, src, 1.0 - decay)
        self.updates += 1

    def get_extra_state(self) -> dict[str, int]:
        return {"updates": self.updates}

    def set_extra_state(self, state: Any) -> None:
        self.updates = int(state["updates"])

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load `state_dict()` of a ModelEMA, or (checkpoints written before the update count was saved)
        the EMA model's own state_dict: then the count is unknown, which only matters with warm-up."""
        if not any(k.startswith("module.") for k in state_dict):
            if self.warmup:
                raise ValueError("this checkpoint's EMA state has no update count (it was written before EMA "
                                 "warm-up existed), so the warm-up schedule cannot be resumed exactly; resume "
                                 "with EMA warm-up off, as the run was started")
            self.updates = 0
            return self.module.load_state_dict(state_dict, strict=strict, assign=assign)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
