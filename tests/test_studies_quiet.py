"""Ctrl-C as a user sees it: our resume line once, none of Ray Tune's contradicting advice, warnings or hints
(studies/quiet.py). Unit tests of the filters against the messages Ray 2.60 emits, checks that Ray still
emits them where the filters look, and a real interrupt and resume of a study in a subprocess."""

from __future__ import annotations

import inspect
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import descendants, kill, read_rows, wait_until

from studies import quiet, workspace

REPO = Path(__file__).resolve().parents[1]

# Ray's own texts (ray/tune/tune.py, analysis/experiment_analysis.py, experimental/output.py, 2.60).
RESTORE_ADVICE = ("Experiment has been interrupted, but the most recent state was saved.\n"
                  'Resume experiment with: Tuner.restore(path="/x/.ray_results/scene_count/r", trainable=...)')
MISSING = ("- train_trial_{0}: FileNotFoundError('Could not fetch metrics for train_trial_{0}: both result.json and "
           "progress.csv were not found at /x/.ray_results/scene_count/r/train_trial_{0}_4_num_scenes=2,seed=1')")
# What must never reach the user's terminal around our resume line.
RAY_NOISE = ("Tuner.restore", "Resume experiment with", "FileNotFoundError", "were not found",
             "Failed to fetch metrics")
TENSORBOARD = ("TensorBoard", "tensorboard")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def captured():
    """What reaches a handler on each of the two Ray loggers, after `quiet.install()`."""
    loggers = [logging.getLogger(n) for n in (quiet.TUNE_LOGGER, quiet.ANALYSIS_LOGGER)]
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

    assert tune_mod.logger.name == quiet.TUNE_LOGGER and analysis.logger.name == quiet.ANALYSIS_LOGGER
    src = inspect.getsource(tune_mod.run)
    assert "Resume experiment with: {restore_entrypoint}" in src and "logger.warning(" in src
    assert quiet.is_restore_advice(RESTORE_ADVICE)
    src = inspect.getsource(analysis.ExperimentAnalysis._fetch_trial_dataframes)
    assert 'f"Failed to fetch metrics for {len(failures)} trial(s):\\n{fail_str}"' in src
    assert "were not found at" in inspect.getsource(analysis.ExperimentAnalysis._fetch_trial_dataframe)
    # The TensorBoard hint follows a TBXLoggerCallback, which the env var keeps Ray from adding by itself.
    assert "if tensorboard_path:" in inspect.getsource(output.ProgressReporter.experiment_started)
    assert '"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"' in inspect.getsource(default_callbacks._create_default_callbacks)


# ---------------------------------------------------------------------------------------------------
# a real Ctrl-C


def _study(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:  # a file, not a pipe: nothing to fill up while we wait
        return subprocess.Popen(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _assert_quiet(out: str) -> None:
    for s in RAY_NOISE:
        assert s not in out, f"Ray's {s!r} reached the terminal:\n{out[-4000:]}"
    if not quiet.tensorboard_installed():
        for s in TENSORBOARD:
            assert s not in out, f"a TensorBoard hint without TensorBoard:\n{out[-4000:]}"


@pytest.mark.ray
@pytest.mark.slow
def test_ctrl_c_prints_our_resume_line_once_and_nothing_of_rays(tmp_path):
    ray_tmp = tempfile.mkdtemp(prefix="rq", dir="/tmp")  # Ray's unix sockets need a short path
    results, storage = tmp_path / "results", tmp_path / "ray"
    run, exp = results / "scene_count" / "r", storage / "scene_count" / "r"
    runtime = ["--ray-temp-dir", ray_tmp, "--no-dashboard"]
    argv = [sys.executable, "studies/scene_count.py", "--smoke", "--values", "1", "2", "4", "--seeds", "0", "1",
            "--epochs", "2", "--name", "r", "--results-dir", str(results), "--storage-path", str(storage)]
    procs: list[int] = []
    try:
        first = _study(argv + runtime, tmp_path / "first.log")

        def one_finished() -> bool:
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            return any(r["status"] == "FINISHED" for r in read_rows(run / "trials.csv"))

        wait_until(one_finished, 180, "the first finished trial", poll=0.2)
        procs = descendants(first.pid)
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=120) == 130
        out = (tmp_path / "first.log").read_text()
        resume = next(ln.strip() for ln in out.splitlines() if "--resume --name r" in ln)
        assert out.count("--resume --name r") == 1, out[-4000:]
        assert out.rstrip().endswith(resume), "the resume command is the last thing printed"
        _assert_quiet(out)
        # An unfinished study keeps what its resume needs.
        assert workspace.checkpoint_dirs(exp), "the interrupted study lost its checkpoints"

        second = _study(shlex.split(resume) + runtime, tmp_path / "second.log")
        assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-4000:]
        out = (tmp_path / "second.log").read_text()
        _assert_quiet(out)
        assert "--resume --name" not in out and "best EMA mAP (the paper's reported number)" in out
        assert f"dashboard: SALGL_RESULTS_DIR={results} make dashboard" in out
        # Finished: the checkpoints are gone (only --resume needed them); the export is whole.
        assert "deleted the trial checkpoints" in out and workspace.checkpoint_dirs(exp) == []
        assert all(r["status"] == "FINISHED" for r in read_rows(run / "trials.csv"))
        print(f"Ray folder after a finished --smoke study of 6 trials: {workspace.folder_bytes(exp) / 1e6:.2f} MB")
    finally:
        kill(procs)
        shutil.rmtree(ray_tmp, ignore_errors=True)
