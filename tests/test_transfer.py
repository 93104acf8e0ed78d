"""salgl_core/transfer.py (--init-from): load by name and shape, the label-specific modules afresh, the messages;
the engine (never on resume), the studies (absolute path, checked before Ray; a whole study started --init-from is
in tests/test_studies_trackers.py's smoke study) and a real COCO -> VOC run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from salgl_core import engine
from salgl_core.checkpoint import BEST_EMA, CHECKPOINT, save_checkpoint
from salgl_core.config import ExperimentConfig
from salgl_core.ema import ModelEMA
from salgl_core.embeddings import shipped_path
from salgl_core.engine import fit
from salgl_core.model import build_model
from salgl_core.presets import SMOKE, get_recipe, synthetic_preset
from salgl_core.transfer import (
    LABEL_SPECIFIC,
    LOADED,
    REINITIALISED,
    RUN_FILES,
    SKIPPED,
    InitFromError,
    init_from,
    plan_transfer,
    read_source,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
VOC = SHARED / "voc_mmdet_fixture"
COCO_TRAIN, COCO_VAL = SHARED / "coco128", SHARED / "coco_tiny_train2017"
SMALL = {"backbone": "small_cnn", "backbone_weights": None, "att_dim": 16, "enc_heads": 2, "enc_ffn": 32}
CLASSES = [f"c{i}" for i in range(8)]


def _cfg(**over) -> ExperimentConfig:
    return ExperimentConfig.from_flat({**synthetic_preset(), **SMALL, "synthetic_classes": 8, **over})


def _model(seed: int, cfg: ExperimentConfig | None = None) -> nn.Module:
    torch.manual_seed(seed)
    return build_model((cfg or _cfg()).model, len(CLASSES))


def _best_ema(path: Path, model: nn.Module, cfg: ExperimentConfig, epoch: int = 3) -> Path:
    """A run folder holding what fit() writes as best_ema.pt."""
    path.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path / BEST_EMA, {"model": model.state_dict(), "epoch": epoch, "config": cfg.to_flat(),
                                      "class_names": CLASSES})
    return path


def _t(*shape: int) -> torch.Tensor:
    return torch.zeros(shape)


def test_plan_loads_by_name_and_shape_and_names_the_label_specific_modules():
    target = {"backbone.0.weight": _t(4, 3), "encoder.w": _t(2), "scene_linear.weight": _t(6, 4),
              "label_embedding.weight": _t(20, 8), "attention.linear1.weight": _t(3, 4), "gnn.W_z.weight": _t(3, 6),
              "head.weight": _t(3, 6), "classifier.weight": _t(20, 3), "classifier.bias": _t(20),
              "cooccurrence.counts": _t(6, 20, 20)}
    # The label-specific entries have the very same shapes in the source: they are re-initialised by name.
    source = {**{k: torch.ones_like(v) for k, v in target.items() if k != "gnn.W_z.weight"},
              "head.weight": _t(3, 3), "extra.weight": _t(5)}
    by_name = {e.name: e for e in plan_transfer(target, source)}
    assert {n for n, e in by_name.items() if e.action == LOADED} == {
        "backbone.0.weight", "encoder.w", "scene_linear.weight", "attention.linear1.weight"}
    assert {n for n, e in by_name.items() if e.action == REINITIALISED} == {
        "label_embedding.weight", "classifier.weight", "classifier.bias", "cooccurrence.counts"}
    assert by_name["classifier.bias"].why == "label-specific: one classifier per class"
    head = by_name["head.weight"]
    assert (head.action, head.why) == (SKIPPED, "the source's is [3, 3]: fresh init")
    assert by_name["gnn.W_z.weight"].why == "not in the source: fresh init"
    assert by_name["extra.weight"].action == SKIPPED and by_name["extra.weight"].why == "not in this model: unused"
    assert list(by_name)[:len(target)] == list(target)  # the model's order, then the source's leftovers


def test_the_label_specific_names_are_salgl_modules():
    model = _model(0)
    keys = model.state_dict()
    for name in LABEL_SPECIFIC:
        assert isinstance(getattr(model, name), nn.Module), name
        assert any(k.startswith(name + ".") for k in keys), name


def test_init_from_a_run_folder_loads_everything_but_the_label_specific_parts(tmp_path):
    """Two configs with the same number of classes: the label-specific entries match in shape and are still
    re-initialised; everything else is the source's; the table says so."""
    cfg = _cfg()
    src = _model(0, cfg)
    with torch.no_grad():
        src.cooccurrence.counts.fill_(5.0)  # a trained model's counts
    run = _best_ema(tmp_path / "coco-run", src, cfg)
    dst = _model(1, cfg)
    fresh = {k: v.clone() for k, v in dst.state_dict().items()}
    lines: list[str] = []
    report = init_from(dst, run, lines.append)
    after, before = dst.state_dict(), src.state_dict()
    assert report.source.file == run / BEST_EMA and report.source.what == "the EMA model of epoch 3 (its best)"
    assert report.names(SKIPPED) == []
    assert report.names(REINITIALISED) == ["cooccurrence.counts", "label_embedding.weight", "classifier.weight",
                                           "classifier.bias"]
    for name in report.names(LOADED):
        assert torch.equal(after[name], before[name]), name
    for name in report.names(REINITIALISED):
        assert torch.equal(after[name], fresh[name]) and not torch.equal(after[name], before[name]), name
    assert not after["cooccurrence.counts"].any()
    assert {n.split(".")[0] for n in report.names(LOADED)} == {"backbone", "encoder", "scene_linear", "attention",
                                                               "gnn", "head"}
    table = lines[0].splitlines()
    assert table[0] == (f"init_from {run / BEST_EMA}: the EMA model of epoch 3 (its best) (synthetic, 8 classes, "
                        "small_cnn)")
    assert table[1].split() == ["name", "shape", "why"]
    assert any(r.split()[:2] == ["loaded", "backbone.*"] and r.endswith("name and shape match") for r in table)
    row = next(r for r in table if " classifier.weight " in r)
    assert row.split()[:4] == ["re-initialised", "classifier.weight", "[8,", "128]"]
    assert row.endswith("label-specific: one classifier per class")


