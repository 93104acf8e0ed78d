"""studies/tuning/internals.py, the one module that touches Ray's and Optuna's internals: each still exists in the
pinned versions (a clear failure naming it when a new version changes one), and each does what the studies need."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch

from studies.tuning import internals

REPO = Path(__file__).resolve().parents[1]


def test_the_internals_this_module_uses_are_still_there():
    internals.check_internals()  # RuntimeError naming what changed, and the versions last checked


def test_a_changed_internal_is_named(monkeypatch):
    init = OptunaSearch.__init__

    def without_completed_trials(self, *args, **kwargs):
        init(self, *args, **kwargs)
        del self._completed_trials

    monkeypatch.setattr(OptunaSearch, "__init__", without_completed_trials)
    with pytest.raises(RuntimeError, match=r"internals that changed .*OptunaSearch\._completed_trials \(a set\)"):
        internals.check_internals()


def test_the_grid_sampler_does_not_stop_an_ask_tell_study():
    """Optuna's own GridSampler calls study.stop() when the grid is used up, which raises outside optimize()."""
    study = optuna.create_study(sampler=internals.GridSampler({"x": [1]}, seed=0))
    trial = study.ask()
    trial.suggest_categorical("x", [1])
    study.tell(trial, 1.0)
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_the_trial_class_carries_its_name_and_description():
    def fn(config):
        return None

    cls = internals.trainable_class(fn, "SalglTrial", lambda actor: f"described {type(actor).__name__}")
    assert cls.__name__ == "SalglTrial" and cls._name == "SalglTrial"
    assert cls.__repr__(cls.__new__(cls)) == "described SalglTrial"


def test_silencing_is_idempotent_and_targets_rays_loggers(monkeypatch):
    monkeypatch.delenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", raising=False)
    for _ in range(2):
        internals.silence_ray_advice()
    # One filter per silenced text: the Tune logger's restore advice and Ctrl-C notice, the analysis warning.
    for name, n in ((internals.TUNE_LOGGER, 2), (internals.ANALYSIS_LOGGER, 1)):
        filters = [f for f in logging.getLogger(name).filters if isinstance(f, internals._DropFilter)]
        assert len(filters) == n, name
    import os

    assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"


@pytest.mark.slow
def test_the_old_module_paths_load_as_the_new_modules():
    """What a run started before studies/ had subpackages pickled (its searcher, callback and trial function)
    unpickles after legacy_modules(); end to end: test_studies_resume_premove.py."""
    code = ("import pickle, sys\n"
            "from studies.tuning import internals\n"
            "internals.legacy_modules()\n"
            "for old, new in internals.LEGACY_MODULES.items():\n"
            "    assert sys.modules[old] is sys.modules[new], old\n"
            "from studies.tuning.internals import GridSampler\n"
            # Protocol 0 names classes as text lines, so the old path can be written in
            "blob = pickle.dumps(GridSampler({'x': [1]}, seed=0), protocol=0)\n"
            "blob = blob.replace(b'studies.tuning.internals', b'studies.search')\n"
            "assert b'studies.search' in blob and type(pickle.loads(blob)) is GridSampler\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for old in internals.LEGACY_MODULES:  # the old files are gone: only the aliases make them importable
        assert not (REPO / (old.replace(".", "/") + ".py")).exists(), old
