"""results/analysis.ipynb runs from results/ on the committed exports and draws the dashboard's three figures.

The kernel is this interpreter (the venv's), whatever PATH says: CI runs `.venv/bin/python -m pytest` with a fresh
HOME and without .venv/bin on PATH, where a kernel spec whose argv says `python` could start another Python."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
kernelspec = pytest.importorskip("ipykernel.kernelspec")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402 - after the skips: an extra of the project
from jupyter_client.manager import KernelManager  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "results" / "analysis.ipynb"
PLOTLY = "application/vnd.plotly.v1+json"


def this_python_kernel(tmp_path: Path) -> KernelManager:
    """A kernel manager whose only `python3` kernel spec runs sys.executable (written by ipykernel itself)."""
    kernels = tmp_path / "kernels"
    kernelspec.write_kernel_spec(kernels / "python3")
    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    assert km.kernel_spec.argv[0] == sys.executable
    return km


def test_the_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert NOTEBOOK.stat().st_size < 20_000


@pytest.mark.slow
def test_the_notebook_runs_and_draws_the_dashboards_figures(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    km = this_python_kernel(tmp_path)
    client = nbclient.NotebookClient(nb, km=km, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    try:
        client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails
    finally:
        km.shutdown_kernel(now=True)  # a kernel manager passed in is the caller's to stop, not nbclient's

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, n_code + 2))  # every cell ran, in order
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert code[-1].outputs[0]["text"].strip() == sys.executable
    # The three figures, each a plotly figure the kernel displayed: ablation (one trace per seed, the mean, its
    # interval, the reference star), forest (one trace per verdict kind), learning curves (mAP and EMA mAP).
    figs = [json.loads(json.dumps(o["data"][PLOTLY])) for c in code for o in c.outputs
            if o.output_type in ("execute_result", "display_data") and PLOTLY in o.get("data", {})]
    assert len(figs) == 3
    ablation, forest, curves = figs
    assert ablation["layout"]["xaxis"]["categoryarray"] == ["1", "2", "4", "8"]
    assert any(t.get("name") == "mean ± std over seeds" for t in ablation["data"])
    assert {t["name"] for t in forest["data"]} <= {"better", "worse", "no detectable difference", "no test"}
    assert curves["layout"]["xaxis"]["title"]["text"] == "epoch" and len(curves["data"]) == 12
    # The tables came out as tables, the verdict table with one row per arm.
    html = [o["data"].get("text/html", "") for c in code for o in c.outputs if o.output_type == "execute_result"]
    assert sum("<table" in h for h in html) == 2
    printed = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert sum(line.startswith("| ") for line in printed.splitlines()) == 2 + 4
