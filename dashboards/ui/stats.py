"""The dashboard's statistics sections (Streamlit layout only): the verdict table and the forest plot of an
ablation, the importances and parallel coordinates of a joint search, and what the analysis could not compute.

The numbers are analysis.json's (dashboards/data/analysis.py reads it, or computes it with
studies.analysis.analyze where the export has none); dashboards/shaping/stats.py shapes them,
dashboards/charts/stats.py draws them, dashboards/shaping/texts.py words them; studies/analysis/tables.py writes the
verdict table's LaTeX and Markdown downloads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from dashboards.charts import stats as stats_figures
from dashboards.data import analysis
from dashboards.data.paths import shown
from dashboards.data.runs import Run
from dashboards.shaping import stats, texts
from dashboards.shaping.fmt import fmt_value
from dashboards.ui.widgets import table
from studies.analysis import tables


# Computed at most once per version of the files: on a full validation set the image bootstrap takes seconds per
# trial (`python -m studies.analyze <run>` saves the result as analysis.json, which is then read instead).
@st.cache_data(show_spinner="No usable analysis.json: computing the intervals and verdicts from trials.csv and "
                            "predictions/ (once; seconds per trial on a large validation set) ...", max_entries=32)
def cached_analysis(run_dir: str, axis: str | None, files: tuple) -> analysis.RunAnalysis:
    return analysis.load_analysis(Path(run_dir), axis)


def run_analysis(run: Run) -> analysis.RunAnalysis:
    """The run's analysis, recomputed only when one of the files it depends on changes."""
    journal = run.meta.get("optuna_storage")
    return cached_analysis(str(run.path), run.axis, analysis.analysis_stamp(run.path, journal))


def _source(res: analysis.RunAnalysis) -> None:
    """Where the numbers come from, what is wrong with analysis.json, and what could not be computed."""
    if res.problem:
        st.warning(res.problem)
    if res.data is None:
        return
    st.caption(texts.analysis_source(res.source, res.absent, stats.bootstrap_text(res.data), res.command,
                                     stats.has_predictions(res.data)))
    if not stats.has_predictions(res.data):
        st.info(texts.NO_PREDICTIONS)
    notes = stats.collect_notes(res.data)
    if notes:
        with st.expander(f"What the analysis could not compute ({len(notes)})",
                         expanded=not stats.has_predictions(res.data)):
            st.markdown("\n".join(f"- {n}" for n in notes))


def verdict_section(run: Run, res: analysis.RunAnalysis, metric: str) -> None:
    """The verdict table (every arm against the reference), above the charts."""
    data = res.data
    if data is None:
        _source(res)
        return
    heading = texts.verdict_heading(run.axis or "", fmt_value(data.get("reference")), run.dataset == "synthetic",
                                    str(data.get("metric")), arms=run.arms is not None)
    st.markdown(f"**{heading}**")
    _source(res)
    if data.get("metric") != metric:
        st.caption(texts.metric_note(metric, str(data.get("metric"))))
    verdicts = stats.verdict_table(data)
    if len(verdicts):
        # A static table: it wraps the verdicts, which are sentences.
        st.table(stats.verdict_display(verdicts))
        st.caption(texts.VERDICT_CAPTION)
        _table_downloads(run, data)
    budget = data.get("budget")
    if isinstance(budget, dict) and budget.get("verdict"):
        # A curve still climbing at the last epoch makes every verdict provisional: say so beside them.
        (st.info if budget.get("flat") is False else st.caption)(f"Training budget: {budget['verdict']}.")


def _table_downloads(run: Run, data: dict) -> None:
    """The verdict table for a paper, one button per format (what `python -m studies.analyze RUN --format` prints)."""
    cols = st.columns(4)  # the buttons side by side, each a quarter of the page wide
    for col, (fmt, name) in zip(cols, tables.FORMATS.items(), strict=False):
        col.download_button(f"Download the table ({name})", tables.format_verdict_table(data, fmt),
                            file_name=f"{run.study}_{run.path.name}_verdicts.{tables.EXTENSIONS[fmt]}",
                            mime=tables.MIME_TYPES[fmt], key=f"download_verdicts_{fmt}")


def forest_chart(run: Run, res: analysis.RunAnalysis) -> None:
    """Each arm's difference to the reference arm with its interval, coloured by verdict."""
    data = res.data
    if data is None:
        return
    points = stats.forest_points(data)
    if not len(points):
        st.info(texts.NO_FOREST)
        return
    axis = run.axis or ""
    reference = (f"{axis} = {fmt_value(data.get('reference'))}, the "
                 f"{texts.reference_name(run.dataset == 'synthetic', run.arms is not None)}")
    fig = stats_figures.forest_figure(points, axis)  # the axis's field name, as the verdict table heads it
    st.plotly_chart(fig, width="stretch", key="forest_chart")
    st.caption(texts.forest_caption(reference, list(dict.fromkeys(points["interval"]))))


def search_section(run: Run, params: Sequence[str], metric: str, log_params: Sequence[str]) -> None:
    """A joint search's parameter importances, its parallel coordinates, and its best trial beside the paper's."""
    res = run_analysis(run)
    st.subheader("Parameter importances and parallel coordinates")
    if res.problem:
        st.warning(res.problem)
    data = res.data or {}
    imp = stats.importances(data)
    left, right = st.columns([2, 3])
    with left:
        if len(imp):
            st.plotly_chart(stats_figures.importance_figure(imp), width="stretch", key="importance_chart")
            st.caption(texts.IMPORTANCE_CAPTION)
        else:
            st.info(texts.no_importances(stats.collect_notes(res.data)))
    with right:
        dims, _ = stats.parallel_dimensions(run.trials, params, metric, texts.short_metric_label(metric),
                                                  log_params)
        if dims:
            st.plotly_chart(stats_figures.parallel_figure(dims), width="stretch", key="parallel_chart")
            st.caption(texts.PARALLEL_CAPTION)
        else:
            st.info(f"No trial in {shown(run.path / 'trials.csv')} has a value for {texts.metric_label(metric)} and "
                    f"every searched parameter yet.")
    if data:
        highlights = stats.search_highlights(data, params)
        if len(highlights):
            table(highlights, height="content")
        st.caption(texts.analysis_source(res.source, res.absent, stats.bootstrap_text(data), res.command,
                                         stats.has_predictions(data)))
