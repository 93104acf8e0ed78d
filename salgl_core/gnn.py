"""Gated graph neural network over label nodes (official `GatedGNN`), parameters shared across steps."""

from __future__ import annotations

import torch
from torch import nn


class GatedGNN(nn.Module):
    def __init__(self, dim: int, steps: int = 3, outmess: bool = False) -> None:
        super().__init__()
        self.steps = steps
        self.outmess = outmess
        mdim = 2 * dim if outmess else dim
        self.W_z, self.U_z = nn.Linear(mdim, dim), nn.Linear(dim, dim)
        self.W_r, self.U_r = nn.Linear(mdim, dim), nn.Linear(dim, dim)
        self.W_h, self.U_h = nn.Linear(mdim, dim), nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """h: node states [B, C, D]; adj: [B, C, C] with adj[i, j] ~ P(j | i)."""
        for _ in range(self.steps):
            a_in = adj @ h
            m = torch.cat([a_in, adj.transpose(1, 2) @ h], dim=-1) if self.outmess else a_in
            z = torch.sigmoid(self.W_z(m) + self.U_z(h))
            r = torch.sigmoid(self.W_r(m) + self.U_r(h))
            h_hat = torch.tanh(self.W_h(m) + self.U_h(r * h))
            h = (1 - z) * h + z * h_hat
        return h
