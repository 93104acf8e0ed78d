"""dashboards/charts/figures.py: the figures hold the exported numbers and the reference lines the views promise."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dashboards import demo
from dashboards.charts import figures as C
from dashboards.charts import stats as CS
from dashboards.data.files import load_scene
from dashboards.data.paper import load_paper_tables, paper_reference, reproduction_refs
from dashboards.data.runs import load_run
from dashboards.shaping import stats as S
from dashboards.shaping.trials import ablation_summary, search_params, search_points


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """The demo's healthy runs with their predictions and analysis.json, written once for this module."""
    root = tmp_path_factory.mktemp("demo") / "results"
    demo.write_good(root)
    return root


def traces(fig) -> dict:
    return {t.name: t for t in fig.data}


def test_ablation_figure_points_mean_star_and_paper_line(tmp_path):
    run = load_run(demo.write_coco_graph_depth(tmp_path / "results"))
    ab = ablation_summary(run.trials, "gnn_steps", "best_mAP_ema", run.paper_config)
    ref = paper_reference(load_paper_tables().coco, "coco", "resnet101", 448, "best_mAP_ema")
    fig = C.ablation_figure(ab, "graph propagation steps T", "best EMA mAP (%), the paper's reported number", ref)
    assert fig.layout.yaxis.title.text == "best EMA mAP (%), the paper's reported number"
    assert "best_mAP_ema=" in fig.data[0].hovertemplate
    t = traces(fig)
    assert list(t["seed 0"].x) == ["0", "3"] and list(t["seed 0"].y) == [85.1, 85.7]
    assert list(t["mean ± std over seeds"].y) == [85.1, 85.7]
    assert list(t["mean ± std over seeds"].error_y.array) == [0.0, 0.0]  # one seed: no spread to draw
    assert list(t["paper's configuration"].x) == ["3"]
    (line,) = fig.layout.shapes
    assert line.y0 == line.y1 == 85.8
    lo, hi = fig.layout.yaxis.range
    assert lo < 85.1 and hi > 85.8
    assert list(fig.layout.xaxis.categoryarray) == ["0", "3"]


def test_ablation_figure_without_paper_number_draws_reproductions(tmp_path):
    run = load_run(demo.write_running_momentum(tmp_path / "results"))
    ab = ablation_summary(run.trials, "comat_momentum", "mAP", run.paper_config)
    repro = reproduction_refs(load_paper_tables().reproductions, "nuswide", "resnet101", 448)
    fig = C.ablation_figure(ab, "μ", "mAP", None, repro)
    t = traces(fig)
    assert list(t["not finished (RUNNING)"].y) == [55.7]
    assert sorted(s.y0 for s in fig.layout.shapes) == [66.24, 66.34]
    assert fig.layout.yaxis.range[1] > 66.34
    assert not C.ablation_figure(ab, "μ", "mAP").layout.shapes


def test_search_figure_log_axis_and_best_trial(tmp_path):
    run = load_run(demo.write_tune(tmp_path / "results"))
    params = search_params(run)
    pts = search_points(run.trials, params, "mAP")
    best = str(run.trials.loc[run.trials["mAP"].idxmax(), "trial_id"])
    fig = C.search_figure(pts, params, "mAP", best, ["lr"])
    assert [a.text for a in fig.layout.annotations] == ["lr", "num_scenes"]
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type != "log"
    ys = sorted(y for t in fig.data if t.xaxis == "x" and t.name != "best trial" for y in t.y)
    assert ys == sorted(run.trials["mAP"].tolist())
    stars = [t for t in fig.data if t.name == "best trial"]
    assert len(stars) == 2 and stars[0].y[0] == run.trials["mAP"].max()


