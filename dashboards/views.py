"""Shaping loaded runs for the views: ablation summary, search points, trial choices and tables, provenance,
the comparison with the paper, a scene's typical labels. Plain data in, plain tables out (no streamlit).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dashboards.files import SceneData
from dashboards.fmt import fmt_seconds, fmt_value, is_missing
from dashboards.paper import PAPER_METRIC, PaperRef, PaperTables, paper_reference, reproduction_refs
from dashboards.runs import Run, RunSummary
from studies.schema import TRIAL_REQUIRED

# The metrics a view offers, in menu order (the first one is the default); the first six are always offered.
METRICS = ("mAP", "mAP_ema", "best_mAP", "best_mAP_ema", "CF1", "OF1", "CF1_top3", "OF1_top3", "scene_nmi")
# The paper's COCO table as the views show it.
PAPER_TABLE_COLUMNS = ["backbone", "resolution", "pretrain", "method", "mAP", "CP", "CR", "CF1", "OP", "OR", "OF1",
                       "CP_top3", "CR_top3", "CF1_top3", "OP_top3", "OR_top3", "OF1_top3"]
FAILED_STATUSES = ("ERROR", "DIVERGED")


def metric_options(trials: pd.DataFrame) -> list[str]:
    opts = [m for m in METRICS if m in trials and (m in METRICS[:6] or trials[m].notna().any())]
    return opts or ["mAP"]


def _same(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a) == str(b)


# ---------------------------------------------------------------------------------------------
# Ablation (one swept axis)


@dataclass
class Ablation:
    points: pd.DataFrame   # trial_id, seed, value, label, metric, status, is_paper_config, counted
    summary: pd.DataFrame  # value, label, n, mean, std, min, max, failed, is_paper
    axis: str
    metric: str


def ablation_summary(trials: pd.DataFrame, axis: str, metric: str,
                     paper_config: dict[str, Any] | None = None) -> Ablation:
    """Per axis value: mean, std (sample, over seeds), n of the FINISHED trials, plus every trial as a point.

    Trials that are not FINISHED (RUNNING, STOPPED, ERROR, DIVERGED) stay in `points` with counted=False;
    `failed` counts ERROR / DIVERGED trials per value, so a diverging setting is visible, not hidden.
    """
    cols = ["trial_id", "seed", "value", "label", "metric", "status", "is_paper_config", "counted"]
    if axis not in trials or metric not in trials or not len(trials):
        return Ablation(pd.DataFrame(columns=cols), pd.DataFrame(
            columns=["value", "label", "n", "mean", "std", "min", "max", "failed", "is_paper"]), axis, metric)
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
    rows = []
    for v in order:
        g = pts[pts["value"] == v]
        c = g.loc[g["counted"], "metric"]
        is_paper = bool(g["is_paper_config"].any()) or (paper_value is not None and _same(v, paper_value))
        rows.append({"value": v, "label": fmt_value(v), "n": int(len(c)),
                     "mean": float(c.mean()) if len(c) else np.nan,
                     "std": float(c.std(ddof=1)) if len(c) > 1 else np.nan,
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
    return ab.summary.rename(columns={"label": ab.axis, "n": "n (finished)", "failed": "errored / diverged",
                                      "is_paper": "paper config"}).drop(columns="value").round(3)


def paper_references(run: Run, paper: PaperTables, metric: str) -> tuple[PaperRef | None, pd.DataFrame]:
    """The paper's number for this run's setting and `metric` (None where it has none), and the published
    reproductions of the setting (only for metrics the paper reports)."""
    ref = paper_reference(paper.coco, run.dataset, run.backbone, run.image_size, metric)
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
    """The flat config fields in trials.csv: every column that is not one of the schema's key or result columns."""
    return [c for c in trials.columns if c not in TRIAL_REQUIRED]


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


def trial_filters(run: Run) -> dict[str, list]:
    """The trial table's filters and their values: status, the swept axis, seed (where present)."""
    t = run.trials
    out = {"status": sorted(t["status"].unique())}
    if run.axis and run.axis in t:
        out[run.axis] = sorted(t[run.axis].dropna().unique().tolist())
    if "seed" in t and t["seed"].notna().any():
        out["seed"] = sorted(t["seed"].dropna().unique().tolist())
    return out


