"""What the two experiment trackers share (studies/tuning/trackers.py says what they log and why they are ours, not
Ray Tune's integrations): where a study logs (`Trackers`, from the --log-to flags), what a trial's run holds (its
tags, its epoch metrics, its outcome), the Tune callback both trackers' callbacks are (`TrackerCallback`: plain
data in Ray's pickle, a failure that turns the tracker off and never fails the study), and the verdict table as
they attach it."""

from __future__ import annotations

import dataclasses
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from studies.analysis import tables
from studies.analysis.summary import format_table
from studies.design.cli import WANDB_PROJECT
from studies.design.spec import ARM
from studies.exports.files import portable_path
from studies.tuning.callback import trial_config
from studies.tuning.monitor import trial_name

# Numbers of a trial's result that are not epoch metrics: the step itself, the epoch count, the trainable's
# timestamps (studies.tuning.trainable) and Ray's own bookkeeping.
NOT_METRICS = frozenset({"epoch", "epochs", "trial_started", "reported_at", "final", *AUTO_RESULT_KEYS})
PLACEMENT = ("node_ip", "node_id", "gpu_ids")  # studies.tuning.monitor.placement
VERDICT_TABLE = "verdict_table"
# MLflow's run statuses for a trial's export status, and for the study's; W&B's exit code follows them too.
MLFLOW_STATUS = {"FINISHED": "FINISHED", "STOPPED": "FINISHED", "ERROR": "FAILED", "DIVERGED": "FAILED",
                 "INTERRUPTED": "KILLED", "FAILED": "FAILED"}


@dataclasses.dataclass(frozen=True)
class Trackers:
    """Where a study logs: the --log-to trackers and their settings (study_args.json keeps the flags)."""

    log_to: tuple[str, ...] = ()
    results_dir: str = "."
    mlflow_uri: str | None = None
    wandb_project: str = WANDB_PROJECT
    wandb_mode: str = "offline"

    @classmethod
    def from_args(cls, args: Any) -> Trackers:
        # getattr: the study_args.json of a run started before the flags existed has none of them.
        return cls(tuple(dict.fromkeys(getattr(args, "log_to", None) or ())), str(Path(args.results_dir).resolve()),
                   getattr(args, "mlflow_uri", None), getattr(args, "wandb_project", None) or WANDB_PROJECT,
                   getattr(args, "wandb_mode", None) or "offline")

    @property
    def mlflow_db(self) -> Path:
        return Path(self.results_dir) / "mlflow" / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_uri or f"sqlite:///{self.mlflow_db}"

    @property
    def artifact_location(self) -> str | None:
        """Where a new experiment keeps its artifacts: the results folder, unless a server decides."""
        remote = urllib.parse.urlparse(self.tracking_uri).scheme in ("http", "https", "databricks", "databricks-uc")
        return None if remote else str(Path(self.results_dir) / "mlflow" / "artifacts")


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (or its type), for a one-line error."""
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def trial_tags(study: str, run: str, axis: str | None, trial_id: str, config: dict[str, Any],
               flat: dict[str, Any]) -> dict[str, str]:
    """The tags of a trial's run: study, run, trial_id, the arm (a study of named arms), the axis and its
    value (one-axis ablations), the seed. `config`: the searcher's choice; `flat`: the trial's whole config."""
    tags = {"study": study, "run": run, "trial_id": trial_id}
    if ARM in config:
        tags["arm"] = str(config[ARM])
    if axis:
        tags.update(axis=axis, value=str(flat.get(axis)))
    tags["seed"] = str(flat.get("seed"))
    return tags


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of one epoch's result (mAP, mAP_ema, losses, seconds, ...): no lists, texts or flags."""
    return {k: float(v) for k, v in result.items()
            if k not in NOT_METRICS and isinstance(v, int | float) and not isinstance(v, bool)}


def is_epoch(result: dict[str, Any]) -> bool:
    """An epoch's report, not the trial's final one (which repeats its last epoch), as ExportCallback reads them."""
    return not result.get("final") and "epoch" in result


