"""studies/analysis/summary.py: the closing summary's result lines (per-value means, the best configuration, where to
look next), from an export's rows as trials.csv gives them back."""

from __future__ import annotations

import sys
from pathlib import Path

from salgl_core.config import ExperimentConfig
from studies import tune as tune_study
from studies.analysis import summary
from studies.design.paths import REPO
from studies.exports.schema import REPORTED_METRIC
from studies.exports.writer import StudyExport


def _row(tid: str, status: str, value: float | None, **config) -> dict:
    return {"trial_id": tid, "status": status, REPORTED_METRIC: "" if value is None else str(value), **config}


def test_one_seed_has_no_spread_and_the_metric_is_named():
    rows = [_row("a", "FINISHED", 56.05, num_scenes="4", seed="0"),
            _row("b", "FINISHED", 60.0, num_scenes="1", seed="0"),
            _row("c", "FINISHED", 58.0, num_scenes="1", seed="1"),
            _row("d", "ERROR", 99.0, num_scenes="2", seed="0")]
    lines = summary.arm_lines("num_scenes", [1, 2, 4], rows, paper_value=4)
    assert lines[0] == "  best EMA mAP (the paper's reported number), mean over seeds:"
    one, two = lines[2], lines[1]
    assert "+-" not in one and "0.00" not in one and one.endswith("56.05         (1 seed)  (paper)")
    assert two.endswith(" 59.00 +- 1.41 (sd over 2 seeds)")
    # The mean column lines up whether or not a spread follows it.
    assert one.index("(") == two.index("(")
    assert len(lines) == 3, "an ERROR trial's number counts for nothing"


def test_no_finished_trial_no_lines():
    assert summary.arm_lines("num_scenes", [1, 4], [_row("a", "RUNNING", 50.0, num_scenes="4")], 4) == []


def test_tune_ends_with_the_best_configuration_from_its_export(tmp_path):
    base = ExperimentConfig().to_flat()
    space, paper = tune_study.search_space(base, [0])
    ex = StudyExport.open(tmp_path / "run", {"study": "tune", "run": "r", "provenance": {}})
    ex.trial_started("paper1", {**base, **paper}, seed=0, is_paper=True)
    ex.trial_started("tpe2", {**base, **paper, "num_scenes": 6, "lr": 3.2e-4, "soft_assignment": True}, seed=0,
                     is_paper=False)
    ex.trial_started("tpe3", {**base, **paper, "num_scenes": 2}, seed=0, is_paper=False)
    for tid, best in (("paper1", 60.0), ("tpe2", 62.5), ("tpe3", 70.0)):
        ex.trial_epoch(tid, {"epoch": 1, "best_mAP_ema": best, "best_epoch": 1, "device": "cpu"})
    ex.trial_ended("paper1", "FINISHED")
    ex.trial_ended("tpe2", "STOPPED")  # stopped early by ASHA: still a configuration that scored
    ex.trial_ended("tpe3", "DIVERGED", "loss is NaN")  # scored before it diverged: not one to recommend

    rows = StudyExport.open(tmp_path / "run", {}).trials.values()  # as trials.csv gives them back: strings
    head, config = summary.best_lines(rows, space)
    assert head == "  best configuration: trial tpe2 (STOPPED), best EMA mAP (the paper's reported number) 62.50"
    expected = {k: f"{float(paper[k]):g}" for k in space if k not in ("soft_assignment", "seed")}
    expected.update(num_scenes="6", lr="0.00032", soft_assignment="True", seed="0")
    assert config.split() == [f"{k}={expected[k]}" for k in space]


def test_best_configuration_of_the_paper_trial_is_flagged():
    rows = [_row("p", "FINISHED", 61.0, is_paper_config="True", num_scenes="4"),
            _row("q", "FINISHED", 60.0, is_paper_config="False", num_scenes="2")]
    assert summary.best_lines(rows, ["num_scenes"])[0].endswith("61.00  (the paper's configuration)")
    assert summary.best_lines([_row("q", "ERROR", None)], ["num_scenes"]) == [
        "  no trial finished with a result: no best configuration yet"]


def test_the_dashboard_hint_works_outside_the_venv(tmp_path):
    streamlit = Path(sys.executable).parent / "streamlit"
    dash, optuna = summary.dashboard_lines(REPO / "runs", REPO / "runs" / "scene_count" / "r")
    assert dash.startswith("  dashboard: make dashboard") and "streamlit run" not in dash.split("(or:")[0]
    assert str(streamlit.relative_to(REPO)) in dash or str(streamlit) in dash
    assert "optuna-dashboard runs/scene_count/r/optuna_journal.log" in optuna
    # A folder the dashboard does not read by default is named for it.
    dash = summary.dashboard_lines(tmp_path, tmp_path / "scene_count" / "r")[0]
    assert dash == f"  dashboard: SALGL_RESULTS_DIR={tmp_path} make dashboard"


def test_with_repeats_the_best_configuration_is_the_best_mean_over_seeds():
    # Configuration A has the single best seed, B the best mean: the searcher saw the means, so B wins.
    rows = [_row("a0", "FINISHED", 70.0, num_scenes="2", seed="0"),
            _row("a1", "FINISHED", 50.0, num_scenes="2", seed="1"),
            _row("b0", "FINISHED", 65.0, num_scenes="4", seed="0", is_paper_config="True"),
            _row("b1", "FINISHED", 64.0, num_scenes="4", seed="1", is_paper_config="True"),
            _row("c0", "ERROR", None, num_scenes="8", seed="0")]
    head, config = summary.best_lines(rows, ["num_scenes"], repeats=2)
    assert head == ("  best configuration: best EMA mAP (the paper's reported number) 64.50, the mean over its 2 "
                    "finished seed(s) (0 1)  (the paper's configuration)")
    assert config == "    num_scenes=4"
    assert summary.best_lines([_row("c0", "ERROR", None)], ["num_scenes"], repeats=2) == [
        "  no configuration finished a seed with a result: no best configuration yet"]
