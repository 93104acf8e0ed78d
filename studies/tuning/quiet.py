"""Ray's and Optuna's console output that contradicts or clutters a study's own: silenced where they emit it.

A study's terminal holds the study's own lines only: its progress lines, the closing summary and, when
interrupted, its own resume command (every line is checked against the project's patterns, tests/terminal_lines.py,
on a finished, an interrupted and a resumed study; tests/test_studies_terminal.py says where). Errors and warnings
still show: only the texts named here are dropped, and Ray's loggers keep WARNING.

- Ray's INFO lines in the driver ("Started a local Ray instance", "Generated new authentication token",
  Tune's "Wrote the latest version of all result files ...", "Restoring the run from the latest experiment
  state file"): `ray.init(logging_level=logging.WARNING)` (studies/tuning/cluster.py), the level of Ray's
  "ray" logger, which every Ray logger inherits.
- Ray's "Token authentication is enabled for this Ray cluster" warning, which ray.init logs when it turns
  token authentication on by default: cluster.start_ray turns it on itself first (Ray's own setup, in
  studies/tuning/internals.py), so Ray sees the mode set explicitly and does not warn; the study's
  "Ray dashboard:" line says that token authentication is on. The warning that it is OFF still shows.
- Tune's configuration box and "View detailed results here": its new output engine prints them whatever
  RunConfig(verbose=...) says. RAY_AIR_NEW_OUTPUT=0 (Ray's documented switch back to its earlier output)
  makes `verbose` decide: 0, the default, prints nothing of Tune's own; --verbose 1 or 2 its progress tables.
- Optuna's "[I ...] A new study created in Journal with name: ...": Optuna's verbosity to WARNING
  (`optuna.logging.set_verbosity`).
- `ray.tune.tune` logs "Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run ..." on Ctrl-C:
  the study ends within seconds with its own "interrupted; finish it with:" lines. Dropped by a filter.

A study prints its own resume command (`python studies/<study>.py --resume --name RUN`), so three
more things Ray Tune 2.60 prints in the driver only mislead:

- `ray.tune.tune` (tune.py, at the end of `tune.run` after a Ctrl-C) logs "Experiment has been
  interrupted ... Resume experiment with: Tuner.restore(path=..., trainable=...)": advice for library
  users; a study is resumed with its script. Dropped by a filter on that logger.
- `ray.tune.analysis.experiment_analysis` (`ExperimentAnalysis._fetch_trial_dataframes`, which runs when
  `Tuner.fit` ends and again in `Tuner.restore`) logs "Failed to fetch metrics ... FileNotFoundError ...
  both result.json and progress.csv were not found" for every trial that had not reported yet when the
  study stopped. Nothing is missing (the export never reads those files). Dropped when every failure
  it lists is such a FileNotFoundError; any other failure still shows.
- `ray.tune.experimental.output` prints "To visualize your results with TensorBoard, run: tensorboard
  --logdir ..." (a plain `print`) whenever a `TBXLoggerCallback` is among the callbacks, and Ray adds
  one by default because tensorboardX comes with ray[tune], even where the `tensorboard` command does
  not exist. `install` turns Ray's default loggers off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS) and the
  runner passes `logger_callbacks()` instead: the CSV and JSON loggers, and TensorBoard's only when
  TensorBoard is installed. (With RAY_AIR_NEW_OUTPUT=0 that output module prints nothing; the event files
  are still written when TensorBoard can read them.)

The filters, the logger names and the texts they match are in studies/tuning/internals.py.
"""

from __future__ import annotations

import importlib.util
import os

import optuna
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback

from studies.tuning.internals import silence_ray_advice


def install() -> None:
    """Silence Ray's misleading advice, Tune's own console output at --verbose 0 and Optuna's INFO lines, and
    turn off Ray's default logger callbacks (the runner passes `logger_callbacks()`). Idempotent; call it in
    the driver before the Tuner is created or restored (restoring logs the missing-results warning)."""
    silence_ray_advice()
    # Read by Tune when Tuner.fit starts; an explicit choice of the user's stays.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def logger_callbacks() -> list[LoggerCallback]:
    """Ray's default trial loggers (result.json, progress.csv), plus TensorBoard's event files when
    TensorBoard is installed to read them."""
    callbacks: list[LoggerCallback] = [CSVLoggerCallback(), JsonLoggerCallback()]
    if tensorboard_installed():
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
    return callbacks
