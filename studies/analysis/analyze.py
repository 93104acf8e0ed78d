"""The analysis of a study export: predictions files, per-arm and per-trial intervals, verdicts (torch-free).

    python -m studies.analyze results/<study>/<run> [--bootstrap 1000] [--seed 0]

recomputes analysis.json and comparisons.csv (schema: results/README.md) from study.json, trials.csv and, when
the trials saved them, predictions/ (each trial's validation scores), and rewrites them only when what it computed
differs from what they hold (the bootstrap's timing aside), so a look at a committed export leaves it unchanged;
`--format latex|markdown` prints the verdict table (studies/analysis/tables.py) and writes nothing. Only FINISHED
trials count; the metric is schema.REPORTED_METRIC. For a one-axis study the reference arm is the
paper's configuration (study.json `paper_config`); the statistics are in studies.analysis.stats, the image
bootstrap in studies.analysis.bootstrap. For a joint search (no axis) it reports the best trial and Optuna's
parameter importances instead. Imports numpy and scipy only (optuna lazily, for a joint search), so
the dashboard can use it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from studies.analysis import stats, tables
from studies.analysis.bootstrap import bootstrap_maps, mean_average_precision
from studies.analysis.budget import budget_check
from studies.exports import evidence, schema
from studies.exports.evidence import Targets
from studies.exports.files import write_csv, write_json

DEFAULT_RESAMPLES = 1000
# Recomputed and reported mAP may differ by float16 rounding (~1e-4 mAP) but not by more than this.
_MISMATCH = 0.05


def _bootstrap_info(resamples: int, seed: int) -> dict[str, Any]:
    """analysis.json `bootstrap` before any trial's predictions are read."""
    return {"resamples": resamples, "seed": seed, "images": None, "classes": None, "trials_with_predictions": 0,
            "seconds": None}


def _image_replicates(run_dir: Path, trials: list[dict], resamples: int, seed: int, notes: list[str],
                      expected: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any], Targets]:
    """{trial_id: bootstrap mAP replicates} of the usable FINISHED trials with predictions, the bootstrap's
    summary and the run's targets; every trial that cannot be used gets `excluded` (studies.exports.evidence)."""
    info = _bootstrap_info(resamples, seed)
    tgt = evidence.load_targets(run_dir, notes, expected)
    scores = evidence.trial_scores(run_dir, trials, tgt, notes)
    if tgt.targets is None:
        return {}, info, tgt
    info.update(images=int(tgt.targets.shape[0]), classes=int(tgt.targets.shape[1]))
    chosen = [t for t in trials if t["trial_id"] in scores]
    if not chosen:
        return {}, info, tgt
    start = time.perf_counter()
    maps, reps = bootstrap_maps((scores[t["trial_id"]] for t in chosen), tgt.targets, tgt.ignore, resamples, seed)
    info.update(trials_with_predictions=len(chosen), seconds=round(time.perf_counter() - start, 2))
    out = {}
    for j, t in enumerate(chosen):
        t["mAP_predictions"] = float(maps[j])
        t["ci_low"], t["ci_high"] = (float(x) for x in np.percentile(reps[:, j], [2.5, 97.5]))
        t["se"] = float(reps[:, j].std(ddof=1))
        if _disagrees(t, scores[t["trial_id"]], tgt, notes):
            continue
        out[t["trial_id"]] = reps[:, j]
    return out, info, tgt


def _disagrees(t: dict, scores: np.ndarray, tgt: Targets, notes: list[str]) -> bool:
    """Does trials.csv report a mAP the trial's own predictions cannot give? Then neither number can be trusted,
    and the trial is left out."""
    if abs(t["mAP_predictions"] - t["mAP"]) <= _MISMATCH:
        return False
    # float16 rounding ties scores the model told apart, and ties reorder images: on a small validation set or an
    # undertrained model that alone moves AP. Ranking every tie's positives first, then last, bounds what the
    # unrounded scores could give; only a reported mAP outside that range is suspect.
    s64, y = scores.astype(np.float64), tgt.targets
    lo, hi = (mean_average_precision(s64 + eps * y, y, tgt.ignore) for eps in (-1e-9, 1e-9))
    if lo - _MISMATCH <= t["mAP"] <= hi + _MISMATCH:
        return False
    evidence.exclude(t, "metric mismatch", notes,
                     f"{schema.PREDICTIONS_DIR}/{t['trial_id']}.npz (trial {t['trial_id']}, seed {t['seed']}) gives "
                     f"{t['mAP_predictions']:.2f} mAP ([{lo:.2f}, {hi:.2f}] with its float16 ties ranked either way) "
                     f"but {schema.TRIALS_CSV} reports {t['mAP']:.2f}: one of them is not the reported model's; "
                     f"trial left out. Next: {evidence.REDO_SEED}")
    return True


