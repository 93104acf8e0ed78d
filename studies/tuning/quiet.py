"""Ray Tune's console output that contradicts or clutters a study's own: silenced where Ray emits it.

A study prints its own resume command (`python studies/<study>.py --resume --name RUN`), so three
things Ray Tune 2.60 prints in the driver only mislead:

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
  TensorBoard is installed. The hint then appears exactly when it can be followed.

The filters, the logger names and the texts they match are in studies/tuning/internals.py.
"""

from __future__ import annotations

import importlib.util

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback

from studies.tuning.internals import silence_ray_advice


def install() -> None:
    """Silence Ray's misleading advice and turn off its default logger callbacks (the runner passes
    `logger_callbacks()`). Idempotent; call it in the driver before the Tuner is created or restored
    (restoring logs the missing-results warning)."""
    silence_ray_advice()


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
