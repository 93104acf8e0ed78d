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

from studies.exports import schema

# What to do about a damaged file. A finished trial is not run again by --resume (Ray keeps no checkpoint
# of a finished study), so a lost predictions file comes back only from a copy or by re-running the seed.
RESTORE = "restore it from a copy of the export"
REDO_SEED = f"{RESTORE}, or delete it and re-run that seed (--resume does not redo a finished trial)"
# Exceptions np.load raises on a truncated, corrupt, empty or pickled file, a zip flagged as encrypted or with an
# unknown compression, or a header claiming an impossible shape.
_NPZ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError,
               RuntimeError, MemoryError)


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
    problem = _study_problem(study)
    if problem:
        raise ValueError(f"{path}: {problem}, so no arm can be told apart; {RESTORE}")
    return study


def _scalar(v: Any) -> bool:
    return isinstance(v, str | int | float | bool) and not (isinstance(v, float) and not math.isfinite(v))


def _study_problem(study: dict[str, Any]) -> str | None:
    axis, values, paper, seeds = (study.get(k) for k in ("axis", "axis_values", "paper_config", "seeds"))
    if axis is not None and not isinstance(axis, str):
        return f"its axis {axis!r} is not a config field's name"
    if axis is not None and (not isinstance(values, list) or not values or not all(map(_scalar, values))):
        return f"its axis_values {values!r} is not a list of the swept values"
    if paper is not None and (not isinstance(paper, dict) or not all(map(_scalar, paper.values()))):
        return f"its paper_config {paper!r} is not a mapping of fields to values"
    if seeds is not None and (not isinstance(seeds, list) or not all(type(x) is int for x in seeds)):
        return f"its seeds {seeds!r} is not a list of integer seeds"
    return None


def read_trial_rows(run_dir: Path, notes: list[str]) -> list[tuple[int, dict[str, str | None]]]:
    """trials.csv as (line number, row); [] with a note when the file cannot be read or lacks a key column."""
    path = run_dir / schema.TRIALS_CSV
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a copy re-saved by a spreadsheet
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


def same_value(cell: str, value: Any) -> bool:
    """Does a trials.csv cell hold `value` (a study value from JSON: bool, number or text)?"""
    if isinstance(value, bool):
        return cell.strip().lower() in (("true", "1") if value else ("false", "0"))
    if isinstance(value, int | float):
        v = number(cell)
        return v is not None and math.isclose(v, float(value), rel_tol=1e-12, abs_tol=1e-12)
    return cell == str(value)


def _arm_value(cell: str, values: list[Any]) -> Any:
    """The study value a trials.csv cell stands for; None when it is none of them."""
    return next((v for v in values if same_value(cell, v)), None)


def _row_problem(row: dict[str, str | None]) -> str | None:
    if None in row:
        return "the row has more cells than the header"
    blank = sum(v is None for v in row.values())
    return f"the row is cut short ({blank} of {len(row)} cells missing)" if blank else None


def parse_trials(rows: list[tuple[int, dict[str, str | None]]], axis: str | None, values: list[Any],
                 notes: list[str], design: list[int] | None = None) -> list[dict[str, Any]]:
    """One record per trials.csv row: trial_id, status, seed, is_paper_config, value (the arm), mAP and
    `excluded` (None, or why the row cannot be used). `values`: the study's arms, `design`: its seeds; a cell
    matching none of them is an error, not a new arm or seed."""
    counts: dict[str, list[int]] = {}
    for line, row in rows:
        counts.setdefault(row.get("trial_id") or "", []).append(line)
    if axis and rows and axis not in rows[0][1]:
        notes.append(f"{schema.TRIALS_CSV}: its header lacks the study's axis column {axis}, so no trial can be "
                     f"placed in an arm; {RESTORE}")
        axis_missing = True
    else:
        axis_missing = False
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
        elif problem is None and status not in schema.TRIAL_STATUSES:
            problem = f"its status cell {status!r} is none of {', '.join(schema.TRIAL_STATUSES)}"
        elif problem is None and status == "FINISHED":
            problem = _finished_problem(row, t, axis if not axis_missing else None, values, design)
        if axis_missing:  # said once above
            t["excluded"] = problem or f"trials.csv has no {axis} column"
        elif problem:
            t["excluded"] = problem
            notes.append(f"{schema.TRIALS_CSV} line {line} (trial {tid or '?'}): {problem}; trial left out. "
                         f"Next: correct the row, or {RESTORE}")
        out.append(t)
    return out


