"""The notebook API: one study export as pandas tables, and the dashboard's own figures of it.

    from dashboards.api import load_run
    run = load_run("results/scene_count/default")
    run.trials, run.epochs, run.comparisons, run.intervals, run.scenes   # DataFrames
    run.ablation_figure(), run.forest_figure(), run.learning_curves_figure()   # plotly figures
    print(run.table("latex"))   # the verdict table, as `python -m studies.analyze RUN --format latex` prints it

The export is read by the dashboard's readers (dashboards.data: runs.load_run, analysis.load_analysis,
files.load_scene, paper.load_paper_tables) and each figure is drawn by the function the dashboard calls, from the
inputs dashboards/ui/views.py and dashboards/ui/stats.py give it, so a notebook shows the dashboard's figure.
Never imports Streamlit (the dashboards-streamlit import contract in pyproject.toml).
"""

from __future__ import annotations

import math
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from dashboards.charts import figures
from dashboards.charts import stats as stats_figures
from dashboards.data import runs
from dashboards.data.analysis import RunAnalysis, load_analysis
from dashboards.data.files import LoadError, SceneData, load_scene
from dashboards.data.paper import PaperTables, load_paper_tables
from dashboards.data.paths import shown
from dashboards.shaping import stats, texts, trials
from studies.analysis.tables import format_verdict_table
from studies.exports.schema import (
    ANALYSIS_JSON,
    COMPARISON_COLUMNS,
    COMPARISONS_CSV,
    EPOCHS_CSV,
    PREDICTIONS_DIR,
    REPORTED_METRIC,
    SCENES_DIR,
    STUDY_JSON,
    TRIALS_CSV,
)

__all__ = ["LoadError", "StudyExport", "load_run"]

EXPECTED = (STUDY_JSON, TRIALS_CSV, EPOCHS_CSV)
OPTIONAL = (ANALYSIS_JSON, COMPARISONS_CSV, f"{SCENES_DIR}/", f"{PREDICTIONS_DIR}/")
# The learning curves the dashboard draws before the user picks trials (dashboards/ui/views.py curves_view).
DEFAULT_CURVES = 6
SCENE_COLUMNS = ("trial_id", "scene", "usage", "images", "true_scene", "purity", "true_scene_nmi")


class ExportWarning(UserWarning):
    """A problem with one of the export's files that the dashboard would show as a warning."""


def _exports_below(path: Path) -> list[str]:
    """Export folders one or two levels below `path` (a study folder, or the results folder)."""
    found = sorted({p.parent for pattern in (f"*/{STUDY_JSON}", f"*/*/{STUDY_JSON}") for p in path.glob(pattern)})
    return [str(p) for p in found]


def _not_an_export(path: Path) -> LoadError:
    below = _exports_below(path) if path.is_dir() else []
    hint = (f"; it holds exports, e.g. {', '.join(below[:3])}{' ...' if len(below) > 3 else ''}" if below else
            "; pass a results/<study>/<run>/ folder as a study writes it")
    what = "does not exist" if not path.exists() else "is not a folder" if not path.is_dir() else \
        "is not a study export"
    return LoadError(path, f"{what}: expected a folder holding {', '.join(EXPECTED)} (and optionally "
                           f"{', '.join(OPTIONAL)}){hint}")


def load_run(path: str | Path) -> StudyExport:
    """The study export in `path` (results/<study>/<run>/). Raises LoadError, one line saying what was expected,
    when `path` is no export or its study.json cannot be read; problems with the other files become
    ExportWarnings (and `warnings`), as the dashboard shows them."""
    path = Path(path)
    if not (path / STUDY_JSON).is_file():
        raise _not_an_export(path)
    export = StudyExport(runs.load_run(path))
    for w in export.warnings:
        warnings.warn(w, ExportWarning, stacklevel=2)
    return export


