"""Shaping a run's analysis (analysis.json's content) for the statistics views: the verdict table, the forest
plot's differences, the arms' and trials' intervals, a joint search's importances and parallel coordinates.
Plain data in, plain tables out (no streamlit); the numbers are analysis.json's, never recomputed here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from dashboards.data.paper import PaperRef, PaperTables
from dashboards.data.runs import Run
from dashboards.shaping import trials
from dashboards.shaping.fmt import MISSING, fmt_value
from dashboards.shaping.trials import Ablation, same_value
from studies.analysis.stats import ALPHA, verdict_kind
from studies.analysis.summary import format_verdict_cell, verdict_cell
from studies.exports.evidence import number
from studies.exports.schema import VERDICT_COLUMNS, VerdictColumn

# How a comparison came out (studies.analysis.stats.verdict_kind, the rule its verdict words), in the forest plot's
# order.
KINDS = ("better", "worse", "no detectable difference", "no test", "no comparison")
REFERENCE_MARK = " ★"


def _num(v: Any) -> float:
    """A JSON number as a float; NaN for null (a missing cell), text or a non-finite number."""
    x = number(v)
    return math.nan if x is None else x


def comparison_kind(c: dict[str, Any], alpha: float = ALPHA) -> str:
    """One of KINDS for an analysis.json comparison, decided by studies.analysis.stats.verdict_kind."""
    return verdict_kind(c.get("n"), c.get("n_reference"), _num(c.get("diff")), _num(c.get("p_holm")), alpha)


def interval_text(lo: Any, hi: Any, sign: bool = False) -> str:
    """[lo, hi] with two decimals; a dash when the interval is missing."""
    lo, hi = _num(lo), _num(hi)
    if math.isnan(lo) or math.isnan(hi):
        return MISSING
    return f"[{lo:+.2f}, {hi:+.2f}]" if sign else f"[{lo:.2f}, {hi:.2f}]"


def forest_points(analysis: dict[str, Any]) -> pd.DataFrame:
    """One row per comparison with a difference, in the analysis's order (the axis values'): value, label,
    diff, ci_low, ci_high (NaN: no interval), kind, verdict, p_holm, p_improve, interval, n, n_reference."""
    cols = ["value", "label", "diff", "ci_low", "ci_high", "kind", "verdict", "p_holm", "p_improve", "interval",
            "n", "n_reference"]
    alpha = _num(analysis.get("alpha"))
    rows = [{"value": c.get("value"), "label": fmt_value(c.get("value")), "diff": _num(c.get("diff")),
             "ci_low": _num(c.get("ci_low")), "ci_high": _num(c.get("ci_high")),
             "kind": comparison_kind(c, ALPHA if math.isnan(alpha) else alpha), "verdict": str(c.get("verdict") or ""),
             "p_holm": _num(c.get("p_holm")), "p_improve": _num(c.get("p_improve")),
             "interval": c.get("interval") or MISSING, "n": c.get("n"), "n_reference": c.get("n_reference")}
            for c in analysis.get("comparisons") or []]
    df = pd.DataFrame(rows, columns=cols)
    return df[df["diff"].notna()].reset_index(drop=True)


def verdict_table(analysis: dict[str, Any]) -> pd.DataFrame:
    """Every arm in the analysis's order, the reference starred, one column per schema.VERDICT_COLUMNS (the
    terminal's table has the same): numbers as numbers (NaN when missing; a count as it is), intervals and
    texts as text."""
    axis = str(analysis.get("axis") or "value")
    comparisons = analysis.get("comparisons") or []
    rows = []
    for a in analysis.get("arms") or []:
        c = next((c for c in comparisons if same_value(c.get("value"), a.get("value"))), {})
        ref = bool(a.get("is_reference"))
        row: dict[str, Any] = {axis: fmt_value(a.get("value")) + (REFERENCE_MARK if ref else "")}
        for col in VERDICT_COLUMNS:
            value = verdict_cell(col, a, c)
            if col.fmt == "d":
                row[col.label] = value
            elif not _is_text(col):
                row[col.label] = math.nan if ref and col.of == "comparison" else _num(value)
            else:
                row[col.label] = col.reference if ref and col.of == "comparison" else \
                    format_verdict_cell(col, value, MISSING)
        rows.append(row)
    return pd.DataFrame(rows, columns=[axis, *(col.label for col in VERDICT_COLUMNS)])


def _is_text(col: VerdictColumn) -> bool:
    return col.fmt == "text" or col.fmt.endswith("interval")


def verdict_display(table: pd.DataFrame) -> pd.DataFrame:
    """The verdict table as text, indexed by the axis value (a static table wraps the long verdicts): numbers
    as their column's format says, a dash where missing."""
    out = table.set_index(table.columns[0])
    for col in VERDICT_COLUMNS:
        if not _is_text(col):
            out[col.label] = [format_verdict_cell(col, v, MISSING) for v in out[col.label]]
    return out


