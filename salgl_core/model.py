"""SALGL: Scene-Aware Label Graph Learning (Zhu et al., ICCV 2023), after the official `models/salgl.py`.

    image -> backbone -> tokens X [B, N, D] -> transformer encoder -> X'
    X' -> mean -> scene classifier (no bias) -> s = softmax            [B, K]   latent scenes
    (training) per-scene co-occurrence counts M_k += y y^T             see cooccurrence.py
    adjacency A_n = P_{argmax s_n} (hard) or sum_k s_n[k] P_k (soft)   [B, C, C]
    label features h0 = bilinear attention of label embeddings over X' [B, C, D]
    h_T = gated GNN(h0, A) for T steps; head tanh(W_o [h0; h_T]) -> per-class linear -> logits
With T = 0 there is no graph and no concatenation (W_o is D -> D).

Scene source (ModelConfig.scene_source; ours, controls for the scene mechanism): `learned` is SALGL's
classifier above. `oracle` and `random` are given one scene id per image (the true one, or a fixed
random one from `random_scenes`) and use its one-hot as s: no scene classifier is built, so there is
no unused parameter, and the loss adds no entropy terms (losses.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
    scene_logits: torch.Tensor | None  # [B, K]; None when the scenes are given (scene_source oracle / random)
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
        if cfg.freeze_backbone:
            self.backbone.requires_grad_(False)
        # Set by salgl_core.features for cached-feature trials: forward() then takes the frozen backbone's
        # output [B, D, h, w] in place of images (the backbone stays in the model, so checkpoints load as usual).
        self.takes_features = False
        if cfg.enc_layers and dim % cfg.enc_heads:
            raise ConfigError(f"ModelConfig.enc_heads = {cfg.enc_heads} is invalid: it must divide the "
                              f"{cfg.backbone} feature width {dim}")
        self.feat_dim = dim
        self.encoder = TokenEncoder(dim, cfg.enc_layers, cfg.enc_heads, cfg.enc_ffn, cfg.enc_dropout,
                                    cfg.pos_encoding)
        self.scene_linear = nn.Linear(dim, cfg.num_scenes, bias=False) if cfg.scene_source == "learned" else None
        self.cooccurrence = SceneCooccurrence(cfg.num_scenes, num_classes, cfg.comat_momentum,
                                              cfg.soft_assignment, cfg.normalize_adjacency, cfg.ignore_self)
        self.label_embedding = LabelEmbedding(cfg.label_embedding, num_classes, cfg.label_embedding_dim or dim,
                                              dataset=dataset, class_names=class_names)
        self.attention = LowRankBilinearAttention(dim, self.label_embedding.dim, cfg.att_dim,
                                                  fast=cfg.fast_attention, chunk=cfg.attention_chunk)
        self.gnn = GatedGNN(dim, cfg.gnn_steps, cfg.outmess) if cfg.gnn_steps > 0 else None
        self.head = nn.Linear(2 * dim if self.gnn is not None else dim, dim)
        self.classifier = ElementWiseLinear(num_classes, dim)

    def train(self, mode: bool = True) -> SALGL:
        super().train(mode)
        if self.cfg.freeze_backbone:  # a frozen backbone's BatchNorm statistics must not move either
            self.backbone.eval()
        return self

    def tokens(self, images: torch.Tensor, from_features: bool = False) -> torch.Tensor:
        """The encoded tokens [B, N, D] of `images`, or of the backbone's output [B, D, h, w] when `from_features`
        (or takes_features) says `images` is that already."""
        fmap = images if self.takes_features or from_features else self.backbone(images)  # [B, D, h, w]
        x = fmap.flatten(2).transpose(1, 2)
        return self.encoder(x, tuple(fmap.shape[-2:]))

    def scene_probabilities(self, x: torch.Tensor,
                            scenes: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(scene logits or None, scene probabilities [B, K]) from the encoded tokens or the given scene ids."""
        source, k = self.cfg.scene_source, self.cfg.num_scenes
        # At least float32 (fp16/bf16 models and autocast), float64 for a float64 model.
        dtype = torch.promote_types(x.dtype, torch.float32)
        if self.scene_linear is not None:
            if scenes is not None:
                raise ValueError("SALGL.forward got scene ids, but scene_source is 'learned': the scene classifier "
                                 "must not see them; pass scenes=None")
            scene_logits = self.scene_linear(x.mean(dim=1))
            return scene_logits, torch.softmax(scene_logits, dim=-1, dtype=dtype)
        if scenes is None:
            raise ValueError(f"scene_source is {source!r}: SALGL.forward needs each image's scene id, "
                             "forward(images, targets, scenes=int64 [B]) (predict.batch_scenes gives them)")
        # Checked where the ids are (the loader's CPU tensor): on the model's device int() would wait for the GPU.
        if scenes.shape != (x.shape[0],) or (scenes.numel() and not 0 <= int(scenes.min()) <= int(scenes.max()) < k):
            found = scenes.unique().tolist() if scenes.numel() else []
            raise ValueError(f"scene_source {source!r}: expected one scene id in [0, {k}) per image (shape "
                             f"[{x.shape[0]}]), got shape {list(scenes.shape)} with values {found[:8]}; -1 means "
                             "the dataset records no true scene for that image (only synthetic data does)")
        return None, F.one_hot(scenes.to(x.device, torch.long), k).to(dtype)

    def forward(self, images: torch.Tensor, targets: torch.Tensor | None = None,
                scenes: torch.Tensor | None = None, from_features: bool = False) -> SALGLOutput:
        """targets (multi-hot [B, C]) are needed in training mode: they update the co-occurrence counts.
        scenes (int64 [B] in [0, K)) are needed with scene_source 'oracle' / 'random' and refused with
        'learned'. from_features: `images` is this model's backbone output already (predict.predict_models runs a
        frozen backbone shared by a model and its EMA copy once)."""
        if self.training and targets is None:
            raise ValueError("SALGL.forward needs targets in training mode (they update the co-occurrence "
                             "counts); call model.eval() for inference")
        x = self.tokens(images, from_features)
        scene_logits, scene_probs = self.scene_probabilities(x, scenes)
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


def random_scenes(index: torch.Tensor, split: str, num_scenes: int) -> torch.Tensor:
    """scene_source 'random': image `index` of `split` ('train' / 'val') gets scene hash(split, index) mod K,
    int64 [B]. A pure function of the dataset position: the same in every epoch, run, seed and process, and
    blind to the image and its true scene (the negative control must not find the scenes by chance)."""
    return torch.tensor([int.from_bytes(hashlib.blake2b(f"{split}/{int(i)}".encode(), digest_size=8).digest(),
                                        "little") % num_scenes for i in index.tolist()], dtype=torch.long)
