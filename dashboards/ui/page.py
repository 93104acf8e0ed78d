"""The dashboard's page (Streamlit): the sidebar (results folders, run picker), the run's header and its tabs,
each view guarded so a damaged file becomes a message. `dashboards/app.py` runs `main()`.

The runs come from <repo>/results and <repo>/runs, or the folders $SALGL_RESULTS_DIR or the sidebar box
name; the paper's tables always from <repo>/results/paper.
"""

from __future__ import annotations

import streamlit as st

from dashboards.data import paths, runs
from dashboards.data.files import LoadError
from dashboards.data.paper import paper_stamp
from dashboards.data.paths import display_dirs, display_path, results_dirs, shown
from dashboards.shaping import summaries, texts
from dashboards.shaping.fmt import fmt_num, fmt_seconds
from dashboards.ui.cache import cached_paper, cached_run, summary_of
from dashboards.ui.compare import compare_view
from dashboards.ui.views import (
    ablation_view,
    comparison_view,
    curves_view,
    paper_context,
    provenance_view,
    scenes_view,
    search_view,
    trials_view,
)
from dashboards.ui.widgets import guarded, table
from studies.exports.schema import TRIALS_CSV


def run_header(run: runs.Run, s: runs.RunSummary, listed: list[runs.RunSummary]) -> None:
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
    with st.expander(f"All runs ({len(listed)})"):
        table(summaries.runs_table(listed))


def sidebar_runs(listing: runs.Listing) -> runs.RunSummary:
    """The run picker (newest first, each run with the folder it came from) and the folders' counts."""
    by_uid = {s.uid: s for s in listing.runs}
    several = len(listing.roots) > 1
    uid = st.sidebar.selectbox("Study run (newest first)", list(by_uid),
                               format_func=lambda u: summaries.run_label(by_uid[u], several), key="run")
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
              ("Compare runs", "Run against run", lambda: compare_view(run, listing.runs)),
              ("Learning curves", "Learning curves", lambda: curves_view(run, paper)),
              ("Scenes", "Scene analysis", lambda: scenes_view(run)),
              ("Trials", "Trial table", lambda: trials_view(run)),
              ("Provenance", "Provenance", lambda: provenance_view(run)),
              ("Paper comparison", "Paper comparison", lambda: comparison_view(listing.runs, paper))]
    for tab, (_, what, draw) in zip(st.tabs([v[0] for v in views_]), views_, strict=True):
        with tab:
            guarded(what, display_dirs(roots) if what == "Paper comparison" else where, draw)
