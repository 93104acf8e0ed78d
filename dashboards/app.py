"""SALGL ablation dashboard: `streamlit run dashboards/app.py`.

Reads results/ only (results/README.md); never needs Ray running. The results folder is <repo>/results,
$SALGL_RESULTS_DIR, or whatever the sidebar box says.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

# `streamlit run` puts dashboards/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dashboards import charts  # noqa: E402
from dashboards import loader as L  # noqa: E402

AXIS_LABELS = {"num_scenes": "number of scenes K", "gnn_steps": "graph propagation steps T",
               "comat_momentum": "co-occurrence momentum μ (ours, not the paper's)"}
METRICS = ("mAP", "mAP_ema", "best_mAP", "best_mAP_ema", "CF1", "OF1", "CF1_top3", "OF1_top3", "scene_nmi")
METRIC_HELP = ("mAP / mAP_ema: the last epoch's mAP of the model / its EMA copy. best_*: the best epoch's. "
               "The paper reports the EMA model at its best epoch (picked on the test set), i.e. best_mAP_ema. "
               "CF1 / OF1: per-class / overall F1 at score >= 0.5.")
MOMENTUM_NOTE = ("**comat_momentum is our knob, not the paper's.** The paper (and the official code) keeps each "
                 "scene's co-occurrence counts as a plain running sum over the whole run, i.e. μ = 1; smaller μ "
                 "makes M_k ← μ·M_k + batch counts forget old batches. The paper has no ablation of it.")
PAPER_COLUMNS = ["backbone", "resolution", "pretrain", "method", "mAP", "CP", "CR", "CF1", "OP", "OR", "OF1",
                 "CP_top3", "CR_top3", "CF1_top3", "OP_top3", "OR_top3", "OF1_top3"]


def guarded(what: str, where: Path | str, fn: Callable[[], None]) -> None:
    """Run one view; an unforeseen problem with the files becomes a message naming them, not a traceback."""
    try:
        fn()
    except L.LoadError as e:
        st.error(f"{what}: {L.shown(e.path)}: {e.message}")
    except Exception as e:  # noqa: BLE001 - the page must stay usable whatever a results file holds
        st.error(f"{what}: could not be drawn from {where}: {type(e).__name__}: {e}")
        with st.expander("details"):
            st.code(traceback.format_exc())


def table(df: pd.DataFrame, **kw) -> None:
    """A read-only table: full width, no index, missing values shown as a dash."""
    st.dataframe(df, width="stretch", hide_index=True, placeholder="–", **kw)


def paper_context(paper: L.PaperTables, expanded: bool = False) -> None:
    with st.expander("The paper's MS-COCO 2014 table (SALGL, ICCV 2023)", expanded=expanded):
        if len(paper.coco):
            table(paper.coco[PAPER_COLUMNS], height="content")
            st.caption(f"Source: {paper.coco['source'].iloc[-1]}. Empty cells: not reported.")
        else:
            st.info("The paper's table is not available (see the warning above).")


def runs_table(runs: list[L.RunSummary]) -> pd.DataFrame:
    return pd.DataFrame([{
        "run": s.key, "status": s.status, "dataset": s.dataset, "backbone": s.backbone, "px": s.image_size,
        "axis": s.axis or "(joint search)", "trials": f"{s.n_finished}/{s.n_trials if s.n_trials is not None else '?'}",
        "best mAP": s.best_value, "metric": s.best_metric, "device": s.device,
        "trial time": L.fmt_seconds(s.trial_seconds_total), "wall time": L.fmt_seconds(s.wall_seconds),
        "started": s.started} for s in runs])


def metric_options(trials: pd.DataFrame) -> list[str]:
    opts = [m for m in METRICS if m in trials and (m in METRICS[:6] or trials[m].notna().any())]
    return opts or ["mAP"]


def paper_config_value(run: L.Run) -> str | None:
    v = run.paper_config.get(run.axis) if run.axis else None
    return None if v is None else L.fmt_value(v)


# ---------------------------------------------------------------------------------------------
# Views


def ablation_view(run: L.Run, paper: L.PaperTables) -> None:
    axis = run.axis
    if axis == "comat_momentum":
        st.info(MOMENTUM_NOTE)
    if axis not in run.trials:
        st.info(f"{L.shown(run.path / 'trials.csv')} has no {axis} column (yet): nothing to plot against.")
        return
    metric = st.selectbox("Metric", metric_options(run.trials), index=0, key="ablation_metric", help=METRIC_HELP)
    ref = L.paper_reference(paper.coco, run.dataset, run.backbone, run.image_size, metric)
    repro = L.reproduction_refs(paper.reproductions, run.dataset, run.backbone, run.image_size)
    if metric not in L.PAPER_METRIC:
        repro = repro.iloc[0:0]
    ab = L.ablation_summary(run.trials, axis, metric, run.paper_config)
    if not len(ab.points) or not ab.points["metric"].notna().any():
        st.info(f"No trial in {L.shown(run.path / 'trials.csv')} has a value for {metric} yet"
                + (" (the study is still running)." if run.status == "RUNNING" else "."))
        return
    axis_label = AXIS_LABELS.get(axis, axis)
    if ref is not None:
        counted = ab.summary[ab.summary["n"] > 0]
        cols = st.columns(3)
        cols[0].metric(f"SALGL paper ({ref.metric})", f"{ref.value:g}", help=ref.source)
        notes = []
        paper_rows = counted[counted["is_paper"]]
        if len(paper_rows):
            p = paper_rows.iloc[0]
            cols[1].metric("ours − paper, paper's config", f"{p['mean'] - ref.value:+.2f}")
            notes.append(f"paper's config {axis} = {p['label']}: mean {metric} {p['mean']:.2f} (n = {p['n']})")
        if len(counted):
            b = counted.loc[counted["mean"].idxmax()]
            cols[2].metric("ours − paper, best setting", f"{b['mean'] - ref.value:+.2f}")
            notes.append(f"best setting {axis} = {b['label']}: mean {metric} {b['mean']:.2f} (n = {b['n']})")
        st.caption("; ".join(notes) + f"; paper: {ref.describe()}.")
    else:
        what = L.PAPER_METRIC.get(metric, metric)
        if run.dataset in ("voc2007", "nuswide"):
            st.info(f"No paper number for {run.dataset} is on file (results/paper holds the paper's MS-COCO table "
                    f"only; its VOC / NUS-WIDE tables could not be retrieved), so there is no paper reference line. "
                    f"The paper's MS-COCO table is below for context.")
        else:
            st.info(f"The paper reports no {what} for {run.dataset} with {run.backbone} at {run.image_size} px, so "
                    f"there is no reference line" + (" (its numbers are for MS-COCO, VOC 2007 and NUS-WIDE with "
                                                     "ResNet-101 / ViT-L16; this run uses the embedded synthetic "
                                                     "data)" if run.dataset == "synthetic" else "")
                    + ". The paper's MS-COCO table is below for context.")
        if len(repro):
            st.caption("Dotted lines: published reproduction figures for this setting (results/paper/"
                       "reproductions.csv).")
    fig = charts.ablation_figure(ab, axis_label, metric, ref, repro if ref is None else None)
    st.plotly_chart(fig, width="stretch", key="ablation_chart")
    pv = paper_config_value(run)
    st.caption(f"Each point is one trial (colour = seed); the red diamonds are the mean ± sample std over the "
               f"FINISHED seeds. ★ = the paper's configuration{f' ({axis} = {pv})' if pv else ''}."
               + (f" Dashed line: {ref.describe()}." if ref is not None else ""))
    summary = ab.summary.rename(columns={"label": axis, "n": "n (finished)", "failed": "errored / diverged",
                                       "is_paper": "paper config"}).drop(columns="value")
    table(summary.round(3))
    if ref is None:
        paper_context(paper, expanded=True)


def search_view(run: L.Run) -> None:
    metric = st.selectbox("Metric", metric_options(run.trials), index=0, key="search_metric", help=METRIC_HELP)
    params = L.search_params(run)
    if not params:
        st.info(f"{L.shown(run.path / 'study.json')} has no search_space and no config field varies across the "
                f"trials in trials.csv: nothing to plot against.")
        return
    pts = L.search_points(run.trials, params, metric)
    if not len(pts):
        st.info(f"No trial in {L.shown(run.path / 'trials.csv')} has a value for {metric} yet.")
        return
    vals = pd.to_numeric(run.trials[metric], errors="coerce")
    best = str(run.trials.loc[vals.idxmax(), "trial_id"]) if vals.notna().any() else None
    fig = charts.search_figure(pts, params, metric, best, L.log_scale_params(run))
    st.plotly_chart(fig, width="stretch", key="search_chart")
    st.caption(f"Joint search ({run.meta.get('sampler') or '?'} sampler, {run.meta.get('scheduler') or '?'} "
               f"scheduler): one point per trial; STOPPED = ended early by the scheduler. ★ = best trial.")
    top = run.trials.assign(_m=vals).sort_values("_m", ascending=False).head(10)
    table(top[["trial_id", "status", *params, metric, "epochs_done"]])


def curves_view(run: L.Run, paper: L.PaperTables) -> None:
    ep = run.epochs
    if not len(ep):
        st.info(f"{L.shown(run.path / 'epochs.csv')} has no rows yet" +
                (" (the study is still running)." if run.status == "RUNNING" else "."))
        return
    known = {str(r["trial_id"]): L.trial_label(r, run.axis) for _, r in run.trials.iterrows()}
    ids = [t for t in known if t in set(ep["trial_id"])] + sorted(set(ep["trial_id"]) - set(known))
    labels = {t: known.get(t, f"{t} (no trials.csv row yet)") for t in ids}
    t = run.trials
    paper_first = t[t["is_paper_config"]]["trial_id"].tolist() if "is_paper_config" in t else []
    default = [i for i in dict.fromkeys(paper_first + ids) if i in ids][:6]
    chosen = st.multiselect("Trials", ids, default=default, format_func=lambda i: labels[i],
                            key=f"curve_trials::{run.key}")
    if not chosen:
        st.info("Pick at least one trial.")
        return
    ref = paper.curve if run.dataset == "coco" and len(paper.curve) else None
    st.plotly_chart(charts.learning_curves_figure(ep, chosen, labels, ref), width="stretch", key="curves_chart")
    if ref is not None:
        st.caption("Dashed: the published COCO reproduction (yu-gi-oh-leilei/SALGL, ResNet-101 448 px), its running "
                   "best EMA mAP per epoch (results/paper/coco_reproduction_curve.csv; its epoch 0 is drawn at 1).")
    st.plotly_chart(charts.losses_figure(ep, chosen, labels, ref), width="stretch", key="losses_chart")


def scenes_view(run: L.Run) -> None:
    files = run.scene_files
    if not files:
        st.info(f"No per-trial scene statistics in {L.shown(run.path / 'scenes')} "
                + ("yet (the study is still running)." if run.status == "RUNNING" else "(scenes/<trial_id>.json)."))
        return
    known = {str(r["trial_id"]): L.trial_label(r, run.axis) for _, r in run.trials.iterrows()}
    ids = [t for t in known if t in files] + sorted(set(files) - set(known))
    t = run.trials
    paper_first = [i for i in (t[t["is_paper_config"]]["trial_id"].tolist() if len(t) else []) if i in files]
    tid = st.selectbox("Trial", ids, index=ids.index(paper_first[0]) if paper_first else 0,
                       format_func=lambda i: known.get(i, i), key=f"scene_trial::{run.key}")
    scene = L.load_scene(files[tid], run.class_names)
    left, right = st.columns([3, 2])
    with left:
        c1, c2 = st.columns(2)
        k = c1.selectbox("Scene", list(range(scene.num_scenes)), format_func=lambda i: f"scene {i}",
                         key=f"scene_k::{run.key}")
        view = c2.radio("Show", ["P(j | i, scene)", "difference to the mean over scenes"], key=f"scene_mode::{run.key}",
                        horizontal=True, disabled=scene.num_scenes == 1)
        st.plotly_chart(charts.cooccurrence_figure(scene, k, view.startswith("difference")), width="stretch",
                        key="cooc_chart")
    with right:
        st.plotly_chart(charts.scene_usage_figure(scene), width="stretch", key="usage_chart")
        st.markdown("**Labels most typical of each scene**")
        table(L.typical_labels(scene, 5).round(3), height=320)
        st.caption("share: fraction of the label's counted images that went to this scene; lift: share ÷ the "
                   "scene's fraction of all label occurrences (1 = no preference).")
    if scene.nmi is not None or scene.contingency is not None:
        st.subheader("Learned vs true scenes (synthetic data)")
        a, b = st.columns([1, 3])
        a.metric("NMI (learned vs true scene)", L.fmt_num(scene.nmi, 3))
        if scene.contingency is not None:
            b.plotly_chart(charts.contingency_figure(scene), width="stretch", key="contingency_chart")
    elif run.dataset == "synthetic":
        st.info(f"{L.shown(scene.path)} has no true-scene contingency (true_scene_nmi / contingency are null).")


def trials_view(run: L.Run) -> None:
    t = run.trials
    if not len(t):
        st.info(f"{L.shown(run.path / 'trials.csv')} has no trial rows yet.")
        return
    c1, c2, c3 = st.columns(3)
    statuses = sorted(t["status"].unique())
    keep = c1.multiselect("Status", statuses, default=statuses, key=f"f_status::{run.key}")
    mask = t["status"].isin(keep)
    if run.axis and run.axis in t:
        values = sorted(t[run.axis].dropna().unique().tolist())
        chosen = c2.multiselect(run.axis, values, default=values, format_func=L.fmt_value, key=f"f_axis::{run.key}")
        mask &= t[run.axis].isin(chosen)
    if "seed" in t and t["seed"].notna().any():
        seeds = sorted(t["seed"].dropna().unique().tolist())
        chosen_seeds = c3.multiselect("Seed", seeds, default=seeds, format_func=L.fmt_value, key=f"f_seed::{run.key}")
        mask &= t["seed"].isin(chosen_seeds)
    all_cols = st.checkbox("Show every config field", value=False, key="f_allcols")
    config = L.config_columns(t)
    varied = [run.axis] if run.axis in t else L.search_params(run)
    lead = ["trial_id", "status", "seed", "is_paper_config", *[c for c in varied if c in t]]
    result = [c for c in L.TRIAL_COLUMNS if c in t and c not in lead]
    cols = lead + (config if all_cols else []) + result
    shown = t.loc[mask, list(dict.fromkeys(cols))]
    table(shown)
    st.download_button("Download these trials (CSV)", shown.to_csv(index=False).encode(),
                       file_name=f"{run.study}_{run.path.name}_trials.csv", mime="text/csv", key="download_trials")
    bad = t[t["status"].isin(["ERROR", "DIVERGED"])]
    if len(bad):
        st.warning(f"{len(bad)} trial(s) ended in ERROR / DIVERGED; their `error` column says why.")


def provenance_view(run: L.Run) -> None:
    m = run.meta
    prov = m.get("provenance") or {}
    if not prov:
        st.warning(f"{L.shown(run.path / 'study.json')} has no provenance block.")
    cluster = prov.get("ray_cluster") or {}
    wall, total = m.get("wall_seconds"), m.get("trial_seconds_total")
    par = (f"{total / wall:.2f}x" if isinstance(wall, (int, float)) and isinstance(total, (int, float)) and wall > 0
           else "–")
    rows = {
        "study / run": run.key, "status": run.status, "started": m.get("started"), "finished": m.get("finished"),
        "wall time": L.fmt_seconds(wall), "summed trial time": L.fmt_seconds(total),
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
    table(pd.DataFrame({"field": list(rows), "value": [str(v) for v in rows.values()]}), height="content")
    pk = prov.get("packages") or {}
    if pk:
        st.markdown("**Package versions**")
        table(pd.DataFrame({"package": list(pk), "version": [str(v) for v in pk.values()]}), height="content")
    with st.expander("base_config, paper_config, axis values / search space (study.json)"):
        st.code(json.dumps({k: m.get(k) for k in ("base_config", "paper_config", "axis", "axis_values",
                                                   "search_space")}, indent=2, default=str), language="json")


def comparison_view(runs: list[L.RunSummary], paper: L.PaperTables) -> None:
    st.markdown("**Our best result per dataset beside the paper's rows**")
    comparison = L.comparison_table(L.best_per_dataset(runs), paper)
    if len(comparison):
        table(comparison, height="content")
    st.caption("Ours: the trial with the highest best-epoch mAP (EMA model where exported) over every run of that "
               "dataset / backbone / resolution; its CF1 / OF1 are the last epoch's. Paper rows: "
               "results/paper/coco_comparison.csv (the paper's table has no VOC or NUS-WIDE numbers we could "
               "retrieve).")
    if len(paper.reproductions):
        st.markdown("**Published reproductions** (results/paper/reproductions.csv)")
        table(paper.reproductions, height="content")


# ---------------------------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="SALGL ablations", layout="wide")
    st.sidebar.title("SALGL ablations")
    typed = st.sidebar.text_input("Results folder", value=str(L.results_dir()), key="results_dir",
                                  help="Default: <repo>/results, or $SALGL_RESULTS_DIR when set.")
    root = L.results_dir(typed)
    address = st.get_option("server.address")
    if address not in ("127.0.0.1", "localhost", "::1"):
        st.sidebar.warning(f"This server listens on {address or 'all network interfaces'}, not only this machine. "
                           f"Start it from the repository root (which reads .streamlit/config.toml) or pass "
                           f"--server.address 127.0.0.1.")
    st.sidebar.button("Reload files", key="reload")
    paper = L.load_paper_tables(root)
    for w in paper.warnings:
        st.warning(w)
    try:
        runs, problems = L.list_runs(root)
    except L.LoadError as e:
        st.error(f"{e.path}: {e.message}")
        paper_context(paper, expanded=True)
        return
    for w in problems:
        st.warning(w)
    if not runs:
        st.info(f"No study runs in {root} yet. Run a study (e.g. `python studies/scene_count.py`); its export "
                f"(results/<study>/<run>/study.json, trials.csv, ...) appears here.")
        paper_context(paper, expanded=True)
        return
    by_key = {s.key: s for s in runs}
    key = st.sidebar.selectbox("Study run (newest first)", list(by_key), format_func=lambda k: by_key[k].label(),
                               key="run")
    s = by_key[key]
    st.sidebar.caption(f"{len(runs)} run(s) in {root}")
    try:
        run = L.load_run(s.path)
    except L.LoadError as e:
        st.error(f"{L.shown(e.path)}: {e.message}")
        return

    st.header(f"{run.study} · {run.path.name}")
    st.caption(f"{run.dataset} · {run.backbone} · {run.image_size} px · axis: {run.axis or 'joint search'} · "
               f"{run.meta.get('sampler') or '?'} / {run.meta.get('scheduler') or '?'} · device: {s.device or '?'} · "
               f"protocol: {run.meta.get('metric_protocol') or 'not stated'}")
    c = st.columns(4)
    c[0].metric("status", run.status)
    c[1].metric("trials ended", f"{s.n_finished} / {s.n_trials if s.n_trials is not None else '?'}",
                help="FINISHED, STOPPED (early-stopped), ERROR or DIVERGED, out of all trials")
    c[2].metric(f"best ({s.best_metric})", L.fmt_num(s.best_value))
    c[3].metric("summed trial time", L.fmt_seconds(s.trial_seconds_total),
                help=f"wall time {L.fmt_seconds(s.wall_seconds)}")
    for n in run.notes:
        st.info(n)
    for w in run.warnings:
        st.warning(w)
    with st.expander(f"All runs ({len(runs)})"):
        table(runs_table(runs))

    first = "Ablation" if run.axis else "Search"
    tabs = st.tabs([first, "Learning curves", "Scenes", "Trials", "Provenance", "Paper comparison"])
    where = L.shown(run.path, 3)
    with tabs[0]:
        if run.axis:
            guarded("Ablation view", where, lambda: ablation_view(run, paper))
        else:
            guarded("Search view", where, lambda: search_view(run))
    with tabs[1]:
        guarded("Learning curves", where, lambda: curves_view(run, paper))
    with tabs[2]:
        guarded("Scene analysis", where, lambda: scenes_view(run))
    with tabs[3]:
        guarded("Trial table", where, lambda: trials_view(run))
    with tabs[4]:
        guarded("Provenance", where, lambda: provenance_view(run))
    with tabs[5]:
        guarded("Paper comparison", str(root), lambda: comparison_view(runs, paper))


main()
