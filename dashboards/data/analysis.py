"""A run's statistics (intervals, verdicts, importances): its analysis.json, or the same analysis computed here.

studies.analysis.analyze writes analysis.json at the end of a study (or `python -m studies.analyze <run>`). An
export without one (a study still running, or written before the analysis existed), with one that cannot
be read, or with one that no longer matches trials.csv's finished trials gets the analysis computed here by
the same function, `studies.analysis.analyze.analyze_run`, from trials.csv and whatever predictions/ holds; what
that cannot compute (no predictions: no image-level intervals) its `notes` say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dashboards.data.files import LoadError, read_json, read_trials, stamp
from dashboards.data.paths import display_path, shown
from studies.analysis.analyze import analyze_run
from studies.exports.evidence import number
from studies.exports.schema import (
    ANALYSIS_JSON,
    OPTUNA_JOURNAL,
    PREDICTIONS_DIR,
    REPORTED_METRIC,
    STUDY_JSON,
    TARGETS_FILE,
    TRIALS_CSV,
)

# The keys the views read; a file without one of them is of another schema.
ANALYSIS_REQUIRED = ("kind", "axis", "metric", "reference", "bootstrap", "trials", "arms", "comparisons", "notes")


@dataclass
class RunAnalysis:
    """What the statistics views show: `data` (analysis.json's content; None when it could not be had), where it
    came from (`source`: file, computed or none) and, when not from the file, why (`problem`: something is
    wrong with the file or the computation; `absent`: the export simply has none). What the analysis could not
    compute is in `data`'s notes (dashboards.shaping.stats.collect_notes lists them)."""

    data: dict[str, Any] | None
    source: str
    problem: str | None = None
    absent: bool = False
    command: str = ""  # the command that writes analysis.json for this run


def analysis_stamp(run_dir: str | Path, journal: str | None = None) -> tuple:
    """The cache key of a run's analysis: every file analyze_run reads (a new predictions file changes the
    folder's mtime; the export replaces files whole) and analysis.json."""
    d = Path(run_dir)
    return stamp(d / STUDY_JSON, d / TRIALS_CSV, d / ANALYSIS_JSON, d / PREDICTIONS_DIR,
                 d / PREDICTIONS_DIR / TARGETS_FILE, d / (journal or OPTUNA_JOURNAL))


def read_analysis(path: Path) -> dict[str, Any]:
    """analysis.json; LoadError when it is not valid JSON or not of the results schema."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise LoadError(path, f"must hold a JSON object, found {type(data).__name__}")
    absent = [k for k in ANALYSIS_REQUIRED if k not in data]
    if absent:
        raise LoadError(path, f"lacks the key(s) {', '.join(absent)}: not an analysis.json of the results schema")
    return data


def _finished(rows: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for r in rows:
        v = number(r.get("value"))
        if r.get("status") == "FINISHED" and v is not None:
            out[str(r.get("trial_id"))] = v
    return out


def mismatched_trials(analysis: dict[str, Any], trials: pd.DataFrame, metric: str = REPORTED_METRIC) -> list[str]:
    """The FINISHED trials on which analysis.json and trials.csv disagree: present in one only, or with another
    value of the analysed metric. Compared by content, not by mtime (a git checkout sets mtimes anew)."""
    rows = [{"trial_id": t.get("trial_id"), "status": t.get("status"), "value": t.get("mAP")}
            for t in analysis.get("trials") or [] if isinstance(t, dict)]
    ours = _finished(rows)
    if len(trials) and metric in trials:
        theirs = _finished([{"trial_id": r["trial_id"], "status": r["status"], "value": r[metric]}
                            for r in trials.to_dict("records")])
    else:
        theirs = {}
    return sorted(t for t in ours.keys() | theirs.keys()
                  if t not in ours or t not in theirs or not math.isclose(ours[t], theirs[t], abs_tol=1e-9))


def _trials(run_dir: Path) -> pd.DataFrame:
    try:
        return read_trials(run_dir / TRIALS_CSV)[0]
    except LoadError:
        return pd.DataFrame()


def load_analysis(run_dir: str | Path, axis: str | None = None) -> RunAnalysis:
    """The run's analysis: analysis.json when it is readable, of this study's kind and matches trials.csv;
    otherwise analyze_run's, with the reason in `problem` (or `absent`). `axis`: the study's (None: a joint
    search)."""
    run_dir = Path(run_dir)
    path = run_dir / ANALYSIS_JSON
    command = f"python -m studies.analyze {display_path(run_dir)}"
    problem, absent = None, not path.exists()
    if not absent:
        try:
            data = read_analysis(path)
            stale = mismatched_trials(data, _trials(run_dir), str(data.get("metric") or REPORTED_METRIC))
            if data.get("axis") != axis:
                problem = (f"{shown(path)} analyses axis {data.get('axis')!r} but study.json's is {axis!r}: "
                           f"computed here instead")
            elif stale:
                problem = (f"{shown(path)} does not match trials.csv: {len(stale)} finished trial(s) differ "
                           f"({', '.join(stale[:4])}{', ...' if len(stale) > 4 else ''}), e.g. trials that ended "
                           f"after it was written; computed here from the current files (`{command}` rewrites it)")
            else:
                return RunAnalysis(data, "file", command=command)
        except LoadError as e:
            problem = f"{shown(e.path)}: {e.message}; computed here instead (`{command}` rewrites it)"
    try:
        data = analyze_run(run_dir)
    except Exception as e:  # noqa: BLE001 - the charts must still draw whatever the files hold
        why = f"the analysis could not be computed from {shown(run_dir, 3)}: {type(e).__name__}: {e}"
        return RunAnalysis(None, "none", f"{problem}; {why}" if problem else why, absent, command)
    return RunAnalysis(data, "computed", problem, absent, command)