class StudyExport:
    """A loaded study export: its tables as DataFrames and the dashboard's figures as methods."""

    def __init__(self, run: runs.Run, paper: PaperTables | None = None) -> None:
        self.run = run  # the dashboard's loaded run (dashboards.data.runs.Run)
        self._paper = paper

    def __repr__(self) -> str:
        kind = f"{self.axis} ablation" if self.axis else "joint search"
        return f"<StudyExport {self.run.key}: {kind}, {len(self.trials)} trials, {self.run.status}>"

    # --- what the export holds ---------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def meta(self) -> dict[str, Any]:
        """study.json, with every schema key present."""
        return self.run.meta

    @property
    def axis(self) -> str | None:
        return self.run.axis

    @property
    def trials(self) -> pd.DataFrame:
        """trials.csv: one row per trial."""
        return self.run.trials

    @property
    def epochs(self) -> pd.DataFrame:
        """epochs.csv: one row per trial and epoch."""
        return self.run.epochs

    @cached_property
    def analysis(self) -> RunAnalysis:
        """The run's statistics as the dashboard gets them: analysis.json when it matches trials.csv, else
        computed from the export (`source` says which, `problem` why)."""
        res = load_analysis(self.path, self.axis)
        if res.problem:
            warnings.warn(res.problem, ExportWarning, stacklevel=3)
        return res

    @property
    def warnings(self) -> list[str]:
        """What is wrong with the export's files (the dashboard's warnings), analysis.json's problem included
        once it has been read."""
        problem = self.__dict__.get("analysis")
        return [*self.run.warnings, *([problem.problem] if problem is not None and problem.problem else [])]

    def _analysis_data(self) -> dict[str, Any]:
        data = self.analysis.data
        if data is None:
            raise ValueError(f"{shown(self.path, 3)} has no analysis: {self.analysis.problem}")
        return data

    @property
    def comparisons(self) -> pd.DataFrame:
        """Each arm against the reference arm: the comparisons.csv columns (an empty table for a joint search)."""
        return pd.DataFrame(self._analysis_data().get("comparisons") or [], columns=list(COMPARISON_COLUMNS))

    @property
    def verdicts(self) -> pd.DataFrame:
        """The dashboard's verdict table: every arm, the reference starred."""
        return stats.verdict_table(self._analysis_data())

    @property
    def arms(self) -> pd.DataFrame:
        """Each arm's mean over seeds and its 95% interval: value, n, mean, ci_low, ci_high."""
        return stats.arm_intervals(self._analysis_data())

    @property
    def intervals(self) -> pd.DataFrame:
        """Each trial's image-bootstrap 95% interval: trial_id, mAP_predictions, ci_low, ci_high (NaN: no
        predictions)."""
        return stats.trial_intervals(self._analysis_data())

    def table(self, fmt: str = "markdown") -> str:
        """The verdict table as LaTeX (`latex`) or a GitHub Markdown table (`markdown`)."""
        return format_verdict_table(self._analysis_data(), fmt)

    def scene(self, trial_id: str) -> SceneData:
        """scenes/<trial_id>.json, as the dashboard's scene view reads it."""
        if trial_id not in self.run.scene_files:
            raise KeyError(f"{shown(self.path / SCENES_DIR, 4)} has no {trial_id}.json (it has "
                           f"{len(self.run.scene_files)} trial file(s))")
        return load_scene(self.run.scene_files[trial_id], self.run.class_names)

    @cached_property
    def scenes(self) -> pd.DataFrame:
        """One row per trial and learned scene, from scenes/: `usage` (the fraction of validation images whose
        most likely scene it is) and, on synthetic data, `images` (how many), `true_scene` (the true scene most
        of them come from), `purity` (their fraction from it) and the trial's `true_scene_nmi`."""
        rows = []
        for tid in self.run.scene_files:
            try:
                s = self.scene(tid)
            except LoadError as e:
                warnings.warn(f"{shown(e.path)}: {e.message}; left out of `scenes`", ExportWarning, stacklevel=2)
                continue
            for k in range(s.num_scenes):
                images = s.contingency[k] if s.contingency is not None else None
                total = float(images.sum()) if images is not None else math.nan
                rows.append({"trial_id": s.trial_id, "scene": k, "usage": float(s.usage[k]), "images": total,
                             "true_scene": int(images.argmax()) if total > 0 else None,
                             "purity": float(images.max() / total) if total > 0 else math.nan,
                             "true_scene_nmi": math.nan if s.nmi is None else s.nmi})
        return pd.DataFrame(rows, columns=list(SCENE_COLUMNS))

    # --- the dashboard's figures -------------------------------------------------------------------------------

    @property
    def paper(self) -> PaperTables:
        """The paper's tables (results/paper), as the dashboard loads them."""
        if self._paper is None:
            self._paper = load_paper_tables()
        return self._paper

    def ablation_figure(self, metric: str = REPORTED_METRIC) -> go.Figure:
        """The ablation tab's chart: `metric` against the swept value, a point per trial, the arms' means and
        intervals, the paper's number where it has one."""
        run, axis = self.run, self.axis
        if not axis:
            raise ValueError(f"{run.key} is a joint search (no swept axis): it has no ablation plot")
        if axis not in run.trials or metric not in run.trials:
            raise ValueError(f"{shown(self.path / TRIALS_CSV)} has no {axis if axis not in run.trials else metric} "
                             f"column: nothing to plot")
        plot = stats.ablation_plot(run, self.paper, metric, self.analysis.data)
        return figures.ablation_plot_figure(plot, axis, metric)

    def forest_figure(self) -> go.Figure:
        """The ablation tab's forest plot: each arm's difference to the reference arm with its 95% interval."""
        points = stats.forest_points(self._analysis_data())
        if not len(points):
            raise ValueError(texts.NO_FOREST)
        return stats_figures.forest_figure(points, self.axis or "")

    def learning_curves_figure(self, trial_ids: list[str] | None = None) -> go.Figure:
        """The learning-curves tab's chart of `trial_ids` (default: the dashboard's, the paper's configuration
        first, at most six), with the published COCO reproduction's curve on a COCO run."""
        ep = self.epochs
        if not len(ep):
            raise ValueError(f"{shown(self.path / EPOCHS_CSV)} has no rows")
        ids, labels, preferred = trials.trial_choices(self.run, ep["trial_id"])
        chosen = list(trial_ids) if trial_ids is not None else preferred[:DEFAULT_CURVES]
        unknown = [t for t in chosen if t not in labels]
        if unknown:
            raise ValueError(f"no epochs in {shown(self.path / EPOCHS_CSV)} for trial(s) {', '.join(unknown)} "
                             f"(it has {', '.join(ids)})")
        return figures.learning_curves_figure(ep, chosen, labels, trials.reference_curve(self.run, self.paper))
