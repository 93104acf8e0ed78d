"""Frozen backbone, cached-feature trials (features.py) and the pretrained small CNN (pretrain.py)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from salgl_core import features, pretrain
from salgl_core.backbone import BackboneWeightsError, build_backbone
from salgl_core.config import ConfigError, ExperimentConfig
from salgl_core.data import DataError, build_datasets, collate
from salgl_core.data.transforms import eval_transform
from salgl_core.engine import fit
from salgl_core.model import build_model
from salgl_core.presets import SMOKE, synthetic_preset

TINY = pretrain.PretrainSettings(images=80, held_out=16, epochs=1, batch_size=32)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("features-cache"))


def smoke_cfg(cache_dir: str, **over) -> ExperimentConfig:
    return ExperimentConfig.from_flat({**synthetic_preset(), **SMOKE, "cache_dir": cache_dir, "deterministic": True,
                                       "freeze_backbone": True, **over})


def feature_folders(root: str | Path) -> set[str]:
    return {p.name for p in Path(root).glob("features-*")}


def test_config_rules_name_the_fields():
    with pytest.raises(ConfigError, match="feature_cache.*freeze_backbone"):
        ExperimentConfig.from_flat({**synthetic_preset(), "feature_cache": True})
    ExperimentConfig.from_flat({**synthetic_preset(), "feature_cache": True, "freeze_backbone": True})
    with pytest.raises(ConfigError, match="backbone_weights = 'synthetic-pretrained'.*small_cnn"):
        ExperimentConfig.from_flat({"backbone_weights": "synthetic-pretrained"})  # resnet101 on coco
    with pytest.raises(BackboneWeightsError, match="resolve_backbone_weights"):
        build_backbone("small_cnn", "synthetic-pretrained")  # needs the data config: fit() resolves it


def test_frozen_backbone_does_not_move(cache_dir):
    cfg = smoke_cfg(cache_dir, epochs=2)
    model = build_model(cfg.model, 8)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone."))
    model.train()
    assert model.training and model.encoder.training and not model.backbone.training  # BatchNorm stays put
    torch.manual_seed(cfg.train.seed)  # fit() seeds, then builds the model: the same initial weights
    init = {k: v.clone() for k, v in build_model(cfg.model, 8).state_dict().items()}
    res = fit(cfg, log=None)
    for model in (res.model, res.ema_model):
        for name, v in model.state_dict().items():
            if name.startswith("backbone."):  # weights and BatchNorm statistics unchanged
                assert torch.equal(v, init[name]), name
    assert not torch.equal(res.model.classifier.weight, init["classifier.weight"])  # the rest did train
    assert not torch.equal(res.model.encoder.state_dict()["layers.0.attn.in_proj_weight"],
                           init["encoder.layers.0.attn.in_proj_weight"])


def test_cached_run_equals_the_end_to_end_frozen_run(cache_dir):
    """Same seed and config; the reference feeds its training split through the evaluation transform (the
    synthetic training transform flips images at random, which cached features cannot), so both runs see
    the same inputs. They differ only in where the backbone's output comes from."""
    cfg = smoke_cfg(cache_dir, epochs=2)
    ref_data = build_datasets(cfg.data)
    ref_data.train.transform = eval_transform(cfg.data)
    ref = fit(cfg, data=ref_data, log=None)
    cached = fit(cfg.replace(feature_cache=True), log=None)
    assert cached.model.takes_features and not ref.model.takes_features
    assert len(ref.epochs) == len(cached.epochs) == 2
    for a, b in zip(ref.epochs, cached.epochs, strict=True):
        for key in ("loss_total", "loss_cls", "mAP", "mAP_ema", "CF1", "OF1", "mAP_present"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-4), key
    assert cached.best_epoch == ref.best_epoch
    np.testing.assert_allclose(cached.predictions["scores"], ref.predictions["scores"], atol=1e-5)
    np.testing.assert_array_equal(cached.predictions["image_ids"], ref.predictions["image_ids"])
    # The rest of the models trained the same way.
    ref_state, cached_state = ref.model.state_dict(), cached.model.state_dict()
    for name, v in ref_state.items():
        torch.testing.assert_close(cached_state[name], v, atol=1e-5, rtol=1e-4, msg=name)