def test_a_folder_without_best_ema_gives_the_ema_weights_of_its_checkpoint(tmp_path):
    cfg = _cfg()
    live = _model(0, cfg)
    ema = ModelEMA(live, 0.5)
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)  # the live weights moved on; the reported (EMA) ones did not
    run = tmp_path / "trial"
    run.mkdir()
    save_checkpoint(run / CHECKPOINT, {"model": live.state_dict(), "ema": ema.state_dict(), "epoch": 2,
                                       "config": cfg.to_flat(), "class_names": CLASSES})
    dst = _model(1, cfg)
    report = init_from(dst, run, log=None)
    assert report.source.file == run / CHECKPOINT and report.source.what.startswith("the EMA weights of epoch 2")
    w = next(name for name, _ in live.named_parameters() if name.startswith("backbone."))
    assert torch.equal(dst.state_dict()[w], ema.module.state_dict()[w])
    assert not torch.equal(dst.state_dict()[w], live.state_dict()[w])
    # With both files, the folder gives best_ema.pt: the EMA model of the best epoch.
    _best_ema(run, _model(2, cfg), cfg, epoch=1)
    assert RUN_FILES[0] == BEST_EMA and read_source(run).file == run / BEST_EMA


def test_bad_sources_are_one_line_naming_the_file_and_what_it_holds(tmp_path):
    (tmp_path / "empty").mkdir()
    config = tmp_path / "config.json"
    config.write_text("{}")
    torch.save([1, 2], tmp_path / "list.pt")
    torch.save({"conv1.weight": torch.zeros(2), "bn1.weight": torch.zeros(2)}, tmp_path / "resnet.pth")
    cases = [
        (tmp_path / "nope", f"--init-from {tmp_path / 'nope'} does not exist: name a training run's folder or its "
                            "best_ema.pt"),
        (tmp_path / "empty", f"--init-from {tmp_path / 'empty'} is a folder without best_ema.pt or checkpoint.pt: "
                             "name a training run's folder (--out of python -m salgl_core.train) or one of those "
                             "files"),
        (config, f"--init-from {config} is not a checkpoint ("),
        (tmp_path / "list.pt", f"--init-from {tmp_path / 'list.pt'} holds no model weights (list): "),
        (tmp_path / "resnet.pth", f"--init-from {tmp_path / 'resnet.pth'} holds no SALGL model (its entries: "
                                  "conv1.weight, bn1.weight, ...): name a SALGL run; backbone weights alone go to "
                                  "--backbone-weights"),
    ]
    for path, message in cases:
        with pytest.raises(InitFromError) as e:
            init_from(_model(0), path, log=None)
        assert str(e.value).startswith(message) and "\n" not in str(e.value), str(e.value)


