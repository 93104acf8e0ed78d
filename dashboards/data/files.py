"""Reading and validating results files: study.json, trials.csv, epochs.csv, scenes/<trial>.json, paper CSVs.

The study export (studies/exports/writer.py) writes every file whole, atomically, so a file is either complete
or absent: nothing here repairs half-written rows or guesses units. The one exception is epochs.csv while a study
runs, an append-only log read by its rules (studies.exports.files.read_epoch_log: later reports supersede, a
killed writer's last half line is ignored), as the writer and the analysis read it. What a user can still meet -- a
missing or empty file, invalid JSON, a file of another schema or version, a non-numeric cell -- becomes
a `LoadError` (the file cannot be used) or a warning (it can, with a named cell read as missing) whose
message names the file. The schema itself lives in studies/exports/schema.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dashboards.data.paths import shown
from studies.exports.evidence import number
from studies.exports.files import CsvDamage, csv_records, read_epoch_log
from studies.exports.schema import (
    ARM_STUDY_KEYS,
    EPOCH_COLUMNS,
    RUN_STATUSES,
    SCHEMA_VERSION,
    SEARCH_STUDY_KEYS,
    STUDY_KEYS,
    STUDY_REQUIRED,
    TRIAL_NUMERIC,
    TRIAL_PLACEMENT_COLUMNS,
    TRIAL_REQUIRED,
    TRIAL_STATUSES,
    TRIAL_TEXT,
)

SCENE_REQUIRED = ("cooccurrence_prob", "cooccurrence_counts_diag", "scene_usage")
# study.json keys the views read beyond STUDY_REQUIRED: absent ones are named in a warning.
STUDY_EXPECTED = ("dataset", "axis")
# Where a trial ran (node id and IP, Ray's retries): read with their types (a node id of digits stays
# text); older exports lack these columns, so they are not required.
PLACEMENT_COLUMNS = TRIAL_PLACEMENT_COLUMNS
PLACEMENT_NUMERIC = ("retries",)
PLACEMENT_TEXT = tuple(c for c in PLACEMENT_COLUMNS if c not in PLACEMENT_NUMERIC)


class LoadError(Exception):
    """A results file cannot be used at all; `path` names it and the message says why."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        self.message = message
        super().__init__(f"{path}: {message}")


