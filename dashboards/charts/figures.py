"""Plotly figures for the dashboard's views, built from the shaped data (no streamlit, so tests can call them).

Values go into traces as plain lists so the figure's JSON holds the exported numbers verbatim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards.data.files import SceneData
from dashboards.data.paper import PaperRef
from dashboards.shaping import texts
from dashboards.shaping.fmt import fmt_value
from dashboards.shaping.stats import AblationPlot
from dashboards.shaping.trials import Ablation

SEED_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
MEAN_COLOR = "#d62728"
PAPER_COLOR = "#f2b701"
REF_COLOR = "#333333"
REPRO_COLOR = "#7f7f7f"
CI_COLOR = "#5a1a1a"
STATUS_COLORS = {"FINISHED": "#1f77b4", "STOPPED": "#ff7f0e", "RUNNING": "#2ca02c", "ERROR": "#d62728",
                 "DIVERGED": "#d62728"}
SIDE_LEGEND = dict(orientation="v", yanchor="top", y=1, xanchor="left", x=1.02, font=dict(size=11))
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=30, t=50, b=60),
              legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0))


def _nan_to_none(values: Sequence) -> list:
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]


def _trial_hover(trial_ids: Sequence[str], intervals: pd.DataFrame | None) -> tuple[list, list[str]]:
    """Per point: customdata [trial_id, ci_low, ci_high] (None where the trial has no interval) and the hover's
    line about the trial's image-bootstrap interval."""
    by_id = {} if intervals is None else {r.trial_id: r for r in intervals.itertuples()}
    data, text = [], []
    for tid in trial_ids:
        r = by_id.get(tid)
        lo, hi = (None, None) if r is None or math.isnan(r.ci_low) else (float(r.ci_low), float(r.ci_high))
        data.append([tid, lo, hi])
        text.append(f"image-bootstrap 95% interval [{lo:.2f}, {hi:.2f}]" if lo is not None else
                    "no image-bootstrap interval (no predictions)" if intervals is not None else "")
    return data, text