def arm_intervals(analysis: dict[str, Any]) -> pd.DataFrame:
    """The arms' mean and 95% interval over seeds: value, n, mean, ci_low, ci_high (NaN under two seeds)."""
    return pd.DataFrame([{"value": a.get("value"), "n": a.get("n"), "mean": _num(a.get("mean")),
                          "ci_low": _num(a.get("ci_low")), "ci_high": _num(a.get("ci_high"))}
                         for a in analysis.get("arms") or []], columns=["value", "n", "mean", "ci_low", "ci_high"])


def with_arm_intervals(ab: Ablation, analysis: dict[str, Any] | None) -> Ablation:
    """`ab` with each value's ci_low / ci_high taken from the analysis (when it analysed ab's metric), so the
    chart shows analysis.json's numbers; values the analysis has no interval for keep NaN."""
    if analysis is None or analysis.get("metric") != ab.metric or not len(ab.summary):
        return ab
    arms = arm_intervals(analysis)
    summary = ab.summary.copy()
    for col in ("ci_low", "ci_high"):
        summary[col] = [next((float(r[col]) for _, r in arms.iterrows() if same_value(r["value"], v)), math.nan)
                        for v in summary["value"]]
    return replace(ab, summary=summary)


def trial_intervals(analysis: dict[str, Any] | None) -> pd.DataFrame:
    """Each trial's image-bootstrap interval: trial_id, mAP_predictions, ci_low, ci_high (NaN: no predictions)."""
    cols = ["trial_id", "mAP_predictions", "ci_low", "ci_high"]
    rows = [{"trial_id": str(t.get("trial_id")), **{c: _num(t.get(c)) for c in cols[1:]}}
            for t in (analysis or {}).get("trials") or []]
    return pd.DataFrame(rows, columns=cols)


@dataclass
class AblationPlot:
    """What a run's ablation chart draws for one metric: the per-value summary with analysis.json's intervals, the
    paper's number (or the reproduction's rows when the paper has none), each trial's image-bootstrap interval.
    The dashboard's ablation view and the notebook API (dashboards/api.py) both build it here."""

    ab: Ablation
    ref: PaperRef | None
    repro: pd.DataFrame | None
    intervals: pd.DataFrame | None
    arms: bool
    synthetic: bool


def ablation_plot(run: Run, paper: PaperTables, metric: str, analysis: dict[str, Any] | None) -> AblationPlot:
    arms = run.arms is not None
    # Named arms are not the paper's axis: their reference arm is no paper configuration to set a paper number by.
    ref, repro = trials.paper_references(run, paper, metric) if not arms else (None, None)
    ab = with_arm_intervals(trials.ablation_summary(run.trials, run.axis, metric, run.paper_config,
                                                    list(run.arms or ()) or None), analysis)
    intervals = trial_intervals(analysis) if analysis and analysis.get("metric") == metric else None
    return AblationPlot(ab, ref, repro, intervals, arms, run.dataset == "synthetic")


def has_predictions(analysis: dict[str, Any]) -> bool:
    return bool((analysis.get("bootstrap") or {}).get("trials_with_predictions"))


def bootstrap_text(analysis: dict[str, Any]) -> str:
    """What the image bootstrap ran on, e.g. `1000 resamples of 600 validation images, 6 trials`."""
    b = analysis.get("bootstrap") or {}
    if not b.get("trials_with_predictions"):
        return "no image bootstrap (no predictions)"
    return (f"{b.get('resamples')} resamples of {b.get('images')} validation images, {b.get('trials_with_predictions')}"
            f" trial(s) with predictions")


