"""Typed configuration with the official SALGL defaults (reference: SALGL.md section 2).

Three dataclasses, one per concern, whose field names are unique across all three so that a trial's
config is one flat dict (what Ray Tune samples and what `config.json` / `trials.csv` hold):

    ModelConfig  the network and its losses      (official `lib/utils.py:get_args` defaults)
    DataConfig   which dataset and how it is read (COCO 2014 at 448 px by default)
    TrainConfig  the optimisation recipe          (AdamW + OneCycle + EMA, 80 epochs, batch 128)

Each field is one line: `_f(default, help, check)`, where the check says what values are allowed
(`Range`, `OneOf` or `Satisfies`; booleans need none) and a `X | None` annotation also allows None. The
CLI (`salgl_core.cli`) generates a flag per field from the same line, with the help text and the range
or choices. Every field is validated on construction by one generic loop; an error names the class and
field, the bad value and what is allowed. `ExperimentConfig.from_flat` rejects unknown keys rather than
ignoring them. This module imports no torch: the results schema and the dashboard read it.

The dataclass defaults follow the official argparse except where a field's help says otherwise (learned
label embeddings, fp16 AMP). The paper's configurations are named recipes applied on top of them
(salgl_core/presets.py); a config records the one it started from in its `recipe` field.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from salgl_core.io import atomic_write_text
from salgl_core.registry import backbones, datasets, recipes

BACKBONES = backbones.names()
# Backbones that cut the image into square patches: image_size must be a multiple of the patch size (checked
# here, torch-free; salgl_core/backbone.py reads the same table).
PATCH_SIZES = {"vit_base_patch16": 16, "vit_large_patch16": 16}
# ViT weights names besides torchvision's (salgl_core/backbone.py reads them; the dashboard names their pretraining):
# the official code's ImageNet-1k files (ImageNet-21k pretrained, fine-tuned on 1k), from the torch hub cache, and
# 'timm:<model>.<tag>' from the Hugging Face cache.
OFF_VIT_WEIGHTS = {"vit_base_patch16": "jx_vit_base_p16_224-80ecf9dd.pth",
                   "vit_large_patch16": "jx_vit_large_p16_224-4ee7a4dc.pth"}
TIMM_PREFIX = "timm:"
DATASETS = datasets.names()
# The names of the torch-side modules' choices, declared here so the config stays torch-free;
# tests/test_config.py checks they equal data.transforms.RANDAUGMENT_POLICIES and metrics.CP_CR_RULES.
RANDAUGMENT_POLICIES = ("official", "torchvision", "none")
CP_CR_RULES = ("official_clamp", "zero_if_undefined")
LABEL_EMBEDDING_KINDS = ("learned", "random", "bert", "glove")  # besides a path to a .npy file
SCENE_SOURCES = ("learned", "oracle", "random")  # ModelConfig.scene_source
FEATURE_CACHE_DTYPES = ("float32", "float16")  # TrainConfig.feature_cache_dtype (salgl_core/features.py stores them)
EVAL_PRECISIONS = ("fp32", "tf32", "bf16")  # TrainConfig.eval_precision (salgl_core/engine.py applies them)
# The official fixed vectors shipped as package data, <dir>/<dataset>/<kind>.npy (salgl_core.embeddings loads them).
SHIPPED_EMBEDDING_KINDS = ("bert", "glove")
SHIPPED_EMBEDDINGS_DIR = Path(__file__).resolve().parent / "label_embeddings"


# DataConfig.num_workers: the number of workers chosen when the run starts (salgl_core.data.resolve_num_workers).
AUTO_WORKERS = -1


class ConfigError(ValueError):
    """A configuration value a user supplied is invalid; the message says which and why."""


@dataclass(frozen=True)
class Range:
    """lo <= value <= hi (lo < value with lo_open; hi None = no upper bound). An int field takes integers
    only, a float field any finite number."""

    lo: float
    hi: float | None = None
    lo_open: bool = False

    def ok(self, value: Any, typ: type) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if typ is int else (int, float)):
            return False
        if typ is not int and not math.isfinite(value):
            return False
        return (value > self.lo if self.lo_open else value >= self.lo) and (self.hi is None or value <= self.hi)

    def expected(self, typ: type) -> str:
        if typ is int:
            return f"an integer >= {self.lo}" if self.hi is None else f"an integer in [{self.lo}, {self.hi}]"
        left = "(" if self.lo_open else "["
        right = "inf)" if self.hi is None else f"{float(self.hi)}]"
        return f"a number in {left}{float(self.lo)}, {right}"


@dataclass(frozen=True)
class OneOf:
    """The value is one of `choices` (the CLI offers them as the flag's choices)."""

    choices: tuple[Any, ...]

    def ok(self, value: Any, typ: type) -> bool:
        return value in self.choices

    def expected(self, typ: type) -> str:
        return f"one of {list(self.choices)}"


@dataclass(frozen=True)
class Satisfies:
    """Any other rule: `test(value)` is true; `description` says what is allowed."""

    test: Callable[[Any], bool]
    description: str

    def ok(self, value: Any, typ: type) -> bool:
        return self.test(value)

    def expected(self, typ: type) -> str:
        return self.description


Check = Range | OneOf | Satisfies


def _non_empty_str(v: Any) -> bool:
    return isinstance(v, str) and v != ""


BOOL = Satisfies(lambda v: isinstance(v, bool), "true or false")
PATH = Satisfies(_non_empty_str, "a path")  # DATA_PATH_FIELDS are the fields with this check


def _f(default: Any, help: str, check: Check | None = None, *, symbol: str | None = None, label: str | None = None,
       note: str = "") -> Any:
    """A config field: its default, its command-line help text and the rule its values must satisfy
    (booleans: none needed). The CLI and the validation are generated from these. A field swept by studies may
    carry its usual symbol (ASCII, for trial names: K, T, mu), a label for charts and a note (markdown) that
    the dashboard shows beside a study of it."""
    return field(default=default, metadata={"help": help, "check": check, "symbol": symbol, "label": label,
                                            "note": note})


def _is_label_embedding(v: Any) -> bool:
    return isinstance(v, str) and (v in LABEL_EMBEDDING_KINDS or v.endswith(".npy"))


def _is_recipe(v: Any) -> bool:
    # presets.py declares the names when it is imported (salgl_core/__init__.py does, before any config is built).
    return v in recipes


def _is_device(v: Any) -> bool:
    return isinstance(v, str) and (v in ("auto", "cpu", "cuda") or v.startswith("cuda:"))


class _Validated:
    """Base of the config sections: integral floats become ints (and ints floats) where the field's type
    says so, then every field is checked against its declared rule."""

    def __post_init__(self) -> None:
        cls = type(self)
        for name, spec in _specs(cls).items():
            setattr(self, name, _checked(spec, getattr(self, name), f"{cls.__name__}.{name}"))


def _checked(spec: FieldSpec, v: Any, where: str) -> Any:
    """`v` as the field's type, or ConfigError saying what the field takes."""
    # Values that arrive through JSON, CSV or a searcher may be floats such as 4.0: accept those
    # for integer fields, reject 4.5.
    if spec.type is int and isinstance(v, float) and v.is_integer():
        v = int(v)
    elif spec.type is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not (v is None and spec.optional) and not spec.check.ok(v, spec.type):
        allowed = spec.check.expected(spec.type)
        raise ConfigError(f"{where} = {v!r} is invalid: expected {'None or ' if spec.optional else ''}{allowed}")
    return v


@dataclass
class ModelConfig(_Validated):
    """The SALGL network and its loss. Defaults are the official code's argparse defaults."""

    backbone: str = _f("resnet101", f"Feature extractor (official: resnet101): {backbones.describe()}.", OneOf(BACKBONES))
    backbone_weights: str | None = _f("IMAGENET1K_V1", "torchvision weights name ('IMAGENET1K_V1', 'DEFAULT') read from the torch hub cache only (never downloaded), a local .pth file, or none (random init). For the ViTs also 'timm:<model>.<tag>' (e.g. 'timm:vit_large_patch16_224.augreg_in21k', ImageNet-21k; read from the Hugging Face cache, extra 'timm') or the official code's file 'jx_vit_large_p16_224-4ee7a4dc.pth' (read from the torch hub cache). For efficientnet_lite0 any value means the bundled ImageNet weights. For small_cnn on synthetic data, 'synthetic-pretrained' = the small CNN pretrained once as a plain multi-label classifier on a disjoint synthetic split of the same world (salgl_core/pretrain.py; cached by key).", Satisfies(_non_empty_str, "a torchvision weights name such as 'IMAGENET1K_V1' or a path to a .pth file"))
    freeze_backbone: bool = _f(False, "Ours: keep the backbone's weights fixed (no gradient, excluded from the optimizer, kept in eval mode so BatchNorm statistics do not move); everything after it trains. Needed by feature_cache.")
    num_scenes: int = _f(4, 'K, the number of latent scenes (official default 4; 1 = one global co-occurrence matrix, no scene awareness).', Range(1), symbol="K", label="number of scenes K")
    gnn_steps: int = _f(3, 'T, gated-GNN propagation steps (official 3); 0 removes the graph and the concatenation before the head.', Range(0), symbol="T", label="graph propagation steps T")
    comat_momentum: float = _f(1.0, "Ours, not the paper's: each training batch does M_k <- mu * M_k + batch counts. 1.0 is the official running sum.", Range(0, 1), symbol="mu", label="co-occurrence momentum μ (ours, not the paper's)", note="**comat_momentum is our knob, not the paper's.** The paper (and the official code) keeps each scene's co-occurrence counts as a plain running sum over the whole run, i.e. μ = 1; smaller μ makes M_k ← μ·M_k + batch counts forget old batches. The paper has no ablation of it.")
    soft_assignment: bool = _f(False, 'Soft scene assignment: counts weighted by scene probability and the adjacency mixes all K matrices (official --soft); off = argmax scene.')
    outmess: bool = _f(False, 'Gated GNN uses in- and out-messages [A h; A^T h] (official --outmess; off in the official argparse, on in the UNOFF configs).')
    normalize_adjacency: bool = _f(False, 'Divide each adjacency row by its sum (official --normalize; off in the official argparse, on in the UNOFF configs).')
    ignore_self: bool = _f(False, 'Zero the adjacency diagonal (official ignore_self, off).')
    comat_ema: bool = _f(True, 'The EMA model keeps an EMA of the co-occurrence counts (official comat_ema=True); off = it uses the live counts.')
    att_dim: int = _f(1024, 'Rank of the low-rank bilinear attention (official 1024).', Range(1))
    fast_attention: bool = _f(True, 'Exact algebraic fast path of the bilinear attention (same outputs and gradients, no att_dim x att_dim product); off = the reference formulation.')
    attention_chunk: int = _f(0, 'Labels per chunk in the fast attention, checkpointed to bound peak memory; 0 = chosen from the tensor size.', Range(0))
    enc_layers: int = _f(1, 'Transformer encoder layers over the image tokens (official 1).', Range(0))
    enc_heads: int = _f(8, "Attention heads of the encoder (official 8); must divide the backbone's feature width.", Range(1))
    enc_ffn: int = _f(2048, 'Feed-forward width of the encoder (official 2048).', Range(1))
    enc_dropout: float = _f(0.1, 'Dropout in the encoder (official 0.1).', Range(0, 1))
    pos_encoding: bool = _f(False, 'Add a 2D sine positional encoding to queries and keys (official --pos, off).')
    label_embedding: str = _f("learned", "'bert' / 'glove' (the official fixed vectors shipped for coco, voc2007 and nuswide; bert is the official default and the recipes'), 'learned' (trainable N(0,1): the official 'random' option), 'random' (fixed N(0,1)), or a C x E .npy file of fixed vectors.", Satisfies(_is_label_embedding, "'bert', 'glove', 'learned', 'random' or a path to a .npy file"))
    label_embedding_dim: int = _f(0, "Width of learned/random label embeddings; 0 = the backbone's feature width (as the official code).", Range(0))
    loss: str = _f("asl", 'Classification loss: asl (official, AsymmetricLossOptimized) or bce.', OneOf(("asl", "bce")))
    asl_gamma_neg: float = _f(2.0, 'ASL focusing exponent for negatives (official 2).', Range(0))
    asl_gamma_pos: float = _f(0.0, 'ASL focusing exponent for positives (official 0).', Range(0))
    asl_clip: float = _f(0.0, 'ASL probability margin for negatives (official 0).', Range(0, 1))
    asl_eps: float = _f(1e-5, 'ASL log clamp (official 1e-5).', Range(0, 1, lo_open=True))
    loss_scale: float = _f(1000.0, 'ASL = per-element mean x this (official 1000); BCE is a plain mean, as the official nn.BCEWithLogitsLoss.', Range(0, lo_open=True))
    sample_entropy_weight: float = _f(1.0, 'Weight of the sample-level scene entropy term (official 1).', Range(0))
    batch_entropy_weight: float = _f(1.0, 'Weight of the batch-level scene entropy term (official 1).', Range(0))
    batch_entropy_scale: float = _f(100.0, 'Scale inside the batch-level entropy term (hard-coded 100 in the official model).', Range(0))
    scene_source: str = _f("learned", "Where each image's scene comes from (ours, a control, not the paper's): learned = SALGL's scene classifier; oracle = the image's true scene id (synthetic data only) both updates and selects the per-scene co-occurrence matrices, with no scene classifier and no entropy terms; it also sees the true scene at evaluation time, so it is an upper bound on what perfect scene discovery could give, not a fair competitor; random = a fixed random scene per image (a negative control that never sees the true ids).", OneOf(SCENE_SOURCES))


@dataclass
class DataConfig(_Validated):
    """Which dataset and how it is read. Defaults: the official COCO 2014 recipe at 448 px."""

    dataset: str = _f("coco", f"{datasets.describe()}.", OneOf(DATASETS))
    data_root: str | None = _f(None, 'Dataset root in its standard layout (COCO: train2014/ val2014/ annotations/; VOC: VOCdevkit/VOC2007 or its parent; NUS-WIDE: ImageList/ Groundtruth/ Concepts81.txt images/). Explicit paths below override it.', PATH)
    train_images: str | None = _f(None, 'Folder of training images (overrides data_root).', PATH)
    train_annotations: str | None = _f(None, 'Training annotations file, e.g. a COCO instances json (overrides data_root).', PATH)
    val_images: str | None = _f(None, 'Folder of validation/test images (overrides data_root).', PATH)
    val_annotations: str | None = _f(None, 'Validation/test annotations file (overrides data_root).', PATH)
    keep_unannotated: bool = _f(False, 'COCO: keep images without annotations as all-negative (the official script drops them).')
    image_size: int = _f(448, 'Images are resized to S x S (official 448; 576 for the larger COCO model).', Range(32, 2048))
    skip_corrupt: bool = _f(False, "Skip truncated/corrupt images and count them in the log instead of stopping with the file's name.")
    randaugment: str = _f("official", "RandAugment policy of the training transform on real data: official (the pip `randaugment` package the official code imports), torchvision (torchvision's RandAugment, not the official policy) or none.", OneOf(RANDAUGMENT_POLICIES))
    cutout: bool = _f(True, 'Cutout at half the image size in the training transform (official: on).')
    num_workers: int = _f(AUTO_WORKERS, 'DataLoader worker processes; -1 = auto, chosen when the run starts: min(8, CPUs - 1), one CPU staying with the training process (0 = load in the training process), the CPUs being those this process may use or, in a study trial, the trial\'s own (--cpus-per-trial).', Range(AUTO_WORKERS))
    cache_dir: str | None = _f(None, 'Where the synthetic dataset is generated (and cached backbone features and pretrained small-CNN weights are kept); none = $SALGL_CACHE if set, else <repo>/.cache/synthetic.', PATH)
    synthetic_train_images: int = _f(3000, 'Synthetic data: training images.', Range(8))
    synthetic_val_images: int = _f(1000, 'Synthetic data: validation images.', Range(8))
    synthetic_scenes: int = _f(4, 'Synthetic data: true number of latent scenes.', Range(1, 16))
    synthetic_classes: int = _f(20, 'Synthetic data: number of object classes.', Range(8, 64))
    synthetic_seed: int = _f(0, 'Synthetic data: generator seed (the data is a pure function of its parameters).', Range(0))
    synthetic_scene_visibility: float = _f(0.6, "Synthetic data: probability that an image's background is drawn from its true scene, else from a uniformly random one (which can be the true one by chance); 0 = the background carries no scene information (the objects still do, through which classes co-occur), 1 = every background shows its scene. Only backgrounds change: the same seed gives the same labels and objects at every value. For studies of when SALGL discovers scenes (learned-vs-true NMI, learned-to-oracle gap).", Range(0, 1))
    synthetic_scene_cue: float = _f(1.0, "Synthetic data: strength of the background's scene cue, a multiplier of the scene tint (~14/255) and stripe amplitude (6/255); 1 = the default faint cue, 0 = no cue. Only backgrounds change, like synthetic_scene_visibility.", Range(0))


@dataclass
class TrainConfig(_Validated):
    """The optimisation recipe (official / UNOFF, SALGL.md section 2)."""

    epochs: int = _f(80, 'Training epochs (official 80).', Range(1))
    batch_size: int = _f(128, 'Images per batch (official 128).', Range(1))
    lr: float = _f(1e-4, 'AdamW learning rate, the OneCycle maximum (official 1e-4).', Range(0, lo_open=True))
    weight_decay: float = _f(1e-2, 'AdamW weight decay on all parameters (official 1e-2).', Range(0))
    pct_start: float = _f(0.2, 'OneCycleLR warm-up fraction, stepped per iteration (official 0.2).', Range(0, 1, lo_open=True))
    ema_decay: float = _f(0.9997, 'Constant per-step decay of the model-weight EMA (official 0.9997); used only when ema_epoch_retention is 0 (the paper recipes set it to 0.82: add --ema-epoch-retention 0 to use ema_decay with them).', Range(0, 1))
    ema_epoch_retention: float = _f(0.0, "The EMA keeps this share of its weights per epoch, whatever the batch or dataset size: the per-step decay is ema_epoch_retention^(1 / iterations per epoch), the iterations being the training batches of the run (after drop_last), known at fit time (UNOFF: 0.82, which it hard-codes per dataset for batch 128). Above 0 it wins over ema_decay; 0 = off, the constant ema_decay is used (official).", Range(0, 1))
    ema_warmup: bool = _f(False, 'Ours: EMA decay min(decay, (1 + t) / (10 + t)) at update t, so short runs leave their initial weights (off = the official constant decay).')
    amp: str = _f("fp16", 'Mixed precision for training on CUDA: none, bf16 or fp16 (ignored on CPU). The official code has --amp (off by default); the reproduction that matched the paper trained with fp16 AMP. With fp16 or bf16, the float32 operations left outside autocast use TF32 on CUDA; none keeps them in strict float32. Evaluation precision: eval_precision.', OneOf(("none", "bf16", "fp16")))
    eval_precision: str = _f("tf32", "Precision of the validation forward on CUDA (ignored on CPU, which evaluates in float32): fp32 = strict float32 as the official evaluate.py (TF32 off, convolutions included); tf32 = TF32 matmuls and convolutions, float32 storage; bf16 = bf16 autocast. Either way the scores are float32 (sigmoid of float32 logits) and the metrics are computed in float64. Default tf32: its 10-bit-mantissa products move a logit by about 1e-3 relative, which leaves a ranking metric such as mAP unchanged in practice, at several times float32's speed on A100/H100; use fp32 to compare with a published number to the last digit, bf16 (8-bit mantissa) for the fastest screening.", OneOf(EVAL_PRECISIONS))
    channels_last: bool = _f(True, 'channels_last memory format for the model and its input batches, on CUDA and on CPU (cuDNN and oneDNN convolutions run faster in it: on 2 CPU cores EfficientNet-Lite0 at 224 px trains about 1.3x and evaluates about 1.9x faster).')
    seed: int = _f(0, 'Seed for torch, numpy, random and the data order.', Range(0))
    deterministic: bool = _f(False, 'Deterministic kernels (slower); exact resume and repeatable runs.')
    device: str = _f("auto", 'auto (cuda if available), cpu, cuda or cuda:N.', Satisfies(_is_device, "'auto', 'cpu', 'cuda' or 'cuda:N'"))
    cp_cr_rule: str = _f("official_clamp", "CP/CR/OP/OR on 0/0: official_clamp (the official meters: a never-predicted class has precision 1, a class without positives recall 1; OP/OR/OF1 NaN) or zero_if_undefined (every 0/0 counts 0, ML-GCN style).", OneOf(CP_CR_RULES))
    threshold: float = _f(0.5, 'Score threshold for CP/CR/CF1/OP/OR/OF1 (official 0.5, inclusive).', Range(0, 1))
    top_k: int = _f(3, 'k of the top-k CP/CR/CF1/OP/OR/OF1 variants (official 3).', Range(1))
    early_stop_patience: int = _f(0, 'Stop once the EMA mAP has not improved for more than this many epochs (UNOFF uses 6); 0 = never.', Range(0))
    checkpoint_every: int = _f(1, "Write the checkpoint a resume continues from (checkpoint.pt; in a study, the trial's Ray checkpoint) every N epochs; the last epoch (and an early-stopped run's last) always writes one; 0 = only there. A resume repeats the epochs after the last checkpoint (exactly: epoch e's data order depends on (seed, e) alone). Larger N saves the write (the model, its EMA and the optimizer: about 1.9 GB on ResNet-101) and, in a study, Ray's copy of it, which holds the training.", Range(0))
    drop_last: bool = _f(True, 'Drop the last incomplete training batch (as UNOFF).')
    feature_cache: bool = _f(False, "Ours; needs freeze_backbone: compute the frozen backbone's tokens once per (dataset, split, backbone, weights, image size, evaluation transform) into a memory-mapped cache next to the data cache, shared read-only by all trials on a node, and train everything after the backbone on them. The tokens come from the evaluation transform, so there is NO training augmentation (no flip, RandAugment or cutout), unlike the end-to-end run.")
    feature_cache_dtype: str = _f("float32", "How feature_cache stores the tokens: float32 (a cached run equals the end-to-end frozen run within float rounding) or float16 (half the disk and page cache: each token rounded to fp16's 11 significant bits, relative error <= 2^-11; tests/test_features.py shows a cached run's metrics stay within tolerance of float32's). A token beyond fp16's range (65504) stops the build.", OneOf(FEATURE_CACHE_DTYPES))
    init_from: str | None = _f(None, "Start from another run's weights (fine-tuning): a run folder (its best_ema.pt, else the EMA weights in its checkpoint.pt) or one of those files. Every parameter and buffer whose name and shape match is loaded; the label embeddings, the per-class classifier and the co-occurrence counts start afresh even when their shapes match (salgl_core/transfer.py). A resumed run continues from its own checkpoint instead. none = start from backbone_weights.", Satisfies(_non_empty_str, "a run folder or a checkpoint file"))
    recipe: str | None = _f(None, "The named recipe this config started from (salgl_core/presets.py); set by --recipe or --dataset, recorded in config.json; none = the dataclass defaults.", Satisfies(_is_recipe, "a recipe name from salgl_core/presets.py (python -m salgl_core.train --help lists them)"))


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


@dataclass(frozen=True)
class FieldSpec:
    """What the validation and the CLI need to know about a field: its base type (int, float, bool or
    str), whether None is allowed (`X | None`), its rule, default and help text."""

    type: type
    optional: bool
    check: Check
    default: Any
    help: str
    symbol: str | None = None  # the field's usual symbol (ASCII): trial names, console lines
    label: str | None = None  # how a chart's axis names it (default: the field's name)
    note: str = ""  # markdown the dashboard shows beside a study of this field


@functools.cache
def _specs(cls: type) -> dict[str, FieldSpec]:
    # Types come from the real annotations (typing.get_type_hints), not their string form.
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        hint = hints[f.name]
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
        base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
        check = f.metadata["check"] or (BOOL if base is bool else None)
        if check is None:
            raise TypeError(f"config field {cls.__name__}.{f.name} declares no check")
        m = f.metadata
        out[f.name] = FieldSpec(base, optional, check, f.default, m["help"], m["symbol"], m["label"], m["note"])
    return out


def _field_owner() -> dict[str, str]:
    owner: dict[str, str] = {}
    for section, cls in _SECTIONS.items():
        _specs(cls)  # at import: a field without a rule is a TypeError here, not at first use
        for f in fields(cls):
            assert f.name not in owner, f"duplicate config field {f.name}"
            owner[f.name] = section
    return owner


FIELD_OWNER = _field_owner()
# DataConfig fields that hold paths (the studies make them absolute for trials in their own folders).
DATA_PATH_FIELDS = tuple(name for name, s in _specs(DataConfig).items() if s.check is PATH)


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, FIELD_OWNER, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _unknown(names: list[str]) -> ConfigError:
    # The fields are listed by `--print-config`, not here: 69 names would bury the suggestion.
    what = "; ".join(f"{n!r}{_did_you_mean(n)}" for n in names)
    return ConfigError(f"unknown config field{'s' if len(names) > 1 else ''} {what}; "
                       "`python -m salgl_core.train --print-config` lists every field")


def field_spec(name: str) -> FieldSpec:
    """Type, None-ness, rule, default and help of the flat config field `name`."""
    if name not in FIELD_OWNER:
        raise _unknown([name])
    return _specs(_SECTIONS[FIELD_OWNER[name]])[name]


def ignored_fields(flat: dict[str, Any]) -> dict[str, str]:
    """The fields this flat config does not use, each with why: a value a user sets on purpose (a flag, --set, a
    study's axis or arm) must be refused rather than silently ignored."""
    out: dict[str, str] = {}
    if flat.get("ema_epoch_retention"):
        out["ema_decay"] = (f"ema_decay is not used while ema_epoch_retention = {flat['ema_epoch_retention']:g} sets "
                            "the per-step EMA decay (the paper recipes' rule): set ema_epoch_retention to 0 as well")
    return out


def check_field(name: str, value: Any) -> Any:
    """`value` for the flat config field `name`, as its type (4.0 -> 4 for an integer field); ConfigError naming
    the field and what it takes otherwise (the rules across fields are checked when a config is built)."""
    return _checked(field_spec(name), value, name)


def field_label(name: str) -> str:
    """How a chart or table names the field `name` when a study sweeps it (its label, else its name)."""
    return field_spec(name).label or name


def field_type(name: str) -> type:
    """int, float, bool or str: the type of the flat config field `name` (X for an `X | None` field)."""
    return field_spec(name).type


@dataclass
class ExperimentConfig:
    """The three sections together; flat (one dict of every field) in files, searchers and the CLI."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # Rules across sections, checked here, torch-free, so a study or --print-config says so at once instead
        # of after indexing the data. Shipped vectors exist for some datasets only.
        kind, dataset = self.model.label_embedding, self.data.dataset
        if kind in SHIPPED_EMBEDDING_KINDS and not (SHIPPED_EMBEDDINGS_DIR / dataset / f"{kind}.npy").is_file():
            have = sorted(p.parent.name for p in SHIPPED_EMBEDDINGS_DIR.glob(f"*/{kind}.npy"))
            raise ConfigError(f"ModelConfig.label_embedding = {kind!r}: the package ships {kind} vectors for "
                              f"{', '.join(have)}, not for dataset {dataset!r}; use 'learned', 'random' or a path "
                              "to a C x E .npy file of label vectors")
        # The oracle reads true scene ids, which only the synthetic generator records, and one matrix per true scene.
        source, k = self.model.scene_source, self.model.num_scenes
        if source == "oracle" and dataset != "synthetic":
            raise ConfigError(f"ModelConfig.scene_source = 'oracle' needs each image's true scene id, which only the "
                              f"synthetic dataset has, not dataset {dataset!r}; use scene_source 'learned' or "
                              "'random', or dataset 'synthetic'")
        if source == "oracle" and k != self.data.synthetic_scenes:
            raise ConfigError(f"ModelConfig.num_scenes = {k} must equal DataConfig.synthetic_scenes = "
                              f"{self.data.synthetic_scenes} with scene_source 'oracle' (one co-occurrence matrix "
                              "per true scene); set num_scenes to the synthetic scene count")

        if self.train.feature_cache and not self.model.freeze_backbone:
            raise ConfigError("TrainConfig.feature_cache = True needs ModelConfig.freeze_backbone = True (cached "
                              "tokens are only valid for a backbone that does not train); set freeze_backbone or "
                              "turn feature_cache off")
        if self.model.backbone_weights == "synthetic-pretrained" and (self.model.backbone != "small_cnn"
                                                                      or dataset != "synthetic"):
            raise ConfigError(f"ModelConfig.backbone_weights = 'synthetic-pretrained' is for backbone 'small_cnn' on "
                              f"dataset 'synthetic', not {self.model.backbone!r} on {dataset!r}; use a weights name "
                              "or file of that backbone, or none")
        patch, size = PATCH_SIZES.get(self.model.backbone), self.data.image_size
        if patch and size % patch:
            below = size // patch * patch
            raise ConfigError(f"DataConfig.image_size {size} is not a multiple of {self.model.backbone}'s patch size "
                              f"{patch}: use {below} or {below + patch}")

    def to_flat(self) -> dict[str, Any]:
        return {**asdict(self.model), **asdict(self.data), **asdict(self.train)}

    @classmethod
    def from_flat(cls, flat: dict[str, Any], base: ExperimentConfig | None = None) -> ExperimentConfig:
        """Build from a flat {field: value} dict, starting from `base` (default: the dataclass defaults)."""
        unknown = sorted(k for k in flat if k not in FIELD_OWNER)
        if unknown:
            raise _unknown(unknown)
        base = base or cls()
        flat = dict(flat)
        # config.json files from before the named policies held a boolean: True was torchvision's RandAugment.
        if isinstance(flat.get("randaugment"), bool):
            flat["randaugment"] = "torchvision" if flat["randaugment"] else "none"
        parts = {s: {k: v for k, v in flat.items() if FIELD_OWNER[k] == s} for s in _SECTIONS}
        return cls(model=dataclasses.replace(base.model, **parts["model"]),
                   data=dataclasses.replace(base.data, **parts["data"]),
                   train=dataclasses.replace(base.train, **parts["train"]))

    def replace(self, **flat: Any) -> ExperimentConfig:
        return ExperimentConfig.from_flat(flat, base=self)

    def save(self, path: str | Path) -> None:
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