def test_feature_items_are_the_image_items_with_features(cache_dir):
    cfg = smoke_cfg(cache_dir)
    bundle = build_datasets(cfg.data)
    torch.manual_seed(cfg.train.seed)
    backbone, _ = build_backbone(cfg.model.backbone, cfg.model.backbone_weights)
    caches = features.build_caches(cfg, bundle, backbone, torch.device("cpu"))
    backbone.eval()
    for split, images in (("train", bundle.train), ("val", bundle.val)):
        ds = features.FeatureDataset(images, caches[split])
        assert len(ds) == len(images) and caches[split].shape[0] == len(images)
        assert ds.labels is images.labels and ds.ids == images.ids  # the image dataset's attributes
        idx = [0, 3, len(images) - 1]
        got, want = collate([ds[i] for i in idx]), collate([images[i] for i in idx])
        assert got.keys() == want.keys()  # whatever the image batches carry
        for key in want:
            if key != "images":
                assert torch.equal(torch.as_tensor(got[key]), torch.as_tensor(want[key])), key
        with torch.no_grad():  # the evaluation transform's images through the backbone
            eval_images = torch.stack([eval_transform(cfg.data)(Image.open(images.paths[i]).convert("RGB"))
                                       for i in idx])
            torch.testing.assert_close(got["images"], backbone(eval_images), atol=1e-5, rtol=1e-5)
    meta = json.loads((caches["train"].root / "meta.json").read_text())
    assert meta["shape"] == [len(bundle.train), 128, 4, 4] and meta["dtype"] == "float32"
    assert meta["key"]["data"]["params"]["seed"] == cfg.data.synthetic_seed and meta["seconds"] >= 0
    assert isinstance(np.load(caches["val"].features, mmap_mode="r"), np.memmap)


def test_key_changes_with_every_input(cache_dir, tmp_path):
    cfg = smoke_cfg(cache_dir)
    bundle = build_datasets(cfg.data)
    torch.manual_seed(0)
    backbone, _ = build_backbone("small_cnn", None)
    torch.manual_seed(1)
    other_weights, _ = build_backbone("small_cnn", None)
    base = features.feature_key(cfg, bundle, "train", backbone)
    assert features.feature_key(cfg, bundle, "train", backbone) == base  # deterministic
    variants = {
        "split": features.feature_key(cfg, bundle, "val", backbone),
        "weights": features.feature_key(cfg, bundle, "train", other_weights),
        "image_size": features.feature_key(cfg.replace(image_size=48), bundle, "train", backbone),
        "backbone": features.feature_key(cfg.replace(backbone="resnet18", backbone_weights=None), bundle, "train",
                                         backbone),
        "data": features.feature_key(cfg.replace(synthetic_seed=1), build_datasets(cfg.replace(synthetic_seed=1).data),
                                     "train", backbone),
    }
    names = {features.folder_name(base)} | {features.folder_name(k) for k in variants.values()}
    assert len(names) == 1 + len(variants)
    assert variants["image_size"]["transform"] != base["transform"]  # Resize((48, 48)) joins the transform
    # A BatchNorm statistic is part of the weights too.
    bn = next(m for m in other_weights.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = features.weights_digest(other_weights)
    bn.running_mean += 1
    assert features.weights_digest(other_weights) != before
    # Real data: editing an annotation file (size or mtime) changes the key.
    ann = tmp_path / "instances.json"
    ann.write_text("{}")
    real = dataclasses.replace(bundle, info={"train_annotations": str(ann)})
    coco_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset="coco"))
    k1 = features.feature_key(coco_cfg, real, "train", backbone)
    assert k1["data"]["paths_sha256"] and k1["data"]["files"][0]["path"] == str(ann.resolve())
    ann.write_text('{"images": []}')
    os.utime(ann, ns=(1, 1))
    assert features.feature_key(coco_cfg, real, "train", backbone) != k1


def test_second_build_reuses_the_cache_and_fit_finds_it(tmp_path):
    cfg = smoke_cfg(str(tmp_path), feature_cache=True)
    first = features.build_feature_cache(cfg, log=None)
    assert first["train"].built and first["val"].built and first["train"].seconds > 0
    made = feature_folders(tmp_path)
    assert len(made) == 2
    stamp = {n: (tmp_path / n / "features.npy").stat().st_mtime_ns for n in made}
    second = features.build_feature_cache(cfg, log=None)
    assert not second["train"].built and second["train"].root == first["train"].root
    fit(cfg, log=None)  # the trial builds its model as the driver did: same weights, same key
    assert feature_folders(tmp_path) == made
    assert {n: (tmp_path / n / "features.npy").stat().st_mtime_ns for n in made} == stamp
    assert not list(tmp_path.glob(".tmp-features-*"))