def test_a_run_of_another_backbone_is_refused(tmp_path):
    cfg = _cfg()
    run = _best_ema(tmp_path / "small", _model(0, cfg), cfg)
    resnet = build_model(ExperimentConfig.from_flat({**cfg.to_flat(), "backbone": "resnet18"}).model, len(CLASSES))
    with pytest.raises(InitFromError) as e:
        init_from(resnet, run, log=None)
    assert str(e.value) == (f"{run / BEST_EMA} holds a small_cnn model (backbone.* shapes differ): --init-from needs "
                            "a resnet18 run")


@pytest.fixture(scope="module")
def smoke_source(tmp_path_factory):
    """A 1-epoch smoke run on synthetic data, the run others start from."""
    torch.set_num_threads(2)
    tmp = tmp_path_factory.mktemp("init-source")
    cfg = ExperimentConfig.from_flat({**synthetic_preset(), **SMOKE, "cache_dir": str(tmp / "cache")})
    fit(cfg, tmp / "run", log=None)
    return cfg, tmp / "run"


@pytest.mark.slow
def test_a_resumed_run_continues_from_its_own_checkpoint(smoke_source, tmp_path, monkeypatch):
    src_cfg, src = smoke_source
    copy = tmp_path / "source"
    shutil.copytree(src, copy)
    cfg = src_cfg.replace(epochs=2, init_from=str(copy))
    calls: list[str] = []
    real = engine.init_from
    monkeypatch.setattr(engine, "init_from", lambda m, p, log: calls.append(p) or real(m, p, log))

    class Crash(Exception):
        pass

    def crash(m):
        if m["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        fit(cfg, tmp_path / "run", log=None, on_epoch=crash)
    assert calls == [str(copy)]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["init_from"] == str(copy)
    shutil.rmtree(copy)  # the source is gone: a resume must not need it
    lines: list[str] = []
    result = fit(cfg, tmp_path / "run", resume=True, log=lines.append)
    assert calls == [str(copy)] and [r["epoch"] for r in result.epochs] == [1, 2]
    assert lines[0] == f"init_from {copy} not applied: resuming from {tmp_path / 'run' / CHECKPOINT}"
    with pytest.raises(InitFromError, match="does not exist"):  # a fresh run does need it
        fit(cfg, tmp_path / "other", log=None)


@pytest.mark.slow
def test_the_cli_says_one_line(tmp_path):
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("hello")
    common = ["--cache-dir", str(tmp_path / "cache"), "--synthetic-train-images", "16", "--synthetic-val-images",
              "8", "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--no-progress"]
    out = subprocess.run([sys.executable, "-m", "salgl_core.train", *common, "--init-from", str(not_a_checkpoint),
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith(f"error: --init-from {not_a_checkpoint} is not a checkpoint (")
    assert out.stderr.count("\n") == 1, out.stderr
    out = subprocess.run([sys.executable, "-m", "salgl_core.train", "--recipe", "paper-voc2007-from-coco-r101-448",
                          "--out", str(tmp_path / "voc")], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 2 and out.stdout == "" and out.stderr == (
        "error: recipe paper-voc2007-from-coco-r101-448 needs init_from: --init-from RUN, the COCO run to fine-tune "
        "from (a paper-coco-r101-448 run's folder or its best_ema.pt)\n")
    assert not (tmp_path / "voc").exists()


@pytest.mark.slow
def test_a_study_makes_the_path_absolute_and_checks_it_before_ray(smoke_source, tmp_path, monkeypatch, capsys):
    from studies import scene_count
    from studies.tuning.plan import check_inputs, make_plan

    _, src = smoke_source
    monkeypatch.chdir(src.parent)

    def plan(path: str):
        args = scene_count.get_args_parser().parse_args(
            ["--smoke", "--values", "2", "--seeds", "0", "--init-from", path,
             "--results-dir", str(tmp_path / "results"), "--storage-path", str(tmp_path / "ray")])
        return make_plan(args, scene_count.SPEC)

    good = plan(src.name)
    assert good.base["init_from"] == str(src)  # trials run in folders of their own
    check_inputs(good)
    out = capsys.readouterr().out
    assert f"init_from {src / BEST_EMA}: the EMA model of epoch 1 (its best)" in out
    with pytest.raises(InitFromError, match=r"^--init-from .*/missing does not exist"):
        check_inputs(plan("missing"))


# --- real data: a VOC 2007 run started from a tiny COCO run

needs_shared = pytest.mark.skipif(not (COCO_TRAIN.is_dir() and COCO_VAL.is_dir() and VOC.is_dir()),
                                  reason="../shared/data (coco128, coco_tiny_train2017, voc_mmdet_fixture) is not "
                                         "available")
TINY = {**SMALL, "image_size": 64, "num_workers": 0, "device": "cpu", "amp": "none", "channels_last": False,
        "randaugment": "none", "deterministic": True}


@needs_shared
@pytest.mark.slow
def test_voc_from_a_tiny_coco_run_on_the_real_files(tmp_path, monkeypatch):
    torch.set_num_threads(2)
    coco = ExperimentConfig.from_flat({
        **get_recipe("paper-coco-r101-448").overrides(), **TINY, "epochs": 1, "batch_size": 16,
        "train_images": str(COCO_TRAIN / "train2017"),
        "train_annotations": str(COCO_TRAIN / "annotations" / "instances_train2017.json"),
        "val_images": str(COCO_VAL / "train2017"),
        "val_annotations": str(COCO_VAL / "annotations" / "instances_train2017.json")})
    fit(coco, tmp_path / "coco", log=None)
    coco_weights = torch.load(tmp_path / "coco" / BEST_EMA, weights_only=True)["model"]

    started: dict[str, torch.Tensor] = {}
    reports = []
    real = engine.init_from

    def spy(model, path, log):
        reports.append(real(model, path, log))
        started.update({k: v.clone() for k, v in model.state_dict().items()})
        return reports[-1]

    monkeypatch.setattr(engine, "init_from", spy)
    voc = ExperimentConfig.from_flat({
        **get_recipe("paper-voc2007-from-coco-r101-448").overrides(), **TINY, "epochs": 2, "batch_size": 2,
        "data_root": str(VOC), "skip_corrupt": True, "init_from": str(tmp_path / "coco")})
    lines: list[str] = []
    result = fit(voc, tmp_path / "voc", log=lines.append)
    assert [r["epoch"] for r in result.epochs] == [1, 2]
    (report,) = reports
    assert report.source.file == tmp_path / "coco" / BEST_EMA and len(report.source.class_names) == 80
    # Same K and widths: everything but the label-specific modules is the COCO run's; they are VOC's own.
    assert report.names(SKIPPED) == []
    assert set(report.names(REINITIALISED)) == {"cooccurrence.counts", "label_embedding.weight", "classifier.weight",
                                                "classifier.bias"}
    backbone = [k for k in started if k.startswith("backbone.")]
    assert backbone and set(backbone) <= set(report.names(LOADED))
    for k in report.names(LOADED):
        assert torch.equal(started[k], coco_weights[k]), k
    assert tuple(started["classifier.weight"].shape) == (20, 128) and not started["cooccurrence.counts"].any()
    # The label embeddings are VOC's BERT vectors, as the new config says.
    assert torch.equal(started["label_embedding.weight"], torch.from_numpy(np.load(shipped_path("bert", "voc2007"))))
    assert any(line.startswith(f"init_from {tmp_path / 'coco' / BEST_EMA}") for line in lines)
    assert json.loads((tmp_path / "voc" / "config.json").read_text())["init_from"] == str(tmp_path / "coco")
