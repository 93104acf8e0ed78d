"""Shared pytest configuration: the markers that split the suite.

`make test` runs everything; `make test-fast` (the inner loop) deselects the marked groups:
    slow     over ~20 s on 2 cores (whole training runs, simulations)
    ray      starts a real Ray runtime (studies end to end)
    cluster  starts a simulated multi-node Ray cluster or `ray start` (implies ray)
    browser  drives a real headless Chromium against a running Streamlit server
"""

from __future__ import annotations

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


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
