"""The statistics views through Streamlit's AppTest: the verdict table, the forest plot, the arms' and trials'
intervals and a joint search's importances hold analysis.json's numbers (or analyze_run's where an export
has none), and an export without predictions says what could not be computed."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_dashboard_app import spec, start, texts, values

from dashboards import demo
from dashboards.data import paths
from dashboards.shaping import stats as S
from dashboards.shaping.fmt import fmt_value
from dashboards.shaping.texts import NO_PREDICTIONS
from studies.analysis.analyze import analyze_run
from studies.analysis.stats import mean_ci
from studies.exports.schema import ANALYSIS_JSON, PREDICTIONS_DIR

REPO = Path(__file__).resolve().parents[1]
SC = "scene_count/2025-06-03_0900"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "results"
    demo.write_good(root)
    return root


@pytest.fixture
def results(template: Path, tmp_path: Path) -> Path:
    shutil.copytree(template, tmp_path / "results")
    return tmp_path / "results"


def traces(at, key: str) -> dict:
    return {t["name"]: t for t in spec(at, key)["data"]}


def forest(at) -> dict[str, tuple]:
    """The forest plot as {arm label: (verdict kind, diff, ci_low, ci_high)}, read back from its traces."""
    out = {}
    for t in spec(at, "forest_chart")["data"]:
        xs, ys = values(t["x"]), values(t["y"])
        up, down = values(t["error_x"]["array"]), values(t["error_x"]["arrayminus"])
        for x, y, u, d in zip(xs, ys, up, down, strict=True):
            out[y] = (t["name"], x, x - d, x + u)
    return out


def assert_shows(at, analysis: dict) -> None:
    """The ablation view shows exactly `analysis`: the verdict table, the forest plot, the arms' intervals and
    each trial's image-bootstrap interval on hover."""
    (table,) = [t.value for t in at.table]
    expected = S.verdict_display(S.verdict_table(analysis))
    assert table.index.tolist() == expected.index.tolist()
    assert table.astype(str).values.tolist() == expected.astype(str).values.tolist()
    got = forest(at)
    drawn = [c for c in analysis["comparisons"] if c["diff"] is not None]
    assert sorted(got) == sorted(fmt_value(c["value"]) for c in drawn)
    for c in drawn:
        kind, x, lo, hi = got[fmt_value(c["value"])]
        assert (kind, x) == (S.comparison_kind(c), c["diff"])
        if c["ci_low"] is not None:
            assert (lo, hi) == pytest.approx((c["ci_low"], c["ci_high"]), abs=1e-9)
    ablation = traces(at, "ablation_chart")
    arms = [a for a in analysis["arms"] if a["ci_low"] is not None]
    if arms:
        ci = ablation["95% CI of the mean (t, seeds)"]
        y = np.array(values(ci["y"]))
        assert (y + values(ci["error_y"]["array"])).tolist() == pytest.approx([a["ci_high"] for a in arms])
        assert (y - values(ci["error_y"]["arrayminus"])).tolist() == pytest.approx([a["ci_low"] for a in arms])
        assert [row[:2] for row in ci["customdata"]] == [[a["ci_low"], a["ci_high"]] for a in arms]
    by_id = {t["trial_id"]: t for t in analysis["trials"]}
    for name, t in ablation.items():
        if name.startswith("seed "):
            for tid, lo, hi in t["customdata"]:
                assert (lo, hi) == (by_id[tid]["ci_low"], by_id[tid]["ci_high"])


