"""The lines of a study's closing summary that name results: per-value means, the best trial, the dashboard.

Plain Python (no Ray), fed the export's rows (trials.csv, so values may be strings). Every number shown
is schema.REPORTED_METRIC, named as the paper names it.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from studies.design.paths import REPO
from studies.exports.evidence import number
from studies.exports.files import portable_path
from studies.exports.schema import OPTUNA_JOURNAL, REPORTED_METRIC, VERDICT_COLUMNS, VerdictColumn

REPORTED_NAME = "best EMA mAP (the paper's reported number)"
# Trials whose configuration can be called the best: an ERROR or DIVERGED trial is not one to recommend,
# whatever its best epoch scored before it failed.
RANKED_STATUSES = ("FINISHED", "STOPPED")


def _value(v: Any) -> str:
    """A config value as typed on a command line: 0.0001 not 1.0000e-04, 4 not 4.0."""
    x = number(v)
    if x is None or isinstance(v, bool) or str(v).lower() in ("true", "false"):
        return str(v)
    return str(int(x)) if x == int(x) and "e" not in str(v).lower() else f"{x:.4g}"


def reference_label(dataset: str | None) -> str:
    """What the flagged arm is: the paper recipe's value on real data; on synthetic data the paper has no
    configuration, so the flag marks the synthetic preset's value instead."""
    return "the synthetic preset's value" if dataset == "synthetic" else "the paper's configuration"


def arm_line(axis: str, value: Any, scores: Sequence[float], is_paper: bool, label: str = "paper",
             nmi: Sequence[float] = ()) -> str:
    """One value of a one-axis ablation: the mean over its seeds, and their spread when there are several
    (one seed has no spread to show); with `nmi` (synthetic data) the mean NMI of its scenes vs the true ones."""
    n = len(scores)
    mean = sum(scores) / n
    if n > 1:
        sd = math.sqrt(sum((x - mean) ** 2 for x in scores) / (n - 1))
        spread = f"{mean:6.2f} +- {sd:4.2f} (sd over {n} seeds)"
    else:
        spread = f"{mean:6.2f}         (1 seed)"
    scenes = f"  scene NMI {sum(nmi) / len(nmi):.2f}" if nmi else ""
    return f"  {axis} = {value!s:<6} {spread}{scenes}" + (f"  ({label})" if is_paper else "")


def arm_lines(axis: str, values: Iterable[Any], rows: Iterable[dict[str, Any]], paper_value: Any,
              label: str = "paper") -> list[str]:
    """The per-value lines of a one-axis ablation: a header naming the metric, one line per value with a
    FINISHED trial."""
    by_value: dict[str, list[float]] = {}
    nmi: dict[str, list[float]] = {}
    for r in rows:
        x, n = number(r.get(REPORTED_METRIC)), number(r.get("scene_nmi"))
        if r.get("status") == "FINISHED" and x is not None:
            by_value.setdefault(str(r.get(axis)), []).append(x)
            if n is not None:
                nmi.setdefault(str(r.get(axis)), []).append(n)
    lines = [arm_line(axis, v, by_value[str(v)], v == paper_value, label, nmi.get(str(v), ()))
             for v in values if by_value.get(str(v))]
    return [f"  {REPORTED_NAME}, mean over seeds:", *lines] if lines else []


