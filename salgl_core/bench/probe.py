"""Scene probe: can a linear classifier read the true scene from the frozen backbone's features?

SALGL's learned scenes barely match the true ones on synthetic data (NMI about 0.1). Two different
causes would give that: the features do not carry the scene, or they do and the unsupervised scene
classifier does not find it. This benchmark tells them apart. For each scene visibility it takes the
cached tokens of the synthetic studies' frozen backbone (presets.STUDY_SYNTHETIC: the small CNN
pretrained on a disjoint split), mean-pools them, and fits a *supervised* multinomial logistic
regression from the pooled features to the true scene ids on the training split. It then prints the
accuracy on the validation split next to the majority-class rate and the share of images whose
background shows the true scene. The probe sees the true ids, which SALGL never does: it bounds what
the features hold, not what SALGL could learn. Pretraining and caches are built when missing (about
80 s per visibility on 2 cores, once) and reused by the studies afterwards.

    python -m salgl_core.bench probe [--visibility 0 0.6 1] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from salgl_core.config import ExperimentConfig
from salgl_core.presets import STUDY_SYNTHETIC, synthetic_preset

SUMMARY = "linear probe of the true scene on the frozen backbone's cached features (synthetic, per visibility)"


def pooled_features(cfg: ExperimentConfig) -> dict[str, np.ndarray]:
    """Each split's cached backbone output [N, D, h, w], mean-pooled to [N, D] (built first when missing)."""
    from salgl_core.features import build_feature_cache

    out = {}
    for split, cache in build_feature_cache(cfg, log=None).items():
        fmap = np.memmap(cache.features, dtype=np.float32, mode="r", shape=cache.shape)
        out[split] = np.asarray(fmap, dtype=np.float64).mean(axis=(2, 3))
    return out


def probe(cfg: ExperimentConfig) -> dict[str, Any]:
    """Validation accuracy (percent) of a logistic regression from pooled features to the true scene."""
    from sklearn.linear_model import LogisticRegression

    from salgl_core.data import build_datasets

    bundle = build_datasets(cfg.data)
    feats = pooled_features(cfg)
    # Standardised on the training split: unscaled CNN activations leave lbfgs far from converged.
    mu, sd = feats["train"].mean(axis=0), feats["train"].std(axis=0) + 1e-6
    x_tr, x_va = (feats["train"] - mu) / sd, (feats["val"] - mu) / sd
    y_tr, y_va = bundle.train.scene_ids, bundle.val.scene_ids
    clf = LogisticRegression(max_iter=5000).fit(x_tr, y_tr)
    k, vis = cfg.data.synthetic_scenes, cfg.data.synthetic_scene_visibility
    return {"visibility": vis, "train_images": len(y_tr), "val_images": len(y_va), "feature_dim": x_tr.shape[1],
            "probe_accuracy": round(100 * float(clf.score(x_va, y_va)), 2),
            "majority_class": round(100 * float(np.bincount(y_va).max() / len(y_va)), 2),
            # a background is drawn from the true scene with probability v, else uniformly (true 1 in K)
            "background_shows_true_scene": round(100 * (vis + (1 - vis) / k), 1)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--visibility", nargs="+", type=float, default=[0.0, 0.6, 1.0], metavar="V",
                   help="synthetic_scene_visibility values to probe (default: 0 0.6 1, the visibility study's)")
    p.add_argument("--backbone-weights", default="synthetic-pretrained", metavar="W",
                   help="the frozen small CNN's weights (default: synthetic-pretrained; 'none' = random init)")
    p.add_argument("--synthetic-train-images", type=int, default=None, metavar="N",
                   help=f"default: the studies' {STUDY_SYNTHETIC['synthetic_train_images']}")
    p.add_argument("--synthetic-val-images", type=int, default=None, metavar="N",
                   help=f"default: the studies' {STUDY_SYNTHETIC['synthetic_val_images']}")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="data, pretrained weights and feature caches (default: $SALGL_CACHE or <repo>/.cache)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    flat: dict[str, Any] = {**synthetic_preset(), **STUDY_SYNTHETIC, "freeze_backbone": True, "feature_cache": True,
                            "backbone_weights": None if args.backbone_weights == "none" else args.backbone_weights}
    for name in ("synthetic_train_images", "synthetic_val_images", "cache_dir"):
        if getattr(args, name) is not None:
            flat[name] = getattr(args, name)
    base = ExperimentConfig.from_flat(flat)
    rows = [probe(base.replace(synthetic_scene_visibility=v)) for v in args.visibility]
    return {"benchmark": "probe", "backbone_weights": flat["backbone_weights"], "probes": rows}