def test_the_verdicts_and_intervals_are_analysis_json(monkeypatch, results):
    at = start(monkeypatch, results, SC)
    assert not at.error and not at.main.warning, texts(at.main.warning)
    analysis = json.loads((results / SC / ANALYSIS_JSON).read_text())
    assert_shows(at, analysis)
    md = texts(at.markdown)
    assert ("Verdicts on best EMA mAP (%): each arm against ★ num_scenes = 4, the synthetic preset's value (not the "
            "paper's configuration)") in md
    captions = texts(at.caption)
    assert ("From analysis.json (studies.analysis.analyze; 1000 resamples of 600 validation images, 6 trial(s)"
            in captions)
    assert "Hover a trial for its image-bootstrap 95% interval." in captions
    assert "intervals hold the seed spread and the validation set's noise" in captions
    assert "synthetic preset's value" in traces(at, "ablation_chart")
    assert NO_PREDICTIONS not in texts(at.info)
    assert not [e for e in at.expander if e.label.startswith("What the analysis could not compute")]


@pytest.mark.slow
def test_without_analysis_json_it_is_computed_here(monkeypatch, results):
    (results / SC / ANALYSIS_JSON).unlink()
    at = start(monkeypatch, results, SC)
    assert not at.error and not at.main.warning
    assert_shows(at, analyze_run(results / SC))
    assert (f"Computed here by studies.analysis.analyze from trials.csv and predictions/ (this export has no "
            f"analysis.json; 1000 resamples of 600 validation images, 6 trial(s) with predictions). "
            f"`python -m studies.analyze "
            f"{paths.display_path(results / SC)}` writes analysis.json.") in texts(at.caption)


def test_an_older_export_without_predictions_says_what_it_cannot_compute(monkeypatch, results):
    (results / SC / ANALYSIS_JSON).unlink()
    shutil.rmtree(results / SC / PREDICTIONS_DIR)
    at = start(monkeypatch, results, SC)
    assert not at.error
    analysis = analyze_run(results / SC)
    assert_shows(at, analysis)
    assert NO_PREDICTIONS in texts(at.info)
    (box,) = [e for e in at.expander if e.label.startswith("What the analysis could not compute")]
    notes = texts(box.markdown)
    assert "no predictions/targets.npz: the trials saved no predictions" in notes
    assert "intervals hold the seed spread only (no predictions)" in texts(at.caption)
    assert "Computed here by studies.analysis.analyze from trials.csv (this export has no analysis.json; no image" in \
        texts(at.caption)
    seed0 = traces(at, "ablation_chart")["seed 0"]
    assert set(seed0["text"]) == {"no image-bootstrap interval (no predictions)"}


@pytest.mark.slow
def test_a_stale_analysis_json_is_named_and_recomputed(monkeypatch, results):
    path = results / SC / "trials.csv"
    lines = path.read_text().splitlines()
    lines = [lines[0]] + [line for line in lines[1:] if not line.startswith("sc_1_1,")]
    path.write_text("\n".join(lines) + "\n")
    at = start(monkeypatch, results, SC)
    assert "analysis.json does not match trials.csv: 1 finished trial(s) differ (sc_1_1)" in texts(at.main.warning)
    assert_shows(at, analyze_run(results / SC))


@pytest.mark.slow
def test_another_metric_keeps_the_verdicts_on_the_reported_one(monkeypatch, results):
    at = start(monkeypatch, results, SC)
    at.selectbox(key="ablation_metric").select("CF1").run()
    analysis = json.loads((results / SC / ANALYSIS_JSON).read_text())
    (table,) = [t.value for t in at.table]
    assert table.index.tolist() == ["1", "2", "4 ★"]
    assert "The verdicts and the differences are for best EMA mAP (%), the paper's reported number" in texts(at.caption)
    assert forest(at)["1"][1] == analysis["comparisons"][0]["diff"]
    # The chart's intervals are CF1's own (t over seeds), and the hovers carry no mAP interval.
    ablation = traces(at, "ablation_chart")
    cf1 = {k: [round(demo.synthetic_final(k, s) * 0.9, 3) for s in (0, 1)] for k in (1, 2, 4)}
    ci = ablation["95% CI of the mean (t, seeds)"]
    assert [x for row in ci["customdata"] for x in row[:2]] == pytest.approx(
        [x for v in cf1.values() for x in (mean_ci(v)["ci_low"], mean_ci(v)["ci_high"])])
    assert set(ablation["seed 0"]["text"]) == {""}