def _arm_seeds(trials: list[dict], value: Any, notes: list[str]) -> list[dict]:
    """The arm's FINISHED trials (usable or not); a seed finished twice counts once, the first row."""
    seen: dict[int, str] = {}
    out = []
    for t in trials:
        # A row whose status cell is damaged may be a finished trial: it counts, excluded, where its seed is missing.
        if t["value"] != value or (t["status"] != "FINISHED" and not (
                t["excluded"] and t["status"] not in schema.TRIAL_STATUSES)):
            continue
        if not t["excluded"] and t["seed"] in seen:
            notes.append(f"arm {value}: seed {t['seed']} finished twice; kept trial {seen[t['seed']]}")
            continue
        if not t["excluded"]:
            seen[t["seed"]] = t["trial_id"]
        out.append(t)
    return out


def _reference(study: dict, values: list[Any], notes: list[str]) -> Any:
    """The reference arm: study.json's paper_config value of the axis as one of its axis_values (which the plan
    always makes it), the same type first (True is not 1, though True == 1); None, noted, when it is none."""
    ref = (study.get("paper_config") or {}).get(study["axis"])
    if ref is None:
        return None
    same = next((v for v in values if type(v) is type(ref) and v == ref), None)
    if same is None and not isinstance(ref, bool):
        same = next((v for v in values if not isinstance(v, bool) and evidence.same_value(str(ref), v)), None)
    if same is None:
        notes.append(f"study.json's paper_config {study['axis']} = {ref!r} is none of its axis_values {values}: no "
                     f"reference arm, so no comparisons; {evidence.RESTORE}")
    return same


def _typical_sd(arms: list[dict]) -> float | None:
    """SD of one seed's difference between two arms, from the within-arm spread pooled over the study."""
    dof = sum(a["n"] - 1 for a in arms if a["n"] >= 2)
    if not dof:
        return None
    return math.sqrt(2 * sum((a["n"] - 1) * a["sd"] ** 2 for a in arms if a["n"] >= 2) / dof)


def _ablation(study: dict, trials: list[dict], reps: dict[str, np.ndarray], tgt: Targets, values: list[Any],
              ref: Any, notes: list[str]) -> dict:
    axis = study["axis"]
    if ref is None and (study.get("paper_config") or {}).get(axis) is None:
        notes.append(f"study.json has no paper_config for {axis}: no reference arm, so no comparisons")
    arms, finished, statuses = [], {}, {}
    for v in values:
        finished[v] = _arm_seeds(trials, v, notes)
        statuses[v] = dict(Counter(t["status"] for t in trials if t["value"] == v))
        usable = [t for t in finished[v] if not t["excluded"]]
        arms.append({"value": v, "is_reference": v == ref, "seeds": sorted(t["seed"] for t in usable),
                     "statuses": statuses[v], "excluded": [t["trial_id"] for t in finished[v] if t["excluded"]],
                     **stats.mean_ci([t["mAP"] for t in usable])})
    comparisons = []
    others = [a for a in arms if not a["is_reference"]]
    typical = _typical_sd(arms)
    design = study.get("seeds")
    unplaced = [t for t in trials if t["excluded"] and t["value"] is None]
    for arm in others if ref is not None else []:
        a, r, fallback, empty = evidence.comparison_trials(finished[arm["value"]], finished[ref], design, unplaced)
        have = tgt.state == "images"
        c = stats.compare({s: t["mAP"] for s, t in a.items()}, {s: t["mAP"] for s, t in r.items()},
                          {s: reps[t["trial_id"]] for s, t in a.items()} if have else None,
                          {s: reps[t["trial_id"]] for s, t in r.items()} if have else None)
        if c["p"] is not None and not math.isfinite(c["p"]):
            stats.untested(c, "no test: its statistic is not finite")
        if empty:
            c["no_test"] = empty
        elif tgt.state == "damaged":  # a seeds-only test would ignore the validation set: none at all instead
            stats.untested(c, f"no test: {tgt.reason}")
            fallback = c["no_test"]
        elif tgt.state == "none":
            fallback = "seeds only: this export has no predictions/, so the validation set's noise is not in the test"
        stats.add_power(c, len(others), typical)
        comparisons.append({"axis": axis, "value": arm["value"], **c, "fallback": fallback})
    # Holm over every planned comparison: one without a test counts as p = 1, so an arm whose evidence a damaged
    # file took away never makes the others easier to call.
    adjusted = stats.holm([1.0 if c["p"] is None else c["p"] for c in comparisons])
    for c, p in zip(comparisons, adjusted, strict=True):
        c["p_holm"] = p if c["p"] is not None else None
        c["holm"] = stats.holm_membership(c, len(comparisons))
        c["verdict"] = stats.verdict(c, c["p_holm"])
        for n, v in ((c["n"], c["value"]), (c["n_reference"], ref)):
            if not n:  # say what became of the trials
                c["verdict"] += f"; {v}: " + (", ".join(f"{k} {m}" for k, m in statuses[v].items()) or "none run")
        if c["fallback"] and c["fallback"] not in c["verdict"]:
            c["verdict"] += f"; {c['fallback']}"
    return {"reference": ref, "arms": arms, "comparisons": comparisons}


