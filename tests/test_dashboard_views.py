"""dashboards/shaping/trials.py: what each view shows, computed from demo exports written into tmp_path."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dashboards import demo
from dashboards.data.paper import load_paper_tables
from dashboards.data.runs import load_run
from dashboards.shaping import trials as V
from studies.exports.schema import REPORTED_METRIC, TRIAL_PLACEMENT_COLUMNS, TRIAL_RESULT_COLUMNS


def test_ablation_summary_matches_the_exported_trials(tmp_path):
    run = load_run(demo.write_synthetic_scene_count(tmp_path / "results"))
    ab = V.ablation_summary(run.trials, "num_scenes", "mAP", run.paper_config)
    assert ab.summary["label"].tolist() == ["1", "2", "4"]
    for _, row in ab.summary.iterrows():
        vals = [demo.synthetic_final(int(row["value"]), s) for s in (0, 1)]
        assert row["n"] == 2
        assert row["mean"] == pytest.approx(np.mean(vals))
        assert row["std"] == pytest.approx(np.std(vals, ddof=1))
        # The mean's Student t interval over the seeds (t_0.975 with 1 df = 12.706).
        half = 12.7062047 * np.std(vals, ddof=1) / np.sqrt(2)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((np.mean(vals) - half, np.mean(vals) + half))
    assert ab.summary["is_paper"].tolist() == [False, False, True]
    assert ab.points["metric"].tolist() == [demo.synthetic_final(k, s) for k in (1, 2, 4) for s in (0, 1)]
    paper_row, best_row = V.ablation_highlights(ab)
    assert paper_row["label"] == "4" and best_row["label"] == "4"
    assert list(V.ablation_table(ab).columns) == ["num_scenes", "n (finished)", "mean", "std", "95% CI low",
                                                  "95% CI high", "min", "max", "errored / diverged", "paper config"]
    assert V.paper_config_value(run) == "4"


def test_ablation_summary_excludes_unfinished_and_counts_failures(tmp_path):
    run = load_run(demo.write_running_momentum(tmp_path / "results"))
    t = pd.concat([run.trials, run.trials.iloc[[1]].assign(trial_id="x", status="DIVERGED", mAP=np.nan)],
                  ignore_index=True)
    ab = V.ablation_summary(t, "comat_momentum", "mAP", {"comat_momentum": 1.0})
    s = ab.summary.set_index("label")
    assert s.loc["0.99", "n"] == 0 and math.isnan(s.loc["0.99", "mean"])
    assert s.loc["0.9", "failed"] == 1 and s.loc["0.9", "n"] == 1 and math.isnan(s.loc["0.9", "std"])
    assert math.isnan(s.loc["0.9", "ci_low"]) and math.isnan(s.loc["0.9", "ci_high"])  # one seed: no interval
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
    assert "scene_nmi" not in V.metric_options(coco.trials)
    # The paper's reported number comes first: every view's default.
    assert V.metric_options(coco.trials)[0] == V.METRICS[0] == REPORTED_METRIC == "best_mAP_ema"
    assert V.metric_options(pd.DataFrame()) == [REPORTED_METRIC]


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
    # The reported number first, then the schema's result columns; a local run leaves the node columns
    # empty, and empty they are not shown.
    assert set(TRIAL_PLACEMENT_COLUMNS) <= set(run.trials.columns) and run.trials["node_ip"].isna().all()
    assert list(rows.columns[5:]) == [REPORTED_METRIC, *(c for c in TRIAL_RESULT_COLUMNS
                                                         if c != REPORTED_METRIC and c not in TRIAL_PLACEMENT_COLUMNS)]
    everything = V.trial_table(run, options, all_config=True)
    assert len(everything) == 6 and "lr" in everything and "backbone" in everything
    assert V.failed_trials(run).empty


def test_trial_row_without_missing_cells(tmp_path):
    run = load_run(demo.write_running_momentum(tmp_path / "results"))
    row = V.trial_row(run, "mo_0.9_0")
    assert row["comat_momentum"] == 0.9 and not row["soft_assignment"] and row["comat_ema"] and "node_ip" not in row
    assert V.trial_row(run, "mo_0.999_0") == {}  # in epochs.csv, no trials.csv row yet


def test_trial_table_shows_where_cluster_trials_ran(tmp_path):
    """GPU ids, node IP and retries up front when trials.csv has them (node_id with every field); never config."""
    run = load_run(demo.write_coco_graph_depth(tmp_path / "results"))
    rows = V.trial_table(run, V.trial_filters(run))
    cols = list(rows.columns)
    assert cols[5:9] == [REPORTED_METRIC, "gpu_ids", "node_ip", "retries"]  # in sight, before the other metrics
    assert "node_id" not in rows
    assert rows["node_ip"].tolist() == ["10.0.0.11", "10.0.0.12"] and rows["retries"].tolist() == [0, 1]
    assert rows["gpu_ids"].tolist() == ["0", "1"]
    everything = V.trial_table(run, V.trial_filters(run), all_config=True)
    assert everything["node_id"].tolist() == [demo.COCO_PLACEMENT[t][0] for t in (0, 3)]
    assert not {"node_id", "node_ip", "retries"} & set(V.config_columns(run.trials))
    # A joint search without search_space does not mistake the node columns for searched parameters.
    tune = load_run(demo.write_tune(tmp_path / "results"))
    tune.meta["search_space"] = None
    tune.trials["node_ip"] = [f"10.0.0.{i}" for i in range(len(tune.trials))]
    tune.trials["retries"] = range(len(tune.trials))
    assert V.search_params(tune) == ["num_scenes", "lr"]
    # Older exports without them: the table still draws.
    plain = run.trials.drop(columns=["node_id", "node_ip", "retries"])
    run.trials = plain
    assert "node_ip" not in V.trial_table(run, V.trial_filters(run)) and len(V.trial_table(run, {})) == 2


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
