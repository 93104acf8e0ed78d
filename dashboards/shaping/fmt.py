"""Formatting for display: numbers, axis values and durations as the views print them."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MISSING = "–"


def fmt_num(v: Any, digits: int = 2) -> str:
    """A number with `digits` decimals; a dash when missing or not a number."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return MISSING
    return MISSING if math.isnan(f) else f"{f:.{digits}f}"


def fmt_value(v: Any) -> str:
    """An axis value as a label: 4, 0.99, 1 (not 4.0 / 1.0), text unchanged."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return MISSING if math.isnan(v) else f"{float(v):g}"
    return str(v)


def fmt_seconds(s: Any) -> str:
    """A duration as h:mm:ss."""
    try:
        s = float(s)
    except (TypeError, ValueError):
        return MISSING
    if math.isnan(s):
        return MISSING
    h, rest = divmod(int(round(s)), 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}"


def is_missing(v: Any) -> bool:
    """An empty table cell: None, NaN or blank text."""
    if v is None:
        return True
    if isinstance(v, float):
        return math.isnan(v)
    return isinstance(v, str) and not v.strip()
