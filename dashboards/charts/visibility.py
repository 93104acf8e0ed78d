"""Plotly figure of the visibility study: learned scenes against scene visibility, oracle and global bands."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.charts.figures import LAYOUT

COLORS = {"learned": "#1f77b4", "oracle": "#2ca02c", "global": "#7f7f7f"}


def _band(fig: go.Figure, row: pd.Series, x: tuple[float, float], name: str) -> None:
    """A horizontal line at the arm's mean with its 95% interval shaded (the interval is absent with one seed)."""
    color = COLORS[row["role"]]
    lo, hi = row["ci_low"], row["ci_high"]
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        fig.add_trace(go.Scatter(x=[x[0], x[1], x[1], x[0]], y=[lo, lo, hi, hi], fill="toself", mode="none",
                                 fillcolor=color, opacity=0.15, hoverinfo="skip", showlegend=False), row=1, col=1)
    fig.add_trace(go.Scatter(x=list(x), y=[row["mean"]] * 2, mode="lines", name=name,
                             line=dict(color=color, dash="dash", width=2),
                             hovertemplate=f"{name}: %{{y:.2f}} (n = {row['n']})<extra></extra>"), row=1, col=1)


def visibility_figure(summary: pd.DataFrame, metric_label: str) -> go.Figure:
    """Left: the learned arms' mean metric (95% interval whiskers) against visibility, the oracle (ceiling) and
    global (floor) arms as bands. Right: the learned arms' scene NMI against visibility (0 = random, 1 = true)."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.12,
                        subplot_titles=(metric_label, "learned-vs-true scene NMI"))
    learned = summary[summary["role"] == "learned"]
    span = (min(0.0, learned["visibility"].min()) - 0.05, max(1.0, learned["visibility"].max()) + 0.05)
    for _, r in summary[summary["role"] != "learned"].iterrows():
        _band(fig, r, span, f"{r['arm']} ({'ceiling' if r['role'] == 'oracle' else 'floor'})")
    has_ci = learned["ci_low"].notna() & learned["ci_high"].notna()
    fig.add_trace(go.Scatter(
        x=learned["visibility"].tolist(), y=learned["mean"].tolist(), mode="lines+markers", name="learned scenes",
        line=dict(color=COLORS["learned"], width=2), marker=dict(size=10),
        error_y=dict(type="data", symmetric=False,
                     array=(learned["ci_high"] - learned["mean"]).where(has_ci, 0.0).astype(float).tolist(),
                     arrayminus=(learned["mean"] - learned["ci_low"]).where(has_ci, 0.0).astype(float).tolist()),
        customdata=learned[["arm", "n"]].values.tolist(),
        hovertemplate="%{customdata[0]}: %{y:.2f} (n = %{customdata[1]})<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=learned["visibility"].tolist(), y=learned["nmi"].tolist(), mode="lines+markers", name="learned NMI",
        line=dict(color=COLORS["learned"], width=2, dash="dot"), marker=dict(size=10, symbol="diamond"),
        showlegend=False, hovertemplate="visibility %{x:g}: NMI %{y:.2f}<extra></extra>"), row=1, col=2)
    fig.update_layout(**LAYOUT, height=420)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0),
                      margin=dict(l=60, r=30, t=40, b=110))
    fig.update_xaxes(title_text="scene visibility (synthetic_scene_visibility)", range=list(span), row=1, col=1)
    fig.update_xaxes(title_text="scene visibility", range=list(span), row=1, col=2)
    fig.update_yaxes(range=[0, 1.05], row=1, col=2)
    return fig
