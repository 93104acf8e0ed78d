"""Study runs: finding <root>/<study>/<run>/ folders in the results folders, loading one, counting its trials
and summarising each for the run picker."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dashboards.data.files import LoadError, read_epochs, read_study_json, read_trials, stamp
from dashboards.data.paper import run_pretrain
from dashboards.data.paths import display_path, shown
from studies.exports.schema import (
    EPOCH_COLUMNS,
    EPOCHS_CSV,
    PAPER_DIR,
    REPORTED_METRIC,
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
        """<study>/<run>: how titles name it (two results folders can each hold one of that name)."""
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def uid(self) -> str:
        """The run folder as the dashboard shows it (e.g. runs/scene_count/r1): unique across results folders."""
        return display_path(self.path)

    @property
    def study(self) -> str:
        return str(self.meta.get("study") or self.path.parent.name)

    @property
    def axis(self) -> str | None:
        return self.meta.get("axis") or None

    @property
    def arms(self) -> dict[str, Any] | None:
        """A study of named arms' {arm: config fields} (study.json `arms`), in the order to show them; else None."""
        arms = self.meta.get("arms")
        return arms if isinstance(arms, dict) and arms else None

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
    claimed, ended = meta.get("n_finished"), count_ended(trials)
    if isinstance(claimed, int) and ended < claimed and (run_dir / TRIALS_CSV).exists():
        # The export counts n_finished from the rows it has just written, so fewer ended rows than that
        # means the file lost rows after it was written.
        warnings.append(f"{shown(run_dir / TRIALS_CSV)}: holds {ended} ended trial(s) where study.json says "
                        f"{claimed} ended: the file is incomplete (cut short, or an older copy); the counts and "
                        f"charts show what it holds")
    axis = meta.get("axis")
    if axis and len(trials) and axis not in trials.columns:
        warnings.append(f"{shown(run_dir / TRIALS_CSV)}: no column for the swept field {axis!r}")
    scenes_dir = run_dir / SCENES_DIR
    scene_files = {p.stem: p for p in sorted(scenes_dir.glob("*.json"))} if scenes_dir.is_dir() else {}
    return Run(run_dir, meta, trials, tables[EPOCHS_CSV], scene_files, warnings, notes)


def file_warnings(run: Run, fname: str) -> list[str]:
    """The run's warnings about one of its files (every message starts with the file's shown name)."""
    prefix = shown(run.path / fname)
    return [w for w in run.warnings if w.startswith(prefix)]


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


def count_ended(trials: pd.DataFrame) -> int:
    """Trials that ended, whatever the outcome (as studies/exports/writer.py counts n_finished)."""
    return int(trials["status"].isin(TERMINAL_TRIAL_STATUSES).sum()) if len(trials) else 0


@dataclass(frozen=True)
class TrialCounts:
    """A run's trial counts, from trials.csv as it was read; only `planned` comes from study.json."""

    read: int            # rows in trials.csv
    ended: int           # of which ended (FINISHED, STOPPED, ERROR, DIVERGED)
    with_value: int      # of which have a value of the reported metric (the points the ablation chart draws)
    planned: int | None  # study.json's n_trials (None where absent)


def trial_counts(run: Run, metric: str = REPORTED_METRIC) -> TrialCounts:
    t = run.trials
    values = pd.to_numeric(t[metric], errors="coerce") if metric in t else pd.Series(dtype=float)
    planned = run.meta.get("n_trials")
    return TrialCounts(len(t), count_ended(t), int(values.notna().sum()),
                       planned if isinstance(planned, int) and not isinstance(planned, bool) else None)


@dataclass
class RunSummary:
    """What the run picker shows of a run (dashboards.shaping.summaries.run_label words it)."""

    key: str
    path: Path
    root: Path | None  # the results folder it was listed from
    study: str
    run: str
    status: str
    dataset: str
    backbone: str | None
    image_size: int | None
    axis: str | None
    counts: TrialCounts
    best_value: float | None  # the best trial's REPORTED_METRIC
    best_trial: dict[str, Any] | None
    device: str | None
    trial_seconds_total: float | None
    wall_seconds: float | None
    started: str | None
    pretrain: str | None
    sort_time: float = 0.0  # `started` as a timestamp (study.json's mtime when absent): the picker's order
    warnings: list[str] = field(default_factory=list)

    @property
    def uid(self) -> str:
        return display_path(self.path)

    @property
    def where(self) -> str:
        """The results folder it came from, as the sidebar names it."""
        return display_path(self.root) if self.root is not None else display_path(self.path.parents[1])

    @property
    def n_finished(self) -> int:
        return self.counts.ended

    @property
    def n_trials(self) -> int | None:
        return self.counts.planned

    def trials_text(self) -> str:
        return f"{self.n_finished}/{self.n_trials if self.n_trials is not None else '?'}"


