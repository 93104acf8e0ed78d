"""Label embeddings: fixed vectors from a .npy file (the official BERT/GloVe vectors), a learned
matrix (the official `random` option: trainable, N(0, 1) init), or a fixed random matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class LabelEmbeddingError(ValueError):
    pass


def load_label_vectors(path: str | Path, num_classes: int) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise LabelEmbeddingError(f"label embedding file {path} does not exist; pass a C x E .npy file "
                                  f"(e.g. the official bert.npy) or use --label-embedding learned")
    try:
        vec = np.load(path, allow_pickle=False)
    except Exception as e:
        raise LabelEmbeddingError(f"could not read label embeddings from {path}: {e}") from None
    if vec.ndim != 2 or vec.shape[0] != num_classes or not np.isfinite(vec).all():
        raise LabelEmbeddingError(f"label embeddings in {path} have shape {vec.shape}; the dataset has "
                                  f"{num_classes} classes, so a finite [{num_classes}, E] array is expected")
    return vec.astype(np.float32)


class LabelEmbedding(nn.Module):
    def __init__(self, source: str, num_classes: int, dim: int) -> None:
        super().__init__()
        self.source = source
        if source == "learned":
            self.weight = nn.Parameter(torch.randn(num_classes, dim))
        elif source == "random":
            self.register_buffer("weight", torch.randn(num_classes, dim))
        else:
            self.register_buffer("weight", torch.from_numpy(load_label_vectors(source, num_classes)))

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def forward(self) -> torch.Tensor:
        return self.weight
