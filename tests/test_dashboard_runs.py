"""dashboards/runs.py: finding, loading and summarising study runs, on demo exports written into tmp_path."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dashboards import demo
from dashboards import runs as R
from dashboards.files import LoadError
from dashboards.views import ablation_summary


@pytest.fixture
def results(tmp_path: Path) -> Path:
    demo.write_all(tmp_path / "results")
    return tmp_path / "results"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_list_runs_newest_first_with_summaries(results):
    runs, warnings = R.list_runs(results)
    assert [r.key for r in runs] == ["momentum/2025-06-04_0900", "scene_count/2025-06-03_0900",
                                     "graph_depth/2025-06-01_0900", "tune/2025-05-25_0900",
                                     "graph_depth/2025-05-20_0900"]
    by = {r.key: r for r in runs}
    sc = by["scene_count/2025-06-03_0900"]
    assert (sc.status, sc.n_trials, sc.n_finished, sc.device, sc.dataset) == ("FINISHED", 6, 6, "cpu", "synthetic")
    assert sc.best_metric == "best_mAP_ema"
    assert sc.best_value == pytest.approx(demo.synthetic_final(4, 1) + 0.2)
    assert sc.trial_seconds_total == 480.0 and sc.pretrain == "none (random init)"
    coco = by["graph_depth/2025-05-20_0900"]
    assert (coco.dataset, coco.backbone, coco.image_size, coco.pretrain) == ("coco", "resnet101", 448, "ImageNet-1k")
    assert coco.best_trial["trial_id"] == "gd_3_0"
    assert "NVIDIA H100" in coco.label() and "2/2 trials" in coco.label() and "0:40:00" in coco.label()
    # The invalid study.json is skipped with a message naming the file and where JSON broke.
    (w,) = warnings
    assert "scene_count/2025-06-02_0900/study.json" in w and "line 1, column" in w and w.endswith("run skipped")
    # The RUNNING study is listed, with what it has exported so far.
    mo = by["momentum/2025-06-04_0900"]
    assert mo.status == "RUNNING" and mo.n_trials == 4 and mo.n_finished == 2 and mo.warnings == []


def test_empty_missing_and_odd_results_roots(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert R.list_runs(empty) == ([], [])
    with pytest.raises(LoadError, match="does not exist") as e:
        R.list_runs(tmp_path / "nope")
    assert e.value.path == tmp_path / "nope"
    with pytest.raises(LoadError, match="not a folder"):
        R.list_runs(write(tmp_path / "file", "x"))
    # A run folder without study.json, hidden folders and the paper tables are not runs.
    write(empty / "scene_count" / "r1" / "trials.csv", "trial_id,status\n")
    (empty / "scene_count" / ".tmp").mkdir()
    write(empty / "paper" / "coco_comparison.csv", "method,mAP\n")
    runs, warnings = R.list_runs(empty)
    assert runs == []
    assert warnings == ["empty/scene_count/r1 has trials.csv but no study.json; skipped (a study export always "
                        "writes study.json first)"]


def test_running_study_shows_what_it_exported(tmp_path):
    run = R.load_run(demo.write_running_momentum(tmp_path / "results"))
    assert run.trials["trial_id"].tolist() == ["mo_1.0_0", "mo_0.9_0", "mo_0.99_0"]
    assert run.trials["status"].tolist() == ["FINISHED", "FINISHED", "RUNNING"]
    assert run.trials["is_paper_config"].tolist() == [True, False, False]
    assert run.trials["comat_momentum"].tolist() == [1.0, 0.9, 0.99]
    assert run.warnings == [] and run.notes == []
    # epochs.csv holds a trial that has no trials.csv row yet.
    assert "mo_0.999_0" in set(run.epochs["trial_id"])
    (note,) = R.status_notes(run)
    assert "momentum/2025-06-04_0900/study.json says RUNNING (2 of 4 trials finished)" in note


def test_non_numeric_epoch_cell_is_reported_and_the_rest_loads(tmp_path):
    run = R.load_run(demo.write_damaged_epochs(tmp_path / "results"))
    (w,) = run.warnings
    assert "graph_depth/2025-06-01_0900/epochs.csv" in w and "column mAP" in w and "'oops' on line 4" in w
    assert len(run.epochs) == 18 and run.epochs["mAP"].isna().sum() == 1
    assert run.epochs["mAP"].dtype == float and run.epochs["epoch"].dtype.kind in "if"
    assert len(run.trials) == 3 and not run.notes and R.status_notes(run) == []


def test_unusable_files_become_warnings_of_the_run(tmp_path):
    d = tmp_path / "results" / "scene_count" / "r"
    write(d / "study.json", json.dumps({"schema_version": 1, "study": "scene_count", "run": "r",
                                        "status": "FINISHED", "axis": "num_scenes"}))
    write(d / "epochs.csv", "id,epoch\n")
    run = R.load_run(d)
    text = "\n".join(run.warnings)
    assert "missing key(s) dataset" in text and "r/trials.csv: file not found" in text
    assert "r/epochs.csv: lacks the column(s) trial_id" in text
    assert run.dataset == "unknown" and len(run.trials) == 0 and len(run.epochs) == 0
    write(d / "study.json", json.dumps({"study": "scene_count"}))
    with pytest.raises(LoadError, match="lacks the key"):
        R.load_run(d)


def test_running_study_without_trials_yet_and_stale(tmp_path):
    d = tmp_path / "results" / "momentum" / "r"
    write(d / "study.json", json.dumps({"schema_version": 1, "study": "momentum", "run": "r", "status": "RUNNING",
                                        "dataset": "synthetic", "axis": "comat_momentum", "n_trials": 4,
                                        "n_finished": 0}))
    run = R.load_run(d)
    assert run.warnings == [] and len(run.trials) == 0 and len(run.epochs) == 0
    assert any("trials.csv does not exist yet" in n for n in run.notes)
    assert not any("may have crashed" in n for n in R.status_notes(run))
    # The crash note depends on the clock, not on the files: a loaded (cached) run gets it as time passes.
    old = time.time() - 5 * 3600
    os.utime(d / "study.json", (old, old))
    assert any("may have crashed" in n and "--resume" in n for n in R.status_notes(run))
    assert not any("may have crashed" in n for n in R.status_notes(run, now=old + 60))


def test_run_stamp_follows_every_file_of_the_run(tmp_path):
    d = demo.write_synthetic_scene_count(tmp_path / "results")
    before = R.run_stamp(d)
    assert R.run_stamp(d) == before and len(before) == 4
    later = time.time() + 5
    for name in ("trials.csv", "epochs.csv", "study.json"):
        os.utime(d / name, (later, later))
        assert R.run_stamp(d) != before
        before = R.run_stamp(d)
    (d / "scenes" / "new.json").write_text("{}")
    os.utime(d / "scenes", (later + 5, later + 5))
    assert R.run_stamp(d) != before


def test_list_runs_takes_the_summary_function(results):
    """The seam the app's cache uses: every run folder goes through `summarize_run`, its LoadError too."""
    seen = []

    def summarize(d: Path) -> R.RunSummary:
        seen.append(d.relative_to(results).as_posix())
        return R.summarize_dir(d)

    runs, warnings = R.list_runs(results, summarize)
    assert sorted(seen) == sorted([*(r.key for r in runs), "scene_count/2025-06-02_0900"])
    assert len(warnings) == 1


