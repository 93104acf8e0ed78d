"""Shaping one loaded run for its views: ablation summary, search points, trial choices and the trial table.
Plain data in, plain tables out (no streamlit). Scenes: scenes.py; the run list, provenance and the comparison
with the paper: summaries.py; the statistics: stats.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dashboards.data.files import PLACEMENT_COLUMNS
from dashboards.data.paper import (
    PAPER_METRIC,
    PaperRef,
    PaperTables,
    paper_reference,
    reproduction_refs,
    run_pretrain,
)
from dashboards.data.runs import Run
from dashboards.shaping.fmt import fmt_value, is_missing
from studies.analysis.stats import mean_ci
from studies.exports.schema import REPORTED_METRIC, TRIAL_REQUIRED

# The metrics a view offers, in menu order: the paper's reported number first (the default); the first six
# are always offered.
METRICS = (REPORTED_METRIC, "best_mAP", "mAP_ema", "mAP", "CF1", "OF1", "CF1_top3", "OF1_top3", "scene_nmi")
# Where a trial ran, with gpu_ids near the front of the trial table when the export has them (cluster runs).
PLACEMENT_SHOWN = ("node_ip", "retries")
FAILED_STATUSES = ("ERROR", "DIVERGED")


def metric_options(trials: pd.DataFrame) -> list[str]:
    opts = [m for m in METRICS if m in trials and (m in METRICS[:6] or trials[m].notna().any())]
    return opts or [REPORTED_METRIC]


def same_value(a: Any, b: Any) -> bool:
    """Two axis values are the same setting: 4 == 4.0, 0.99 == 0.99000000001; text compared as text."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a) == str(b)


# ---------------------------------------------------------------------------------------------
# Ablation (one swept axis)


@dataclass
class Ablation:
    points: pd.DataFrame   # trial_id, seed, value, label, metric, status, is_paper_config, counted
    summary: pd.DataFrame  # value, label, n, mean, std, ci_low, ci_high, min, max, failed, is_paper
    axis: str
    metric: str


def ablation_summary(trials: pd.DataFrame, axis: str, metric: str,
                     paper_config: dict[str, Any] | None = None, arms: list[str] | None = None) -> Ablation:
    """Per axis value: mean, std (sample, over seeds), the mean's 95% Student t interval
    (studies.analysis.stats.mean_ci, as analysis.json's arms; NaN under two seeds), n of the FINISHED trials, plus
    every trial as a point.

    Values are sorted, except the arms of a study of named arms (`arms`, study.json's axis_values), which keep
    their order: a ladder from the floor to the ceiling.
    Trials that are not FINISHED (RUNNING, STOPPED, ERROR, DIVERGED) stay in `points` with counted=False;
    `failed` counts ERROR / DIVERGED trials per value, so a diverging setting is visible, not hidden.
    """
    cols = ["trial_id", "seed", "value", "label", "metric", "status", "is_paper_config", "counted"]
    if axis not in trials or metric not in trials or not len(trials):
        return Ablation(pd.DataFrame(columns=cols), pd.DataFrame(
            columns=["value", "label", "n", "mean", "std", "ci_low", "ci_high", "min", "max", "failed", "is_paper"]),
            axis, metric)
    t = trials[trials[axis].notna()]
    paper_value = (paper_config or {}).get(axis)
    pts = pd.DataFrame({
        "trial_id": t["trial_id"].astype(str),
        "seed": t["seed"] if "seed" in t else np.nan,
        "value": t[axis],
        "label": t[axis].map(fmt_value),
        "metric": pd.to_numeric(t[metric], errors="coerce"),
        "status": t["status"],
        "is_paper_config": t["is_paper_config"].astype(bool) if "is_paper_config" in t else False,
    })
    pts["counted"] = (pts["status"] == "FINISHED") & pts["metric"].notna()
    order = sorted(pts["value"].unique(), key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0,
                                                          str(v)))
    if arms:
        order = [a for a in arms if a in order] + [v for v in order if v not in arms]
    rows = []
    for v in order:
        g = pts[pts["value"] == v]
        c = g.loc[g["counted"], "metric"]
        is_paper = bool(g["is_paper_config"].any()) or (paper_value is not None and same_value(v, paper_value))
        ci = mean_ci(c.tolist())
        rows.append({"value": v, "label": fmt_value(v), "n": int(len(c)),
                     "mean": float(c.mean()) if len(c) else np.nan,
                     "std": float(c.std(ddof=1)) if len(c) > 1 else np.nan,
                     "ci_low": np.nan if ci["ci_low"] is None else ci["ci_low"],
                     "ci_high": np.nan if ci["ci_high"] is None else ci["ci_high"],
                     "min": float(c.min()) if len(c) else np.nan, "max": float(c.max()) if len(c) else np.nan,
                     "failed": int(g["status"].isin(FAILED_STATUSES).sum()), "is_paper": is_paper})
    rank = {v: i for i, v in enumerate(order)}
    pts = pts.assign(_r=pts["value"].map(rank)).sort_values(["_r", "seed"]).drop(columns="_r")
    return Ablation(pts.reset_index(drop=True), pd.DataFrame(rows), axis, metric)


