"""The analysis of a study export: predictions files, per-arm and per-trial intervals, verdicts (torch-free).

    python -m studies.analyze results/<study>/<run> [--bootstrap 1000] [--seed 0]

recomputes and rewrites analysis.json and comparisons.csv (schema: results/README.md) from study.json,
trials.csv and, when the trials saved them, predictions/ (each trial's validation scores). Only FINISHED
trials count; the metric is schema.REPORTED_METRIC. For a one-axis study the reference arm is the
paper's configuration (study.json `paper_config`); the statistics are in studies.stats, the image
bootstrap in studies.bootstrap. For a joint search (no axis) it reports the best trial and Optuna's
parameter importances instead. Imports numpy and scipy only (optuna lazily, for a joint search), so
the dashboard can use it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from salgl_core.io import atomic_write_bytes
from studies import schema, stats
from studies.bootstrap import bootstrap_maps, mean_average_precision
from studies.budget import budget_check

DEFAULT_RESAMPLES = 1000
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
# Recomputed and reported mAP may differ by float16 rounding (~1e-4 mAP) but not by more than this.
_MISMATCH = 0.05


def _npz_bytes(compressed: bool, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _ids(image_ids: Any, n: int) -> np.ndarray:
    ids = np.asarray(image_ids)
    if ids.shape != (n,):
        raise ValueError(f"image_ids must be a list of {n} ids (one per score row), got shape {ids.shape}")
    # Integers stay integers; anything else becomes fixed-width text, which loads without pickle.
    return ids.astype(np.int64) if ids.dtype.kind in "iu" else ids.astype(str)


def save_predictions(run_dir: str | Path, trial_id: str, scores: np.ndarray, image_ids: Any) -> Path:
    """Writes predictions/<trial_id>.npz: float16 `scores` [N, C] of the reported model and `image_ids` [N]."""
    if not _SAFE_ID.match(str(trial_id)):
        raise ValueError(f"trial_id {trial_id!r} cannot name a file: use letters, digits, '_', '-' or '.'")
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim != 2:
        raise ValueError(f"scores must be [N images, C classes], got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError(f"trial {trial_id}: scores contain NaN, so they cannot be ranked; save only finished trials")
    path = Path(run_dir) / schema.PREDICTIONS_DIR / f"{trial_id}.npz"
    # Uncompressed: float16 scores shrink only ~12% with zlib, and writing stays ~10x faster.
    atomic_write_bytes(path, _npz_bytes(False, scores=s.astype(np.float16), image_ids=_ids(image_ids, len(s))))
    return path


def save_targets(run_dir: str | Path, targets: np.ndarray, ignore: np.ndarray | None, image_ids: Any) -> Path:
    """Writes predictions/targets.npz once per run: int8 `targets` (1/0), bool `ignore` and `image_ids`."""
    t = np.asarray(targets)
    if t.ndim != 2 or not np.isin(t, (-1, 0, 1)).all():
        raise ValueError(f"targets must be [N, C] of 0/1 (-1 counts as 0), got shape {t.shape}")
    ign = np.zeros(t.shape, dtype=bool) if ignore is None else np.asarray(ignore, dtype=bool)
    if ign.shape != t.shape:
        raise ValueError(f"ignore shape {ign.shape} does not match targets shape {t.shape}")
    path = Path(run_dir) / schema.PREDICTIONS_DIR / schema.TARGETS_FILE
    atomic_write_bytes(path, _npz_bytes(True, targets=(t == 1).astype(np.int8), ignore=ign,
                                         image_ids=_ids(image_ids, len(t))))
    return path


def _load_npz(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in names if k not in z.files]
        if missing:
            raise ValueError(f"{path} lacks {missing}")
        return {k: z[k] for k in names}


def _read_trials(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / schema.TRIALS_CSV
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _number(cell: str | None) -> float | None:
    try:
        v = float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _same(cell: str, value: Any) -> bool:
    if isinstance(value, bool):
        return cell.strip().lower() in (("true", "1") if value else ("false", "0"))
    if isinstance(value, int | float):
        v = _number(cell)
        return v is not None and math.isclose(v, float(value), rel_tol=1e-12, abs_tol=1e-12)
    return cell == str(value)


def _arm_value(cell: str, values: list[Any]) -> Any:
    for v in values:
        if _same(cell, v):
            return v
    v = _number(cell)
    value = cell if v is None else (int(v) if v.is_integer() and "." not in cell else v)
    values.append(value)
    return value


def _image_replicates(run_dir: Path, trials: list[dict], resamples: int, seed: int, notes: list[str]
                      ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """{trial_id: bootstrap mAP replicates} for the trials with predictions, and the bootstrap's summary."""
    info: dict[str, Any] = {"resamples": resamples, "seed": seed, "images": None, "classes": None,
                            "trials_with_predictions": 0, "seconds": None}
    tpath = run_dir / schema.PREDICTIONS_DIR / schema.TARGETS_FILE
    if not tpath.is_file():
        notes.append(f"no {schema.PREDICTIONS_DIR}/{schema.TARGETS_FILE}: no image-level intervals; differences "
                     "leave out the validation set's noise (the trials saved no predictions)")
        return {}, info
    tgt = _load_npz(tpath, schema.TARGET_ARRAYS)
    ids = tgt["image_ids"]
    info.update(images=int(tgt["targets"].shape[0]), classes=int(tgt["targets"].shape[1]))
    chosen: list[tuple[dict, np.ndarray]] = []
    for t in trials:
        path = run_dir / schema.PREDICTIONS_DIR / f"{t['trial_id']}.npz"
        if not path.is_file():
            notes.append(f"trial {t['trial_id']}: no predictions file, so no image-level interval")
            continue
        pred = _load_npz(path, schema.PREDICTION_ARRAYS)
        s, pids = pred["scores"], pred["image_ids"]
        if s.shape != tgt["targets"].shape or len(set(pids.tolist())) != len(pids) or set(pids.tolist()) != set(
                ids.tolist()):
            notes.append(f"trial {t['trial_id']}: predictions {s.shape} do not match targets.npz "
                         f"{tgt['targets'].shape} image for image (same unique ids); left out")
            continue
        if not np.array_equal(pids, ids):  # the same images in another order: put them in the targets' order
            order = np.argsort(pids)
            s = s[order[np.searchsorted(pids[order], ids)]]
        chosen.append((t, s))
    if not chosen:
        return {}, info
    start = time.perf_counter()
    maps, reps = bootstrap_maps([s for _, s in chosen], tgt["targets"], tgt["ignore"], resamples, seed)
    info.update(trials_with_predictions=len(chosen), seconds=round(time.perf_counter() - start, 2))
    for j, (t, _) in enumerate(chosen):
        t["mAP_predictions"] = float(maps[j])
        t["ci_low"], t["ci_high"] = (float(x) for x in np.percentile(reps[:, j], [2.5, 97.5]))
        t["se"] = float(reps[:, j].std(ddof=1))
        if t["mAP"] is not None and abs(t["mAP_predictions"] - t["mAP"]) > _MISMATCH:
            # float16 rounding ties scores the model told apart, and ties reorder images: on a small validation
            # set or an undertrained model that alone moves AP. Ranking every tie's positives first, then last,
            # bounds what the unrounded scores could give; only a reported mAP outside that range is suspect.
            s64, y = chosen[j][1].astype(np.float64), tgt["targets"] > 0
            lo, hi = (mean_average_precision(s64 + eps * y, tgt["targets"], tgt["ignore"]) for eps in (-1e-9, 1e-9))
            if not lo - _MISMATCH <= t["mAP"] <= hi + _MISMATCH:
                notes.append(f"trial {t['trial_id']}: its predictions give {t['mAP_predictions']:.2f} mAP "
                             f"([{lo:.2f}, {hi:.2f}] with their float16 ties ranked either way) but trials.csv "
                             f"reports {t['mAP']:.2f}: are they the reported model's scores?")
    return {t["trial_id"]: reps[:, j] for j, (t, _) in enumerate(chosen)}, info