def collect_notes(data: dict[str, Any] | None) -> list[str]:
    """What the analysis could not compute: its notes, then the comparisons' own, each once with the arms it
    concerns (three arms without predictions make one line, not three); [] without an analysis."""
    if not data:
        return []
    arms: dict[str, list[str]] = {}
    for c in data.get("comparisons") or []:
        for n in c.get("notes") or []:
            arms.setdefault(str(n), []).append(fmt_value(c.get("value")))
    notes = [str(n) for n in data.get("notes") or []]
    notes += [f"{n} ({data.get('axis')} = {', '.join(v)})" for n, v in arms.items()]
    return list(dict.fromkeys(notes))


# ---------------------------------------------------------------------------------------------
# Joint search (tune)


def importances(analysis: dict[str, Any]) -> pd.DataFrame:
    """Optuna's parameter importances, long form: evaluator (fanova, ped_anova), param, importance; each
    evaluator's params in its own order (most important first)."""
    imp = (analysis.get("search") or {}).get("importances") or {}
    rows = [{"evaluator": ev, "param": p, "importance": _num(v)} for ev, vals in imp.items() for p, v in vals.items()]
    return pd.DataFrame(rows, columns=["evaluator", "param", "importance"])


def search_highlights(analysis: dict[str, Any], params: Sequence[str]) -> pd.DataFrame:
    """The best trial and the paper's configuration of a joint search, side by side with their searched values."""
    s = analysis.get("search") or {}
    rows = []
    for what, key in (("best trial", "best"), ("paper's configuration", "paper")):
        t = s.get(key)
        if t:
            cfg = t.get("config") or {}
            rows.append({"": what, "trial_id": t.get("trial_id"), "status": t.get("status"),
                         "best EMA mAP": _num(t.get("mAP")), **{p: _cell(cfg.get(p)) for p in params}})
    return pd.DataFrame(rows, columns=["", "trial_id", "status", "best EMA mAP", *params])


def _cell(v: Any) -> str:
    """A searched value as analysis.json copies it from trials.csv (text): numbers shortened (0.00108014)."""
    try:
        return fmt_value(float(v)) if not isinstance(v, bool) else str(v)
    except (TypeError, ValueError):
        return MISSING if v is None else str(v)


@dataclass
class Dimension:
    """One axis of the parallel-coordinates view: the plotted numbers and how to label them."""

    name: str
    values: list[float]
    ticktext: list[str] | None = None  # None: plotly's own ticks
    tickvals: list[float] | None = None


def _dimension(name: str, col: pd.Series, log: bool) -> Dimension:
    nums = pd.to_numeric(col, errors="coerce")
    if nums.notna().all():
        if log and (nums > 0).all():
            # Parallel coordinates have linear axes only: a log-scale parameter is plotted as its log10, ticked
            # at the powers of ten in its range with their plain values.
            lg = np.log10(nums.astype(float))
            ticks = list(range(math.floor(lg.min()), math.ceil(lg.max()) + 1))
            return Dimension(f"{name} (log scale)", lg.tolist(), [f"{10.0 ** k:g}" for k in ticks],
                             [float(k) for k in ticks])
        return Dimension(name, nums.astype(float).tolist())
    # A categorical parameter: its values, in sorted order, at 0, 1, 2, ...
    cats = sorted(col.astype(str).unique())
    code = {c: float(i) for i, c in enumerate(cats)}
    return Dimension(name, [code[v] for v in col.astype(str)], cats, list(code.values()))


def parallel_dimensions(trials: pd.DataFrame, params: Sequence[str], metric: str, metric_label: str,
                        log_params: Sequence[str] = ()) -> tuple[list[Dimension], list[str]]:
    """The parallel-coordinates axes (each searched parameter, then the metric) over the trials with a value of
    `metric` and of every parameter, and those trials' ids."""
    cols = [p for p in params if p in trials]
    if metric not in trials or not len(trials):
        return [], []
    t = trials.assign(_m=pd.to_numeric(trials[metric], errors="coerce"))
    t = t[t["_m"].notna() & t[cols].notna().all(axis=1)]
    if not len(t):
        return [], []
    dims = [_dimension(p, t[p], p in log_params) for p in cols]
    dims.append(Dimension(metric_label, t["_m"].astype(float).tolist()))
    return dims, t["trial_id"].astype(str).tolist()

