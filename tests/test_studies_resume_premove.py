"""A study started with the code before studies/ was split into subpackages (commit 706bbdc: studies/search.py,
studies/callback.py, studies/export.py, ...), interrupted with Ctrl-C, then finished with `--resume` by today's
code. Ray pickled the searcher and the callback (then holding a StudyExport) into the experiment folder under
the old module paths; the resume must still unpickle them (studies.tuning.internals.legacy_modules), run only
the unfinished trials and export every trial exactly once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_rows
from study_process import Study, recorded_by_ray

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PREMOVE = "706bbdc"  # the last commit before studies/ had subpackages
VALUES = ("1", "2", "4")
OLD_PATHS = (b"studies.search", b"studies.callback", b"studies.export")


def _git(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *argv], capture_output=True, **kw)


def premove_available() -> str | None:
    """Why the pre-move code cannot be had (None when it can)."""
    if shutil.which("git") is None:
        return "git is not installed"
    env = {k: v for k, v in os.environ.items() if k != "GIT_CEILING_DIRECTORIES"}
    if _git("rev-parse", "--git-dir", env=env).returncode != 0:
        return f"{REPO} is not a git checkout"
    if _git("cat-file", "-e", f"{PREMOVE}^{{commit}}", env=env).returncode != 0:
        return f"commit {PREMOVE} (before studies/ was split) is not in this clone (a shallow clone?)"
    return None


def test_resume_a_study_started_before_the_move(tmp_path, ray_tmp):
    if why := premove_available():
        pytest.skip(why)
    old = tmp_path / "old"
    old.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GIT_CEILING_DIRECTORIES"}
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", PREMOVE, "studies", "salgl_core"],
                               stdout=subprocess.PIPE, env=env)
    subprocess.run(["tar", "-x", "-C", str(old)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    assert archive.wait() == 0
    assert (old / "studies" / "search.py").is_file() and not (old / "studies" / "tuning").exists()

    results, storage = tmp_path / "res", tmp_path / "ray"
    run, exp = results / "scene_count" / "old", storage / "scene_count" / "old"
    trials_csv = run / "trials.csv"
    runtime = ["--ray-temp-dir", ray_tmp, "--no-dashboard"]

    # 1. The old code: one trial at a time, so Ctrl-C after the first finished leaves two to resume.
    first = [sys.executable, "studies/scene_count.py", "--smoke", "--values", *VALUES, "--seeds", "0",
             "--epochs", "2", "--max-concurrent", "1", "--name", "old", "--results-dir", str(results),
             "--storage-path", str(storage), *runtime]
    s = Study(tmp_path, first, "old.log", cwd=old, pythonpath=old)

    # Ctrl-C as soon as the export has a finished trial (the trials take seconds: waiting for Ray's periodic
    # state save as well would let the others finish); on SIGINT Ray saves its state once more, checked below.
    try:
        s.wait_for(trials_csv, 1)
        s.proc.send_signal(signal.SIGINT)
    finally:
        rc = s.end()
    assert rc == 130, s.out()[-3000:]
    assert "--resume --name old" in s.out()
    assert json.loads((run / "study.json").read_text())["status"] == "INTERRUPTED"
    before = {r["trial_id"]: r for r in read_rows(trials_csv) if r["status"] == "FINISHED"}
    assert 1 <= len(before) < len(VALUES), "nothing was left to resume"
    assert recorded_by_ray(exp, set(before)), "Ray's saved state lacks a trial the export has as finished"

    # The old folder's pickles name the old module paths: without the aliases the resume could not load them.
    pickled = b"".join(p.read_bytes() for p in exp.rglob("*") if p.is_file() and p.suffix in (".pkl", ".json"))
    named = [m.decode() for m in OLD_PATHS if m in pickled]
    assert named, f"no pickle in {exp} names {[m.decode() for m in OLD_PATHS]}: the test proves nothing"

    # 2. Today's code finishes it.
    resume = [sys.executable, "studies/scene_count.py", "--resume", "--name", "old", "--storage-path", str(storage),
              *runtime]
    s = Study(tmp_path, resume, "new.log", cwd=REPO)
    assert s.end(timeout=180) == 0, s.out()[-5000:]
    out = s.out()
    assert "--resume --name" not in out, out[-3000:]
    trials = read_rows(trials_csv)
    assert len(trials) == len(VALUES) and len({t["trial_id"] for t in trials}) == len(VALUES), trials
    assert sorted(t["num_scenes"] for t in trials) == sorted(VALUES)
    assert all(t["status"] == "FINISHED" and t["epochs_done"] == "2" for t in trials), trials
    by_id = {t["trial_id"]: t for t in trials}
    for tid, was in before.items():  # not run again: same numbers, same time spent
        assert (by_id[tid]["seconds"], by_id[tid]["mAP_ema"]) == (was["seconds"], was["mAP_ema"])
    epochs = sorted((e["trial_id"], e["epoch"]) for e in read_rows(run / "epochs.csv"))
    assert epochs == sorted((t, str(e)) for t in by_id for e in (1, 2))
    meta = json.loads((run / "study.json").read_text())
    assert (meta["status"], meta["n_finished"], meta["n_trials"]) == ("FINISHED", len(VALUES), len(VALUES))
    print(f"pickles of the pre-move run named {named}; resumed with today's code")