def trial_outcome(trial: Any) -> str:
    """The status the export gives a completed trial: the final report's, or STOPPED (ended by the scheduler)."""
    r = trial.last_result or {}
    return str(r.get("trial_status") or "FINISHED") if r.get("final") else "STOPPED"


def study_key(study: str, run: str, started: str | None) -> dict[str, str]:
    """The tags that tell one study run's tracker runs from any other's: the study, the run and when it started
    (study.json `started`, kept by --resume): a run replaced by --overwrite, or started again under the name of a
    deleted one, gets runs of its own."""
    return {"study": study, "run": run, **({"started": started} if started else {})}


class TrackerCallback(tune.Callback):
    """What both trackers share: the trial's config and tags, and a failure that only turns the tracker off.
    Plain data only (Ray pickles it): the live objects are `_live()`'s, emptied in the pickle."""

    name = ""

    def __init__(self, trackers: Trackers, study: str, run: str, axis: str | None, meta: dict[str, Any]) -> None:
        self.trackers, self.study, self.run, self.axis = trackers, study, run, axis
        self.meta = {"base_config": meta["base_config"], "arms": meta.get("arms")}
        self.key = study_key(study, run, meta.get("started"))
        self.__dict__.update(self._live())

    def _live(self) -> dict[str, Any]:
        """The fields that hold clients and open runs, as they start each session."""
        return {"_failed": False}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, **self._live()}

    @property
    def group(self) -> str:
        return f"{self.study}/{self.run}"

    def flat(self, trial: Any) -> dict[str, Any]:
        return trial_config(self.meta, trial.config)

    def tags(self, trial: Any) -> dict[str, str]:
        return trial_tags(self.study, self.run, self.axis, trial.trial_id, trial.config, self.flat(trial))

    def label(self, trial: Any) -> str:
        return trial_name(self.study, self.axis, trial.config, trial.trial_id)

    def _safely(self, what: str, fn: Callable[[], Any]) -> None:
        """Run `fn`; a failure is one warning line and turns this tracker off for the rest of the session."""
        if self._failed:
            return
        try:
            fn()
        except Exception as e:  # a tracker is never worth a study
            self._failed = True
            print(f"warning: {self.name}: {what} failed ({type(e).__name__}: {first_line(e)}); the study goes on "
                  f"without {self.name}", flush=True)

    def setup(self, **info: Any) -> None:
        self._safely("opening the tracker", self._open)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._safely(f"starting trial {trial.trial_id}", lambda: self._start(trial))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if is_epoch(result):
            self._safely(f"logging trial {trial.trial_id}",
                         lambda: self._epoch(trial, int(result["epoch"]), epoch_metrics(result), result))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._safely(f"ending trial {trial.trial_id}", lambda: self._end(trial, trial_outcome(trial)))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._safely(f"ending trial {trial.trial_id}", lambda: self._end(trial, "ERROR"))

    def _open(self) -> None: ...

    def _start(self, trial: Any) -> None: ...

    def _epoch(self, trial: Any, epoch: int, metrics: dict[str, float], result: dict[str, Any]) -> None: ...

    def _end(self, trial: Any, status: str) -> None: ...


def verdict_texts(analysis: dict[str, Any]) -> dict[str, str]:
    """The verdict table as files: the terminal's text, and GitHub markdown where studies.analysis.tables
    has it (an ablation)."""
    out = {f"{VERDICT_TABLE}.txt": format_table(analysis) + "\n"}
    if analysis.get("kind") == "ablation":
        out[f"{VERDICT_TABLE}.md"] = tables.markdown_table(analysis)
    return out


def verdict_rows(analysis: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The verdict table as columns and rows: studies.analysis.tables' cells for an ablation, else (a joint
    search) the terminal table's lines."""
    if analysis.get("kind") == "ablation":
        header, rows = tables.verdict_rows(analysis)
        return list(header), [list(r) for r in rows]
    return [VERDICT_TABLE], [[line] for line in format_table(analysis).splitlines()]


def tool(name: str) -> str:
    """The command of this environment's `name` (the venv's mlflow, which a plain `mlflow` on PATH may not be)."""
    return portable_path(Path(sys.executable).parent / name)
