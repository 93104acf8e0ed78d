"""The export's cost per epoch event as a study grows: the driver's time per event at 1,000, 10,000 and 100,000
recorded epochs.

    python -m studies.bench_export                          # 1,000 / 10,000 / 100,000 epochs; about a minute
    python -m studies.bench_export --sizes 100 1000 --window 100

Drives `studies.exports.writer.StudyExport` directly, without Ray, as the Ray callback (studies/tuning/callback.py)
does: `concurrent` trials at a time, each started, reporting `epochs` epochs round-robin with the others and ended
FINISHED, every call followed by the callback's `tick`. The writer's clock is simulated at `rate` epoch events a
second (10: a busy search), so trials.csv and study.json are snapshotted as often per event as in such a study,
whatever this machine's speed. Once the export holds each size, the next `window` epoch events are timed (the
trial starts and ends among them included: `event_ms`), then one snapshot of what they changed (`snapshot_ms`),
three times (medians); the driver's time per epoch event is `event_ms` plus the snapshot's share, `snapshot_ms`
over the events between two snapshots (`snapshot_every_s` x `rate`): timing a window with or without the one
snapshot that falls in it would be luck.
Prints one JSON object: per size those figures, the snapshot's share of the driver's time when events keep
coming, the files' sizes; the finish (compacting epochs.csv) at the largest size; and `growth`, the largest size's
ms per epoch event over the smallest's (the goal: at most 2).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from salgl_core.config import ExperimentConfig
from studies.exports.schema import EPOCH_COLUMNS, EPOCHS_CSV, FINAL_METRICS, TRIALS_CSV
from studies.exports.writer import StudyExport

SIZES = (1_000, 10_000, 100_000)


class SimulatedClock:
    """The writer's clock: `rate` events a second, whatever the time they take here."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _metrics(epoch: int, epochs: int, k: int) -> dict[str, Any]:
    """An epoch's report as the trainable sends it (the engine's metrics, the device, where the trial runs)."""
    v = 40.0 + (k * 7919 % 1000) / 100
    m: dict[str, Any] = {c: v for c in EPOCH_COLUMNS[2:]}
    m.update({k_: v for k_ in FINAL_METRICS}, epoch=epoch, epochs=epochs, lr=1e-4, loss_total=0.6931, seconds=61.25,
             images_per_second=412.5, best_epoch=epoch, best_mAP=v, best_mAP_ema=v, scene_nmi=0.4321,
             device="cuda:0 (NVIDIA H100 80GB HBM3)", gpu_ids="3", node_id="9f" * 28, node_ip="10.0.0.12")
    return m


class Driver:
    """Trials started, reporting round-robin and ended, `concurrent` at a time, as the callback forwards them."""

    def __init__(self, ex: StudyExport, epochs: int, concurrent: int) -> None:
        self.ex, self.epochs, self.concurrent = ex, epochs, concurrent
        self.flat = ExperimentConfig().to_flat()
        self.running: collections.deque[tuple[str, int]] = collections.deque()  # (trial, epochs reported)
        self.started = 0
        self.recorded = 0

    def epoch_event(self) -> None:
        while len(self.running) < self.concurrent:
            t = f"bench_{self.started:06d}"
            self.ex.trial_started(t, {**self.flat, "seed": self.started % 3}, seed=self.started % 3, is_paper=False)
            self.ex.tick()
            self.running.append((t, 0))
            self.started += 1
        t, done = self.running.popleft()
        self.ex.trial_epoch(t, _metrics(done + 1, self.epochs, self.recorded), seconds=61.25 * (done + 1), retries=0)
        self.ex.tick()
        if done + 1 == self.epochs:
            self.ex.trial_ended(t, "FINISHED", seconds=61.25 * self.epochs, retries=0)
            self.ex.tick()
        else:
            self.running.append((t, done + 1))
        self.recorded += 1


def run(sizes: tuple[int, ...] = SIZES, window: int = 500, epochs: int = 20, concurrent: int = 8, rate: float = 10.0,
        folder: Path | None = None) -> dict[str, Any]:
    """The measurements, in a temporary folder unless `folder` is given."""
    with tempfile.TemporaryDirectory(prefix="bench_export_") as tmp:
        run_dir = Path(folder or tmp) / "bench" / "run"
        clock = SimulatedClock()
        ex = StudyExport.open(run_dir, {"schema_version": 1, "study": "tune", "run": "run", "provenance": {},
                                        "base_config": ExperimentConfig().to_flat()}, clock=clock)
        ex.begin()
        driver = Driver(ex, epochs, concurrent)
        results = []
        for size in sorted(sizes):
            while driver.recorded < size:
                driver.epoch_event()
                clock.now += 1.0 / rate
            events, snapshots = [], []
            for _ in range(3):  # the median of three: one fsync can meet a busy disk
                ex.snapshot()  # the window starts just after one; the clock stands still in it, so none falls inside
                t0 = time.perf_counter()
                for _ in range(window):
                    driver.epoch_event()
                events.append((time.perf_counter() - t0) / window)
                t0 = time.perf_counter()
                ex.snapshot()  # what the window changed
                snapshots.append(time.perf_counter() - t0)
            event, snapshot = statistics.median(events), statistics.median(snapshots)
            interval = ex.snapshot_interval
            per_event = event + snapshot / (interval * rate)
            results.append({"epochs": size, "trials": driver.started, "ms_per_epoch_event": round(per_event * 1e3, 3),
                            "event_ms": round(event * 1e3, 3), "snapshot_ms": round(snapshot * 1e3, 2),
                            "snapshot_every_s": round(interval, 3), "snapshot_share": round(snapshot / interval, 5),
                            "epochs_csv_mb": round((run_dir / EPOCHS_CSV).stat().st_size / 1e6, 2),
                            "trials_csv_mb": round((run_dir / TRIALS_CSV).stat().st_size / 1e6, 2)})
        t0 = time.perf_counter()
        ex.finish("FINISHED")
        finish = time.perf_counter() - t0
        return {"benchmark": "export", "window": window, "epochs_per_trial": epochs, "concurrent": concurrent,
                "events_per_second": rate, "results": results, "recorded": driver.recorded,
                "finish_s": round(finish, 3),
                "growth": round(results[-1]["ms_per_epoch_event"] / results[0]["ms_per_epoch_event"], 2)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="recorded epochs to time at")
    p.add_argument("--window", type=int, default=500, help="epoch events timed at each size")
    p.add_argument("--epochs", type=int, default=20, help="epochs per trial")
    p.add_argument("--concurrent", type=int, default=8, help="trials at once")
    p.add_argument("--rate", type=float, default=10.0, help="epoch events a second, simulated (the snapshots' clock)")
    p.add_argument("--folder", type=Path, default=None, help="write the export here and keep it (default: a "
                                                              "temporary folder)")
    args = p.parse_args(argv)
    out = run(tuple(args.sizes), args.window, args.epochs, args.concurrent, args.rate, args.folder)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
