"""A study submitted as a Ray job, as README.md shows it, from a machine that has no Ray token yet: the
README's own commands, read out of its code block, under a fresh HOME: `ray get-auth-token --generate`,
`RAY_AUTH_MODE=token ray start --head ...` from the project's environment, then `RAY_AUTH_MODE=token ray
job submit --working-dir . -- python studies/scene_count.py ...`. The job finishes and its export lands where
--results-dir says (the job itself runs in Ray's copy of the working directory). Token authentication is
on: a client without the token is refused, one with it (the README's two ways) is served. The head is
stopped through its `ray start --block` process, and whatever it started is killed by PID, whatever happens."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import read_rows
from ray_cli import find, free_port, fresh_env, http_status, local_flags, ray, ray_node, shell_lines, short_temp_dir

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def readme(*prefix: str) -> tuple[dict[str, str], list[str]]:
    """The command starting with `prefix` in the first code block of README.md's "Running on a Ray cluster"
    (a local cluster)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Running on a Ray cluster"):]
    return find(shell_lines(re.search(r"```bash\n(.*?)```", section, re.S).group(1)), *prefix)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """The README's local cluster on a machine with no token: the token generated as it says, then its
    `ray start --head` (dashboard, the job server, on 127.0.0.1) on free ports."""
    tmp_path = tmp_path_factory.mktemp("head")
    home = tmp_path / "home"
    env, generate = readme("ray", "get-auth-token", "--generate")
    out = ray(generate, fresh_env(home, **env))
    token_file = home / ".ray" / "auth_token"
    assert out.returncode == 0 and token_file.is_file(), out.stdout + out.stderr
    env, start = readme("ray", "start", "--head")
    flags = local_flags(short_temp_dir("rj"), head=True)
    dashboard = next(f.split("=")[1] for f in flags if f.startswith("--dashboard-port="))
    head_env = fresh_env(home, **env)  # as after `source .venv/bin/activate`: a job's `python` is the environment's
    with ray_node([*start, f"--port={free_port()}", *flags], head_env, tmp_path / "head.log"):
        yield SimpleNamespace(dashboard=f"http://127.0.0.1:{dashboard}", home=home, token=token_file.read_text(),
                              log=tmp_path / "head.log")


def test_a_study_submitted_as_a_ray_job_exports_its_results(head, tmp_path):
    results, storage = tmp_path / "results", tmp_path / "ray"
    # The README's command, from the head's machine: the job client reads the token from ~/.ray/auth_token
    # once RAY_AUTH_MODE=token tells it that the cluster uses tokens.
    env, submit = readme("ray", "job", "submit")
    assert submit[submit.index("--") + 1:][:2] == ["python", "studies/scene_count.py"]
    submit = [*submit[:submit.index("--address") + 1], head.dashboard, "--working-dir", ".", "--",
              "python", "studies/scene_count.py", "--smoke", "--values", "4", "--name", "job",
              "--results-dir", str(results), "--storage-path", str(storage)]
    out = ray(submit, fresh_env(head.home, **env), timeout=420, cwd=REPO)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "succeeded" in text, text[-4000:] + head.log.read_text()[-2000:]
    run = results / "scene_count" / "job"
    meta = json.loads((run / "study.json").read_text())
    assert (meta["status"], meta["n_finished"]) == ("FINISHED", 1)
    (trial,) = read_rows(run / "trials.csv")
    assert trial["status"] == "FINISHED" and trial["node_id"] and trial["retries"] == "0"
    assert "joined the Ray cluster" in text  # the job's driver joined the running cluster, not a new one


def test_a_job_client_without_the_token_is_refused(head, tmp_path):
    """Token authentication is on: the job server refuses a request without the token, and Ray's client
    without it (on the head's machine but without RAY_AUTH_MODE, so it sends none; or on another machine)
    fails and says what to do."""
    assert http_status(f"{head.dashboard}/api/jobs/") == 401
    assert http_status(f"{head.dashboard}/api/jobs/", token="0" * 64) in (401, 403)
    for env in (fresh_env(head.home), fresh_env(tmp_path / "elsewhere"),
                fresh_env(tmp_path / "elsewhere", RAY_AUTH_MODE="token")):
        out = ray(["ray", "job", "list", "--address", head.dashboard], env, cwd=REPO)
        assert out.returncode != 0 and "auth_token" in out.stdout + out.stderr, out.stdout + out.stderr


def test_a_job_client_with_the_token_is_served(head, tmp_path):
    """The README's two clients: on the head's machine, RAY_AUTH_MODE=token (the token from ~/.ray/auth_token);
    elsewhere, RAY_AUTH_MODE=token RAY_AUTH_TOKEN=$(ssh user@head ray get-auth-token)."""
    assert http_status(f"{head.dashboard}/api/jobs/", token=head.token) == 200
    printed = ray(["ray", "get-auth-token"], fresh_env(head.home)).stdout.strip()
    assert printed == head.token
    for env in (fresh_env(head.home, RAY_AUTH_MODE="token"),
                fresh_env(tmp_path / "elsewhere", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=printed)):
        out = ray(["ray", "job", "list", "--address", head.dashboard], env, cwd=REPO)
        assert out.returncode == 0, out.stdout + out.stderr
