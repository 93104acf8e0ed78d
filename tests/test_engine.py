"""End-to-end training on small synthetic data: learning, exact resume, divergence, the CLI."""

import csv
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from salgl_core import engine, predict
from salgl_core.checkpoint import BEST_EMA, BEST_EMA_PENDING
from salgl_core.config import ExperimentConfig
from salgl_core.data import build_datasets
from salgl_core.engine import CHECKPOINT, DivergedError, fit
from salgl_core.metrics import mean_average_precision
from salgl_core.model import random_scenes
from salgl_core.presets import SMOKE, synthetic_preset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("synthetic-cache"))


def small_cfg(cache_dir: str, **over) -> ExperimentConfig:
    flat = {**synthetic_preset(), "synthetic_train_images": 512, "synthetic_val_images": 256,
            "cache_dir": cache_dir, "epochs": 2, "batch_size": 32, "deterministic": True, **over}
    return ExperimentConfig.from_flat(flat)


@pytest.mark.slow
def test_two_epochs_beat_label_frequency_baseline(cache_dir):
    torch.set_num_threads(2)
    cfg = small_cfg(cache_dir)
    data = build_datasets(cfg.data)
    result = fit(cfg, data=data, log=None)
    # Baseline: score every image with the training label frequencies (the best input-blind ranking).
    freq = data.train_labels.mean(axis=0)
    scores = np.tile(freq, (len(data.val_labels), 1)) + 1e-9 * np.random.default_rng(0).random(data.val_labels.shape)
    baseline = 100 * mean_average_precision(scores, data.val_labels)
    final = result.epochs[-1]
    assert len(result.epochs) == 2
    assert final["mAP"] > baseline + 10, (final["mAP"], baseline)
    for key in ("mAP_ema", "CF1", "OF1", "CF1_top3", "OF1_top3", "loss_cls", "loss_sample_entropy",
                "loss_batch_entropy", "seconds", "images_per_second"):
        assert np.isfinite(final[key]), key
    assert len(final["scene_usage"]) == cfg.model.num_scenes
    assert abs(sum(final["scene_usage"]) - 1) < 1e-6
    assert final["scene_nmi"] is not None  # synthetic data knows its true scenes
    rep = result.scene_report
    k, c = cfg.model.num_scenes, data.num_classes
    assert np.array(rep["cooccurrence_prob"]).shape == (k, c, c)
    assert np.array(rep["contingency"]).shape[0] == k


