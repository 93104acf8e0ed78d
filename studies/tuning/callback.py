"""The Ray Tune callback of a study: forwards trial events to the export and prints one console line each.

It runs in the driver. Ray pickles it with the experiment and hands the same object back on
`Tuner.restore`, so it holds plain data only, reloads the export from disk in `setup`, and takes the
current session's clock from `SESSIONS` (set by the runner) rather than from its own fields.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ray import tune

from studies.analysis import timing
from studies.analysis.summary import reference_label
from studies.design.spec import ARM, METRIC, arm_config
from studies.exports.predictions import export_trial
from studies.exports.schema import TERMINAL_TRIAL_STATUSES
from studies.exports.writer import StudyExport

# run folder -> (wall seconds of earlier sessions of the run, this driver's start time). The export's
# wall time counts from the driver's start, Ray's start and data generation included.
SESSIONS: dict[str, tuple[float, float]] = {}


def start_session(run_dir: str | Path, wall_before: float, started: float) -> tuple[float, float]:
    SESSIONS[str(run_dir)] = (wall_before, started)
    return SESSIONS[str(run_dir)]


def error_message(trial: Any) -> str:
    """The last line of a failed trial's traceback ("ExceptionType: message")."""
    local = Path(trial.error_file) if trial.error_file else None
    text = local.read_text() if local is not None and local.is_file() else (trial.get_error() or "")
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1][:2000] if lines else "the trial failed without a message; see Ray's trial folder"


