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
from torchvision import transforms as T

from salgl_core import features, pretrain
from salgl_core.backbone import BackboneWeightsError, build_backbone
from salgl_core.config import ConfigError, ExperimentConfig
from salgl_core.data import DataError, build_datasets, collate
from salgl_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from salgl_core.engine import fit
from salgl_core.metrics import mean_average_precision
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
        # The evaluation transform's images through the backbone, normalised as before the uint8 data path
        # (ToTensor -> Normalize in the transform): the cache build's uint8 batches give the same tokens.
        steps = eval_transform(cfg.data).transforms
        assert isinstance(steps[-1], T.PILToTensor)
        old = T.Compose([*steps[:-1], T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        with torch.no_grad():
            eval_images = torch.stack([old(Image.open(images.paths[i]).convert("RGB")) for i in idx])
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


# ---------------------------------------------------------------------------------------------------
# float16 storage, where a study puts a real-data cache, and the size limit

U16 = 2.0 ** -11  # float16's unit roundoff: round to nearest keeps 11 significant bits


@pytest.fixture
def one_thread():
    """torch on one thread: two runs' worth of small matrices gain nothing from a second, and on 2 cores shared
    with another process two OpenMP threads spin against it (measured: 35 s a run instead of 1.7 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_float16_cache_stays_within_what_its_rounding_allows(tmp_path, monkeypatch, one_thread):
    """The same small synthetic run trained on float32 and on float16 tokens (the small CNN pretrained briefly and
    frozen, 64 px: 8 x 8 tokens, hard scene assignment, 3 epochs; ~4 s). The tolerance follows from float16's
    precision, u = 2^-11:

    - each stored token is its float32 value rounded to 11 significant bits: |x16 - x32| <= u |x32| (plus half the
      subnormal spacing, 2^-25, below 2^-14), checked exactly;
    - the head is smooth in its input (but at a tie between two scenes, where the hard argmax could flip), so a
      relative input error u moves each logit by about u times the head's relative condition number, and the
      sigmoid (slope <= 1/4) passes at most that to the score. We allow tau = 4u = 2^-9 per validation score (a
      condition number up to 16; measured: ~5e-4 at most, ~1e-4 typically);
    - then the float16 run's mAP lies between the mAP of the float32 scores with every positive lowered and every
      negative raised by tau, and with the opposite shift: the i-th best positive's score and the negatives above
      it move by at most tau each, and AP (the interpolated one too) only grows as fewer negatives rank above each
      positive. Here that interval is about +-0.8 mAP;
    - CF1 / OF1 threshold the scores at 0.5: a decision may flip only for a score within tau of it.
    """
    monkeypatch.setattr(pretrain, "DEFAULT_SETTINGS", pretrain.PretrainSettings(images=160, held_out=32, epochs=2,
                                                                                batch_size=16))
    over = {"synthetic_train_images": 256, "synthetic_val_images": 128, "image_size": 64, "epochs": 3,
            "batch_size": 32, "feature_cache": True, "backbone_weights": "synthetic-pretrained"}
    f32 = fit(smoke_cfg(str(tmp_path), **over), log=None)
    f16 = fit(smoke_cfg(str(tmp_path), feature_cache_dtype="float16", **over), log=None)
    folders = {json.loads((tmp_path / n / "meta.json").read_text())["dtype"]: tmp_path / n
               for n in feature_folders(tmp_path) if "-train-" in n}
    assert set(folders) == {"float32", "float16"}  # the dtype is part of the key: two caches
    x32, x16 = (np.load(folders[d] / "features.npy") for d in ("float32", "float16"))
    assert x32.dtype == np.float32 and x16.dtype == np.float16 and x16.shape == x32.shape == (256, 128, 8, 8)
    size = {d: (folders[d] / "features.npy").stat().st_size for d in folders}
    assert size["float16"] < 0.51 * size["float32"]
    x32, err = x32.astype(np.float64), np.abs(x16.astype(np.float64) - x32)
    assert (err <= U16 * np.abs(x32) + 2.0 ** -25).all() and err.max() > 0  # rounded, and no more than rounding

    tau = 4 * U16
    assert f16.best_epoch == f32.best_epoch
    p32, p16 = f32.predictions, f16.predictions
    np.testing.assert_array_equal(p16["image_ids"], p32["image_ids"])
    s32, s16, targets = p32["scores"], p16["scores"], p32["targets"].astype(bool)
    assert np.abs(s16 - s32).max() <= tau
    toward = np.where(targets, 1.0, -1.0) * tau * (1 + 1e-6)  # positives up, negatives down (ties broken)
    low, high = (100 * mean_average_precision(s32 + sign * toward, targets) for sign in (-1, 1))
    best32, best16 = f32.epochs[f32.best_epoch - 1], f16.epochs[f16.best_epoch - 1]
    assert best32["mAP_ema"] == pytest.approx(100 * mean_average_precision(s32, targets))  # what the rows report
    assert low <= best16["mAP_ema"] <= high and high - low < 3  # a tolerance that says something
    decided = np.abs(s32 - 0.5) > tau
    np.testing.assert_array_equal((s16 >= 0.5)[decided], (s32 >= 0.5)[decided])
    if decided.all():  # no score near the threshold: the EMA model's threshold metrics are the same
        assert (best16["CF1_ema"], best16["OF1_ema"]) == pytest.approx((best32["CF1_ema"], best32["OF1_ema"]))


def test_a_real_data_study_keeps_its_cache_on_the_storage_path(tmp_path):
    """A study on real data with feature_cache puts its cache under --storage-path (every node of a cluster reads
    the one copy the Ray task built: studies/tuning/caches.py), recorded as the trials' cache_dir; synthetic data,
    a URI storage path (no memory map there) and an explicit --cache-dir keep features.py's location."""
    from studies import scene_count
    from studies.tuning.caches import CACHE_FOLDER
    from studies.tuning.plan import base_config

    def cache_dir(*argv: str) -> str | None:
        args = scene_count.get_args_parser().parse_args([*argv, "--set", "freeze_backbone=true"])
        return base_config(args)[0]["cache_dir"]

    coco = ("--dataset", "coco", "--set", "feature_cache=true")
    assert cache_dir(*coco, "--storage-path", str(tmp_path / "ray")) == str(tmp_path / "ray" / CACHE_FOLDER)
    assert cache_dir(*coco, "--storage-path", "s3://bucket/prefix") is None  # features.py's default location
    assert cache_dir(*coco, "--storage-path", str(tmp_path / "ray"), "--cache-dir", str(tmp_path / "c")) == str(
        tmp_path / "c")
    assert cache_dir("--dataset", "coco", "--set", "feature_cache=false", "--storage-path", str(tmp_path)) is None
    synthetic = cache_dir("--storage-path", str(tmp_path / "ray"))  # STUDY_SYNTHETIC caches features too
    assert synthetic is not None and CACHE_FOLDER not in synthetic


def test_a_cache_above_the_limit_is_refused_in_one_line(tmp_path, monkeypatch):
    # The arithmetic behind MAX_CACHE_GB (features.py): full COCO 2014 with ResNet-101.
    coco = 82_783 + 40_504
    r101 = ExperimentConfig.from_flat({"freeze_backbone": True, "feature_cache": True})
    half = r101.replace(feature_cache_dtype="float16")
    assert features.check_cache_size(r101, coco, (2048, 14, 14)) == coco * 2048 * 14 * 14 * 4  # 448 px: 198 GB
    assert features.check_cache_size(half, coco, (2048, 7, 7)) == coco * 2048 * 7 * 7 * 2  # the screening: 24.7 GB
    assert features.check_cache_size(half, coco, (2048, 18, 18)) == coco * 2048 * 18 * 18 * 2  # 576 px: 164 GB
    with pytest.raises(ConfigError) as e:
        features.check_cache_size(r101, coco, (2048, 18, 18))  # 576 px in float32: 327 GB
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("the feature cache would take 327 GB (123287 images x 2048x18x18 "
                                              "tokens in float32), above the 200 GB limit")
    assert "feature_cache_dtype float16" in msg and "feature_cache false" in msg
    # A build checks before it computes anything: nothing is written.
    monkeypatch.setattr(features, "MAX_CACHE_GB", 1e-4)  # 100 kB
    cfg = smoke_cfg(str(tmp_path), feature_cache=True)
    with pytest.raises(ConfigError, match=r"^the feature cache would take 0.000393 GB \(48 images x 128x4x4 tokens in "
                                          r"float32\), above the 0.0001 GB limit"):
        features.build_feature_cache(cfg, log=None)
    assert not feature_folders(tmp_path) and not list(tmp_path.glob(".tmp-features-*"))


def test_the_cache_task_asks_for_a_gpu_when_the_cluster_has_one(monkeypatch):
    """studies.tuning.caches.build_in_ray with Ray's remote/get/nodes replaced: which resources the task asks for,
    on which device it computes, and that synthetic data needs no task (its driver builds the cache)."""
    import ray

    from studies.tuning import caches

    calls: list[tuple[dict, list[str], int]] = []

    def remote(**resources):
        class Task:
            def remote(self, flats, threads):
                calls.append((resources, [f["device"] for f in flats], threads))
                return "ref"
        return lambda fn: Task()

    monkeypatch.setattr(ray, "remote", remote)
    monkeypatch.setattr(ray, "get", lambda ref: [])
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}},
                                               {"Alive": True, "Resources": {"CPU": 4.0}}])
    coco = ExperimentConfig.from_flat({"dataset": "coco", "freeze_backbone": True, "feature_cache": True,
                                       "cache_dir": "/shared/ray/feature-caches", "device": "auto"})
    lines: list[str] = []
    caches.build_in_ray([coco, coco], {"gpus": 2.0}, explicit_device=False, log=lines.append)  # one task, one config
    caches.build_in_ray([coco], {"gpus": 0.0}, explicit_device=False, log=lines.append)
    caches.build_in_ray([coco.replace(device="cpu")], {"gpus": 2.0}, explicit_device=True, log=lines.append)
    caches.build_in_ray([coco.replace(device="cuda:1")], {"gpus": 2.0}, explicit_device=True, log=lines.append)
    assert calls == [({"max_retries": 0, "num_gpus": 1, "num_cpus": 1}, ["cuda"], 0),
                     ({"max_retries": 0, "num_cpus": 16}, ["cpu"], 16),
                     ({"max_retries": 0, "num_cpus": 16}, ["cpu"], 16),
                     ({"max_retries": 0, "num_gpus": 1, "num_cpus": 1}, ["cuda:1"], 0)]
    assert lines[0] == "feature cache: the backbone's tokens of every image, once, in a Ray task on 1 GPU"
    assert lines[1] == "feature cache: the backbone's tokens of every image, once, in a Ray task on 16 CPU(s)"
    assert caches.build_in_ray([smoke_cfg("/tmp/x", feature_cache=True)], {"gpus": 2.0}, False) == []
    assert len(calls) == 4


