"""studies/exports/writer.py: the run folder written event by event, resumed without duplicates, study.json built
from a plan, and portable paths."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from helpers import header, read_rows

from salgl_core.config import ExperimentConfig
from studies import scene_count
from studies import tune as tune_study
from studies.design.paths import REPO
from studies.exports.files import portable_config, portable_path, read_epoch_rows
from studies.exports.schema import EPOCH_COLUMNS, SEARCH_STUDY_KEYS, STUDY_KEYS, TRIAL_COLUMNS
from studies.exports.writer import StudyExport, gpu_name, provenance
from studies.tuning.plan import make_plan, study_json


def _metrics(epoch: int, **extra) -> dict:
    m = {c: float(epoch) for c in EPOCH_COLUMNS[2:]}
    m.update(epoch=epoch, epochs=3, best_epoch=epoch, best_mAP=10.0 * epoch, best_mAP_ema=11.0 * epoch,
             mAP=10.0 * epoch, mAP_ema=11.0 * epoch, CP=1.0, CR=2.0, OP=3.0, OR=4.0, scene_nmi=0.5,
             device="cuda:1 (NVIDIA H100 80GB HBM3)", gpu_ids="1")
    m.update(extra)
    return m


def _meta() -> dict:
    return {"schema_version": 1, "study": "scene_count", "run": "r", "n_trials": 2, "device": "cpu",
            "provenance": {"gpus": []}, "base_config": ExperimentConfig().to_flat()}


def test_a_study_written_event_by_event(tmp_path):
    ex = StudyExport.open(tmp_path / "run", _meta())
    ex.begin()
    flat = ExperimentConfig().to_flat()
    ex.trial_started("a", {**flat, "num_scenes": 2}, seed=0, is_paper=False)
    ex.trial_started("b", flat, seed=1, is_paper=True)
    ex.flush()  # trials.csv is a snapshot written every few seconds (tests/test_export_log.py); now, here
    rows = read_rows(tmp_path / "run" / "trials.csv")
    assert [r["status"] for r in rows] == ["RUNNING", "RUNNING"]
    assert header(tmp_path / "run" / "trials.csv") == list(TRIAL_COLUMNS)

    for e in (1, 2, 3):
        ex.trial_epoch("a", _metrics(e), seconds=5.0 * e)
    ex.trial_ended("a", "FINISHED", scene_report={"num_scenes": 2, "cooccurrence_prob": [[[1.0, math.nan]]],
                                                   "true_scene_nmi": 0.25}, seconds=16.0)
    ex.trial_epoch("b", _metrics(1, mAP_ema=float("nan")))
    ex.trial_ended("b", "DIVERGED", error="training diverged at epoch 2")
    ex.flush()

    rows = {r["trial_id"]: r for r in read_rows(tmp_path / "run" / "trials.csv")}
    a, b = rows["a"], rows["b"]
    assert (a["status"], a["epochs_done"], a["best_epoch"], a["num_scenes"], a["seed"]) == ("FINISHED", "3", "3",
                                                                                             "2", "0")
    assert float(a["mAP_ema"]) == 33.0 and float(a["seconds"]) == 16.0 and a["error"] == ""
    # The device column names the GPU; which one Ray gave the trial is in gpu_ids.
    assert (a["device"], a["gpu_ids"]) == ("NVIDIA H100 80GB HBM3", "1")
    assert b["status"] == "DIVERGED" and b["error"] == "training diverged at epoch 2" and b["mAP_ema"] == ""
    assert b["is_paper_config"] == "True" and a["is_paper_config"] == "False"

    epochs = read_rows(tmp_path / "run" / "epochs.csv")
    assert header(tmp_path / "run" / "epochs.csv") == list(EPOCH_COLUMNS)
    assert [(r["trial_id"], r["epoch"]) for r in epochs] == [("a", "1"), ("a", "2"), ("a", "3"), ("b", "1")]

    scene = json.loads((tmp_path / "run" / "scenes" / "a.json").read_text())  # strict JSON: NaN became null
    assert scene["trial_id"] == "a" and scene["cooccurrence_prob"] == [[[1.0, None]]]

    ex.finish("FINISHED")
    meta = json.loads((tmp_path / "run" / "study.json").read_text())
    assert meta["status"] == "FINISHED" and meta["finished"] and meta["n_finished"] == 2
    assert meta["trial_seconds_total"] == 16.0 and meta["device"] == "NVIDIA H100 80GB HBM3"
    assert meta["provenance"]["gpus"] == ["NVIDIA H100 80GB HBM3"]
    assert not list((tmp_path / "run").rglob("*.tmp"))  # atomic writes leave no temporaries


def test_resume_keeps_every_trial_once(tmp_path):
    ex = StudyExport.open(tmp_path, _meta())
    ex.begin()
    flat = ExperimentConfig().to_flat()
    for t in ("done", "live", "orphan"):
        ex.trial_started(t, flat, seed=0, is_paper=False)
    for e in (1, 2):
        ex.trial_epoch("done", _metrics(e), seconds=2.0 * e)
        ex.trial_epoch("live", _metrics(e))
    ex.trial_epoch("orphan", _metrics(1))
    ex.trial_ended("done", "FINISHED", seconds=4.0)
    started = ex.meta["started"]
    # The driver writes a finished trial's predictions just before its row: a crash in between leaves a file.
    for t in ("done", "orphan"):
        (tmp_path / "predictions").mkdir(exist_ok=True)
        (tmp_path / "predictions" / f"{t}.npz").write_bytes(b"npz")

    # A new session (after a crash): reload, drop what the restored experiment does not know, go on.
    ex2 = StudyExport.open(tmp_path, _meta(), session=(30.0, 0.0))
    assert ex2.meta["started"] == started
    ex2.begin()
    ex2.prune({"done", "live"})
    assert [p.name for p in (tmp_path / "predictions").iterdir()] == ["done.npz"]
    ex2.trial_started("done", flat, seed=0, is_paper=False)  # a finished trial stays finished
    # "live" restarts from its epoch-1 checkpoint: epoch 2 is reported again and replaces the old row.
    ex2.trial_epoch("live", _metrics(2, mAP=99.0))
    ex2.trial_ended("live", "FINISHED")
    ex2.finish("FINISHED")

    rows = read_rows(tmp_path / "trials.csv")
    assert sorted(r["trial_id"] for r in rows) == ["done", "live"]
    assert all(r["status"] == "FINISHED" for r in rows)
    epochs = [(r["trial_id"], r["epoch"], r["mAP"]) for r in read_rows(tmp_path / "epochs.csv")]
    assert epochs == [("done", "1", "10.0"), ("done", "2", "20.0"), ("live", "1", "10.0"), ("live", "2", "99.0")]
    # wall time counts this session from its start (time 0 here) plus the earlier sessions' 30 s.
    assert json.loads((tmp_path / "study.json").read_text())["wall_seconds"] > 30.0

    # A finished trial that Ray runs again after a crash (it had finished after Ray's last snapshot) keeps
    # its first record.
    assert not ex2.trial_ended("done", "FINISHED", seconds=99.0)
    ex2.trial_epoch("done", _metrics(1, mAP=0.0))
    assert read_rows(tmp_path / "trials.csv")[0]["seconds"] == "4.0"
    assert read_rows(tmp_path / "epochs.csv")[0]["mAP"] == "10.0"


def test_a_trial_restarted_from_scratch_drops_its_later_epochs(tmp_path):
    ex = StudyExport.open(tmp_path, _meta())
    for e in (1, 2, 3):
        ex.trial_epoch("t", _metrics(e))
    ex.trial_epoch("t", _metrics(1, mAP=5.0))  # no checkpoint survived: it starts over
    # The log holds all four reports; read by its rules (as every reader does), epoch 1 stands alone ...
    assert len(read_rows(tmp_path / "epochs.csv")) == 4
    assert [(r["epoch"], r["mAP"]) for r in read_epoch_rows(tmp_path / "epochs.csv")] == [("1", "5.0")]
    ex.flush()
    assert read_rows(tmp_path / "trials.csv")[0]["epochs_done"] == "1"
    ex.finish("FINISHED")  # ... and the compacted file holds it alone
    assert [(r["epoch"], r["mAP"]) for r in read_rows(tmp_path / "epochs.csv")] == [("1", "5.0")]


def test_bad_status_is_refused(tmp_path):
    ex = StudyExport.open(tmp_path, _meta())
    with pytest.raises(ValueError, match="RUNNING"):
        ex.trial_ended("x", "RUNNING")


def test_gpu_name_and_provenance(tmp_path):
    assert gpu_name("cuda:0 (NVIDIA A100-SXM4-80GB)") == "NVIDIA A100-SXM4-80GB"
    assert gpu_name("cpu") == "cpu"
    p = provenance(tmp_path, {"nodes": 1, "cpus": 2.0, "gpus": 0.0})  # tmp_path is no git repository
    assert p["git_commit"] is None and p["packages"]["optuna"] and p["packages"]["ray"]
    assert set(p) >= {"git_commit", "git_dirty", "python", "packages", "platform", "cpu", "cpu_count", "gpus",
                      "ray_cluster"}


def test_git_dirty_means_code_not_exports(tmp_path):
    """A study run with --overwrite deletes its committed export first: that must not make the code dirty."""
    def git(*a: str) -> None:
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for f in ("code.py", "results/s/r/trials.csv", "runs/s/r/trials.csv"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    (tmp_path / "results/s/r/trials.csv").unlink()
    (tmp_path / "runs/s/r/trials.csv").write_text("y\n")
    assert provenance(tmp_path, {})["git_dirty"] is False
    (tmp_path / "code.py").write_text("changed\n")
    assert provenance(tmp_path, {})["git_dirty"] is True


def _plan(module, tmp: Path, *argv: str):
    args = module.get_args_parser().parse_args(
        ["--results-dir", str(tmp / "results"), "--storage-path", str(tmp / "ray"), "--name", "r", *argv])
    return make_plan(args, module.SPEC)


def _study_json(plan, **overrides) -> dict:
    kw = {"base_config": plan.trial_base(0.0), "class_names": ["a", "b"], "cluster": {"nodes": 1, "cpus": 2.0,
          "gpus": 0.0}, "gpus_per_trial": 0.0, "cpus_per_trial": 1.0, "max_concurrent": 2, "started": 0.0}
    return study_json(plan, **{**kw, **overrides})


def test_study_json_is_built_from_the_plan(tmp_path):
    plan = _plan(scene_count, tmp_path, "--values", "1", "4")
    meta = _study_json(plan)
    assert set(meta) == set(STUDY_KEYS)
    assert (meta["study"], meta["run"], meta["axis"], meta["axis_values"], meta["sampler"], meta["scheduler"]) == (
        "scene_count", "r", "num_scenes", [1, 4], "GridSampler", "FIFO")
    assert (meta["n_trials"], meta["seeds"], meta["paper_config"], meta["reported_metric"]) == (
        6, [0, 1, 2], {"num_scenes": 4}, "best_mAP_ema")
    assert meta["resources_per_trial"] == {"gpu": 0.0, "cpu": 1.0} and meta["max_concurrent"] == 2
    assert (meta["status"], meta["started"], meta["finished"]) == ("RUNNING", "1970-01-01T00:00:00Z", None)
    assert meta["base_config"]["device"] == "cpu" and meta["provenance"]["ray_cluster"]["cpus"] == 2.0
    meta = _study_json(_plan(tune_study, tmp_path))
    assert set(meta) == set(STUDY_KEYS) | set(SEARCH_STUDY_KEYS)
    assert (meta["axis"], meta["axis_values"], meta["sampler"], meta["scheduler"]) == (None, None, "TPESampler",
                                                                                       "ASHA")


def test_exports_are_portable(tmp_path):
    """Repository paths relative, the user's other paths kept, machine-local caches left out."""
    inside = REPO / "data" / "coco"
    assert portable_path(inside) == "data/coco" and portable_path(REPO) == "."
    assert portable_path(tmp_path / "x") == str(tmp_path / "x") and portable_path("rel/x") == "rel/x"
    flat = {**ExperimentConfig().to_flat(), "data_root": str(inside), "val_images": str(tmp_path / "val"),
            "cache_dir": str(REPO / ".cache" / "synthetic"), "label_embedding": "bert"}
    out = portable_config(flat)
    assert "cache_dir" not in out and out["data_root"] == "data/coco" and out["val_images"] == str(tmp_path / "val")
    assert out["label_embedding"] == "bert" and flat["cache_dir"]  # the input is not changed
    plan = _plan(scene_count, tmp_path)
    assert plan.base["cache_dir"]  # the trials get the absolute cache folder ...
    meta = _study_json(plan)
    assert "cache_dir" not in meta["base_config"]  # ... the export does not name it
    ex = StudyExport.open(tmp_path / "run", meta)
    ex.trial_started("t", flat, seed=0, is_paper=True)
    ex.flush()
    (row,) = read_rows(tmp_path / "run" / "trials.csv")
    assert (row["cache_dir"], row["data_root"], row["val_images"]) == ("", "data/coco", str(tmp_path / "val"))
