"""The lines of a study's closing summary: per-value means, the best trial, the verdict table, a one-line conclusion
and the next study to run, where the time went, the dashboards.

Plain Python (no Ray), fed the export's rows (trials.csv, so values may be strings). Every number shown
is schema.REPORTED_METRIC, named as the paper names it.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from studies.analysis import timing
from studies.design.cli import CONFIG_FLAGS
from studies.design.paths import DEFAULT_RESULTS, DEFAULT_STORAGE, REPO
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
             nmi: Sequence[float] = (), width: int = 6) -> str:
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
    return f"  {axis} = {value!s:<{width}} {spread}{scenes}" + (f"  ({label})" if is_paper else "")


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
    shown = [v for v in values if by_value.get(str(v))]
    width = max([6, *(len(str(v)) for v in shown)])  # the means line up under named arms too
    lines = [arm_line(axis, v, by_value[str(v)], v == paper_value, label, nmi.get(str(v), ()), width) for v in shown]
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
    may not be; a results folder other than the two the dashboard reads goes in $SALGL_RESULTS_DIR. `make`
    installs optuna-dashboard in the venv too: its executable there is named the same way."""
    bin_dir = Path(sys.executable).parent
    streamlit = portable_path(bin_dir / "streamlit")
    default = Path(results_dir).resolve() in (REPO / "runs", REPO / "results")
    env = "" if default else f"SALGL_RESULTS_DIR={portable_path(results_dir)} "
    dash = f"{env}make dashboard" if env else f"make dashboard   (or: {streamlit} run dashboards/app.py)"
    return [f"  dashboard: {dash}",
            f"  optuna:    {portable_path(bin_dir / 'optuna-dashboard')} {portable_path(run_dir)}/{OPTUNA_JOURNAL}"]


def timing_lines(meta: Mapping[str, Any], rows: Iterable[dict[str, Any]], concurrent: int) -> list[str]:
    """Where the wall time went (study.json `meta`, the trials' rows): the one-off preparation, step by step
    (studies.analysis.timing; steps under half a second are left out), the trials' own work and the wall time it
    would take at `concurrent` at once with no gap, and what is left: Ray's per-trial overhead (starting each
    trial's worker, scheduling, checkpoints). Nothing before a trial has taken any time."""
    durations = [x for x in (number(r.get("seconds")) for r in rows) if x]
    wall = number(meta.get("wall_seconds")) or 0.0
    if not durations or not wall:
        return []
    steps = {k: v for k, v in (meta.get("preparation") or {}).items() if isinstance(v, int | float)}
    prep = sum(steps.values())
    work, ideal = sum(durations), timing.ideal_seconds(durations, concurrent)
    overhead = max(0.0, wall - prep - ideal)
    trials = f"  trials {work:.0f} s of work, {concurrent} at once -> ideal {ideal:.0f} s; wall {wall:.0f} s"
    if not steps:  # an export from before study.json had `preparation`: it is in the rest, not told apart
        return [f"{trials}: preparation and Ray's per-trial overhead {max(0.0, wall - ideal):.0f} s"]
    named = ", ".join(f"{k} {v:.0f} s" for k, v in steps.items() if v >= 0.5)
    return [f"  preparation {prep:.0f} s, one-off" + (f": {named}" if named else ""),
            f"{trials} in all, so Ray's per-trial overhead {overhead:.0f} s ({100 * overhead / ideal:.0f}% of ideal)"]


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


def _config_text(config: Mapping[str, Any] | None) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in (config or {}).items())


def format_table(analysis: dict[str, Any], label: str | None = None) -> str:
    """The short terminal summary printed at the end of a study. `label` says what the reference is
    (`reference_label`, or "the reference arm"); without it the reference is only named by its value."""
    head = f"{analysis.get('study')}/{analysis.get('run')}: {analysis['metric']} ({analysis['unit']})"
    lines = [head]
    if analysis["kind"] == "search":
        s = analysis["search"]
        for name, t in (("best", s["best"]), (label or "reference", s["paper"])):
            if t:
                lines.append(f"  {name}: trial {t['trial_id']} {_num(t['mAP'])}  {_config_text(t['config'])}")
        for key, imp in s["importances"].items():
            lines.append(f"  {key}: " + ", ".join(f"{k} {v:.2f}" for k, v in list(imp.items())[:5]))
    else:
        lines[0] += (f", reference {analysis['axis']} = {analysis['reference']}" + (f" ({label})" if label else "")
                     + ", 95% intervals")
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


# ---------------------------------------------------------------------------------------------------
# the conclusion and the next study


