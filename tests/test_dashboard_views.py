"""dashboards/views.py: what each view shows, computed from demo exports written into tmp_path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboards import demo
from dashboards import views as V
from dashboards.files import load_scene
from dashboards.paper import load_paper_tables
from dashboards.runs import list_runs, load_run
from studies.schema import TRIAL_RESULT_COLUMNS


@pytest.fixture
def results(tmp_path: Path) -> Path:
    demo.write_all(tmp_path / "results")
    return tmp_path / "results"


def test_ablation_summary_matches_the_exported_trials(tmp_path):
    run = load_run(demo.write_synthetic_scene_count(tmp_path / "results"))
    ab = V.ablation_summary(run.trials, "num_scenes", "mAP", run.paper_config)
    assert ab.summary["label"].tolist() == ["1", "2", "4"]
    for _, row in ab.summary.iterrows():
        vals = [demo.synthetic_final(int(row["value"]), s) for s in (0, 1)]
        assert row["n"] == 2
        assert row["mean"] == pytest.approx(np.mean(vals))
        assert row["std"] == pytest.approx(np.std(vals, ddof=1))
    assert ab.summary["is_paper"].tolist() == [False, False, True]
    assert ab.points["metric"].tolist() == [demo.synthetic_final(k, s) for k in (1, 2, 4) for s in (0, 1)]
    paper_row, best_row = V.ablation_highlights(ab)
    assert paper_row["label"] == "4" and best_row["label"] == "4"
    assert list(V.ablation_table(ab).columns) == ["num_scenes", "n (finished)", "mean", "std", "min", "max",
                                                  "errored / diverged", "paper config"]
    assert V.paper_config_value(run) == "4"


def test_ablation_summary_excludes_unfinished_and_counts_failures(tmp_path):
    run = load_run(demo.write_running_momentum(tmp_path / "results"))
    t = pd.concat([run.trials, run.trials.iloc[[1]].assign(trial_id="x", status="DIVERGED", mAP=np.nan)],
                  ignore_index=True)
    ab = V.ablation_summary(t, "comat_momentum", "mAP", {"comat_momentum": 1.0})
    s = ab.summary.set_index("label")
    assert s.loc["0.99", "n"] == 0 and math.isnan(s.loc["0.99", "mean"])
    assert s.loc["0.9", "failed"] == 1 and s.loc["0.9", "n"] == 1 and math.isnan(s.loc["0.9", "std"])
    assert s.loc["1", "is_paper"]
    running = ab.points[ab.points["status"] == "RUNNING"]
    assert running["metric"].tolist() == [55.7] and not running["counted"].any()
    paper_row, best_row = V.ablation_highlights(ab)
    assert paper_row["label"] == "1" and best_row["label"] == "1" and best_row["mean"] == 56.0
    empty = V.ablation_summary(t, "not_a_column", "mAP")
    assert empty.points.empty and empty.summary.empty
    assert V.ablation_highlights(empty) == (None, None)


def test_metric_options_offer_extras_only_with_values(tmp_path):
    run = load_run(demo.write_synthetic_scene_count(tmp_path / "results"))
    assert V.metric_options(run.trials) == list(V.METRICS)
    coco = load_run(demo.write_coco_graph_depth(tmp_path / "results"))
    assert "scene_nmi" not in V.metric_options(coco.trials) and V.metric_options(coco.trials)[0] == "mAP"
    assert V.metric_options(pd.DataFrame()) == ["mAP"]


def test_search_params_for_tune(tmp_path):
    run = load_run(demo.write_tune(tmp_path / "results"))
    assert run.axis is None
    assert V.search_params(run) == ["lr", "num_scenes"]
    assert V.log_scale_params(run) == ["lr"]
    pts = V.search_points(run.trials, ["lr", "num_scenes"], "mAP")
    assert len(pts) == 16 and set(pts["status"]) == {"FINISHED", "STOPPED"}
    best = V.best_trial_id(run.trials, "mAP")
    assert best == run.trials.loc[run.trials["mAP"].idxmax(), "trial_id"]
    top = V.top_trials(run.trials, ["lr", "num_scenes"], "mAP", n=3)
    assert top["trial_id"].iloc[0] == best and len(top) == 3
    assert list(top.columns) == ["trial_id", "status", "lr", "num_scenes", "mAP", "epochs_done"]
    run.meta["search_space"] = None
    assert V.search_params(run) == ["num_scenes", "lr"]


def test_trial_choices_put_the_paper_configuration_first(tmp_path):
    run = load_run(demo.write_running_momentum(tmp_path / "results"))
    ids, labels, preferred = V.trial_choices(run, run.epochs["trial_id"])
    assert ids == ["mo_1.0_0", "mo_0.9_0", "mo_0.99_0", "mo_0.999_0"]
    assert labels["mo_0.9_0"] == "mo_0.9_0 · comat_momentum=0.9 · seed 0"
    assert labels["mo_0.999_0"] == "mo_0.999_0 (no trials.csv row yet)"
    assert preferred[0] == "mo_1.0_0"
    sc = load_run(demo.write_synthetic_scene_count(tmp_path / "results"))
    ids, _, preferred = V.trial_choices(sc, sc.scene_files)
    assert ids[:2] == ["sc_1_0", "sc_1_1"] and preferred[:2] == ["sc_4_0", "sc_4_1"]


def test_trial_table_filters_and_columns(tmp_path):
    run = load_run(demo.write_synthetic_scene_count(tmp_path / "results"))
    options = V.trial_filters(run)
    assert options == {"status": ["FINISHED"], "num_scenes": [1, 2, 4], "seed": [0, 1]}
    rows = V.trial_table(run, {**options, "seed": [0]})
    assert rows["trial_id"].tolist() == ["sc_1_0", "sc_2_0", "sc_4_0"]
    assert list(rows.columns[:5]) == ["trial_id", "status", "seed", "is_paper_config", "num_scenes"]
    assert list(rows.columns[5:]) == list(TRIAL_RESULT_COLUMNS)
    everything = V.trial_table(run, options, all_config=True)
    assert len(everything) == 6 and "lr" in everything and "backbone" in everything
    assert V.failed_trials(run).empty


def test_best_per_dataset_and_comparison(results):
    runs, _ = list_runs(results)
    best = V.best_per_dataset(runs)
    assert best["dataset"].tolist() == ["coco", "synthetic"]
    coco = best.iloc[0]
    assert (coco["run"], coco["trial_id"], coco["value"]) == ("graph_depth/2025-05-20_0900", "gd_3_0", 85.7)
    table = V.comparison_table(best, load_paper_tables())
    ours = table[table["method"].str.startswith("ours")]
    assert ours["ours - SALGL paper"].iloc[0] == pytest.approx(85.7 - 85.8)
    assert math.isnan(ours["ours - SALGL paper"].iloc[1])
    assert table.iloc[0]["method"].startswith("ours: graph_depth")
    assert (table["dataset"] == "coco").sum() == 18 and (table["dataset"] == "synthetic").sum() == 1
    assert V.runs_table(runs)["run"].tolist() == [r.key for r in runs]


def test_provenance_and_settings(tmp_path):
    run = load_run(demo.write_coco_graph_depth(tmp_path / "results"))
    t = V.provenance_table(run)
    prov = dict(zip(t["field"], t["value"], strict=True))
    assert prov["gpus"] == "NVIDIA H100 80GB HBM3" and prov["summed ÷ wall (effective parallelism)"] == "2.00x"
    assert prov["git commit"] == demo.PROVENANCE["git_commit"] and prov["wall time"] == "0:20:00"
    assert V.packages_table(run)["package"].tolist() == list(demo.PROVENANCE["packages"])
    settings = V.study_settings(run)
    assert settings["paper_config"] == {"gnn_steps": 3} and settings["search_space"] is None
    assert json.loads(json.dumps(settings, default=str))["axis"] == "gnn_steps"


def test_typical_labels(tmp_path):
    run = load_run(demo.write_synthetic_scene_count(tmp_path / "results"))
    scene = load_scene(run.scene_files["sc_4_0"])
    assert scene.nmi == 0.8 and scene.contingency.shape == (4, 4)
    top = V.typical_labels(scene, top=3)
    assert len(top) == 12
    # The demo makes scene k favour labels 5k..5k+4.
    for k in range(4):
        labels = top[top["scene"] == k]["label"]
        assert all(5 * k <= int(name[-2:]) < 5 * k + 5 for name in labels)
    assert (top["lift"] > 1).all() and top["share"].between(0, 1).all()
    coco = load_run(demo.write_coco_graph_depth(tmp_path / "results"))
    coco_scene = load_scene(coco.scene_files["gd_0_0"])
    assert coco_scene.class_names[0] == "person" and coco_scene.nmi is None and coco_scene.contingency is None


def test_paper_references_follow_the_run_and_metric(tmp_path):
    paper = load_paper_tables()
    coco = load_run(demo.write_coco_graph_depth(tmp_path / "results"))
    ref, repro = V.paper_references(coco, paper, "best_mAP_ema")
    assert ref.value == 85.8 and repro["mAP"].tolist() == [85.75, 85.75]
    ref, repro = V.paper_references(coco, paper, "scene_nmi")
    assert ref is None and repro.empty
    assert V.reference_curve(coco, paper) is paper.curve
    syn = load_run(demo.write_synthetic_scene_count(tmp_path / "results"))
    ref, repro = V.paper_references(syn, paper, "mAP")
    assert ref is None and repro.empty and V.reference_curve(syn, paper) is None
