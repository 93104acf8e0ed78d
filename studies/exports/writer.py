"""The study export, results/<study>/<run>/ (schema: studies/exports/schema.py), written while a study runs.

`StudyExport` holds the run's rows in memory and rewrites study.json, trials.csv and epochs.csv atomically
after every change, so the dashboard can follow a running study and a crash never leaves half a table. On
--resume it reloads what is on disk first: rows are keyed by trial id (and epoch), so every trial appears
exactly once however often it was restarted. Exports are portable (studies/exports/files.py). Plain
Python, no Ray: the Ray callback (studies/tuning/callback.py) only forwards events here; the runner builds
study.json (studies/tuning/plan.py) and has the analysis written at the end (studies/analysis/analyze.py).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from studies.design.spec import ARM
from studies.exports.files import portable_config, read_csv, utc_now, write_csv, write_json
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
)

PACKAGES = ("torch", "torchvision", "numpy", "ray", "optuna", "pandas", "pillow", "pycocotools", "salgl")


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return 0.0


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


class StudyExport:
    """One run folder. `meta` is study.json; rows are keyed by trial id (trials) and (trial id, epoch)."""

    def __init__(self, run_dir: str | Path, meta: dict[str, Any]) -> None:
        self.dir = Path(run_dir)
        self.meta = dict(meta)
        self.trials: dict[str, dict[str, Any]] = {}
        self.epochs: dict[tuple[str, int], dict[str, Any]] = {}
        self._wall_before = 0.0
        self._session_start = time.time()

    @classmethod
    def open(cls, run_dir: str | Path, meta: dict[str, Any],
             session: tuple[float, float] | None = None) -> StudyExport:
        """The run at `run_dir`, with whatever an earlier session of it already wrote (for --resume); what
        is on disk wins over `meta`. `session` = (wall seconds of earlier sessions, this session's start
        time): wall_seconds then counts the driver's whole life, not just the part after this call."""
        ex = cls(run_dir, meta)
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
        for row in read_csv(ex.dir / EPOCHS_CSV):
            ex.epochs[(row["trial_id"], int(row["epoch"]))] = dict(row)
        return ex

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
            (self.dir / SCENES_DIR / f"{t}.json").unlink(missing_ok=True)
            # Written just before a trial's FINISHED row, so a crash in between can leave one behind.
            (self.dir / PREDICTIONS_DIR / f"{t}.npz").unlink(missing_ok=True)
        self.epochs = {k: v for k, v in self.epochs.items() if k[0] not in stale}
        if stale:
            self.write_all()

    def trial_started(self, trial_id: str, config: dict[str, Any], seed: int, is_paper: bool) -> None:
        row = self.trials.setdefault(trial_id, {"trial_id": trial_id})
        if row.get("status") in TERMINAL_TRIAL_STATUSES:
            return
        portable = portable_config(config)
        row.update({k: portable.get(k) for k in CONFIG_COLUMNS}, **{ARM: config.get(ARM)})
        row.update(status="RUNNING", seed=seed, is_paper_config=is_paper, error=None)
        self._write_trials()

    def is_final(self, trial_id: str) -> bool:
        # A trial's first terminal record stands. After a crash Ray may run a trial again that had finished
        # after its last snapshot (from the trial's last checkpoint, so it only re-evaluates): ignore that.
        return self.trials.get(trial_id, {}).get("status") in TERMINAL_TRIAL_STATUSES

    def trial_epoch(self, trial_id: str, m: dict[str, Any], seconds: float | None = None,
                    retries: int | None = None) -> None:
        """One finished epoch (the engine's metrics dict plus `device` and where the trial runs: `gpu_ids`,
        `node_id`, `node_ip`); `retries`: how often Ray has restarted the trial so far."""
        if self.is_final(trial_id):
            return
        epoch = int(m["epoch"])
        # A trial restarted from scratch reports its epochs again: rows past this one are stale.
        self.epochs = {k: v for k, v in self.epochs.items() if not (k[0] == trial_id and k[1] > epoch)}
        self.epochs[(trial_id, epoch)] = {"trial_id": trial_id, **{c: m.get(c) for c in EPOCH_COLUMNS[1:]}}
        row = self.trials.setdefault(trial_id, {"trial_id": trial_id, "status": "RUNNING"})
        row.update({k: m.get(k) for k in ("best_epoch", "best_mAP", "best_mAP_ema", *FINAL_METRICS, "scene_nmi")})
        row.update(epochs_done=epoch, device=gpu_name(str(m.get("device", ""))), gpu_ids=m.get("gpu_ids", ""),
                   node_id=m.get("node_id", ""), node_ip=m.get("node_ip", ""))
        if retries is not None:
            row["retries"] = retries
        if seconds is not None:
            row["seconds"] = round(seconds, 3)
        self._note_device(row["device"])
        self._write_trials()
        self._write_epochs()

    def trial_ended(self, trial_id: str, status: str, error: str | None = None,
                    scene_report: dict[str, Any] | None = None, seconds: float | None = None,
                    retries: int | None = None) -> bool:
        """Record a trial's outcome; False (and nothing written) if it already had one."""
        if status not in TERMINAL_TRIAL_STATUSES:
            raise ValueError(f"trial status {status!r} is not one of {sorted(TERMINAL_TRIAL_STATUSES)}")
        if self.is_final(trial_id):
            return False
        row = self.trials.setdefault(trial_id, {"trial_id": trial_id})
        row.update(status=status, error=error)
        if seconds is not None:
            row["seconds"] = round(seconds, 3)
        if retries is not None:
            row["retries"] = retries
        if scene_report is not None:
            write_json(self.dir / SCENES_DIR / f"{trial_id}.json", {"trial_id": trial_id, **scene_report})
        self._write_trials()
        self._write_study()
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

    def _write_study(self) -> None:
        self.meta.update(self.summary())
        write_json(self.dir / STUDY_JSON, self.meta)

    def _write_trials(self) -> None:
        write_csv(self.dir / TRIALS_CSV, TRIAL_COLUMNS, list(self.trials.values()))

    def _write_epochs(self) -> None:
        order = {t: i for i, t in enumerate(self.trials)}
        rows = [self.epochs[k] for k in sorted(self.epochs, key=lambda k: (order.get(k[0], len(order)), k[1]))]
        write_csv(self.dir / EPOCHS_CSV, EPOCH_COLUMNS, rows)

    def write_all(self) -> None:
        self._write_study()
        self._write_trials()
        self._write_epochs()
