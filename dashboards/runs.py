"""Study runs: finding results/<study>/<run>/ folders, loading one, and summarising each for the run picker."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dashboards.files import LoadError, read_epochs, read_study_json, read_trials, stamp
from dashboards.fmt import fmt_num, fmt_seconds
from dashboards.paper import pretrain_name
from dashboards.paths import shown
from studies.schema import (
    EPOCH_COLUMNS,
    EPOCHS_CSV,
    PAPER_DIR,
    SCENES_DIR,
    STUDY_JSON,
    TERMINAL_TRIAL_STATUSES,
    TRIAL_REQUIRED,
    TRIALS_CSV,
)

# A RUNNING study whose folder has not changed for this long has probably crashed.
STALE_SECONDS = 2 * 3600


@dataclass
class Run:
    """One study run: results/<study>/<run>/."""

    path: Path
    meta: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    scene_files: dict[str, Path]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def study(self) -> str:
        return str(self.meta.get("study") or self.path.parent.name)

    @property
    def axis(self) -> str | None:
        return self.meta.get("axis") or None

    @property
    def status(self) -> str:
        return self.meta.get("status") or "UNKNOWN"

    @property
    def dataset(self) -> str:
        return str(self.meta.get("dataset") or (self.meta.get("base_config") or {}).get("dataset") or "unknown")

    @property
    def backbone(self) -> str | None:
        return self.meta.get("backbone") or (self.meta.get("base_config") or {}).get("backbone")

    @property
    def image_size(self) -> int | None:
        v = self.meta.get("image_size") or (self.meta.get("base_config") or {}).get("image_size")
        try:
            return int(v) if v is not None else None
        except (TypeError, ValueError):
            return None

    @property
    def paper_config(self) -> dict[str, Any]:
        return self.meta.get("paper_config") or {}

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.meta.get("class_names") or []]


def empty_table(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def run_stamp(run_dir: str | Path) -> tuple[tuple[str, int, int], ...]:
    """The cache key of a run's files: changes whenever the export rewrites one of them."""
    d = Path(run_dir)
    return stamp(d / STUDY_JSON, d / TRIALS_CSV, d / EPOCHS_CSV, d / SCENES_DIR)


def load_run(run_dir: str | Path, with_epochs: bool = True) -> Run:
    """Load results/<study>/<run>/. Raises LoadError only when study.json is missing or unusable;
    problems in the other files become `warnings`, files a RUNNING study has not written yet `notes`."""
    run_dir = Path(run_dir)
    meta, warnings = read_study_json(run_dir / STUDY_JSON)
    notes: list[str] = []
    tables = {}
    for fname, reader, columns in ((TRIALS_CSV, read_trials, TRIAL_REQUIRED), (EPOCHS_CSV, read_epochs, EPOCH_COLUMNS)):
        path = run_dir / fname
        if fname == EPOCHS_CSV and not with_epochs:
            tables[fname] = empty_table(columns)
            continue
        try:
            tables[fname], w = reader(path)
            warnings.extend(w)
        except LoadError as e:
            tables[fname] = empty_table(columns)
            if meta["status"] == "RUNNING" and not path.exists():
                notes.append(f"{shown(path)} does not exist yet: the study is RUNNING and no trial has reported")
            else:
                warnings.append(f"{shown(path)}: {e.message}")
    trials = tables[TRIALS_CSV]
    axis = meta.get("axis")
    if axis and len(trials) and axis not in trials.columns:
        warnings.append(f"{shown(run_dir / TRIALS_CSV)}: no column for the swept field {axis!r}")
    scenes_dir = run_dir / SCENES_DIR
    scene_files = {p.stem: p for p in sorted(scenes_dir.glob("*.json"))} if scenes_dir.is_dir() else {}
    return Run(run_dir, meta, trials, tables[EPOCHS_CSV], scene_files, warnings, notes)


def status_notes(run: Run, now: float | None = None) -> list[str]:
    """What a RUNNING study's page should say, as of `now`: partial results, or a probable crash.

    Kept out of `load_run` because it depends on the clock, not only on the files (a cached run stays
    valid while its files do not change, but it goes stale with time)."""
    if run.status != "RUNNING":
        return []
    m = run.meta
    n_done, n_all = m.get("n_finished"), m.get("n_trials")
    notes = [f"{shown(run.path / STUDY_JSON)} says RUNNING ({n_done if n_done is not None else '?'} of "
             f"{n_all if n_all is not None else '?'} trials finished): what you see is what has been exported so "
             f"far; reload to refresh."]
    newest = max((p.stat().st_mtime for p in run.path.rglob("*") if p.is_file()), default=None)
    now = time.time() if now is None else now
    if newest is not None and now - newest > STALE_SECONDS:
        notes.append(f"Nothing in {shown(run.path, 3)} changed for {(now - newest) / 3600:.1f} h although it says "
                     f"RUNNING: the study may have crashed (re-run it with --resume to finish it).")
    return notes


# ---------------------------------------------------------------------------------------------
# Summaries


