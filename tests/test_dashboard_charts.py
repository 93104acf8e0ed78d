"""dashboards/charts.py: the figures hold the exported numbers and the reference lines the views promise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboards import charts as C
from dashboards import demo
from dashboards.files import load_scene
from dashboards.paper import load_paper_tables, paper_reference, reproduction_refs
from dashboards.runs import load_run
from dashboards.views import ablation_summary, search_params, search_points


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
