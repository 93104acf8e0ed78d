"""Ctrl-C as a user sees it: our resume line once, none of Ray Tune's contradicting advice, warnings or hints
(studies/tuning/quiet.py; the texts they match are in studies/tuning/internals.py). Unit tests of the filters
against the messages Ray 2.60 emits and checks that Ray still emits them where the filters look; a real interrupt
and resume of a study in a subprocess, with what it prints, is test_studies_resume.py."""

from __future__ import annotations

import inspect
import logging
import os

import pytest

from studies.tuning import internals, quiet

# Ray's own texts (ray/tune/tune.py, analysis/experiment_analysis.py, experimental/output.py, 2.60).
RESTORE_ADVICE = ("Experiment has been interrupted, but the most recent state was saved.\n"
                  'Resume experiment with: Tuner.restore(path="/x/.ray_results/scene_count/r", trainable=...)')
MISSING = ("- train_trial_{0}: FileNotFoundError('Could not fetch metrics for train_trial_{0}: both result.json and "
           "progress.csv were not found at /x/.ray_results/scene_count/r/train_trial_{0}_4_num_scenes=2,seed=1')")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def captured():
    """What reaches a handler on each of the two Ray loggers, after `quiet.install()`."""
    loggers = [logging.getLogger(n) for n in (internals.TUNE_LOGGER, internals.ANALYSIS_LOGGER)]
    saved_env = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    saved_filters = [list(log.filters) for log in loggers]
    quiet.install()
    quiet.install()  # idempotent: one filter each
    handler = _Capture()
    for log in loggers:
        log.addHandler(handler)
    yield loggers, handler
    for log, filters in zip(loggers, saved_filters, strict=True):
        log.removeHandler(handler)
        log.filters[:] = filters
    if saved_env is None:
        os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
    else:
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = saved_env


def test_filters_drop_rays_advice_and_missing_file_warnings_only(captured):
    (tune_log, analysis_log), handler = captured
    assert [len(log.filters) for log in (tune_log, analysis_log)] == [1, 1]
    tune_log.warning(RESTORE_ADVICE)
    analysis_log.warning("Failed to fetch metrics for 2 trial(s):\n" + MISSING.format("a") + "\n" + MISSING.format("b"))
    assert handler.messages == []
    # Everything else still shows: Ray's other warnings, and a fetch failure that is not a file not yet written.
    tune_log.warning("Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run.")
    mixed = "Failed to fetch metrics for 2 trial(s):\n" + MISSING.format("a") + "\n- train_trial_b: ValueError('bad')"
    analysis_log.warning(mixed)
    assert handler.messages == ["Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run.", mixed]
    assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1"


def test_tensorboard_logger_only_when_tensorboard_is_installed(monkeypatch):
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    monkeypatch.setattr(quiet, "tensorboard_installed", lambda: False)
    assert [type(c) for c in quiet.logger_callbacks()] == [CSVLoggerCallback, JsonLoggerCallback]
    monkeypatch.setattr(quiet, "tensorboard_installed", lambda: True)
    assert isinstance(quiet.logger_callbacks()[-1], TBXLoggerCallback)


def test_ray_still_emits_them_where_the_filters_look():
    """A newer Ray that moves a message to another logger (or prints it) would slip past the filters."""
    import ray.tune.analysis.experiment_analysis as analysis
    import ray.tune.experimental.output as output
    import ray.tune.tune as tune_mod
    from ray.tune.utils import callback as default_callbacks

    assert tune_mod.logger.name == internals.TUNE_LOGGER and analysis.logger.name == internals.ANALYSIS_LOGGER
    src = inspect.getsource(tune_mod.run)
    assert "Resume experiment with: {restore_entrypoint}" in src and "logger.warning(" in src
    assert internals.is_restore_advice(RESTORE_ADVICE)
    src = inspect.getsource(analysis.ExperimentAnalysis._fetch_trial_dataframes)
    assert 'f"Failed to fetch metrics for {len(failures)} trial(s):\\n{fail_str}"' in src
    assert "were not found at" in inspect.getsource(analysis.ExperimentAnalysis._fetch_trial_dataframe)
    # The TensorBoard hint follows a TBXLoggerCallback, which the env var keeps Ray from adding by itself.
    assert "if tensorboard_path:" in inspect.getsource(output.ProgressReporter.experiment_started)
    assert '"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"' in inspect.getsource(default_callbacks._create_default_callbacks)