def test_learning_curves_and_losses_carry_the_published_curve(tmp_path):
    run = load_run(demo.write_coco_graph_depth(tmp_path / "results"))
    curve = load_paper_tables().curve
    labels = {"gd_3_0": "T=3"}
    fig = C.learning_curves_figure(run.epochs, ["gd_3_0"], labels, curve)
    t = traces(fig)
    ep = run.epochs[run.epochs["trial_id"] == "gd_3_0"]
    assert list(t["T=3 · mAP"].y) == ep["mAP"].tolist() and t["T=3 · mAP_ema"].line.dash == "dot"
    ref = t["published COCO reproduction (best EMA mAP so far)"]
    assert list(ref.x)[:2] == [1, 2] and list(ref.y) == curve["best_ema_mAP"].tolist()
    losses = C.losses_figure(run.epochs, ["gd_3_0"], labels, curve)
    assert [a.text for a in losses.layout.annotations][:2] == ["total", "classification (ASL/BCE)"]
    assert sum(t.name == "published COCO reproduction" for t in losses.data) == 3
    # A missing value is a gap in the line, not a zero.
    gap = run.epochs.assign(mAP=run.epochs["mAP"].where(run.epochs["epoch"] != 2))
    y = traces(C.learning_curves_figure(gap, ["gd_3_0"], labels)).get("T=3 · mAP").y
    assert y[1] is None and y[0] == ep["mAP"].iloc[0]


def test_scene_figures(tmp_path):
    run = load_run(demo.write_synthetic_scene_count(tmp_path / "results"))
    scene = load_scene(run.scene_files["sc_4_0"])
    heat = C.cooccurrence_figure(scene, 2).data[0]
    assert np.allclose(heat.z, scene.prob[2]) and heat.zmin == 0 and list(heat.x) == scene.class_names
    diff = C.cooccurrence_figure(scene, 2, difference=True).data[0]
    assert np.allclose(diff.z, scene.prob[2] - scene.prob.mean(0), atol=1e-4) and diff.zmin == -1
    usage = C.scene_usage_figure(scene).data[0]
    assert list(usage.y) == pytest.approx((scene.usage * 100).round(2).tolist())
    cont = C.contingency_figure(scene).data[0]
    assert np.array_equal(np.array(cont.z), scene.contingency) and cont.y[0] == "learned 0"


def test_log_axis_guess_needs_a_wide_positive_range():
    assert C._is_log([1e-4, 1e-2]) and not C._is_log([1, 8]) and not C._is_log([0, 100])
    assert not C._is_log(pd.Series(["a", "b"]))


def test_ablation_figure_draws_the_arms_intervals_and_the_trials_on_hover(analysed):
    d = analysed / "scene_count/2025-06-03_0900"
    run = load_run(d)
    a = json.loads((d / "analysis.json").read_text())
    ab = S.with_arm_intervals(ablation_summary(run.trials, "num_scenes", "best_mAP_ema", run.paper_config), a)
    fig = C.ablation_figure(ab, "K", "best EMA mAP (%)", trial_intervals=S.trial_intervals(a),
                            reference_name="synthetic preset's value")
    t = traces(fig)
    ci = t["95% CI of the mean (t, seeds)"]
    assert list(ci.x) == ["1", "2", "4"]
    assert list(np.add(ci.y, ci.error_y.array)) == pytest.approx([arm["ci_high"] for arm in a["arms"]])
    assert list(np.subtract(ci.y, ci.error_y.arrayminus)) == pytest.approx([arm["ci_low"] for arm in a["arms"]])
    assert [row[:2] for row in ci.customdata] == [[arm["ci_low"], arm["ci_high"]] for arm in a["arms"]]
    # The std bar stays: the spread of the seeds beside the interval of their mean.
    assert list(t["mean ± std over seeds"].error_y.array) == pytest.approx(ab.summary["std"].tolist())
    assert list(t["synthetic preset's value"].x) == ["4"]
    by_id = {x["trial_id"]: x for x in a["trials"]}
    for seed in (0, 1):
        pts = t[f"seed {seed}"]
        assert [row[1:] for row in pts.customdata] == [[by_id[row[0]]["ci_low"], by_id[row[0]]["ci_high"]]
                                                       for row in pts.customdata]
        assert all(text.startswith("image-bootstrap 95% interval [") for text in pts.text)
        assert "%{text}" in pts.hovertemplate
    lo, hi = fig.layout.yaxis.range
    assert lo < min(arm["ci_low"] for arm in a["arms"]) and hi > max(arm["ci_high"] for arm in a["arms"])
    # Without predictions the hover says so; without an analysis it says nothing about intervals.
    none = S.trial_intervals(a).assign(ci_low=np.nan, ci_high=np.nan)
    pts = traces(C.ablation_figure(ab, "K", "mAP", trial_intervals=none))["seed 0"]
    assert set(pts.text) == {"no image-bootstrap interval (no predictions)"} and pts.customdata[0][1] is None
    assert set(traces(C.ablation_figure(ab, "K", "mAP"))["seed 0"].text) == {""}