def ablation_figure(ab: Ablation, axis_label: str, metric_label: str, ref: PaperRef | None = None,
                    repro: pd.DataFrame | None = None, trial_intervals: pd.DataFrame | None = None,
                    reference_name: str = "paper's configuration") -> go.Figure:
    """The metric against the swept value: one point per trial (a colour per seed), mean +- std of the
    FINISHED trials and the mean's 95% interval over seeds (where two or more seeds finished), the reference
    arm starred, and the paper's number as a horizontal line. `metric_label` names the metric with its unit on
    the y axis; hovers use the column name. `trial_intervals` (trial_id, ci_low, ci_high: analysis.json's
    image-bootstrap intervals of ab's metric) go into each trial's hover; `reference_name` names the star."""
    fig = go.Figure()
    labels = ab.summary["label"].tolist()
    pts = ab.points
    done = pts[pts["counted"]]
    seeds = sorted(done["seed"].dropna().unique().tolist())
    for i, seed in enumerate(seeds):
        p = done[done["seed"] == seed]
        data, text = _trial_hover(p["trial_id"].tolist(), trial_intervals)
        fig.add_trace(go.Scatter(
            x=p["label"].tolist(), y=p["metric"].tolist(), mode="markers", name=f"seed {fmt_value(seed)}",
            customdata=data, text=text, offsetgroup="trials",
            marker=dict(size=10, color=SEED_COLORS[i % len(SEED_COLORS)], line=dict(width=1, color="white")),
            hovertemplate=f"{ab.axis}=%{{x}}<br>{ab.metric}=%{{y:.2f}}<br>trial %{{customdata[0]}}<br>%{{text}}"
                          f"<extra>seed {fmt_value(seed)}</extra>"))
    no_seed = done[done["seed"].isna()]
    if len(no_seed):
        data, text = _trial_hover(no_seed["trial_id"].tolist(), trial_intervals)
        fig.add_trace(go.Scatter(x=no_seed["label"].tolist(), y=no_seed["metric"].tolist(), mode="markers",
                                 name="trials", customdata=data, text=text, offsetgroup="trials",
                                 marker=dict(size=10, color=SEED_COLORS[0]),
                                 hovertemplate="%{x}: %{y:.2f}<br>trial %{customdata[0]}<br>%{text}<extra></extra>"))
    other = pts[~pts["counted"] & pts["metric"].notna()]
    if len(other):
        fig.add_trace(go.Scatter(
            x=other["label"].tolist(), y=other["metric"].tolist(), mode="markers",
            name="not finished (" + ", ".join(sorted(other["status"].unique())) + ")", offsetgroup="trials",
            customdata=np.stack([other["trial_id"], other["status"]], axis=1).tolist(),
            marker=dict(size=10, symbol="circle-open", color=REF_COLOR, line=dict(width=2)),
            hovertemplate="%{x}: %{y:.2f}<br>trial %{customdata[0]} (%{customdata[1]})<extra></extra>"))
    s = ab.summary[ab.summary["n"] > 0]
    if len(s):
        fig.add_trace(go.Scatter(
            x=s["label"].tolist(), y=s["mean"].tolist(), mode="lines+markers", name="mean ± std over seeds",
            offsetgroup="mean",
            error_y=dict(type="data", array=[0.0 if math.isnan(v) else v for v in s["std"]], visible=True,
                         color=MEAN_COLOR, thickness=2, width=8),
            customdata=np.stack([s["n"], s["std"].fillna(0.0)], axis=1).tolist(),
            line=dict(color=MEAN_COLOR, width=2), marker=dict(size=13, symbol="diamond", color=MEAN_COLOR),
            hovertemplate="%{x}: mean %{y:.2f} ± %{customdata[1]:.2f} (n=%{customdata[0]})<extra></extra>"))
        ci = s[s["ci_low"].notna()] if "ci_low" in s else s.iloc[0:0]
        if len(ci):
            # A thin whisker over the std bar: the interval for the mean, wider than the spread with few seeds.
            fig.add_trace(go.Scatter(
                x=ci["label"].tolist(), y=ci["mean"].tolist(), mode="markers", name="95% CI of the mean (t, seeds)",
                offsetgroup="mean", marker=dict(size=1, color=CI_COLOR),
                error_y=dict(type="data", symmetric=False, array=(ci["ci_high"] - ci["mean"]).tolist(),
                             arrayminus=(ci["mean"] - ci["ci_low"]).tolist(), color=CI_COLOR, thickness=1.2,
                             width=14),
                customdata=np.stack([ci["ci_low"], ci["ci_high"], ci["n"]], axis=1).tolist(),
                hovertemplate="%{x}: mean %{y:.2f}, 95% CI [%{customdata[0]:.2f}, %{customdata[1]:.2f}] over "
                              "%{customdata[2]} seeds<extra></extra>"))
        paper = s[s["is_paper"]]
        if len(paper):
            fig.add_trace(go.Scatter(
                x=paper["label"].tolist(), y=paper["mean"].tolist(), mode="markers",
                name=reference_name, offsetgroup="mean",
                marker=dict(size=22, symbol="star", color=PAPER_COLOR, line=dict(width=1.5, color=REF_COLOR)),
                hovertemplate=f"{reference_name}: %{{x}}<br>mean %{{y:.2f}}<extra></extra>"))
    if ref is not None:
        fig.add_hline(y=ref.value, line=dict(color=REF_COLOR, dash="dash", width=2),
                      annotation_text=f"SALGL paper: {ref.value:g}", annotation_position="top left")
    elif repro is not None:
        for _, r in repro.iterrows():
            fig.add_hline(y=float(r["mAP"]), line=dict(color=REPRO_COLOR, dash="dot", width=1.5),
                          annotation_text=f"{r['who']}: {float(r['mAP']):g}", annotation_position="bottom right")
    # Trials and the mean side by side within each category, so a single seed is not hidden under its mean.
    fig.update_layout(**LAYOUT, height=470, xaxis_title=axis_label, yaxis_title=metric_label,
                      scattermode="group", scattergap=0.6, yaxis_range=_y_range(ab, ref, repro))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=labels)
    return fig


def ablation_plot_figure(plot: AblationPlot, axis: str, metric: str) -> go.Figure:
    """The ablation chart of a run as the dashboard shows it (dashboards.shaping.stats.ablation_plot)."""
    return ablation_figure(plot.ab, texts.axis_label(axis), texts.metric_label(metric), plot.ref,
                           plot.repro if plot.ref is None else None, plot.intervals,
                           texts.reference_name(plot.synthetic, plot.arms))


def _y_range(ab: Ablation, ref: PaperRef | None, repro: pd.DataFrame | None) -> list[float] | None:
    """Tight around the data and the reference lines (autorange would start at 0 with error bars)."""
    s = ab.summary[ab.summary["n"] > 0]
    std = s["std"].fillna(0.0)
    vals = [*ab.points["metric"].dropna(), *(s["mean"] - std), *(s["mean"] + std)]
    if "ci_low" in s:
        vals += [*s["ci_low"].dropna(), *s["ci_high"].dropna()]
    if ref is not None:
        vals.append(ref.value)
    elif repro is not None and len(repro):
        vals += pd.to_numeric(repro["mAP"], errors="coerce").dropna().tolist()
    if not vals:
        return None
    lo, hi = float(min(vals)), float(max(vals))
    pad = max(0.5, 0.12 * (hi - lo))
    return [lo - pad, hi + pad]