def _finished_problem(row: dict[str, str | None], t: dict[str, Any], axis: str | None, values: list[Any],
                      design: list[int] | None) -> str | None:
    """Why a FINISHED row's seed, arm or metric cannot be used, or None."""
    if t["seed"] is None:
        return f"its seed cell {row.get('seed')!r} is not an integer seed"
    if design is not None and t["seed"] not in design:
        return f"its seed {t['seed']} is none of the study's seeds {design}"
    if axis and t["value"] is None:
        return f"its {axis} cell {row.get(axis)!r} is none of the study's values {values}"
    if t["mAP"] is None or not 0 <= t["mAP"] <= 100:
        return f"its {schema.REPORTED_METRIC} cell {row.get(schema.REPORTED_METRIC)!r} is no mAP in percent (0-100)"
    return None


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
    odd = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]
    if odd:  # a member not stored as .npy comes back as raw bytes
        raise DamagedFile(f"holds {', '.join(odd)} in a form other than an array")
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


def load_targets(run_dir: Path, notes: list[str], expected: bool = False) -> Targets:
    """The run's targets. `expected`: study.json says the trials save predictions (`predictions`), so their
    absence is damage; an export from before that key, with no predictions at all, was made without them."""
    path = run_dir / schema.PREDICTIONS_DIR / schema.TARGETS_FILE
    rel = f"{schema.PREDICTIONS_DIR}/{schema.TARGETS_FILE}"
    if not path.is_file():
        if not _prediction_files(run_dir) and not expected:
            notes.append(f"no {rel}: the trials saved no predictions, so the intervals are over seeds only, "
                         "conditional on this validation set (its own noise is not in them)")
            return Targets("none")
        problem = ("is missing though study.json says the trials saved predictions" if expected else
                   "is missing though trials saved predictions")
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
    if s.shape != targets.targets.shape:
        raise DamagedFile(f"holds scores {s.shape} for targets.npz's {targets.targets.shape}")
    if ids.shape != (s.shape[0],):
        raise DamagedFile(f"holds image ids of shape {ids.shape} for {s.shape[0]} rows of scores")
    if s.dtype.kind not in "fiu":
        raise DamagedFile(f"holds {s.dtype} scores, not numbers")
    kinds = {k if k not in "iu" else "int" for k in (ids.dtype.kind, targets.image_ids.dtype.kind)}
    if len(kinds) > 1 or len(np.unique(ids)) != len(ids) or not np.array_equal(
            np.sort(ids), np.sort(targets.image_ids)):
        raise DamagedFile("scores other images than targets.npz (its image ids differ)")
    bad = ~np.isfinite(s)
    if bad.any():
        kind = "NaN" if np.isnan(s).any() else "infinite"
        raise DamagedFile(f"holds {kind} scores ({int(bad.sum())} of {s.size}), which cannot be ranked")
    if not np.array_equal(ids, targets.image_ids):  # the same images in another order: the targets' order
        order = np.argsort(ids)
        s = s[order[np.searchsorted(ids[order], targets.image_ids)]]
    return s


def trial_scores(run_dir: Path, trials: list[dict[str, Any]], targets: Targets, notes: list[str]
                 ) -> dict[str, np.ndarray]:
    """{trial_id: scores} of the usable FINISHED trials; any other FINISHED trial gets `excluded` and a note.
    Files that belong to no trial are named too."""
    files = _prediction_files(run_dir)
    known = {t["trial_id"] for t in trials}
    if files and not trials:  # trials.csv is missing or unusable: the files are not what is wrong
        notes.append(f"{len(files)} predictions file(s) but no trial in {schema.TRIALS_CSV} to match them to: "
                     f"restore {schema.TRIALS_CSV} from a copy of the export")
    for stem in sorted(set(files) - known) if trials else []:
        notes.append(f"{schema.PREDICTIONS_DIR}/{files[stem].name} belongs to no trial in {schema.TRIALS_CSV}: "
                     f"not used. Next: delete it, or restore {schema.TRIALS_CSV}'s row")
    out: dict[str, np.ndarray] = {}
    if targets.state != "images":  # none saved, or one note for the run in load_targets
        return out
    for t in trials:
        if t["status"] != "FINISHED" or t["excluded"]:
            continue
        rel = f"{schema.PREDICTIONS_DIR}/{t['trial_id']}.npz"
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


