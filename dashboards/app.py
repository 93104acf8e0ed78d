"""The Streamlit pages of the SALGL ablation dashboard: `streamlit run dashboards/app.py`.

Lays out what the other dashboards modules read (files, runs, paper, analysis), shape (views, views_runs,
views_scenes, views_stats, charts, charts_stats) and say (texts); no data logic here. The statistics sections
are laid out in app_stats.py, the shared widgets in app_widgets.py. Reads study exports (results/README.md);
never needs Ray running.
The runs come from <repo>/results and <repo>/runs, or the folders $SALGL_RESULTS_DIR or the sidebar box
name; the paper's tables always from <repo>/results/paper.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import streamlit as st

# `streamlit run` puts dashboards/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dashboards import (  # noqa: E402
    app_stats,
    charts,
    charts_visibility,
    paths,
    runs,
    texts,
    views,
    views_runs,
    views_scenes,
    views_stats,
    views_visibility,
)
from dashboards.app_widgets import guarded, table  # noqa: E402
from dashboards.files import LoadError, SceneData, load_scene, stamp  # noqa: E402
from dashboards.fmt import fmt_num, fmt_seconds, fmt_value  # noqa: E402
from dashboards.paper import PaperTables, load_paper_tables, paper_stamp  # noqa: E402
from dashboards.paths import display_dirs, display_path, results_dirs, shown  # noqa: E402
from studies.exports.schema import TRIALS_CSV  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Cached reads: the key includes the files' mtimes and sizes, so a widget click reuses the parsed run
# and a rewrite by a running study (the export replaces files whole) is picked up on the next rerun.


@st.cache_data(show_spinner=False, max_entries=512)
def cached_summary(run_dir: str, root: str, files: tuple) -> runs.RunSummary:
    return runs.summarize_dir(Path(run_dir), Path(root))


@st.cache_data(show_spinner=False, max_entries=16)
def cached_run(run_dir: str, files: tuple) -> runs.Run:
    return runs.load_run(run_dir)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_scene(path: str, files: tuple, class_names: tuple[str, ...]) -> SceneData:
    return load_scene(path, class_names)


@st.cache_data(show_spinner=False, max_entries=64)
def cached_random_nmis(table: tuple[tuple[float, ...], ...]) -> np.ndarray:
    return views_scenes.random_assignment_nmis(np.array(table))


@st.cache_data(show_spinner=False, max_entries=8)
def cached_paper(files: tuple) -> PaperTables:
    return load_paper_tables()


def summary_of(run_dir: Path, root: Path) -> runs.RunSummary:
    return cached_summary(str(run_dir), str(root), runs.run_stamp(run_dir))


# ---------------------------------------------------------------------------------------------
# Building blocks


def paper_context(paper: PaperTables, expanded: bool = False) -> None:
    with st.expander("The paper's MS-COCO 2014 table (SALGL, ICCV 2023)", expanded=expanded):
        if len(paper.coco):
            table(views_runs.paper_table(paper), height="content")
            st.caption(f"Source: {paper.coco['source'].iloc[-1]}. Empty cells: not reported.")
        else:
            st.info("The paper's table is not available (see the warning above).")


def metric_picker(run: runs.Run, key: str) -> str:
    """The metric a chart plots: the paper's reported number unless the user picks another."""
    return st.selectbox("Metric", views.metric_options(run.trials), index=0, key=key, format_func=texts.metric_label,
                        help=texts.METRIC_HELP)


# ---------------------------------------------------------------------------------------------
# Views


