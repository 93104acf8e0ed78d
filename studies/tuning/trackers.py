"""Experiment trackers (`--log-to mlflow`, `--log-to wandb`): every trial a tracker run, the study's analysis on
one more, offline first.

A trial's run holds its full flat config (study.json `base_config` with the searcher's choice on top:
studies.tuning.callback.trial_config), the study, run, arm, axis value and seed as tags, the numbers of every
epoch's result (epoch as the step) and where it ran (node IP and id, GPU ids: studies.tuning.monitor.placement).
When the study ends, `finish_study` attaches the export's analysis.json, comparisons.csv (and study.json) and the
verdict table to the study run's own run.

- MLflow: one experiment per study; per study run a parent run (tag kind=study) whose children (tag
  mlflow.parentRunId, kind=trial) are the trials. The default store is local: sqlite:///<results-dir>/mlflow/
  mlflow.db, artifacts in <results-dir>/mlflow/artifacts (MLflow 3.17 refuses its file store ./mlruns unless
  MLFLOW_ALLOW_FILE_STORE is set, and an experiment created without `artifact_location` keeps its artifacts in
  ./mlruns of the current folder). --mlflow-uri names another store or a tracking server.
- W&B: offline unless --wandb-mode online (which needs a login); runs in <results-dir>/wandb/<study>/<run>/,
  uploaded later by `wandb sync`. group "<study>/<run>", job_type "trial"; the analysis is one more run in the
  group (job_type "analysis"). Every trial is its own Run object in the driver (`wandb.init(reinit="create_new")`).

Why not Ray Tune's own integrations (Ray 2.60: ray.air.integrations.mlflow.MLflowLoggerCallback,
ray.air.integrations.wandb.WandbLoggerCallback): they log `trial.config`, which here is only the searcher's
choice (the base config travels with the trainable through tune.with_parameters), under one set of static tags
for all trials, with no parent run; the W&B one also starts a Ray actor per trial. These callbacks use the
trackers' public APIs (MlflowClient; wandb.init / Run.log) in the driver.

Like ExportCallback, Ray pickles them with every experiment snapshot and hands the same objects back on
`Tuner.restore` (--resume): they hold plain data only, open their clients in `setup`, and continue the same
tracker runs (MLflow: found by their tags, `study_key` and the trial id; W&B: the same run id with
resume="allow"). A tracker that fails says so in one line and is off for the rest of the session: the study
never fails for it.

Console: the terminal of a study holds only its own lines. MLflow logs INFO lines ("Creating initial MLflow
database tables...") through its "mlflow" logger, which it sets up when imported (alembic's it already keeps
at WARNING): `_mlflow` raises it to WARNING. W&B: Settings(silent=True) drops its banners and hints, and
console="off" leaves the driver's stdout and stderr unwrapped (W&B would copy them into every trial's run).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import netrc
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from studies.analysis import tables
from studies.analysis.summary import format_table
from studies.design.cli import WANDB_PROJECT
from studies.design.spec import ARM, StudyError
from studies.exports.files import portable_path
from studies.exports.schema import ANALYSIS_JSON, COMPARISONS_CSV, STUDY_JSON
from studies.tuning.callback import trial_config
from studies.tuning.monitor import trial_name

INSTALL = "pip install -e '.[trackers]'"
# How long --mlflow-uri http://... may take to answer before the study refuses to start.
CONNECT_TIMEOUT_S = 5.0
# Numbers of a trial's result that are not epoch metrics: the step itself, the epoch count, the trainable's
# timestamps (studies.tuning.trainable) and Ray's own bookkeeping.
NOT_METRICS = frozenset({"epoch", "epochs", "trial_started", "reported_at", "final", *AUTO_RESULT_KEYS})
PLACEMENT = ("node_ip", "node_id", "gpu_ids")  # studies.tuning.monitor.placement
# The tag telling a study run's parent run (MLflow) from its trials' runs, and MLflow's own tag that nests a run
# under another (mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID).
KIND = "kind"
MLFLOW_PARENT = "mlflow.parentRunId"
VERDICT_TABLE = "verdict_table"
# MLflow's run statuses for a trial's export status, and for the study's.
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


# --- the checks before Ray starts ---

def check(t: Trackers) -> None:
    """What --log-to needs, checked before Ray starts: StudyError (one line) for a tracker that is not
    installed, an MLflow URI that does not answer, or --wandb-mode online without a W&B login."""
    if t.mlflow_uri and "mlflow" not in t.log_to:
        raise StudyError("--mlflow-uri is for --log-to mlflow: add --log-to mlflow, or drop --mlflow-uri")
    for name in t.log_to:
        try:  # imported here anyway: the driver logs with it
            importlib.import_module(name)
        except ImportError:
            raise StudyError(f"--log-to {name} needs the {name} package: {INSTALL}") from None
        except Exception as e:  # a broken installation (say, a protobuf it does not work with)
            raise StudyError(f"--log-to {name}: `import {name}` fails ({type(e).__name__}: {_first_line(e)}); "
                             f"reinstall it: {INSTALL}") from None
    if "mlflow" in t.log_to and t.mlflow_uri:
        check_mlflow_uri(t.mlflow_uri)
    if "wandb" in t.log_to and t.wandb_mode == "online" and not wandb_logged_in():
        raise StudyError("--wandb-mode online needs a W&B login: run `wandb login` (or set WANDB_API_KEY), or log "
                         "offline (the default) and upload later with `wandb sync`")


def check_mlflow_uri(uri: str) -> None:
    """StudyError naming `uri` if a tracking server does not answer within CONNECT_TIMEOUT_S, or another
    store cannot be opened. Any HTTP answer counts: what it says (a login, say) is MLflow's to report."""
    if urllib.parse.urlparse(uri).scheme in ("http", "https"):
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=CONNECT_TIMEOUT_S).close()
        except urllib.error.HTTPError:
            pass
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise StudyError(f"--mlflow-uri {uri} does not answer within {CONNECT_TIMEOUT_S:g} s ({reason}): check "
                             f"the URI and that its MLflow server runs") from None
        return
    try:
        _mlflow(uri).search_experiments(max_results=1)
    except Exception as e:  # whatever the store's complaint, it is one line naming the URI
        raise StudyError(f"--mlflow-uri {uri} cannot be opened: {_first_line(e)}") from None


