"""Transformer encoder over image tokens, with the optional DETR-style 2D sine positional encoding
added to queries and keys only (official default: off)."""

from __future__ import annotations

import math

import torch
from torch import nn


def sine_position_encoding(h: int, w: int, dim: int, device: torch.device | None = None,
                           temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised 2D sine encoding, dim/2 features per axis. Returns [h*w, dim]."""
    npf = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, h + 1, device=device, dtype=torch.float32).view(h, 1).expand(h, w)
    x = torch.arange(1, w + 1, device=device, dtype=torch.float32).view(1, w).expand(h, w)
    y = y / (h + eps) * scale
    x = x / (w + eps) * scale
    dim_t = temperature ** (2 * (torch.arange(npf, device=device, dtype=torch.float32) // 2) / npf)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=3).flatten(2)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=3).flatten(2)
    return torch.cat((py, px), dim=2).flatten(0, 1)


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (ReLU FFN), positions added to Q and K only."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        qk = x if pos is None else x + pos
        x = self.norm1(x + self.drop1(self.attn(qk, qk, x, need_weights=False)[0]))
        return self.norm2(x + self.drop2(self.ffn(x)))


class TokenEncoder(nn.Module):
    def __init__(self, dim: int, layers: int, heads: int, ffn: int, dropout: float, pos: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn, dropout) for _ in range(layers))
        self.pos = pos

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        pos = sine_position_encoding(*hw, x.shape[-1], x.device).to(x.dtype) if self.pos else None
        for layer in self.layers:
            x = layer(x, pos)
        return x
