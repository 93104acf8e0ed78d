"""Streamlit building blocks every page of the dashboard uses: the read-only table and the guarded view."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboards.data.files import LoadError
from dashboards.data.paths import shown
from studies.exports.schema import REPORTED_METRIC

# How the trial and comparison tables head the columns people ask about (the data keeps the file's names).
COLUMN_LABELS = {REPORTED_METRIC: "best EMA mAP (paper's)", "node_ip": "node IP", "gpu_ids": "GPU ids"}


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


def table(df: pd.DataFrame, labels: dict[str, str] | None = None, **kw) -> None:
    """A read-only table: full width, no index, missing values shown as a dash, COLUMN_LABELS (and
    `labels`, which may also be st.column_config columns) heading their columns."""
    labels = {c: lab for c, lab in {**COLUMN_LABELS, **(labels or {})}.items() if c in df.columns}
    st.dataframe(df, width="stretch", hide_index=True, placeholder="–", column_config=labels, **kw)
