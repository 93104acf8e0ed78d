"""Presets: named sets of config overrides (the one place they are defined).

A preset is a flat {field: value} dict applied on top of the config dataclasses' defaults (the
official code's argparse defaults). `python -m salgl_core.train`, the studies and the tests all start
from here:

    synthetic_preset()   the embedded synthetic data on a CPU (`train --dataset synthetic`)
    STUDY_SYNTHETIC      what the default studies add on top of it (sized for a 2-core machine)
    SMOKE                a seconds-long run on tiny synthetic data (tests, `--smoke`)
    dataset_preset(ds)   the starting point for a dataset: synthetic_preset() or the paper's recipe
"""

from __future__ import annotations

from typing import Any

from salgl_core.config import DATASETS, ConfigError


def synthetic_preset() -> dict[str, Any]:
    """CPU-sized overrides for the embedded synthetic dataset.

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


# The default study on the embedded synthetic data, sized so that `python studies/scene_count.py`
# (8 trials, 2 at a time on 2 cores, data generation included) ends well inside 10 minutes, with trials
# long enough (about a minute) that Ray's fixed costs stay small. Few optimiser steps in all (~190), so
# the weight EMA's horizon is shortened to match (0.95: ~20 steps).
STUDY_SYNTHETIC: dict[str, Any] = {"synthetic_train_images": 1200, "synthetic_val_images": 400, "batch_size": 32,
                                   "epochs": 5, "ema_decay": 0.95}

# A seconds-long run for tests and `--smoke`.
SMOKE: dict[str, Any] = {"synthetic_train_images": 32, "synthetic_val_images": 16, "synthetic_classes": 8,
                         "synthetic_scenes": 2, "image_size": 32, "epochs": 1, "batch_size": 8, "att_dim": 16,
                         "enc_heads": 2, "enc_ffn": 32, "ema_decay": 0.5}


def paper_preset(dataset: str) -> dict[str, Any]:
    """The paper's recipe for a real dataset: ResNet-101, 448 px, batch 128, 80 epochs (the defaults)."""
    real = tuple(d for d in DATASETS if d != "synthetic")
    if dataset not in real:
        raise ConfigError(f"dataset = {dataset!r} is invalid: expected one of {list(real)}")
    return {"dataset": dataset}


def dataset_preset(dataset: str) -> dict[str, Any]:
    """The synthetic dataset gets the CPU-sized preset; real datasets the paper's recipe."""
    return synthetic_preset() if dataset == "synthetic" else paper_preset(dataset)
