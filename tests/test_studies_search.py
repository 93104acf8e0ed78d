"""studies/tuning/search.py: the searcher and scheduler of each plan and crash-safe resumption of the Optuna study
(the Ray/Optuna internals it takes are tested in test_studies_internals.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
import pytest
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

from studies import scene_count
from studies import tune as tune_study
from studies.design.spec import StudyError
from studies.tuning import internals, search
from studies.tuning.plan import make_plan


def _plan(module, tmp: Path, *argv: str):
    args = module.get_args_parser().parse_args(
        [*argv, "--results-dir", str(tmp / "results"), "--storage-path", str(tmp / "ray"), "--name", "r"])
    return make_plan(args, module.SPEC)


def test_each_plan_gets_its_sampler_and_scheduler(tmp_path):
    searcher, scheduler = search.build_search(_plan(scene_count, tmp_path, "--values", "1", "4", "--seeds", "0", "1"),
                                              0, tmp_path / "grid.log")
    assert isinstance(scheduler, FIFOScheduler) and isinstance(searcher, internals.ResumableOptunaSearch)
    assert {tuple(sorted(searcher.suggest(str(i)).items())) for i in range(4)} == {
        (("num_scenes", k), ("seed", s)) for k in (1, 4) for s in (0, 1)}  # the whole grid, once each
    searcher, scheduler = search.build_search(_plan(tune_study, tmp_path), 0, tmp_path / "tpe.log")
    assert isinstance(scheduler, AsyncHyperBandScheduler)
    first = searcher.suggest("0")  # the paper's point comes first
    assert (first["num_scenes"], first["gnn_steps"], first["soft_assignment"]) == (4, 3, False)
    _, scheduler = search.build_search(_plan(tune_study, tmp_path, "--smoke", "--name", "s"), 0, tmp_path / "s.log")
    assert isinstance(scheduler, FIFOScheduler)  # one epoch: nothing for ASHA to stop


def test_a_resumed_searcher_hands_out_orphans_and_ignores_finished_trials(tmp_path):
    """A crash between two of Ray's snapshots: the trial handed out after the snapshot is handed out again
    (not a new grid point), and a trial that finished after it may be reported again without harm."""
    plan = _plan(scene_count, tmp_path, "--values", "1", "4", "--seeds", "0")
    journal, snapshot = tmp_path / "optuna.log", tmp_path / "searcher.pkl"
    searcher, _ = search.build_search(plan, 0, journal)
    searcher.suggest("a")
    searcher.save(str(snapshot))  # Ray's last experiment snapshot
    orphan = searcher.suggest("b")
    searcher.on_trial_complete("a", {"mAP_ema": 50.0})  # ... and the driver crashes

    restored, _ = search.build_search(plan, 0, journal)
    restored.restore(str(snapshot))
    assert restored.suggest("b2") == orphan  # Ray does not know "b": its point comes back first
    restored.on_trial_complete("a", {"mAP_ema": 49.0})  # Ray re-evaluates "a"; Optuna already has its value
    restored.on_trial_complete("b2", {"mAP_ema": 40.0})
    trials = optuna.load_study(study_name="scene_count/r", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))).trials
    assert [(t.state.name, t.value) for t in trials] == [("COMPLETE", 50.0), ("COMPLETE", 40.0)]


def test_a_resumed_trial_reports_its_epochs_again_without_a_warning(tmp_path):
    """Ctrl-C or a crash after a trial reported epochs that Ray's snapshot does not hold: the resumed trial trains
    them again from its checkpoint and reports them again. Optuna keeps the first values, says nothing (it warned,
    and the warning reached the study's terminal), and takes the steps it has not seen."""
    plan = _plan(scene_count, tmp_path, "--values", "1", "4", "--seeds", "0")
    journal, snapshot = tmp_path / "optuna.log", tmp_path / "searcher.pkl"
    searcher, _ = search.build_search(plan, 0, journal)
    searcher.suggest("a")
    searcher.on_trial_result("a", {"mAP_ema": 10.0, "training_iteration": 1})
    searcher.save(str(snapshot))  # Ray's last experiment snapshot: the trial's first epoch
    for step, value in ((2, 20.0), (3, 30.0)):
        searcher.on_trial_result("a", {"mAP_ema": value, "training_iteration": step})  # ... then Ctrl-C

    restored, _ = search.build_search(plan, 0, journal)
    restored.restore(str(snapshot))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        for step, value in ((1, 11.0), (2, 21.0), (3, 31.0), (4, 41.0)):
            restored.on_trial_result("a", {"mAP_ema": value, "training_iteration": step})
    (trial,) = optuna.load_study(study_name="scene_count/r", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))).trials
    assert trial.intermediate_values == {1: 10.0, 2: 20.0, 3: 30.0, 4: 41.0}


def test_repeats_train_each_configuration_with_every_seed_and_tell_the_mean(tmp_path):
    """--repeats 3: Optuna samples a configuration once; Ray runs it with seeds 0, 1, 2 (in the trial's config,
    not Ray's repeat index) and the Optuna trial gets the mean; the seed is not searched, ASHA is off."""
    plan = _plan(tune_study, tmp_path, "--repeats", "3", "--num-samples", "2")
    assert (plan.repeats, plan.seeds, plan.num_samples, plan.asha) == (3, [0, 1, 2], 6, None)
    assert "seed" not in plan.space and "seed" not in plan.paper_point
    journal = tmp_path / "tpe.log"
    searcher, _ = search.build_search(plan, 0, journal)
    configs = [searcher.suggest(t) for t in "abcdef"]
    assert [c["seed"] for c in configs] == [0, 1, 2, 0, 1, 2] and all("__trial_index__" not in c for c in configs)
    assert configs[0] == {**configs[1], "seed": 0} == {**configs[2], "seed": 0}  # the paper's point, 3 seeds
    assert configs[0]["num_scenes"] == 4 and configs[3] != {**configs[0], "seed": 0}
    for t, value in zip("abcdef", (50.0, 52.0, 57.0, 40.0, 41.0, 42.0), strict=True):
        searcher.on_trial_complete(t, {"mAP_ema": value})
    trials = optuna.load_study(study_name="tune/r", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))).trials
    assert [(t.state.name, t.value) for t in trials] == [("COMPLETE", 53.0), ("COMPLETE", 41.0)]
    assert all("seed" not in t.params for t in trials)


@pytest.mark.parametrize(("argv", "message"), [
    (["--repeats", "2", "--seeds", "0", "1", "2"], r"--repeats 2 trains every configuration with 2 seeds"),
    (["--repeats", "2", "--grace-period", "1"], r"--grace-period sets ASHA, which --repeats turns off"),
    (["--repeats", "0"], r"--repeats 0 is invalid"),
])
def test_repeats_errors_say_what_to_do(tmp_path, argv, message):
    with pytest.raises(StudyError, match=message):
        _plan(tune_study, tmp_path, *argv)
