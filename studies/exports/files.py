"""Plain file helpers of the export, torch-free and Ray-free: JSON and CSV written atomically (NaN/inf as empty),
CSV read back, timestamps, and the portable paths an export stores (relative to the repository when inside it,
machine-local folders left out). The writer, the analysis and the dashboard's demo all write through these."""

from __future__ import annotations

import csv
import io
import json
import math
import os
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


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    atomic_write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


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
