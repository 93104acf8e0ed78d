"""dashboards/data/runs.py: finding, loading and summarising study runs, on demo exports written into tmp_path
(the picker's line: dashboards/shaping/summaries.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dashboards import demo
from dashboards.data import runs as R
from dashboards.data.files import LoadError
from dashboards.data.paths import display_path
from dashboards.shaping.summaries import run_label
from dashboards.shaping.trials import ablation_summary


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_list_runs_newest_first_with_summaries(results):
    listing = R.list_runs(results)
    runs, warnings = listing.runs, listing.warnings
    assert [r.key for r in runs] == ["scene_count/2025-06-03_0900", "graph_depth/2025-06-01_0900",
                                     "momentum/2025-05-30_0900", "scene_count/2025-05-28_0900",
                                     "tune/2025-05-25_0900", "graph_depth/2025-05-20_0900"]
    assert {r.root for r in runs} == {results} and listing.roots == [results] and listing.absent == []
    assert [r.uid for r in runs] == [display_path(results / r.key) for r in runs]
    by = {r.key: r for r in runs}
    sc = by["scene_count/2025-06-03_0900"]
    assert (sc.status, sc.n_trials, sc.n_finished, sc.device, sc.dataset) == ("FINISHED", 6, 6, "cpu", "synthetic")
    # The reported number: the best trial's best_mAP_ema, never another column under its name.
    assert sc.best_value == pytest.approx(demo.synthetic_final(4, 1) + 0.2)
    assert sc.best_trial["trial_id"] == "sc_4_1"
    assert f"best trial's EMA mAP {demo.synthetic_final(4, 1) + 0.2:.2f}" in run_label(sc)
    assert run_label(sc).startswith(f"{display_path(results)} › scene_count/2025-06-03_0900 · FINISHED · 6/6 trials")
    assert run_label(sc, folder=False).startswith("scene_count/2025-06-03_0900 · ")
    assert sc.trial_seconds_total == 480.0 and sc.pretrain == "none (random init)"
    coco = by["graph_depth/2025-05-20_0900"]
    assert (coco.dataset, coco.backbone, coco.image_size, coco.pretrain) == ("coco", "resnet101", 448, "ImageNet-1k")
    assert coco.best_trial["trial_id"] == "gd_3_0"
    assert "NVIDIA H100" in run_label(coco) and "2/2 trials" in run_label(coco) and "0:40:00" in run_label(coco)
    # The invalid study.json is skipped with a message naming the file and where JSON broke.
    (w,) = warnings
    assert "scene_count/2025-06-02_0900/study.json" in w and "line 1, column" in w and w.endswith("run skipped")
    # The RUNNING study is listed, with what it has exported so far.
    mo = by["momentum/2025-05-30_0900"]
    assert mo.status == "RUNNING" and mo.n_trials == 4 and mo.n_finished == 2 and mo.warnings == []
    assert "file problems" not in run_label(mo) and "file problems" in run_label(by["scene_count/2025-05-28_0900"])


def test_empty_missing_and_odd_results_roots(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert R.list_runs(empty) == R.Listing([], [], [empty], [])
    with pytest.raises(LoadError, match="does not exist") as e:
        R.list_runs(tmp_path / "nope")
    assert e.value.path == tmp_path / "nope"
    with pytest.raises(LoadError, match="not a folder"):
        R.list_runs(write(tmp_path / "file", "x"))
    # A run folder without study.json, hidden folders and the paper tables are not runs.
    write(empty / "scene_count" / "r1" / "trials.csv", "trial_id,status\n")
    (empty / "scene_count" / ".tmp").mkdir()
    write(empty / "paper" / "coco_comparison.csv", "method,mAP\n")
    # A single training run (python -m salgl_core.train --out runs/...) is no study and no cause for a warning.
    write(empty / "coco" / "resnet101-0601" / "epochs.csv", "epoch,mAP\n")
    listing = R.list_runs(empty)
    assert listing.runs == []
    assert listing.warnings == ["empty/scene_count/r1 has trials.csv but no study.json; skipped (a study export "
                                "always writes study.json first)"]


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
    assert "momentum/2025-05-30_0900/study.json says RUNNING (2 of 4 trials finished)" in note


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

    def summarize(d: Path, root: Path) -> R.RunSummary:
        assert root == results
        seen.append(d.relative_to(results).as_posix())
        return R.summarize_dir(d, root)

    listing = R.list_runs(results, summarize)
    assert sorted(seen) == sorted([*(r.key for r in listing.runs), "scene_count/2025-06-02_0900"])
    assert len(listing.warnings) == 1


def test_a_started_time_that_is_not_iso_is_named(tmp_path):
    d = demo.write_tune(tmp_path / "results")
    meta = json.loads((d / "study.json").read_text())
    (d / "study.json").write_text(json.dumps({**meta, "started": "yesterday"}))
    (s,) = R.list_runs(tmp_path / "results").runs
    assert s.sort_time == (d / "study.json").stat().st_mtime
    assert any("started = 'yesterday' is not an ISO 8601 time" in w for w in s.warnings)


def test_reads_what_studies_export_writes_without_warnings(tmp_path):
    """The contract end to end: rows written by studies/exports/writer.py load cleanly, NaN metrics as missing."""
    export = pytest.importorskip("studies.exports.writer")
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
    listing = R.list_runs(tmp_path / "results")
    (summary,) = listing.runs
    assert listing.warnings == [] and summary.warnings == []
    assert (summary.status, summary.n_finished, summary.n_trials, summary.device) == ("FINISHED", 2, 2, "cpu")
    run = R.load_run(summary.path)
    assert run.warnings == [] and run.notes == [] and R.status_notes(run) == []
    assert run.trials["is_paper_config"].tolist() == [False, True]
    assert run.trials["best_mAP"].tolist() == [43.0, 46.0] and run.trials["CF1"].isna().all()
    assert run.epochs["epoch"].tolist() == [1, 2, 1, 2]
    ab = ablation_summary(run.trials, "num_scenes", "mAP", run.paper_config)
    assert ab.summary["mean"].tolist() == [43.0, 46.0] and ab.summary["is_paper"].tolist() == [False, True]
    assert sorted(run.scene_files) == ["t1", "t4"]


@pytest.mark.slow
def test_runs_of_several_results_folders(tmp_path):
    """results/ and runs/ side by side: each run knows its folder; the same <study>/<run> in both stays two runs."""
    results, runs = tmp_path / "results", tmp_path / "runs"
    demo.write_synthetic_scene_count(results)
    demo.write_synthetic_scene_count(runs)
    demo.write_tune(runs)
    listing = R.list_runs([results, runs])
    assert [(display_path(s.root), s.key) for s in listing.runs] == [
        (str(runs), "scene_count/2025-06-03_0900"), (str(results), "scene_count/2025-06-03_0900"),
        (str(runs), "tune/2025-05-25_0900")]
    assert len({s.uid for s in listing.runs}) == 3
    assert (listing.count(results), listing.count(runs)) == (1, 2) and listing.warnings == []
    assert [s.where for s in listing.runs] == [str(runs), str(results), str(runs)]
    # runs/ appears with the first study: until then its absence is no warning, where one is expected.
    missing = tmp_path / "no_runs_yet"
    listing = R.list_runs([results, missing], may_be_absent=[missing])
    assert listing.absent == [missing] and listing.warnings == [] and len(listing.runs) == 1
    listing = R.list_runs([results, missing])
    assert listing.warnings == [f"{missing}: the results folder does not exist (set it in the sidebar or with "
                                f"$SALGL_RESULTS_DIR)"]
    # Nothing listable at all is an error, unless every folder is one that may be absent.
    with pytest.raises(LoadError, match="does not exist"):
        R.list_runs([tmp_path / "a", missing], may_be_absent=[missing])
    assert R.list_runs([missing], may_be_absent=[missing]).runs == []


def test_counts_come_from_trials_csv_as_read(tmp_path):
    """A trials.csv cut short: the counts say what it holds, and a warning says it lost rows."""
    run = R.load_run(demo.write_damaged_trials(tmp_path / "results"))
    assert run.meta["n_finished"] == 8 and run.meta["n_trials"] == 8
    assert R.trial_counts(run) == R.TrialCounts(read=4, ended=4, with_value=3, planned=8)
    assert R.trial_counts(run, "mAP").with_value == 4
    cell, cut = R.file_warnings(run, "trials.csv")
    assert "column best_mAP_ema has 1 non-numeric or non-finite value(s) (e.g. 'n/a' on line 3)" in cell
    assert cut.endswith("trials.csv: holds 4 ended trial(s) where study.json says 8 ended: the file is incomplete "
                        "(cut short, or an older copy); the counts and charts show what it holds")
    assert R.file_warnings(run, "epochs.csv") == []
    s = R.summarize(run)
    assert (s.n_finished, s.n_trials, s.trials_text()) == (4, 8, "4/8")
    assert s.best_value == pytest.approx(demo.synthetic_final(2, 1) + 0.2)
    # A healthy run: no warning, the counts match study.json; a RUNNING one counts its running trial as read.
    healthy = R.load_run(demo.write_synthetic_scene_count(tmp_path / "results"))
    assert R.trial_counts(healthy) == R.TrialCounts(6, 6, 6, 6) and healthy.warnings == []
    running = R.load_run(demo.write_running_momentum(tmp_path / "results"))
    assert R.trial_counts(running) == R.TrialCounts(3, 2, 3, 4) and running.warnings == []


def test_no_reported_metric_means_no_best_value(tmp_path):
    """Without best_mAP_ema values the summary shows none, not best_mAP under the reported number's name."""
    run = R.load_run(demo.write_synthetic_scene_count(tmp_path / "results"))
    run.trials["best_mAP_ema"] = float("nan")
    assert R.best_trial(run.trials) == (None, None)
    assert R.summarize(run).best_value is None and "no result yet" in run_label(R.summarize(run))
    value, row = R.best_trial(run.trials, "best_mAP")
    assert value == demo.synthetic_final(4, 1) and row["trial_id"] == "sc_4_1"