def _importances(run_dir: Path, study: dict, notes: list[str]) -> dict[str, Any]:
    """Optuna's fANOVA and PED-ANOVA importances of the searcher's objective (joint search only)."""
    journal = run_dir / (study.get("optuna_storage") or schema.OPTUNA_JOURNAL)
    if not journal.is_file():
        notes.append(f"no Optuna journal at {journal.name}: no parameter importances")
        return {}
    import optuna  # lazily: only a joint search needs it, and the dashboard must not pay for it
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = f"{study.get('study')}/{study.get('run')}"
    try:
        storage = JournalStorage(JournalFileBackend(str(journal)))
        names = optuna.get_all_study_names(storage)
        if name not in names and len(names) != 1:
            notes.append(f"{journal.name} holds studies {names}, none named {name}: no parameter importances")
            return {}
        ostudy = optuna.load_study(study_name=name if name in names else names[0], storage=storage)
    except Exception as e:  # noqa: BLE001 - any damage to the journal costs the importances, not the analysis
        notes.append(f"{journal.name}: unreadable ({type(e).__name__}: {e}): no parameter importances; "
                     f"{evidence.RESTORE}")
        return {}
    out: dict[str, Any] = {}
    for key, evaluator in (("fanova", FanovaImportanceEvaluator(seed=0)), ("ped_anova", PedAnovaImportanceEvaluator())):
        try:
            imp = optuna.importance.get_param_importances(ostudy, evaluator=evaluator)
            out[key] = {k: float(v) for k, v in imp.items()}
        except (ImportError, ValueError, RuntimeError) as e:  # too few trials, one value per parameter, no sklearn
            notes.append(f"{key} importances unavailable: {e}")
    return out


def _search(run_dir: Path, study: dict, trials: list[dict], rows: list[tuple[int, dict]], notes: list[str]) -> dict:
    finished = [t for t in trials if t["status"] == "FINISHED" and not t["excluded"]]
    best = max(finished, key=lambda t: t["mAP"], default=None)
    paper = next((t for t in trials if t["is_paper_config"] and not t["excluded"]), None)
    cells = {r.get("trial_id"): r for _, r in rows}
    keys = list(study.get("search_space") or {})

    def config(t: dict | None) -> dict | None:
        return None if t is None else {"trial_id": t["trial_id"], "mAP": t["mAP"], "status": t["status"],
                                       "config": {k: cells[t["trial_id"]].get(k) for k in keys}}

    return {"best": config(best), "paper": config(paper), "importances": _importances(run_dir, study, notes)}


