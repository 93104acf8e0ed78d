"""The Streamlit pages of the SALGL ablation dashboard: `streamlit run dashboards/app.py`.

Lays out what the other dashboards modules read (files, runs, paper) and shape (views, charts); no data
logic here. Reads results/ only (results/README.md); never needs Ray running. The results folder is
<repo>/results, $SALGL_RESULTS_DIR, or whatever the sidebar box says.
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
from dashboards import charts, views  # noqa: E402
from dashboards.files import LoadError, SceneData, load_scene, stamp  # noqa: E402
from dashboards.fmt import fmt_num, fmt_seconds, fmt_value  # noqa: E402
from dashboards.paper import PAPER_METRIC, PaperTables, load_paper_tables, paper_stamp  # noqa: E402
from dashboards.paths import display_path, results_dir, shown  # noqa: E402
from dashboards.runs import (  # noqa: E402
    Run,
    RunSummary,
    list_runs,
    load_run,
    run_stamp,
    status_notes,
    summarize_dir,
)

AXIS_LABELS = {"num_scenes": "number of scenes K", "gnn_steps": "graph propagation steps T",
               "comat_momentum": "co-occurrence momentum μ (ours, not the paper's)"}
METRIC_HELP = ("mAP / mAP_ema: the last epoch's mAP of the model / its EMA copy. best_*: the best epoch's. "
               "The paper reports the EMA model at its best epoch (picked on the test set), i.e. best_mAP_ema. "
               "CF1 / OF1: per-class / overall F1 at score >= 0.5.")
MOMENTUM_NOTE = ("**comat_momentum is our knob, not the paper's.** The paper (and the official code) keeps each "
                 "scene's co-occurrence counts as a plain running sum over the whole run, i.e. μ = 1; smaller μ "
                 "makes M_k ← μ·M_k + batch counts forget old batches. The paper has no ablation of it.")


# ---------------------------------------------------------------------------------------------
# Cached reads: the key includes the files' mtimes and sizes, so a widget click reuses the parsed run
# and a rewrite by a running study (the export replaces files whole) is picked up on the next rerun.


@st.cache_data(show_spinner=False, max_entries=512)
def cached_summary(run_dir: str, files: tuple) -> RunSummary:
    return summarize_dir(Path(run_dir))


@st.cache_data(show_spinner=False, max_entries=16)
def cached_run(run_dir: str, files: tuple) -> Run:
    return load_run(run_dir)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_scene(path: str, files: tuple, class_names: tuple[str, ...]) -> SceneData:
    return load_scene(path, class_names)


@st.cache_data(show_spinner=False, max_entries=8)
def cached_paper(root: str, files: tuple) -> PaperTables:
    return load_paper_tables(root)


def summary_of(run_dir: Path) -> RunSummary:
    return cached_summary(str(run_dir), run_stamp(run_dir))


# ---------------------------------------------------------------------------------------------
# Building blocks


def guarded(what: str, where: Path | str, fn: Callable[[], None]) -> None:
    """Run one view; an unforeseen problem with the files becomes a message naming them, not a traceback."""
    try:
        fn()
    except LoadError as e:
        st.error(f"{what}: {shown(e.path)}: {e.message}")
    except Exception as e:  # noqa: BLE001 - the page must stay usable whatever a results file holds
        st.error(f"{what}: could not be drawn from {where}: {type(e).__name__}: {e}")
        with st.expander("details"):
            st.code(traceback.format_exc())


def table(df: pd.DataFrame, **kw) -> None:
    """A read-only table: full width, no index, missing values shown as a dash."""
    st.dataframe(df, width="stretch", hide_index=True, placeholder="–", **kw)


def paper_context(paper: PaperTables, expanded: bool = False) -> None:
    with st.expander("The paper's MS-COCO 2014 table (SALGL, ICCV 2023)", expanded=expanded):
        if len(paper.coco):
            table(views.paper_table(paper), height="content")
            st.caption(f"Source: {paper.coco['source'].iloc[-1]}. Empty cells: not reported.")
        else:
            st.info("The paper's table is not available (see the warning above).")


def metric_picker(run: Run, key: str) -> str:
    return st.selectbox("Metric", views.metric_options(run.trials), index=0, key=key, help=METRIC_HELP)


# ---------------------------------------------------------------------------------------------
# Views


def no_reference_note(run: Run, metric: str, repro: pd.DataFrame) -> None:
    if run.dataset in ("voc2007", "nuswide"):
        st.info(f"No paper number for {run.dataset} is on file (results/paper holds the paper's MS-COCO table "
                f"only; its VOC / NUS-WIDE tables could not be retrieved), so there is no paper reference line. "
                f"The paper's MS-COCO table is below for context.")
    else:
        st.info(f"The paper reports no {PAPER_METRIC.get(metric, metric)} for {run.dataset} with {run.backbone} at "
                f"{run.image_size} px, so there is no reference line" + (
                    " (its numbers are for MS-COCO, VOC 2007 and NUS-WIDE with ResNet-101 / ViT-L16; this run uses "
                    "the embedded synthetic data)" if run.dataset == "synthetic" else "")
                + ". The paper's MS-COCO table is below for context.")
    if len(repro):
        st.caption("Dotted lines: published reproduction figures for this setting (results/paper/"
                   "reproductions.csv).")


def ablation_view(run: Run, paper: PaperTables) -> None:
    axis = run.axis
    if axis == "comat_momentum":
        st.info(MOMENTUM_NOTE)
    if axis not in run.trials:
        st.info(f"{shown(run.path / 'trials.csv')} has no {axis} column (yet): nothing to plot against.")
        return
    metric = metric_picker(run, "ablation_metric")
    ref, repro = views.paper_references(run, paper, metric)
    ab = views.ablation_summary(run.trials, axis, metric, run.paper_config)
    if not len(ab.points) or not ab.points["metric"].notna().any():
        st.info(f"No trial in {shown(run.path / 'trials.csv')} has a value for {metric} yet"
                + (" (the study is still running)." if run.status == "RUNNING" else "."))
        return
    if ref is not None:
        paper_row, best_row = views.ablation_highlights(ab)
        cols = st.columns(3)
        cols[0].metric(f"SALGL paper ({ref.metric})", f"{ref.value:g}", help=ref.source)
        notes = []
        if paper_row is not None:
            cols[1].metric("ours − paper, paper's config", f"{paper_row['mean'] - ref.value:+.2f}")
            notes.append(f"paper's config {axis} = {paper_row['label']}: mean {metric} {paper_row['mean']:.2f} "
                         f"(n = {paper_row['n']})")
        if best_row is not None:
            cols[2].metric("ours − paper, best setting", f"{best_row['mean'] - ref.value:+.2f}")
            notes.append(f"best setting {axis} = {best_row['label']}: mean {metric} {best_row['mean']:.2f} "
                         f"(n = {best_row['n']})")
        st.caption("; ".join(notes) + f"; paper: {ref.describe()}.")
    else:
        no_reference_note(run, metric, repro)
    fig = charts.ablation_figure(ab, AXIS_LABELS.get(axis, axis), metric, ref, repro if ref is None else None)
    st.plotly_chart(fig, width="stretch", key="ablation_chart")
    pv = views.paper_config_value(run)
    st.caption(f"Each point is one trial (colour = seed); the red diamonds are the mean ± sample std over the "
               f"FINISHED seeds. ★ = the paper's configuration{f' ({axis} = {pv})' if pv else ''}."
               + (f" Dashed line: {ref.describe()}." if ref is not None else ""))
    table(views.ablation_table(ab))
    if ref is None:
        paper_context(paper, expanded=True)


def search_view(run: Run) -> None:
    metric = metric_picker(run, "search_metric")
    params = views.search_params(run)
    if not params:
        st.info(f"{shown(run.path / 'study.json')} has no search_space and no config field varies across the "
                f"trials in trials.csv: nothing to plot against.")
        return
    pts = views.search_points(run.trials, params, metric)
    if not len(pts):
        st.info(f"No trial in {shown(run.path / 'trials.csv')} has a value for {metric} yet.")
        return
    fig = charts.search_figure(pts, params, metric, views.best_trial_id(run.trials, metric),
                               views.log_scale_params(run))
    st.plotly_chart(fig, width="stretch", key="search_chart")
    st.caption(f"Joint search ({run.meta.get('sampler') or '?'} sampler, {run.meta.get('scheduler') or '?'} "
               f"scheduler): one point per trial; STOPPED = ended early by the scheduler. ★ = best trial.")
    table(views.top_trials(run.trials, params, metric))


def curves_view(run: Run, paper: PaperTables) -> None:
    ep = run.epochs
    if not len(ep):
        st.info(f"{shown(run.path / 'epochs.csv')} has no rows yet" +
                (" (the study is still running)." if run.status == "RUNNING" else "."))
        return
    ids, labels, preferred = views.trial_choices(run, ep["trial_id"])
    chosen = st.multiselect("Trials", ids, default=preferred[:6], format_func=lambda i: labels[i],
                            key=f"curve_trials::{run.key}")
    if not chosen:
        st.info("Pick at least one trial.")
        return
    ref = views.reference_curve(run, paper)
    st.plotly_chart(charts.learning_curves_figure(ep, chosen, labels, ref), width="stretch", key="curves_chart")
    if ref is not None:
        st.caption("Dashed: the published COCO reproduction (yu-gi-oh-leilei/SALGL, ResNet-101 448 px), its running "
                   "best EMA mAP per epoch (results/paper/coco_reproduction_curve.csv; its epoch 0 is drawn at 1).")
    st.plotly_chart(charts.losses_figure(ep, chosen, labels, ref), width="stretch", key="losses_chart")


def scenes_view(run: Run) -> None:
    files = run.scene_files
    if not files:
        st.info(f"No per-trial scene statistics in {shown(run.path / 'scenes')} "
                + ("yet (the study is still running)." if run.status == "RUNNING" else "(scenes/<trial_id>.json)."))
        return
    ids, labels, preferred = views.trial_choices(run, files)
    tid = st.selectbox("Trial", ids, index=ids.index(preferred[0]), format_func=lambda i: labels[i],
                       key=f"scene_trial::{run.key}")
    scene = cached_scene(str(files[tid]), stamp(files[tid]), tuple(run.class_names))
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
        table(views.typical_labels(scene, 5).round(3), height=320)
        st.caption("share: fraction of the label's counted images that went to this scene; lift: share ÷ the "
                   "scene's fraction of all label occurrences (1 = no preference).")
    if scene.nmi is not None or scene.contingency is not None:
        st.subheader("Learned vs true scenes (synthetic data)")
        a, b = st.columns([1, 3])
        a.metric("NMI (learned vs true scene)", fmt_num(scene.nmi, 3))
        if scene.contingency is not None:
            b.plotly_chart(charts.contingency_figure(scene), width="stretch", key="contingency_chart")
    elif run.dataset == "synthetic":
        st.info(f"{shown(scene.path)} has no true-scene contingency (true_scene_nmi / contingency are null).")


def trials_view(run: Run) -> None:
    if not len(run.trials):
        st.info(f"{shown(run.path / 'trials.csv')} has no trial rows yet.")
        return
    boxes = st.columns(3)
    chosen = {}
    for col, values in views.trial_filters(run).items():
        # One place per filter: status, the swept axis, seed.
        slot, title, key = {"status": (0, "Status", "f_status"), "seed": (2, "Seed", "f_seed")}.get(
            col, (1, col, "f_axis"))
        chosen[col] = boxes[slot].multiselect(title, values, default=values, format_func=fmt_value,
                                              key=f"{key}::{run.key}")
    all_cols = st.checkbox("Show every config field", value=False, key="f_allcols")
    rows = views.trial_table(run, chosen, all_cols)
    table(rows)
    st.download_button("Download these trials (CSV)", rows.to_csv(index=False).encode(),
                       file_name=f"{run.study}_{run.path.name}_trials.csv", mime="text/csv", key="download_trials")
    bad = views.failed_trials(run)
    if len(bad):
        st.warning(f"{len(bad)} trial(s) ended in ERROR / DIVERGED; their `error` column says why.")


def provenance_view(run: Run) -> None:
    if not run.meta.get("provenance"):
        st.warning(f"{shown(run.path / 'study.json')} has no provenance block.")
    table(views.provenance_table(run), height="content")
    packages = views.packages_table(run)
    if len(packages):
        st.markdown("**Package versions**")
        table(packages, height="content")
    with st.expander("base_config, paper_config, axis values / search space (study.json)"):
        st.code(json.dumps(views.study_settings(run), indent=2, default=str), language="json")


def comparison_view(runs: list[RunSummary], paper: PaperTables) -> None:
    st.markdown("**Our best result per dataset beside the paper's rows**")
    comparison = views.comparison_table(views.best_per_dataset(runs), paper)
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
# The page


def run_header(run: Run, s: RunSummary, runs: list[RunSummary]) -> None:
    st.header(f"{run.study} · {run.path.name}")
    st.caption(f"{run.dataset} · {run.backbone} · {run.image_size} px · axis: {run.axis or 'joint search'} · "
               f"{run.meta.get('sampler') or '?'} / {run.meta.get('scheduler') or '?'} · device: {s.device or '?'} · "
               f"protocol: {run.meta.get('metric_protocol') or 'not stated'}")
    c = st.columns(4)
    c[0].metric("status", run.status)
    c[1].metric("trials ended", f"{s.n_finished} / {s.n_trials if s.n_trials is not None else '?'}",
                help="FINISHED, STOPPED (early-stopped), ERROR or DIVERGED, out of all trials")
    c[2].metric(f"best ({s.best_metric})", fmt_num(s.best_value))
    c[3].metric("summed trial time", fmt_seconds(s.trial_seconds_total),
                help=f"wall time {fmt_seconds(s.wall_seconds)}")
    for n in run.notes + status_notes(run):
        st.info(n)
    for w in run.warnings:
        st.warning(w)
    with st.expander(f"All runs ({len(runs)})"):
        table(views.runs_table(runs))


def main() -> None:
    st.set_page_config(page_title="SALGL ablations", layout="wide")
    st.sidebar.title("SALGL ablations")
    typed = st.sidebar.text_input("Results folder", value=display_path(results_dir()), key="results_dir",
                                  help="Default: results (in the repository), or $SALGL_RESULTS_DIR when set. "
                                       "A relative path starts at the repository root.")
    root = results_dir(typed)
    address = st.get_option("server.address")
    if address not in ("127.0.0.1", "localhost", "::1"):
        st.sidebar.warning(f"This server listens on {address or 'all network interfaces'}, not only this machine. "
                           f"Start it from the repository root (which reads .streamlit/config.toml) or pass "
                           f"--server.address 127.0.0.1.")
    st.sidebar.button("Reload files", key="reload")
    paper = cached_paper(str(root), paper_stamp(root))
    for w in paper.warnings:
        st.warning(w)
    try:
        runs, problems = list_runs(root, summary_of)
    except LoadError as e:
        st.error(f"{display_path(e.path)}: {e.message}")
        paper_context(paper, expanded=True)
        return
    for w in problems:
        st.warning(w)
    if not runs:
        st.info(f"No study runs in {display_path(root)} yet. Run a study (e.g. `python studies/scene_count.py`); its "
                f"export (results/<study>/<run>/study.json, trials.csv, ...) appears here.")
        paper_context(paper, expanded=True)
        return
    by_key = {s.key: s for s in runs}
    key = st.sidebar.selectbox("Study run (newest first)", list(by_key), format_func=lambda k: by_key[k].label(),
                               key="run")
    s = by_key[key]
    st.sidebar.caption(f"{len(runs)} run(s) in {display_path(root)}")
    try:
        run = cached_run(str(s.path), run_stamp(s.path))
    except LoadError as e:
        st.error(f"{shown(e.path)}: {e.message}")
        return
    run_header(run, s, runs)

    first = "Ablation" if run.axis else "Search"
    tabs = st.tabs([first, "Learning curves", "Scenes", "Trials", "Provenance", "Paper comparison"])
    where = shown(run.path, 3)
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
        guarded("Paper comparison", display_path(root), lambda: comparison_view(runs, paper))


main()