def best_trial(trials: pd.DataFrame, metric: str = REPORTED_METRIC) -> tuple[float | None, dict[str, Any] | None]:
    """(best value, that trial's row) of `metric` over trials that have a value. No fallback to another
    metric: a run without the reported number shows none, rather than a different number under its name."""
    if metric not in trials or not len(trials):
        return None, None
    vals = pd.to_numeric(trials[metric], errors="coerce")
    if not vals.notna().any():
        return None, None
    i = int(vals.idxmax())
    return float(vals[i]), trials.loc[i].to_dict()


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


def summarize(run: Run, root: Path | None = None) -> RunSummary:
    m = run.meta
    value, row = best_trial(run.trials)
    total = m.get("trial_seconds_total")
    if not isinstance(total, (int, float)) and "seconds" in run.trials and len(run.trials):
        total = float(pd.to_numeric(run.trials["seconds"], errors="coerce").sum())
    device = m.get("device")
    if not device and "device" in run.trials and run.trials["device"].notna().any():
        device = str(run.trials["device"].dropna().iloc[0])
    warnings = list(run.warnings)
    return RunSummary(run.key, run.path, root, run.study, str(m.get("run") or run.path.name), run.status,
                      run.dataset, run.backbone, run.image_size, run.axis, trial_counts(run), value, row, device,
                      float(total) if isinstance(total, (int, float)) else None,
                      m.get("wall_seconds") if isinstance(m.get("wall_seconds"), (int, float)) else None,
                      m.get("started"), run_pretrain(m.get("base_config")), _sort_time(run, warnings), warnings)


def summarize_dir(run_dir: Path, root: Path | None = None) -> RunSummary:
    """The summary of one run folder (trials only; epochs are not needed to list it)."""
    return summarize(load_run(run_dir, with_epochs=False), root)


# ---------------------------------------------------------------------------------------------
# Listing


def find_runs(root: str | Path) -> tuple[list[Path], list[str]]:
    """Every <root>/<study>/<run>/ folder with a study.json, and messages about folders that look like a
    study export but have none. Raises LoadError when `root` itself is missing or not a folder."""
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
            # Only trials.csv marks a study export: runs/ also holds single training runs (epochs.csv,
            # checkpoints), which are not studies and not worth a warning.
            present = [f for f in (TRIALS_CSV, EPOCHS_CSV) if (run_dir / f).exists()]
            if TRIALS_CSV in present:
                warnings.append(f"{shown(run_dir, 3)} has {' and '.join(present)} but no study.json; skipped "
                                f"(a study export always writes study.json first)")
    return found, warnings


@dataclass
class Listing:
    """The runs of every results folder, newest first, and what could not be listed."""

    runs: list[RunSummary]
    warnings: list[str]
    roots: list[Path]
    absent: list[Path]  # folders that do not exist (yet)

    def count(self, root: Path) -> int:
        return sum(s.root == root for s in self.runs)


def list_runs(roots: str | Path | Sequence[str | Path],
              summarize_run: Callable[[Path, Path], RunSummary] = summarize_dir,
              may_be_absent: Sequence[str | Path] = ()) -> Listing:
    """Every run under each of `roots`, newest first, and messages about what could not be listed.

    `summarize_run(run_dir, root)` turns one run folder into its summary (the app passes a cached one). A
    root in `may_be_absent` (the git-ignored runs/, created by the first study) is skipped quietly when it
    does not exist; another missing root is a warning. Raises LoadError when no root can be listed at all.
    """
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    quiet = {Path(p) for p in may_be_absent}
    runs, warnings, absent, errors = [], [], [], []
    listed = 0
    for root in roots:
        try:
            dirs, w = find_runs(root)
            listed += 1
        except LoadError as e:
            if not root.exists():
                absent.append(root)
            if root not in quiet or root.exists():
                errors.append(e)
            continue
        warnings.extend(w)
        for d in dirs:
            try:
                runs.append(summarize_run(d, root))
            except LoadError as e:
                warnings.append(f"{shown(e.path)}: {e.message}; run skipped")
    if errors and not listed:
        raise errors[0]
    warnings = [f"{display_path(e.path)}: {e.message}" for e in errors] + warnings
    runs.sort(key=lambda s: (s.sort_time, s.key, s.uid), reverse=True)
    return Listing(runs, warnings, roots, absent)