def trial_config(meta: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A trial's flat config: the run's base config (study.json `base_config`) with the searcher's choice `config`
    on top, a named arm (meta `arms`) turned into the fields it sets. The experiment trackers log the same."""
    flat = {**meta["base_config"], **arm_config(config, meta.get("arms"))}
    if ARM in config:  # a study of named arms: the row keeps the arm's name beside its config
        flat[ARM] = config[ARM]
    return flat


def _node(result: dict[str, Any]) -> str:
    """'node 10.0.0.5 (1a2b3c4d)' from a trial's result (studies.tuning.monitor.placement)."""
    return f"node {result.get('node_ip', '?')} ({str(result.get('node_id', ''))[:8]})"


def _fmt(config: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())


class ExportCallback(tune.Callback):
    """Forwards trial events to `StudyExport` and prints what happened. `meta` is the run's study.json
    (its base_config, with the searcher's choice on top, is each trial's row); `axis` labels the lines."""

    def __init__(self, run_dir: str, meta: dict[str, Any], paper_config: dict[str, Any], n_trials: int,
                 axis: str | None) -> None:
        self.run_dir, self.meta, self.paper_config = run_dir, meta, paper_config
        self.n_trials, self.axis = n_trials, axis
        self.export: StudyExport | None = None
        self._pruned = False

    @property
    def multi_node(self) -> bool:
        """Whether this session's cluster has several nodes (then the console lines name each trial's node)."""
        meta = self.export.meta if self.export is not None else self.meta
        return int(meta.get("provenance", {}).get("ray_cluster", {}).get("nodes") or 1) > 1

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the callback with every experiment snapshot: plain data only, the export is reopened in
        # `setup` (so the pickle names no class but this one).
        return {**self.__dict__, "export": None}

    def setup(self, **info: Any) -> None:
        self.export = StudyExport.open(self.run_dir, self.meta, SESSIONS.get(self.run_dir))
        self._pruned = False
        # This session's clock for the time left (a restored pickle's would be another process's): when each
        # running trial started, and how long each trial that ended here took, start to end as the driver saw it.
        self._started: dict[str, float] = {}
        self._durations: list[float] = []
        self.export.begin()

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._pruned:
            self.export.prune({t.trial_id for t in trials})
            self._pruned = True

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # trials.csv and study.json are snapshots written at most every few seconds: one may come due while no
        # trial reports (long epochs), and the Tune loop steps often enough to write it then.
        if self.export is not None:
            self.export.tick()

    def _flat(self, trial: Any) -> dict[str, Any]:
        return trial_config(self.meta, trial.config)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        flat = self._flat(trial)
        is_paper = all(flat.get(k) == v for k, v in self.paper_config.items())
        if self.export.is_final(trial.trial_id):
            return  # finished before a crash; Ray only re-evaluates it (see StudyExport.is_final)
        self.export.trial_started(trial.trial_id, flat, int(flat["seed"]), is_paper)
        self._started.setdefault(trial.trial_id, time.monotonic())
        label = "the reference arm" if self.meta.get("arms") else reference_label(self.meta.get("dataset"))
        flag = f"  ({label})" if is_paper else ""
        print(f"start    {trial.trial_id} {_fmt(trial.config)}{flag}", flush=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if not result.get("final") and "epoch" in result and not self.export.is_final(trial.trial_id):
            self.export.trial_epoch(trial.trial_id, result, seconds=result.get("time_total_s"),
                                    retries=trial.num_failures)
            print(f"         {trial.trial_id} epoch {result['epoch']}/{result['epochs']}  mAP {result['mAP']:.2f}  "
                  f"EMA mAP {result[METRIC]:.2f}  loss {result['loss_total']:.2f}  {result['seconds']:.0f}s/epoch"
                  + (f"  GPU {result['gpu_ids']}" if result.get("gpu_ids") else "")
                  + (f"  on {_node(result)}" if self.multi_node else ""), flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        r = trial.last_result or {}
        if r.get("final"):
            status, error = r["trial_status"], r.get("error") or None
            report = json.loads(r["scene_report"]) if r.get("scene_report") else None
        else:  # ended by the scheduler, which only stops trials before their last epoch
            status, error, report = "STOPPED", None, None
        if status == "FINISHED" and not self.export.is_final(trial.trial_id):
            self._save_predictions(trial)  # first: a FINISHED row then always has its predictions
        if self.export.trial_ended(trial.trial_id, status, error, report, seconds=r.get("time_total_s"),
                                   retries=trial.num_failures):
            self._print_end(trial, status, r, error)

    def _save_predictions(self, trial: Any) -> None:
        """predictions/<trial_id>.npz from the trial's final checkpoint; a failure costs the trial its
        image-level intervals (analysis.json says so), not the study."""
        try:
            export_trial(self.run_dir, trial.trial_id, trial.checkpoint)
        except (OSError, ValueError) as e:
            print(f"warning: trial {trial.trial_id}: its validation predictions were not saved ({e})", flush=True)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        where = f" on {_node(trial.last_result)}" if trial.last_result and self.multi_node else ""
        print(f"trial {trial.trial_id} failed{where} ({error_message(trial)}); retrying from its last checkpoint "
              f"(retry {trial.num_failures})", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        msg = error_message(trial)
        if self.export.trial_ended(trial.trial_id, "ERROR", msg, seconds=(trial.last_result or {}).get("time_total_s"),
                                   retries=trial.num_failures):
            self._print_end(trial, "ERROR", trial.last_result or {}, msg)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        rows = self.export.trials
        done = all(rows.get(t.trial_id, {}).get("status") in TERMINAL_TRIAL_STATUSES for t in trials)
        complete = done and sum(r.get("status") in TERMINAL_TRIAL_STATUSES for r in rows.values()) >= self.n_trials
        self.export.finish("FINISHED" if complete else "INTERRUPTED")

    def _print_end(self, trial: Any, status: str, r: dict, error: str | None) -> None:
        flat = self._flat(trial)
        what = f"{self.axis}={flat[self.axis]} " if self.axis else ""
        n = sum(x.get("status") in TERMINAL_TRIAL_STATUSES for x in self.export.trials.values())
        score = f"mAP_ema {r[METRIC]:.2f} (best {r.get('best_mAP_ema', 0):.2f}, epoch {r.get('best_epoch')})" \
            if status in ("FINISHED", "STOPPED") and METRIC in r else (error or "")
        secs = r.get("time_total_s")
        print(f"[{n}/{self.n_trials}] {status:<8} {trial.trial_id} {what}seed={flat['seed']}  {score}"
              + (f"  {secs:.0f}s" if secs else "") + self._time_left(trial.trial_id, n), flush=True)

    def _time_left(self, trial_id: str, n_ended: int) -> str:
        """'  time left ~3 min' (studies.analysis.timing.time_left), once a trial of this session has ended."""
        now = time.monotonic()
        started = self._started.pop(trial_id, None)
        if started is not None:
            self._durations.append(now - started)
        slots = int(self.export.meta.get("max_concurrent") or self.meta.get("max_concurrent") or 1)
        running = [now - t for t in self._started.values()]
        return timing.progress_text(timing.time_left(self._durations, running, self.n_trials - n_ended, slots))
