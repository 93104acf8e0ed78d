"""Where a study's time goes: the driver's one-off preparation steps, the time left while trials run, and the
closing summary's split of the wall time into preparation, the trials' own work and Ray's per-trial overhead.

Plain Python, no Ray: the callback (progress lines), the runner (the preparation it times) and the closing
summary share these. study.json's `preparation` holds `Stopwatch.seconds`, summed over the run's sessions.
"""

from __future__ import annotations

import contextlib
import heapq
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

# The driver's preparation steps, in the order they run (the runner and studies.tuning.plan.check_inputs time them).
DATA = "data"  # index the dataset, or generate the synthetic one on first use
PRETRAINING = "pretraining"  # backbone_weights synthetic-pretrained: pretrained once, then cached
MODEL = "model check"  # every arm's model built once, so a mistake fails before Ray starts
FEATURE_CACHE = "feature cache"  # a frozen backbone's features, computed once for every trial
RAY_START = "Ray start"  # start a local Ray, or join a cluster
OTHER = "other"  # the rest of the driver's time before the first trial: the plan, the searcher, Tune's setup


class Stopwatch:
    """Seconds per named step; a step timed twice (one per arm's dataset) adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + max(0.0, seconds), 3)


def merged(earlier: Mapping[str, float] | None, now: Mapping[str, float]) -> dict[str, float]:
    """study.json's `preparation` after one more session: each step's seconds summed over the sessions."""
    out = {k: float(v) for k, v in (earlier or {}).items() if isinstance(v, int | float)}
    for k, v in now.items():
        out[k] = round(out.get(k, 0.0) + v, 3)
    return out


def makespan(busy: Iterable[float], queued: Iterable[float], slots: int) -> float:
    """When the last of the work ends: `busy` are the seconds left of what occupies slots now, `queued` the
    durations of what waits; each queued item starts in the first slot to come free (in the given order)."""
    free = sorted(busy)[:max(1, slots)]
    free += [0.0] * (max(1, slots) - len(free))
    heapq.heapify(free)
    for d in queued:
        heapq.heapreplace(free, free[0] + d)
    return max(free)


def time_left(durations: Sequence[float], running: Sequence[float], n_left: int, slots: int) -> float | None:
    """Seconds until the study's last trial ends, or None before any trial has ended.

    `durations`: the wall seconds of the trials that ended (this session's); `running`: how long each trial still
    running has run; `n_left`: trials not ended yet, running ones included; `slots`: trials at once. Every trial
    is taken to last the mean duration, a running one to be that far along (one past the mean: about to end)."""
    if not durations or n_left <= 0:
        return None
    mean = sum(durations) / len(durations)
    running = list(running)[:max(0, n_left)]
    waiting = max(0, n_left - len(running))
    return makespan([max(0.0, mean - e) for e in running], [mean] * waiting, slots)


def ideal_seconds(durations: Iterable[float], slots: int) -> float:
    """The wall time the trials' own work needs at `slots` at once with no gap between trials: the longest
    first, each in the first free slot (one long trial cannot be shared, so this is not just sum / slots)."""
    return makespan([], sorted(durations, reverse=True), slots)


def duration(seconds: float) -> str:
    """About how long, rounded as a person would say it: '40 s', '3 min', '1 h 20 min'."""
    s = max(0.0, seconds)
    if s < 90:
        return f"{max(1, round(s / 5) * 5) if s >= 10 else max(1, round(s))} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h" + (f" {m} min" if m else "")


def progress_text(left: float | None) -> str:
    """The progress line's estimate: '  time left ~3 min', or nothing (no estimate)."""
    return "" if left is None else f"  time left ~{duration(left)}"
