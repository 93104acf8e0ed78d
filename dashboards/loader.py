"""Reads results/ for the dashboard: study runs, their tables and the paper's reference numbers.

No streamlit here. Functions return plain data (pandas / numpy / dataclasses) plus a list of
readable messages, so the app only decides how to show them and the tests need no browser.
Whatever a user can meet -- a missing folder or study.json, a CSV cut short by a crash or written
with another header, non-numeric cells, invalid JSON, a study still RUNNING -- becomes a message
that names the file (a warning, or a `LoadError` when nothing can be read), never a traceback.
The schema is results/README.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS_DIR = REPO_ROOT / "results"
ENV_VAR = "SALGL_RESULTS_DIR"
SCHEMA_VERSION = 1

TRIAL_STATUSES = ("RUNNING", "FINISHED", "STOPPED", "ERROR", "DIVERGED")
RUN_STATUSES = ("RUNNING", "FINISHED", "INTERRUPTED", "FAILED")
# A RUNNING study whose folder has not changed for this long has probably crashed.
STALE_SECONDS = 2 * 3600

TRIAL_METRICS = ("best_mAP", "best_mAP_ema", "mAP", "mAP_ema", "mAP_present", "CP", "CR", "CF1", "OP", "OR",
                 "OF1", "CF1_top3", "OF1_top3", "scene_nmi")
TRIAL_COLUMNS = ("trial_id", "status", "seed", "is_paper_config", "epochs_done", "best_epoch", *TRIAL_METRICS,
                 "seconds", "device", "gpu_ids", "error")
TRIAL_NUMERIC = ("seed", "epochs_done", "best_epoch", *TRIAL_METRICS, "seconds")
TRIAL_TEXT = ("trial_id", "status", "device", "gpu_ids", "error")
EPOCH_COLUMNS = ("trial_id", "epoch", "lr", "loss_total", "loss_cls", "loss_sample_entropy", "loss_batch_entropy",
                 "mAP", "mAP_ema", "mAP_present", "CF1", "OF1", "CF1_top3", "OF1_top3", "seconds",
                 "images_per_second")
STUDY_KEYS = ("schema_version", "study", "run", "axis", "sampler", "scheduler", "metric", "mode",
              "metric_protocol", "dataset", "backbone", "image_size", "base_config", "paper_config", "seeds",
              "class_names", "status", "started", "finished", "n_trials", "n_finished", "trial_seconds_total",
              "wall_seconds", "provenance", "device")

PAPER_COCO_COLUMNS = ("dataset", "backbone", "resolution", "pretrain", "method", "mAP", "CP", "CR", "CF1", "OP",
                      "OR", "OF1", "CP_top3", "CR_top3", "CF1_top3", "OP_top3", "OR_top3", "OF1_top3", "is_salgl",
                      "source")
PAPER_REPRO_COLUMNS = ("dataset", "backbone", "resolution", "who", "mAP", "source")
PAPER_CURVE_COLUMNS = ("epoch", "best_ema_mAP", "best_regular_mAP", "loss_cls", "loss_sample_entropy",
                       "loss_batch_entropy", "epoch_seconds", "lr", "source")
# Our metric -> the paper's column it compares with. The paper evaluates the EMA model at its best
# epoch (chosen on the test set), so every mAP variant of ours compares with the paper's mAP.
PAPER_METRIC = {"mAP": "mAP", "mAP_ema": "mAP", "best_mAP": "mAP", "best_mAP_ema": "mAP", "CP": "CP",
                "CR": "CR", "CF1": "CF1", "OP": "OP", "OR": "OR", "OF1": "OF1", "CF1_top3": "CF1_top3",
                "OF1_top3": "OF1_top3"}
PRETRAIN_NAMES = {"IMAGENET1K_V1": "ImageNet-1k", "IMAGENET1K_V2": "ImageNet-1k", "DEFAULT": "ImageNet-1k"}
_MISSING_WORDS = {"", "nan", "none", "null", "na", "n/a"}


class LoadError(Exception):
    """A results file cannot be used at all; `path` names it and the message says why."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        self.message = message
        super().__init__(f"{path}: {message}")


def results_dir(override: str | None = None) -> Path:
    """The results root: `override` (the sidebar box), else $SALGL_RESULTS_DIR, else <repo>/results."""
    if override and override.strip():
        return Path(override.strip()).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else DEFAULT_RESULTS_DIR


def shown(path: Path, parts: int = 4) -> str:
    """A short, still unambiguous name for messages: results/<study>/<run>/<file>."""
    return str(Path(*path.parts[-parts:])) if len(path.parts) > parts else str(path)


# ---------------------------------------------------------------------------------------------
# CSV reading


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float):
        return math.isnan(v)
    return isinstance(v, str) and v.strip().lower() in _MISSING_WORDS