def ablation_highlights(ab: Ablation) -> tuple[pd.Series | None, pd.Series | None]:
    """The summary rows of the paper's configuration and of the best setting (highest mean), among the
    values with at least one FINISHED trial; None where there is none."""
    counted = ab.summary[ab.summary["n"] > 0]
    paper = counted[counted["is_paper"].astype(bool)]
    return (paper.iloc[0] if len(paper) else None,
            counted.loc[counted["mean"].idxmax()] if len(counted) else None)


def ablation_table(ab: Ablation) -> pd.DataFrame:
    """The per-value summary as the ablation view prints it."""
    return ab.summary.rename(columns={"label": ab.axis, "n": "n (finished)", "ci_low": "95% CI low",
                                      "ci_high": "95% CI high", "failed": "errored / diverged",
                                      "is_paper": "paper config"}).drop(columns="value").round(3)


def paper_references(run: Run, paper: PaperTables, metric: str) -> tuple[PaperRef | None, pd.DataFrame]:
    """The paper's number for this run's setting and `metric` (None where it has none), and the published
    reproductions of the setting (only for metrics the paper reports)."""
    ref = paper_reference(paper.coco, run.dataset, run.backbone, run.image_size, metric,
                          pretrain=run_pretrain(run.meta.get("base_config")))
    repro = reproduction_refs(paper.reproductions, run.dataset, run.backbone, run.image_size)
    return ref, repro if metric in PAPER_METRIC else repro.iloc[0:0]


def reference_curve(run: Run, paper: PaperTables) -> pd.DataFrame | None:
    """The published COCO reproduction's per-epoch curve, for COCO runs."""
    return paper.curve if run.dataset == "coco" and len(paper.curve) else None


def paper_config_value(run: Run) -> str | None:
    """The paper's value of the swept axis, as an axis label."""
    v = run.paper_config.get(run.axis) if run.axis else None
    return None if v is None else fmt_value(v)


