"""Run against run: two runs of the same axis side by side (a screening study against a full one, or one
ablation on two datasets or recipes). Which runs pair, each run's per-value curve, and the per-value table of
both differences to their own reference with whether the verdicts agree. Plain data in, plain tables out (no
streamlit); the differences and verdicts are each run's analysis.json's (dashboards.data.analysis), never
recomputed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from dashboards.data.runs import Run
from dashboards.shaping.fmt import MISSING, fmt_value
from dashboards.shaping.stats import KINDS, comparison_kind, interval_text, with_arm_intervals
from dashboards.shaping.trials import ablation_summary, same_value
from studies.analysis.stats import ALPHA
from studies.exports.evidence import number

# The two runs, as the table's columns and the chart's legend name them.
SIDES = ("A", "B")
# A value's verdict where there is no comparison to test: the run's own reference, or the run lacks the value.
REFERENCE = "★ reference"
ABSENT = MISSING
# Whether the two verdicts on a value agree.
AGREE = "agree"
DISAGREE = "disagree"
CANNOT_TELL = "cannot tell"  # a side has no test (one seed, no finished trials, no analysis)
BOTH_REFERENCE = "both references"
# The runs' references differ (a COCO run's K = 6 against a synthetic run's K = 4): "better than 4" beside "no
# difference from 6" is no disagreement, so two verdicts against different references are never matched.
OTHER_REFERENCES = "different references"
ONLY = "only in {side}"
# A run's difference to its own reference with the 95% interval, as the table heads it (after the run's name).
DIFF = "Δ to ★ [95% CI]"
# The verdicts' kinds (stats.KINDS): better and worse detect a difference, the third detects none.
DETECTED, NOT_DETECTED, NO_COMPARISON = KINDS[:2], KINDS[2], KINDS[4]


@dataclass
class Side:
    """One run of the pair: its name in the view, its per-value summary (trials.ablation_summary with the
    analysis's intervals), the analysis (analysis.json's content; None when it could not be had) and its
    reference value (★)."""

    name: str
    summary: pd.DataFrame
    analysis: dict[str, Any] | None
    reference: Any


def reference_value(run: Run) -> Any:
    """The run's reference value (★) of its axis: study.json paper_config's."""
    return run.paper_config.get(run.axis) if run.axis else None


def pairable(run: Run, other: Run) -> bool:
    """Whether two runs can be set side by side: the same swept axis; for studies of named arms (whose arms
    are sets of fields, not values of one field) also the same reference arm, so both differences are to the
    same thing."""
    if not run.axis or run.axis != other.axis:
        return False
    if run.arms is None and other.arms is None:
        return True
    ref, other_ref = reference_value(run), reference_value(other)
    return (run.arms is not None and other.arms is not None and ref is not None and other_ref is not None
            and same_value(ref, other_ref))


def side(name: str, run: Run, analysis: dict[str, Any] | None, metric: str) -> Side:
    """One run's curve of `metric` (the mean over its finished seeds per value, the interval analysis.json's
    where it analysed `metric`) and its analysis."""
    ab = with_arm_intervals(ablation_summary(run.trials, run.axis or "", metric, run.paper_config,
                                             list(run.arms or ()) or None), analysis)
    ref = analysis.get("reference") if analysis and analysis.get("reference") is not None else reference_value(run)
    return Side(name, ab.summary, analysis, ref)


def _values(s: Side) -> list:
    """The values the run has trials of (whatever their status), in the run's order. A value only planned
    (study.json axis_values, which the analysis lists too) is not one the run has."""
    return list(s.summary["value"]) if len(s.summary) else []


def value_order(a: Side, b: Side) -> list:
    """Every value of either run, once: numbers in increasing order; named arms in A's order, then B's own."""
    out = _values(a)
    out += [v for v in _values(b) if not any(same_value(v, w) for w in out)]
    try:
        return sorted(out, key=float)
    except (TypeError, ValueError):
        return out


def _has(s: Side, value: Any) -> bool:
    return any(same_value(value, v) for v in _values(s))


def _row(s: Side, value: Any) -> pd.Series | None:
    hit = s.summary[[same_value(value, v) for v in s.summary["value"]]] if len(s.summary) else s.summary
    return hit.iloc[0] if len(hit) else None


def _comparison(s: Side, value: Any) -> dict[str, Any] | None:
    return next((c for c in (s.analysis or {}).get("comparisons") or [] if same_value(c.get("value"), value)),
                None)


def is_reference(s: Side, value: Any) -> bool:
    """Whether `value` is the run's reference (★)."""
    return s.reference is not None and same_value(value, s.reference)