@pytest.mark.slow
def test_resume_gives_the_same_second_epoch(cache_dir, tmp_path):
    torch.set_num_threads(2)
    # Exactness does not depend on size: the smoke model (32 px, narrow head) on 128 images, 2 epochs.
    cfg = small_cfg(cache_dir, **{**SMOKE, "synthetic_train_images": 128, "synthetic_val_images": 64, "epochs": 2})
    data = build_datasets(cfg.data)
    full = fit(cfg, tmp_path / "full", data=data, log=None)

    class Crash(Exception):
        pass

    def crash_after_first(m):
        if m["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        fit(cfg, tmp_path / "split", data=data, log=None, on_epoch=crash_after_first)
    assert (tmp_path / "split" / CHECKPOINT).is_file()
    resumed = fit(cfg, tmp_path / "split", data=data, log=None, resume=True)
    a, b = full.epochs[1], resumed.epochs[1]
    assert len(resumed.epochs) == 2 and b["epoch"] == 2
    for key in ("loss_total", "loss_cls", "mAP", "mAP_ema", "CF1", "OF1"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-5), key
    for (name, p), q in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
    rows = list(csv.DictReader(open(tmp_path / "split" / "epochs.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    saved = torch.load(tmp_path / "split" / CHECKPOINT, weights_only=True)
    assert saved["epoch"] == 2
    assert saved["best_scores"]["epoch"] == full.best_epoch

    # The reported model's predictions: the best EMA epoch's scores, whose mAP is the reported one.
    p = full.predictions
    assert p["scores"].shape == p["targets"].shape == p["ignore"].shape == (len(data.val), data.num_classes)
    np.testing.assert_array_equal(p["image_ids"], np.asarray(data.val.ids))
    assert 100 * mean_average_precision(p["scores"], p["targets"]) == pytest.approx(full.best_mAP_ema, abs=1e-6)
    # They survive a resume: after a crash, and of a finished run, which trains no epoch and so can only
    # take them from its checkpoint.
    done = fit(cfg, tmp_path / "split", data=data, log=None, resume=True)
    assert done.epochs == resumed.epochs and done.best_epoch == full.best_epoch
    for again in (resumed, done):
        assert set(again.predictions) == set(p)
        for key in p:
            np.testing.assert_allclose(again.predictions[key], p[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_checkpoint_every_and_an_exact_resume_from_its_last_checkpoint(cache_dir, tmp_path, monkeypatch):
    """checkpoint_every 2 over 4 epochs: checkpoint.pt after epochs 2 and 4 only (epochs.csv after each). A crash
    after epoch 3 resumes from epoch 2's checkpoint and trains epoch 3 again, exactly as the first time."""
    torch.set_num_threads(2)
    cfg = small_cfg(cache_dir, **{**SMOKE, "epochs": 4, "checkpoint_every": 2})  # SMOKE: 32 images of 32 px
    data = build_datasets(cfg.data)
    written = []
    real = engine.save_checkpoint

    def spy(path, state):
        if Path(path).name == CHECKPOINT:
            written.append(state["epoch"])
        real(path, state)

    monkeypatch.setattr(engine, "save_checkpoint", spy)

    class Crash(Exception):
        pass

    first: dict = {}

    def crash_after_third(m):
        if m["epoch"] == 3:
            first.update(m)
            raise Crash

    with pytest.raises(Crash):
        fit(cfg, tmp_path, data=data, log=None, on_epoch=crash_after_third)
    assert written == [2] and torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"] == 2
    # best_ema.pt never runs ahead of the checkpoint: a best epoch 3 would still be pending
    assert torch.load(tmp_path / BEST_EMA, weights_only=True)["epoch"] <= 2
    assert [r["epoch"] for r in csv.DictReader(open(tmp_path / "epochs.csv"))] == ["1", "2", "3"]
    lines = []
    resumed = fit(cfg, tmp_path, data=data, log=lines.append, resume=True)
    assert any(line.startswith("resumed from") and line.endswith("after epoch 2") for line in lines), lines
    assert written == [2, 4] and [m["epoch"] for m in resumed.epochs] == [1, 2, 3, 4]
    again = resumed.epochs[2]
    for key in ("loss_total", "loss_cls", "mAP", "mAP_ema", "CF1", "OF1"):
        assert again[key] == pytest.approx(first[key], rel=1e-5, abs=1e-5), key
    assert [r["epoch"] for r in csv.DictReader(open(tmp_path / "epochs.csv"))] == ["1", "2", "3", "4"]
    assert torch.load(tmp_path / BEST_EMA, weights_only=True)["epoch"] == resumed.best_epoch
    assert not (tmp_path / BEST_EMA_PENDING).exists()


@pytest.mark.slow
def test_nan_loss_stops_with_dedicated_error(cache_dir):
    cfg = small_cfg(cache_dir, synthetic_train_images=64, synthetic_val_images=32, lr=1e30, epochs=3)
    with pytest.raises(DivergedError, match=r"diverged at epoch \d+, step \d+") as info:
        fit(cfg, log=None)
    assert info.value.step >= 1


@pytest.mark.slow
def test_cli_end_to_end(cache_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "salgl_core.train", "--dataset", "synthetic", "--cache-dir", cache_dir,
           "--synthetic-train-images", "128", "--synthetic-val-images", "64", "--epochs", "1",
           "--batch-size", "32", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1" in proc.stdout and "EMA mAP" in proc.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"] == "synthetic" and cfg["epochs"] == 1 and cfg["label_embedding"] == "learned"
    assert cfg["recipe"] == "synthetic"  # config.json records where the configuration started
    assert (out / "epochs.csv").is_file() and (out / CHECKPOINT).is_file() and (out / "best_ema.pt").is_file()
    # resuming a finished run trains nothing more and says so cleanly
    proc = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout
    # a user error is one clear line, not a traceback
    bad = subprocess.run([sys.executable, "-m", "salgl_core.train", "--dataset", "coco", "--data-root",
                          str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2
    assert "error:" in bad.stderr and "nowhere" in bad.stderr and "Traceback" not in bad.stderr


def test_cp_cr_rule_and_ema_warmup_reach_the_engine(cache_dir, monkeypatch):
    rules, warmups = [], []
    real_evaluate, real_ema = engine.evaluate, engine.ModelEMA

    def evaluate(*args, **kw):
        rules.append(args[5])
        return real_evaluate(*args, **kw)

    class ModelEMA(real_ema):
        def __init__(self, *args, warmup: bool, **kw) -> None:
            warmups.append(warmup)
            super().__init__(*args, warmup=warmup, **kw)

    monkeypatch.setattr(engine, "evaluate", evaluate)
    monkeypatch.setattr(engine, "ModelEMA", ModelEMA)
    cfg = ExperimentConfig.from_flat({**synthetic_preset(), **SMOKE, "cache_dir": cache_dir,
                                      "cp_cr_rule": "zero_if_undefined", "ema_warmup": False})
    fit(cfg, log=None)
    assert rules == ["zero_if_undefined"] * 2 and warmups == [False]  # the live and the EMA model


def smoke_cfg(cache_dir: str, source: str, **over) -> ExperimentConfig:
    return ExperimentConfig.from_flat({**synthetic_preset(), **SMOKE, "cache_dir": cache_dir, "deterministic": True,
                                       "num_scenes": SMOKE["synthetic_scenes"], "scene_source": source, **over})


def test_oracle_counts_are_the_per_scene_label_counts(cache_dir):
    torch.set_num_threads(1)
    cfg = smoke_cfg(cache_dir, "oracle")
    data = build_datasets(cfg.data)
    assert len(data.train) % cfg.train.batch_size == 0  # one epoch sees every training image once
    result = fit(cfg, data=data, log=None)
    y, z = data.train_labels.astype(np.float64), data.train.scene_ids
    want = np.stack([y[z == k].T @ y[z == k] for k in range(cfg.model.num_scenes)])
    assert (z == 0).any() and (z == 1).any()
    np.testing.assert_array_equal(result.model.cooccurrence.counts.numpy(), want)  # momentum 1: plain sums
    assert result.model.scene_linear is None
    m = result.epochs[-1]
    assert m["loss_sample_entropy"] == m["loss_batch_entropy"] == 0.0 and m["loss_total"] == m["loss_cls"]
    # it also sees the true scene at evaluation time: its validation scenes are the true ones
    assert m["scene_nmi"] == pytest.approx(1.0) and result.scene_report["true_scene_nmi"] == pytest.approx(1.0)


def test_oracle_without_true_scenes_says_so(cache_dir):
    cfg = smoke_cfg(cache_dir, "oracle")
    data = build_datasets(cfg.data)
    data.train.scene_ids = None
    with pytest.raises(ValueError, match="-1 means the dataset records no true scene"):
        fit(cfg, data=data, log=None)


@pytest.mark.parametrize("source", ["learned", "random"])
def test_learned_and_random_never_see_the_true_scenes(cache_dir, source):
    torch.set_num_threads(1)
    cfg = smoke_cfg(cache_dir, source)
    runs = []
    for hide in (False, True):
        data = build_datasets(cfg.data)
        if hide:  # the items then carry -1; only the scene report keeps the true validation scenes
            data.train.scene_ids = data.val.scene_ids = None
        runs.append(fit(cfg, data=data, log=None))
    seen, blind = runs
    torch.testing.assert_close(seen.model.cooccurrence.counts, blind.model.cooccurrence.counts, rtol=0, atol=0)
    assert seen.epochs[-1]["mAP_ema"] == blind.epochs[-1]["mAP_ema"]
    assert seen.scene_report["contingency"] == blind.scene_report["contingency"]
    assert (seen.model.scene_linear is None) == (source == "random")
    # random: each image's scene is the hash of its index, the same in every run, whatever the true scenes
    if source == "random":
        idx = torch.arange(len(build_datasets(cfg.data).train))
        z = random_scenes(idx, "train", cfg.model.num_scenes).numpy()
        y = build_datasets(cfg.data).train_labels.astype(np.float64)
        want = np.stack([y[z == k].T @ y[z == k] for k in range(cfg.model.num_scenes)])
        np.testing.assert_array_equal(seen.model.cooccurrence.counts.numpy(), want)
        assert seen.epochs[-1]["loss_sample_entropy"] == 0.0


def test_batch_scenes_reads_the_true_ids_for_the_oracle_only():
    batch = {"index": torch.tensor([5, 1, 9]), "scene": torch.tensor([1, 0, 1])}
    scrambled = {**batch, "scene": torch.tensor([-1, -1, -1])}
    for cfg_source, split in itertools.product(("learned", "random"), ("train", "val")):
        cfg = ExperimentConfig.from_flat({"scene_source": cfg_source, "num_scenes": 3}).model
        a, b = predict.batch_scenes(batch, cfg, split), predict.batch_scenes(scrambled, cfg, split)
        assert (a is None and b is None) if cfg_source == "learned" else torch.equal(a, b)
    oracle = ExperimentConfig.from_flat({**synthetic_preset(), "scene_source": "oracle"}).model
    assert predict.batch_scenes(batch, oracle, "val") is batch["scene"]