def _some(names: Sequence[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def read_text(path: Path) -> str:
    """A file's text; LoadError when it is absent, unreadable or not UTF-8."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LoadError(path, "file not found") from None
    except OSError as e:
        raise LoadError(path, f"cannot be read ({e.strerror or e})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LoadError(path, f"is not UTF-8 text (byte {e.start}); the study export writes UTF-8") from None


def stamp(*paths: Path) -> tuple[tuple[str, int, int], ...]:
    """What identifies the files' contents for a cache: (path, mtime in ns, size) each, (path, 0, -1) if absent.

    The export replaces a file by renaming a new one over it, or appends to epochs.csv, so every change changes
    its mtime and size (and a new file in scenes/ changes the folder's)."""
    out = []
    for p in paths:
        try:
            s = p.stat()
            out.append((str(p), s.st_mtime_ns, s.st_size))
        except OSError:
            out.append((str(p), 0, -1))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# CSV


def _to_number(v: str) -> float | int | None:
    """An integer cell as an int (an int64 column keeps its type), else studies.exports.evidence.number's finite
    float: 'nan' and 'inf' parse as floats but are no result (a mean or a chart over them would mislead)."""
    try:
        return int(v)
    except ValueError:
        return number(v)


def _to_bool(v: str) -> bool | None:
    return {"true": True, "false": False}.get(v.lower())


def _number_column(nums: list) -> pd.Series:
    """int64 when every cell is an integer, else float64 with NaN for missing cells."""
    if nums and all(isinstance(x, int) for x in nums):
        return pd.Series(nums, dtype="int64")
    return pd.Series([np.nan if x is None else float(x) for x in nums], dtype="float64")


def read_csv_table(path: Path, columns: Sequence[str], numeric: Iterable[str] = (), text: Iterable[str] = (),
                   booleans: Iterable[str] = (), log: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """A results CSV as a table, and warnings about cells it had to read as missing.

    Raises LoadError when the file is absent, unreadable, empty, not CSV, lacks one of `columns`, repeats
    a column name or has a row whose length differs from the header's (the export never writes one).
    An empty cell is missing. `numeric` columns hold finite numbers (any other cell is read as missing, with
    a warning), `booleans` true/false, `text` stay text; any other column (a config field) becomes
    numbers or booleans when every non-empty cell is one, else stays text. `log`: the file is epochs.csv, read
    by the log's rules (studies.exports.files.read_epoch_log): only the rows that stand, a cut last line ignored.
    """
    content = read_text(path)
    if not content.strip():
        raise LoadError(path, "is empty (no header line); the study export always writes the header")
    warnings: list[str] = []
    try:
        if log:
            epochs = read_epoch_log(content)
            header, records = epochs.header, epochs.records  # (the line each record starts on, its cells)
            if epochs.torn:
                warnings.append(f"{shown(path)}: its last line has no line end (a write the study was stopped "
                                f"in): ignored")
        else:
            header, records, _ = csv_records(content)
    except CsvDamage as e:
        raise LoadError(path, str(e)) from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise LoadError(path, f"lacks the column(s) {_some(missing)} (its header: {_some(header)}): not a "
                              f"{path.name} of the results schema (results/README.md lists the columns)")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise LoadError(path, f"repeats the column(s) {', '.join(map(repr, repeated))} in its header")

    name = shown(path)
    text, numeric, booleans = set(text), set(numeric), set(booleans)
    # Plain Python per column: a few hundred cells, where per-column pandas calls would dominate.
    data: dict[str, Any] = {}
    for i, c in enumerate(header):
        raw = [rec[i] for _, rec in records]
        vals = [v.strip() or None for v in raw]
        if c in text:
            data[c] = vals
            continue
        if c in booleans:
            b = [None if v is None else _to_bool(v) for v in vals]
            odd = [k for k, (v, x) in enumerate(zip(vals, b, strict=True)) if v is not None and x is None]
            if odd:
                warnings.append(f"{name}: column {c} has {len(odd)} value(s) that are not true/false "
                                f"(e.g. {raw[odd[0]]!r} on line {records[odd[0]][0]}); read as false")
            data[c] = [bool(x) for x in b]
            continue
        nums = [None if v is None else _to_number(v) for v in vals]
        odd = [k for k, (v, x) in enumerate(zip(vals, nums, strict=True)) if v is not None and x is None]
        if c in numeric:
            if odd:
                warnings.append(f"{name}: column {c} has {len(odd)} non-numeric or non-finite value(s) (e.g. "
                                f"{raw[odd[0]]!r} on line {records[odd[0]][0]}); read as missing")
            data[c] = _number_column(nums)
        elif any(x is not None for x in nums) and not odd:
            data[c] = _number_column(nums)
        elif any(v is not None for v in vals) and all(v is None or _to_bool(v) is not None for v in vals):
            data[c] = [None if v is None else _to_bool(v) for v in vals]
        else:
            data[c] = vals
    return pd.DataFrame(data, index=range(len(records))), warnings


def read_trials(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """trials.csv: one row per trial (the export keys rows by trial id)."""
    df, warnings = read_csv_table(path, TRIAL_REQUIRED, (*TRIAL_NUMERIC, *PLACEMENT_NUMERIC),
                                  (*TRIAL_TEXT, *PLACEMENT_TEXT), ("is_paper_config",))
    df["status"] = df["status"].fillna("UNKNOWN")
    odd = sorted(set(df["status"]) - set(TRIAL_STATUSES))
    if odd:
        warnings.append(f"{shown(path)}: unknown trial status(es) {', '.join(odd)} (expected one of "
                        f"{', '.join(TRIAL_STATUSES)})")
    return df, warnings


def read_epochs(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """epochs.csv: one row per trial and epoch, each trial's epochs in order, also while the study appends to it
    or after its driver was killed (studies.exports.files.read_epoch_log)."""
    return read_csv_table(path, EPOCH_COLUMNS, EPOCH_COLUMNS[1:], ("trial_id",), log=True)


# ---------------------------------------------------------------------------------------------
# JSON


def read_json(path: Path) -> Any:
    content = read_text(path)
    try:
        return json.loads(content)
    except json.JSONDecodeError as e:
        hint = " (empty file)" if not content.strip() else ""
        raise LoadError(path, f"is not valid JSON{hint}: {e.msg} at line {e.lineno}, column {e.colno}") from None


def read_study_json(path: Path) -> tuple[dict[str, Any], list[str]]:
    """study.json as a dict with every schema key present (None where absent), and warnings.

    Raises LoadError when it is not a JSON object or lacks a key no view can do without."""
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise LoadError(path, f"must hold a JSON object, found {type(meta).__name__}")
    version = meta.get("schema_version")
    absent = [k for k in STUDY_REQUIRED if k not in meta]
    if absent:
        other = f" (its schema_version is {version!r}, this dashboard reads {SCHEMA_VERSION})" if (
            version != SCHEMA_VERSION) else ""
        raise LoadError(path, f"lacks the key(s) {', '.join(absent)}{other}: not a study.json of the results "
                              f"schema (results/README.md lists its keys)")
    name = shown(path)
    warnings = []
    if version != SCHEMA_VERSION:
        warnings.append(f"{name}: schema_version is {version!r}, this dashboard reads {SCHEMA_VERSION}; some "
                        f"fields may be misread")
    absent = [k for k in STUDY_EXPECTED if k not in meta]
    if absent:
        warnings.append(f"{name}: missing key(s) {', '.join(absent)}")
    for k in (*STUDY_KEYS, *SEARCH_STUDY_KEYS, *ARM_STUDY_KEYS):
        meta.setdefault(k, None)
    if meta["status"] not in RUN_STATUSES:
        warnings.append(f"{name}: unknown status {meta['status']!r} (expected one of {', '.join(RUN_STATUSES)})")
    for k, kind in (("base_config", dict), ("paper_config", dict), ("provenance", dict), ("seeds", list),
                    ("class_names", list)):
        if meta[k] is not None and not isinstance(meta[k], kind):
            warnings.append(f"{name}: {k} should be a JSON {'object' if kind is dict else 'list'}; ignored")
            meta[k] = None
    return meta, warnings


# ---------------------------------------------------------------------------------------------
# scenes/<trial_id>.json


@dataclass
class SceneData:
    trial_id: str
    class_names: list[str]
    prob: np.ndarray            # K x C x C, P(j | i, scene k)
    diag: np.ndarray            # K x C co-occurrence count diagonals
    usage: np.ndarray           # K
    nmi: float | None
    contingency: np.ndarray | None  # K x K_true
    path: Path

    @property
    def num_scenes(self) -> int:
        return int(self.prob.shape[0])


def _array(obj: Any, key: str, ndim: int, path: Path) -> np.ndarray:
    try:
        a = np.asarray(obj, dtype=float)
    except (TypeError, ValueError):
        raise LoadError(path, f"{key} is not a numeric array (ragged or non-numeric entries)") from None
    if a.ndim != ndim:
        raise LoadError(path, f"{key} should have {ndim} dimensions, found shape {list(a.shape)}")
    return a


def load_scene(path: str | Path, class_names: Sequence[str] = ()) -> SceneData:
    """scenes/<trial_id>.json, with its shapes checked against each other. Label names come from the file,
    else `class_names` (study.json's), else are numbered."""
    path = Path(path)
    d = read_json(path)
    if not isinstance(d, dict):
        raise LoadError(path, f"must hold a JSON object, found {type(d).__name__}")
    absent = [k for k in SCENE_REQUIRED if d.get(k) is None]
    if absent:
        raise LoadError(path, f"missing key(s) {', '.join(absent)}")
    prob = _array(d["cooccurrence_prob"], "cooccurrence_prob", 3, path)
    k, c, c2 = prob.shape
    if c != c2:
        raise LoadError(path, f"cooccurrence_prob should be K x C x C, found shape {[k, c, c2]}")
    diag = _array(d["cooccurrence_counts_diag"], "cooccurrence_counts_diag", 2, path)
    usage = _array(d["scene_usage"], "scene_usage", 1, path)
    if diag.shape != (k, c) or usage.shape != (k,):
        raise LoadError(path, f"shapes disagree: cooccurrence_prob {[k, c, c]}, cooccurrence_counts_diag "
                              f"{list(diag.shape)} (expected {[k, c]}), scene_usage {list(usage.shape)} "
                              f"(expected {[k]})")
    names = d.get("class_names") or list(class_names)
    if len(names) != c:
        names = [f"label {i}" for i in range(c)]
    cont = d.get("contingency")
    contingency = _array(cont, "contingency", 2, path) if cont is not None else None
    if contingency is not None and contingency.shape[0] != k:
        raise LoadError(path, f"contingency should have K = {k} rows, found shape {list(contingency.shape)}")
    nmi = d.get("true_scene_nmi")
    nmi = float(nmi) if isinstance(nmi, (int, float)) and not isinstance(nmi, bool) else None
    return SceneData(str(d.get("trial_id", path.stem)), [str(n) for n in names], prob, diag, usage, nmi,
                     contingency, path)
