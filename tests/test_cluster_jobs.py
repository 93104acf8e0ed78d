"""A study submitted as a Ray job, as README.md shows it: `ray start --head` (token authentication on) from
the project's environment, then `ray job submit --working-dir . -- python studies/scene_count.py ...`.
The job finishes and its export lands where --results-dir says (the job itself runs in Ray's copy of
the working directory). The head is stopped through its `ray start --block` process, and whatever it
started is killed by PID afterwards, whatever happens."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import descendants, kill, read_rows, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the project's environment (.venv/bin): `ray`, and the jobs' `python`


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A one-node `ray start --head --block` cluster with its dashboard (the job server) on 127.0.0.1."""
    tmp_path = tmp_path_factory.mktemp("head")
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # Ray's socket paths must stay short
    dashboard = _free_port()
    # As after `source .venv/bin/activate`: a job's `python` is the environment's.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "head.log"
    cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--port={_free_port()}", "--num-cpus=1",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--dashboard-agent-listen-port={_free_port()}", f"--ray-client-server-port={_free_port()}",
           f"--temp-dir={temp}", "--disable-usage-stats"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    started: list[int] = []
    try:
        wait_until(lambda: proc.poll() is None and "Ray runtime started" in log.read_text(), 120,
                   "ray start --head", poll=0.5)
        started = descendants(proc.pid)
        yield SimpleNamespace(dashboard=f"http://127.0.0.1:{dashboard}", env=env, log=log)
    finally:
        started += descendants(proc.pid)
        proc.terminate()  # `ray start --block` stops the processes it started
        try:
            proc.wait(timeout=60)
        finally:
            kill([proc.pid, *started])
            shutil.rmtree(temp, ignore_errors=True)


def test_a_study_submitted_as_a_ray_job_exports_its_results(head, tmp_path):
    results, storage = tmp_path / "results", tmp_path / "ray"
    # The README's command; the job client reads the token from ~/.ray/auth_token once told that the
    # cluster uses tokens.
    submit = [str(BIN / "ray"), "job", "submit", "--address", head.dashboard, "--working-dir", ".", "--",
              "python", "studies/scene_count.py", "--smoke", "--values", "4", "--name", "job",
              "--results-dir", str(results), "--storage-path", str(storage)]
    out = subprocess.run(submit, cwd=REPO, env={**head.env, "RAY_AUTH_MODE": "token"}, capture_output=True,
                         text=True, timeout=420)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "succeeded" in text, text[-4000:] + head.log.read_text()[-2000:]
    run = results / "scene_count" / "job"
    meta = json.loads((run / "study.json").read_text())
    assert (meta["status"], meta["n_finished"]) == ("FINISHED", 1)
    (trial,) = read_rows(run / "trials.csv")
    assert trial["status"] == "FINISHED" and trial["node_id"] and trial["retries"] == "0"
    assert "joined the Ray cluster" in text  # the job's driver joined the running cluster, not a new one


def test_a_job_client_without_the_token_is_refused(head):
    """Token authentication is on: without the token (here: the mode not set, so none is sent) the job
    server refuses, and says what to do."""
    env = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")}
    out = subprocess.run([str(BIN / "ray"), "job", "list", "--address", head.dashboard], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "auth_token" in out.stdout + out.stderr