def _trials(rows: list[dict[str, str]], axis: str | None, values: list[Any], notes: list[str]) -> list[dict]:
    out = []
    for row in rows:
        metric = _number(row.get(schema.REPORTED_METRIC))
        t = {"trial_id": row.get("trial_id", ""), "status": row.get("status", ""),
             "seed": int(_number(row.get("seed")) or 0), "is_paper_config": row.get("is_paper_config") == "True",
             "value": _arm_value(row.get(axis, ""), values) if axis else None, "mAP": metric,
             "mAP_predictions": None, "ci_low": None, "ci_high": None, "se": None}
        if t["status"] == "FINISHED" and metric is None:
            notes.append(f"trial {t['trial_id']} is FINISHED without a {schema.REPORTED_METRIC}: left out")
            t["status"] = "FINISHED (no metric)"
        out.append(t)
    return out


def _arm_seeds(trials: list[dict], value: Any, notes: list[str]) -> dict[int, dict]:
    seeds: dict[int, dict] = {}
    for t in trials:
        if t["value"] == value and t["status"] == "FINISHED":
            if t["seed"] in seeds:
                notes.append(f"arm {value}: seed {t['seed']} finished twice; kept trial {seeds[t['seed']]['trial_id']}")
                continue
            seeds[t["seed"]] = t
    return seeds


