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
    # `make` installs optuna-dashboard in the venv: the line names that executable, as the streamlit one does.
    optuna_exe = Path(sys.executable).parent / "optuna-dashboard"
    assert optuna.split() == ["optuna:", summary.portable_path(optuna_exe), "runs/scene_count/r/optuna_journal.log"]
    assert "pip install" not in optuna
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


def _comparison(value, diff, lo, hi, p_holm, mde=1.0, n=3, no_test=None) -> dict:
    return {"value": value, "diff": diff, "ci_low": lo, "ci_high": hi, "p_holm": p_holm, "mde": mde, "n": n,
            "n_reference": n, "no_test": no_test, "verdict": "v", "holm": "in the family of 2"}


def _ablation(*comparisons, study="scene_count") -> dict:
    return {"kind": "ablation", "study": study, "run": "r", "axis": "num_scenes", "metric": "best_mAP_ema",
            "unit": "percent", "alpha": 0.05, "reference": 4, "notes": [], "budget": None,
            "arms": [{"value": 4, "is_reference": True, "n": 3, "mean": 60.0, "ci_low": 59.0, "ci_high": 61.0},
                     *({"value": c["value"], "is_reference": False, "n": 3, "mean": 60.0 + c["diff"]}
                       for c in comparisons)],
            "comparisons": list(comparisons)}


def _conclude(analysis: dict, dataset: str = "synthetic") -> list[str]:
    return summary.conclusion_lines(analysis, prog="python studies/scene_count.py", flags=["--values", "2", "4"],
                                    seeds=[0, 1, 2], run="r", dataset=dataset, label="the synthetic preset's value")


def test_the_table_names_the_reference_as_the_trial_lines_do():
    analysis = _ablation(_comparison(2, 0.1, -0.5, 0.7, 1.0))
    head = summary.format_table(analysis, summary.reference_label("synthetic")).splitlines()[0]
    assert head.endswith("reference num_scenes = 4 (the synthetic preset's value), 95% intervals")
    assert "paper_config" not in summary.format_table(analysis)
    search = {"kind": "search", "study": "tune", "run": "r", "metric": "best_mAP_ema", "unit": "percent", "notes": [],
              "search": {"best": {"trial_id": "b", "mAP": 62.0, "config": {"lr": "0.002", "soft": "False"}},
                         "paper": {"trial_id": "p", "mAP": 61.0, "config": {"lr": "0.002", "soft": "False"}},
                         "importances": {}}}
    lines = summary.format_table(search, summary.reference_label("synthetic")).splitlines()
    assert lines[2] == "  the synthetic preset's value: trial p 61.00  lr=0.002 soft=False"
    assert not any(ln.lstrip().startswith("paper:") for ln in lines)


def test_conclusion_when_nothing_is_detectable_points_at_the_mechanism_study():
    conclusion, nxt = _conclude(_ablation(_comparison(2, 0.1, -0.5, 0.7, 1.0, mde=0.71),
                                          _comparison(8, -0.2, -0.9, 0.5, 0.9, mde=0.71)))
    assert conclusion == ("  conclusion: no value of num_scenes differs detectably from the reference num_scenes=4 "
                          "(the synthetic preset's value) at 3 seeds; the smallest difference these seeds could "
                          "detect is 0.71 mAP")
    assert nxt == "  next: can the mechanism show at all on this data? python studies/mechanism.py"
    # The mechanism study itself, or real data: more seeds, a new run that keeps the old ones.
    nxt = _conclude(_ablation(_comparison(2, 0.1, -0.5, 0.7, 1.0), study="mechanism"))[1]
    assert nxt == ("  next: more seeds: python studies/scene_count.py --values 2 4 --seeds 0 1 2 3 4 5 "
                   "--name r-6seeds")


def test_conclusion_tells_an_unadjusted_lead_from_a_finding():
    conclusion, nxt = _conclude(_ablation(_comparison(2, -0.52, -0.94, -0.10, 0.067), _comparison(8, 0, -1, 1, 1)))
    assert "no value of num_scenes differs detectably" in conclusion and "after Holm's correction" in conclusion
    assert "num_scenes=2 (-0.52 mAP, 95% interval -0.94 to -0.10) excludes 0" in conclusion
    assert nxt.startswith("  next: more seeds: python studies/scene_count.py") and "--seeds 0 1 2 3 4 5" in nxt
    # Detectable on synthetic data: the paper recipe on real data next; on real data, fresh seeds to confirm it.
    found = _ablation(_comparison(2, -1.2, -2.0, -0.4, 0.01))
    conclusion, nxt = _conclude(found)
    assert conclusion == ("  conclusion: num_scenes=2 worse by 1.20 mAP (Holm p 0.01) than the reference "
                          "num_scenes=4 (the synthetic preset's value), at 3 seeds")
    assert nxt == ("  next: does it hold on real data? the paper recipe: python studies/scene_count.py --values 2 4 "
                   "--dataset coco --data-root DIR")
    assert "confirm it with fresh seeds" in _conclude(found, dataset="coco")[1]
    # One seed per arm: nothing was tested, and the conclusion says so.
    untested = _ablation(_comparison(2, -1.2, -2.0, -0.4, None, no_test="one usable seed per arm"))
    assert "could be tested" in _conclude(untested)[0]


