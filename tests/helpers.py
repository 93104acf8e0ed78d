"""Helpers shared by the studies tests: reading exports, waiting on a condition, finding a study's processes,
simulated studies for the statistics."""

from __future__ import annotations

import csv
import importlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

try:
    import psutil
except ImportError:  # Ray ships its own copy, on sys.path once ray is imported
    importlib.import_module("ray")
    psutil = importlib.import_module("psutil")

T = TypeVar("T")


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


def wait_until(condition: Callable[[], T], timeout: float, what: str, poll: float = 0.05) -> T:
    """Poll `condition` until it returns something truthy (returned); AssertionError naming `what` after
    `timeout` seconds. An exception counts as not yet (a file half written, a folder not there yet)."""
    end = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = condition()
        except Exception as e:  # reported below if it never settles
            value, last = None, e
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f" (last error: {last!r})" if last else ""))
        time.sleep(poll)


def descendants(pid: int) -> list[int]:
    """PIDs of every process below `pid` (a study's Ray GCS, raylet and workers)."""
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def trial_workers(root: int | None = None) -> list[int]:
    """PIDs of the Ray workers below `root` (default: this process, whose Ray started them) running a trial."""
    pids = []
    for p in psutil.Process(root or os.getpid()).children(recursive=True):
        try:
            if any("ray::SalglTrial" in part for part in p.cmdline()):  # studies.tuning.monitor.TRAINABLE_CLASS
                pids.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return pids


def freeze_trials(root: int) -> None:
    """SIGSTOP every trial worker below `root`: the trials make no progress while the driver goes on (saving
    Ray's experiment state). A crash test uses it so the study cannot finish before the crash it simulates."""
    for pid in trial_workers(root):
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            pass


def kill(pids: list[int]) -> None:
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def gaussian_study(rng: np.random.Generator, n_seeds: int, effects: list[float], common: float,
                   resamples: int = 200) -> list[tuple[dict[int, float], dict[int, np.ndarray]]]:
    """Per-trial mAPs and ideal bootstrap replicates with a known variance structure (mAP units): a seed
    effect shared by the arms (sd 0.6) and each trial's own (sd 0.8); image noise each arm has on all its
    seeds (sd `common`), each trial's own (sd 0.6) and one shared by every trial (cancels)."""
    shared_seed = rng.normal(0, 0.6, n_seeds)
    out = []
    everyone = rng.normal(0, 1.0, resamples)
    for d in effects:
        x = d + shared_seed + rng.normal(0, 0.8, n_seeds) + rng.normal(0, common) + rng.normal(0, 0.6, n_seeds)
        reps = x + everyone[:, None] + rng.normal(0, common, (resamples, 1)) + rng.normal(0, 0.6, (resamples, n_seeds))
        out.append(({s: x[s] for s in range(n_seeds)}, {s: reps[:, s] for s in range(n_seeds)}))
    return out
