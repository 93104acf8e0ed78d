"""Per-scene label co-occurrence statistics and the image-specific adjacency built from them.

Official behaviour (SALGL.md 1.4-1.6): a buffer M [K, C, C] of counts, updated inside every training
forward *before* it is used (so the current batch already contributes), never in eval:
  hard: M[argmax s_n] += y_n y_n^T;     soft: M[k] += s_n[k] y_n y_n^T for every k.
In soft mode the gradient flows through the current batch's contribution only (the official code
detaches M at the start of each forward).

Ours, not the paper's: a momentum mu applied to every scene's counts once per training batch,
M_k <- mu * M_k + (this batch's counts for scene k). mu = 1 is the official running sum (default);
mu < 1 makes old statistics fade by exactly mu per batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class SceneCooccurrence(nn.Module):
    def __init__(self, num_scenes: int, num_classes: int, momentum: float = 1.0, soft: bool = False,
                 normalize: bool = False, ignore_self: bool = False) -> None:
        super().__init__()
        self.momentum = momentum
        self.soft = soft
        self.normalize = normalize
        self.ignore_self = ignore_self
        # A buffer, not a parameter: saved in state_dict, moved by .to(device), averaged by the EMA.
        self.register_buffer("counts", torch.zeros(num_scenes, num_classes, num_classes))

    def batch_counts(self, scene_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """This batch's counts per scene [K, C, C] (differentiable w.r.t. scene_probs in soft mode)."""
        y = targets.to(scene_probs.dtype)
        if self.soft:
            weights = scene_probs
        else:
            weights = F.one_hot(scene_probs.argmax(dim=1), scene_probs.shape[1]).to(y.dtype)
        # sum_n w[n,k] y[n,i] y[n,j] as one matmul: (w^T (y_i y_j)) without a [B, C, C] per-sample stack
        outer = (y.unsqueeze(2) * y.unsqueeze(1)).flatten(1)  # [B, C*C]
        return (weights.t() @ outer).view(-1, y.shape[1], y.shape[1])

    def update(self, scene_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Fold one training batch into the counts; return the counts to use in this forward."""
        new = self.momentum * self.counts.detach() + self.batch_counts(scene_probs, targets)
        self.counts = new.detach()
        return new

    def probabilities(self, counts: torch.Tensor | None = None) -> torch.Tensor:
        """P_k[i, j] = M_k[i, j] / M_k[i, i]: the estimate of P(label j | label i, scene k)."""
        m = self.counts if counts is None else counts
        p = m / (torch.diagonal(m, dim1=1, dim2=2).unsqueeze(-1) + 1e-8)
        if self.ignore_self:
            p = p * (1 - torch.eye(p.shape[-1], device=p.device, dtype=p.dtype))
        if self.normalize:
            p = p / (p.sum(dim=-1, keepdim=True) + 1e-8)
        return p

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> SceneCooccurrence:
        # The counts are statistics, not weights: model.half() or .to(torch.bfloat16) must not round them
        # (fp16 holds integers exactly only up to 2048, bf16 up to 256). They stay at least float32; device
        # moves and float64 apply as to any buffer.
        counts = self.counts
        super()._apply(fn, recurse)
        if self.counts.dtype in (torch.float16, torch.bfloat16):
            self.counts = counts.to(device=self.counts.device, dtype=torch.float32)
        return self

    def forward(self, scene_probs: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Image-specific adjacency [B, C, C] in the counts' dtype (float32, or float64 for a float64
        model); updates the counts first when training with targets."""
        # Counts must stay exact: under bf16 autocast the matmuls below would round them (a count of 301
        # becomes 300), while the official code adds fp32 outer products one by one. Everything here runs
        # in the counts' dtype, whatever the dtype of the scene probabilities (model dtype or autocast).
        with torch.autocast(scene_probs.device.type, enabled=False):
            s = scene_probs.to(self.counts.dtype)
            if self.training and targets is not None:
                counts = self.update(s, targets.to(self.counts.dtype))
            else:
                counts = self.counts
            p = self.probabilities(counts)
            if self.soft:
                return (s @ p.flatten(1)).view(-1, p.shape[1], p.shape[2])
            return p[s.argmax(dim=1)]