def run_flags(args: argparse.Namespace) -> list[str]:
    """The flags that say what a run ran, not how (the cluster, the dashboard): the preset (--smoke, --recipe),
    the config flags typed, every --set, the values or arms, and output folders other than the defaults. A new
    run with these and other --seeds or --name runs the same study again."""
    a = vars(args)
    out = ["--smoke"] if a.get("smoke") else []
    if a.get("recipe"):
        out += ["--recipe", str(a["recipe"])]
    for name in CONFIG_FLAGS:  # generated flags are in `args` only when typed; --dataset defaults to None
        if name in a and (a[name] is not None or name != "dataset"):
            out += [f"--{name.replace('_', '-')}", "none" if a[name] is None else str(a[name])]
    for item in a.get("set") or []:
        out += ["--set", str(item)]
    for item in a.get("arm") or []:  # studies.ablate's arms from the command line, or their file
        out += ["--arm", str(item)]
    for flag in ("arms", "reference"):
        if a.get(flag):
            out += [f"--{flag}", str(a[flag])]
    if a.get("values"):
        out += ["--values", *map(str, a["values"])]
    if (a.get("repeats") or 1) > 1:  # a joint search's seeds per configuration
        out += ["--repeats", str(a["repeats"])]
    for flag, default in (("results_dir", DEFAULT_RESULTS), ("storage_path", DEFAULT_STORAGE)):
        if a.get(flag) and Path(str(a[flag])).resolve() != Path(default).resolve():
            out += [f"--{flag.replace('_', '-')}", str(a[flag])]
    return out


def _more_seeds(seeds: Sequence[int]) -> list[int]:
    """The run's seeds and as many new ones (at least three in all)."""
    out = list(seeds) or [0]
    while len(out) < max(3, 2 * len(seeds)):
        out.append(max(out) + 1)
    return out


def conclusion_lines(analysis: dict[str, Any], *, prog: str, flags: Sequence[str], seeds: Sequence[int], run: str,
                     dataset: str | None, label: str | None = None) -> list[str]:
    """One `conclusion:` line drawn from the analysis (its verdicts, intervals and detectable differences) and one
    `next:` line with the command of the study that would tell more. `prog` starts the study ("python
    studies/scene_count.py"), `flags` say what the run ran (`run_flags`), `label` what its reference is."""
    if analysis.get("kind") == "search":
        return _search_conclusion(analysis, prog=prog, flags=flags, run=run, label=label)
    comps = list(analysis.get("comparisons") or [])
    axis, ref, alpha = analysis.get("axis"), analysis.get("reference"), analysis.get("alpha") or 0.05
    if ref is None or not comps:
        return []

    def cmd(*extra: str) -> str:
        return shlex.join([*shlex.split(prog), *flags, *extra])

    reference = f"the reference {axis}={_value(ref)}" + (f" ({label})" if label else "")
    n = next((a.get("n") for a in analysis.get("arms") or [] if a.get("is_reference")), None) or len(seeds)
    more = _more_seeds(seeds)
    more_cmd = cmd("--seeds", *map(str, more), "--name", f"{run}-{len(more)}seeds")
    tested = [c for c in comps if number(c.get("p_holm")) is not None]
    found = [c for c in tested if number(c["p_holm"]) < alpha]
    hints = [c for c in tested if c not in found and _excludes_zero(c)]
    if not tested:
        why = next((c.get("no_test") for c in comps if c.get("no_test")), None) or "one usable seed per arm"
        return [f"  conclusion: no value of {axis} could be tested against {reference} ({why})",
                f"  next: more seeds: {more_cmd}"]
    if found:
        what = ", ".join(f"{axis}={_value(c['value'])} {'better' if c['diff'] > 0 else 'worse'} by "
                         f"{abs(c['diff']):.2f} mAP (Holm p {number(c['p_holm']):.2g})" for c in found)
        line = f"  conclusion: {what} than {reference}, at {n} seeds"
        if dataset == "synthetic":
            nxt = ("does it hold on real data? the paper recipe: "
                   + shlex.join([*shlex.split(prog), *_without_preset(flags), "--dataset", "coco", "--data-root",
                                 "DIR"]))
        else:
            fresh = [max(more) + 1 + i for i in range(max(3, len(seeds)))]
            nxt = "confirm it with fresh seeds: " + cmd("--seeds", *map(str, fresh), "--name", f"{run}-confirm")
        return [line, f"  next: {nxt}"]
    if hints:
        what = ", ".join(f"{axis}={_value(c['value'])} ({c['diff']:+.2f} mAP, 95% interval {c['ci_low']:.2f} to "
                         f"{c['ci_high']:.2f})" for c in hints)
        return [f"  conclusion: no value of {axis} differs detectably from {reference} after Holm's correction at "
                f"{n} seeds; the unadjusted interval of {what} excludes 0: a lead for more seeds, not a finding",
                f"  next: more seeds: {more_cmd}"]
    mdes = sorted(x for x in (number(c.get("mde")) for c in tested) if x is not None)
    floor = ("" if not mdes else f"; the smallest difference these seeds could detect is {mdes[0]:.2f} mAP" if
             mdes[-1] - mdes[0] < 0.005 else f"; the smallest differences these seeds could detect are "
             f"{mdes[0]:.2f} to {mdes[-1]:.2f} mAP")
    line = f"  conclusion: no value of {axis} differs detectably from {reference} at {n} seeds{floor}"
    if analysis.get("study") != "mechanism" and dataset == "synthetic":
        return [line, "  next: can the mechanism show at all on this data? "
                + shlex.join(["python", "studies/mechanism.py", *_without(flags, _ARMS_FLAGS)])]
    return [line, f"  next: more seeds: {more_cmd}"]