def comparison_trials(arm: list[dict[str, Any]], reference: list[dict[str, Any]], design: list[int] | None,
                      unplaced: list[dict[str, Any]] = ()) -> tuple[dict[int, dict], dict[int, dict], str | None,
                                                                      str | None]:
    """The trials a comparison uses, {seed: trial} per side, what was left out (None: nothing) and, when nothing
    is left to compare, why.

    Input: each side's FINISHED trials, usable or not, and the study's seeds (`design`, study.json `seeds`).
    Every arm of a one-axis study runs the same seeds, so the comparison is paired on the seeds both sides
    have a usable trial for: an unusable trial, or a seed one side did not finish, takes that seed out of both
    sides, and every trial kept has its image-level evidence: the test's size is the one studies.analysis.stats
    calibrates. Without a design (an export that records no seeds) unequal seed sets stay unpaired (Welch),
    and an unusable trial leaves its own side. `unplaced`: unusable trials whose arm cannot be read, named
    where a seed has no trial."""
    usable_a, usable_r = _usable(arm), _usable(reference)
    a, r = usable_a, usable_r
    if design is None:
        a_seeds, r_seeds = {t["seed"] for t in arm}, {t["seed"] for t in reference}
        if a_seeds == r_seeds:  # the same seeds finished: paired on those both can use
            a, r = _common(a, r)
        bad = [t for t in (*arm, *reference) if t["excluded"]]
        gone = "; ".join(f"trial {t['trial_id']}{_where(t)}: {t['excluded']}" for t in bad)
        left = (f"unusable trials left out ({gone})" if bad else None)
    else:
        dropped = sorted((set(a) | set(r)) - (set(a) & set(r)))
        a, r = _common(a, r)
        why = ["; ".join(w for w in (_why(s, arm, design, "this arm"), _why(s, reference, design, "the reference arm"),
                                     _unplaced(s, unplaced)) if w) for s in dropped]
        detail = why[0] if len(dropped) == 1 else "; ".join(f"seed {s}: {w}" for s, w in zip(dropped, why, strict=True))
        left = None if not dropped else (
            f"seed{'s' if len(dropped) > 1 else ''} {', '.join(map(str, dropped))} left out of both arms ({detail})")
    empty = None
    if not a or not r:
        empty = ("this arm has no usable finished trials" if not usable_a else
                 "the reference arm has no usable finished trials" if not usable_r else
                 "no seed has a usable finished trial in both arms")
    return a, r, left, empty


def _usable(trials: list[dict[str, Any]]) -> dict[int, dict]:
    seeds: dict[int, dict] = {}
    for t in trials:
        if not t["excluded"]:
            seeds.setdefault(t["seed"], t)  # a seed finished twice: the first row counts (noted elsewhere)
    return seeds


def _common(a: dict[int, dict], r: dict[int, dict]) -> tuple[dict[int, dict], dict[int, dict]]:
    keep = a.keys() & r.keys()
    return {s: t for s, t in a.items() if s in keep}, {s: t for s, t in r.items() if s in keep}


def _why(seed: int, trials: list[dict[str, Any]], design: list[int], side: str) -> str:
    """Why `side` has no usable trial of `seed` ('' when it has one)."""
    if any(t["seed"] == seed and not t["excluded"] for t in trials):
        return ""
    bad = [t for t in trials if t["excluded"] and (t["seed"] in (seed, None) or t["seed"] not in design)]
    if bad:
        return "; ".join(f"trial {t['trial_id']} of {side}: {t['excluded']}" for t in bad)
    return f"{side} has no finished trial of it"


def _unplaced(seed: int, trials: list[dict[str, Any]]) -> str:
    return "; ".join(f"trial {t['trial_id']}, whose row cannot be placed in an arm, may be it: {t['excluded']}"
                     for t in trials if t["seed"] in (seed, None))