def ablation_view(run: runs.Run, paper: PaperTables) -> None:
    axis = run.axis
    if axis == "comat_momentum":
        st.info(texts.MOMENTUM_NOTE)
    arms = run.arms is not None
    if arms:
        st.info(texts.ARMS_NOTES.get(run.meta.get("study"), texts.ARMS_NOTE))
    if axis not in run.trials:
        st.info(f"{shown(run.path / 'trials.csv')} has no {axis} column (yet): nothing to plot against.")
        return
    metric = metric_picker(run, "ablation_metric")
    # Named arms are not the paper's axis: their reference arm is no paper configuration to set a paper number by.
    ref, repro = views.paper_references(run, paper, metric) if not arms else (None, None)
    res = app_stats.run_analysis(run)
    ab = views_stats.with_arm_intervals(views.ablation_summary(run.trials, axis, metric, run.paper_config,
                                                                      list(run.arms or ()) or None), res.data)
    if not len(ab.points) or not ab.points["metric"].notna().any():
        st.info(f"No trial in {shown(run.path / TRIALS_CSV)} has a value for {texts.metric_label(metric)} yet"
                + (" (the study is still running)." if run.status == "RUNNING" else "."))
        return
    if arms:
        pass  # the note above says what the arms are; no paper number applies to them
    elif ref is not None:
        paper_row, best_row = views.ablation_highlights(ab)
        cols = st.columns(3)
        cols[0].metric(f"SALGL paper ({ref.metric})", f"{ref.value:g}", help=ref.source)
        for col, what, row in ((cols[1], "paper's config", paper_row), (cols[2], "best setting", best_row)):
            if row is not None:
                col.metric(f"ours − paper, {what}", f"{row['mean'] - ref.value:+.2f}")
        st.caption(texts.reference_notes(axis, metric, paper_row, best_row, ref))
    else:
        st.info(texts.no_reference_text(run.dataset, run.backbone, run.image_size, metric))
        if repro is not None and len(repro):
            st.caption(texts.REPRO_NOTE)
    app_stats.verdict_section(run, res, metric)
    synthetic = run.dataset == "synthetic"
    intervals = views_stats.trial_intervals(res.data) if res.data and res.data.get("metric") == metric else None
    left, right = st.columns([3, 2])
    with left:
        fig = charts.ablation_figure(ab, texts.AXIS_LABELS.get(axis, axis), texts.metric_label(metric), ref,
                                     repro if ref is None else None, intervals, texts.reference_name(synthetic, arms))
        st.plotly_chart(fig, width="stretch", key="ablation_chart")
        shown_intervals = intervals is not None and intervals["ci_low"].notna().any()
        st.caption(texts.ablation_caption(metric, axis, views.paper_config_value(run), ref, synthetic,
                                          shown_intervals, arms=arms))
    with right:
        app_stats.forest_chart(run, res)
    if arms and len(vis := views_visibility.visibility_summary(run.trials, metric)):
        st.plotly_chart(charts_visibility.visibility_figure(vis, texts.metric_label(metric)), width="stretch",
                        key="visibility_chart")
        st.caption(texts.VISIBILITY_CAPTION)
    table(views.ablation_table(ab))
    if ref is None:
        paper_context(paper, expanded=True)


def search_view(run: runs.Run) -> None:
    metric = metric_picker(run, "search_metric")
    params = views.search_params(run)
    if not params:
        st.info(f"{shown(run.path / 'study.json')} has no search_space and no config field varies across the "
                f"trials in trials.csv: nothing to plot against.")
        return
    pts = views.search_points(run.trials, params, metric)
    if not len(pts):
        st.info(f"No trial in {shown(run.path / TRIALS_CSV)} has a value for {texts.metric_label(metric)} yet.")
        return
    fig = charts.search_figure(pts, params, texts.metric_label(metric), views.best_trial_id(run.trials, metric),
                               views.log_scale_params(run))
    st.plotly_chart(fig, width="stretch", key="search_chart")
    st.caption(f"Plotted: {texts.metric_label(metric)}. Joint search ({run.meta.get('sampler') or '?'} sampler, "
               f"{run.meta.get('scheduler') or '?'} scheduler): one point per trial; STOPPED = ended early by the "
               f"scheduler. ★ = best trial.")
    table(views.top_trials(run.trials, params, metric))
    app_stats.search_section(run, params, metric, views.log_scale_params(run))


def curves_view(run: runs.Run, paper: PaperTables) -> None:
    ep = run.epochs
    if not len(ep):
        st.info(f"{shown(run.path / 'epochs.csv')} has no rows yet" +
                (" (the study is still running)." if run.status == "RUNNING" else "."))
        return
    ids, labels, preferred = views.trial_choices(run, ep["trial_id"])
    chosen = st.multiselect("Trials", ids, default=preferred[:6], format_func=lambda i: labels[i],
                            key=f"curve_trials::{run.uid}")
    if not chosen:
        st.info("Pick at least one trial.")
        return
    ref = views.reference_curve(run, paper)
    st.plotly_chart(charts.learning_curves_figure(ep, chosen, labels, ref), width="stretch", key="curves_chart")
    if ref is not None:
        st.caption(texts.CURVE_REF_NOTE)
    st.plotly_chart(charts.losses_figure(ep, chosen, labels, ref), width="stretch", key="losses_chart")


