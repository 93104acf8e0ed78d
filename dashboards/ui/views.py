"""The run's views as Streamlit lays them out, one per tab: ablation or search, learning curves, scenes, trials,
provenance and the comparison with the paper. Layout only: dashboards.shaping shapes and words what they show,
dashboards.charts draws it; the statistics sections are dashboards/ui/stats.py's.
"""

from __future__ import annotations

import json

import streamlit as st

from dashboards.charts import figures
from dashboards.charts import visibility as visibility_figures
from dashboards.data import runs
from dashboards.data.files import stamp
from dashboards.data.paper import PaperTables
from dashboards.data.paths import shown
from dashboards.shaping import scenes, stats, summaries, texts, trials, visibility
from dashboards.shaping.fmt import fmt_num, fmt_value
from dashboards.ui import stats as stats_ui
from dashboards.ui.cache import cached_random_nmis, cached_scene
from dashboards.ui.widgets import table
from studies.exports.schema import TRIALS_CSV


def paper_context(paper: PaperTables, expanded: bool = False) -> None:
    with st.expander("The paper's MS-COCO 2014 table (SALGL, ICCV 2023)", expanded=expanded):
        if len(paper.coco):
            table(summaries.paper_table(paper), height="content")
            st.caption(f"Source: {paper.coco['source'].iloc[-1]}. Empty cells: not reported.")
        else:
            st.info("The paper's table is not available (see the warning above).")


def metric_picker(run: runs.Run, key: str) -> str:
    """The metric a chart plots: the paper's reported number unless the user picks another."""
    return st.selectbox("Metric", trials.metric_options(run.trials), index=0, key=key, format_func=texts.metric_label,
                        help=texts.METRIC_HELP)


# ---------------------------------------------------------------------------------------------
# Views


def ablation_view(run: runs.Run, paper: PaperTables) -> None:
    axis = run.axis
    arms = run.arms is not None
    if note := texts.study_note(run.meta, axis, arms):
        st.info(note)
    if axis not in run.trials:
        st.info(f"{shown(run.path / 'trials.csv')} has no {axis} column (yet): nothing to plot against.")
        return
    metric = metric_picker(run, "ablation_metric")
    res = stats_ui.run_analysis(run)
    plot = stats.ablation_plot(run, paper, metric, res.data)
    ab, ref, repro = plot.ab, plot.ref, plot.repro
    if not len(ab.points) or not ab.points["metric"].notna().any():
        st.info(f"No trial in {shown(run.path / TRIALS_CSV)} has a value for {texts.metric_label(metric)} yet"
                + (" (the study is still running)." if run.status == "RUNNING" else "."))
        return
    if arms:
        pass  # the note above says what the arms are; no paper number applies to them
    elif ref is not None:
        paper_row, best_row = trials.ablation_highlights(ab)
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
    stats_ui.verdict_section(run, res, metric)
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(figures.ablation_plot_figure(plot, axis, metric), width="stretch", key="ablation_chart")
        shown_intervals = plot.intervals is not None and plot.intervals["ci_low"].notna().any()
        st.caption(texts.ablation_caption(metric, axis, trials.paper_config_value(run), ref, plot.synthetic,
                                          shown_intervals, arms=arms))
    with right:
        stats_ui.forest_chart(run, res)
    if arms and len(vis := visibility.visibility_summary(run.trials, metric)):
        st.plotly_chart(visibility_figures.visibility_figure(vis, texts.metric_label(metric)), width="stretch",
                        key="visibility_chart")
        st.caption(texts.VISIBILITY_CAPTION)
    table(trials.ablation_table(ab))
    if ref is None:
        paper_context(paper, expanded=True)


def search_view(run: runs.Run) -> None:
    metric = metric_picker(run, "search_metric")
    params = trials.search_params(run)
    if not params:
        st.info(f"{shown(run.path / 'study.json')} has no search_space and no config field varies across the "
                f"trials in trials.csv: nothing to plot against.")
        return
    pts = trials.search_points(run.trials, params, metric)
    if not len(pts):
        st.info(f"No trial in {shown(run.path / TRIALS_CSV)} has a value for {texts.metric_label(metric)} yet.")
        return
    fig = figures.search_figure(pts, params, texts.metric_label(metric), trials.best_trial_id(run.trials, metric),
                               trials.log_scale_params(run))
    st.plotly_chart(fig, width="stretch", key="search_chart")
    st.caption(f"Plotted: {texts.metric_label(metric)}. Joint search ({run.meta.get('sampler') or '?'} sampler, "
               f"{run.meta.get('scheduler') or '?'} scheduler): one point per trial; STOPPED = ended early by the "
               f"scheduler. ★ = best trial.")
    table(trials.top_trials(run.trials, params, metric))
    stats_ui.search_section(run, params, metric, trials.log_scale_params(run))