def test_one_seed_per_arm_on_coco_has_image_intervals_and_no_test(monkeypatch, results):
    run = "graph_depth/2025-05-20_0900"
    at = start(monkeypatch, results, run)
    analysis = json.loads((results / run / ANALYSIS_JSON).read_text())
    assert_shows(at, analysis)
    assert forest(at)["0"][0] == "no test"
    assert "each arm against ★ gnn_steps = 3, the paper's configuration" in texts(at.markdown)
    assert "one seed per arm: no seed-level test" in texts(at.caption)
    # One seed per arm: no interval over seeds to draw, but each trial's bootstrap interval on hover.
    assert "95% CI of the mean (t, seeds)" not in traces(at, "ablation_chart")


def test_a_running_study_without_analysis_gets_one_computed(monkeypatch, tmp_path):
    d = demo.write_running_momentum(tmp_path / "results")
    at = start(monkeypatch, tmp_path / "results")
    assert not at.error
    analysis = analyze_run(d)
    assert_shows(at, analysis)
    assert NO_PREDICTIONS in texts(at.info)


@pytest.mark.slow
def test_tune_shows_importances_and_parallel_coordinates(monkeypatch, results):
    run = "tune/2025-05-25_0900"
    at = start(monkeypatch, results, run)
    assert not at.error
    analysis = json.loads((results / run / ANALYSIS_JSON).read_text())
    imp = traces(at, "importance_chart")
    for name, key in (("fANOVA", "fanova"), ("PED-ANOVA", "ped_anova")):
        assert dict(zip(values(imp[name]["y"]), values(imp[name]["x"]), strict=True)) == \
            analysis["search"]["importances"][key]
    (par,) = spec(at, "parallel_chart")["data"]
    labels = [d["label"] for d in par["dimensions"]]
    assert labels == ["lr (log scale)", "num_scenes", "best EMA mAP (%)"]
    trials = {r["trial_id"]: r for r in demo_trials(results / run)}
    assert values(par["dimensions"][2]["values"]) == [float(r["best_mAP_ema"]) for r in trials.values()]
    (best,) = [df.value for df in at.dataframe if "best EMA mAP" in df.value and "" in df.value]
    assert best["trial_id"].tolist() == [analysis["search"][k]["trial_id"] for k in ("best", "paper")]
    # Without its Optuna journal (and analysis.json) there are no importances, and the page says why.
    (results / run / ANALYSIS_JSON).unlink()
    (results / run / "optuna_journal.log").unlink()
    at = start(monkeypatch, results, run)
    assert "No parameter importances: no Optuna journal at optuna_journal.log" in texts(at.info)
    assert spec(at, "parallel_chart")["data"] and not at.error


def demo_trials(run_dir: Path) -> list[dict]:
    with open(run_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("run", sorted(p.relative_to(REPO / "results").as_posix()
                                       for p in (REPO / "results").glob("*/*") if (p / "study.json").is_file()))
def test_the_committed_exports_show_their_analysis(monkeypatch, run):
    """The committed exports (results/*/default): with analysis.json the view shows it; without (older exports)
    it shows analyze_run's, and says when predictions are missing."""
    d = REPO / "results" / run
    if not json.loads((d / "study.json").read_text()).get("axis"):
        pytest.skip(f"{run} is a joint search (no ablation view)")
    at = start(monkeypatch, REPO / "results", run)
    assert not at.error and not at.exception
    analysis = json.loads((d / ANALYSIS_JSON).read_text()) if (d / ANALYSIS_JSON).is_file() else analyze_run(d)
    assert_shows(at, analysis)
    assert (NO_PREDICTIONS in texts(at.info)) == (not S.has_predictions(analysis))
