"""Model-weight EMA, as the official training code (timm's ModelEma): every floating-point entry of the
state_dict is averaged, buffers included. That covers the co-occurrence counts (official
`comat_ema=True`) and BatchNorm statistics; integer buffers are copied."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA(nn.Module):
    def __init__(self, model: nn.Module, decay: float, comat_ema: bool = True) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.comat_ema = comat_ema

    def _copied(self, name: str, t: torch.Tensor) -> bool:
        # Integers are copied; with comat_ema off the EMA model uses the live counts (the official
        # --no-comat-ema makes the EMA copy point at the live buffer).
        return not t.dtype.is_floating_point or (not self.comat_ema and name.endswith("cooccurrence.counts"))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
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
        torch._foreach_lerp_(avg, src, 1.0 - self.decay)