def best_trial(rows: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The FINISHED or STOPPED trial with the highest reported metric, or None if no trial has one."""
    ranked = [r for r in rows if r.get("status") in RANKED_STATUSES and number(r.get(REPORTED_METRIC)) is not None]
    return max(ranked, key=lambda r: number(r[REPORTED_METRIC])) if ranked else None


def best_lines(rows: Iterable[dict[str, Any]], fields: Iterable[str],
               label: str = "the paper's configuration", repeats: int = 1) -> list[str]:
    """A joint search's answer: the best trial, its reported metric and its configuration (`fields`: the
    searched fields, seed included). With `repeats` > 1 (every configuration trained on that many seeds) the
    best configuration is the one with the best mean over its FINISHED seeds, as the searcher saw it."""
    fields = list(fields)
    if repeats > 1:
        return _best_mean_lines(list(rows), fields, label)
    best = best_trial(rows)
    if best is None:
        return ["  no trial finished with a result: no best configuration yet"]
    paper = f"  ({label})" if str(best.get("is_paper_config")).lower() == "true" else ""
    config = " ".join(f"{k}={_value(best.get(k))}" for k in fields)
    return [f"  best configuration: trial {best['trial_id']} ({best.get('status')}), {REPORTED_NAME} "
            f"{number(best[REPORTED_METRIC]):.2f}{paper}", f"    {config}"]


def _best_mean_lines(rows: list[dict[str, Any]], fields: list[str], label: str) -> list[str]:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("status") == "FINISHED" and number(r.get(REPORTED_METRIC)) is not None:
            groups.setdefault(tuple(_value(r.get(k)) for k in fields if k != "seed"), []).append(r)
    if not groups:
        return ["  no configuration finished a seed with a result: no best configuration yet"]
    key, best = max(groups.items(), key=lambda kv: sum(number(r[REPORTED_METRIC]) for r in kv[1]) / len(kv[1]))
    scores = [number(r[REPORTED_METRIC]) for r in best]
    paper = f"  ({label})" if any(str(r.get("is_paper_config")).lower() == "true" for r in best) else ""
    seeds = " ".join(sorted(_value(r.get("seed")) for r in best))
    config = " ".join(f"{k}={v}" for k, v in zip([k for k in fields if k != "seed"], key, strict=True))
    return [f"  best configuration: {REPORTED_NAME} {sum(scores) / len(scores):.2f}, the mean over its "
            f"{len(scores)} finished seed(s) ({seeds}){paper}", f"    {config}"]


def dashboard_lines(results_dir: Path, run_dir: Path) -> list[str]:
    """Where to look next. `make dashboard` runs the venv's streamlit, which a plain `streamlit` on PATH
    may not be; a results folder other than the two the dashboard reads goes in $SALGL_RESULTS_DIR."""
    streamlit = portable_path(Path(sys.executable).parent / "streamlit")
    default = Path(results_dir).resolve() in (REPO / "runs", REPO / "results")
    env = "" if default else f"SALGL_RESULTS_DIR={portable_path(results_dir)} "
    dash = f"{env}make dashboard" if env else f"make dashboard   (or: {streamlit} run dashboards/app.py)"
    return [f"  dashboard: {dash}",
            f"  optuna:    optuna-dashboard {portable_path(run_dir)}/{OPTUNA_JOURNAL}   "
            "(pip install optuna-dashboard)"]


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def verdict_cell(col: VerdictColumn, arm: dict[str, Any], comparison: dict[str, Any]) -> Any:
    """The value of the verdict table's column `col` for one arm (analysis.json's arm and its comparison): a
    number or text (None when missing), or an interval's (low, high)."""
    src = arm if col.of == "arm" else comparison
    if col.fmt.endswith("interval"):
        return src.get(f"{col.key}_low"), src.get(f"{col.key}_high")
    return src.get(col.key)


def format_verdict_cell(col: VerdictColumn, value: Any, missing: str = "-") -> str:
    """A verdict-table cell as text, as its column's format says: `missing` for a missing value."""
    if col.fmt.endswith("interval"):
        lo, hi = (number(v) for v in value)
        spec = "+.2f" if col.fmt.startswith("+") else ".2f"
        return missing if lo is None or hi is None else f"[{lo:{spec}}, {hi:{spec}}]"
    if col.fmt == "text":
        return missing if value is None or value == "" else str(value)
    x = number(value)
    return missing if x is None else format(int(x) if col.fmt == "d" else x, col.fmt)


def format_table(analysis: dict[str, Any]) -> str:
    """The short terminal summary printed at the end of a study."""
    head = f"{analysis.get('study')}/{analysis.get('run')}: {analysis['metric']} ({analysis['unit']})"
    lines = [head]
    if analysis["kind"] == "search":
        s = analysis["search"]
        for label, t in (("best", s["best"]), ("paper", s["paper"])):
            if t:
                lines.append(f"  {label}: trial {t['trial_id']} {_num(t['mAP'])}  {t['config']}")
        for key, imp in s["importances"].items():
            lines.append(f"  {key}: " + ", ".join(f"{k} {v:.2f}" for k, v in list(imp.items())[:5]))
    else:
        lines[0] += f", reference {analysis['axis']} = {analysis['reference']} (paper_config), 95% intervals"
        cmp = {c["value"]: c for c in analysis["comparisons"]}
        cols = [c for c in VERDICT_COLUMNS if c.terminal]
        rows = [["value", *(c.label for c in cols)]]
        for a in analysis["arms"]:
            ref = bool(a["is_reference"])
            rows.append([str(a["value"]) + ("*" if ref else " "), *(
                (c.reference or "-") if ref and c.of == "comparison"
                else format_verdict_cell(c, verdict_cell(c, a, cmp.get(a["value"], {}))) for c in cols)])
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["  " + " ".join(x.rjust(w) for x, w in zip(r, widths, strict=True)) for r in rows]
        lines += [f"  {c['value']}: {c['verdict']}" for c in analysis["comparisons"]]
        # Which comparisons Holm's family holds, when not all: an untested arm never leaves it silently.
        lines += [f"  {c['value']}: Holm: {c['holm']}" for c in analysis["comparisons"]
                  if "untested" in str(c.get("holm", ""))]
        if analysis.get("budget"):
            lines.append(f"  budget: {analysis['budget']['verdict']}")
    lines += [f"  note: {n}" for n in analysis["notes"]]
    return "\n".join(lines)
