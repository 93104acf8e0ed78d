"""The committed exports under results/ are portable: they name no absolute path of the machine that wrote
them (repository paths are relative, caches and temporary folders left out; see results/README.md)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# A machine's folders, wherever they appear in a file (a JSON value, a CSV cell, a log line).
MACHINE_PATH = re.compile(r"(?<![\w.:/~-])/(home|root|tmp|work|Users|mnt|opt|var|srv|scratch|data)/")
# An absolute path as a whole value: /..., ~/..., C:\... (URLs such as https://... are no paths).
ABSOLUTE = re.compile(r"^(/|~/|[A-Za-z]:[\\/])")


def committed_results() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z", "results"], cwd=REPO, capture_output=True, text=True,
                             check=True, timeout=30)
        files = [REPO / p for p in out.stdout.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: everything under results/
        files = [p for p in (REPO / "results").rglob("*") if p.is_file()]
    return [p for p in files if p.is_file()]


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def values(path: Path) -> Iterator[str]:
    """Every string value of a results file: JSON strings, CSV cells, JSON lines of a journal."""
    if path.suffix == ".json":
        yield from _strings(json.loads(path.read_text()))
    elif path.suffix == ".csv":
        with open(path, newline="") as f:
            for row in csv.reader(f):
                yield from row
    elif path.suffix in (".log", ".jsonl"):  # the Optuna journal: one JSON object per line
        for line in path.read_text().splitlines():
            if line.strip():
                yield from _strings(json.loads(line))


def test_there_are_committed_exports():
    assert any(p.name == "study.json" for p in committed_results())


@pytest.mark.parametrize("path", committed_results(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_absolute_path_in_a_committed_export(path):
    text = path.read_text(errors="replace")
    m = MACHINE_PATH.search(text)
    assert m is None, f"{path.relative_to(REPO)} names a machine path: {text[max(0, m.start() - 60):m.end() + 60]!r}"
    bad = sorted({v for v in values(path) if ABSOLUTE.match(v)})
    assert not bad, f"{path.relative_to(REPO)} holds absolute paths: {bad[:5]}"