def scenes_view(run: runs.Run) -> None:
    files = run.scene_files
    if not files:
        st.info(f"No per-trial scene statistics in {shown(run.path / 'scenes')} "
                + ("yet (the study is still running)." if run.status == "RUNNING" else "(scenes/<trial_id>.json)."))
        return
    ids, labels, preferred = views.trial_choices(run, files)
    tid = st.selectbox("Trial", ids, index=ids.index(preferred[0]), format_func=lambda i: labels[i],
                       key=f"scene_trial::{run.uid}")
    scene = cached_scene(str(files[tid]), stamp(files[tid]), tuple(run.class_names))
    left, right = st.columns([3, 2])
    with left:
        c1, c2 = st.columns(2)
        k = c1.selectbox("Scene", list(range(scene.num_scenes)), format_func=lambda i: f"scene {i}",
                         key=f"scene_k::{run.uid}")
        view = c2.radio("Show", ["P(j | i, scene)", "difference to the mean over scenes"], key=f"scene_mode::{run.uid}",
                        horizontal=True, disabled=scene.num_scenes == 1)
        st.plotly_chart(charts.cooccurrence_figure(scene, k, view.startswith("difference")), width="stretch",
                        key="cooc_chart")
    with right:
        st.plotly_chart(charts.scene_usage_figure(scene), width="stretch", key="usage_chart")
        st.markdown("**Labels most typical of each scene**")
        table(views_scenes.typical_labels(scene, 5).round(3), height=320)
        cfg = {**(run.meta.get("base_config") or {}), **views.trial_row(run, tid)}
        st.caption(texts.counts_note(cfg.get("soft_assignment"), cfg.get("comat_ema")))
    if scene.nmi is not None or scene.contingency is not None:
        st.subheader("Learned vs true scenes (synthetic data)")
        cont = scene.contingency
        ctx = views_scenes.nmi_context(scene, None if cont is None else cached_random_nmis(
            tuple(map(tuple, cont.tolist()))))
        a, b = st.columns([1, 3])
        a.metric("NMI, learned vs true scene", fmt_num(ctx.learned, 3))
        a.metric("random assignment (same images)", fmt_num(ctx.random_mean, 3), help="near 0: chance level")
        a.metric("oracle (learned = true scenes)", fmt_num(ctx.oracle, 0), help="the top of the scale")
        if cont is not None:
            b.plotly_chart(charts.contingency_figure(scene), width="stretch", key="contingency_chart")
        st.caption(texts.nmi_caption(ctx))
    elif run.dataset == "synthetic":
        st.info(f"{shown(scene.path)} has no true-scene contingency (true_scene_nmi / contingency are null).")


def trials_view(run: runs.Run) -> None:
    if not len(run.trials):
        st.info(f"{shown(run.path / TRIALS_CSV)} has no trial rows yet.")
        return
    boxes = st.columns(3)
    chosen = {}
    for col, values in views.trial_filters(run).items():
        # One place per filter: status, the swept axis, seed.
        slot, title, key = {"status": (0, "Status", "f_status"), "seed": (2, "Seed", "f_seed")}.get(
            col, (1, col, "f_axis"))
        chosen[col] = boxes[slot].multiselect(title, values, default=values, format_func=fmt_value,
                                              key=f"{key}::{run.uid}")
    all_cols = st.checkbox("Show every config field", value=False, key="f_allcols")
    rows = views.trial_table(run, chosen, all_cols)
    table(rows)
    st.caption(texts.trials_caption("node_ip" in rows))
    st.download_button("Download these trials (CSV)", rows.to_csv(index=False).encode(),
                       file_name=f"{run.study}_{run.path.name}_trials.csv", mime="text/csv", key="download_trials")
    bad = views.failed_trials(run)
    if len(bad):
        st.warning(f"{len(bad)} trial(s) ended in ERROR / DIVERGED; their `error` column says why.")


def provenance_view(run: runs.Run) -> None:
    if not run.meta.get("provenance"):
        st.warning(f"{shown(run.path / 'study.json')} has no provenance block.")
    table(views_runs.provenance_table(run), height="content")
    packages = views_runs.packages_table(run)
    if len(packages):
        st.markdown("**Package versions**")
        table(packages, height="content")
    with st.expander("base_config, paper_config, axis values / search space (study.json)"):
        st.code(json.dumps(views_runs.study_settings(run), indent=2, default=str), language="json")


def comparison_view(summaries: list[runs.RunSummary], paper: PaperTables) -> None:
    st.markdown("**Our best result per dataset beside the paper's rows**")
    comparison = views_runs.comparison_table(views_runs.best_per_dataset(summaries), paper)
    if len(comparison):
        table(comparison, {"mAP": "mAP (ours: best EMA)"}, height="content")
    st.caption(texts.COMPARISON_NOTE)
    if len(paper.reproductions):
        st.markdown("**Published reproductions** (results/paper/reproductions.csv)")
        table(paper.reproductions, height="content")


