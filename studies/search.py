"""The searcher and scheduler of a plan (Optuna sampler in Ray's OptunaSearch, FIFO or ASHA), and the one
module that touches Ray's and Optuna's private attributes.

Resuming a crashed study needs a few internals that neither library exposes publicly: OptunaSearch's
`_ot_study`, `_ot_trials` and `_completed_trials`, an Optuna trial's `_trial_id`, and `ray.init`'s
`_temp_dir`; a simulated cluster (the overhead benchmark, the multi-node tests) needs Ray's default temp dir
and its token-mode switch. They are used here and nowhere else; `check_internals` says clearly which one a new
version of Ray or Optuna has changed (tests/test_studies_search.py runs it).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import optuna
import ray
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray._common import utils as ray_utils
from ray._private.authentication import authentication_token_setup as ray_auth
from ray._raylet import AuthenticationTokenLoader
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Repeater, Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.repeater import TRIAL_INDEX

from studies.plan import GridPlan, Plan, SearchPlan
from studies.spec import METRIC, MODE

# The versions these internals were last checked against (pinned in pyproject.toml).
CHECKED_WITH = {"ray": "2.60.0", "optuna": "5.0.0"}


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its `study.stop()` once the grid is used up: that call is meant for
    `study.optimize` and raises under Ray's ask/tell; Ray ends the study after num_samples trials."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        return None


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch that survives a crash between two of Ray's experiment snapshots.

    A trial the searcher handed out after the last snapshot stays RUNNING in the Optuna journal, but
    the restored Ray experiment does not know it. Without this, GridSampler would count that grid point
    as taken and could hand out a duplicate instead; here such orphans are handed out again first.
    """

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        trials = self._ot_study.get_trials(deepcopy=False)
        known = {t.number for t in self._ot_trials.values()}
        self._orphans = [optuna.trial.Trial(self._ot_study, t._trial_id) for t in trials
                         if t.state == TrialState.RUNNING and t.number not in known]
        # The converse: a trial that finished after the snapshot is RUNNING for Ray, which runs it again
        # (it only re-evaluates from its last checkpoint); Optuna already has its result and refuses a second.
        finished = {t.number for t in trials if t.state.is_finished()}
        self._completed_trials.update(rid for rid, t in self._ot_trials.items() if t.number in finished)

    def suggest(self, trial_id: str) -> dict | None:
        orphans = getattr(self, "_orphans", [])
        if trial_id not in self._ot_trials and orphans:
            self._ot_trials[trial_id] = orphans.pop(0)
        return super().suggest(trial_id)

    # OptunaSearch warns about (and prints) every result of a trial it considers finished: quietly skip them.
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)


class SeededRepeater(Repeater):
    """Ray's Repeater (every configuration the searcher suggests runs once per seed, and the searcher is told
    the mean of their metric) with repeat i training with seeds[i]: the trial's config holds its `seed`, as in
    every other study, instead of Ray's repeat index. NaN results (a trial that raised) are left out of the
    mean; a DIVERGED trial counts with its reported 0."""

    def __init__(self, searcher: Searcher, seeds: list[int]) -> None:
        super().__init__(searcher, repeat=len(seeds), set_index=True)
        self.seeds = list(seeds)

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if isinstance(config, dict):  # a fresh copy of the group's configuration
            config["seed"] = self.seeds[config.pop(TRIAL_INDEX)]
        return config


