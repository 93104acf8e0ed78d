"""SALGL's training objective: ASL (or BCE) + sample-level and batch-level scene entropy terms.

ASL is the official `AsymmetricLossOptimized` (gamma- 2, gamma+ 0, clip 0, eps 1e-5): the focusing
weight is computed without gradient, and the reduction is -sum / B / C * 1000 (per-element mean x 1000).
BCE is the official option as written: a plain per-element mean, no x1000.
  L_s = mean_n H(s_n)                  pushes each image towards one confident scene
  L_b = 100 * (log K - H(mean_n s_n))  pushes scene usage towards uniform (prevents collapse)
  L   = cls + w_s L_s + w_b L_b
With scene_source 'oracle' or 'random' the scenes are given one-hots, not learned: L = cls, and both
entropy terms are reported as 0 (they are not part of the objective).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from salgl_core.config import ModelConfig


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """H(p) = -sum p log(p + 1e-7), the official form (the 1e-7 keeps log finite at p = 0)."""
    return -(p * torch.log(p + 1e-7)).sum(dim=dim)


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, gamma_neg: float = 2.0,
                    gamma_pos: float = 0.0, clip: float = 0.0, eps: float = 1e-5,
                    scale: float = 1000.0) -> torch.Tensor:
    x, y = logits.float(), targets.float()
    xs_pos = torch.sigmoid(x)
    xs_neg = 1.0 - xs_pos
    if clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    loss = y * torch.log(xs_pos.clamp(min=eps)) + (1 - y) * torch.log(xs_neg.clamp(min=eps))
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.no_grad():
            pt = xs_pos * y + xs_neg * (1 - y)
            w = torch.pow(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
        loss = loss * w
    return -loss.sum() / x.shape[0] / x.shape[1] * scale


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="mean")


class SALGLLoss(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.max_entropy = math.log(cfg.num_scenes)  # a float, so no device to manage
        self.scene_terms = cfg.scene_source == "learned"

    def forward(self, logits: torch.Tensor, scene_probs: torch.Tensor,
                targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.cfg
        if c.loss == "asl":
            cls = asymmetric_loss(logits, targets, c.asl_gamma_neg, c.asl_gamma_pos, c.asl_clip, c.asl_eps,
                                  c.loss_scale)
        else:
            cls = bce_loss(logits, targets)
        if self.scene_terms:
            s = scene_probs.float()
            sample = entropy(s).mean()
            batch = c.batch_entropy_scale * (self.max_entropy - entropy(s.mean(dim=0)))
            total = cls + c.sample_entropy_weight * sample + c.batch_entropy_weight * batch
        else:
            sample = batch = torch.zeros((), device=cls.device)
            total = cls
        return total, {"loss_total": total.detach(), "loss_cls": cls.detach(),
                       "loss_sample_entropy": sample.detach(), "loss_batch_entropy": batch.detach()}
