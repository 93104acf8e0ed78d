"""The study export, results/<study>/<run>/ (schema: studies/schema.py), written while a study runs.

`study_json` builds a run's study.json from its plan; `StudyExport` holds the run's rows in memory and
rewrites study.json, trials.csv and epochs.csv atomically after every change, so the dashboard can
follow a running study and a crash never leaves half a table. On --resume it reloads what is on disk
first: rows are keyed by trial id (and epoch), so every trial appears exactly once however often it was
restarted. Exports are portable: paths inside the repository are stored relative to it, machine-local
folders (schema.MACHINE_LOCAL_FIELDS) not at all. Plain Python, no Ray: the Ray callback in
`studies.callback` only forwards events here (and writes predictions/ with `studies.predictions`). At the
end of a study `StudyExport.analyze` writes analysis.json and comparisons.csv (`studies.analyze`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from salgl_core.io import atomic_write_text
from studies.schema import (
    CONFIG_COLUMNS,
    EPOCH_COLUMNS,
    EPOCHS_CSV,
    FINAL_METRICS,
    MACHINE_LOCAL_FIELDS,
    OPTUNA_JOURNAL,
    PREDICTIONS_DIR,
    REPORTED_METRIC,
    SCENES_DIR,
    SCHEMA_VERSION,
    STUDY_JSON,
    TERMINAL_TRIAL_STATUSES,
    TRIAL_COLUMNS,
    TRIALS_CSV,
)
from studies.spec import ARM, METRIC, MODE

if TYPE_CHECKING:
    from studies.plan import Plan

# The repository whose paths the export stores relative to it.
REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision", "numpy", "ray", "optuna", "pandas", "pillow", "pycocotools", "salgl")


def utc_now(timestamp: float | None = None) -> str:
    t = datetime.now(UTC) if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _finite(v: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n")


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return v


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in columns])
    atomic_write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


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
# portable paths


def portable_path(path: str | Path, repo: Path = REPO) -> str:
    """A path as an export shows it: relative to the repository when inside it, else as it is (a path
    the user gave, such as a data root, names their data and stays)."""
    p = Path(path)
    if p.is_absolute():
        try:
            return p.resolve().relative_to(repo.resolve()).as_posix() or "."
        except ValueError:
            pass
    return str(path)


def portable_config(flat: dict[str, Any], repo: Path = REPO) -> dict[str, Any]:
    """A flat config as the export stores it: machine-local folders left out, absolute paths inside the
    repository made relative to it. The trials themselves still get the absolute paths."""
    return {k: portable_path(v, repo) if isinstance(v, str) and os.path.isabs(v) else v
            for k, v in flat.items() if k not in MACHINE_LOCAL_FIELDS}


def study_json(plan: Plan, *, base_config: dict[str, Any], class_names: list[str], cluster: dict[str, Any],
               gpus_per_trial: float, cpus_per_trial: float, max_concurrent: int, started: float,
               repo: Path = REPO) -> dict[str, Any]:
    """study.json of a new run (schema.STUDY_KEYS, plus schema.SEARCH_STUDY_KEYS for a joint search):
    what the plan runs, from which base config, on which cluster. The counters and `status` are what a
    run that has not started yet has; `StudyExport` keeps them up to date."""
    from salgl_core.metrics import metric_protocol  # torch: only the driver builds study.json

    return {
        "schema_version": SCHEMA_VERSION, "study": plan.spec.study, "run": plan.run, **plan.study_keys(),
        "sampler": plan.sampler, "scheduler": plan.scheduler, "metric": METRIC, "mode": MODE,
        "metric_protocol": metric_protocol(base_config["cp_cr_rule"]), "reported_metric": REPORTED_METRIC,
        "recipe": base_config["recipe"], "dataset": base_config["dataset"],
        "backbone": base_config["backbone"], "image_size": base_config["image_size"],
        "base_config": portable_config(base_config, repo), "paper_config": plan.paper_config, "seeds": plan.seeds,
        "class_names": class_names, "status": "RUNNING", "started": utc_now(started), "finished": None,
        "n_trials": plan.num_samples, "n_finished": 0, "trial_seconds_total": 0.0, "wall_seconds": 0.0,
        "max_concurrent": max_concurrent, "resources_per_trial": {"gpu": gpus_per_trial, "cpu": cpus_per_trial},
        "provenance": provenance(repo, cluster), "optuna_storage": OPTUNA_JOURNAL, "device": "cpu",
        "predictions": PREDICTIONS_DIR,
    }


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

    def analyze(self) -> dict[str, Any]:
        """analysis.json and comparisons.csv of the run as it stands (studies.analyze: intervals, verdicts
        against the paper's configuration, a search's parameter importances); returns the analysis."""
        from studies import analyze  # scipy: only at the end of a study

        analysis = analyze.analyze_run(self.dir)
        analyze.write_analysis(self.dir, analysis)
        return analysis

    # -- files ----------------------------------------------------------------------------------------
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
