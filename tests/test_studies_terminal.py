"""A study's terminal holds the project's own lines only, on a normal run as on Ctrl-C: every line a real
`python studies/scene_count.py --smoke` prints must match one of the project's line patterns (ALLOWED), so a new
line of Ray's or Optuna's (a log line, Tune's tables, a hint) fails here. How each of theirs is silenced:
studies/tuning/quiet.py. Real errors still show: the patterns take the project's own error lines, and the unit
tests in test_studies_quiet.py check that Ray's warnings and errors still pass."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest
from helpers import wait_until
from study_process import Study

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# The project's own lines (studies/tuning/runner.py, callback.py, cluster.py, plan.py, studies/analysis/summary.py,
# salgl_core/pretrain.py and features.py), as regular expressions matched against a whole line.
ALLOWED = [re.compile(p) for p in (
    r"",
    # before the trials
    r"note: .+",
    r"WARNING: the Ray dashboard will listen on .+",
    r"Ray dashboard: http://\S+  \(token authentication is .+\)",
    r"joined the Ray cluster at .+",
    r"pretraining small_cnn.+",
    r"feature cache: .+",
    r"\w+ \S+: \d+ trials, up to \d+ at once, \S+ GPU and \S+ CPU each; export: .+",
    # the trials
    r"start    \w+ .+",
    r"         \w+ epoch \d+/\d+  mAP [\d.]+  EMA mAP [\d.]+  loss .+",
    r"\[\d+/\d+\] (FINISHED|STOPPED|ERROR|DIVERGED) +\w+ .+",
    r"trial \w+ failed.*; retrying from its last checkpoint \(retry \d+\)",
    r"warning: .+",
    # the closing summary
    r"\w+ \S+: (FINISHED|INTERRUPTED|FAILED); export in .+",
    r"  best EMA mAP \(the paper's reported number\), mean over seeds:",
    r"  \w+ = \S+ +[\d.]+ .+",
    r"  best configuration: .+",
    r"    \w+=.+",
    r"\w+/\S+: best_mAP_ema \(percent\)(, reference .+, 95% intervals)?",
    r" +value +seeds +mean .+",
    r" +\S+?\*? +\d+ +(-|[\d.]+) .+",
    r"  \S+: (no detectable difference|not detectable after Holm's correction|better by|worse by|no seed-level test"
    r"|no comparison|no difference|Holm: |.*no test is possible).*",
    r"  (budget|note|conclusion|next|dashboard|optuna|Ray's folder): .+",
    r"  (best|fanova|ped_anova|reference|the synthetic preset's value|the paper's configuration): .+",  # a search
    r"  preparation \d+ s, one-off.*",
    r"  trials \d+ s of work, \d+ at once -> ideal \d+ s; wall .+",
    r"  (ERROR|DIVERGED) \w+: .+",
    r"interrupted; finish it with:",
    r"  \S*python\S* \S+ --resume --name .+",
    # Ray's own warning about this machine, which a user should see: a /dev/shm too small for the object store
    # (Docker's default 64 MB), so it falls back to /tmp. Not on every machine, so allowed by name.
    r".*WARNING.*The object store is using \S+ instead of /dev/shm because /dev/shm has only \d+ bytes available.*",
)]


def foreign_lines(out: str) -> list[str]:
    """The lines of `out` that are none of the project's."""
    return [ln for ln in out.splitlines() if not any(p.fullmatch(ln) for p in ALLOWED)]


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


def test_a_finished_study_prints_only_its_own_lines(tmp_path, ray_tmp):
    s = Study(tmp_path, _argv(tmp_path, ray_tmp, "done"), "done.log")
    assert s.end(timeout=300) == 0, s.out()[-3000:]
    out = s.out()
    assert foreign_lines(out) == [], out
    # What a user waits for: progress with the time left, then the conclusion, the next study and the timing.
    lines = out.splitlines()
    first, last = (next(ln for ln in lines if ln.startswith(f"[{k}/2]")) for k in (1, 2))
    assert re.search(r"  time left ~\d+ (s|min)$", first) and "time left" not in last
    for start in ("  conclusion: ", "  next: ", "  preparation ", "  trials ", "  optuna: "):
        assert sum(ln.startswith(start) for ln in lines) == 1, (start, out)
    assert "(the synthetic preset's value), 95% intervals" in out and "paper_config" not in out


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