def test_a_started_time_that_is_not_iso_is_named(tmp_path):
    d = demo.write_tune(tmp_path / "results")
    meta = json.loads((d / "study.json").read_text())
    (d / "study.json").write_text(json.dumps({**meta, "started": "yesterday"}))
    (s,), _ = R.list_runs(tmp_path / "results")
    assert s.sort_time == (d / "study.json").stat().st_mtime
    assert any("started = 'yesterday' is not an ISO 8601 time" in w for w in s.warnings)


def test_reads_what_studies_export_writes_without_warnings(tmp_path):
    """The contract end to end: rows written by studies/export.py load cleanly, NaN metrics as missing."""
    export = pytest.importorskip("studies.export")
    from salgl_core.config import ExperimentConfig
    from salgl_core.presets import synthetic_preset

    cfg = ExperimentConfig.from_flat(synthetic_preset()).to_flat()
    meta = {"schema_version": 1, "study": "scene_count", "run": "r1", "axis": "num_scenes", "axis_values": [1, 4],
            "dataset": "synthetic", "backbone": "small_cnn", "image_size": 64, "base_config": cfg,
            "paper_config": {"num_scenes": 4}, "seeds": [0], "n_trials": 2}
    ex = export.StudyExport.open(tmp_path / "results" / "scene_count" / "r1", meta)
    ex.begin()
    for k in (1, 4):
        ex.trial_started(f"t{k}", {**cfg, "num_scenes": k}, 0, k == 4)
        for e in (1, 2):
            ex.trial_epoch(f"t{k}", {"epoch": e, "lr": 1e-3, "loss_total": 3.0, "mAP": 40.0 + e + k,
                                     "mAP_ema": 39.0 + e, "best_epoch": e, "best_mAP": 40.0 + e + k,
                                     "best_mAP_ema": 39.0 + e, "CF1": float("nan"), "device": "cpu"}, seconds=3.0)
        ex.trial_ended(f"t{k}", "FINISHED", scene_report={
            "num_scenes": k, "class_names": ["a", "b"], "cooccurrence_prob": [[[1, 0.5], [0.2, 1]]] * k,
            "cooccurrence_counts_diag": [[3, 4]] * k, "scene_usage": [1 / k] * k, "true_scene_nmi": None,
            "contingency": None})
    ex.finish("FINISHED")
    (summary,), warnings = R.list_runs(tmp_path / "results")
    assert warnings == [] and summary.warnings == []
    assert (summary.status, summary.n_finished, summary.n_trials, summary.device) == ("FINISHED", 2, 2, "cpu")
    run = R.load_run(summary.path)
    assert run.warnings == [] and run.notes == [] and R.status_notes(run) == []
    assert run.trials["is_paper_config"].tolist() == [False, True]
    assert run.trials["best_mAP"].tolist() == [43.0, 46.0] and run.trials["CF1"].isna().all()
    assert run.epochs["epoch"].tolist() == [1, 2, 1, 2]
    ab = ablation_summary(run.trials, "num_scenes", "mAP", run.paper_config)
    assert ab.summary["mean"].tolist() == [43.0, 46.0] and ab.summary["is_paper"].tolist() == [False, True]
    assert sorted(run.scene_files) == ["t1", "t4"]
