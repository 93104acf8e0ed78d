"""A study run as a user runs it, in a subprocess: started, waited on, interrupted, ended with whatever it left
behind killed; and whether Ray's saved experiment state holds a trial. Shared by the resume tests."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from helpers import descendants, kill, read_rows, wait_until
from ray.tune import ExperimentAnalysis

REPO = Path(__file__).resolve().parents[1]


class Study:
    """One `python studies/<study>.py ...` subprocess in `cwd` (the repository by default); output goes to a file
    (no pipe to fill up). `pythonpath` puts other packages first (an older checkout's)."""

    def __init__(self, tmp: Path, argv: list[str], log: str, cwd: Path = REPO, pythonpath: Path | None = None) -> None:
        self.log = tmp / log
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONUNBUFFERED"] = "1"
        # Ray Tune warns when a driver step (our export, a tracker's write) took over 0.5 s, once its driver is a
        # minute old: on a loaded CI machine that is the machine, and the terminal tests allow only our lines.
        env.setdefault("TUNE_WARN_THRESHOLD_S", "60")
        if pythonpath is not None:
            env["PYTHONPATH"] = str(pythonpath)
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env)
        self.ray_pids: list[int] = []

    def out(self) -> str:
        return self.log.read_text()

    def wait_for(self, trials_csv: Path, n_finished: int, timeout: float = 120) -> list[dict[str, str]]:
        """The rows of trials.csv once it has `n_finished` FINISHED trials; fails if the study exits first."""
        def finished() -> list[dict[str, str]] | None:
            assert self.proc.poll() is None, f"the study exited early:\n{self.out()[-3000:]}"
            rows = read_rows(trials_csv)
            return rows if sum(r["status"] == "FINISHED" for r in rows) >= n_finished else None

        try:
            rows = wait_until(finished, timeout, f"{n_finished} finished trials", poll=0.2)
        except AssertionError as e:
            raise AssertionError(f"{e}:\n{self.out()[-3000:]}") from None
        self.ray_pids = descendants(self.proc.pid)
        return rows

    def end(self, timeout: float = 120) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            kill([self.proc.pid, *self.ray_pids, *descendants(self.proc.pid)])  # what a killed driver left
        return rc


def recorded_by_ray(exp_dir: Path, trial_ids: set[str]) -> bool:
    """Whether Ray's saved experiment state has these trials as finished (what a restore starts from)."""
    done = {t.trial_id for t in ExperimentAnalysis(str(exp_dir)).trials if t.status == "TERMINATED"}
    return trial_ids <= done
