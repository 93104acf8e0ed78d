"""Plotly figures of the statistics views: the forest plot of differences to the reference arm, a joint search's
parameter importances and its parallel coordinates (no streamlit; values go in as plain lists, as in figures.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go

from dashboards.charts.figures import LAYOUT, PAPER_COLOR, REF_COLOR, SEED_COLORS
from dashboards.shaping.stats import KINDS, Dimension, interval_text

VERDICT_COLORS = {"better": "#2ca02c", "worse": "#d62728", "no detectable difference": "#7f7f7f",
                  "no test": "#9467bd", "no comparison": "#bcbd22"}
EVALUATORS = {"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}


def forest_figure(points: pd.DataFrame, axis_label: str) -> go.Figure:
    """Each arm's difference to the reference arm (★, at zero: a vertical line) with its 95% interval, one row
    per arm, coloured by verdict; the verdict on hover.

    One trace per verdict kind, rows in the analysis's order (top to bottom), so the legend says what the
    colours mean and each trace's x / error values are the analysis's numbers for its arms."""
    fig = go.Figure()
    order = points["label"].tolist()
    for kind in KINDS:
        p = points[points["kind"] == kind]
        if not len(p):
            continue
        has_ci = p["ci_low"].notna()
        fig.add_trace(go.Scatter(
            x=p["diff"].tolist(), y=p["label"].tolist(), mode="markers", name=kind,
            marker=dict(size=12, symbol="square", color=VERDICT_COLORS[kind], line=dict(width=1, color="white")),
            error_x=dict(type="data", symmetric=False, array=(p["ci_high"] - p["diff"]).where(has_ci, 0.0).tolist(),
                         arrayminus=(p["diff"] - p["ci_low"]).where(has_ci, 0.0).tolist(),
                         color=VERDICT_COLORS[kind], thickness=2.5, width=7),
            # Long verdicts break at their clauses, so the hover stays narrow.
            customdata=[[interval_text(lo, hi, sign=True), v.replace("; ", "<br>")]
                        for lo, hi, v in zip(p["ci_low"], p["ci_high"], p["verdict"], strict=True)],
            hovertemplate=f"{axis_label} = %{{y}}: %{{x:+.2f}}, 95% interval %{{customdata[0]}}<br>"
                          f"%{{customdata[1]}}<extra>{kind}</extra>"))
    fig.add_vline(x=0, line=dict(color=PAPER_COLOR, width=3))
    # The reference sits on the zero line: the x range always holds 0, however far the arms are.
    lo = min(0.0, *points["ci_low"].fillna(points["diff"]), *points["diff"])
    hi = max(0.0, *points["ci_high"].fillna(points["diff"]), *points["diff"])
    pad = max(0.25, 0.1 * (hi - lo))
    fig.update_layout(**LAYOUT, height=max(300, 150 + 70 * len(order)), xaxis_range=[lo - pad, hi + pad],
                      xaxis_title="difference to ★ (mAP points)", yaxis_title=axis_label,
                      xaxis=dict(zeroline=False))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=order[::-1])
    return fig


def importance_figure(imp: pd.DataFrame) -> go.Figure:
    """Optuna's importance of each searched parameter, one bar group per evaluator (the shares sum to 1)."""
    fig = go.Figure()
    for i, (ev, g) in enumerate(imp.groupby("evaluator", sort=False)):
        fig.add_trace(go.Bar(x=g["importance"].tolist(), y=g["param"].tolist(), orientation="h",
                             name=EVALUATORS.get(ev, ev), marker_color=SEED_COLORS[i % len(SEED_COLORS)],
                             hovertemplate="%{y}: %{x:.2f}<extra>" + EVALUATORS.get(ev, ev) + "</extra>"))
    params = list(dict.fromkeys(imp["param"]))
    fig.update_layout(**LAYOUT, height=max(220, 120 + 45 * len(params)), barmode="group",
                      xaxis_title="importance (share of the objective's variance)", xaxis_range=[0, 1])
    fig.update_yaxes(categoryorder="array", categoryarray=params[::-1])
    return fig


def parallel_figure(dims: Sequence[Dimension]) -> go.Figure:
    """One line per trial through its searched values and its metric (the last axis), coloured by the metric."""
    metric = dims[-1]
    fig = go.Figure(go.Parcoords(
        line=dict(color=list(metric.values), colorscale="Viridis", showscale=True,
                  colorbar=dict(title=dict(text=metric.name, side="right"), x=1.08)),
        dimensions=[dict(label=d.name, values=list(d.values),
                         **({"tickvals": d.tickvals, "ticktext": d.ticktext} if d.ticktext is not None else {}))
                    for d in dims],
        labelfont=dict(color=REF_COLOR, size=12), tickfont=dict(size=10)))
    # A wide right margin: the colour bar sits beside the metric's axis, not over its tick labels.
    fig.update_layout(template="plotly_white", height=420, margin=dict(l=70, r=150, t=70, b=40))
    return fig
