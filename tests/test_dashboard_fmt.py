"""dashboards/shaping/fmt.py: numbers, axis values and durations as the views print them."""

from __future__ import annotations

import numpy as np

from dashboards.shaping.fmt import fmt_num, fmt_seconds, fmt_value, is_missing


def test_formatters():
    assert [fmt_value(v) for v in (4, 4.0, 0.99, 1e-4, "x", True, np.int64(3), float("nan"))] == [
        "4", "4", "0.99", "0.0001", "x", "True", "3", "–"]
    assert fmt_seconds(3725.4) == "1:02:05" and fmt_seconds(None) == "–" and fmt_seconds(float("nan")) == "–"
    assert fmt_num(85.756) == "85.76" and fmt_num("x") == "–" and fmt_num(0.8, 3) == "0.800"


def test_is_missing():
    assert [is_missing(v) for v in (None, float("nan"), "", "  ", 0, 0.0, "x", "nan")] == [
        True, True, True, True, False, False, False, False]
