"""The run-against-run view (Streamlit layout only): the picker of the other runs of the same axis, the two runs'
curves overlaid, and the per-value table of both differences to their own reference with whether the verdicts
agree. dashboards/shaping/compare.py shapes it, dashboards/charts/compare.py draws it, texts.py words it.
"""

from __future__ import annotations

import streamlit as st

from dashboards.charts import compare as compare_figures
from dashboards.data import runs
from dashboards.data.files import LoadError
from dashboards.shaping import compare, summaries, texts
from dashboards.shaping.fmt import fmt_value
from dashboards.ui import stats as stats_ui
from dashboards.ui.cache import cached_run
from dashboards.ui.widgets import table
from studies.exports.schema import REPORTED_METRIC


def pairable_runs(run: runs.Run, listed: list[runs.RunSummary]) -> dict[str, tuple[runs.RunSummary, runs.Run]]:
    """The other listed runs that can be set beside `run` (compare.pairable), by their uid, in the listing's
    order (newest first). Only runs of the same axis are loaded; one that cannot be read is left out (the sidebar
    names it)."""
    out = {}
    for s in listed:
        if s.path == run.path or s.axis != run.axis:
            continue
        try:
            other = cached_run(str(s.path), runs.run_stamp(s.path))
        except LoadError:
            continue
        if compare.pairable(run, other):
            out[s.uid] = (s, other)
    return out


def compare_view(run: runs.Run, listed: list[runs.RunSummary]) -> None:
    if not run.axis:
        st.info(texts.COMPARE_NO_AXIS)
        return
    candidates = pairable_runs(run, listed)
    if not candidates:
        st.info(texts.no_other_run(run.axis, run.arms is not None))
        return
    several = len({s.where for s, _ in candidates.values()}) > 1
    uid = st.selectbox(texts.COMPARE_PICKER, list(candidates), key=f"compare_with::{run.uid}",
                       format_func=lambda u: summaries.run_label(candidates[u][0], several),
                       help=texts.COMPARE_PICKER_HELP)
    other = candidates[uid][1]
    results = [stats_ui.run_analysis(r) for r in (run, other)]
    for res in results:
        if res.problem:
            st.warning(res.problem)
    analysed = [str((res.data or {}).get("metric") or REPORTED_METRIC) for res in results]
    metric = analysed[0]
    if analysed[1] != metric:
        st.warning(texts.compare_metric_note(metric, analysed[1]))
    sides = [compare.side(name, r, res.data, metric)
             for name, r, res in zip(compare.SIDES, (run, other), results, strict=True)]
    names = [compare.run_name(run.key, run.uid, other.key), compare.run_name(other.key, other.uid, run.key)]
    st.markdown(f"**{texts.COMPARE_HEADING}**")
    st.caption(texts.compare_runs_caption([f"{compare.SIDES[0]} (this run)", compare.SIDES[1]],
                                          [texts.compare_run_facts(r) for r in (run, other)]))
    rows = compare.compare_table(sides[0], sides[1], run.axis)
    if not len(rows):
        st.info(f"Neither run has a trial with a value of {run.axis} yet: nothing to compare.")
        return
    order = [fmt_value(v) for v in compare.value_order(*sides)]
    fig = compare_figures.compare_figure(sides, order, [f"{s} · {n}" for s, n in zip(compare.SIDES, names,
                                                                                      strict=True)],
                                         texts.axis_label(run.axis), texts.metric_label(metric))
    st.plotly_chart(fig, width="stretch", key="compare_chart")
    st.caption(texts.COMPARE_CHART_CAPTION)
    st.markdown(f"**Per value** ({texts.agreement_line(compare.counts(rows))})")
    table(rows, height="content")
    st.caption(texts.COMPARE_TABLE_CAPTION)