def trial_table(run: Run, chosen: dict[str, list], all_config: bool = False) -> pd.DataFrame:
    """The trials whose column values are among `chosen` ({column: values}): key columns and the varied
    fields first, then every config field (with `all_config`), then the schema's result columns."""
    t = run.trials
    mask = pd.Series(True, index=t.index)
    for col, values in chosen.items():
        mask &= t[col].isin(values)
    varied = [run.axis] if run.axis in t else search_params(run)
    lead = ["trial_id", "status", "seed", "is_paper_config", *[c for c in varied if c in t]]
    result = [c for c in TRIAL_REQUIRED if c in t and c not in lead]
    cols = lead + (config_columns(t) if all_config else []) + result
    return t.loc[mask, list(dict.fromkeys(cols))]


def failed_trials(run: Run) -> pd.DataFrame:
    return run.trials[run.trials["status"].isin(FAILED_STATUSES)]


# ---------------------------------------------------------------------------------------------
# Runs, provenance, the paper


def runs_table(runs: Sequence[RunSummary]) -> pd.DataFrame:
    return pd.DataFrame([{
        "run": s.key, "status": s.status, "dataset": s.dataset, "backbone": s.backbone, "px": s.image_size,
        "axis": s.axis or "(joint search)", "trials": f"{s.n_finished}/{s.n_trials if s.n_trials is not None else '?'}",
        "best mAP": s.best_value, "metric": s.best_metric, "device": s.device,
        "trial time": fmt_seconds(s.trial_seconds_total), "wall time": fmt_seconds(s.wall_seconds),
        "started": s.started} for s in runs])


def provenance_table(run: Run) -> pd.DataFrame:
    """study.json's run facts and provenance as (field, value) rows."""
    m = run.meta
    prov = m.get("provenance") or {}
    cluster = prov.get("ray_cluster") or {}
    wall, total = m.get("wall_seconds"), m.get("trial_seconds_total")
    par = (f"{total / wall:.2f}x" if isinstance(wall, (int, float)) and isinstance(total, (int, float)) and wall > 0
           else "–")
    rows = {
        "study / run": run.key, "status": run.status, "started": m.get("started"), "finished": m.get("finished"),
        "wall time": fmt_seconds(wall), "summed trial time": fmt_seconds(total),
        "summed ÷ wall (effective parallelism)": par, "trials (finished / all)": f"{m.get('n_finished')} / "
        f"{m.get('n_trials')}", "max concurrent trials": m.get("max_concurrent"),
        "sampler / scheduler": f"{m.get('sampler')} / {m.get('scheduler')}",
        "searcher metric": f"{m.get('metric')} ({m.get('mode')})", "metric protocol": m.get("metric_protocol"),
        "seeds": m.get("seeds"), "device": m.get("device"),
        "git commit": f"{prov.get('git_commit')}{' (dirty working tree)' if prov.get('git_dirty') else ''}",
        "python": prov.get("python"), "platform": prov.get("platform"),
        "cpu": f"{prov.get('cpu')} ({prov.get('cpu_count')} cores)", "gpus": ", ".join(prov.get("gpus") or []) or
        "none", "ray cluster": ", ".join(f"{k}: {v}" for k, v in cluster.items()) or "–",
        "optuna storage": m.get("optuna_storage"),
    }
    return pd.DataFrame({"field": list(rows), "value": [str(v) for v in rows.values()]})


def packages_table(run: Run) -> pd.DataFrame:
    pk = (run.meta.get("provenance") or {}).get("packages") or {}
    return pd.DataFrame({"package": list(pk), "version": [str(v) for v in pk.values()]})


def study_settings(run: Run) -> dict[str, Any]:
    """The study.json entries that define what was run: base and paper config, the axis or search space."""
    return {k: run.meta.get(k) for k in ("base_config", "paper_config", "axis", "axis_values", "search_space")}


