"""The MLflow tracker (`--log-to mlflow`): one experiment per study; per study run a parent run (tag kind=study)
whose children (tag mlflow.parentRunId, kind=trial) are the trials, and which gets the analysis when the study
ends (`finish`). The default store is local: sqlite:///<results-dir>/mlflow/mlflow.db, artifacts in
<results-dir>/mlflow/artifacts (MLflow 3.17 refuses its file store ./mlruns unless MLFLOW_ALLOW_FILE_STORE is set,
and an experiment created without `artifact_location` keeps its artifacts in ./mlruns of the current folder).
--mlflow-uri names another store or a tracking server. A resumed study finds its runs again by their tags
(`study_key` and the trial id).

Console: MLflow logs INFO lines ("Creating initial MLflow database tables...") through its "mlflow" logger, which
it sets up when imported (alembic's it already keeps at WARNING): `open_client` raises it to WARNING."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from studies.exports.files import portable_path
from studies.tuning.tracking import (
    MLFLOW_STATUS,
    PLACEMENT,
    TrackerCallback,
    Trackers,
    tool,
    verdict_texts,
)

# The tag telling a study run's parent run from its trials' runs, and MLflow's own tag that nests a run under
# another (mlflow.utils.mlflow_tags.MLFLOW_PARENT_RUN_ID).
KIND = "kind"
MLFLOW_PARENT = "mlflow.parentRunId"


def open_client(uri: str) -> Any:
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
        self._client = open_client(self.trackers.tracking_uri)
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


def finish(t: Trackers, key: dict[str, str], axis: str | None, files: list[Path],
           analysis: dict[str, Any] | None, status: str) -> str:
    study, run = key["study"], key["run"]
    client = open_client(t.tracking_uri)
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
    return (f"logged to MLflow: experiment {study}, run {run}; view: {tool('mlflow')} ui --backend-store-uri "
            f"sqlite:///{portable_path(t.mlflow_db)}")
