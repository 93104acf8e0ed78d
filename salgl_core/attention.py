"""Low-rank bilinear attention of labels over image tokens (official `LowRankBilinearAttention`).

    u_p = W1 x_p,  v_c = W2 e_c                                  (no bias, both att_dim wide)
    e_{c,p} = w_t^T (W_h tanh(u_p * v_c) + b_h) + b_t              (the reference formulation)
    alpha_{c,.} = softmax over the N positions;   h_c = sum_p alpha_{c,p} x_p

Exact fast path. Nothing non-linear sits between `hidden_linear` (W_h, b_h) and `target_linear`
(w_t, b_t), so

    e_{c,p} = tanh(u_p * v_c) . (W_h^T w_t) + (w_t . b_h + b_t)

The vector W_h^T w_t and the scalar are computed once per forward from the same parameters; the
att_dim x att_dim product over all B x C x N positions (at COCO scale about half the backbone's
multiply-adds) disappears, and gradients reach W_h, b_h, w_t, b_t through the two small products.

Memory. The only B x C x N x att_dim tensor the math needs is tanh(u * v). When it would be large,
labels are processed in chunks under activation checkpointing, so at most one chunk of it is alive
(forward and backward); the chunk's tanh is recomputed in backward, which is elementwise and cheap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Above this many elements in tanh(u * v), chunk over labels (2^27 fp32 elements = 512 MiB).
_AUTO_CHUNK_ELEMENTS = 1 << 27


def _fast_scores(u: torch.Tensor, v: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    # u [B, N, A], v [Cc, A], w [A] -> scores [B, Cc, N]. tanh in place: the product is not needed by
    # autograd (mul saves u and v), so only one B x Cc x N x A tensor is kept for backward.
    return (u.unsqueeze(1) * v.unsqueeze(1)).tanh_() @ w + c


class LowRankBilinearAttention(nn.Module):
    def __init__(self, feat_dim: int, embed_dim: int, att_dim: int = 1024, fast: bool = True,
                 chunk: int = 0) -> None:
        super().__init__()
        self.linear1 = nn.Linear(feat_dim, att_dim, bias=False)
        self.linear2 = nn.Linear(embed_dim, att_dim, bias=False)
        self.hidden_linear = nn.Linear(att_dim, att_dim)
        self.target_linear = nn.Linear(att_dim, 1)
        self.fast = fast
        self.chunk = chunk  # labels per chunk; 0 = automatic

    def reference_scores(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The official formulation (the oracle the fast path is tested against)."""
        z = torch.tanh(u.unsqueeze(1) * v.unsqueeze(1))  # [B, C, N, A]
        return self.target_linear(self.hidden_linear(z)).squeeze(-1)

    def fast_scores(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        w_t = self.target_linear.weight.squeeze(0)  # [A]
        w = self.hidden_linear.weight.t() @ w_t  # W_h^T w_t, [A]
        c = (self.hidden_linear.bias * w_t).sum() + self.target_linear.bias[0]
        w, c = w.to(u.dtype), c.to(u.dtype)
        B, N, A = u.shape
        C = v.shape[0]
        chunk = self.chunk or max(1, _AUTO_CHUNK_ELEMENTS // max(1, B * N * A))
        if chunk >= C:
            return _fast_scores(u, v, w, c)
        parts = []
        for start in range(0, C, chunk):
            vc = v[start:start + chunk]
            if torch.is_grad_enabled() and (u.requires_grad or vc.requires_grad or w.requires_grad):
                parts.append(checkpoint(_fast_scores, u, vc, w, c, use_reentrant=False))
            else:
                parts.append(_fast_scores(u, vc, w, c))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: tokens [B, N, D]; emb: label embeddings [C, E]. Returns (label features [B, C, D],
        attention weights [B, C, N])."""
        u = self.linear1(x)
        v = self.linear2(emb)
        scores = self.fast_scores(u, v) if self.fast else self.reference_scores(u, v)
        alpha = F.softmax(scores, dim=-1)
        return alpha @ x, alpha