def wandb_logged_in() -> bool:
    """W&B's own two ways to hold a login: WANDB_API_KEY, or an entry for its host in ~/.netrc (`wandb login`)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


# --- what a trial's run holds ---

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


def wandb_id(*parts: str) -> str:
    """A W&B run id (unique in the project, so it names the study and run): W&B refuses :;,#?/' and spaces."""
    return re.sub(r"[\s:;,#?/'\\]+", "-", "-".join(parts))[:128]


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
            print(f"warning: {self.name}: {what} failed ({type(e).__name__}: {_first_line(e)}); the study goes on "
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


# --- MLflow ---

def _mlflow(uri: str) -> Any:
    """An MlflowClient of `uri`, MLflow's INFO lines silenced (see the module docstring)."""
    from mlflow.tracking import MlflowClient

    # MLflow gives its "mlflow" logger an INFO handler of its own when imported ("Creating initial MLflow database
    # tables..."); alembic's migrations log through "alembic", which MLflow already keeps at WARNING.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # A tracking server that stops answering would hold the driver for minutes of MLflow's retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    return MlflowClient(tracking_uri=uri)


def _quoted(v: str) -> str:
    return f'"{v}"' if "'" in v else f"'{v}'"


def mlflow_experiment(client: Any, study: str, artifact_location: str | None) -> str:
    """The study's experiment id, created (or restored from MLflow's trash) when needed."""
    exp = client.get_experiment_by_name(study)
    if exp is None:
        return client.create_experiment(study, artifact_location=artifact_location)
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def mlflow_runs(client: Any, experiment_id: str, key: dict[str, str]) -> list[Any]:
    """Every MLflow run of one study run (its parent and its trials), found by their tags (`study_key`)."""
    out, token = [], None
    query = " AND ".join(f"tags.{k} = {_quoted(v)}" for k, v in key.items())
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def mlflow_parent(client: Any, experiment_id: str, key: dict[str, str], axis: str | None, found: list[Any]) -> str:
    """The id of the study run's parent run among `found` (its MLflow runs), created if missing, RUNNING."""
    for r in found:
        if r.data.tags.get(KIND) == "study":
            if r.info.status != "RUNNING":
                client.update_run(r.info.run_id, status="RUNNING")
            return r.info.run_id
    tags = {**key, KIND: "study", **({"axis": axis} if axis else {})}
    return client.create_run(experiment_id, run_name=key["run"], tags=tags).info.run_id


class MlflowCallback(TrackerCallback):
    """Each trial an MLflow run, child of the study run's parent run in the study's experiment."""

    name = "mlflow"

    def _live(self) -> dict[str, Any]:
        return {**super()._live(), "_client": None, "_experiment": None, "_parent": None, "_runs": {}}

    def _open(self) -> None:
        if not self.trackers.mlflow_uri:
            self.trackers.mlflow_db.parent.mkdir(parents=True, exist_ok=True)
        self._client = _mlflow(self.trackers.tracking_uri)
        self._experiment = mlflow_experiment(self._client, self.study, self.trackers.artifact_location)
        found = mlflow_runs(self._client, self._experiment, self.key)
        self._parent = mlflow_parent(self._client, self._experiment, self.key, self.axis, found)
        # --resume: the trials logged by earlier sessions go on in their runs.
        self._runs = {r.data.tags["trial_id"]: r.info.run_id for r in found
                      if r.data.tags.get(KIND) == "trial" and "trial_id" in r.data.tags}

    def _run_id(self, trial: Any) -> str:
        run_id = self._runs.get(trial.trial_id)
        if run_id is None:
            from mlflow.entities import Param

            tags = {**self.tags(trial), **self.key, KIND: "trial", MLFLOW_PARENT: self._parent}
            run_id = self._client.create_run(self._experiment, run_name=self.label(trial), tags=tags).info.run_id
            params = [Param(k, str(v)) for k, v in self.flat(trial).items()]
            for i in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
                self._client.log_batch(run_id, params=params[i:i + 100])
            self._runs[trial.trial_id] = run_id
        return run_id

    def _start(self, trial: Any) -> None:
        run_id = self._run_id(trial)
        if self._client.get_run(run_id).info.status != "RUNNING":  # resumed, or retried after an error
            self._client.update_run(run_id, status="RUNNING")

    def _epoch(self, trial: Any, epoch: int, metrics: dict[str, float], result: dict[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag

        ms = int(1000 * float(result.get("reported_at") or time.time()))
        self._client.log_batch(self._run_id(trial), metrics=[Metric(k, v, ms, epoch) for k, v in metrics.items()],
                               tags=[RunTag(k, str(result[k])) for k in PLACEMENT if k in result])

    def _end(self, trial: Any, status: str) -> None:
        run_id = self._run_id(trial)
        self._client.set_tag(run_id, "status", status)
        self._client.set_terminated(run_id, MLFLOW_STATUS.get(status, "FINISHED"))


# --- W&B ---

def wandb_dir(t: Trackers, study: str, run: str) -> Path:
    """Where a study run's W&B runs go: W&B writes them to <this>/wandb/offline-run-*, so one study run's are one
    folder to `wandb sync` (a glob on run ids would also take run "default-2"'s with run "default")."""
    return Path(t.results_dir) / "wandb" / study / run


def wandb_init(t: Trackers, study: str, run: str, **kwargs: Any) -> Any:
    """wandb.init of one run of the study run `study`/`run` (in wandb_dir), silenced (see the module docstring)."""
    import wandb

    # silent: no banners, hints or sync instructions on the console; console="off": the driver's stdout is not
    # captured into the run. x_disable_stats: W&B would sample this driver's CPU and GPUs, not the trial's.
    settings = wandb.Settings(silent=True, console="off", x_disable_stats=True)
    folder = wandb_dir(t, study, run)
    folder.mkdir(parents=True, exist_ok=True)  # W&B warns about a missing folder
    return wandb.init(project=t.wandb_project, dir=folder, mode=t.wandb_mode, reinit="create_new",
                      resume="allow", settings=settings, **kwargs)


def wandb_tags(tags: dict[str, str]) -> list[str]:
    """`key=value` W&B tags (at most 64 characters each), the trial id aside: it is in the config."""
    return [f"{k}={v}"[:64] for k, v in tags.items() if k != "trial_id"]


class WandbCallback(TrackerCallback):
    """Each trial a W&B run in the group "<study>/<run>", job_type "trial"."""

    name = "wandb"

    def _live(self) -> dict[str, Any]:
        return {**super()._live(), "_runs": {}, "_where": {}}

    def _open(self) -> None:
        import wandb  # noqa: F401  (fails here, in one line, rather than at the first trial)

    def _run(self, trial: Any) -> Any:
        run = self._runs.get(trial.trial_id)
        if run is None:
            run = wandb_init(self.trackers, self.study, self.run, id=wandb_id(self.study, self.run, trial.trial_id),
                             name=self.label(trial),
                             group=self.group, job_type="trial", tags=wandb_tags(self.tags(trial)),
                             config={**self.flat(trial), "trial_id": trial.trial_id})
            self._runs[trial.trial_id] = run
        return run

    def _start(self, trial: Any) -> None:
        self._run(trial)

    def _epoch(self, trial: Any, epoch: int, metrics: dict[str, float], result: dict[str, Any]) -> None:
        run = self._run(trial)
        where = {k: str(result[k]) for k in PLACEMENT if k in result}
        if where and where != self._where.get(trial.trial_id):  # a retry may run elsewhere
            run.config.update(where, allow_val_change=True)
            self._where[trial.trial_id] = where
        run.log({"epoch": epoch, **metrics}, step=epoch)

    def _end(self, trial: Any, status: str) -> None:
        run = self._run(trial)
        run.summary["status"] = status
        run.finish(exit_code=0 if MLFLOW_STATUS.get(status) == "FINISHED" else 1)
        self._runs.pop(trial.trial_id, None)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        def finish_all() -> None:
            for run in self._runs.values():  # trials that did not end (interrupted)
                run.finish(exit_code=1)
            self._runs.clear()

        self._safely("closing the trials' runs", finish_all)


CALLBACKS: dict[str, type[TrackerCallback]] = {"mlflow": MlflowCallback, "wandb": WandbCallback}


def callbacks(t: Trackers, study: str, run: str, axis: str | None, meta: dict[str, Any]) -> list[TrackerCallback]:
    """The Tune callbacks of the --log-to trackers (none without the flag)."""
    return [CALLBACKS[name](t, study, run, axis, meta) for name in t.log_to]


# --- the end of a study: its analysis ---

def finish_study(t: Trackers, study: str, run: str, axis: str | None, run_dir: str | Path, status: str) -> None:
    """Attach the export's analysis (analysis.json, comparisons.csv, study.json, the verdict table) to the study
    run's own tracker run and close it with the study's status; print where to look, one line per tracker. A
    failure is one warning line: the export is complete without the trackers."""
    if not t.log_to:
        return
    run_dir = Path(run_dir)
    files = [run_dir / f for f in (ANALYSIS_JSON, COMPARISONS_CSV, STUDY_JSON) if (run_dir / f).is_file()]
    analysis = json.loads((run_dir / ANALYSIS_JSON).read_text()) if (run_dir / ANALYSIS_JSON).is_file() else None
    meta = json.loads((run_dir / STUDY_JSON).read_text()) if (run_dir / STUDY_JSON).is_file() else {}
    key = study_key(study, run, meta.get("started"))
    for name in t.log_to:
        attach = _mlflow_finish if name == "mlflow" else _wandb_finish
        try:
            line = attach(t, key, axis, files, analysis, status)
        except Exception as e:  # the study's results stand without the tracker
            line = (f"warning: {name}: the analysis was not attached ({type(e).__name__}: {_first_line(e)}); the "
                    f"export is complete")
        print(line, flush=True)


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


def _mlflow_finish(t: Trackers, key: dict[str, str], axis: str | None, files: list[Path],
                   analysis: dict[str, Any] | None, status: str) -> str:
    study, run = key["study"], key["run"]
    client = _mlflow(t.tracking_uri)
    experiment = mlflow_experiment(client, study, t.artifact_location)
    found = mlflow_runs(client, experiment, key)
    parent = mlflow_parent(client, experiment, key, axis, found)
    for f in files:
        client.log_artifact(parent, str(f))
    for name, text in (verdict_texts(analysis) if analysis is not None else {}).items():
        client.log_text(parent, text, name)
    for r in found:  # trials a stop left open
        if r.data.tags.get(KIND) == "trial" and r.info.status == "RUNNING":
            client.set_terminated(r.info.run_id, "KILLED")
    client.set_tag(parent, "status", status)
    client.set_terminated(parent, MLFLOW_STATUS.get(status, "FINISHED"))
    if t.mlflow_uri:
        return f"logged to MLflow: experiment {study}, run {run}, at {t.mlflow_uri}"
    return (f"logged to MLflow: experiment {study}, run {run}; view: {_tool('mlflow')} ui --backend-store-uri "
            f"sqlite:///{portable_path(t.mlflow_db)}")


def _wandb_finish(t: Trackers, key: dict[str, str], axis: str | None, files: list[Path],
                  analysis: dict[str, Any] | None, status: str) -> str:
    import wandb

    study, run = key["study"], key["run"]
    started = re.sub(r"\D", "", key.get("started", ""))  # a run replaced by --overwrite: an analysis run of its own
    wb = wandb_init(t, study, run, id=wandb_id(study, run, "analysis", *([started] if started else [])),
                    name=f"{run} analysis",
                    group=f"{study}/{run}", job_type="analysis", tags=[f"study={study}", f"run={run}"[:64]],
                    config={"study": study, "run": run, "axis": axis})
    try:
        # The run's files/ folder (wb.dir) is what W&B uploads with the run, `wandb sync` included. Copied rather
        # than `run.save`d: run.save symlinks a file from outside the run and says so on the console.
        out = Path(wb.dir)
        for f in files:
            shutil.copy2(f, out / f.name)
        if analysis is not None:
            for name, text in verdict_texts(analysis).items():
                (out / name).write_text(text)
            columns, rows = verdict_rows(analysis)
            wb.log({VERDICT_TABLE: wandb.Table(columns=columns, data=rows)})
        wb.summary["status"] = status
    finally:
        wb.finish()
    if t.wandb_mode == "online":
        return f"logged to W&B: project {t.wandb_project}, group {study}/{run}"
    runs = portable_path(wandb_dir(t, study, run) / "wandb")
    return (f"logged to W&B offline: group {study}/{run}; upload to project {t.wandb_project}: {_tool('wandb')} sync "
            f"{runs}/offline-run-*")


def _tool(name: str) -> str:
    """The command of this environment's `name` (the venv's mlflow, which a plain `mlflow` on PATH may not be)."""
    return portable_path(Path(sys.executable).parent / name)