def curves_view(run: runs.Run, paper: PaperTables) -> None:
    ep = run.epochs
    if not len(ep):
        st.info(f"{shown(run.path / 'epochs.csv')} has no rows yet" +
                (" (the study is still running)." if run.status == "RUNNING" else "."))
        return
    ids, labels, preferred = trials.trial_choices(run, ep["trial_id"])
    chosen = st.multiselect("Trials", ids, default=preferred[:6], format_func=lambda i: labels[i],
                            key=f"curve_trials::{run.uid}")
    if not chosen:
        st.info("Pick at least one trial.")
        return
    ref = trials.reference_curve(run, paper)
    st.plotly_chart(figures.learning_curves_figure(ep, chosen, labels, ref), width="stretch", key="curves_chart")
    if ref is not None:
        st.caption(texts.CURVE_REF_NOTE)
    st.plotly_chart(figures.losses_figure(ep, chosen, labels, ref), width="stretch", key="losses_chart")


def scenes_view(run: runs.Run) -> None:
    files = run.scene_files
    if not files:
        st.info(f"No per-trial scene statistics in {shown(run.path / 'scenes')} "
                + ("yet (the study is still running)." if run.status == "RUNNING" else "(scenes/<trial_id>.json)."))
        return
    ids, labels, preferred = trials.trial_choices(run, files)
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
        st.plotly_chart(figures.cooccurrence_figure(scene, k, view.startswith("difference")), width="stretch",
                        key="cooc_chart")
    with right:
        st.plotly_chart(figures.scene_usage_figure(scene), width="stretch", key="usage_chart")
        st.markdown("**Labels most typical of each scene**")
        table(scenes.typical_labels(scene, 5).round(3), height=320)
        cfg = {**(run.meta.get("base_config") or {}), **trials.trial_row(run, tid)}
        st.caption(texts.counts_note(cfg.get("soft_assignment"), cfg.get("comat_ema")))
    if scene.nmi is not None or scene.contingency is not None:
        st.subheader("Learned vs true scenes (synthetic data)")
        cont = scene.contingency
        ctx = scenes.nmi_context(scene, None if cont is None else cached_random_nmis(
            tuple(map(tuple, cont.tolist()))))
        a, b = st.columns([1, 3])
        a.metric("NMI, learned vs true scene", fmt_num(ctx.learned, 3))
        a.metric("random assignment (same images)", fmt_num(ctx.random_mean, 3), help="near 0: chance level")
        a.metric("oracle (learned = true scenes)", fmt_num(ctx.oracle, 0), help="the top of the scale")
        if cont is not None:
            b.plotly_chart(figures.contingency_figure(scene), width="stretch", key="contingency_chart")
        st.caption(texts.nmi_caption(ctx))
    elif run.dataset == "synthetic":
        st.info(f"{shown(scene.path)} has no true-scene contingency (true_scene_nmi / contingency are null).")


def trials_view(run: runs.Run) -> None:
    if not len(run.trials):
        st.info(f"{shown(run.path / TRIALS_CSV)} has no trial rows yet.")
        return
    boxes = st.columns(3)
    chosen = {}
    for col, values in trials.trial_filters(run).items():
        # One place per filter: status, the swept axis, seed.
        slot, title, key = {"status": (0, "Status", "f_status"), "seed": (2, "Seed", "f_seed")}.get(
            col, (1, col, "f_axis"))
        chosen[col] = boxes[slot].multiselect(title, values, default=values, format_func=fmt_value,
                                              key=f"{key}::{run.uid}")
    all_cols = st.checkbox("Show every config field", value=False, key="f_allcols")
    rows = trials.trial_table(run, chosen, all_cols)
    table(rows)
    st.caption(texts.trials_caption("node_ip" in rows))
    st.download_button("Download these trials (CSV)", rows.to_csv(index=False).encode(),
                       file_name=f"{run.study}_{run.path.name}_trials.csv", mime="text/csv", key="download_trials")
    bad = trials.failed_trials(run)
    if len(bad):
        st.warning(f"{len(bad)} trial(s) ended in ERROR / DIVERGED; their `error` column says why.")


def provenance_view(run: runs.Run) -> None:
    if not run.meta.get("provenance"):
        st.warning(f"{shown(run.path / 'study.json')} has no provenance block.")
    table(summaries.provenance_table(run), height="content")
    packages = summaries.packages_table(run)
    if len(packages):
        st.markdown("**Package versions**")
        table(packages, height="content")
    with st.expander("base_config, paper_config, axis values / search space (study.json)"):
        st.code(json.dumps(summaries.study_settings(run), indent=2, default=str), language="json")


def comparison_view(listed: list[runs.RunSummary], paper: PaperTables) -> None:
    st.markdown("**Our best result per dataset beside the paper's rows**")
    best = summaries.best_per_dataset(listed)
    if not len(best):
        st.info(texts.NO_REAL_RUNS)
    comparison = summaries.comparison_table(best, paper)
    if len(comparison):
        table(comparison, {"mAP": "mAP (ours: best trial, EMA)"}, height="content")
    st.caption(texts.COMPARISON_NOTE)
    if left_out := texts.comparison_left_out(sum(not summaries.stands_beside_paper(s) for s in listed)):
        st.caption(left_out)
    if len(paper.reproductions):
        st.markdown("**Published reproductions** (results/paper/reproductions.csv)")
        table(paper.reproductions, height="content")
