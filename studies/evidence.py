"""What of a study export the analysis can use as evidence, and why not (numpy only, torch-free).

An export may be damaged after the study wrote it: a truncated or corrupt file, a blank cell, a hand edit,
a copy cut short. Every problem becomes one note that names the file, the trial and the next step, and the
trial is left out (`excluded` holds the short reason) rather than read as something else: a blank seed is not
seed 0, NaN scores are not a ranking, predictions that disagree with trials.csv are not the reported model's.
`comparison_trials` then decides which trials a comparison uses so that the test stays valid: an unusable
trial takes its seed out of both arms of a paired comparison, never the validation set out of the test.
Nothing here writes, moves or deletes a file.
"""

from __future__ import annotations

import csv
import json
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studies import schema

# What to do about a damaged file. A finished trial is not run again by --resume (Ray keeps no checkpoint
# of a finished study), so a lost predictions file comes back only from a copy or by re-running the seed.
RESTORE = "restore it from a copy of the export"
REDO_SEED = f"{RESTORE}, or delete it and re-run that seed (--resume does not redo a finished trial)"
# Exceptions np.load raises on a truncated, corrupt, empty or pickled file.
_NPZ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


class DamagedFile(Exception):
    """A file of the export that cannot be used; the message says why, without the path."""


def number(cell: Any) -> float | None:
    """A cell as a finite float, or None (blank, text, NaN, infinite)."""
    try:
        v = float(cell)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def read_study(run_dir: Path) -> dict[str, Any]:
    """study.json; FileNotFoundError or ValueError (naming the file and what to do) when it cannot be used."""
    path = run_dir / schema.STUDY_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a run folder, results/<study>/<run>, written by a study")
    try:
        study = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): nothing can be analysed without it; {RESTORE}") from e
    if not isinstance(study, dict):
        raise ValueError(f"{path} holds a {type(study).__name__}, not a study's keys: {RESTORE}")
    return study


def read_trial_rows(run_dir: Path, notes: list[str]) -> list[tuple[int, dict[str, str | None]]]:
    """trials.csv as (line number, row); [] with a note when the file cannot be read or lacks a key column."""
    path = run_dir / schema.TRIALS_CSV
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [(reader.line_num, row) for row in reader]
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        notes.append(f"{schema.TRIALS_CSV}: unreadable ({type(e).__name__}: {e}), so no trial is analysed; "
                     f"{RESTORE}")
        return []
    lacking = [k for k in ("trial_id", "status", "seed", schema.REPORTED_METRIC) if k not in header]
    if rows and lacking:
        notes.append(f"{schema.TRIALS_CSV}: its header lacks {', '.join(lacking)}, so no trial is analysed; "
                     f"{RESTORE}")
        return []
    return rows


def _same(cell: str, value: Any) -> bool:
    if isinstance(value, bool):
        return cell.strip().lower() in (("true", "1") if value else ("false", "0"))
    if isinstance(value, int | float):
        v = number(cell)
        return v is not None and math.isclose(v, float(value), rel_tol=1e-12, abs_tol=1e-12)
    return cell == str(value)


def _arm_value(cell: str, values: list[Any]) -> Any:
    """The study value a trials.csv cell stands for; None when it is none of them."""
    return next((v for v in values if _same(cell, v)), None)


def _row_problem(row: dict[str, str | None]) -> str | None:
    if None in row:
        return "the row has more cells than the header"
    blank = sum(v is None for v in row.values())
    return f"the row is cut short ({blank} of {len(row)} cells missing)" if blank else None


def parse_trials(rows: list[tuple[int, dict[str, str | None]]], axis: str | None, values: list[Any],
                 notes: list[str]) -> list[dict[str, Any]]:
    """One record per trials.csv row: trial_id, status, seed, is_paper_config, value (the arm), mAP and
    `excluded` (None, or why the row cannot be used). `values`: the study's arms; a cell matching none of
    them is an error, not a new arm."""
    counts: dict[str, list[int]] = {}
    for line, row in rows:
        counts.setdefault(row.get("trial_id") or "", []).append(line)
    out = []
    for line, row in rows:
        tid = row.get("trial_id") or ""
        status = row.get("status") or ""
        seed = number(row.get("seed"))
        metric = number(row.get(schema.REPORTED_METRIC))
        cell = row.get(axis) if axis else None
        t = {"trial_id": tid, "status": status, "seed": int(seed) if seed is not None and seed.is_integer() else None,
             "is_paper_config": row.get("is_paper_config") == "True",
             "value": _arm_value(cell or "", values) if axis else None, "mAP": metric, "mAP_predictions": None,
             "ci_low": None, "ci_high": None, "se": None, "excluded": None}
        problem = _row_problem(row)
        if problem is None and not tid:
            problem = "no trial_id"
        elif problem is None and len(counts[tid]) > 1:
            lines = ", ".join(map(str, counts[tid]))
            problem = f"trial id listed {len(counts[tid])} times (lines {lines}): which row is right cannot be told"
        elif problem is None and status == "FINISHED":
            if t["seed"] is None:
                problem = f"its seed cell {row.get('seed')!r} is not an integer seed"
            elif axis and t["value"] is None:
                problem = f"its {axis} cell {cell!r} is none of the study's values {values}"
            elif metric is None:
                cell = row.get(schema.REPORTED_METRIC)
                problem = f"FINISHED without a finite {schema.REPORTED_METRIC} (cell {cell!r})"
        if problem:
            t["excluded"] = problem
            notes.append(f"{schema.TRIALS_CSV} line {line} (trial {tid or '?'}): {problem}; trial left out. "
                         f"Next: correct the row, or {RESTORE}")
        out.append(t)
    return out


