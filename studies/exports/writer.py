"""The study export, results/<study>/<run>/ (schema: studies/exports/schema.py), written while a study runs.

An event costs the same however big the study has grown, and a killed driver leaves files every reader reads
right (tests/test_export_log.py SIGKILLs one; `python -m studies.bench_export` times an event at 1,000 to
100,000 recorded epochs):

- epochs.csv is an append-only log while the study runs: the header is written once (atomically, with the
  file), each epoch event appends one row with one write(2) of the whole line. The rules for reading it
  (a later report of a trial's epoch supersedes its rows at or after that epoch; a last line without a line
  end is a write the driver was killed in) are `studies.exports.files.read_epoch_log`, which the dashboard
  and the analysis read it with too.
- trials.csv and study.json are snapshots of the trial rows held here, replaced atomically at most every
  `snapshot_interval` seconds (10 ms per trial, at least 1 s: 50 s at 5,000 trials). A snapshot writes O(trials)
  bytes (a trials.csv row is about 600), so at most about 60 KB a second at every size, and formats only the
  rows that changed since the last one. Between snapshots each change of a trial row (start, epoch, end) is
  appended to TRIALS_JOURNAL, which `open` replays over trials.csv: a trial's end is on disk when its event
  returns, though trials.csv may show it up to one interval later. The trade-off: the dashboard's trial table
  (trials.csv: status, epochs_done, best mAP) lags the study by up to that interval; its live views, the
  learning curves, read epochs.csv, which does not lag. `tick` (the Ray callback calls it every step) writes a
  snapshot that has come due while no event comes.
- fsync: every appended line is in the operating system's cache when its event returns, so a killed driver
  (SIGKILL, out of memory) loses nothing. Each snapshot fsyncs epochs.csv and folds the journal into the fsynced
  trials.csv, so a crash of the machine itself can lose the lines of the last interval (Ray's own state is no
  safer there). Snapshots and compactions are atomic and fsynced (salgl_core.io), as before.
- `begin`, `write_all` (--resume) and `finish` compact: epochs.csv rewritten atomically with one row per
  (trial, epoch), trials in trials.csv's order, epochs ascending; the journal folded into trials.csv and
  removed. A finished export is therefore what it has always been, and every trial appears exactly once
  however often it was restarted.

Exports are portable (studies/exports/files.py). Plain Python, no Ray: the Ray callback
(studies/tuning/callback.py) only forwards events here; the runner builds study.json (studies/tuning/plan.py)
and has the analysis written at the end (studies/analysis/analyze.py).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from salgl_core.io import atomic_write_text
from studies.design.spec import ARM, StudyError
from studies.exports.files import (
    CsvDamage,
    csv_text,
    json_safe,
    portable_config,
    read_csv,
    read_epoch_rows,
    utc_now,
    write_csv,
    write_json,
)
from studies.exports.schema import (
    CONFIG_COLUMNS,
    EPOCH_COLUMNS,
    EPOCHS_CSV,
    FINAL_METRICS,
    PREDICTIONS_DIR,
    SCENES_DIR,
    STUDY_JSON,
    TERMINAL_TRIAL_STATUSES,
    TRIAL_COLUMNS,
    TRIALS_CSV,
    TRIALS_JOURNAL,
)

EPOCHS_HEADER = csv_text(EPOCH_COLUMNS, [])
TRIALS_HEADER = csv_text(TRIAL_COLUMNS, [])
PACKAGES = ("torch", "torchvision", "numpy", "ray", "optuna", "pandas", "pillow", "pycocotools", "salgl")


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


def _plain(v: Any) -> Any:
    """A numpy scalar (a metric as the engine computed it) as the Python number JSON can hold; anything else as text,
    as trials.csv would show it."""
    return v.item() if hasattr(v, "item") else str(v)


def gpu_name(device: str) -> str:
    """'cuda:0 (NVIDIA H100 80GB HBM3)' -> 'NVIDIA H100 80GB HBM3'; 'cpu' stays 'cpu'."""
    if device.startswith("cuda") and "(" in device:
        return device[device.index("(") + 1:].rstrip(")")
    return device


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance(repo: Path, ray_cluster: dict[str, Any]) -> dict[str, Any]:
    """Who ran what where: git commit, package versions, CPU/GPU, the Ray cluster's size."""
    commit = _git(repo, "rev-parse", "HEAD")
    # Dirty means code that differs from the commit: the exports (results/, runs/) are data, and a study run
    # with --overwrite has just deleted its own committed export, which must not count.
    status = _git(repo, "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results",
                  ":(exclude)runs") if commit else None
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    gpus: list[str] = []
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"git_commit": commit, "git_dirty": bool(status) if commit else None,
            "python": platform.python_version(), "packages": packages, "platform": platform.platform(),
            "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "gpus": gpus, "ray_cluster": ray_cluster}


