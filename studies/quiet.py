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
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback

TUNE_LOGGER = "ray.tune.tune"
ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"


def is_restore_advice(message: str) -> bool:
    """Ray's "... has been interrupted ... Resume experiment with: Tuner.restore(...)" warning."""
    return "has been interrupted" in message and ".restore(" in message


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


def install() -> None:
    """Attach the filters to Ray's loggers and turn off Ray's default logger callbacks. Idempotent; call it
    in the driver before the Tuner is created or restored (restoring logs the missing-results warning)."""
    for name, drop in ((TUNE_LOGGER, is_restore_advice), (ANALYSIS_LOGGER, is_missing_results_warning)):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropFilter) and f.drop is drop for f in log.filters):
            log.addFilter(_DropFilter(drop))
    # Ray reads it when Tuner.fit builds its callbacks: the logger callbacks are then logger_callbacks().
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"


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
