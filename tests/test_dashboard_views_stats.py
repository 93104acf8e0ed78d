"""dashboards/shaping/stats.py: the statistics views show analysis.json's numbers, shaped, never recomputed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboards import demo
from dashboards.data.runs import load_run
from dashboards.shaping import stats as S
from dashboards.shaping.trials import ablation_summary
from studies.analysis import stats
from studies.exports.schema import REPORTED_METRIC


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "results"
    demo.write_good(root)
    return root


def analysis_of(results: Path, run: str) -> dict:
    return json.loads((results / run / "analysis.json").read_text())


def comparison(**kw) -> dict:
    return {"n": 2, "n_reference": 2, "diff": 1.0, "p_holm": 0.5, **kw}


def test_verdict_kind_follows_the_numbers_as_the_verdict_does():
    assert S.comparison_kind(comparison(diff=1.2, p_holm=0.01)) == "better"
    assert S.comparison_kind(comparison(diff=-1.2, p_holm=0.049)) == "worse"
    assert S.comparison_kind(comparison(diff=-1.2, p_holm=0.05)) == "no detectable difference"
    assert S.comparison_kind(comparison(p_holm=0.03), alpha=0.01) == "no detectable difference"
    assert S.comparison_kind(comparison(p_holm=None)) == "no test"
    assert S.comparison_kind(comparison(n=0, p_holm=None)) == "no comparison"
    assert S.comparison_kind(comparison(n_reference=0)) == "no comparison"
    # The rule is the analysis's own (studies.analysis.stats.verdict_kind); every kind it returns has a colour.
    assert S.verdict_kind is stats.verdict_kind
    assert {stats.verdict_kind(n, 2, d, p) for n in (0, 2) for d in (-1.0, 1.0) for p in (None, 0.01, 0.5)} == set(
        S.KINDS)


def test_forest_points_are_the_comparisons(results):
    a = analysis_of(results, "scene_count/2025-06-03_0900")
    pts = S.forest_points(a)
    cmp = a["comparisons"]
    assert pts["label"].tolist() == [str(c["value"]) for c in cmp] == ["1", "2"]
    assert pts["diff"].tolist() == [c["diff"] for c in cmp]
    assert pts["ci_low"].tolist() == [c["ci_low"] for c in cmp]
    assert pts["ci_high"].tolist() == [c["ci_high"] for c in cmp]
    assert pts["verdict"].tolist() == [c["verdict"] for c in cmp]
    assert pts["interval"].tolist() == ["seeds+images"] * 2
    # The colour says what the sentence says.
    for kind, verdict in zip(pts["kind"], pts["verdict"], strict=True):
        assert verdict.startswith(kind), (kind, verdict)
    # An arm without finished trials has no difference: it stays in the verdict table, not in the plot.
    a["comparisons"].append({"axis": "num_scenes", "value": 8, "n": 0, "n_reference": 2, "diff": None,
                             "verdict": "no comparison: this arm has no finished trials"})
    assert S.forest_points(a)["label"].tolist() == ["1", "2"]


def test_one_seed_per_arm_gives_an_image_interval_without_a_test(results):
    a = analysis_of(results, "graph_depth/2025-05-20_0900")
    (row,) = S.forest_points(a).to_dict("records")
    (c,) = a["comparisons"]
    assert (row["label"], row["kind"], row["interval"]) == ("0", "no test", "images")
    assert (row["ci_low"], row["diff"], row["ci_high"]) == (c["ci_low"], c["diff"], c["ci_high"])
    assert row["verdict"].startswith("no seed-level test (one seed per arm)")


def test_verdict_table_lists_every_arm_with_the_reference_starred(results):
    a = analysis_of(results, "scene_count/2025-06-03_0900")
    t = S.verdict_table(a)
    assert t["num_scenes"].tolist() == ["1", "2", "4 ★"]
    assert t["seeds"].tolist() == [arm["n"] for arm in a["arms"]]
    assert t["mean"].tolist() == [arm["mean"] for arm in a["arms"]]
    assert t["mean 95% CI"].tolist() == [f"[{arm['ci_low']:.2f}, {arm['ci_high']:.2f}]" for arm in a["arms"]]
    c1 = a["comparisons"][0]
    assert t.loc[0, "difference"] == c1["diff"] and t.loc[0, "p (Holm)"] == c1["p_holm"]
    assert t.loc[0, "difference 95% CI"] == f"[{c1['ci_low']:+.2f}, {c1['ci_high']:+.2f}]"
    assert t.loc[0, "P(better)"] == c1["p_improve"] and t.loc[0, "verdict"] == c1["verdict"]
    assert t.loc[2, "difference 95% CI"] == "reference" and t.loc[2, "verdict"] == "the reference arm"
    assert math.isnan(t.loc[2, "difference"])
    shown = S.verdict_display(t)
    assert shown.index.tolist() == ["1", "2", "4 ★"] and shown.index.name == "num_scenes"
    assert shown.loc["1", "difference"] == f"{c1['diff']:+.2f}" and shown.loc["4 ★", "p (Holm)"] == "–"
    assert shown.loc["1", "p (Holm)"] == f"{c1['p_holm']:.3g}" and shown.loc["1", "seeds"] == "2"


def test_arm_and_trial_intervals_come_from_the_analysis(results):
    run = load_run(results / "scene_count/2025-06-03_0900")
    a = analysis_of(results, "scene_count/2025-06-03_0900")
    ab = ablation_summary(run.trials, "num_scenes", REPORTED_METRIC, run.paper_config)
    # Computed here by the same function as the analysis: the same intervals.
    assert ab.summary["ci_low"].tolist() == pytest.approx([arm["ci_low"] for arm in a["arms"]])
    # The analysis's numbers replace them; another metric keeps its own.
    a["arms"][0]["ci_low"], a["arms"][1]["ci_high"] = 10.0, None
    merged = S.with_arm_intervals(ab, a).summary
    assert merged.loc[0, "ci_low"] == 10.0 and math.isnan(merged.loc[1, "ci_high"])
    assert merged.loc[2, "ci_high"] == a["arms"][2]["ci_high"]
    cf1 = ablation_summary(run.trials, "num_scenes", "CF1", run.paper_config)
    assert S.with_arm_intervals(cf1, a) is cf1 and S.with_arm_intervals(ab, None) is ab
    trials = S.trial_intervals(a)
    assert trials["trial_id"].tolist() == [t["trial_id"] for t in a["trials"]]
    assert trials["ci_low"].tolist() == [t["ci_low"] for t in a["trials"]]
    assert trials["mAP_predictions"].tolist() == [t["mAP_predictions"] for t in a["trials"]]
    a["trials"][0]["ci_low"] = None
    assert math.isnan(S.trial_intervals(a).loc[0, "ci_low"])
    assert S.trial_intervals(None).empty


def test_bootstrap_summary(results):
    a = analysis_of(results, "scene_count/2025-06-03_0900")
    assert S.has_predictions(a)
    assert S.bootstrap_text(a) == "1000 resamples of 600 validation images, 6 trial(s) with predictions"
    a["bootstrap"]["trials_with_predictions"] = 0
    assert not S.has_predictions(a) and S.bootstrap_text(a) == "no image bootstrap (no predictions)"


def test_search_importances_and_highlights(results):
    a = analysis_of(results, "tune/2025-05-25_0900")
    imp = S.importances(a)
    expected = [(ev, p, v) for ev, vals in a["search"]["importances"].items() for p, v in vals.items()]
    assert list(imp.itertuples(index=False, name=None)) == expected
    assert set(imp["evaluator"]) == {"fanova", "ped_anova"} and set(imp["param"]) == {"lr", "num_scenes"}
    hi = S.search_highlights(a, ["lr", "num_scenes"])
    assert hi[""].tolist() == ["best trial", "paper's configuration"]
    assert hi["trial_id"].tolist() == [a["search"]["best"]["trial_id"], a["search"]["paper"]["trial_id"]]
    assert hi.loc[0, "best EMA mAP"] == a["search"]["best"]["mAP"]
    # The searched values as trials.csv spells them, shortened: 0.00108014, not 0.001080140785857587.
    assert hi.loc[0, "lr"] == f"{float(a['search']['best']['config']['lr']):g}"
    assert hi.loc[0, "num_scenes"] in ("2", "4", "8")
    assert S.importances({"search": None}).empty and S.search_highlights({}, ["lr"]).empty


def test_parallel_dimensions_plot_log_and_categorical_parameters():
    trials = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "lr": [1e-4, 1e-3, 5e-3, 2e-3],
                           "loss": ["asl", "bce", "asl", "asl"], "num_scenes": [2, 4, 8, 4],
                           "mAP": [50.0, 55.0, np.nan, 53.0]})
    dims, ids = S.parallel_dimensions(trials, ["lr", "loss", "num_scenes"], "mAP", "mAP (%)", ["lr"])
    assert ids == ["a", "b", "d"]  # c has no value
    lr, loss, k, metric = dims
    assert lr.name == "lr (log scale)" and lr.values == pytest.approx([-4, -3, math.log10(2e-3)])
    assert lr.tickvals == [-4.0, -3.0, -2.0] and lr.ticktext == ["0.0001", "0.001", "0.01"]
    assert (loss.values, loss.ticktext, loss.tickvals) == ([0.0, 1.0, 0.0], ["asl", "bce"], [0.0, 1.0])
    assert k.values == [2.0, 4.0, 4.0] and k.ticktext is None
    assert (metric.name, metric.values) == ("mAP (%)", [50.0, 55.0, 53.0])
    assert S.parallel_dimensions(trials, ["lr"], "CF1", "CF1") == ([], [])