def _to_bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "1.0", "yes"):
        return True
    if s in ("false", "0", "0.0", "no"):
        return False
    return None


def read_csv_table(path: Path, required: Sequence[str], expected: Sequence[str] = (),
                   numeric: Iterable[str] = (), text: Iterable[str] = (), booleans: Iterable[str] = (),
                   ) -> tuple[pd.DataFrame, list[str]]:
    """Read a results CSV defensively.

    Raises LoadError when the file is absent, unreadable, empty or lacks a `required` column.
    Otherwise returns the table and warnings for: lines with the wrong number of fields (skipped:
    what a crash mid-write leaves), a last line without a line break, duplicate or missing
    `expected` columns (missing ones are added empty so callers can rely on them), and cells of
    `numeric` columns that are not numbers (read as missing). Other columns become numbers or
    booleans when every non-empty cell is one, else stay text; `text` columns always stay text.
    """
    name = shown(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LoadError(path, "file not found") from None
    except OSError as e:
        raise LoadError(path, f"cannot be read ({e.strerror or e})") from None
    warnings: list[str] = []
    content = raw.decode("utf-8", errors="replace")
    if "\ufffd" in content and "\ufffd".encode() not in raw:
        warnings.append(f"{name}: not valid UTF-8; undecodable bytes were replaced")
    if not content.strip():
        raise LoadError(path, "is empty (no header line): the study may still be starting, or the file was "
                              "cut short")
    reader = csv.reader(io.StringIO(content, newline=""))
    records: list[tuple[int, list[str]]] = []
    try:
        header = [h.strip() for h in next(reader)]
        for rec in reader:
            if rec and any(c.strip() for c in rec):
                records.append((reader.line_num, rec))
    except csv.Error as e:
        warnings.append(f"{name}: stopped reading at line {reader.line_num} ({e})")
    missing_req = [c for c in required if c not in header]
    if missing_req:
        raise LoadError(path, f"lacks the column(s) {', '.join(missing_req)} needed to read it (header: "
                              f"{', '.join(header[:8])}{', ...' if len(header) > 8 else ''}); is this the file "
                              f"described in results/README.md?")
    good, bad = [], []
    for line, rec in records:
        (good if len(rec) == len(header) else bad).append((line, rec))
    if bad:
        line, rec = bad[0]
        warnings.append(f"{name}: skipped {len(bad)} line(s) with the wrong number of fields (line {line} has "
                        f"{len(rec)} of {len(header)}); the file looks cut short or written with another header")
    if good and not content.endswith(("\n", "\r")) and good[-1][0] == records[-1][0]:
        warnings.append(f"{name}: the last line (line {good[-1][0]}) has no line break; it may be incomplete")

    # Duplicate names: keep the last occurrence (README order puts result columns after the config fields).
    cols: dict[str, int] = {}
    for i, h in enumerate(header):
        if h in cols:
            j = cols[h]
            if any(rec[i] != rec[j] for _, rec in good):
                warnings.append(f"{name}: column {h!r} appears twice with different values; the last one is used")
        cols[h] = i
    if "" in cols:
        warnings.append(f"{name}: a column has no name in the header; it is ignored")
        del cols[""]
    lines = [line for line, _ in good]
    text, numeric, booleans = set(text), set(numeric), set(booleans)
    # Plain Python per column: a few hundred cells, where per-column pandas calls would dominate.
    data: dict[str, Any] = {}
    for c, i in cols.items():
        raw_vals = [rec[i] for _, rec in good]
        vals = [None if _is_missing(v) else v.strip() for v in raw_vals]
        if c in text:
            data[c] = vals
            continue
        if c in booleans:
            b = [None if v is None else _to_bool(v) for v in vals]
            odd = [k for k, (v, x) in enumerate(zip(vals, b, strict=True)) if v is not None and x is None]
            if odd:
                warnings.append(f"{name}: column {c} has {len(odd)} value(s) that are not true/false "
                                f"(e.g. {raw_vals[odd[0]]!r} on line {lines[odd[0]]}); read as false")
            data[c] = [bool(x) for x in b]
            continue
        nums = [None if v is None else _to_number(v) for v in vals]
        odd = [k for k, (v, x) in enumerate(zip(vals, nums, strict=True)) if v is not None and x is None]
        present = [x for x in nums if x is not None]
        if c in numeric:
            if odd:
                warnings.append(f"{name}: column {c} has {len(odd)} non-numeric value(s) (e.g. "
                                f"{raw_vals[odd[0]]!r} on line {lines[odd[0]]}); read as missing")
            data[c] = _number_column(nums)
        elif present and not odd:
            data[c] = _number_column(nums)
        elif vals and any(v is not None for v in vals) and all(v is None or _to_bool(v) is not None for v in vals):
            data[c] = [None if v is None else _to_bool(v) for v in vals]
        else:
            data[c] = vals
    df = pd.DataFrame(data, index=range(len(good)))
    absent = [c for c in expected if c not in cols]
    if absent:
        warnings.append(f"{name}: missing column(s) {', '.join(absent)} (results/README.md lists them); "
                        f"shown as empty")
        for c in absent:
            df[c] = pd.Series([None] * len(df), dtype=object)
    return df, warnings


def _to_number(v: str) -> float | int | None:
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return None


def _number_column(nums: list) -> pd.Series:
    """int64 when every cell is an integer, else float64 with NaN for missing cells."""
    if nums and all(isinstance(x, int) for x in nums):
        return pd.Series(nums, dtype="int64")
    return pd.Series([np.nan if x is None else float(x) for x in nums], dtype="float64")


def _dedupe(df: pd.DataFrame, keys: list[str], name: str, warnings: list[str]) -> pd.DataFrame:
    dup = df.duplicated(keys, keep="last")
    if dup.any():
        first = df.loc[dup, keys].iloc[0].tolist()
        warnings.append(f"{name}: {int(dup.sum())} repeated {'/'.join(keys)} row(s) (e.g. {first}); the last "
                        f"one is kept (a resumed trial can repeat an epoch)")
        df = df.loc[~dup].reset_index(drop=True)
    return df


def _check_percent(df: pd.DataFrame, columns: Sequence[str], name: str, warnings: list[str]) -> None:
    vals = pd.concat([pd.to_numeric(df[c], errors="coerce") for c in columns if c in df], ignore_index=True)
    vals = vals.dropna()
    if len(vals) >= 3 and vals.max() <= 1.0 and vals.max() > 0:
        warnings.append(f"{name}: every mAP value is <= 1; results/README.md says percent (0-100): was this "
                        f"exported as fractions?")


def read_trials(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """trials.csv: one row per trial; statuses upper-cased; repeated trial_id -> last row kept."""
    df, warnings = read_csv_table(path, ("trial_id", "status"), TRIAL_COLUMNS, TRIAL_NUMERIC, TRIAL_TEXT,
                                  ("is_paper_config",))
    name = shown(path)
    df = df[df["trial_id"].notna()].reset_index(drop=True)
    df["status"] = df["status"].map(lambda s: str(s).upper() if s is not None else "UNKNOWN")
    df["is_paper_config"] = df["is_paper_config"].map(lambda v: bool(v) if isinstance(v, (bool, np.bool_)) else False)
    odd = sorted(set(df["status"]) - set(TRIAL_STATUSES))
    if odd:
        warnings.append(f"{name}: unknown trial status(es) {', '.join(odd)} (expected one of "
                        f"{', '.join(TRIAL_STATUSES)})")
    df = _dedupe(df, ["trial_id"], name, warnings)
    _check_percent(df, ("best_mAP", "best_mAP_ema", "mAP", "mAP_ema"), name, warnings)
    return df, warnings


def read_epochs(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """epochs.csv: one row per trial and epoch, sorted; rows without an epoch number are dropped."""
    df, warnings = read_csv_table(path, ("trial_id", "epoch"), EPOCH_COLUMNS,
                                  [c for c in EPOCH_COLUMNS if c != "trial_id"], ("trial_id",))
    name = shown(path)
    n = len(df)
    df = df[df["trial_id"].notna() & df["epoch"].notna()].reset_index(drop=True)
    if len(df) < n:
        warnings.append(f"{name}: {n - len(df)} row(s) without a trial_id or epoch number were dropped")
    df = _dedupe(df, ["trial_id", "epoch"], name, warnings)
    return df.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True), warnings


# ---------------------------------------------------------------------------------------------
# study.json and runs


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        raise LoadError(path, "file not found") from None
    except OSError as e:
        raise LoadError(path, f"cannot be read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        hint = " (empty file)" if not e.doc.strip() else ""
        raise LoadError(path, f"is not valid JSON{hint}: {e.msg} at line {e.lineno}, column {e.colno}") from None


def read_study_json(path: Path) -> tuple[dict[str, Any], list[str]]:
    """study.json as a dict with every README key present (None where absent, with a warning)."""
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise LoadError(path, f"must hold a JSON object, found {type(meta).__name__}")
    name = shown(path)
    warnings = []
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        warnings.append(f"{name}: schema_version is {version!r}, this dashboard reads {SCHEMA_VERSION}; some "
                        f"fields may be misread")
    absent = [k for k in ("study", "status", "dataset", "axis") if k not in meta]
    if absent:
        warnings.append(f"{name}: missing key(s) {', '.join(absent)}")
    for k in STUDY_KEYS:
        meta.setdefault(k, None)
    status = str(meta["status"] or "UNKNOWN").upper()
    if status not in RUN_STATUSES:
        warnings.append(f"{name}: unknown status {meta['status']!r} (expected one of {', '.join(RUN_STATUSES)})")
    meta["status"] = status
    for k, kind in (("base_config", dict), ("paper_config", dict), ("provenance", dict), ("seeds", list),
                    ("class_names", list)):
        if meta[k] is not None and not isinstance(meta[k], kind):
            warnings.append(f"{name}: {k} should be a JSON {'object' if kind is dict else 'list'}; ignored")
            meta[k] = None
    return meta, warnings


@dataclass
class Run:
    """One study run: results/<study>/<run>/."""

    path: Path
    meta: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    scene_files: dict[str, Path]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def study(self) -> str:
        return str(self.meta.get("study") or self.path.parent.name)

    @property
    def axis(self) -> str | None:
        return self.meta.get("axis") or None

    @property
    def status(self) -> str:
        return self.meta.get("status") or "UNKNOWN"

    @property
    def dataset(self) -> str:
        return str(self.meta.get("dataset") or (self.meta.get("base_config") or {}).get("dataset") or "unknown")

    @property
    def backbone(self) -> str | None:
        return self.meta.get("backbone") or (self.meta.get("base_config") or {}).get("backbone")

    @property
    def image_size(self) -> int | None:
        v = self.meta.get("image_size") or (self.meta.get("base_config") or {}).get("image_size")
        try:
            return int(v) if v is not None else None
        except (TypeError, ValueError):
            return None

    @property
    def paper_config(self) -> dict[str, Any]:
        return self.meta.get("paper_config") or {}

    @property
    def class_names(self) -> list[str]:
        return [str(c) for c in self.meta.get("class_names") or []]


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def load_run(run_dir: str | Path, with_epochs: bool = True) -> Run:
    """Load results/<study>/<run>/. Raises LoadError only when study.json is missing or unusable;
    problems in the other files become `warnings`, and partial files of a RUNNING study `notes`."""
    run_dir = Path(run_dir)
    meta, warnings = read_study_json(run_dir / "study.json")
    notes: list[str] = []
    running = meta["status"] == "RUNNING"
    tables = {}
    for fname, reader, columns in (("trials.csv", read_trials, TRIAL_COLUMNS),
                                   ("epochs.csv", read_epochs, EPOCH_COLUMNS)):
        if fname == "epochs.csv" and not with_epochs:
            tables[fname] = _empty(columns)
            continue
        path = run_dir / fname
        try:
            tables[fname], w = reader(path)
            warnings.extend(w)
        except LoadError as e:
            tables[fname] = _empty(columns)
            if running and not path.exists():
                notes.append(f"{shown(path)} does not exist yet: the study is RUNNING and no trial has reported")
            else:
                warnings.append(f"{shown(path)}: {e.message}")
    trials = tables["trials.csv"]
    axis = meta.get("axis")
    if axis and len(trials) and axis not in trials.columns:
        warnings.append(f"{shown(run_dir / 'trials.csv')}: no column for the swept field {axis!r}")
    if running:
        n_done = meta.get("n_finished")
        n_all = meta.get("n_trials")
        notes.append(f"{shown(run_dir / 'study.json')} says RUNNING ({n_done if n_done is not None else '?'} "
                     f"of {n_all if n_all is not None else '?'} trials finished): what you see is what has been "
                     f"exported so far; reload to refresh.")
        newest = max((p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file()), default=None)
        if newest is not None and time.time() - newest > STALE_SECONDS:
            hours = (time.time() - newest) / 3600
            notes.append(f"Nothing in {shown(run_dir, 3)} changed for {hours:.1f} h although it says RUNNING: the "
                         f"study may have crashed (re-run it with --resume to finish it).")
    scenes_dir = run_dir / "scenes"
    scene_files = {p.stem: p for p in sorted(scenes_dir.glob("*.json"))} if scenes_dir.is_dir() else {}
    return Run(run_dir, meta, trials, tables["epochs.csv"], scene_files, warnings, notes)


@dataclass
class RunSummary:
    """One line of the study picker."""

    key: str
    path: Path
    study: str
    run: str
    status: str
    dataset: str
    backbone: str | None
    image_size: int | None
    axis: str | None
    n_trials: int | None
    n_finished: int
    best_value: float | None
    best_metric: str
    best_trial: dict[str, Any] | None
    device: str | None
    trial_seconds_total: float | None
    wall_seconds: float | None
    started: str | None
    pretrain: str | None
    warnings: list[str] = field(default_factory=list)

    def label(self) -> str:
        best = f"best {fmt_num(self.best_value)}" if self.best_value is not None else "no result yet"
        n = f"{self.n_finished}/{self.n_trials}" if self.n_trials is not None else f"{self.n_finished}"
        return (f"{self.key} · {self.status} · {n} trials · {best} · {self.device or '?'} · "
                f"{fmt_seconds(self.trial_seconds_total)}")


def best_metric_column(trials: pd.DataFrame) -> str:
    """The paper picks the best EMA-model epoch, so prefer best_mAP_ema when the export has it."""
    if "best_mAP_ema" in trials and pd.to_numeric(trials["best_mAP_ema"], errors="coerce").notna().any():
        return "best_mAP_ema"
    return "best_mAP"


def best_trial(trials: pd.DataFrame) -> tuple[float | None, str, dict[str, Any] | None]:
    """(best value, the column it came from, that trial's row) over trials that have a value."""
    col = best_metric_column(trials)
    if col not in trials or not len(trials):
        return None, col, None
    vals = pd.to_numeric(trials[col], errors="coerce")
    if not vals.notna().any():
        return None, col, None
    i = int(vals.idxmax())
    return float(vals[i]), col, trials.loc[i].to_dict()


def pretrain_name(weights: Any) -> str | None:
    if weights is None:
        return "none (random init)"
    return PRETRAIN_NAMES.get(str(weights), str(weights))


def summarize(run: Run) -> RunSummary:
    m = run.meta
    value, col, row = best_trial(run.trials)
    total = m.get("trial_seconds_total")
    if not isinstance(total, (int, float)) and "seconds" in run.trials and len(run.trials):
        total = float(pd.to_numeric(run.trials["seconds"], errors="coerce").sum())
    # "Finished" as studies/export.py counts it in study.json: trials that ended, whatever the outcome.
    n_finished = m.get("n_finished")
    if not isinstance(n_finished, int):
        n_finished = int(run.trials["status"].isin(TRIAL_STATUSES[1:]).sum()) if len(run.trials) else 0
    n_trials = m.get("n_trials") if isinstance(m.get("n_trials"), int) else (len(run.trials) or None)
    device = m.get("device")
    if not device and "device" in run.trials and run.trials["device"].notna().any():
        device = str(run.trials["device"].dropna().iloc[0])
    weights = (m.get("base_config") or {}).get("backbone_weights", "IMAGENET1K_V1")
    return RunSummary(run.key, run.path, run.study, str(m.get("run") or run.path.name), run.status, run.dataset,
                      run.backbone, run.image_size, run.axis, n_trials, n_finished, value, col, row, device,
                      float(total) if isinstance(total, (int, float)) else None,
                      m.get("wall_seconds") if isinstance(m.get("wall_seconds"), (int, float)) else None,
                      m.get("started"), pretrain_name(weights), list(run.warnings))


def _started_key(s: RunSummary) -> float:
    if s.started:
        try:
            return datetime.fromisoformat(str(s.started).replace("Z", "+00:00")).timestamp()
        except ValueError:
            s.warnings.append(f"{shown(s.path / 'study.json')}: started = {s.started!r} is not an ISO 8601 time")
    try:
        return (s.path / "study.json").stat().st_mtime
    except OSError:
        return 0.0


def list_runs(root: str | Path) -> tuple[list[RunSummary], list[str]]:
    """Every results/<study>/<run>/ with a study.json, newest first, and messages about the folders
    that could not be listed. Raises LoadError when `root` itself is missing or not a folder."""
    root = Path(root)
    if not root.exists():
        raise LoadError(root, "the results folder does not exist (set it in the sidebar or with $SALGL_RESULTS_DIR)")
    if not root.is_dir():
        raise LoadError(root, "is not a folder")
    runs, warnings = [], []
    for study_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if study_dir.name == "paper" or study_dir.name.startswith((".", "_")):
            continue
        for run_dir in sorted(p for p in study_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            if not (run_dir / "study.json").exists():
                found = [f for f in ("trials.csv", "epochs.csv") if (run_dir / f).exists()]
                what = f"has {' and '.join(found)} but" if found else "has"
                warnings.append(f"{shown(run_dir, 3)} {what} no study.json; skipped (a study export always "
                                f"writes study.json first)")
                continue
            try:
                run = load_run(run_dir, with_epochs=False)
            except LoadError as e:
                warnings.append(f"{shown(e.path)}: {e.message}; run skipped")
                continue
            runs.append(summarize(run))
    runs.sort(key=lambda s: (_started_key(s), s.key), reverse=True)
    return runs, warnings


# ---------------------------------------------------------------------------------------------
# Paper tables


@dataclass
class PaperTables:
    coco: pd.DataFrame
    reproductions: pd.DataFrame
    curve: pd.DataFrame
    folder: Path | None
    warnings: list[str] = field(default_factory=list)


def paper_dir(root: str | Path | None = None) -> Path | None:
    """<root>/paper when it holds the tables, else the repository's results/paper (facts ship with the code)."""
    for d in ([Path(root) / "paper"] if root is not None else []) + [DEFAULT_RESULTS_DIR / "paper"]:
        if (d / "coco_comparison.csv").is_file():
            return d
    return None


def load_paper_tables(root: str | Path | None = None) -> PaperTables:
    folder = paper_dir(root)
    warnings: list[str] = []
    specs = {
        "coco_comparison.csv": (("method", "mAP"), PAPER_COCO_COLUMNS,
                                [c for c in PAPER_COCO_COLUMNS[5:] if c not in ("is_salgl", "source")] +
                                ["resolution"], ("dataset", "backbone", "pretrain", "method", "source"), ("is_salgl",)),
        "reproductions.csv": (("dataset", "mAP"), PAPER_REPRO_COLUMNS, ("resolution", "mAP"),
                              ("dataset", "backbone", "who", "source"), ()),
        "coco_reproduction_curve.csv": (("epoch", "best_ema_mAP"), PAPER_CURVE_COLUMNS, PAPER_CURVE_COLUMNS[:-1],
                                        ("source",), ()),
    }
    tables = {}
    for fname, (req, exp, num, txt, bools) in specs.items():
        if folder is None:
            tables[fname] = _empty(exp)
            continue
        try:
            tables[fname], w = read_csv_table(folder / fname, req, exp, num, txt, bools)
            warnings.extend(w)
        except LoadError as e:
            tables[fname] = _empty(exp)
            warnings.append(f"{shown(e.path, 3)}: {e.message}")
    if folder is None:
        where = f"{Path(root) / 'paper'} or {DEFAULT_RESULTS_DIR / 'paper'}" if root else str(DEFAULT_RESULTS_DIR)
        warnings.append(f"the paper tables (coco_comparison.csv, ...) were not found in {where}")
    return PaperTables(tables["coco_comparison.csv"], tables["reproductions.csv"],
                       tables["coco_reproduction_curve.csv"], folder, warnings)


@dataclass
class PaperRef:
    value: float
    metric: str
    method: str
    dataset: str
    backbone: str
    resolution: int
    pretrain: str
    source: str

    def describe(self) -> str:
        return (f"{self.method} paper, {self.dataset.upper()} {self.backbone} {self.resolution} px "
                f"({self.pretrain}): {self.metric} {self.value:g}")


def paper_reference(coco: pd.DataFrame, dataset: str | None, backbone: str | None, resolution: Any,
                    metric: str = "mAP", pretrain: str | None = "ImageNet-1k") -> PaperRef | None:
    """SALGL's own number in the paper for this setting, e.g. coco/resnet101/448 -> 85.8; None where the
    paper has none (synthetic data, another backbone or resolution, or a metric it does not report)."""
    col = PAPER_METRIC.get(metric)
    if col is None or col not in coco or not len(coco) or dataset is None or backbone is None:
        return None
    try:
        res = int(float(resolution))
    except (TypeError, ValueError):
        return None
    hit = coco[(coco["dataset"] == dataset) & (coco["backbone"] == backbone)
               & (pd.to_numeric(coco["resolution"], errors="coerce") == res) & coco["is_salgl"].astype(bool)]
    if pretrain is not None and len(hit) > 1:
        hit = hit[hit["pretrain"] == pretrain]
    vals = pd.to_numeric(hit[col], errors="coerce") if len(hit) else pd.Series(dtype=float)
    if not vals.notna().any():
        return None
    row = hit.loc[vals.notna()].iloc[0]
    return PaperRef(float(row[col]), col, str(row["method"]), dataset, backbone, res, str(row["pretrain"]),
                    str(row["source"]))


def reproduction_refs(repro: pd.DataFrame, dataset: str | None, backbone: str | None,
                      resolution: Any) -> pd.DataFrame:
    """The published reproduction figures (author checkpoint / re-implementation) for this setting."""
    if not len(repro) or dataset is None:
        return repro.iloc[0:0]
    hit = repro[(repro["dataset"] == dataset) & (repro["backbone"] == backbone)]
    return hit[pd.to_numeric(hit["resolution"], errors="coerce") == pd.to_numeric(resolution, errors="coerce")]


# ---------------------------------------------------------------------------------------------
# Shaping for the views


def fmt_num(v: Any, digits: int = 2) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "–"
    return "–" if math.isnan(f) else f"{f:.{digits}f}"


def fmt_value(v: Any) -> str:
    """An axis value as a label: 4, 0.99, 1 (not 4.0 / 1.0), text unchanged."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "–" if math.isnan(v) else f"{float(v):g}"
    return str(v)


def fmt_seconds(s: Any) -> str:
    try:
        s = float(s)
    except (TypeError, ValueError):
        return "–"
    if math.isnan(s):
        return "–"
    h, rest = divmod(int(round(s)), 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}"


def _same(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a) == str(b)


@dataclass
class Ablation:
    points: pd.DataFrame   # trial_id, seed, value, label, metric, status, is_paper_config, counted
    summary: pd.DataFrame  # value, label, n, mean, std, min, max, failed, is_paper
    axis: str
    metric: str


def ablation_summary(trials: pd.DataFrame, axis: str, metric: str,
                     paper_config: dict[str, Any] | None = None) -> Ablation:
    """Per axis value: mean, std (sample, over seeds), n of the FINISHED trials, plus every trial as a point.

    Trials that are not FINISHED (RUNNING, STOPPED, ERROR, DIVERGED) stay in `points` with counted=False;
    `failed` counts ERROR / DIVERGED trials per value, so a diverging setting is visible, not hidden.
    """
    cols = ["trial_id", "seed", "value", "label", "metric", "status", "is_paper_config", "counted"]
    if axis not in trials or metric not in trials or not len(trials):
        return Ablation(pd.DataFrame(columns=cols), pd.DataFrame(
            columns=["value", "label", "n", "mean", "std", "min", "max", "failed", "is_paper"]), axis, metric)
    t = trials[trials[axis].notna()]
    paper_value = (paper_config or {}).get(axis)
    pts = pd.DataFrame({
        "trial_id": t["trial_id"].astype(str),
        "seed": t["seed"] if "seed" in t else np.nan,
        "value": t[axis],
        "label": t[axis].map(fmt_value),
        "metric": pd.to_numeric(t[metric], errors="coerce"),
        "status": t["status"],
        "is_paper_config": t["is_paper_config"].astype(bool) if "is_paper_config" in t else False,
    })
    pts["counted"] = (pts["status"] == "FINISHED") & pts["metric"].notna()
    order = sorted(pts["value"].unique(), key=lambda v: (isinstance(v, str), v if not isinstance(v, str) else 0,
                                                          str(v)))
    rows = []
    for v in order:
        g = pts[pts["value"] == v]
        c = g.loc[g["counted"], "metric"]
        is_paper = bool(g["is_paper_config"].any()) or (paper_value is not None and _same(v, paper_value))
        rows.append({"value": v, "label": fmt_value(v), "n": int(len(c)),
                     "mean": float(c.mean()) if len(c) else np.nan,
                     "std": float(c.std(ddof=1)) if len(c) > 1 else np.nan,
                     "min": float(c.min()) if len(c) else np.nan, "max": float(c.max()) if len(c) else np.nan,
                     "failed": int(g["status"].isin(["ERROR", "DIVERGED"]).sum()), "is_paper": is_paper})
    rank = {v: i for i, v in enumerate(order)}
    pts = pts.assign(_r=pts["value"].map(rank)).sort_values(["_r", "seed"]).drop(columns="_r")
    return Ablation(pts.reset_index(drop=True), pd.DataFrame(rows), axis, metric)


def config_columns(trials: pd.DataFrame) -> list[str]:
    """The flat config fields in trials.csv: every column that is not one of the README's result columns."""
    return [c for c in trials.columns if c not in TRIAL_COLUMNS]


def search_params(run: Run) -> list[str]:
    """The parameters a `tune` study searched: study.json search_space keys found in trials.csv, else the
    config columns that vary across trials."""
    space = run.meta.get("search_space")
    if isinstance(space, dict) and space:
        found = [k for k in space if k in run.trials]
        if found:
            return found
    varying = []
    for c in config_columns(run.trials):
        if run.trials[c].astype(str).nunique(dropna=True) > 1:
            varying.append(c)
    return varying


def log_scale_params(run: Run) -> list[str]:
    """Searched parameters whose search_space entry says it is sampled on a log scale (e.g. loguniform)."""
    space = run.meta.get("search_space")
    if not isinstance(space, dict):
        return []
    return [k for k, v in space.items() if "log" in json.dumps(v, default=str).lower()]


def search_points(trials: pd.DataFrame, params: Sequence[str], metric: str) -> pd.DataFrame:
    """Long table (param, value, metric, trial_id, status) for metric-vs-parameter plots."""
    rows = []
    if metric not in trials:
        return pd.DataFrame(columns=["param", "value", "metric", "trial_id", "status"])
    m = pd.to_numeric(trials[metric], errors="coerce")
    for p in params:
        if p not in trials:
            continue
        for v, y, tid, st in zip(trials[p], m, trials["trial_id"], trials["status"], strict=True):
            if not _is_missing(v) and not (isinstance(y, float) and math.isnan(y)):
                rows.append({"param": p, "value": v, "metric": float(y), "trial_id": str(tid), "status": st})
    return pd.DataFrame(rows, columns=["param", "value", "metric", "trial_id", "status"])


def trial_label(row: dict[str, Any] | pd.Series, axis: str | None) -> str:
    parts = [str(row["trial_id"])]
    if axis and axis in row and not _is_missing(row[axis]):
        parts.append(f"{axis}={fmt_value(row[axis])}")
    if "seed" in row and not _is_missing(row["seed"]):
        parts.append(f"seed {fmt_value(row['seed'])}")
    return " · ".join(parts)


def best_per_dataset(runs: Sequence[RunSummary]) -> pd.DataFrame:
    """Our best trial per (dataset, backbone, resolution) over every listed run."""
    cols = ["dataset", "backbone", "resolution", "pretrain", "run", "trial_id", "metric", "value", "CF1", "OF1",
            "CF1_top3", "OF1_top3", "status"]
    best: dict[tuple, RunSummary] = {}
    for s in runs:
        if s.best_value is None:
            continue
        k = (s.dataset, s.backbone, s.image_size)
        if k not in best or s.best_value > best[k].best_value:
            best[k] = s
    rows = []
    for (ds, bb, res), s in sorted(best.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        t = s.best_trial or {}
        rows.append({"dataset": ds, "backbone": bb, "resolution": res, "pretrain": s.pretrain, "run": s.key,
                     "trial_id": str(t.get("trial_id")), "metric": s.best_metric, "value": s.best_value,
                     **{c: _float(t.get(c)) for c in ("CF1", "OF1", "CF1_top3", "OF1_top3")}, "status": s.status})
    return pd.DataFrame(rows, columns=cols)


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def comparison_table(best: pd.DataFrame, paper: PaperTables) -> pd.DataFrame:
    """Our best result per dataset (first) beside the paper's rows for the same dataset (all of COCO's table).

    Ours: mAP is the best epoch's mAP (EMA model where exported), CF1/OF1 the last epoch's."""
    cols = ["dataset", "backbone", "resolution", "pretrain", "method", "mAP", "CF1", "OF1", "CF1_top3",
            "OF1_top3", "ours - SALGL paper", "source"]
    rows = []
    coco = paper.coco
    for ds in sorted(set(best["dataset"]) | (set(coco["dataset"].dropna()) if len(coco) else set())):
        for _, b in best[best["dataset"] == ds].iterrows():
            ref = paper_reference(coco, ds, b["backbone"], b["resolution"])
            rows.append({"dataset": ds, "backbone": b["backbone"], "resolution": b["resolution"],
                         "pretrain": b["pretrain"], "method": f"ours: {b['run']} trial {b['trial_id']}",
                         "mAP": round(b["value"], 3), **{c: round(b[c], 3) for c in ("CF1", "OF1", "CF1_top3",
                                                                                      "OF1_top3")},
                         "ours - SALGL paper": round(b["value"] - ref.value, 3) if ref else np.nan,
                         "source": f"this project: {b['run']}/trials.csv ({b['metric']})"})
        for _, r in coco[coco["dataset"] == ds].iterrows() if len(coco) else []:
            rows.append({"dataset": ds, "backbone": r["backbone"], "resolution": r["resolution"],
                         "pretrain": r["pretrain"], "method": r["method"] + (" (paper)" if r["is_salgl"] else ""),
                         **{c: r[c] for c in ("mAP", "CF1", "OF1", "CF1_top3", "OF1_top3")},
                         "ours - SALGL paper": np.nan, "source": r["source"]})
    return pd.DataFrame(rows, columns=cols)


# ---------------------------------------------------------------------------------------------
# Scenes


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
    """scenes/<trial_id>.json, with its shapes checked against each other."""
    path = Path(path)
    d = read_json(path)
    if not isinstance(d, dict):
        raise LoadError(path, f"must hold a JSON object, found {type(d).__name__}")
    absent = [k for k in ("cooccurrence_prob", "cooccurrence_counts_diag", "scene_usage") if d.get(k) is None]
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


def typical_labels(scene: SceneData, top: int = 5) -> pd.DataFrame:
    """Per scene, the labels most typical of it.

    share = the fraction of a label's (EMA-)counted images that went to this scene; lift = share divided
    by the scene's fraction of all label occurrences (1 = no preference). Ranked by lift, then count.
    """
    diag = np.clip(scene.diag, 0, None)
    per_label = diag.sum(0)
    total = diag.sum()
    rows = []
    for k in range(scene.num_scenes):
        frac_k = diag[k].sum() / total if total > 0 else 0.0
        share = np.divide(diag[k], per_label, out=np.zeros_like(diag[k]), where=per_label > 0)
        lift = share / frac_k if frac_k > 0 else np.zeros_like(share)
        order = sorted((i for i in range(diag.shape[1]) if diag[k, i] > 0), key=lambda i: (-lift[i], -diag[k, i]))
        for r, i in enumerate(order[:top], 1):
            rows.append({"scene": k, "rank": r, "label": scene.class_names[i], "count": float(diag[k, i]),
                         "share": float(share[i]), "lift": float(lift[i])})
    return pd.DataFrame(rows, columns=["scene", "rank", "label", "count", "share", "lift"])
