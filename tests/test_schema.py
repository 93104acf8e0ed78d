"""studies/exports/schema.py is the one owner of the results schema: results/README.md documents exactly its names
(both directions), and the module stays light enough for the dashboard (no torch, ray or streamlit)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from studies.exports import schema

REPO = Path(__file__).resolve().parents[1]
README = REPO / "results" / "README.md"


def _section(title: str) -> str:
    """From the heading `title` to the next heading of any level."""
    text = README.read_text()
    start = text.index(title)
    nxt = text.find("\n#", start + len(title))
    return text[start:nxt if nxt > 0 else None]


def _table_keys(title: str) -> set[str]:
    """Every key named in the first column of the table under `title`."""
    keys: set[str] = set()
    for line in _section(title).splitlines():
        if line.startswith("| `"):
            keys.update(re.findall(r"`([a-z_0-9]+)`", line.split("|")[1]))
    return keys


def _table_row(title: str, key: str) -> str:
    return next(line.split("|")[2] for line in _section(title).splitlines() if line.startswith(f"| `{key}`"))


def _columns(span: str) -> list[str]:
    """A documented column list, `<every flat config field>` expanded to the config columns."""
    cols: list[str] = []
    for c in (c.strip() for c in span.replace("\n", " ").split(",")):
        if c == "<every flat config field>":
            cols += list(schema.CONFIG_COLUMNS)
        elif c:
            cols.append(c)
    return cols


def _first_span(title: str) -> str:
    return re.search(r"`([^`]+)`", _section(title), re.S).group(1)


def test_study_json_keys():
    assert _table_keys("### study.json") == set(schema.STUDY_KEYS)
    assert _table_keys("#### study.json: only in a joint search") == set(schema.SEARCH_STUDY_KEYS)
    assert not set(schema.STUDY_KEYS) & set(schema.SEARCH_STUDY_KEYS)
    assert _table_keys("#### study.json: only in a study of named arms") == set(schema.ARM_STUDY_KEYS)
    assert set(schema.STUDY_REQUIRED) <= set(schema.STUDY_KEYS)
    assert schema.REPORTED_METRIC in _table_row("### study.json", "reported_metric")
    statuses = re.findall(r"`([A-Z]+)`", _table_row("### study.json", "status"))
    assert tuple(statuses) == schema.RUN_STATUSES


def test_trials_csv_columns():
    assert _columns(_first_span("### trials.csv")) == list(schema.TRIAL_COLUMNS)
    assert len(set(schema.TRIAL_COLUMNS)) == len(schema.TRIAL_COLUMNS)
    # seed and device are columns of their own (the trial's seed, the device it ran on), not config copies.
    assert "seed" not in schema.CONFIG_COLUMNS and "device" not in schema.CONFIG_COLUMNS
    assert set(schema.MACHINE_LOCAL_FIELDS) <= set(schema.CONFIG_COLUMNS)
    assert schema.REPORTED_METRIC in schema.TRIAL_COLUMNS
    line = next(ln for ln in _section("### trials.csv").splitlines() if ln.startswith("`status` is one of"))
    assert tuple(re.findall(r"`([A-Z]+)`", line)) == schema.TRIAL_STATUSES


def test_epochs_csv_columns():
    assert _columns(_first_span("### epochs.csv")) == list(schema.EPOCH_COLUMNS)


def test_scene_keys():
    span = re.search(r"`(\{[^`]+\})`", _section("### scenes/"), re.S).group(1)
    bare = re.findall(r"[{,]\s*([a-z_]+)(?=[,}])", span)  # `{trial_id, num_scenes, ...`
    described = re.findall(r"([a-z_]+):", span)  # `cooccurrence_prob: K x C x C ...`
    assert set(bare) | set(described) == set(schema.SCENE_KEYS)


@pytest.mark.parametrize("name, columns", [
    (schema.PAPER_COCO_CSV, schema.PAPER_COCO_COLUMNS),
    (schema.PAPER_REPRO_CSV, schema.PAPER_REPRO_COLUMNS),
    (schema.PAPER_CURVE_CSV, schema.PAPER_CURVE_COLUMNS),
])
def test_paper_tables(name, columns):
    bullet = next(b for b in _section("## results/paper/").split("\n- ") if b.startswith(f"`{name}`"))
    span = next(s for s in re.findall(r"`([^`]+)`", bullet, re.S) if "," in s)
    assert _columns(span) == list(columns)
    with open(REPO / "results" / schema.PAPER_DIR / name) as f:
        assert f.readline().strip().split(",") == list(columns)


def test_schema_imports_no_torch_ray_or_streamlit():
    code = ("import sys, studies.exports.schema; heavy = [m for m in ('torch', 'ray', 'streamlit', 'optuna') "
            "if m in sys.modules]; assert not heavy, heavy")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