def _is_log(values: Sequence) -> bool:
    try:
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return False
    return bool(len(v)) and bool(np.all(v > 0)) and v.max() / v.min() >= 20


def search_figure(points: pd.DataFrame, params: Sequence[str], metric_label: str,
                  best_trial: str | None = None, log_params: Sequence[str] = ()) -> go.Figure:
    """For a joint search: the metric (named with its unit by `metric_label`) against each searched
    parameter, coloured by trial status.
    `log_params` (e.g. a loguniform learning rate) get a log x axis, as do positive ranges over 20x."""
    params = [p for p in params if (points["param"] == p).any()]
    cols = min(3, max(1, len(params)))
    rows = max(1, math.ceil(len(params) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(params), shared_yaxes=True,
                        horizontal_spacing=0.06, vertical_spacing=0.18)
    shown: set[str] = set()
    for i, p in enumerate(params):
        r, c = divmod(i, cols)
        d = points[points["param"] == p]
        numeric = pd.to_numeric(d["value"], errors="coerce").notna().all()
        for status in sorted(d["status"].unique()):
            g = d[d["status"] == status]
            x = [float(v) for v in g["value"]] if numeric else [fmt_value(v) for v in g["value"]]
            fig.add_trace(go.Scatter(
                x=x, y=g["metric"].tolist(), mode="markers", name=status, legendgroup=status,
                showlegend=status not in shown, customdata=g["trial_id"].tolist(),
                marker=dict(size=9, color=STATUS_COLORS.get(status, REF_COLOR), opacity=0.85),
                hovertemplate=f"{p}=%{{x}}<br>%{{y:.2f}}<br>trial %{{customdata}}"
                              f"<extra>{status}</extra>"),
                row=r + 1, col=c + 1)
            shown.add(status)
        if best_trial is not None and (d["trial_id"] == best_trial).any():
            b = d[d["trial_id"] == best_trial].iloc[0]
            fig.add_trace(go.Scatter(
                x=[float(b["value"]) if numeric else fmt_value(b["value"])], y=[b["metric"]], mode="markers",
                name="best trial", legendgroup="best", showlegend="best" not in shown,
                marker=dict(size=18, symbol="star", color=PAPER_COLOR, line=dict(width=1.5, color=REF_COLOR))),
                row=r + 1, col=c + 1)
            shown.add("best")
        if numeric and (p in log_params or _is_log(d["value"])):
            fig.update_xaxes(type="log", row=r + 1, col=c + 1)
    fig.update_layout(**{**LAYOUT, "legend": SIDE_LEGEND}, height=330 * rows + 90)
    fig.update_yaxes(title_text=metric_label, col=1)
    return fig


def _trial_colors(trial_ids: Sequence[str]) -> dict[str, str]:
    return {t: SEED_COLORS[i % len(SEED_COLORS)] for i, t in enumerate(trial_ids)}


def learning_curves_figure(epochs: pd.DataFrame, trial_ids: Sequence[str], labels: Mapping[str, str],
                           reference: pd.DataFrame | None = None) -> go.Figure:
    """mAP (solid) and EMA mAP (dotted) per epoch for each chosen trial, optionally with the published
    COCO reproduction's curve (its running best EMA mAP; its epochs count from 0, ours from 1)."""
    fig = go.Figure()
    colors = _trial_colors(trial_ids)
    for t in trial_ids:
        e = epochs[epochs["trial_id"] == t]
        for col, dash in (("mAP", "solid"), ("mAP_ema", "dot")):
            if col in e and e[col].notna().any():
                fig.add_trace(go.Scatter(
                    x=e["epoch"].tolist(), y=_nan_to_none(e[col].tolist()), mode="lines+markers",
                    name=f"{labels.get(t, t)} · {col}", legendgroup=t, connectgaps=False,
                    line=dict(color=colors[t], dash=dash, width=2), marker=dict(size=5)))
    if reference is not None and len(reference):
        fig.add_trace(go.Scatter(
            x=(reference["epoch"] + 1).tolist(), y=reference["best_ema_mAP"].tolist(), mode="lines",
            name="published COCO reproduction (best EMA mAP so far)", line=dict(color=REF_COLOR, dash="dash",
                                                                                 width=2)))
    # Many trials: the legend goes to the side, where it cannot cover the curves.
    fig.update_layout(**{**LAYOUT, "legend": SIDE_LEGEND}, height=440, xaxis_title="epoch", yaxis_title="mAP (%)")
    return fig


def losses_figure(epochs: pd.DataFrame, trial_ids: Sequence[str], labels: Mapping[str, str],
                  reference: pd.DataFrame | None = None) -> go.Figure:
    """The training losses per epoch (2 x 2), the published reproduction's where it logged the same term."""
    names = {"loss_total": "total", "loss_cls": "classification (ASL/BCE)",
             "loss_sample_entropy": "sample-level scene entropy", "loss_batch_entropy": "batch-level entropy term"}
    ref_cols = {"loss_cls": "loss_cls", "loss_sample_entropy": "loss_sample_entropy",
                "loss_batch_entropy": "loss_batch_entropy"}
    fig = make_subplots(rows=2, cols=2, subplot_titles=list(names.values()), vertical_spacing=0.14)
    colors = _trial_colors(trial_ids)
    for i, col in enumerate(names):
        r, c = divmod(i, 2)
        for t in trial_ids:
            e = epochs[epochs["trial_id"] == t]
            if col in e and e[col].notna().any():
                fig.add_trace(go.Scatter(x=e["epoch"].tolist(), y=_nan_to_none(e[col].tolist()), mode="lines",
                                         name=labels.get(t, t), legendgroup=t, showlegend=i == 0,
                                         line=dict(color=colors[t], width=2)), row=r + 1, col=c + 1)
        if reference is not None and len(reference) and col in ref_cols:
            fig.add_trace(go.Scatter(x=(reference["epoch"] + 1).tolist(), y=reference[ref_cols[col]].tolist(),
                                     mode="lines", name="published COCO reproduction", legendgroup="ref",
                                     showlegend=col == "loss_cls", line=dict(color=REF_COLOR, dash="dash")),
                          row=r + 1, col=c + 1)
    fig.update_layout(**{**LAYOUT, "legend": SIDE_LEGEND}, height=560)
    fig.update_xaxes(title_text="epoch", row=2)
    return fig


def cooccurrence_figure(scene: SceneData, k: int, difference: bool = False) -> go.Figure:
    """Scene k's P(j | i): rows are the given label i, columns the co-occurring label j. With `difference`,
    scene k minus the mean over scenes, which isolates what is specific to the scene."""
    z = scene.prob[k] - scene.prob.mean(0) if difference else scene.prob[k]
    names = scene.class_names
    c = len(names)
    what = f"P(j | i, scene {k}) − mean over scenes" if difference else f"P(j | i, scene {k})"
    heat = go.Heatmap(z=np.round(z, 4).tolist(), x=names, y=names, zmin=-1 if difference else 0,
                      zmax=1, zmid=0 if difference else None, colorscale="RdBu_r" if difference else "Blues",
                      colorbar=dict(title=dict(text="Δ P" if difference else "P")),
                      hovertemplate=f"P(%{{x}} | %{{y}}, scene {k}){' − mean' if difference else ''}"
                                    " = %{z:.3f}<extra></extra>")
    fig = go.Figure(heat)
    size = int(min(1100, max(480, 12 * c + 200)))
    fig.update_layout(template="plotly_white", height=size, margin=dict(l=110, r=20, t=50, b=110),
                      title=dict(text=what, x=0.01), xaxis_title="co-occurring label j",
                      yaxis_title="given label i")
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=10 if c <= 30 else 8))
    fig.update_xaxes(tickangle=-60, tickfont=dict(size=10 if c <= 30 else 8))
    return fig


