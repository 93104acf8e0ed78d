"""Shared pytest configuration: the markers that split the suite.

`make test` runs everything; `make test-fast` (the inner loop) deselects the marked groups:
    slow     over ~20 s on 2 cores (whole training runs, simulations)
    ray      starts a real Ray runtime (studies end to end)
    cluster  starts a simulated multi-node Ray cluster or `ray start` (implies ray)
    browser  drives a real headless Chromium against a running Streamlit server
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real data for tests lives beside the checkout, never inside it; tests that need it skip without it.
SHARED_DATA = REPO.parent / "shared" / "data"

MARKERS = {
    "slow": "takes over ~20 s on 2 cores",
    "ray": "starts a real Ray runtime",
    "cluster": "starts a simulated multi-node Ray cluster",
    "browser": "drives a headless Chromium",
}


# Whole modules over the inner loop's budget on 2 cores (real Streamlit sessions, training runs, the
# dashboard demo's bootstrap): `make test` runs them, `make test-fast` skips them.
SLOW_MODULES = {"test_dashboard_app", "test_dashboard_stats", "test_dashboard_analysis", "test_dashboard_views",
                "test_dashboard_runs", "test_dashboard_views_runs", "test_engine", "test_bench", "test_cli",
                "test_analyze", "test_studies_cli", "test_model", "test_data_synthetic", "test_dashboard_layout",
                "test_features"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


@pytest.fixture(scope="session")
def demo_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every dashboard demo case, written once per session (the healthy runs' predictions and analysis take
    seconds). Read-only: tests that change files take a copy through `results`."""
    from dashboards import demo

    root = tmp_path_factory.mktemp("demo") / "results"
    demo.write_all(root)
    return root


@pytest.fixture
def results(demo_results: Path, tmp_path: Path) -> Path:
    """A private copy of the demo exports."""
    shutil.copytree(demo_results, tmp_path / "results")
    return tmp_path / "results"