def test_a_token_beyond_float16_stops_the_build(tmp_path):
    cfg = smoke_cfg(str(tmp_path), feature_cache=True, feature_cache_dtype="float16")
    bundle = build_datasets(cfg.data)
    torch.manual_seed(0)
    backbone, _ = build_backbone("small_cnn", None)

    class Loud(torch.nn.Module):  # the small CNN's output, 1e5 times: beyond float16's 65504
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return backbone(x) * 0 + 1e5

    key = features.feature_key(cfg, bundle, "train", backbone)
    with pytest.raises(DataError, match=r"^the backbone's features reach 1e\+05, beyond float16's range \(\+-65504\); "
                                        r"use feature_cache_dtype float32$"):
        features.build_split(key, tmp_path / "root", bundle.train, Loud(), torch.device("cpu"), batch_size=8)
    assert not feature_folders(tmp_path / "root") and not list((tmp_path / "root").glob(".tmp-*"))


@pytest.mark.parametrize("epochs, batch", [(2, 16), (1, 32), (1, 80)])  # 10, 2 and 1 steps
def test_pretraining_of_few_steps_runs(tmp_path, epochs, batch):
    """10 steps at pct_start 0.1 left OneCycle a warm-up of no step (ZeroDivisionError); under 3 no schedule."""
    cfg = smoke_cfg(str(tmp_path))
    settings = pretrain.PretrainSettings(images=96, held_out=16, epochs=epochs, batch_size=batch)
    state, report = pretrain.train_small_cnn(cfg.data, settings)
    assert state and len(report["bce_per_epoch"]) == epochs
