"""SALGL: Scene-Aware Label Graph Learning (Zhu et al., ICCV 2023), after the official `models/salgl.py`.

    image -> backbone -> tokens X [B, N, D] -> transformer encoder -> X'
    X' -> mean -> scene classifier (no bias) -> s = softmax            [B, K]   latent scenes
    (training) per-scene co-occurrence counts M_k += y y^T             see cooccurrence.py
    adjacency A_n = P_{argmax s_n} (hard) or sum_k s_n[k] P_k (soft)   [B, C, C]
    label features h0 = bilinear attention of label embeddings over X' [B, C, D]
    h_T = gated GNN(h0, A) for T steps; head tanh(W_o [h0; h_T]) -> per-class linear -> logits
With T = 0 there is no graph and no concatenation (W_o is D -> D).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from salgl_core.attention import LowRankBilinearAttention
from salgl_core.backbone import build_backbone
from salgl_core.config import ConfigError, ModelConfig
from salgl_core.cooccurrence import SceneCooccurrence
from salgl_core.embeddings import LabelEmbedding
from salgl_core.encoder import TokenEncoder
from salgl_core.gnn import GatedGNN


@dataclass
class SALGLOutput:
    logits: torch.Tensor  # [B, C]
    scene_logits: torch.Tensor  # [B, K]
    scene_probs: torch.Tensor  # [B, K]
    attention: torch.Tensor  # [B, C, N]
    adjacency: torch.Tensor  # [B, C, C]


class ElementWiseLinear(nn.Module):
    """One linear classifier per label on that label's own feature (official `Element_Wise_Layer`)."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(num_classes, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).sum(dim=-1) + self.bias


class SALGL(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int, dataset: str | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes = {num_classes} is invalid: a dataset needs at least one class")
        self.cfg = cfg
        self.num_classes = num_classes
        self.backbone, dim = build_backbone(cfg.backbone, cfg.backbone_weights)
        if cfg.enc_layers and dim % cfg.enc_heads:
            raise ConfigError(f"ModelConfig.enc_heads = {cfg.enc_heads} is invalid: it must divide the "
                              f"{cfg.backbone} feature width {dim}")
        self.feat_dim = dim
        self.encoder = TokenEncoder(dim, cfg.enc_layers, cfg.enc_heads, cfg.enc_ffn, cfg.enc_dropout,
                                    cfg.pos_encoding)
        self.scene_linear = nn.Linear(dim, cfg.num_scenes, bias=False)
        self.cooccurrence = SceneCooccurrence(cfg.num_scenes, num_classes, cfg.comat_momentum,
                                              cfg.soft_assignment, cfg.normalize_adjacency, cfg.ignore_self)
        self.label_embedding = LabelEmbedding(cfg.label_embedding, num_classes, cfg.label_embedding_dim or dim,
                                              dataset=dataset, class_names=class_names)
        self.attention = LowRankBilinearAttention(dim, self.label_embedding.dim, cfg.att_dim,
                                                  fast=cfg.fast_attention, chunk=cfg.attention_chunk)
        self.gnn = GatedGNN(dim, cfg.gnn_steps, cfg.outmess) if cfg.gnn_steps > 0 else None
        self.head = nn.Linear(2 * dim if self.gnn is not None else dim, dim)
        self.classifier = ElementWiseLinear(num_classes, dim)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.backbone(images)  # [B, D, h, w]
        x = fmap.flatten(2).transpose(1, 2)
        return self.encoder(x, tuple(fmap.shape[-2:]))

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> SALGLOutput:
        """targets (multi-hot [B, C]) are needed in training mode: they update the co-occurrence counts."""
        if self.training and targets is None:
            raise ValueError("SALGL.forward needs targets in training mode (they update the co-occurrence "
                             "counts); call model.eval() for inference")
        x = self.tokens(images)
        scene_logits = self.scene_linear(x.mean(dim=1))
        # At least float32 (fp16/bf16 models and autocast), float64 for a float64 model.
        scene_probs = torch.softmax(scene_logits, dim=-1,
                                    dtype=torch.promote_types(scene_logits.dtype, torch.float32))
        adjacency = self.cooccurrence(scene_probs, targets)
        h0, alpha = self.attention(x, self.label_embedding().to(x.dtype))
        if self.gnn is not None:
            hT = self.gnn(h0, adjacency.to(h0.dtype))
            h0 = torch.cat([h0, hT], dim=-1)
        logits = self.classifier(torch.tanh(self.head(h0)))
        return SALGLOutput(logits, scene_logits, scene_probs, alpha, adjacency)


def build_model(cfg: ModelConfig, num_classes: int, dataset: str | None = None,
                class_names: Sequence[str] | None = None) -> SALGL:
    """SALGL for `num_classes` labels. `dataset` resolves label_embedding 'bert' / 'glove' to the shipped
    vectors, and `class_names` (the dataset's class order) lets them be checked row by row."""
    return SALGL(cfg, num_classes, dataset, class_names)
