"""Ctrl-C as a user sees it: our resume line once, none of Ray Tune's contradicting advice, warnings or hints
(studies/tuning/quiet.py; the texts they match are in studies/tuning/internals.py). Unit tests of the filters
against the messages Ray 2.60 emits and checks that Ray still emits them where the filters look (and reads the
settings quiet relies on); a real interrupt and resume of a study in a subprocess, with what it prints, is
test_studies_resume.py, and every line of a real study's terminal is checked in test_studies_terminal.py."""

from __future__ import annotations

import inspect
import logging
import os

import optuna
import pytest

from studies.tuning import cluster, internals, quiet

# Ray's own texts (ray/tune/tune.py, analysis/experiment_analysis.py, experimental/output.py, 2.60).
STOP_NOTICE = ("Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run. This will try to checkpoint the "
               "experiment state one last time. Press CTRL+C (or send SIGINT/SIGKILL/SIGTERM) to skip. ")
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
    saved_env = {k: os.environ.get(k) for k in ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "RAY_AIR_NEW_OUTPUT")}
    saved_filters = [list(log.filters) for log in loggers]
    saved_optuna = optuna.logging.get_verbosity()
    quiet.install()
    quiet.install()  # idempotent: one filter each
    handler = _Capture()
    for log in loggers:
        log.addHandler(handler)
    yield loggers, handler
    for log, filters in zip(loggers, saved_filters, strict=True):
        log.removeHandler(handler)
        log.filters[:] = filters
    for k, v in saved_env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    optuna.logging.set_verbosity(saved_optuna)


def test_filters_drop_rays_advice_and_missing_file_warnings_only(captured):
    (tune_log, analysis_log), handler = captured
    assert [len(log.filters) for log in (tune_log, analysis_log)] == [2, 1]
    tune_log.warning(RESTORE_ADVICE)
    tune_log.warning(STOP_NOTICE)
    analysis_log.warning("Failed to fetch metrics for 2 trial(s):\n" + MISSING.format("a") + "\n" + MISSING.format("b"))
    assert handler.messages == []
    # Everything else still shows: Ray's other warnings and errors, and a fetch failure that is not a file not yet
    # written.
    tune_log.warning("Trial train_trial_a errored after 3 iterations")
    tune_log.error("Experiment state snapshotting failed:")
    mixed = "Failed to fetch metrics for 2 trial(s):\n" + MISSING.format("a") + "\n- train_trial_b: ValueError('bad')"
    analysis_log.warning(mixed)
    assert handler.messages == ["Trial train_trial_a errored after 3 iterations",
                                "Experiment state snapshotting failed:", mixed]
    assert os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1" and os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    assert optuna.logging.get_verbosity() == optuna.logging.WARNING


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
    src = inspect.getsource(tune_mod._setup_signal_catching)
    assert '"Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run. "' in src and "logger.warning(" in src
    assert internals.is_stop_notice(STOP_NOTICE) and not internals.is_stop_notice("Stop the world")
    src = inspect.getsource(analysis.ExperimentAnalysis._fetch_trial_dataframes)
    assert 'f"Failed to fetch metrics for {len(failures)} trial(s):\\n{fail_str}"' in src
    assert "were not found at" in inspect.getsource(analysis.ExperimentAnalysis._fetch_trial_dataframe)
    # The TensorBoard hint follows a TBXLoggerCallback, which the env var keeps Ray from adding by itself.
    assert "if tensorboard_path:" in inspect.getsource(output.ProgressReporter.experiment_started)
    assert '"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"' in inspect.getsource(default_callbacks._create_default_callbacks)


def test_ray_reads_the_settings_quiet_relies_on(monkeypatch):
    """The public knobs: Tune's output engine switch, ray.init's logging level (Ray's INFO lines, not its warnings
    and errors), and RAY_AUTH_MODE set before ray.init (Ray warns only when it turns token mode on by itself)."""
    import ray
    import ray.tune.experimental.output as output
    from ray._private.authentication import authentication_token_setup as auth

    monkeypatch.setenv("RAY_AIR_NEW_OUTPUT", "0")
    assert output.get_air_verbosity(0) is None  # the earlier engine: verbose 0 prints nothing of Tune's own
    assert "logging_level" in inspect.signature(ray.init).parameters
    assert cluster.RAY_LOG_LEVEL == logging.WARNING
    src = inspect.getsource(auth.enable_token_auth_by_default)
    assert "Mode set explicitly; respect it without warning." in src and "_warn_token_auth_enabled()" in src
    # Under that level, what Ray logs at WARNING or above still reaches the terminal.
    ray_logger = logging.getLogger("ray")
    saved = ray_logger.level
    try:
        ray_logger.setLevel(cluster.RAY_LOG_LEVEL)
        controller = logging.getLogger("ray.tune.execution.tune_controller")
        assert not controller.isEnabledFor(logging.INFO)
        assert controller.isEnabledFor(logging.WARNING) and controller.isEnabledFor(logging.ERROR)
    finally:
        ray_logger.setLevel(saved)
