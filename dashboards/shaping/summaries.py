"""Shaping what spans runs or describes one: the run picker's lines and the run list, a run's provenance and
settings, and our best results beside the paper's table. Plain data in, plain tables out (no streamlit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dashboards.data.paper import PaperTables, paper_reference
from dashboards.data.runs import Run, RunSummary
from dashboards.shaping import texts
from dashboards.shaping.fmt import fmt_num, fmt_seconds
from salgl_core.config import DATASETS
from studies.design.spec import ARM
from studies.exports.schema import REPORTED_METRIC

# The datasets the paper reports on; the embedded synthetic data is ours, for laptops and tests.
REAL_DATASETS = tuple(d for d in DATASETS if d != "synthetic")

# The paper's COCO table as the views show it.
PAPER_TABLE_COLUMNS = ["backbone", "resolution", "pretrain", "method", "mAP", "CP", "CR", "CF1", "OP", "OR", "OF1",
                       "CP_top3", "CR_top3", "CF1_top3", "OP_top3", "OR_top3", "OF1_top3"]


def run_label(s: RunSummary, folder: bool = True) -> str:
    """The run picker's line; `folder`: start with the results folder it came from."""
    best = f"best trial's EMA mAP {fmt_num(s.best_value)}" if s.best_value is not None else "no result yet"
    return ((f"{s.where} › " if folder else "") + f"{s.key} · {s.status} · {s.trials_text()} trials · "
            f"{best} · {s.device or '?'} · {fmt_seconds(s.trial_seconds_total)}"
            + (" · ⚠ file problems" if s.warnings else ""))


def runs_table(runs: Sequence[RunSummary]) -> pd.DataFrame:
    """One row per listed run; its number is the best single trial's reported number (the header card's)."""
    return pd.DataFrame([{
        "folder": s.where, "run": s.key, "status": s.status, "dataset": s.dataset, "backbone": s.backbone,
        "px": s.image_size, "axis": s.axis or "(joint search)", "trials ended": s.trials_text(),
        texts.REPORTED_CARD: s.best_value, "device": s.device, "trial time": fmt_seconds(s.trial_seconds_total),
        "wall time": fmt_seconds(s.wall_seconds), "started": s.started} for s in runs])


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


def stands_beside_paper(s: RunSummary) -> bool:
    """Whether a run's numbers can stand beside the paper's: a real dataset's (not the embedded synthetic data),
    from a study of one config field or a joint search, not of named arms (mechanism, visibility), whose best arm
    may be an oracle given the true scenes."""
    return s.dataset in REAL_DATASETS and s.axis != ARM


def best_per_dataset(runs: Sequence[RunSummary]) -> pd.DataFrame:
    """Our best trial by the reported metric per (dataset, backbone, resolution) over the listed runs that stand
    beside the paper (stands_beside_paper)."""
    cols = ["dataset", "backbone", "resolution", "pretrain", "run", "trial_id", "metric", "value", "CF1", "OF1",
            "CF1_top3", "OF1_top3", "status"]
    best: dict[tuple, RunSummary] = {}
    for s in runs:
        if s.best_value is None or not stands_beside_paper(s):
            continue
        k = (s.dataset, s.backbone, s.image_size)
        if k not in best or s.best_value > best[k].best_value:
            best[k] = s
    rows = []
    for (ds, bb, res), s in sorted(best.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        t = s.best_trial or {}
        rows.append({"dataset": ds, "backbone": bb, "resolution": res, "pretrain": s.pretrain, "run": s.uid,
                     "trial_id": str(t.get("trial_id")), "metric": REPORTED_METRIC, "value": s.best_value,
                     **{c: _float(t.get(c)) for c in ("CF1", "OF1", "CF1_top3", "OF1_top3")}, "status": s.status})
    return pd.DataFrame(rows, columns=cols)


def comparison_table(best: pd.DataFrame, paper: PaperTables) -> pd.DataFrame:
    """Our best result per dataset (first) beside the paper's rows for the same dataset (all of COCO's table).
    `best`: best_per_dataset's, so real datasets only; synthetic runs never sit beside the paper's rows.

    Ours: mAP is the reported metric (the EMA model at its best epoch, as the paper's), CF1/OF1 the last epoch's."""
    cols = ["dataset", "backbone", "resolution", "pretrain", "method", "mAP", "CF1", "OF1", "CF1_top3",
            "OF1_top3", "ours - SALGL paper", "source"]
    rows = []
    coco = paper.coco
    for ds in sorted(set(best["dataset"]) | (set(coco["dataset"].dropna()) if len(coco) else set())):
        for _, b in best[best["dataset"] == ds].iterrows():
            ref = paper_reference(coco, ds, b["backbone"], b["resolution"], pretrain=b["pretrain"])
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
