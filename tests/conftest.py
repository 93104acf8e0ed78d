"""Shared pytest configuration: the markers that split the suite.

`make test` runs everything; `make test-fast` (the inner loop, two xdist workers) deselects the marked tests
(marked test by test, so every fast unit test of every module is in the inner loop):
    slow     over ~1-2 s on 2 cores (whole training runs, simulations, benchmarks, the Streamlit app's sessions)
    ray      starts a real Ray runtime (studies end to end)
    cluster  starts a simulated multi-node Ray cluster or `ray start` (implies ray)
    browser  drives a real headless Chromium against a running Streamlit server
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# The clean room (DESIGN.md, "Tests and CI"): the suite's outcome depends on nothing outside the clone and
# ../shared. Set up when pytest imports this file, before any fixture runs and before tempfile or pytest's
# tmp_path pick a folder. Every place where tools keep per-user state is a fresh empty folder under one
# root: HOME (~/.ray/auth_token alone turns token authentication on for `ray start`; ~/.streamlit,
# ~/.gitconfig), TMPDIR (/tmp/ray: Ray's default session folder and `ray_current_cluster`; pytest's
# tmp_path), the XDG folders (~/.cache/torch: ImageNet weights) and SALGL_CACHE (the synthetic data,
# feature and pretrained-weights caches, keyed by their parameters but trusted as found: one an earlier
# run left in <clone>/.cache would be reused unchecked). So a developer machine with years of state and a
# fresh CI machine run the same suite, and nothing is written to the developer's real home.

# Ray puts AF_UNIX sockets up to 68 bytes below a node's temp dir (session_<date>_<pid>/sockets/dash_MetricsHead)
# and Linux allows 107: the tests' Ray temp dirs, TMPDIR/rjXXXXXXXX (ray_cli.short_temp_dir), must stay within
# 39 bytes. An inherited temp folder longer than /tmp (CI's `mktemp -d` one) leaves too little room.
_RAY_TEMP_DIR_MAX = 107 - 68
# A pytest-xdist worker (`make test-fast` runs two) shares its controller's clean room: the controller set it
# up before starting the workers, which inherit its environment.
_SHARED_ROOT = os.environ.get("SALGL_TESTS_ROOT") if os.environ.get("PYTEST_XDIST_WORKER") else None
if _SHARED_ROOT:
    ROOT = Path(_SHARED_ROOT)
else:
    _base = tempfile.gettempdir()
    if len(_base) + len("/salgl-tests-XXXXXXXX/t/rjXXXXXXXX") > _RAY_TEMP_DIR_MAX:
        _base = "/tmp"
    ROOT = Path(tempfile.mkdtemp(prefix="salgl-tests-", dir=_base))
    # Inherited settings that would point a test at another cluster, token, cache, results or configuration:
    # RAY_ADDRESS (a running cluster), RAY_AUTH_* (a token), RAY_TMPDIR (beats TMPDIR), TUNE_*, SALGL_CACHE and
    # SALGL_RESULTS_DIR, STREAMLIT_* (Streamlit's options), GIT_* (GIT_DIR from a git hook would point the
    # tests' own `git` runs at another repository), XDG_* (replaced below), TORCH_HOME and matplotlib's.
    for _name in list(os.environ):
        if (_name.startswith(("RAY_", "TUNE_", "SALGL_", "STREAMLIT_", "GIT_", "XDG_"))
                and _name != "XDG_RUNTIME_DIR" or _name in ("TORCH_HOME", "MPLCONFIGDIR", "MPLBACKEND")):
            del os.environ[_name]
    for _name, _sub in (("HOME", "h"), ("TMPDIR", "t"), ("XDG_CACHE_HOME", "c"), ("XDG_CONFIG_HOME", "g"),
                        ("XDG_DATA_HOME", "d"), ("XDG_STATE_HOME", "s"), ("SALGL_CACHE", "c/salgl")):
        (ROOT / _sub).mkdir(parents=True)
        os.environ[_name] = str(ROOT / _sub)
    os.environ["GIT_CEILING_DIRECTORIES"] = str(ROOT)  # `git` finds no repository above a test's tmp_path
    os.environ["SALGL_TESTS_ROOT"] = str(ROOT)
tempfile.tempdir = None  # Python caches its temp folder: read TMPDIR again
_failed = False

# Real data for tests lives beside the checkout, never inside it; tests that need it skip without it.
SHARED_DATA = REPO.parent / "shared" / "data"

MARKERS = {
    "slow": "takes over ~2 s on 2 cores (a whole training run, a simulation, a benchmark)",
    "ray": "starts a real Ray runtime",
    "cluster": "starts a simulated multi-node Ray cluster",
    "browser": "drives a headless Chromium",
}


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


@pytest.fixture
def ray_tmp() -> Iterator[str]:
    """A short temp dir for a study subprocess's `--ray-temp-dir` (Ray's socket paths must fit 107 bytes)."""
    from ray_cli import short_temp_dir

    d = short_temp_dir("rs")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the clean room's root after a passing session, unless a process still uses it (a Ray node a
    test failed to stop would log errors into a removed folder); otherwise say where it is. An xdist worker
    leaves it to its controller."""
    if _SHARED_ROOT:
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    from ray_cli import processes_using

    # Ray's processes of the last local runtime take a few seconds to exit after ray.shutdown(): wait for them
    # (bounded) rather than leave the folder behind on every CI machine.
    deadline = time.monotonic() + 20
    while (busy := processes_using(str(ROOT))) and time.monotonic() < deadline:
        time.sleep(0.5)
    if busy or _failed:
        why = f"processes {busy} still use it" if busy else "the session failed"
        print(f"\nthe tests' clean room {ROOT} is kept ({why})", file=sys.stderr)
    else:
        shutil.rmtree(ROOT, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _failed
    _failed = exitstatus not in (0, 5)  # kept for a look at the failed tests' tmp_path