def _typical_sd(arms: list[dict]) -> float | None:
    """SD of one seed's difference between two arms, from the within-arm spread pooled over the study."""
    dof = sum(a["n"] - 1 for a in arms if a["n"] >= 2)
    if not dof:
        return None
    return math.sqrt(2 * sum((a["n"] - 1) * a["sd"] ** 2 for a in arms if a["n"] >= 2) / dof)


def _ablation(run_dir: Path, study: dict, trials: list[dict], reps: dict[str, np.ndarray], values: list[Any],
              notes: list[str]) -> dict:
    axis = study["axis"]
    ref = (study.get("paper_config") or {}).get(axis)
    if ref is None:
        notes.append(f"study.json has no paper_config for {axis}: no reference arm, so no comparisons")
    elif ref not in values:
        values.append(ref)
    arms, seeds_of, statuses = [], {}, {}
    for v in values:
        seeds_of[v] = _arm_seeds(trials, v, notes)
        statuses[v] = dict(Counter(t["status"] for t in trials if t["value"] == v))
        arm = {"value": v, "is_reference": v == ref, "seeds": sorted(seeds_of[v]), "statuses": statuses[v],
               **stats.mean_ci([t["mAP"] for t in seeds_of[v].values()])}
        arms.append(arm)
    comparisons = []
    others = [a for a in arms if not a["is_reference"]]
    typical = _typical_sd(arms)
    for arm in others if ref is not None else []:
        a, r = seeds_of[arm["value"]], seeds_of[ref]
        have = all(t["trial_id"] in reps for t in [*a.values(), *r.values()]) and a and r
        c = stats.compare({s: t["mAP"] for s, t in a.items()}, {s: t["mAP"] for s, t in r.items()},
                          {s: reps[t["trial_id"]] for s, t in a.items()} if have else None,
                          {s: reps[t["trial_id"]] for s, t in r.items()} if have else None)
        stats.add_power(c, len(others), typical)
        if a and r and not have:
            c["notes"].append("interval over seeds only: predictions missing, validation-set noise not included")
        comparisons.append({"axis": axis, "value": arm["value"], **c})
    for c, p in zip(comparisons, stats.holm([c["p"] for c in comparisons]), strict=True):
        c["p_holm"] = p
        c["verdict"] = stats.verdict(c, p)
        for n, v in ((c["n"], c["value"]), (c["n_reference"], ref)):
            if not n:  # say what became of the trials
                c["verdict"] += f"; {v}: " + (", ".join(f"{k} {m}" for k, m in statuses[v].items()) or "none run")
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
    storage = JournalStorage(JournalFileBackend(str(journal)))
    names = optuna.get_all_study_names(storage)
    name = f"{study.get('study')}/{study.get('run')}"
    if name not in names and len(names) != 1:
        notes.append(f"Optuna journal holds studies {names}, none named {name}: no parameter importances")
        return {}
    ostudy = optuna.load_study(study_name=name if name in names else names[0], storage=storage)
    out: dict[str, Any] = {}
    for key, evaluator in (("fanova", FanovaImportanceEvaluator(seed=0)), ("ped_anova", PedAnovaImportanceEvaluator())):
        try:
            imp = optuna.importance.get_param_importances(ostudy, evaluator=evaluator)
            out[key] = {k: float(v) for k, v in imp.items()}
        except (ImportError, ValueError, RuntimeError) as e:  # too few trials, one value per parameter, no sklearn
            notes.append(f"{key} importances unavailable: {e}")
    return out