def test_run_flags_keep_what_the_run_ran():
    import argparse

    args = argparse.Namespace(smoke=True, recipe=None, dataset=None, epochs=3, set=["num_scenes=2"], values=[2, 4],
                              results_dir=str(REPO / "runs"), storage_path="/elsewhere/ray", address="x:1")
    assert summary.run_flags(args) == ["--smoke", "--epochs", "3", "--set", "num_scenes=2", "--values", "2", "4",
                                       "--storage-path", "/elsewhere/ray"]


def test_timing_lines_tell_preparation_from_rays_overhead():
    rows = [{"seconds": "80"}, {"seconds": "80"}, {"seconds": "80"}, {"seconds": ""}]
    meta = {"wall_seconds": 280.0, "preparation": {"data": 2.0, "pretraining": 60.0, "model check": 0.2,
                                                   "Ray start": 15.0, "other": 3.0}}
    prep, trials = summary.timing_lines(meta, rows, 2)
    assert prep == "  preparation 80 s, one-off: data 2 s, pretraining 60 s, Ray start 15 s, other 3 s"
    # Three 80 s trials two at once need 160 s at best (not 240 / 2): 280 - 80 - 160 = 40 s is Ray's.
    assert trials == ("  trials 240 s of work, 2 at once -> ideal 160 s; wall 280 s in all, so Ray's per-trial "
                      "overhead 40 s (25% of ideal)")
    # An export from before `preparation` existed: the two are not told apart, and the line says so.
    (old,) = summary.timing_lines({"wall_seconds": 280.0}, rows, 2)
    assert old.endswith("wall 280 s: preparation and Ray's per-trial overhead 120 s")
    assert summary.timing_lines({"wall_seconds": 5.0}, [{"seconds": ""}], 2) == []


def _parses(next_line: str) -> None:
    """The `next:` command runs: its script's own parser takes its arguments."""
    import shlex

    from studies import ablate, mechanism

    argv = shlex.split(next_line[next_line.index("python "):])
    if argv[1:3] == ["-m", "studies.ablate"]:
        args = argv[3:]
        ablate.get_args_parser(args).parse_args(args)
    else:
        assert argv[1] == "studies/mechanism.py", argv
        mechanism.get_args_parser(argv[2:]).parse_args(argv[2:])


def _search(best: dict, ref: dict | None) -> dict:
    return {"kind": "search", "trials": [{}] * 6, "search": {"best": best, "paper": ref}}


def test_a_named_arms_study_points_at_the_mechanism_study_without_its_arms():
    nothing = _ablation(_comparison(2, 0.1, -0.5, 0.7, 1.0, mde=0.71), study="soft_vs_hard")
    flags = ["--smoke", "--arm", "soft:soft_assignment=true", "--arm", "hard:soft_assignment=false", "--reference",
             "hard", "--study", "soft_vs_hard", "--values", "soft"]
    _, nxt = summary.conclusion_lines(nothing, prog="python -m studies.ablate", flags=flags, seeds=[0, 1, 2], run="r",
                                      dataset="synthetic")
    assert "studies/mechanism.py --smoke" in nxt and "--arm" not in nxt
    _parses(nxt)


def test_search_conclusions_give_commands_that_run_and_survive_an_unscored_reference():
    flags = ["--smoke", "--repeats", "2", "--num-samples", "3"]
    best = {"trial_id": "b", "mAP": 62.0, "config": {"num_scenes": 6, "outmess": True, "seed": 0}}
    ref = {"trial_id": "p", "mAP": 60.0, "config": {"num_scenes": 4, "outmess": False, "seed": 0}}
    line, nxt = summary.conclusion_lines(_search(best, ref), prog="python studies/tune.py", flags=flags, seeds=[0],
                                         run="r", dataset="synthetic")
    assert "+2.00 mAP" in line and "--repeats" not in nxt and "--arm best:num_scenes=6,outmess=true" in nxt
    _parses(nxt)
    # The reference trial diverged (no mAP): the search's answer is its best trial, no crash, no difference claimed.
    line, nxt = summary.conclusion_lines(_search(best, {**ref, "mAP": None}), prog="python studies/tune.py",
                                         flags=flags, seeds=[0], run="r", dataset="synthetic")
    assert line == "  conclusion: trial b scored best (62.00) of the 6 trials" and "a longer search" in nxt
    # With --repeats the best may be the reference's configuration on another seed: nothing to compare.
    same = {**best, "config": {**ref["config"], "seed": 1}}
    line, _ = summary.conclusion_lines(_search(same, ref), prog="python studies/tune.py", flags=flags, seeds=[0],
                                       run="r", dataset="synthetic")
    assert "scored best" in line and "mAP against" not in line
