"""The dashboard's layering: ui -> charts -> shaping -> data, imports downward only; only ui/ and app.py import
streamlit; nothing loads torch, ray or optuna."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dashboards import demo

REPO = Path(__file__).resolve().parents[1]
DASH = REPO / "dashboards"
# Each layer may import the layers after it, never those before it (data imports none of the others).
LAYERS = ("ui", "charts", "shaping", "data")
# The only modules that may import streamlit: the entry point and the ui layer.
STREAMLIT_OK = ("dashboards.app", "dashboards.ui")
# Never imported by the dashboard, not even inside a function: the training stack and the Ray layer of the studies
# (studies.exports.writer may touch torch). Optuna is imported inside demo_stats's journal writer only.
FORBIDDEN = ("torch", "torchvision", "ray", "studies.tuning", "studies.exports.writer")
SALGL_CORE_OK = ("salgl_core.config", "salgl_core.presets")
HEAVY = ("torch", "torchvision", "ray", "optuna", "streamlit")


def _name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


PATHS = {_name(p): p for p in sorted(DASH.rglob("*.py"))}
# What a test or script may import without streamlit: everything but the ui layer and the entry point (which runs
# the page when imported).
PLAIN = sorted(m for m in PATHS if not m.startswith(STREAMLIT_OK))


def _under(name: str, prefixes: tuple[str, ...] | str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in ((prefixes,) if isinstance(prefixes, str) else prefixes))


def _imports(module: str) -> set[str]:
    """Every module `module` imports, anywhere in it (inside functions and TYPE_CHECKING blocks too), relative
    imports resolved; `from a import b` counts as both a and a.b."""
    path = PATHS[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            base = n.module or ""
            if n.level:
                anchor = package.split(".")[: len(package.split(".")) - (n.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out |= {base} | {f"{base}.{a.name}" for a in n.names}
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "dashboards" and parts[1] in LAYERS else None


def test_the_layout_is_four_layers_and_an_entry_point():
    # app.py (Streamlit's entry), api.py (the notebook API: load_run), the demo writers, and the layers.
    assert {m for m in PATHS if m.count(".") == 1} == {"dashboards.app", "dashboards.api", "dashboards.demo",
                                                       "dashboards.demo_stats",
                                                       *(f"dashboards.{layer}" for layer in LAYERS)}
    for layer in LAYERS:
        init = DASH / layer / "__init__.py"
        tree = ast.parse(init.read_text())
        doc = ast.get_docstring(tree)
        assert doc and len(doc.splitlines()) == 1, f"{layer}/__init__.py: a one-line docstring"
        assert len(tree.body) == 1, f"{layer}/__init__.py re-exports nothing"
    # Streamlit runs every module of a pages/ folder beside app.py as a page of its own (multipage apps).
    assert not (DASH / "pages").exists()


def test_only_the_ui_layer_and_app_import_streamlit():
    importers = {m for m in PATHS if any(_under(i, "streamlit") for i in _imports(m))}
    assert importers, "the check found no streamlit import at all"
    assert {m for m in importers if not _under(m, STREAMLIT_OK)} == set()
    assert "dashboards.app" in importers or "dashboards.ui.page" in importers


def test_imports_go_downward_only():
    for m in PATHS:
        imports = _imports(m)
        assert not [i for i in imports if _under(i, FORBIDDEN)], m
        assert not [i for i in imports if _under(i, "salgl_core") and not _under(i, SALGL_CORE_OK)], m
        own = _layer(m)
        if own is None:
            continue
        above = LAYERS[: LAYERS.index(own)]
        assert not [i for i in imports if _layer(i) in above], f"{m} imports a layer above {own}"
        assert not [i for i in imports if _under(i, ("dashboards.demo", "dashboards.demo_stats", "dashboards.app"))], m


@pytest.mark.slow
def test_dashboard_modules_import_no_training_or_ui_stack():
    """Outside ui/ and app.py nothing loads streamlit, nor the training stack (plotly is fine in charts;
    studies.analysis.analyze imports optuna only inside the function a joint search calls)."""
    assert {"dashboards.data.files", "dashboards.shaping.stats", "dashboards.charts.figures", "dashboards.demo",
            "dashboards.demo_stats", "dashboards.api"} <= set(PLAIN)
    code = (f"import importlib, json, sys\nfor m in {PLAIN!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_modules_say_what_they_own_and_stay_small():
    for name, path in PATHS.items():
        text = path.read_text()
        doc = ast.get_docstring(ast.parse(text))
        assert doc and doc.splitlines()[0].strip(), f"{name} has no docstring saying what it owns"
        assert len(text.splitlines()) <= 400, f"{name} has {len(text.splitlines())} lines (at most 400)"


@pytest.mark.slow
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


@pytest.mark.slow
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
