"""A study export driven event by event in its own process, as the Ray callback drives it, for the SIGKILL test
(tests/test_export_log.py): plain Python, no Ray.

    python tests/export_driver.py RUN_DIR START [--slow] [--finish]

opens RUN_DIR (resuming whatever is there), prints "ready" and plays SCHEDULE from event START on. An epoch row's
`seconds` cell is the index of its event, so what a killed driver got on disk tells where to go on. --slow splits
every appended line in two writes with a pause between, so a kill lands inside a line; --finish ends the run.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from salgl_core.config import ExperimentConfig
from studies.exports.schema import EPOCH_COLUMNS
from studies.exports.writer import StudyExport

EPOCHS = 6


def schedule(seed: int = 0, n_trials: int = 12, concurrent: int = 3) -> list[tuple[str, str, int]]:
    """("start" | "epoch" | "end", trial, epoch) events of `n_trials` trials of EPOCHS epochs, `concurrent` at a
    time, interleaved; now and then a trial re-reports its last epoch (resumed from its checkpoint) or starts over
    from epoch 1 (no checkpoint survived)."""
    rng = random.Random(seed)
    waiting = [f"t{i:02d}" for i in range(n_trials)]
    running: dict[str, int] = {}  # trial -> the epoch it reports next
    events: list[tuple[str, str, int]] = []
    while waiting or running:
        while waiting and len(running) < concurrent:
            t = waiting.pop(0)
            running[t] = 1
            events.append(("start", t, 0))
        t = rng.choice(sorted(running))
        e, r = running[t], rng.random()
        if e > 2 and r < 0.08:
            e = 1
        elif e > 1 and r < 0.25:
            e -= 1
        events.append(("epoch", t, e))
        running[t] = e + 1
        if e == EPOCHS:
            events.append(("end", t, 0))
            del running[t]
    return events


def value(i: int) -> float:
    """The mAP an event reports: differs between the reports of one epoch."""
    return round((i * 7919 % 1000) / 10, 1)


def metrics(i: int, epoch: int) -> dict[str, Any]:
    m: dict[str, Any] = {c: 1.0 for c in EPOCH_COLUMNS[2:]}
    m.update(epoch=epoch, epochs=EPOCHS, mAP=value(i), mAP_ema=value(i), seconds=float(i), best_epoch=epoch,
             best_mAP=value(i), best_mAP_ema=value(i), device="cpu")
    return m


def _slow_writes() -> None:
    real = os.write

    def half_then_pause(fd: int, data: Any) -> int:
        n = real(fd, data[:max(1, len(data) // 2)])
        time.sleep(0.01)
        return n

    os.write = half_then_pause  # only the export's appends call os.write here


def main(argv: list[str]) -> None:
    run, start = Path(argv[0]), int(argv[1])
    flat = ExperimentConfig().to_flat()
    ex = StudyExport.open(run, {"schema_version": 1, "study": "scene_count", "run": run.name, "status": "RUNNING",
                                "provenance": {}, "base_config": flat})
    ex.begin()
    if "--slow" in argv:
        _slow_writes()
    print("ready", flush=True)
    for i, (kind, t, e) in enumerate(schedule()[start:], start):
        if kind == "start":
            ex.trial_started(t, flat, seed=0, is_paper=False)
        elif kind == "epoch":
            ex.trial_epoch(t, metrics(i, e), seconds=float(i))
        else:
            ex.trial_ended(t, "FINISHED", seconds=float(i))
        ex.tick()
    if "--finish" in argv:
        ex.finish("FINISHED")
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