# ---------------------------------------------------------------------------------------------------
# the run folder

# trials.csv and study.json are written at most once per this many seconds per trial: a snapshot writes O(trials)
# bytes, so the bytes written a second, and a snapshot's share of each event, do not grow with the study (5,000
# trials: every 50 s) ...
SNAPSHOT_SECONDS_PER_TRIAL = 0.01
# ... and a small study's at most every second.
SNAPSHOT_SECONDS = 1.0


class _AppendLog:
    """A file this process appends whole lines to: opened on the first line, each line one write(2)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def ends_clean(self, header: str = "") -> bool:
        """Whether the file can be appended to as it is: it starts with `header` and ends with a line end (or,
        without a header, is absent or empty)."""
        try:
            with open(self.path, "rb") as f:
                start = f.read(len(header.encode()))
                size = f.seek(0, os.SEEK_END)
                if size == 0:
                    return not header
                f.seek(size - 1)
                return start == header.encode() and f.read(1) == b"\n"
        except FileNotFoundError:
            return not header

    def append(self, text: str) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        data = memoryview(text.encode("utf-8"))
        while data:  # a regular file takes it all at once; a short write is finished, not dropped
            data = data[os.write(self._fd, data):]

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class StudyExport:
    """One run folder. `meta` is study.json; trial rows are keyed by trial id; epoch rows live in epochs.csv only
    (see the module docstring for how each file is written). `clock` (seconds) paces the snapshots."""

    def __init__(self, run_dir: str | Path, meta: dict[str, Any],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dir = Path(run_dir)
        self.meta = dict(meta)
        self.trials: dict[str, dict[str, Any]] = {}
        self._wall_before = 0.0
        self._session_start = time.time()
        self._clock = clock
        self._epochs = _AppendLog(self.dir / EPOCHS_CSV)
        self._journal = _AppendLog(self.dir / TRIALS_JOURNAL)
        self._pruned: set[str] = set()  # trials `prune` dropped: their epoch rows go at the next compaction
        # Each trial's trials.csv line as last written, dropped when its row changes (`_change`): a snapshot
        # formats only the rows that changed since the last. Change rows through `_change` only.
        self._lines: dict[str, str] = {}
        self._pending = False  # trial rows changed since the last snapshot
        self._snapshot_at = clock()

    @classmethod
    def open(cls, run_dir: str | Path, meta: dict[str, Any], session: tuple[float, float] | None = None,
             clock: Callable[[], float] = time.monotonic) -> StudyExport:
        """The run at `run_dir`, with whatever an earlier session of it already wrote (for --resume): trials.csv
        with the journal's later changes replayed over it; what is on disk wins over `meta`. `session` = (wall
        seconds of earlier sessions, this session's start time): wall_seconds then counts the driver's whole
        life, not just the part after this call. Writes nothing (`begin` and `write_all` compact)."""
        ex = cls(run_dir, meta, clock)
        ex.dir.mkdir(parents=True, exist_ok=True)
        path = ex.dir / STUDY_JSON
        if path.is_file():
            old = json.loads(path.read_text())
            ex.meta = {**ex.meta, **old}
            ex._wall_before = _float(old.get("wall_seconds"))
        if session is not None:
            ex._wall_before, ex._session_start = session
        for row in read_csv(ex.dir / TRIALS_CSV):
            ex.trials[row["trial_id"]] = dict(row)
        for change in ex._read_journal():
            ex.trials.setdefault(change["trial_id"], {}).update(change)
            ex._note_device(str(change.get("device") or ""))
            ex._pending = True
        return ex

    def _read_journal(self) -> list[dict[str, Any]]:
        """The journal's changes in order; a last line without a line end (a killed driver's) is left out."""
        path = self._journal.path
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        changes = []
        for n, line in enumerate(text.split("\n")[:-1], 1):
            try:
                change = json.loads(line)
                if not isinstance(change, dict) or "trial_id" not in change:
                    raise ValueError("not a trial row's change")
            except ValueError as e:
                raise StudyError(f"{path}: line {n} is damaged ({e}); delete the file to go on from trials.csv "
                                 "(trial changes of the last seconds before the crash are then lost)") from None
            changes.append(change)
        return changes

    # -- events ---------------------------------------------------------------------------------------
    def begin(self) -> None:
        self.meta.update(status="RUNNING", finished=None)
        self.meta.setdefault("started", utc_now())
        self.write_all()

    def prune(self, live_ids: set[str]) -> None:
        """Drop unfinished rows of trials the restored experiment does not know: a crash can leave a
        trial that started after Ray's last snapshot, and Ray runs that point again under a new id."""
        stale = [t for t, r in self.trials.items()
                 if t not in live_ids and r.get("status") not in TERMINAL_TRIAL_STATUSES]
        for t in stale:
            del self.trials[t]
            self._lines.pop(t, None)
            (self.dir / SCENES_DIR / f"{t}.json").unlink(missing_ok=True)
            # Written just before a trial's FINISHED row, so a crash in between can leave one behind.
            (self.dir / PREDICTIONS_DIR / f"{t}.npz").unlink(missing_ok=True)
        if stale:
            self._pruned.update(stale)
            self.write_all()

    def trial_started(self, trial_id: str, config: dict[str, Any], seed: int, is_paper: bool) -> None:
        if self.is_final(trial_id):
            return
        portable = portable_config(config)
        self._change(trial_id, {**{k: portable.get(k) for k in CONFIG_COLUMNS}, ARM: config.get(ARM),
                                "status": "RUNNING", "seed": seed, "is_paper_config": is_paper, "error": None})

    def is_final(self, trial_id: str) -> bool:
        # A trial's first terminal record stands. After a crash Ray may run a trial again that had finished
        # after its last snapshot (from the trial's last checkpoint, so it only re-evaluates): ignore that.
        return self.trials.get(trial_id, {}).get("status") in TERMINAL_TRIAL_STATUSES

    def trial_epoch(self, trial_id: str, m: dict[str, Any], seconds: float | None = None,
                    retries: int | None = None) -> None:
        """One finished epoch (the engine's metrics dict plus `device` and where the trial runs: `gpu_ids`,
        `node_id`, `node_ip`); `retries`: how often Ray has restarted the trial so far. A trial restarted from
        scratch reports its epochs again: the new row supersedes the old ones from that epoch on (the log's
        rule, studies/exports/files.py)."""
        if self.is_final(trial_id):
            return
        epoch = int(m["epoch"])
        self._append_epoch({"trial_id": trial_id, **{c: m.get(c) for c in EPOCH_COLUMNS[1:]}, "epoch": epoch})
        change = {k: m.get(k) for k in ("best_epoch", "best_mAP", "best_mAP_ema", *FINAL_METRICS, "scene_nmi")}
        change.update(epochs_done=epoch, device=gpu_name(str(m.get("device", ""))), gpu_ids=m.get("gpu_ids", ""),
                      node_id=m.get("node_id", ""), node_ip=m.get("node_ip", ""))
        if trial_id not in self.trials:
            change["status"] = "RUNNING"
        if retries is not None:
            change["retries"] = retries
        if seconds is not None:
            change["seconds"] = round(seconds, 3)
        self._note_device(change["device"])
        self._change(trial_id, change)

    def trial_ended(self, trial_id: str, status: str, error: str | None = None,
                    scene_report: dict[str, Any] | None = None, seconds: float | None = None,
                    retries: int | None = None) -> bool:
        """Record a trial's outcome; False (and nothing written) if it already had one."""
        if status not in TERMINAL_TRIAL_STATUSES:
            raise ValueError(f"trial status {status!r} is not one of {sorted(TERMINAL_TRIAL_STATUSES)}")
        if self.is_final(trial_id):
            return False
        change: dict[str, Any] = {"status": status, "error": error}
        if seconds is not None:
            change["seconds"] = round(seconds, 3)
        if retries is not None:
            change["retries"] = retries
        if scene_report is not None:
            write_json(self.dir / SCENES_DIR / f"{trial_id}.json", {"trial_id": trial_id, **scene_report})
        self._change(trial_id, change)
        return True

    def finish(self, status: str) -> None:
        self.meta.update(status=status, finished=utc_now())
        self.write_all()

    def _note_device(self, device: str) -> None:
        if device and device != "cpu":
            self.meta["device"] = device
            gpus = self.meta.setdefault("provenance", {}).setdefault("gpus", [])
            if device not in gpus:
                gpus.append(device)

    def summary(self) -> dict[str, Any]:
        rows = list(self.trials.values())
        return {"n_finished": sum(r.get("status") in TERMINAL_TRIAL_STATUSES for r in rows),
                "trial_seconds_total": round(sum(_float(r.get("seconds")) for r in rows), 3),
                "wall_seconds": round(self._wall_before + time.time() - self._session_start, 3)}

    # -- writing --------------------------------------------------------------------------------------
    @property
    def snapshot_interval(self) -> float:
        """The least time (seconds) between two snapshots of trials.csv and study.json."""
        return max(SNAPSHOT_SECONDS, SNAPSHOT_SECONDS_PER_TRIAL * len(self.trials))

    def _change(self, trial_id: str, change: dict[str, Any]) -> None:
        """Apply a change to a trial's row and journal it (new rows in full), then snapshot if one is due."""
        row = self.trials.get(trial_id)
        if row is None:
            row = self.trials[trial_id] = {"trial_id": trial_id}
        row.update(change)
        self._lines.pop(trial_id, None)
        if not self._journal.is_open and not self._journal.ends_clean():
            self.snapshot()  # a killed driver's last line: fold the journal into trials.csv before appending
        self._journal.append(json.dumps(json_safe({"trial_id": trial_id, **change}), allow_nan=False,
                                        default=_plain) + "\n")
        self._pending = True
        self.tick()

    def _append_epoch(self, row: dict[str, Any]) -> None:
        if not self._epochs.is_open and not self._epochs.ends_clean(EPOCHS_HEADER):
            self._write_epochs()  # absent, of another header, or ending in a killed driver's half line
        self._epochs.append(csv_text(EPOCH_COLUMNS, [row], header=False))

    def tick(self) -> None:
        """Write trials.csv and study.json if they lag and the last snapshot is `snapshot_interval` old."""
        if self._pending and self._clock() - self._snapshot_at >= self.snapshot_interval:
            self.snapshot()

    def flush(self) -> None:
        """Write trials.csv and study.json now if they lag (tests, and a reader that cannot wait)."""
        if self._pending:
            self.snapshot()

    def snapshot(self) -> None:
        """Write trials.csv and study.json now (the journal then goes)."""
        # The logs first, so that what trials.csv says has happened is on disk in epochs.csv too; the journal
        # goes only once trials.csv holds it (a crash in between replays it over rows that already hold it).
        self._epochs.sync()
        self._write_trials()
        self._write_study()
        self._journal.remove()
        self._pending = False
        self._snapshot_at = self._clock()

    def _write_study(self) -> None:
        self.meta.update(self.summary())
        write_json(self.dir / STUDY_JSON, self.meta)

    def _write_trials(self) -> None:
        for t, row in self.trials.items():
            if t not in self._lines:
                self._lines[t] = csv_text(TRIAL_COLUMNS, [row], header=False)
        atomic_write_text(self.dir / TRIALS_CSV, TRIALS_HEADER + "".join(self._lines[t] for t in self.trials))

    def _write_epochs(self) -> None:
        """Compact epochs.csv: the rows that stand (the log's rules), one per (trial, epoch), trials in trials.csv's
        order (any other after them), epochs ascending; replaced atomically."""
        self._epochs.sync()
        self._epochs.close()  # the next row goes to the new file
        path = self.dir / EPOCHS_CSV
        try:
            rows = [r for r in read_epoch_rows(path) if r.get("trial_id") not in self._pruned]
            for r in rows:
                r["epoch"] = int(r["epoch"])
        except (CsvDamage, KeyError, ValueError) as e:
            what = e if isinstance(e, CsvDamage) else f"has an epoch that is not a whole number ({e})"
            raise StudyError(f"{path}: {what}; restore it from a copy of the export, or delete it to go on without "
                             f"the epochs recorded so far") from None
        order = {t: i for i, t in enumerate(self.trials)}
        rows.sort(key=lambda r: (order.get(r["trial_id"], len(order)), r["epoch"]))  # stable: others keep theirs
        write_csv(path, EPOCH_COLUMNS, rows)

    def write_all(self) -> None:
        """Compact epochs.csv and snapshot trials.csv and study.json (the journal then goes)."""
        self._write_epochs()
        self.snapshot()