def scene_usage_figure(scene: SceneData) -> go.Figure:
    """Fraction of validation images whose argmax scene is k."""
    k = scene.num_scenes
    fig = go.Figure(go.Bar(x=[f"scene {i}" for i in range(k)], y=(scene.usage * 100).round(2).tolist(),
                           marker_color=[SEED_COLORS[i % len(SEED_COLORS)] for i in range(k)],
                           hovertemplate="%{x}: %{y:.1f}% of validation images<extra></extra>"))
    fig.update_layout(**LAYOUT, height=340, yaxis_title="% of validation images", title="scene usage")
    return fig


def contingency_figure(scene: SceneData) -> go.Figure:
    """Learned scene (rows) against the synthetic data's true scene (columns), in images."""
    cont = scene.contingency
    fig = go.Figure(go.Heatmap(z=cont.tolist(), x=[f"true {j}" for j in range(cont.shape[1])],
                               y=[f"learned {i}" for i in range(cont.shape[0])], colorscale="Viridis",
                               texttemplate="%{z:.0f}", hovertemplate="%{y} / %{x}: %{z:.0f} images<extra></extra>",
                               colorbar=dict(title=dict(text="images"))))
    fig.update_layout(template="plotly_white", height=360, margin=dict(l=90, r=20, t=50, b=50),
                      title="learned vs true scene")
    fig.update_yaxes(autorange="reversed")
    return fig
