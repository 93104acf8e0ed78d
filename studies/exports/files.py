"""Plain file helpers of the export, torch-free and Ray-free: JSON and CSV written atomically (NaN/inf as empty),
CSV read back, timestamps, and the portable paths an export stores (relative to the repository when inside it,
machine-local folders left out). The writer, the analysis and the dashboard's demo all write through these.

It also owns how epochs.csv is read, by everyone (the writer resuming and compacting, the dashboard, the
analysis): `read_epoch_log`. While a study runs, epochs.csv is an append-only log of epoch events:

- the header is the first line, written whole before any row;
- rows are events in the order they happened, one line each;
- a row (t, e) supersedes every earlier row of trial t with epoch >= e (a trial restarted from scratch reports
  epoch 1 again; one resumed from a checkpoint re-reports its last epoch), so the rows that stand are, per
  trial, the last report of each epoch with nothing reported after it at or below that epoch;
- a last line without a line end is a write the writer was killed in, and is ignored.

A row whose epoch is not a whole number (a damaged cell) neither supersedes nor is superseded. A finished
export is compacted (studies/exports/writer.py): one row per (trial, epoch), so these rules change nothing there.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from salgl_core.io import atomic_write_text
from studies.design.paths import REPO
from studies.exports.schema import MACHINE_LOCAL_FIELDS


def utc_now(timestamp: float | None = None) -> str:
    t = datetime.now(UTC) if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def json_safe(v: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return v


def csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]], header: bool = True) -> str:
    """The CSV lines of `rows` (and the header line first), each ended by a line feed."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, csv_text(columns, rows))


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class CsvDamage(ValueError):
    """A CSV the export cannot have written (a row of another length than the header's, broken quoting, bytes
    that are not UTF-8); the message says where, without the file's name."""


def csv_records(text: str, strict: bool = True) -> tuple[list[str], list[tuple[int, list[str]]], list[int]]:
    """A CSV's header, its records as (the line each starts on, its cells) and, when not `strict`, the lines of the
    records whose length differs from the header's (left out). Blank lines are skipped. `strict`: such a record
    raises CsvDamage, as does text that is not CSV either way."""
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[tuple[int, list[str]]] = []
    bad: list[int] = []
    try:
        header = [h.strip() for h in next(reader, [])]
        start = reader.line_num + 1
        while (rec := next(reader, None)) is not None:
            line, start = start, reader.line_num + 1
            if not rec:
                continue
            if len(rec) != len(header):
                if strict:
                    raise CsvDamage(f"line {line} has {len(rec)} fields where the header has {len(header)}: the "
                                    f"file is damaged or was not written by the study export")
                bad.append(line)
                continue
            records.append((line, rec))
    except csv.Error as e:
        raise CsvDamage(f"is not valid CSV at line {reader.line_num} ({e})") from None
    return header, records, bad


@dataclass(frozen=True)
class EpochLog:
    """epochs.csv as `read_epoch_log` reads it."""

    header: list[str]
    # The rows that stand, as (the line each starts on, its cells): trials in the order of their first row,
    # each trial's rows in epoch order.
    records: list[tuple[int, list[str]]]
    superseded: int = 0  # rows a later report of their trial replaced
    torn: str = ""  # the ignored last line without a line end ("" when the file ends with one)
    bad: list[int] = field(default_factory=list)  # not strict: lines of records of the wrong length, left out


def read_epoch_log(text: str, strict: bool = True) -> EpochLog:
    """epochs.csv's text read by the log's rules (this module's docstring): the one reader of epochs.csv.
    Raises CsvDamage when the text is not CSV or (`strict`) has a record of another length than the header's."""
    torn = ""
    cut = text.rfind("\n")
    if cut >= 0 and cut < len(text) - 1:  # a header alone without its line end stays a header
        text, torn = text[:cut + 1], text[cut + 1:]
    header, records, bad = csv_records(text, strict)
    if "trial_id" not in header or "epoch" not in header:
        return EpochLog(header, records, 0, torn, bad)  # not an epochs.csv: the caller says what it lacks
    t_col, e_col = header.index("trial_id"), header.index("epoch")
    # Per trial, the indices of the rows standing so far, epochs ascending (a row stands only if nothing after it
    # reported its epoch or one below): a new row (t, e) pops the rows of epoch >= e off its trial's stack.
    stacks: dict[str, list[tuple[int, int]]] = {}
    gone: set[int] = set()
    for i, (_, cells) in enumerate(records):
        try:
            epoch = int(cells[e_col])
        except ValueError:
            continue
        stack = stacks.setdefault(cells[t_col], [])
        while stack and stack[-1][0] >= epoch:
            gone.add(stack.pop()[1])
        stack.append((epoch, i))
    first: dict[str, int] = {}
    for i, (_, cells) in enumerate(records):
        first.setdefault(cells[t_col], i)
    keep = sorted((i for i in range(len(records)) if i not in gone), key=lambda i: (first[records[i][1][t_col]], i))
    return EpochLog(header, [records[i] for i in keep], len(gone), torn, bad)


def read_epoch_rows(path: Path) -> list[dict[str, str]]:
    """The rows of epochs.csv that stand (`read_epoch_log`), as dicts; [] when the file is absent. Raises CsvDamage
    when it cannot be read as the export writes it."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as e:
        raise CsvDamage(f"is not UTF-8 text (byte {e.start})") from None
    log = read_epoch_log(text)
    return [dict(zip(log.header, cells, strict=True)) for _, cells in log.records]


def portable_path(path: str | Path, repo: Path = REPO) -> str:
    """A path as an export shows it: relative to the repository when inside it, else as it is (a path
    the user gave, such as a data root, names their data and stays)."""
    p = Path(path)
    if p.is_absolute():
        try:
            return p.resolve().relative_to(repo.resolve()).as_posix() or "."
        except ValueError:
            pass
    return str(path)


def portable_config(flat: dict[str, Any], repo: Path = REPO) -> dict[str, Any]:
    """A flat config as the export stores it: machine-local folders left out, absolute paths inside the
    repository made relative to it. The trials themselves still get the absolute paths."""
    return {k: portable_path(v, repo) if isinstance(v, str) and os.path.isabs(v) else v
            for k, v in flat.items() if k not in MACHINE_LOCAL_FIELDS}