def _excludes_zero(c: Mapping[str, Any]) -> bool:
    lo, hi = number(c.get("ci_low")), number(c.get("ci_high"))
    return lo is not None and hi is not None and (lo > 0 or hi < 0)


# What only this run's own kind of study takes: dropped from a `next:` command for another study.
_ARMS_FLAGS = ("--values", "--arm", "--arms", "--reference", "--study")
_SEARCH_FLAGS = ("--values", "--repeats", "--num-samples", "--grace-period", "--reduction-factor")


def _without(flags: Sequence[str], names: Sequence[str]) -> list[str]:
    """`flags` less the flags `names` and their values."""
    out, skip = [], False
    for f in flags:
        if f.startswith("--"):
            skip = f in names
        if not skip:
            out.append(f)
    return out


def _without_values(flags: Sequence[str]) -> list[str]:
    """`flags` less --values and its values (another study's values are not this one's)."""
    return _without(flags, ("--values",))


def _without_preset(flags: Sequence[str]) -> list[str]:
    """`flags` less what only the synthetic data take (--smoke, synthetic sizing in --set)."""
    out: list[str] = []
    for f in flags:
        if f == "--smoke" or (out and out[-1] == "--set" and f.startswith("synthetic_")):
            if out and out[-1] == "--set":
                out.pop()
            continue
        out.append(f)
    return out


def _search_conclusion(analysis: dict[str, Any], *, prog: str, flags: Sequence[str], run: str,
                       label: str | None) -> list[str]:
    s = analysis.get("search") or {}
    best, ref = s.get("best"), s.get("paper")
    n = len(analysis.get("trials") or [])
    if best is None:
        return []
    name = label or "the reference configuration"
    repeats = int(flags[list(flags).index("--repeats") + 1]) if "--repeats" in flags else 1
    b, r = best.get("config") or {}, (ref or {}).get("config") or {}
    changed = [k for k in b if k != "seed" and str(b[k]) != str(r.get(k))]
    # Nothing to test against: no reference trial, it did not score (ERROR, DIVERGED), or the best trial has the
    # reference's configuration (itself, or another of its seeds with --repeats).
    if ref is None or number(ref.get("mAP")) is None or not changed:
        who = f"trial {best['trial_id']}" + (f" ({name})" if ref is not None and not changed else "")
        return [f"  conclusion: {who} scored best ({_num(best['mAP'])}) of the {n} trials",
                "  next: a longer search: " + shlex.join([*shlex.split(prog), *flags, "--num-samples",
                                                          str(2 * max(1, n // repeats)), "--name", f"{run}-longer"])]

    def arm(arm_name: str, config: Mapping[str, Any]) -> str:  # studies.ablate's NAME:FIELD=VALUE,... (JSON values)
        text = {k: str(config.get(k)).lower() if str(config.get(k)) in ("True", "False") else _value(config.get(k))
                for k in changed}
        return f"{arm_name}:" + ",".join(f"{k}={v}" for k, v in text.items())

    return [f"  conclusion: trial {best['trial_id']} scored {number(best['mAP']) - number(ref['mAP']):+.2f} mAP "
            f"against {name} (trial {ref['trial_id']}), each one training run: a search ranks configurations, it "
            "does not test their difference",
            "  next: test it over seeds: " + shlex.join([
                "python", "-m", "studies.ablate", *_without(flags, _SEARCH_FLAGS), "--study", "best_vs_reference",
                "--arm",
                arm("best", b), "--arm", arm("reference", r), "--reference", "reference", "--seeds", "0", "1", "2",
                "3", "4"])]
