"""The one module that touches Ray's and Optuna's internals: private attributes, a developer-API helper,
Ray's logger names and message texts, and the module paths older experiments were pickled under.

- Resuming a crashed study: OptunaSearch's `_ot_study`, `_ot_trials` and `_completed_trials`, an Optuna
  trial's `_trial_id` and `storage` (`ResumableOptunaSearch`); Optuna's GridSampler without its `study.stop()`; Ray's
  Repeater with the repeat index turned into a seed (`SeededRepeater`, Repeater's TRIAL_INDEX key).
- Ray: `ray.init`'s `_temp_dir`; Ray's default temp dir and its token-mode switch (a simulated cluster: the
  overhead benchmark, the multi-node tests).
- The trials' actor class (`trainable_class`): `wrap_function`, the developer-API helper Tune turns a
  function into a trainable with, and its `_name`.
- Ray Tune's console texts a study silences (`silence_ray_advice`): the logger names and message texts
  of Ray Tune 2.60 (studies/tuning/quiet.py says why).
- Pickles of older runs (`legacy_modules`): Ray pickles the searcher and the callback with the experiment,
  under the module paths they had when the run started.

`check_internals` says clearly which of these a new version of Ray or Optuna has changed
(tests/test_studies_internals.py runs it).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import optuna
import ray
from optuna.trial import TrialState
from ray._common import utils as ray_utils
from ray._private.authentication import authentication_token_setup as ray_auth
from ray._raylet import AuthenticationTokenLoader
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search import Repeater, Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.repeater import TRIAL_INDEX
from ray.tune.trainable.function_trainable import wrap_function

from studies.design.spec import METRIC, MODE

# The versions these internals were last checked against (pinned in pyproject.toml).
CHECKED_WITH = {"ray": "2.60.0", "optuna": "5.0.0"}


# ---------------------------------------------------------------------------------------------------
# resumable search


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
    # So does Optuna about a step it already holds, which a resumed trial reports again: the epochs after its
    # last checkpoint that Ray recorded (Ctrl-C or a crash between the report and Ray's snapshot). Optuna
    # keeps the first value either way; the stored trial says which steps it has.
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials:
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and TRAINING_ITERATION in result:
            stored = ot_trial.storage.get_trial(ot_trial._trial_id)
            if int(result[TRAINING_ITERATION]) in stored.intermediate_values:
                return
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


# ---------------------------------------------------------------------------------------------------
# Ray's session folder and token auth


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

# ---------------------------------------------------------------------------------------------------
# the trials' actor class


def trainable_class(fn: Callable[[dict[str, Any]], Any], name: str, describe: Callable[[Any], str]) -> type:
    """The function trainable `fn` (one `config` argument, as `tune.with_parameters` returns it) as a Tune
    trainable class called `name` whose repr is `describe(actor)`: Ray records an actor's repr when it starts
    and shows it as the actor's name in its dashboard."""

    def __repr__(self: Any) -> str:
        return describe(self)

    # Built here, not at import: it subclasses the class Tune makes around this study's function.
    return type(name, (wrap_function(fn),), {"__repr__": __repr__, "_name": name})


# ---------------------------------------------------------------------------------------------------
# Ray Tune's console texts (studies/tuning/quiet.py says why each is silenced)


TUNE_LOGGER = "ray.tune.tune"
ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"


def is_restore_advice(message: str) -> bool:
    """Ray's "... has been interrupted ... Resume experiment with: Tuner.restore(...)" warning."""
    return "has been interrupted" in message and ".restore(" in message


def is_stop_notice(message: str) -> bool:
    """Ray's "Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run. ... Press CTRL+C ... to skip."
    warning when Ctrl-C reaches Tune: the study's own closing lines follow within seconds and end with its resume
    command."""
    return message.startswith("Stop signal received") and "ending Ray Tune run" in message


def is_missing_results_warning(message: str) -> bool:
    """Ray's "Failed to fetch metrics for N trial(s)" warning when every trial it lists merely has no
    result.json / progress.csv yet (it had not reported when the study stopped)."""
    if not message.startswith("Failed to fetch metrics"):
        return False
    items = [ln for ln in message.splitlines()[1:] if ln.startswith("- ")]
    return bool(items) and all("FileNotFoundError" in ln and "were not found" in ln for ln in items)


class _DropFilter(logging.Filter):
    """Drops the records whose message `drop` matches; attached to the logger that emits them."""

    def __init__(self, drop: Callable[[str], bool]) -> None:
        super().__init__()
        self.drop = drop

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.drop(record.getMessage())


def silence_ray_advice() -> None:
    """Attach the filters to Ray's loggers and turn off Ray's default logger callbacks. Idempotent."""
    for name, drop in ((TUNE_LOGGER, is_restore_advice), (TUNE_LOGGER, is_stop_notice),
                       (ANALYSIS_LOGGER, is_missing_results_warning)):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropFilter) and f.drop is drop for f in log.filters):
            log.addFilter(_DropFilter(drop))
    # Ray reads it when Tuner.fit builds its callbacks: the logger callbacks are then logger_callbacks().
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"


# ---------------------------------------------------------------------------------------------------
# pickles of runs started before studies/ was split into subpackages

# Old module path -> where its pickled classes and functions live now (ExportCallback, the searcher classes,
# StudyExport inside the callback's state, the trial function and the trial-name helper).
LEGACY_MODULES = {
    "studies.search": "studies.tuning.internals",
    "studies.callback": "studies.tuning.callback",
    "studies.export": "studies.exports.writer",
    "studies.trainable": "studies.tuning.trainable",
    "studies.monitor": "studies.tuning.monitor",
    "studies.spec": "studies.design.spec",
}


def legacy_modules() -> None:
    """Make the old module paths import as their new modules, so that Tuner.restore can unpickle a run
    started before the move. Only names no module has taken are set; call it in the driver before a restore."""
    for old, new in LEGACY_MODULES.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)


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
            trial = optuna.trial.Trial(study, stored._trial_id)
            if trial.number != asked.number:
                missing.append("optuna.trial.Trial(study, trial_id) for a stored trial")
            if not isinstance(getattr(trial, "storage", None), optuna.storages.BaseStorage):
                missing.append("optuna.trial.Trial.storage (the study's storage)")
        except Exception as e:  # any change in the constructor's contract
            missing.append(f"optuna.trial.Trial(study, trial_id): {e}")
    try:
        cls = trainable_class(lambda config: None, "Probe", lambda actor: "probe")
        if cls.__name__ != "Probe" or not hasattr(cls, "_name"):
            missing.append("ray.tune.trainable.function_trainable.wrap_function (a class with _name)")
    except Exception as e:  # any change in the helper's contract
        missing.append(f"ray.tune.trainable.function_trainable.wrap_function: {e}")
    for name in (TUNE_LOGGER, ANALYSIS_LOGGER):  # Ray's loggers are named after their modules
        if importlib.util.find_spec(name) is None:
            missing.append(f"the module (and logger) {name}")
    if missing:
        versions = ", ".join(f"{k} {v}" for k, v in CHECKED_WITH.items())
        raise RuntimeError(
            f"studies/tuning/search.py relies on Ray/Optuna internals that changed ({ray.__version__=}, "
            f"{optuna.__version__=}; last checked with {versions}): {'; '.join(missing)}. Adapt "
            "ResumableOptunaSearch, ray_temp_dir, default_temp_dir or enable_token_auth to the new versions or pin "
            "the checked ones.")
