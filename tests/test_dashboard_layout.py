"""The dashboard's layering (DESIGN.md): its modules load without torch, ray, optuna or streamlit."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dashboards import demo

REPO = Path(__file__).resolve().parents[1]
# The allow-list of streamlit: app.py (the pages) and the app_*.py layout modules it lays its sections out
# with (app_stats: the statistics sections; app_widgets: the shared table and guard). Every other module
# shapes data without streamlit, so tests and scripts can call it.
LAYOUT_MODULES = sorted(p.stem for p in (REPO / "dashboards").glob("app*.py"))
MODULES = sorted(p.stem for p in (REPO / "dashboards").glob("*.py") if p.stem not in ("__init__", *LAYOUT_MODULES))
HEAVY = ("torch", "torchvision", "ray", "optuna", "streamlit")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    return names | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}


def test_dashboard_modules_import_no_training_or_ui_stack():
    """Only app.py and app_*.py may import streamlit; nothing may pull in the training stack (plotly is fine in
    charts; studies.analysis.analyze imports optuna only inside the function a joint search calls)."""
    assert {"files", "runs", "paper", "views", "views_scenes", "views_stats", "analysis", "texts", "fmt", "charts",
            "charts_stats", "demo", "demo_stats"} <= set(MODULES)
    assert LAYOUT_MODULES == ["app", "app_stats", "app_widgets"]
    for m in MODULES:
        assert not {i for i in _imports(REPO / "dashboards" / f"{m}.py") if i.split(".")[0] == "streamlit"}, m
    code = (f"import importlib, json, sys\nfor m in {MODULES!r}: importlib.import_module('dashboards.' + m)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_modules_say_what_they_own_and_stay_small():
    for path in sorted((REPO / "dashboards").glob("*.py")):
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text))
        assert doc and doc.splitlines()[0].strip(), f"{path.name} has no docstring saying what it owns"
        assert len(text.splitlines()) <= 400, f"{path.name} has {len(text.splitlines())} lines (at most 400)"


def test_demo_writes_every_case_from_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dashboards.demo", str(tmp_path / "demo")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["scene_count", "coco", "tune", "running",
                                                                     "damaged", "truncated", "invalid"]
    assert sorted(p.parent.name + "/" + p.name for p in (tmp_path / "demo").glob("*/*")) == [
        "graph_depth/2025-05-20_0900", "graph_depth/2025-06-01_0900", "momentum/2025-05-30_0900",
        "scene_count/2025-05-28_0900", "scene_count/2025-06-02_0900", "scene_count/2025-06-03_0900",
        "tune/2025-05-25_0900"]
    usage = subprocess.run([sys.executable, "-m", "dashboards.demo"], cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert usage.returncode != 0 and "usage: python -m dashboards.demo OUT_DIR" in usage.stderr


def test_demo_rerun_replaces_its_own_folder_only(tmp_path):
    """`make dashboard-demo` twice: runs an older demo left behind go (they could be the newest and open
    first); a folder the demo did not write is refused, not emptied."""
    out = tmp_path / "demo"
    demo.main([str(out)])
    stale = out / "momentum" / "2025-06-04_0900"
    stale.mkdir(parents=True)
    (stale / "study.json").write_text("{}")
    demo.main([str(out)])
    assert not stale.exists() and (out / "scene_count" / "2025-06-03_0900" / "study.json").is_file()
    # Output of the demo before it wrote its marker is recognised by its made-up git commit.
    (out / demo.MARKER).unlink()
    stale.mkdir(parents=True)
    (stale / "study.json").write_text(json.dumps({"provenance": demo.PROVENANCE}))
    demo.main([str(out)])
    assert not stale.exists() and (out / demo.MARKER).is_file()
    export = tmp_path / "export"
    demo.write_tune(export)
    meta = json.loads((export / "tune/2025-05-25_0900/study.json").read_text())
    (export / "tune/2025-05-25_0900/study.json").write_text(json.dumps({**meta, "provenance": {"git_commit": "abc"}}))
    with pytest.raises(SystemExit, match="not written by this demo"):
        demo.main([str(export)])
    mine = tmp_path / "mine"
    (mine / "notes.txt").parent.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit, match="is not empty and was not written by this demo"):
        demo.main([str(mine)])
    assert (mine / "notes.txt").read_text() == "keep"