def test_forest_figure_holds_each_difference_and_interval_coloured_by_verdict(analysed):
    a = json.loads((analysed / "scene_count/2025-06-03_0900/analysis.json").read_text())
    a["comparisons"][1].update(diff=0.9, ci_low=0.3, ci_high=1.5, p_holm=0.02)  # a third kind, to colour
    pts = S.forest_points(a)
    fig = CS.forest_figure(pts, "number of scenes K")
    got = {}
    for tr in fig.data:
        for x, y, up, down, (ci, verdict) in zip(tr.x, tr.y, tr.error_x.array, tr.error_x.arrayminus, tr.customdata,
                                                   strict=True):
            got[y] = (tr.name, x, x - down, x + up, ci, verdict)
            assert tr.marker.color == CS.VERDICT_COLORS[tr.name]
    for c in a["comparisons"]:
        kind, x, lo, hi, ci, verdict = got[str(c["value"])]
        assert kind == S.comparison_kind(c) and x == c["diff"]
        assert (lo, hi) == pytest.approx((c["ci_low"], c["ci_high"]))
        assert ci == f"[{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]" and verdict == c["verdict"].replace("; ", "<br>")
    assert {tr.name for tr in fig.data} == {"worse", "better"}
    # Rows top to bottom in the axis order; the reference at zero, inside the x range.
    assert list(fig.layout.yaxis.categoryarray) == ["2", "1"]
    (line,) = fig.layout.shapes
    assert line.x0 == line.x1 == 0 and line.line.color == C.PAPER_COLOR
    lo, hi = fig.layout.xaxis.range
    assert lo < min(c["ci_low"] for c in a["comparisons"]) and hi > 1.5


def test_forest_figure_without_intervals_draws_the_difference_alone(analysed):
    pts = pd.DataFrame([{"value": 0.9, "label": "0.9", "diff": -1.0, "ci_low": np.nan, "ci_high": np.nan,
                         "kind": "no test", "verdict": "no seed-level test (one seed per arm): -1.00 mAP; no "
                                                      "predictions for an image-level interval", "p_holm": np.nan,
                         "p_improve": 0.0, "interval": "–", "n": 1, "n_reference": 1}])
    (tr,) = CS.forest_figure(pts, "μ").data
    assert list(tr.x) == [-1.0] and list(tr.error_x.array) == [0.0] and tr.customdata[0][0] == "–"
    lo, hi = CS.forest_figure(pts, "μ").layout.xaxis.range
    assert lo < -1.0 and hi > 0.0


def test_importance_and_parallel_figures(analysed):
    d = analysed / "tune/2025-05-25_0900"
    a = json.loads((d / "analysis.json").read_text())
    fig = CS.importance_figure(S.importances(a))
    assert [t.name for t in fig.data] == ["fANOVA", "PED-ANOVA"]
    for t, key in zip(fig.data, ("fanova", "ped_anova"), strict=True):
        assert dict(zip(t.y, t.x, strict=True)) == a["search"]["importances"][key]
    run = load_run(d)
    dims, ids = S.parallel_dimensions(run.trials, ["lr", "num_scenes"], "best_mAP_ema", "best EMA mAP (%)", ["lr"])
    (par,) = CS.parallel_figure(dims).data
    assert [dim.label for dim in par.dimensions] == ["lr (log scale)", "num_scenes", "best EMA mAP (%)"]
    assert list(par.dimensions[0].values) == pytest.approx(np.log10(run.trials["lr"]).tolist())
    assert list(par.dimensions[0].ticktext) == ["0.0001", "0.001", "0.01"]
    assert list(par.dimensions[2].values) == run.trials["best_mAP_ema"].tolist() == list(par.line.color)
    assert ids == run.trials["trial_id"].tolist()
