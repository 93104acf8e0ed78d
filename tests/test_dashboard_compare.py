"""Run against run: dashboards/shaping/compare.py (which runs pair, the per-value table, whether the verdicts
agree), its figure, and the "Compare runs" tab through Streamlit's AppTest on the committed scene_count export
beside a screening copy of it."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dashboards.charts.compare import RUN_COLORS, compare_figure
from dashboards.data import paths
from dashboards.data.runs import Run
from dashboards.shaping import compare as C
from dashboards.shaping import texts
from studies.analysis.analyze import analyze_run, write_analysis
from studies.exports.schema import ANALYSIS_JSON, REPORTED_METRIC

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "results" / "scene_count" / "default"


def summary(values: list, means: list[float], n: int = 2) -> pd.DataFrame:
    """A per-value summary as trials.ablation_summary gives it (only the columns the comparison reads)."""
    return pd.DataFrame({"value": values, "label": [str(v) for v in values], "n": [n] * len(values),
                         "mean": means, "ci_low": [m - 1 for m in means], "ci_high": [m + 1 for m in means]})


def cmp(value, diff: float | None, p_holm: float | None, n: int = 2) -> dict:
    """One analysis.json comparison with what comparison_kind reads."""
    return {"value": value, "n": n, "n_reference": 2, "diff": diff, "ci_low": None if diff is None else diff - 0.5,
            "ci_high": None if diff is None else diff + 0.5, "p_holm": p_holm}


def a_side(name: str, values: list, comparisons: list[dict], reference=4, means=None) -> C.Side:
    means = means or [50.0 + i for i in range(len(values))]
    return C.Side(name, summary(values, means), {"alpha": 0.05, "reference": reference, "comparisons": comparisons},
                  reference)


# ---------------------------------------------------------------------------------------------
# Shaping


def test_agreement_of_two_verdicts():
    assert C.agreement("better", "better") == C.AGREE
    assert C.agreement("worse", "worse") == C.AGREE
    assert C.agreement("no detectable difference", "no detectable difference") == C.AGREE
    assert C.agreement("better", "worse") == C.DISAGREE  # opposite directions
    assert C.agreement("better", "no detectable difference") == C.DISAGREE  # one detects, the other not
    assert C.agreement("no detectable difference", "worse") == C.DISAGREE
    assert C.agreement("better", "no test") == C.CANNOT_TELL  # one seed: nothing to agree with
    assert C.agreement("no comparison", "no detectable difference") == C.CANNOT_TELL
    assert C.agreement(C.REFERENCE, C.REFERENCE) == C.BOTH_REFERENCE
    assert C.agreement(C.REFERENCE, "better") == C.CANNOT_TELL  # the value is only A's reference
    assert C.agreement("better", C.ABSENT) == "only in A"
    assert C.agreement(C.ABSENT, "no detectable difference") == "only in B"


def test_table_sets_both_differences_side_by_side_with_dashes_for_missing_values():
    # A: a full study (1, 2, 4, 8); B: a screening one (1, 2, 4, 16), so 8 is A's only and 16 B's only.
    a = a_side("A", [1, 2, 4, 8], [cmp(1, -2.0, 0.01), cmp(2, 0.3, 0.6), cmp(8, 0.1, 0.9)])
    b = a_side("B", [1, 2, 4, 16], [cmp(1, -1.5, 0.02), cmp(2, 1.9, 0.03), cmp(16, 0.2, None, n=1)])
    t = C.compare_table(a, b, "num_scenes")
    assert list(t.columns) == C.columns("num_scenes")
    assert t["num_scenes"].tolist() == ["1", "2", "4 ★", "8", "16"]  # numbers in order, 16 after 8
    rows = t.set_index("num_scenes")
    assert rows["A verdict"].tolist() == ["worse", "no detectable difference", C.REFERENCE,
                                          "no detectable difference", C.ABSENT]
    assert rows["B verdict"].tolist() == ["worse", "better", C.REFERENCE, C.ABSENT, "no test"]
    assert rows["agreement"].tolist() == [C.AGREE, C.DISAGREE, C.BOTH_REFERENCE, "only in A", "only in B"]
    # Each run's own difference and interval, from its analysis; the reference has none.
    diff = C.DIFF
    assert rows.loc["1", f"A {diff}"] == "-2.00 [-2.50, -1.50]" and rows.loc["1", f"B {diff}"] == "-1.50 [-2.00, -1.00]"
    assert rows.loc["2", f"B {diff}"] == "+1.90 [+1.40, +2.40]" and rows.loc["4 ★", f"A {diff}"] == "–"
    # The run that lacks a value has a dash (missing) in every one of its columns.
    assert pd.isna(rows.loc["8", "B seeds"]) and rows.loc["8", "A seeds"] == 2
    assert rows.loc["8", f"B {diff}"] == "–" and rows.loc["8", "B verdict"] == C.ABSENT
    assert pd.isna(rows.loc["16", "A seeds"]) and rows.loc["16", "B seeds"] == 2
    assert C.diff_text({"diff": 0.2, "ci_low": None}) == "+0.20" and C.diff_text({"diff": None}) == "–"
    assert C.counts(t) == {C.AGREE: 1, C.DISAGREE: 1, C.BOTH_REFERENCE: 1, "only in A": 1, "only in B": 1}


def test_each_difference_is_to_the_runs_own_reference():
    """One ablation on two datasets whose recipes start from different values (★ 4 and ★ 6)."""
    a = a_side("A", [2, 4, 6], [cmp(2, -1.0, 0.01), cmp(6, 0.1, 0.8)], reference=4)
    b = a_side("B", [2, 4, 6], [cmp(2, -2.0, 0.001), cmp(4, -0.2, 0.7)], reference=6)
    rows = C.compare_table(a, b, "num_scenes").set_index("num_scenes")
    assert rows.index.tolist() == ["2", "4 ★A", "6 ★B"]
    assert rows.loc["4 ★A", "A verdict"] == C.REFERENCE and rows.loc["4 ★A", f"B {C.DIFF}"] == "-0.20 [-0.70, +0.30]"
    # Both runs find 2 worse, but against 4 and against 6: different questions, never matched as agree/disagree.
    assert rows.loc["4 ★A", "agreement"] == C.CANNOT_TELL and rows.loc["2", "agreement"] == C.OTHER_REFERENCES
    assert C.agreement("better", "no detectable difference", same_reference=False) == C.OTHER_REFERENCES


def test_named_arms_keep_their_order_and_a_value_without_comparison_cannot_be_told():
    arms = ["no_graph", "global", "learned", "oracle"]
    a = a_side("A", arms, [cmp("no_graph", -3.0, 0.001), cmp("learned", 0.5, 0.04)], reference="global")
    b = a_side("B", ["no_graph", "global", "learned"], [cmp("no_graph", -2.5, 0.01)], reference="global")
    rows = C.compare_table(a, b, "arm").set_index("arm")
    assert rows.index.tolist() == ["no_graph", "global ★", "learned", "oracle"]
    assert rows["agreement"].tolist() == [C.AGREE, C.BOTH_REFERENCE, C.CANNOT_TELL, "only in A"]
    assert rows.loc["learned", "B verdict"] == "no comparison"  # B has trials of it, its analysis no comparison
    # No analysis at all (it could not be computed): the seeds still show, no verdict can be told.
    rows = C.compare_table(a, C.Side("B", summary(arms, [1.0] * 4, n=3), None, "global"), "arm").set_index("arm")
    assert rows["B seeds"].tolist() == [3] * 4 and rows.loc["no_graph", "agreement"] == C.CANNOT_TELL
    assert rows.loc["no_graph", "B verdict"] == "no comparison" and rows.loc["no_graph", f"B {C.DIFF}"] == "–"


def run(axis: str | None, paper_config: dict, arms: dict | None = None) -> Run:
    meta = {"axis": axis, "paper_config": paper_config, **({"arms": arms} if arms else {})}
    return Run(Path("x"), meta, pd.DataFrame(), pd.DataFrame(), {})


def test_which_runs_pair():
    k4, k6 = run("num_scenes", {"num_scenes": 4}), run("num_scenes", {"num_scenes": 6})
    assert C.pairable(k4, k6)  # the same field: each difference is to its own reference
    assert not C.pairable(k4, run("gnn_steps", {"gnn_steps": 3}))
    assert not C.pairable(run(None, {}), run(None, {}))  # joint searches have no axis
    mechanism = run("arm", {"arm": "global"}, {"no_graph": {}, "global": {}, "oracle": {}})
    screen = run("arm", {"arm": "global"}, {"global": {}, "learned": {}})
    visibility = run("arm", {"arm": "global@0.6"}, {"global@0.6": {}, "learned@0": {}})
    assert C.pairable(mechanism, screen) and C.pairable(screen, mechanism)
    assert not C.pairable(mechanism, visibility)  # both sweep "arm", but not with the same reference arm
    assert not C.pairable(mechanism, run("arm", {"arm": "global"}))  # named arms against a plain field


def test_figure_overlays_both_runs_in_two_colours():
    a = a_side("A", [1, 2, 4, 8], [], means=[50.0, 51.0, 52.0, 53.0])
    b = a_side("B", [1, 2, 4], [], means=[49.0, 50.5, 51.5])
    b.summary.loc[0, ["ci_low", "ci_high"]] = math.nan  # one seed: no interval
    fig = compare_figure([a, b], ["1", "2", "4", "8"], ["A · full", "B · screen"], "K", "best EMA mAP (%)")
    ta, tb = fig.data
    assert (ta.name, tb.name) == ("A · full", "B · screen")
    assert list(ta.x) == ["1", "2", "4", "8"] and list(ta.y) == [50.0, 51.0, 52.0, 53.0]
    assert list(tb.x) == ["1", "2", "4"] and list(tb.y) == [49.0, 50.5, 51.5]
    assert (ta.line.color, tb.line.color) == RUN_COLORS and RUN_COLORS[0] != RUN_COLORS[1]
    assert list(ta.error_y.array) == [1.0] * 4 and list(tb.error_y.array)[0] == 0.0
    assert list(ta.marker.symbol) == ["diamond", "diamond", "star", "diamond"]  # ★: the run's reference
    assert list(fig.layout.xaxis.categoryarray) == ["1", "2", "4", "8"]
    lo, hi = fig.layout.yaxis.range
    assert 48.0 < lo < 49.0 and 54.0 < hi < 55.0  # tight around the means and intervals, not from 0


# ---------------------------------------------------------------------------------------------
# The tab, on the committed export and a screening copy


def screening_copy(root: Path) -> tuple[Path, Path]:
    """The committed scene_count export and a screening copy of it: seeds 0 and 1 only, no K = 8, and K = 2
    made 2 points better than K = 4 on both seeds (so the copy detects what the full study does not). Its
    analysis is rewritten from its trials alone (the predictions would no longer match them)."""
    full = root / "scene_count" / "default"
    shutil.copytree(COMMITTED, full)
    screen = root / "scene_count" / "screen"
    shutil.copytree(COMMITTED, screen, ignore=shutil.ignore_patterns("predictions", "analysis.json",
                                                                     "comparisons.csv"))
    t = pd.read_csv(screen / "trials.csv")
    t = t[(t["num_scenes"] != 8) & (t["seed"] < 2)].copy()
    ref = t[t["num_scenes"] == 4].set_index("seed")[REPORTED_METRIC]
    k2 = t["num_scenes"] == 2
    t.loc[k2, REPORTED_METRIC] = [ref[s] + 2.0 + 0.1 * s for s in t.loc[k2, "seed"]]
    t.to_csv(screen / "trials.csv", index=False)
    meta = json.loads((screen / "study.json").read_text())
    meta.pop("predictions", None)
    meta.update(run="screen", seeds=[0, 1], axis_values=[1, 2, 4], n_trials=len(t), n_finished=len(t))
    (screen / "study.json").write_text(json.dumps(meta))
    write_analysis(screen, analyze_run(screen))
    return full, screen


def texts_of(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


@pytest.mark.slow
def test_the_compare_tab_sets_a_screening_run_beside_the_full_one(monkeypatch, tmp_path):
    AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
    full, screen = screening_copy(tmp_path / "results")
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "results"))
    at = AppTest.from_file(str(REPO / "dashboards" / "app.py"), default_timeout=60).run()
    at.sidebar.selectbox(key="run").select(paths.display_path(full)).run()
    assert not at.exception, [e.value for e in at.exception]
    picker = at.selectbox(key=f"compare_with::{paths.display_path(full)}")
    assert picker.value == paths.display_path(screen) and len(picker.options) == 1
    # The table: both runs' differences to their own ★, from each run's analysis.json.
    (rows,) = [df.value for df in at.dataframe if "agreement" in df.value]
    rows = rows.set_index("num_scenes")
    assert rows.index.tolist() == ["1", "2", "4 ★", "8"]
    assert rows["agreement"].tolist() == [C.AGREE, C.DISAGREE, C.BOTH_REFERENCE, "only in A"]
    assert rows.loc["2", "B verdict"] == "better" and rows.loc["2", "A verdict"] == "no detectable difference"
    analyses = [json.loads((d / ANALYSIS_JSON).read_text()) for d in (full, screen)]
    for name, analysis in zip(("A", "B"), analyses, strict=True):
        for c in analysis["comparisons"]:
            if c["diff"] is not None:
                assert rows.loc[str(c["value"]), f"{name} {C.DIFF}"].startswith(f"{c['diff']:+.2f} [")
    assert pd.isna(rows.loc["8", "B seeds"]) and rows.loc["8", "B verdict"] == "–"
    # The chart: the two runs' means, each with the analysis's interval.
    (chart,) = [c for c in at.get("plotly_chart") if "compare_chart" in c.proto.id]
    fig = json.loads(chart.proto.spec)
    a, b = fig["data"]
    assert a["name"] == "A · scene_count/default" and b["name"] == "B · scene_count/screen"
    assert a["x"] == ["1", "2", "4", "8"] and b["x"] == ["1", "2", "4"]
    arms = {arm["value"]: arm for arm in analyses[1]["arms"]}
    assert b["y"] == pytest.approx([arms[v]["mean"] for v in (1, 2, 4)])
    assert b["error_y"]["array"] == pytest.approx([arms[v]["ci_high"] - arms[v]["mean"] for v in (1, 2, 4)])
    captions = texts_of(at.caption)
    assert texts.COMPARE_TABLE_CAPTION in captions and texts.COMPARE_CHART_CAPTION in captions
    assert f"**A (this run)** = {paths.display_path(full)} (synthetic, " in captions
    assert f"**B** = {paths.display_path(screen)} (synthetic, " in captions and "2 seed(s)" in captions
    assert "1 agree · 1 disagree · 1 both references · 1 only in A" in texts_of(at.markdown)


@pytest.mark.slow
def test_the_compare_tab_says_when_no_run_pairs(monkeypatch, tmp_path):
    AppTest = pytest.importorskip("streamlit.testing.v1").AppTest
    shutil.copytree(COMMITTED, tmp_path / "results" / "scene_count" / "default")
    # Another axis does not pair: no picker, the message instead.
    shutil.copytree(REPO / "results" / "graph_depth" / "default", tmp_path / "results" / "graph_depth" / "default")
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path / "results"))
    at = AppTest.from_file(str(REPO / "dashboards" / "app.py"), default_timeout=60).run()
    at.sidebar.selectbox(key="run").select(paths.display_path(tmp_path / "results/scene_count/default")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert texts.no_other_run("num_scenes", False) in texts_of(at.info)
    assert not [c for c in at.get("plotly_chart") if "compare_chart" in c.proto.id]
    assert not [df for df in at.dataframe if "agreement" in df.value]
    assert not [s for s in at.selectbox if "compare_with" in str(s.key)]
