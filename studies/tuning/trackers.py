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

Here: the checks before Ray starts (`check`), the callbacks of the --log-to trackers (`callbacks`) and the end of
a study (`finish_study`). What both trackers share: studies/tuning/tracking.py; each tracker, and how its console
lines are silenced (the terminal of a study holds only its own lines): mlflow_tracker.py, wandb_tracker.py.
"""

from __future__ import annotations

import importlib
import json
import netrc
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from studies.design.spec import StudyError
from studies.exports.schema import ANALYSIS_JSON, COMPARISONS_CSV, STUDY_JSON
from studies.tuning import mlflow_tracker, wandb_tracker
from studies.tuning.tracking import TrackerCallback, Trackers, first_line, study_key

INSTALL = "pip install -e '.[trackers]'"
# How long --mlflow-uri http://... may take to answer before the study refuses to start.
CONNECT_TIMEOUT_S = 5.0


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
            raise StudyError(f"--log-to {name}: `import {name}` fails ({type(e).__name__}: {first_line(e)}); "
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
        mlflow_tracker.open_client(uri).search_experiments(max_results=1)
    except Exception as e:  # whatever the store's complaint, it is one line naming the URI
        raise StudyError(f"--mlflow-uri {uri} cannot be opened: {first_line(e)}") from None


def wandb_logged_in() -> bool:
    """W&B's own two ways to hold a login: WANDB_API_KEY, or an entry for its host in ~/.netrc (`wandb login`)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


CALLBACKS: dict[str, type[TrackerCallback]] = {"mlflow": mlflow_tracker.MlflowCallback,
                                                "wandb": wandb_tracker.WandbCallback}


def callbacks(t: Trackers, study: str, run: str, axis: str | None, meta: dict[str, Any]) -> list[TrackerCallback]:
    """The Tune callbacks of the --log-to trackers (none without the flag)."""
    return [CALLBACKS[name](t, study, run, axis, meta) for name in t.log_to]


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
        attach = mlflow_tracker.finish if name == "mlflow" else wandb_tracker.finish
        try:
            line = attach(t, key, axis, files, analysis, status)
        except Exception as e:  # the study's results stand without the tracker
            line = (f"warning: {name}: the analysis was not attached ({type(e).__name__}: {first_line(e)}); the "
                    f"export is complete")
        print(line, flush=True)