@dataclass
class RunSummary:
    """One line of the run picker."""

    key: str
    path: Path
    study: str
    run: str
    status: str
    dataset: str
    backbone: str | None
    image_size: int | None
    axis: str | None
    n_trials: int | None
    n_finished: int
    best_value: float | None
    best_metric: str
    best_trial: dict[str, Any] | None
    device: str | None
    trial_seconds_total: float | None
    wall_seconds: float | None
    started: str | None
    pretrain: str | None
    sort_time: float = 0.0  # `started` as a timestamp (study.json's mtime when absent): the picker's order
    warnings: list[str] = field(default_factory=list)

    def label(self) -> str:
        best = f"best {fmt_num(self.best_value)}" if self.best_value is not None else "no result yet"
        n = f"{self.n_finished}/{self.n_trials}" if self.n_trials is not None else f"{self.n_finished}"
        return (f"{self.key} · {self.status} · {n} trials · {best} · {self.device or '?'} · "
                f"{fmt_seconds(self.trial_seconds_total)}")


def best_metric_column(trials: pd.DataFrame) -> str:
    """The paper picks the best EMA-model epoch, so prefer best_mAP_ema when the export has it."""
    if "best_mAP_ema" in trials and pd.to_numeric(trials["best_mAP_ema"], errors="coerce").notna().any():
        return "best_mAP_ema"
    return "best_mAP"


def best_trial(trials: pd.DataFrame) -> tuple[float | None, str, dict[str, Any] | None]:
    """(best value, the column it came from, that trial's row) over trials that have a value."""
    col = best_metric_column(trials)
    if col not in trials or not len(trials):
        return None, col, None
    vals = pd.to_numeric(trials[col], errors="coerce")
    if not vals.notna().any():
        return None, col, None
    i = int(vals.idxmax())
    return float(vals[i]), col, trials.loc[i].to_dict()


def _sort_time(run: Run, warnings: list[str]) -> float:
    started = run.meta.get("started")
    if started:
        try:
            return datetime.fromisoformat(str(started).replace("Z", "+00:00")).timestamp()
        except ValueError:
            warnings.append(f"{shown(run.path / STUDY_JSON)}: started = {started!r} is not an ISO 8601 time")
    try:
        return (run.path / STUDY_JSON).stat().st_mtime
    except OSError:
        return 0.0


def summarize(run: Run) -> RunSummary:
    m = run.meta
    value, col, row = best_trial(run.trials)
    total = m.get("trial_seconds_total")
    if not isinstance(total, (int, float)) and "seconds" in run.trials and len(run.trials):
        total = float(pd.to_numeric(run.trials["seconds"], errors="coerce").sum())
    # "Finished" as studies/export.py counts it in study.json: trials that ended, whatever the outcome.
    n_finished = m.get("n_finished")
    if not isinstance(n_finished, int):
        n_finished = int(run.trials["status"].isin(TERMINAL_TRIAL_STATUSES).sum()) if len(run.trials) else 0
    n_trials = m.get("n_trials") if isinstance(m.get("n_trials"), int) else (len(run.trials) or None)
    device = m.get("device")
    if not device and "device" in run.trials and run.trials["device"].notna().any():
        device = str(run.trials["device"].dropna().iloc[0])
    weights = (m.get("base_config") or {}).get("backbone_weights", "IMAGENET1K_V1")
    warnings = list(run.warnings)
    return RunSummary(run.key, run.path, run.study, str(m.get("run") or run.path.name), run.status, run.dataset,
                      run.backbone, run.image_size, run.axis, n_trials, n_finished, value, col, row, device,
                      float(total) if isinstance(total, (int, float)) else None,
                      m.get("wall_seconds") if isinstance(m.get("wall_seconds"), (int, float)) else None,
                      m.get("started"), pretrain_name(weights), _sort_time(run, warnings), warnings)


def summarize_dir(run_dir: Path) -> RunSummary:
    """The summary of one run folder (trials only; epochs are not needed to list it)."""
    return summarize(load_run(run_dir, with_epochs=False))


# ---------------------------------------------------------------------------------------------
# Listing


def find_runs(root: str | Path) -> tuple[list[Path], list[str]]:
    """Every results/<study>/<run>/ folder with a study.json, and messages about folders that have none.
    Raises LoadError when `root` itself is missing or not a folder."""
    root = Path(root)
    if not root.exists():
        raise LoadError(root, "the results folder does not exist (set it in the sidebar or with $SALGL_RESULTS_DIR)")
    if not root.is_dir():
        raise LoadError(root, "is not a folder")
    found, warnings = [], []
    for study_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if study_dir.name == PAPER_DIR or study_dir.name.startswith((".", "_")):
            continue
        for run_dir in sorted(p for p in study_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            if (run_dir / STUDY_JSON).exists():
                found.append(run_dir)
                continue
            present = [f for f in (TRIALS_CSV, EPOCHS_CSV) if (run_dir / f).exists()]
            what = f"has {' and '.join(present)} but" if present else "has"
            warnings.append(f"{shown(run_dir, 3)} {what} no study.json; skipped (a study export always writes "
                            f"study.json first)")
    return found, warnings


def list_runs(root: str | Path, summarize_run: Callable[[Path], RunSummary] = summarize_dir,
              ) -> tuple[list[RunSummary], list[str]]:
    """Every run under `root`, newest first, and messages about what could not be listed.

    `summarize_run` turns one run folder into its summary (the app passes a cached one)."""
    dirs, warnings = find_runs(root)
    runs = []
    for d in dirs:
        try:
            runs.append(summarize_run(d))
        except LoadError as e:
            warnings.append(f"{shown(e.path)}: {e.message}; run skipped")
    runs.sort(key=lambda s: (s.sort_time, s.key), reverse=True)
    return runs, warnings