def build_search(plan: Plan, searcher_seed: int, journal: Path) -> tuple[Searcher, TrialScheduler]:
    """The searcher (its Optuna study persisted in the `journal` file) and the scheduler of a new run."""
    if isinstance(plan, GridPlan):
        sampler: optuna.samplers.BaseSampler = GridSampler(plan.grid(), seed=searcher_seed)
        scheduler: TrialScheduler = FIFOScheduler()
    elif isinstance(plan, SearchPlan):
        # Random points before TPE models the space, counted in configurations (Optuna sees one per repeat group).
        startup = max(2, min(10, plan.num_samples // plan.repeats // 4))
        sampler = optuna.samplers.TPESampler(seed=searcher_seed, n_startup_trials=startup)
        scheduler = AsyncHyperBandScheduler(**plan.asha, stop_last_trials=False) if plan.asha else FIFOScheduler()
    else:
        raise TypeError(f"no searcher for {type(plan).__name__}")
    storage = JournalStorage(JournalFileBackend(str(journal)))
    searcher = ResumableOptunaSearch(space=plan.space, metric=METRIC, mode=MODE, sampler=sampler, storage=storage,
                                     study_name=f"{plan.spec.study}/{plan.run}", points_to_evaluate=plan.points or None)
    if isinstance(plan, SearchPlan) and plan.repeats > 1:
        # Ray saves the wrapper's state (its groups) with the experiment and restores it on --resume.
        return SeededRepeater(searcher, plan.seeds), scheduler
    return searcher, scheduler


def ray_temp_dir(path: str | None) -> dict[str, Any]:
    """`ray.init` keyword for Ray's session folder: documented, but spelled as a private argument."""
    return {"_temp_dir": path} if path else {}


def default_temp_dir() -> str:
    """Ray's default session folder ($TMPDIR/ray or /tmp/ray), where `ray.cluster_utils.Cluster` writes the head's
    address whatever its temp_dir says: a private function of Ray's."""
    return ray_utils.get_default_ray_temp_dir()


def enable_token_auth() -> None:
    """RAY_AUTH_MODE=token for this process, its children, and the Ray config this process already read: Ray reads
    it once per process, so a Ray started here after an earlier one (or after `import ray` had read it) would
    otherwise send no token. What ray.init() does for a new local cluster, through Ray's private setup module;
    the token loader forgets what it found before (a token made since)."""
    ray_auth._enable_token_auth()
    AuthenticationTokenLoader.instance().reset_cache()


def check_internals() -> None:
    """Raise RuntimeError naming every private attribute this module relies on that is gone."""
    missing: list[str] = []
    # ray.init takes its private options from **kwargs (and refuses unknown ones).
    if '"_temp_dir"' not in inspect.getsource(inspect.unwrap(ray.init)):
        missing.append("ray.init(_temp_dir=...)")
    if not callable(getattr(ray_utils, "get_default_ray_temp_dir", None)):
        missing.append("ray._common.utils.get_default_ray_temp_dir")
    if not callable(getattr(ray_auth, "_enable_token_auth", None)):
        missing.append("ray._private.authentication.authentication_token_setup._enable_token_auth")
    if not callable(getattr(AuthenticationTokenLoader.instance(), "reset_cache", None)):
        missing.append("ray._raylet.AuthenticationTokenLoader.instance().reset_cache")
    study = optuna.create_study(direction="maximize")
    searcher = OptunaSearch(space={"x": optuna.distributions.CategoricalDistribution([1, 2])}, metric=METRIC,
                            mode=MODE, sampler=GridSampler({"x": [1, 2]}, seed=0))
    for name, kind in (("_ot_study", optuna.Study), ("_ot_trials", dict), ("_completed_trials", set)):
        if not isinstance(getattr(searcher, name, None), kind):
            missing.append(f"OptunaSearch.{name} (a {kind.__name__})")
    if isinstance(getattr(searcher, "_ot_study", None), optuna.Study) and isinstance(
            getattr(searcher, "_ot_trials", None), dict):
        searcher.suggest("t0")  # Ray's trial id -> the Optuna trial it asked for
        if not isinstance(searcher._ot_trials.get("t0"), optuna.trial.Trial):
            missing.append("OptunaSearch._ot_trials: Ray trial id -> optuna.trial.Trial")
    asked = study.ask()
    stored = study.get_trials(deepcopy=False)[0]
    if not isinstance(getattr(stored, "_trial_id", None), int):
        missing.append("optuna.trial.FrozenTrial._trial_id")
    else:
        try:
            if optuna.trial.Trial(study, stored._trial_id).number != asked.number:
                missing.append("optuna.trial.Trial(study, trial_id) for a stored trial")
        except Exception as e:  # any change in the constructor's contract
            missing.append(f"optuna.trial.Trial(study, trial_id): {e}")
    if missing:
        versions = ", ".join(f"{k} {v}" for k, v in CHECKED_WITH.items())
        raise RuntimeError(
            f"studies/search.py relies on Ray/Optuna internals that changed ({ray.__version__=}, "
            f"{optuna.__version__=}; last checked with {versions}): {'; '.join(missing)}. Adapt "
            "ResumableOptunaSearch, ray_temp_dir, default_temp_dir or enable_token_auth to the new versions or pin "
            "the checked ones.")
