"""The import contracts (pyproject.toml [tool.importlinter], DESIGN.md's layout): they hold on this checkout, an
upward import breaks them, and no module takes part in an import cycle, counting imports inside functions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("salgl_core", "studies", "dashboards")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(root), "PATH": ""})


def copy_packages(dest: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.npy"))
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_contracts_hold():
    out = lint_imports(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BROKEN" not in out.stdout and "0 broken" in out.stdout


@pytest.mark.parametrize(("module", "upward"), [
    ("studies/design/spec.py", "from studies.tuning import runner"),       # what a study is -> the Ray layer
    ("studies/exports/schema.py", "from studies.analysis import stats"),   # the export -> the statistics
    ("salgl_core/metrics.py", "import studies.exports.schema"),            # the library -> the studies
    ("dashboards/data/files.py", "from dashboards.ui import widgets"),     # reading exports -> the pages
    ("dashboards/shaping/trials.py", "import streamlit"),                  # only dashboards.ui imports it
    ("studies/analysis/stats.py", "import torch"),                         # the statistics stay light
])
def test_an_upward_import_breaks_them(tmp_path, module, upward):
    root = copy_packages(tmp_path)
    path = root / module
    # Inside a function, where an import cycle hides from a plain `import` at load time.
    path.write_text(path.read_text() + f"\n\ndef _upward():\n    {upward}  # noqa\n")
    out = lint_imports(root)
    assert out.returncode != 0 and "BROKEN" in out.stdout, out.stdout + out.stderr
    assert module.removesuffix(".py").replace("/", ".") in out.stdout


def import_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), a package's __init__ importing its own
    submodules excepted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in sorted(edges):
        if m not in index:
            visit(m)
    return [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]


def test_the_cycle_finder_finds_one():
    assert import_cycles({"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "b": set()}) == [["a.x", "a.y", "a.z"]]
    assert import_cycles({"a": {"a.x"}, "a.x": {"a"}}) == []  # a package and its own submodule


def test_no_import_cycles():
    """Counting imports inside functions and TYPE_CHECKING blocks (grimp sees every import statement)."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in graph.modules} for m in graph.modules}
    assert not import_cycles(edges), import_cycles(edges)