class _Boom(torch.nn.Module):
    """A backbone that dies on its second batch, like a builder killed mid-way."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.net(x)


def test_half_built_caches_are_never_read(tmp_path):
    cfg = smoke_cfg(str(tmp_path))
    bundle = build_datasets(cfg.data)
    torch.manual_seed(0)
    backbone, _ = build_backbone("small_cnn", None)
    key = features.feature_key(cfg, bundle, "train", backbone)
    root = tmp_path / "root"
    with pytest.raises(KeyboardInterrupt):
        features.build_split(key, root, bundle.train, _Boom(backbone), torch.device("cpu"), batch_size=8)
    assert not feature_folders(root) and not list(root.glob(".tmp-*"))  # nothing left, nothing published
    # A builder of this host that was killed (no cleanup ran) leaves a temporary folder with a dead pid.
    dead = root / f"{features._TMP_PREFIX}{os.uname().nodename}~999999999~x"
    dead.mkdir()
    np.save(dead / "features.npy", np.full((len(bundle.train), 1), 7.0, dtype=np.float32))
    live = root / f"{features._TMP_PREFIX}otherhost~1~y"  # another host's builder may still be running
    live.mkdir()
    cache = features.build_split(key, root, bundle.train, backbone, torch.device("cpu"), batch_size=8)
    assert cache.built and cache.shape == (len(bundle.train), 128, 4, 4)
    assert not np.any(np.load(cache.features) == 7.0)
    assert not dead.exists() and live.exists()
    # A lost race: another builder published the same key first; this one uses the winner's copy.
    original = features._compute

    def winner_first(folder, *args):
        shape = original(folder, *args)
        (root / features.folder_name(key2)).mkdir()
        for f in ("features.npy", "valid.npy"):
            (root / features.folder_name(key2) / f).write_bytes((folder / f).read_bytes())
        (root / features.folder_name(key2) / "meta.json").write_text(json.dumps({"shape": list(shape)}))
        return shape

    key2 = features.feature_key(cfg, bundle, "val", backbone)
    features._compute = winner_first
    try:
        lost = features.build_split(key2, root, bundle.val, backbone, torch.device("cpu"), batch_size=8)
    finally:
        features._compute = original
    assert not lost.built and lost.root == root / features.folder_name(key2)
    # A final folder without its meta.json is not a cache (e.g. copied by hand): a clear error, not a read.
    (root / features.folder_name(key2) / "meta.json").unlink()
    with pytest.raises(DataError, match="incomplete"):
        features.build_split(key2, root, bundle.val, backbone, torch.device("cpu"))


def test_pretrained_small_cnn_is_cached_by_key_and_disjoint(tmp_path, monkeypatch):
    cfg = smoke_cfg(str(tmp_path), backbone_weights="synthetic-pretrained")
    rng_before = torch.get_rng_state()
    path = pretrain.pretrained_small_cnn(cfg.data, TINY)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random stream is untouched
    net, _ = build_backbone("small_cnn", str(path))  # loads as small_cnn weights
    meta = json.loads((path.parent / "meta.json").read_text())
    assert len(meta["bce_per_epoch"]) == 1 and 0 <= meta["held_out_mAP"] <= 100
    stamp = path.stat().st_mtime_ns
    assert pretrain.pretrained_small_cnn(cfg.data, TINY) == path and path.stat().st_mtime_ns == stamp  # reused
    assert pretrain.pretrained_small_cnn(cfg.replace(synthetic_seed=3).data, TINY) != path
    assert pretrain.pretrain_key(cfg.data, dataclasses.replace(TINY, epochs=2)) != pretrain.pretrain_key(cfg.data, TINY)
    assert pretrain.pretrain_key(cfg.replace(synthetic_train_images=64).data, TINY) == pretrain.pretrain_key(cfg.data,
                                                                                                          TINY)
    # The pretraining images are none of the experiment's train or val images.
    images, _ = pretrain.render_images(dataclasses.replace(cfg.data, image_size=64), 8)
    bundle = build_datasets(cfg.data)
    seen = {np.asarray(Image.open(p).convert("RGB")).tobytes() for p in [*bundle.train.paths, *bundle.val.paths]}
    assert not any(img.tobytes() in seen for img in images)
    # fit() resolves the name (pretraining once) and trains on top of the frozen weights.
    monkeypatch.setattr(pretrain, "DEFAULT_SETTINGS", TINY)
    resolved = pretrain.resolve_backbone_weights(cfg)
    assert resolved.backbone_weights == str(path) and resolved.backbone == "small_cnn"
    res = fit(cfg.replace(feature_cache=True), log=None)
    loaded = torch.load(path, weights_only=True)
    for name, v in res.model.backbone.state_dict().items():
        assert torch.equal(v, loaded[name]), name


@pytest.mark.slow
def test_features_benchmark_runs_tiny(tmp_path, capsys):
    from salgl_core.bench.__main__ import main

    assert main(["features", "--epochs", "1", "--synthetic-train-images", "32", "--synthetic-val-images", "16",
                 "--batch-size", "8", "--synthetic-steps", "5", "--backbone-weights", "none",
                 "--cache-dir", str(tmp_path), "--real-data", str(tmp_path / "nowhere")]) == 0
    out = json.loads(capsys.readouterr().out)
    syn = out["synthetic"]
    assert set(syn["arms"]) == {"end_to_end", "end_to_end_frozen", "cached"}
    assert all(len(a["epoch_s"]) == 1 and a["mean_epoch_s"] > 0 for a in syn["arms"].values())
    assert syn["cache_build"]["train"]["built_now"] and syn["cache_build"]["train"]["shape"] == [32, 128, 8, 8]
    assert syn["ratio_epoch_end_to_end_over_cached"] > 0 and "pretraining" not in syn
    steps = syn["steps"]
    assert steps["end_to_end_frozen"]["steps"] == 5 and "backbone" in steps["end_to_end_frozen"]["forward_ms_by_module"]
    assert "backbone" not in steps["cached"]["forward_ms_by_module"] and steps["cached"]["step_ms"] > 0
    assert "coco128" in out["coco_subset"]["skipped"]
