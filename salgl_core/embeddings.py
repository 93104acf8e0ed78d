"""Label embeddings: the official fixed vectors shipped with the package (`bert`, `glove`, resolved from the
dataset name), fixed vectors from any .npy file, a learned matrix (the official `random` option: trainable,
N(0, 1) init), or a fixed random matrix.

The shipped vectors live in `salgl_core/label_embeddings/<dataset>/<kind>.npy` (float32, rows in the order
of `labels.txt` next to them, which is our loaders' class order); PROVENANCE.md there says where they come
from. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

SHIPPED_DIR = Path(__file__).resolve().parent / "label_embeddings"
NAMED_KINDS = ("bert", "glove")  # the official `embed_type` values that are fixed vectors
GENERATED_KINDS = ("learned", "random")


class LabelEmbeddingError(ValueError):
    pass


def shipped_datasets(kind: str) -> tuple[str, ...]:
    """The datasets for which the package ships `kind` vectors, sorted."""
    return tuple(sorted(p.parent.name for p in SHIPPED_DIR.glob(f"*/{kind}.npy")))


def shipped_class_names(dataset: str) -> list[str]:
    """The class order the shipped vectors of `dataset` were made in (one name a row)."""
    path = SHIPPED_DIR / dataset / "labels.txt"
    if not path.is_file():
        raise LabelEmbeddingError(f"the package ships no label vectors for dataset {dataset!r}; "
                                  f"it has them for: {', '.join(shipped_datasets('bert'))}")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shipped_path(kind: str, dataset: str | None) -> Path:
    """Path of the shipped `kind` ("bert" or "glove") vectors for `dataset`; a clear error if there are none."""
    if kind not in NAMED_KINDS:
        raise LabelEmbeddingError(f"label_embedding = {kind!r} is not a shipped kind; use one of {NAMED_KINDS}")
    have = shipped_datasets(kind)
    if dataset is None:
        raise LabelEmbeddingError(f"label_embedding = {kind!r} needs the dataset name to pick the vectors "
                                  f"(shipped for: {', '.join(have)})")
    path = SHIPPED_DIR / dataset / f"{kind}.npy"
    if not path.is_file():
        raise LabelEmbeddingError(
            f"label_embedding = {kind!r}: the package ships {kind} vectors only for {', '.join(have)}, not for "
            f"dataset {dataset!r}; use 'learned', 'random' or a path to a C x E .npy file of label vectors")
    return path


def resolve_label_embedding(source: str, dataset: str | None = None) -> str:
    """`bert`/`glove` -> the shipped file for `dataset`; `learned`, `random` and paths are returned as they are."""
    return str(shipped_path(source, dataset)) if source in NAMED_KINDS else source


def load_label_vectors(path: str | Path, num_classes: int) -> np.ndarray:
    """A finite float32 [num_classes, E] array from a .npy file; errors name the file and both row counts."""
    path = Path(path)
    if not path.is_file():
        raise LabelEmbeddingError(f"label embedding file {path} does not exist; pass a C x E .npy file, "
                                  f"'bert' or 'glove' (the shipped official vectors), or 'learned'")
    try:
        vec = np.load(path, allow_pickle=False)
    except Exception as e:
        raise LabelEmbeddingError(f"could not read label embeddings from {path}: {e}") from None
    if vec.ndim != 2:
        raise LabelEmbeddingError(f"label embeddings in {path} have shape {vec.shape}; expected a 2-D "
                                  f"[classes, E] array")
    if vec.shape[0] != num_classes:
        raise LabelEmbeddingError(f"label embeddings in {path} have {vec.shape[0]} rows but the dataset has "
                                  f"{num_classes} classes: one row per class, in the dataset's class order")
    if not np.issubdtype(vec.dtype, np.number) or not np.isfinite(vec).all():
        raise LabelEmbeddingError(f"label embeddings in {path} hold non-finite or non-numeric values")
    return vec.astype(np.float32)


def check_class_order(dataset: str, class_names: Sequence[str]) -> None:
    """Raise if `class_names` (the loaded dataset's order) is not the order the shipped vectors were made in."""
    want = shipped_class_names(dataset)
    got = list(class_names)
    if got != want:
        bad = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        g = got[bad] if bad < len(got) else "<end>"
        w = want[bad] if bad < len(want) else "<end>"
        raise LabelEmbeddingError(f"the {dataset} classes ({len(got)}) are not in the order of the shipped label "
                                  f"vectors ({len(want)}): position {bad} is {g!r}, the vectors expect {w!r}")


class LabelEmbedding(nn.Module):
    """source: 'learned', 'random', 'bert' / 'glove' (shipped, need `dataset`) or a path to a .npy file.

    With `class_names` (the dataset's class order) a shipped kind is also checked row by row by name.
    """

    def __init__(self, source: str, num_classes: int, dim: int, dataset: str | None = None,
                 class_names: Sequence[str] | None = None) -> None:
        super().__init__()
        self.source = source
        if source == "learned":
            self.weight = nn.Parameter(torch.randn(num_classes, dim))
        elif source == "random":
            self.register_buffer("weight", torch.randn(num_classes, dim))
        else:
            path = resolve_label_embedding(source, dataset)
            vec = load_label_vectors(path, num_classes)
            if source in NAMED_KINDS and class_names is not None:
                check_class_order(dataset, class_names)
            self.register_buffer("weight", torch.from_numpy(vec))

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def forward(self) -> torch.Tensor:
        return self.weight
