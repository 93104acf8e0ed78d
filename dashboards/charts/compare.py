"""The run-against-run figure: two runs' ablation curves overlaid on one shared axis of values (no streamlit;
values go in as plain lists, as in figures.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go

from dashboards.charts.figures import LAYOUT, REF_COLOR
from dashboards.shaping.compare import Side, is_reference
from dashboards.shaping.fmt import fmt_value

# The two runs' colours (A, B): blue and orange, apart for colour-blind readers too.
RUN_COLORS = ("#1f77b4", "#ff7f0e")


def compare_figure(sides: Sequence[Side], labels: Sequence[str], legend: Sequence[str], axis_label: str,
                   metric_label: str) -> go.Figure:
    """Each run's mean per value (over its finished seeds) with the mean's 95% interval, a colour per run, side by
    side within each value; a run's own reference value (★) drawn as a star. `labels`: every value of either run
    as the x axis shows them, in order (values a run lacks have no point of that run); `legend`: each run's line
    in the legend."""
    fig = go.Figure()
    vals: list[float] = []
    for i, (s, name) in enumerate(zip(sides, legend, strict=True)):
        done = s.summary[s.summary["n"] > 0] if len(s.summary) else s.summary
        if not len(done):
            continue
        has_ci = done["ci_low"].notna()
        ref = [is_reference(s, v) for v in done["value"]]
        fig.add_trace(go.Scatter(
            x=[fmt_value(v) for v in done["value"]], y=done["mean"].tolist(), mode="lines+markers", name=name,
            offsetgroup=s.name, line=dict(color=RUN_COLORS[i % 2], width=2),
            marker=dict(size=[18 if r else 11 for r in ref], symbol=["star" if r else "diamond" for r in ref],
                        color=RUN_COLORS[i % 2], line=dict(width=1, color=REF_COLOR)),
            error_y=dict(type="data", symmetric=False, visible=True, color=RUN_COLORS[i % 2], thickness=1.6,
                         width=8, array=(done["ci_high"] - done["mean"]).where(has_ci, 0.0).tolist(),
                         arrayminus=(done["mean"] - done["ci_low"]).where(has_ci, 0.0).tolist()),
            customdata=[[int(n), _interval(lo, hi), "★ its reference" if r else ""]
                        for n, lo, hi, r in zip(done["n"], done["ci_low"], done["ci_high"], ref, strict=True)],
            hovertemplate=f"{s.name}: %{{x}}<br>mean %{{y:.2f}} over %{{customdata[0]}} seed(s)<br>"
                          f"%{{customdata[1]}}<br>%{{customdata[2]}}<extra>{s.name}</extra>"))
        vals += [*done["mean"], *done["ci_low"].dropna(), *done["ci_high"].dropna()]
    fig.update_layout(**LAYOUT, height=470, xaxis_title=axis_label, yaxis_title=metric_label,
                      scattermode="group", scattergap=0.5)
    if vals:
        # Tight around the data (autorange would start at 0 with error bars).
        lo, hi = min(vals), max(vals)
        pad = max(0.5, 0.12 * (hi - lo))
        fig.update_layout(yaxis_range=[lo - pad, hi + pad])
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=list(labels))
    return fig


def _interval(lo: float, hi: float) -> str:
    if math.isnan(lo) or math.isnan(hi):
        return "no 95% interval (under two seeds)"
    return f"95% CI [{lo:.2f}, {hi:.2f}]"