# ---------------------------------------------------------------------------------------------
# Joint search (tune)


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The flat config fields in trials.csv: every column that is not one of the schema's key or result
    columns, nor where the trial ran (node, retries)."""
    return [c for c in trials.columns if c not in TRIAL_REQUIRED and c not in PLACEMENT_COLUMNS]


def search_params(run: Run) -> list[str]:
    """The parameters a `tune` study searched: study.json search_space keys found in trials.csv, else the
    config columns that vary across trials."""
    space = run.meta.get("search_space")
    if isinstance(space, dict) and space:
        found = [k for k in space if k in run.trials]
        if found:
            return found
    return [c for c in config_columns(run.trials) if run.trials[c].astype(str).nunique(dropna=True) > 1]


def log_scale_params(run: Run) -> list[str]:
    """Searched parameters whose search_space entry says it is sampled on a log scale (e.g. loguniform)."""
    space = run.meta.get("search_space")
    if not isinstance(space, dict):
        return []
    return [k for k, v in space.items() if "log" in json.dumps(v, default=str).lower()]


def search_points(trials: pd.DataFrame, params: Sequence[str], metric: str) -> pd.DataFrame:
    """Long table (param, value, metric, trial_id, status) for metric-vs-parameter plots."""
    cols = ["param", "value", "metric", "trial_id", "status"]
    if metric not in trials:
        return pd.DataFrame(columns=cols)
    rows = []
    m = pd.to_numeric(trials[metric], errors="coerce")
    for p in params:
        if p not in trials:
            continue
        for v, y, tid, st in zip(trials[p], m, trials["trial_id"], trials["status"], strict=True):
            if not is_missing(v) and not (isinstance(y, float) and math.isnan(y)):
                rows.append({"param": p, "value": v, "metric": float(y), "trial_id": str(tid), "status": st})
    return pd.DataFrame(rows, columns=cols)


def best_trial_id(trials: pd.DataFrame, metric: str) -> str | None:
    vals = pd.to_numeric(trials[metric], errors="coerce") if metric in trials else pd.Series(dtype=float)
    return str(trials.loc[vals.idxmax(), "trial_id"]) if vals.notna().any() else None


def top_trials(trials: pd.DataFrame, params: Sequence[str], metric: str, n: int = 10) -> pd.DataFrame:
    """The `n` trials with the highest `metric`, with the searched parameters."""
    vals = pd.to_numeric(trials[metric], errors="coerce")
    top = trials.assign(_m=vals).sort_values("_m", ascending=False).head(n)
    return top[["trial_id", "status", *params, metric, "epochs_done"]]


# ---------------------------------------------------------------------------------------------
# Trials: labels, pickers, the table


def trial_label(row: dict[str, Any] | pd.Series, axis: str | None) -> str:
    parts = [str(row["trial_id"])]
    if axis and axis in row and not is_missing(row[axis]):
        parts.append(f"{axis}={fmt_value(row[axis])}")
    if "seed" in row and not is_missing(row["seed"]):
        parts.append(f"seed {fmt_value(row['seed'])}")
    return " · ".join(parts)


def trial_choices(run: Run, available: Iterable[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """A trial picker over the trials that have data (`available` ids): (ids, their labels, preferred order).

    ids: those with a trials.csv row in its order, then the rest (a running study's epochs can be ahead
    of its trials.csv). preferred: the same with the paper's configuration first."""
    avail = set(available)
    known = {str(r["trial_id"]): trial_label(r, run.axis) for _, r in run.trials.iterrows()}
    ids = [t for t in known if t in avail] + sorted(avail - set(known))
    labels = {t: known.get(t, f"{t} (no trials.csv row yet)") for t in ids}
    t = run.trials
    paper = t.loc[t["is_paper_config"].astype(bool), "trial_id"].astype(str).tolist() if len(t) else []
    return ids, labels, [i for i in dict.fromkeys(paper + ids) if i in avail]


def trial_row(run: Run, trial_id: str) -> dict[str, Any]:
    """The trial's trials.csv row without its missing cells; {} when it has no row (yet)."""
    rows = run.trials[run.trials["trial_id"].astype(str) == trial_id] if len(run.trials) else run.trials
    return {k: v for k, v in rows.iloc[0].items() if not is_missing(v)} if len(rows) else {}


def trial_filters(run: Run) -> dict[str, list]:
    """The trial table's filters and their values: status, the swept axis, seed (where present)."""
    t = run.trials
    out = {"status": sorted(t["status"].unique())}
    if run.axis and run.axis in t:
        out[run.axis] = sorted(t[run.axis].dropna().unique().tolist())
    if "seed" in t and t["seed"].notna().any():
        out["seed"] = sorted(t["seed"].dropna().unique().tolist())
    return out


def result_columns(trials: pd.DataFrame) -> list[str]:
    """The trial table's result columns: the reported metric first, then, for a cluster run, where each trial
    ran (GPU ids, node IP, retries; a local run's export leaves the node columns empty), then the rest in
    the schema's order."""
    where = [c for c in PLACEMENT_SHOWN if c in trials and trials[c].notna().any()]
    where = ["gpu_ids", *where] if where else []
    cols = [REPORTED_METRIC, *where, *(c for c in TRIAL_REQUIRED if c not in (REPORTED_METRIC, *where))]
    return [c for c in cols if c in trials]


def trial_table(run: Run, chosen: dict[str, list], all_config: bool = False) -> pd.DataFrame:
    """The trials whose column values are among `chosen` ({column: values}): key columns and the varied
    fields first, then every config field (with `all_config`), then result_columns() (with `all_config`
    also node_id)."""
    t = run.trials
    mask = pd.Series(True, index=t.index)
    for col, values in chosen.items():
        mask &= t[col].isin(values)
    varied = [run.axis] if run.axis in t else search_params(run)
    lead = ["trial_id", "status", "seed", "is_paper_config", *[c for c in varied if c in t]]
    result = [c for c in result_columns(t) if c not in lead]
    extra = [c for c in PLACEMENT_COLUMNS if c in t] if all_config else []
    cols = lead + (config_columns(t) if all_config else []) + result + extra
    return t.loc[mask, list(dict.fromkeys(cols))]


def failed_trials(run: Run) -> pd.DataFrame:
    return run.trials[run.trials["status"].isin(FAILED_STATUSES)]
