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

CPU kernel (`_CpuFastScores`, the same function and gradients, restructured for speed; on CUDA autograd's
own ops run, unchanged). Measured on one core (B 32, C 20, N 64, A 128, the synthetic study's shape),
these scores were about half of a cached-feature training step and a third of an evaluation forward:
- torch's float32 tanh on CPU costs ~2.5 ns an element, ten times its sigmoid, so the forward uses the
  identity tanh(z) = 2 sigmoid(2z) - 1 (exact in real arithmetic; in float32 at most ~2.4e-7 from
  torch.tanh, absolute, i.e. two ulps of 1);
- the backward writes no B x C x N x A temporary (autograd's writes four) and works one label at a time (each
  slice fits in cache): d/dz = g w (1 - t^2), grad u = sum_c dz v_c, grad v_c = sum_{b,n} dz u;
- without gradients (evaluation) the scores are computed a few images at a time, no B x C x N x A tensor at all.
Together ~4x fewer seconds for these scores (forward and backward), with results equal to autograd's
within float32 rounding (tests/test_attention.py compares both with the reference formulation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Above this many elements in tanh(u * v), chunk over labels (2^27 fp32 elements = 512 MiB).
_AUTO_CHUNK_ELEMENTS = 1 << 27


def _tanh_via_sigmoid_(z: torch.Tensor) -> torch.Tensor:
    """tanh(z) in place as 2 sigmoid(2z) - 1: the same function, four cheap passes instead of torch's slow CPU tanh
    (module docstring). Only for float32/float64: in half precision the final subtraction would lose the small
    values' relative precision."""
    return z.mul_(2).sigmoid_().mul_(2).sub_(1)


# CPU blocks: no-grad scores are computed this many elements of tanh(u * v) at a time (4 MB in float32), so that
# evaluation writes no B x C x N x A tensor: a fresh one of tens of MB costs as many page faults as its pages.
_CPU_BLOCK_ELEMENTS = 1 << 20


def _cpu_scores_no_grad(u: torch.Tensor, v: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """tanh(u_p * v_c) . w + c, a few images at a time (nothing to keep for a backward)."""
    B, N, A = u.shape
    out = torch.empty(B, v.shape[0], N, dtype=u.dtype)
    rows = max(1, _CPU_BLOCK_ELEMENTS // max(1, v.shape[0] * N * A))
    for s in range(0, B, rows):
        torch.matmul(_tanh_via_sigmoid_(u[s:s + rows].unsqueeze(1) * v.unsqueeze(1)), w, out=out[s:s + rows])
    return out.add_(c)


class _CpuFastScores(torch.autograd.Function):
    """tanh(u_p * v_c) . w + c on CPU with a hand-written backward (module docstring); saves t = tanh(.)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, u: torch.Tensor, v: torch.Tensor, w: torch.Tensor,
                c: torch.Tensor) -> torch.Tensor:
        t = _tanh_via_sigmoid_(u.unsqueeze(1) * v.unsqueeze(1))  # [B, Cc, N, A]
        ctx.save_for_backward(u, v, w, t)
        return t @ w + c

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,
                 g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, v, w, t = ctx.saved_tensors
        need_u, need_v, need_w, need_c = ctx.needs_input_grad
        gw = t.reshape(-1, t.shape[-1]).t() @ g.reshape(-1) if need_w else None
        gu = torch.zeros_like(u) if need_u else None
        gv = torch.empty_like(v) if need_v else None
        if need_u or need_v:
            neg_w, g4 = -w, g.unsqueeze(-1)
            # One label at a time: dz_k = g_k w (1 - t_k^2) is a [B, N, A] slice that stays in cache, and t is only
            # read (a retained graph can run backward again).
            for k in range(v.shape[0]):
                tk = t[:, k]
                dzk = torch.mul(tk, tk).sub_(1).mul_(g4[:, k]).mul_(neg_w)
                if need_u:
                    gu.addcmul_(dzk, v[k])
                if need_v:
                    torch.sum(dzk.mul_(u), dim=(0, 1), out=gv[k])
        return gu, gv, gw, g.sum() if need_c else None  # c is a 0-dim scalar


def _fast_scores(u: torch.Tensor, v: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    # u [B, N, A], v [Cc, A], w [A] -> scores [B, Cc, N].
    if u.device.type == "cpu" and u.dtype in (torch.float32, torch.float64) and u.dtype == v.dtype == w.dtype:
        if torch.is_grad_enabled() and any(x.requires_grad for x in (u, v, w, c)):
            return _CpuFastScores.apply(u, v, w, c)
        return _cpu_scores_no_grad(u, v, w, c)
    # tanh in place: the product is not needed by autograd (mul saves u and v), so only one B x Cc x N x A tensor
    # is kept for backward.
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