def load_npz(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of an .npz; DamagedFile when it is unreadable, lacks one, or holds objects."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise DamagedFile(f"unreadable ({type(e).__name__}: {e})") from e
    if head != b"PK\x03\x04":  # np.load would try anything else as a pickle or a bare array
        raise DamagedFile("unreadable (empty)" if not head else "unreadable (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in names if k not in z.files]
            if missing:
                raise DamagedFile(f"lacks the array(s) {', '.join(missing)}")
            arrays = {k: z[k] for k in names}  # read here: a truncated member fails now, not later
    except DamagedFile:
        raise
    except _NPZ_ERRORS as e:
        raise DamagedFile(f"unreadable ({type(e).__name__}: {e or 'empty or cut short'})") from e
    return arrays


@dataclass
class Targets:
    """The run's validation targets (predictions/targets.npz), or why the run has no image-level evidence.

    state: "images" (readable), "none" (no trial saved predictions: an export made without them) or
    "damaged" (predictions exist but targets.npz cannot be used: no comparison can include the
    validation set's noise, so none is tested)."""

    state: str
    targets: np.ndarray | None = None
    ignore: np.ndarray | None = None
    image_ids: np.ndarray | None = None
    reason: str | None = None


def _prediction_files(run_dir: Path) -> dict[str, Path]:
    folder = run_dir / schema.PREDICTIONS_DIR
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.npz"))
            if not p.name.startswith(".") and p.name != schema.TARGETS_FILE}


def load_targets(run_dir: Path, notes: list[str]) -> Targets:
    path = run_dir / schema.PREDICTIONS_DIR / schema.TARGETS_FILE
    rel = f"{schema.PREDICTIONS_DIR}/{schema.TARGETS_FILE}"
    if not path.is_file():
        if not _prediction_files(run_dir):
            notes.append(f"no {rel}: the trials saved no predictions, so the intervals are over seeds only, "
                         "conditional on this validation set (its own noise is not in them)")
            return Targets("none")
        problem = "is missing though trials saved predictions"
    else:
        try:
            arrays = load_npz(path, schema.TARGET_ARRAYS)
            problem = _targets_problem(arrays)
        except DamagedFile as e:
            problem = str(e)
    if problem:
        reason = f"{rel} {problem}"
        notes.append(f"{reason}: without it no comparison can include the validation set's noise, so none is "
                     f"tested. Next: {RESTORE} (every trial wrote the same targets)")
        return Targets("damaged", reason=reason)
    ids = arrays["image_ids"]
    return Targets("images", arrays["targets"] > 0, arrays["ignore"].astype(bool), ids)


def _targets_problem(a: dict[str, np.ndarray]) -> str | None:
    t, ign, ids = a["targets"], a["ignore"], a["image_ids"]
    if t.ndim != 2 or ign.shape != t.shape or ids.shape != (t.shape[0],):
        return f"has inconsistent shapes (targets {t.shape}, ignore {ign.shape}, image_ids {ids.shape})"
    if not np.isin(t, (0, 1)).all():
        return "holds targets other than 0/1"
    if len(np.unique(ids)) != len(ids):
        return "lists an image id twice"
    return None


def load_scores(path: Path, targets: Targets) -> np.ndarray:
    """A trial's scores in targets.npz's image order; DamagedFile when they cannot be ranked against it."""
    a = load_npz(path, schema.PREDICTION_ARRAYS)
    s, ids = a["scores"], a["image_ids"]
    assert targets.targets is not None and targets.image_ids is not None
    if s.shape != targets.targets.shape or ids.shape != (s.shape[0],):
        return _raise(f"holds scores {s.shape} for targets.npz's {targets.targets.shape}")
    if s.dtype.kind not in "fiu":
        return _raise(f"holds {s.dtype} scores, not numbers")
    if ids.dtype.kind != targets.image_ids.dtype.kind or len(np.unique(ids)) != len(ids) or not np.array_equal(
            np.sort(ids), np.sort(targets.image_ids)):
        return _raise("scores other images than targets.npz (its image ids differ)")
    bad = ~np.isfinite(s)
    if bad.any():
        kind = "NaN" if np.isnan(s).any() else "infinite"
        return _raise(f"holds {kind} scores ({int(bad.sum())} of {s.size}), which cannot be ranked")
    if not np.array_equal(ids, targets.image_ids):  # the same images in another order: the targets' order
        order = np.argsort(ids)
        s = s[order[np.searchsorted(ids[order], targets.image_ids)]]
    return s


def _raise(message: str) -> np.ndarray:
    raise DamagedFile(message)


def trial_scores(run_dir: Path, trials: list[dict[str, Any]], targets: Targets, notes: list[str]
                 ) -> dict[str, np.ndarray]:
    """{trial_id: scores} of the usable FINISHED trials; any other FINISHED trial gets `excluded` and a note.
    Files that belong to no trial are named too."""
    files = _prediction_files(run_dir)
    known = {t["trial_id"] for t in trials}
    for stem in sorted(set(files) - known):
        notes.append(f"{schema.PREDICTIONS_DIR}/{files[stem].name} belongs to no trial in {schema.TRIALS_CSV}: "
                     f"not used. Next: delete it, or restore {schema.TRIALS_CSV}'s row")
    out: dict[str, np.ndarray] = {}
    if targets.state == "none":
        return out
    for t in trials:
        if t["status"] != "FINISHED" or t["excluded"]:
            continue
        rel = f"{schema.PREDICTIONS_DIR}/{t['trial_id']}.npz"
        if targets.state == "damaged":
            continue  # one note for the run, in load_targets
        problem, short = None, None
        if t["trial_id"] not in files:
            problem, short = "is missing", "no predictions file"
        else:
            try:
                out[t["trial_id"]] = load_scores(files[t["trial_id"]], targets)
            except DamagedFile as e:
                problem, short = str(e), f"predictions {str(e).split(' (')[0]}"
        if problem:
            exclude(t, short, notes, f"{rel} (trial {t['trial_id']}{_where(t)}) {problem}; trial left out. "
                                     f"Next: {REDO_SEED}")
    return out


def _where(t: dict[str, Any]) -> str:
    return f", seed {t['seed']}" if t.get("seed") is not None else ""


def exclude(t: dict[str, Any], reason: str, notes: list[str], note: str) -> None:
    """Marks a trial unusable (`reason`, short) and says so (`note`: the file, the trial, the next step)."""
    t["excluded"] = reason
    notes.append(note)


def comparison_trials(arm: list[dict[str, Any]], reference: list[dict[str, Any]]
                      ) -> tuple[dict[int, dict], dict[int, dict], str | None]:
    """The trials a comparison uses, {seed: trial} per side, and what was left out (None: nothing).

    Input: each side's FINISHED trials, usable or not. When both sides finished the same seeds (the paired
    design), an unusable trial takes its seed out of both sides, so the comparison stays paired on the seeds
    it keeps; otherwise (an unpaired comparison) it leaves its own side only. Either way every trial kept
    has its image-level evidence, so the test's size is the one studies.stats calibrates."""
    def usable(trials: list[dict]) -> dict[int, dict]:
        seeds: dict[int, dict] = {}
        for t in trials:
            if not t["excluded"]:
                seeds.setdefault(t["seed"], t)  # a seed finished twice: the first row counts (noted elsewhere)
        return seeds

    a, r = usable(arm), usable(reference)
    bad = [t for t in (*arm, *reference) if t["excluded"]]
    if not bad:
        return a, r, None
    # A trial whose seed cell is damaged was one of the design's seeds too: pair on the seeds both keep.
    seeds_a, seeds_r = {t["seed"] for t in arm}, {t["seed"] for t in reference}
    paired = seeds_a == seeds_r or None in seeds_a | seeds_r
    if paired:
        keep = a.keys() & r.keys()
        a, r = {s: t for s, t in a.items() if s in keep}, {s: t for s, t in r.items() if s in keep}
    why = "; ".join(f"trial {t['trial_id']}{_where(t)}: {t['excluded']}" for t in bad)
    if paired:
        seeds = sorted({t["seed"] for t in bad if t["seed"] is not None})
        gone = f"seed {', '.join(map(str, seeds))} left out of both arms" if seeds else "trials left out"
    else:
        gone = "unusable trials left out of their arm"
    return a, r, f"{gone} ({why})"
