"""The dashboard's cached reads (Streamlit's cache): a run's summary, the run, a scene file, the random-assignment
NMIs and the paper tables. The key includes the files' mtimes and sizes, so a widget click reuses the parsed run
and a rewrite by a running study (the export replaces files whole) is picked up on the next rerun.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from dashboards.data import runs
from dashboards.data.files import SceneData, load_scene
from dashboards.data.paper import PaperTables, load_paper_tables
from dashboards.shaping import scenes


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
    return scenes.random_assignment_nmis(np.array(table))


@st.cache_data(show_spinner=False, max_entries=8)
def cached_paper(files: tuple) -> PaperTables:
    return load_paper_tables()


def summary_of(run_dir: Path, root: Path) -> runs.RunSummary:
    return cached_summary(str(run_dir), str(root), runs.run_stamp(run_dir))
