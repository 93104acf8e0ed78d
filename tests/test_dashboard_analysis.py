"""dashboards/data/analysis.py: analysis.json when it matches the export, else studies.analysis.analyze's analysis
computed here; dashboards/shaping/stats.py lists what it could not compute."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dashboards import demo
from dashboards.data import analysis as A
from dashboards.data.files import read_trials
from dashboards.shaping.stats import collect_notes
from studies.analysis.analyze import analyze_run

RUN = "scene_count/2025-06-03_0900"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The demo's healthy runs, written once (predictions and the bootstrap take seconds); tests copy them."""
    root = tmp_path_factory.mktemp("demo") / "results"
    demo.write_good(root)
    return root


@pytest.fixture
def results(template: Path, tmp_path: Path) -> Path:
    shutil.copytree(template, tmp_path / "results")
    return tmp_path / "results"


def rewrite_trials(path: Path, change) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    change(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def test_a_matching_analysis_json_is_read_as_written(results):
    d = results / RUN
    res = A.load_analysis(d, "num_scenes")
    assert res.source == "file" and res.problem is None and not res.absent
    assert res.data == json.loads((d / "analysis.json").read_text())
    assert res.command == f"python -m studies.analyze {d}" and collect_notes(res.data) == []


def test_without_analysis_json_the_same_analysis_is_computed_here(results):
    d = results / RUN
    written = json.loads((d / "analysis.json").read_text())
    (d / "analysis.json").unlink()
    res = A.load_analysis(d, "num_scenes")
    assert res.source == "computed" and res.absent and res.problem is None
    # The same function on the same files: the numbers analysis.json held (its JSON has no NaN / tuples).
    assert json.loads(json.dumps(res.data)) == {**written, "bootstrap": {**written["bootstrap"],
                                                                          "seconds": res.data["bootstrap"]["seconds"]}}


def test_an_export_without_predictions_says_what_cannot_be_computed(results):
    d = results / RUN
    (d / "analysis.json").unlink()
    shutil.rmtree(d / "predictions")
    res = A.load_analysis(d, "num_scenes")
    assert res.source == "computed" and res.data["bootstrap"]["trials_with_predictions"] == 0
    assert any(n.startswith("no predictions/targets.npz: the trials saved no predictions, so the intervals are "
                            "over seeds only") for n in collect_notes(res.data))
    assert all(c["interval"] == "seeds" for c in res.data["comparisons"])


def test_a_stale_analysis_json_is_recomputed_and_named(results):
    """A trial that ended after analysis.json was written (or a changed value): computed from the current files."""
    d = results / RUN

    def change(rows):
        rows[0]["best_mAP_ema"] = "60.0"

    rewrite_trials(d / "trials.csv", change)
    res = A.load_analysis(d, "num_scenes")
    assert res.source == "computed" and not res.absent
    assert "analysis.json does not match trials.csv: 1 finished trial(s) differ (sc_1_0)" in res.problem
    assert f"`python -m studies.analyze {d}` rewrites it" in res.problem
    assert next(t for t in res.data["trials"] if t["trial_id"] == "sc_1_0")["mAP"] == 60.0


@pytest.mark.slow
def test_unreadable_or_foreign_analysis_json_is_recomputed(results):
    d = results / RUN
    (d / "analysis.json").write_text("{")
    res = A.load_analysis(d, "num_scenes")
    assert res.source == "computed" and "analysis.json: is not valid JSON" in res.problem
    (d / "analysis.json").write_text(json.dumps({"kind": "ablation"}))
    res = A.load_analysis(d, "num_scenes")
    assert "lacks the key(s) axis, metric" in res.problem and res.data["arms"]
    written = analyze_run(d)
    (d / "analysis.json").write_text(json.dumps({**written, "axis": "gnn_steps"}))
    assert "analyses axis 'gnn_steps' but study.json's is 'num_scenes'" in A.load_analysis(d, "num_scenes").problem


def test_an_analysis_that_cannot_be_computed_is_a_message(results):
    d = results / RUN
    (d / "analysis.json").unlink()
    (d / "study.json").write_bytes(b'{"schema_version": 1, "stu')
    res = A.load_analysis(d, "num_scenes")
    assert res.data is None and res.source == "none"
    assert res.problem.startswith(f"the analysis could not be computed from results/{RUN}: ValueError: ")
    assert "study.json is not valid JSON" in res.problem


def test_a_damaged_targets_file_is_named_and_no_comparison_is_tested(results):
    d = results / RUN
    (d / "analysis.json").unlink()
    (d / "predictions" / "targets.npz").write_bytes(b"not a zip file")
    res = A.load_analysis(d, "num_scenes")
    notes = collect_notes(res.data)
    assert res.source == "computed"
    assert any(n.startswith("predictions/targets.npz unreadable (not an .npz archive)") for n in notes), notes
    assert all(c["p"] is None and c["holm"].startswith("in the family of 2 as p = 1, untested: no test")
               for c in res.data["comparisons"])


def test_mismatched_trials_compares_finished_values():
    analysis = {"trials": [{"trial_id": "a", "status": "FINISHED", "mAP": 50.0},
                           {"trial_id": "b", "status": "FINISHED", "mAP": 51.0},
                           {"trial_id": "c", "status": "STOPPED", "mAP": 40.0}]}
    trials = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "status": ["FINISHED", "FINISHED", "STOPPED", "RUNNING"],
                           "best_mAP_ema": [50.0, 51.5, 41.0, 30.0]})
    assert A.mismatched_trials(analysis, trials) == ["b"]
    trials.loc[3, "status"] = "FINISHED"
    assert A.mismatched_trials(analysis, trials) == ["b", "d"]
    assert A.mismatched_trials({"trials": []}, trials.iloc[0:0]) == []


def test_the_cache_key_follows_every_file_the_analysis_reads(results):
    d = results / RUN
    before = A.analysis_stamp(d)
    assert A.analysis_stamp(d) == before
    (d / "predictions" / "extra.npz").write_bytes(b"")  # a new predictions file changes the folder
    assert A.analysis_stamp(d) != before
    before = A.analysis_stamp(d)
    (d / "analysis.json").unlink()
    assert A.analysis_stamp(d) != before
    # The journal a joint search names in study.json.
    assert str(d / "journal.log") in {p for p, *_ in A.analysis_stamp(d, "journal.log")}


def test_the_trials_are_compared_as_the_dashboard_reads_them(results):
    d = results / RUN
    trials, _ = read_trials(d / "trials.csv")
    assert A.mismatched_trials(json.loads((d / "analysis.json").read_text()), trials) == []