def _search(run_dir: Path, study: dict, trials: list[dict], rows: list[dict[str, str]], notes: list[str]) -> dict:
    finished = [t for t in trials if t["status"] == "FINISHED"]
    best = max(finished, key=lambda t: t["mAP"], default=None)
    paper = next((t for t in trials if t["is_paper_config"]), None)
    cells = {r.get("trial_id"): r for r in rows}
    keys = list(study.get("search_space") or {})

    def config(t: dict | None) -> dict | None:
        return None if t is None else {"trial_id": t["trial_id"], "mAP": t["mAP"], "status": t["status"],
                                       "config": {k: cells[t["trial_id"]].get(k) for k in keys}}

    return {"best": config(best), "paper": config(paper), "importances": _importances(run_dir, study, notes)}


def analyze_run(run_dir: str | Path, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Any]:
    """The analysis of one export folder (what analysis.json holds); `notes` say what could not be computed."""
    run_dir = Path(run_dir)
    path = run_dir / schema.STUDY_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a run folder, results/<study>/<run>, written by a study")
    study = json.loads(path.read_text())
    notes: list[str] = []
    axis = study.get("axis")
    values = list(study.get("axis_values") or [])
    rows = _read_trials(run_dir)
    trials = _trials(rows, axis, values, notes)
    if not trials:
        notes.append(f"no trials in {schema.TRIALS_CSV} yet")
    reps, boot = _image_replicates(run_dir, [t for t in trials if t["status"] == "FINISHED"], resamples, seed, notes)
    out: dict[str, Any] = {
        "schema_version": schema.SCHEMA_VERSION, "kind": "ablation" if axis else "search",
        "study": study.get("study"), "run": study.get("run"), "axis": axis, "metric": schema.REPORTED_METRIC,
        "unit": schema.METRIC_UNIT, "level": 0.95, "alpha": stats.ALPHA, "power": stats.POWER,
        "target_difference": stats.TARGET, "bootstrap": boot, "methods": stats.METHODS, "trials": trials}
    if axis:
        out.update(_ablation(run_dir, study, trials, reps, values, notes), search=None)
        ref = [t["trial_id"] for t in trials if t["status"] == "FINISHED" and t["value"] == out["reference"]]
        out["budget"] = budget_check(run_dir, ref) if out["reference"] is not None else None
    else:
        out.update(reference=None, arms=[], comparisons=[], search=_search(run_dir, study, trials, rows, notes),
                   budget=None)
    out["notes"] = notes
    return out


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def write_analysis(run_dir: str | Path, analysis: dict[str, Any]) -> None:
    """Writes analysis.json and comparisons.csv (one row per arm vs the reference), each atomically."""
    run_dir = Path(run_dir)
    atomic_write_bytes(run_dir / schema.ANALYSIS_JSON,
                       (json.dumps(_finite(analysis), indent=2, allow_nan=False) + "\n").encode())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(schema.COMPARISON_COLUMNS)
    for c in analysis.get("comparisons", []):
        w.writerow(["" if _finite(c.get(k)) is None else c.get(k) for k in schema.COMPARISON_COLUMNS])
    atomic_write_bytes(run_dir / schema.COMPARISONS_CSV, buf.getvalue().encode())


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m studies.analyze", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="a study export folder, results/<study>/<run>")
    p.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES, metavar="N",
                   help="image resamples of the validation-set bootstrap (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's random seed (default %(default)s)")
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
    write_analysis(args.run_dir, analysis)
    from studies.summary import format_table  # the terminal's table; the dashboard never needs it

    print(format_table(analysis))
    print(f"wrote {args.run_dir / schema.ANALYSIS_JSON} and {args.run_dir / schema.COMPARISONS_CSV}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
