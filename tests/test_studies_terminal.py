"""A study's terminal holds the project's own lines only, on a normal run as on Ctrl-C: every line a real
`python studies/scene_count.py --smoke` prints must match one of the project's line patterns (ALLOWED), so a new
line of Ray's or Optuna's (a log line, Tune's tables, a hint) fails here. How each of theirs is silenced:
studies/tuning/quiet.py. Real errors still show: the patterns take the project's own error lines, and the unit
tests in test_studies_quiet.py check that Ray's warnings and errors still pass. The finished run's terminal is
checked on the study tests/test_studies_trackers.py runs (one study serves both, for the suite's time)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
from helpers import wait_until
from study_process import Study
from terminal_lines import foreign_lines

pytestmark = [pytest.mark.ray, pytest.mark.slow]

def test_the_allow_list_catches_rays_and_optunas_lines():
    ray_lines = """2026-12-07 05:30:58,785\tWARNING authentication_token_setup.py:85 -- Token authentication is enabled
2026-12-07 05:31:04,830\tINFO worker.py:2029 -- Started a local Ray instance. View the dashboard at http://127.0.0.1:8265
[I 2026-12-07 05:31:05,339] A new study created in Journal with name: scene_count/t1
╭──────────────────────────────────────────────────╮
│ Configuration for experiment     t1              │
View detailed results here: /tmp/h4/ray/scene_count/t1
2026-12-07 05:31:16,892\tINFO tune.py:1007 -- Wrote the latest version of all result files and experiment state
2026-12-07 05:31:41,945\tWARNING tune.py:219 -- Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run."""
    assert foreign_lines(ray_lines) == ray_lines.splitlines()


def _argv(tmp_path: Path, ray_tmp: str, name: str, *extra: str) -> list[str]:
    return [sys.executable, "studies/scene_count.py", "--smoke", "--values", "2", "--seeds", "0", "--name", name,
            "--results-dir", str(tmp_path / "results"), "--storage-path", str(tmp_path / "ray"),
            "--ray-temp-dir", ray_tmp, "--no-dashboard", *extra]


def test_an_interrupted_study_prints_only_its_own_lines(tmp_path, ray_tmp):
    s = Study(tmp_path, _argv(tmp_path, ray_tmp, "cut", "--epochs", "3"), "cut.log")
    try:
        wait_until(lambda: "\nstart " in s.out() or s.proc.poll() is not None, 180, "a trial to start", poll=0.2)
    finally:
        s.proc.send_signal(signal.SIGINT)
    assert s.end(timeout=180) == 130, s.out()[-3000:]
    out = s.out()
    assert foreign_lines(out) == [], out
    assert out.rstrip().splitlines()[-2:][0] == "interrupted; finish it with:"
    assert "--resume --name cut" in out.rstrip().splitlines()[-1] and "conclusion:" not in out