# ---------------------------------------------------------------------------------------------
# The page


def run_header(run: runs.Run, s: runs.RunSummary, summaries: list[runs.RunSummary]) -> None:
    st.header(f"{run.study} · {run.path.name}")
    st.caption(texts.run_facts(run, s))
    # Counted from trials.csv as read (not study.json's claims), so they match what the views plot.
    n = runs.trial_counts(run)
    damaged = runs.file_warnings(run, TRIALS_CSV)
    c = st.columns(4)
    c[0].metric("status", run.status)
    c[1].metric("trials ended", f"{n.ended} / {n.planned if n.planned is not None else '?'}",
                help=texts.TRIALS_ENDED_HELP)
    c[1].caption(f"{n.with_value} with a best EMA mAP (plotted)"
                 + (" · :orange[⚠ trials.csv has problems, below: counted what could be read]" if damaged else ""))
    c[2].metric(texts.REPORTED_CARD, fmt_num(s.best_value), help=texts.REPORTED_HELP)
    c[2].caption(texts.REPORTED_CARD_NOTE)
    c[3].metric("summed trial time", fmt_seconds(s.trial_seconds_total),
                help=f"wall time {fmt_seconds(s.wall_seconds)}")
    for w in damaged + [w for w in run.warnings if w not in damaged]:
        st.warning(w)
    for note in run.notes + runs.status_notes(run):
        st.info(note)
    with st.expander(f"All runs ({len(summaries)})"):
        table(views_runs.runs_table(summaries))


def sidebar_runs(listing: runs.Listing) -> runs.RunSummary:
    """The run picker (newest first, each run with the folder it came from) and the folders' counts."""
    by_uid = {s.uid: s for s in listing.runs}
    several = len(listing.roots) > 1
    uid = st.sidebar.selectbox("Study run (newest first)", list(by_uid), format_func=lambda u: by_uid[u].label(several),
                               key="run")
    st.sidebar.caption(texts.folders_caption(listing))
    if listing.warnings:
        # Folded, so a healthy run's page opens without a warning in sight; the count stays visible.
        with st.sidebar.expander(f"⚠ {len(listing.warnings)} folder(s) not listed"):
            for w in listing.warnings:
                st.warning(w)
    return by_uid[uid]


def main() -> None:
    st.set_page_config(page_title="SALGL ablations", layout="wide")
    st.sidebar.title("SALGL ablations")
    typed = st.sidebar.text_input("Results folders", value=display_dirs(results_dirs()), key="results_dir",
                                  help=texts.FOLDERS_HELP)
    roots = results_dirs(typed)
    address = st.get_option("server.address")
    if address not in ("127.0.0.1", "localhost", "::1"):
        st.sidebar.warning(f"This server listens on {address or 'all network interfaces'}, not only this machine. "
                           f"Start it from the repository root (which reads .streamlit/config.toml) or pass "
                           f"--server.address 127.0.0.1.")
    st.sidebar.button("Reload files", key="reload")
    paper = cached_paper(paper_stamp())
    for w in paper.warnings:
        st.warning(w)
    try:
        listing = runs.list_runs(roots, summary_of, may_be_absent=(paths.DEFAULT_RUNS_DIR,))
    except LoadError as e:
        st.error(f"{display_path(e.path)}: {e.message}")
        paper_context(paper, expanded=True)
        return
    if not listing.runs:
        for w in listing.warnings:
            st.warning(w)
        st.info(texts.NO_RUNS.format(folders=display_dirs(roots)))
        paper_context(paper, expanded=True)
        return
    s = sidebar_runs(listing)
    try:
        run = cached_run(str(s.path), runs.run_stamp(s.path))
    except LoadError as e:
        st.error(f"{shown(e.path)}: {e.message}")
        return
    run_header(run, s, listing.runs)

    where = shown(run.path, 3)
    views_ = [("Ablation", "Ablation view", lambda: ablation_view(run, paper)) if run.axis else
              ("Search", "Search view", lambda: search_view(run)),
              ("Learning curves", "Learning curves", lambda: curves_view(run, paper)),
              ("Scenes", "Scene analysis", lambda: scenes_view(run)),
              ("Trials", "Trial table", lambda: trials_view(run)),
              ("Provenance", "Provenance", lambda: provenance_view(run)),
              ("Paper comparison", "Paper comparison", lambda: comparison_view(listing.runs, paper))]
    for tab, (_, what, draw) in zip(st.tabs([v[0] for v in views_]), views_, strict=True):
        with tab:
            guarded(what, display_dirs(roots) if what == "Paper comparison" else where, draw)


main()
