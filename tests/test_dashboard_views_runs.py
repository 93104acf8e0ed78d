"""dashboards/shaping/summaries.py: the run list, provenance and the comparison with the paper, on demo exports."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from dashboards import demo
from dashboards.data.paper import load_paper_tables
from dashboards.data.paths import display_path
from dashboards.data.runs import list_runs, load_run
from dashboards.shaping import summaries as R
from dashboards.shaping.texts import REPORTED_CARD
from studies.exports.schema import REPORTED_METRIC

REPO = Path(__file__).resolve().parents[1]


def test_best_per_dataset_and_comparison(results):
    runs = list_runs(results).runs
    best = R.best_per_dataset(runs)
    # Only runs that can stand beside the paper's COCO numbers: the synthetic runs are left out.
    assert best["dataset"].tolist() == ["coco"]
    assert [s.dataset for s in runs if not R.stands_beside_paper(s)] == ["synthetic"] * 5
    coco = best.iloc[0]
    assert (coco["run"], coco["trial_id"], coco["value"], coco["metric"]) == (
        display_path(results / "graph_depth/2025-05-20_0900"), "gd_3_0", 85.7, REPORTED_METRIC)
    # 85.7 is the trial's best_mAP_ema, not its last-epoch or plain-model mAP (85.5).
    assert load_run(results / "graph_depth/2025-05-20_0900").trials.set_index("trial_id").loc[
        "gd_3_0", ["best_mAP_ema", "mAP", "best_mAP"]].tolist() == [85.7, 85.5, 85.5]
    table = R.comparison_table(best, load_paper_tables())
    ours = table[table["method"].str.startswith("ours")]
    assert len(ours) == 1 and ours["ours - SALGL paper"].iloc[0] == pytest.approx(85.7 - 85.8)
    assert table.iloc[0]["method"].startswith(f"ours: {display_path(results)}/graph_depth")
    assert ours["mAP"].iloc[0] == 85.7 and ours["source"].iloc[0].endswith("trials.csv (best_mAP_ema)")
    assert (table["dataset"] == "coco").sum() == 18 and (table["dataset"] == "synthetic").sum() == 0
    # A named-arm study on COCO is no reproduction either (its best arm may be an oracle): left out too; with
    # nothing left, the table holds the paper's rows alone.
    coco = next(s for s in runs if s.dataset == "coco")
    arms = replace(coco, axis="arm", best_value=99.0)
    assert not R.stands_beside_paper(arms) and R.best_per_dataset([arms]).empty
    alone = R.comparison_table(R.best_per_dataset([arms]), load_paper_tables())
    assert len(alone) == 17 and not alone["method"].str.startswith("ours").any()
    # The committed exports are all synthetic (the mechanism study's oracle arm is their best trial): none listed.
    committed = list_runs(REPO / "results").runs
    assert committed and R.best_per_dataset(committed).empty
    rt = R.runs_table(runs)
    assert rt["run"].tolist() == [r.key for r in runs] and set(rt["folder"]) == {display_path(results)}
    assert rt[REPORTED_CARD].tolist() == [r.best_value for r in runs]  # labelled as the header card: one trial
    assert rt.set_index("run").loc["scene_count/2025-05-28_0900", "trials ended"] == "4/8"


def test_provenance_and_settings(tmp_path):
    run = load_run(demo.write_coco_graph_depth(tmp_path / "results"))
    t = R.provenance_table(run)
    prov = dict(zip(t["field"], t["value"], strict=True))
    assert prov["gpus"] == "NVIDIA H100 80GB HBM3, NVIDIA H100 80GB HBM3"
    assert prov["summed ÷ wall (effective parallelism)"] == "2.00x"
    assert prov["ray cluster"] == "nodes: 2, cpus: 32, gpus: 2"
    assert prov["git commit"] == demo.PROVENANCE["git_commit"] and prov["wall time"] == "0:20:00"
    assert R.packages_table(run)["package"].tolist() == list(demo.PROVENANCE["packages"])
    settings = R.study_settings(run)
    assert settings["paper_config"] == {"gnn_steps": 3} and settings["search_space"] is None
    assert json.loads(json.dumps(settings, default=str))["axis"] == "gnn_steps"
