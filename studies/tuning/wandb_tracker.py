"""The W&B tracker (`--log-to wandb`): offline unless --wandb-mode online (which needs a login); runs in
<results-dir>/wandb/<study>/<run>/, uploaded later by `wandb sync`. group "<study>/<run>", job_type "trial"; the
analysis is one more run in the group (job_type "analysis", `finish`). Every trial is its own Run object in the
driver (`wandb.init(reinit="create_new")`); a resumed study continues them by their run id (resume="allow").

Console: Settings(silent=True) drops W&B's banners and hints, and console="off" leaves the driver's stdout and
stderr unwrapped (W&B would copy them into every trial's run)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from studies.exports.files import portable_path
from studies.tuning.tracking import (
    MLFLOW_STATUS,
    PLACEMENT,
    VERDICT_TABLE,
    TrackerCallback,
    Trackers,
    tool,
    verdict_rows,
    verdict_texts,
)


def wandb_id(*parts: str) -> str:
    """A W&B run id (unique in the project, so it names the study and run): W&B refuses :;,#?/' and spaces."""
    return re.sub(r"[\s:;,#?/'\\]+", "-", "-".join(parts))[:128]


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


def finish(t: Trackers, key: dict[str, str], axis: str | None, files: list[Path],
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
    return (f"logged to W&B offline: group {study}/{run}; upload to project {t.wandb_project}: {tool('wandb')} sync "
            f"{runs}/offline-run-*")