def paper_table(paper: PaperTables) -> pd.DataFrame:
    return paper.coco[PAPER_TABLE_COLUMNS]


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def best_per_dataset(runs: Sequence[RunSummary]) -> pd.DataFrame:
    """Our best trial per (dataset, backbone, resolution) over every listed run."""
    cols = ["dataset", "backbone", "resolution", "pretrain", "run", "trial_id", "metric", "value", "CF1", "OF1",
            "CF1_top3", "OF1_top3", "status"]
    best: dict[tuple, RunSummary] = {}
    for s in runs:
        if s.best_value is None:
            continue
        k = (s.dataset, s.backbone, s.image_size)
        if k not in best or s.best_value > best[k].best_value:
            best[k] = s
    rows = []
    for (ds, bb, res), s in sorted(best.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        t = s.best_trial or {}
        rows.append({"dataset": ds, "backbone": bb, "resolution": res, "pretrain": s.pretrain, "run": s.key,
                     "trial_id": str(t.get("trial_id")), "metric": s.best_metric, "value": s.best_value,
                     **{c: _float(t.get(c)) for c in ("CF1", "OF1", "CF1_top3", "OF1_top3")}, "status": s.status})
    return pd.DataFrame(rows, columns=cols)


def comparison_table(best: pd.DataFrame, paper: PaperTables) -> pd.DataFrame:
    """Our best result per dataset (first) beside the paper's rows for the same dataset (all of COCO's table).

    Ours: mAP is the best epoch's mAP (EMA model where exported), CF1/OF1 the last epoch's."""
    cols = ["dataset", "backbone", "resolution", "pretrain", "method", "mAP", "CF1", "OF1", "CF1_top3",
            "OF1_top3", "ours - SALGL paper", "source"]
    rows = []
    coco = paper.coco
    for ds in sorted(set(best["dataset"]) | (set(coco["dataset"].dropna()) if len(coco) else set())):
        for _, b in best[best["dataset"] == ds].iterrows():
            ref = paper_reference(coco, ds, b["backbone"], b["resolution"])
            rows.append({"dataset": ds, "backbone": b["backbone"], "resolution": b["resolution"],
                         "pretrain": b["pretrain"], "method": f"ours: {b['run']} trial {b['trial_id']}",
                         "mAP": round(b["value"], 3), **{c: round(b[c], 3) for c in ("CF1", "OF1", "CF1_top3",
                                                                                      "OF1_top3")},
                         "ours - SALGL paper": round(b["value"] - ref.value, 3) if ref else np.nan,
                         "source": f"this project: {b['run']}/trials.csv ({b['metric']})"})
        for _, r in coco[coco["dataset"] == ds].iterrows() if len(coco) else []:
            rows.append({"dataset": ds, "backbone": r["backbone"], "resolution": r["resolution"],
                         "pretrain": r["pretrain"], "method": r["method"] + (" (paper)" if r["is_salgl"] else ""),
                         **{c: r[c] for c in ("mAP", "CF1", "OF1", "CF1_top3", "OF1_top3")},
                         "ours - SALGL paper": np.nan, "source": r["source"]})
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------------
# Scenes


def typical_labels(scene: SceneData, top: int = 5) -> pd.DataFrame:
    """Per scene, the labels most typical of it.

    share = the fraction of a label's (EMA-)counted images that went to this scene; lift = share divided
    by the scene's fraction of all label occurrences (1 = no preference). Ranked by lift, then count.
    """
    diag = np.clip(scene.diag, 0, None)
    per_label = diag.sum(0)
    total = diag.sum()
    rows = []
    for k in range(scene.num_scenes):
        frac_k = diag[k].sum() / total if total > 0 else 0.0
        share = np.divide(diag[k], per_label, out=np.zeros_like(diag[k]), where=per_label > 0)
        lift = share / frac_k if frac_k > 0 else np.zeros_like(share)
        order = sorted((i for i in range(diag.shape[1]) if diag[k, i] > 0), key=lambda i: (-lift[i], -diag[k, i]))
        for r, i in enumerate(order[:top], 1):
            rows.append({"scene": k, "rank": r, "label": scene.class_names[i], "count": float(diag[k, i]),
                         "share": float(share[i]), "lift": float(lift[i])})
    return pd.DataFrame(rows, columns=["scene", "rank", "label", "count", "share", "lift"])