def analyze_run(run_dir: str | Path, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The analysis of one export folder (what analysis.json holds); `notes` say what could not be computed
    and name every file or row that could not be used (studies.exports.evidence). Reads, never writes."""
    run_dir = Path(run_dir)
    study = evidence.read_study(run_dir)
    notes: list[str] = []
    axis = study.get("axis")
    values = list(study.get("axis_values") or [])
    ref = _reference(study, values, notes) if axis else None
    rows = evidence.read_trial_rows(run_dir, notes)
    trials = evidence.parse_trials(rows, axis, values, notes, study.get("seeds") if axis else None)
    if not trials:
        notes.append(f"no trials in {schema.TRIALS_CSV} yet")
    if any(t["status"] == "FINISHED" for t in trials):
        reps, boot, tgt = _image_replicates(run_dir, trials, resamples, seed, notes, bool(study.get("predictions")))
    else:  # trials save their predictions when they finish: before the first one has, none missing is no damage
        if trials:
            notes.append("no trial has finished yet: no interval and no comparison")
        reps, boot, tgt = {}, _bootstrap_info(resamples, seed), Targets("none")
    out: dict[str, Any] = {
        "schema_version": schema.SCHEMA_VERSION, "kind": "ablation" if axis else "search",
        "study": study.get("study"), "run": study.get("run"), "axis": axis, "metric": schema.REPORTED_METRIC,
        "unit": schema.METRIC_UNIT, "level": 0.95, "alpha": stats.ALPHA, "power": stats.POWER,
        "target_difference": stats.TARGET, "bootstrap": boot, "methods": stats.METHODS, "trials": trials}
    if axis:
        out.update(_ablation(study, trials, reps, tgt, values, ref, notes), search=None)
        used = [t["trial_id"] for t in trials if t["status"] == "FINISHED" and not t["excluded"] and t["value"] == ref]
        out["budget"] = budget_check(run_dir, used) if ref is not None else None
    else:
        out.update(reference=None, arms=[], comparisons=[], search=_search(run_dir, study, trials, rows, notes),
                   budget=None)
    out["notes"] = notes
    return out


def write_analysis(run_dir: str | Path, analysis: dict[str, Any]) -> None:
    """Writes analysis.json and comparisons.csv (one row per arm vs the reference), each atomically."""
    run_dir = Path(run_dir)
    write_json(run_dir / schema.ANALYSIS_JSON, analysis)
    write_csv(run_dir / schema.COMPARISONS_CSV, schema.COMPARISON_COLUMNS, analysis.get("comparisons", []))


# What analysis.json records about how long the analysis took, not about what it found: a rerun on the same files
# changes these and nothing else.
TIMING_FIELDS = (("bootstrap", "seconds"),)
ANALYSIS_FILES = (schema.ANALYSIS_JSON, schema.COMPARISONS_CSV)


def _timed_as(analysis: dict[str, Any], old: Any) -> dict[str, Any]:
    """`analysis` with the timing fields of `old` (analysis.json as on disk), where it has them."""
    out = dict(analysis)
    for section, key in TIMING_FIELDS:
        theirs = old.get(section) if isinstance(old, dict) else None
        if isinstance(out.get(section), dict) and isinstance(theirs, dict) and key in theirs:
            out[section] = {**out[section], key: theirs[key]}
    return out


def _bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def up_to_date(run_dir: str | Path, analysis: dict[str, Any]) -> bool:
    """Do the run's analysis.json and comparisons.csv already hold `analysis`, timing fields aside? Compared
    byte for byte with what write_analysis would write (rendered into a scratch folder, so the format has one
    owner): unreadable, missing or differently written files are not up to date."""
    run_dir = Path(run_dir)
    try:
        old = json.loads(_bytes(run_dir / schema.ANALYSIS_JSON) or b"")
    except ValueError:
        return False
    with tempfile.TemporaryDirectory(prefix="analysis-") as scratch:
        write_analysis(scratch, _timed_as(analysis, old))
        return all(_bytes(run_dir / name) == _bytes(Path(scratch) / name) for name in ANALYSIS_FILES)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies.analyze", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="a study export folder, results/<study>/<run>")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES, metavar="N",
                   help="image resamples of the validation-set bootstrap (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's random seed (default %(default)s)")
    p.add_argument("--format", choices=tables.FORMATS, default=None,
                   help="print the verdict table as a LaTeX tabular or a GitHub Markdown table, and write nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.bootstrap < 2:
        print("error: --bootstrap needs at least 2 resamples (1000-2000 for 95% intervals)", file=sys.stderr)
        return 2
    try:
        analysis = analyze_run(args.run_dir, args.bootstrap, args.seed)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.format:
        try:
            print(tables.format_verdict_table(analysis, args.format), end="")
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    from studies.analysis.summary import format_table  # the terminal's table; the dashboard never needs it

    print(format_table(analysis))
    files = f"{args.run_dir / schema.ANALYSIS_JSON} and {args.run_dir / schema.COMPARISONS_CSV}"
    if up_to_date(args.run_dir, analysis):
        print(f"{files} are up to date (nothing written)")
    else:
        write_analysis(args.run_dir, analysis)
        print(f"wrote {files}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
