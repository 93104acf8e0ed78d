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

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        live = model.state_dict()
        for name, ema_v in self.module.state_dict().items():
            v = live[name].detach()
            if ema_v.dtype.is_floating_point and not (not self.comat_ema and name.endswith("cooccurrence.counts")):
                ema_v.lerp_(v.to(ema_v.dtype), 1.0 - self.decay)
            else:
                # Integers are copied; with comat_ema off the EMA model uses the live counts (official
                # --no-comat-ema makes the EMA copy point at the live buffer).
                ema_v.copy_(v)