def verdict_kind(s: Side, value: Any) -> str:
    """The run's verdict on `value` against its own reference: one of stats.KINDS, REFERENCE, or ABSENT when
    the run has no such value."""
    if not _has(s, value):
        return ABSENT
    if is_reference(s, value):
        return REFERENCE
    c = _comparison(s, value)
    if c is None:
        return NO_COMPARISON
    alpha = (s.analysis or {}).get("alpha")
    return comparison_kind(c, alpha if isinstance(alpha, (int, float)) else ALPHA)


def agreement(kind_a: str, kind_b: str, same_reference: bool = True) -> str:
    """Whether the two runs' verdicts on one value agree: AGREE when both detect a difference in the same
    direction or neither detects one, DISAGREE when they differ (one detects, the other not, or opposite
    directions); ONLY (in A / B) when one run lacks the value, CANNOT_TELL when a side has no test or the value
    is only one run's reference, BOTH_REFERENCE when it is both runs' reference; OTHER_REFERENCES when both are
    tested but against different references (`same_reference` False)."""
    if ABSENT in (kind_a, kind_b):
        return ONLY.format(side=SIDES[1] if kind_a == ABSENT else SIDES[0])
    if kind_a == kind_b == REFERENCE:
        return BOTH_REFERENCE
    tested = (*DETECTED, NOT_DETECTED)
    if kind_a not in tested or kind_b not in tested:
        return CANNOT_TELL
    if not same_reference:
        return OTHER_REFERENCES
    return AGREE if kind_a == kind_b else DISAGREE


def columns(axis: str) -> list[str]:
    """The table's columns: the value and whether the verdicts agree, then per run its finished seeds, its
    difference to its own ★ with the 95% interval, and the verdict's kind."""
    per = [f"{n} {c}" for n in SIDES for c in ("seeds", DIFF, "verdict")]
    return [axis, "agreement", *per]


def diff_text(c: dict[str, Any]) -> str:
    """A comparison's difference with its 95% interval, e.g. `+2.05 [+1.41, +2.69]`; a dash without one."""
    d = number(c.get("diff"))
    if d is None:
        return MISSING
    ci = interval_text(c.get("ci_low"), c.get("ci_high"), sign=True)
    return f"{d:+.2f}" + (f" {ci}" if ci != MISSING else "")


def compare_table(a: Side, b: Side, axis: str) -> pd.DataFrame:
    """One row per value of either run (value_order): whether the two verdicts agree, and for each run its
    finished seeds, its difference to its own reference with the 95% interval (as text, so both runs' columns
    fit side by side) and the verdict's kind, analysis.json's. A value a run lacks has a dash in
    that run's columns. The means are the chart's (compare_figure)."""
    rows = []
    same_reference = a.reference is not None and b.reference is not None and same_value(a.reference, b.reference)
    for v in value_order(a, b):
        kinds = [verdict_kind(s, v) for s in (a, b)]
        stars = [n for n, s in zip(SIDES, (a, b), strict=True) if is_reference(s, v)]
        row: dict[str, Any] = {axis: fmt_value(v) + (" ★" if len(stars) == 2 else "".join(f" ★{n}" for n in stars)),
                               "agreement": agreement(*kinds, same_reference)}
        for name, s, kind in zip(SIDES, (a, b), kinds, strict=True):
            r = _row(s, v)
            row[f"{name} seeds"] = int(r["n"]) if kind != ABSENT and r is not None else None
            row[f"{name} {DIFF}"] = diff_text(_comparison(s, v) or {}) if kind not in (ABSENT, REFERENCE) \
                else MISSING
            row[f"{name} verdict"] = kind
        rows.append(row)
    out = pd.DataFrame(rows, columns=columns(axis))
    for name in SIDES:
        out[f"{name} seeds"] = out[f"{name} seeds"].astype("Int64")  # a count, or missing (NA) where absent
    return out


def run_name(key: str, uid: str, other_key: str) -> str:
    """How the view names a run: <study>/<run>, or its folder when both runs have the same <study>/<run>."""
    return uid if key == other_key else key


def counts(table: pd.DataFrame) -> dict[str, int]:
    """How many values each agreement has, in the table's order of first appearance."""
    return {k: int(n) for k, n in table["agreement"].value_counts(sort=False).items()}

