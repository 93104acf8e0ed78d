"""studies/tuning/cluster.py, storage.py and monitor.py: trials sized to the cluster, a Ray dashboard that stays local
unless asked, an --address where nothing answers failing in seconds, Ray's experiment folder on a path or a
URI, what --resume finds where, the trials' readable names (all without a Ray runtime), and token
authentication of the Ray a study starts, from a fresh HOME (in a subprocess)."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from ray_cli import free_port

from studies import scene_count
from studies import tune as tune_study
from studies.design.spec import StudyError
from studies.script import run_script
from studies.tuning import cluster, monitor, resume, storage

REPO = Path(__file__).resolve().parents[1]


def test_resources_follow_the_cluster():
    parse = scene_count.get_args_parser().parse_args
    assert cluster.resources(parse([]), {"cpus": 2.0, "gpus": 0.0}, 8) == (0.0, 1.0, 2)
    assert cluster.resources(parse([]), {"cpus": 16.0, "gpus": 2.0}, 8) == (1.0, 8.0, 2)
    args = parse(["--gpus-per-trial", "0.5", "--max-concurrent", "3"])
    assert cluster.resources(args, {"cpus": 16.0, "gpus": 2.0}, 8) == (0.5, 4.0, 3)
    assert cluster.resources(parse([]), {"cpus": 2.0, "gpus": 0.0}, 1) == (0.0, 1.0, 1)  # never more than planned
    with pytest.raises(StudyError, match="more than the Ray cluster has"):
        cluster.resources(parse(["--gpus-per-trial", "1"]), {"cpus": 2.0, "gpus": 0.0}, 8)
    with pytest.raises(StudyError, match="--gpus-per-trial 1.5 is invalid"):
        cluster.resources(parse(["--gpus-per-trial", "1.5"]), {"cpus": 2.0, "gpus": 4.0}, 8)
    with pytest.raises(StudyError, match="--cpus-per-trial 4.0 is invalid: the Ray cluster has 2 CPUs"):
        cluster.resources(parse(["--cpus-per-trial", "4"]), {"cpus": 2.0, "gpus": 0.0}, 8)


def test_dashboard_stays_local_unless_asked():
    parse = scene_count.get_args_parser().parse_args
    assert parse([]).dashboard_host == "127.0.0.1" and cluster.dashboard_warning(parse([])) is None
    warning = cluster.dashboard_warning(parse(["--dashboard-host", "0.0.0.0"]))
    assert "0.0.0.0" in warning and "arbitrary code" in warning
    assert cluster.dashboard_warning(parse(["--dashboard-host", "0.0.0.0", "--no-dashboard"])) is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_an_address_where_no_cluster_answers_fails_at_once(capsys, tmp_path):
    port = _closed_port()
    with pytest.raises(StudyError, match=rf"cannot reach the Ray cluster at --address 127.0.0.1:{port} "
                                         r"\(Connection refused\): check that the cluster's head node runs"):
        cluster.check_address(f"127.0.0.1:{port}")
    with pytest.raises(StudyError, match="is a dashboard address"):
        cluster.check_address("http://127.0.0.1:8265")
    with pytest.raises(StudyError, match="--address head:gcs is invalid: expected HOST:PORT"):
        cluster.check_address("head:gcs")
    cluster.check_address("auto")  # left to Ray, which finds the local cluster itself
    # Through the study script: exit code 2 and one line naming the address, before any data is indexed.
    rc = run_script(scene_count.SPEC, ["--smoke", "--address", f"127.0.0.1:{port}", "--results-dir",
                                       str(tmp_path / "r"), "--storage-path", str(tmp_path / "s")])
    assert rc == 2 and f"127.0.0.1:{port}" in capsys.readouterr().err


def test_an_address_that_is_not_a_ray_cluster_is_named():
    """A web server (say, the dashboard's port) answers, but not with the HTTP/2 that Ray's GCS speaks."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(StudyError, match="answers, but not as a Ray cluster"):
            cluster.check_address(f"127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_storage_on_a_path_or_a_uri(tmp_path):
    for where in (str(tmp_path / "a"), f"file://{tmp_path}/b"):
        run = storage.Folder(where) / "scene_count" / "r1"
        assert not run.exists()
        run.write_text("study_args.json", "{}")
        assert run.exists() and run.has_file("study_args.json") and run.read_text("study_args.json") == "{}"
        assert str(run) == f"{storage.storage_root(where)}/scene_count/r1"
        assert str(run.parent) == f"{storage.storage_root(where)}/scene_count"
        assert (storage.Folder(where) / "scene_count").subfolders() == ["r1"]
        run.delete()
        assert not run.exists()
    # A URI keeps its options after the path; nothing is opened until used (no credentials needed here).
    assert storage.experiment_dir("s3://bucket/prefix?region=eu-west-1", "tune", "r") == \
        "s3://bucket/prefix/tune/r?region=eu-west-1"
    assert storage.experiment_dir("relative", "tune", "r").startswith("/")
    with pytest.raises(StudyError, match="--storage-path nosuch://x cannot be opened"):
        storage.Folder("nosuch://x").exists()


def test_a_multi_node_cluster_refuses_the_machine_local_default():
    nodes = [{"NodeID": "a" * 56, "NodeManagerAddress": "10.0.0.1"}, {"NodeID": "b" * 56,
                                                                     "NodeManagerAddress": "10.0.0.2"}]
    storage.check_cluster_storage(None, nodes[:1])  # one node: its own disk will do
    with pytest.raises(StudyError, match="this Ray cluster has 2 nodes") as e:
        storage.check_cluster_storage(str(storage.DEFAULT_STORAGE), nodes)
    assert "--storage-path" in str(e.value) and "s3://bucket/prefix" in str(e.value)


def test_resume_says_which_runs_it_found_where(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "scene_count" / "other-run").mkdir(parents=True)
    parse = scene_count.get_args_parser().parse_args
    args = parse(["--resume", "--name", "gone", "--storage-path", str(elsewhere)])
    with pytest.raises(StudyError) as e:
        resume.restore_args(args, scene_count.SPEC)
    msg = str(e.value)
    assert f"nothing to resume at {elsewhere}/scene_count/gone" in msg and "--storage-path" in msg
    assert f"{elsewhere}/scene_count: other-run" in msg and f"{storage.DEFAULT_STORAGE}/scene_count" in msg
    with pytest.raises(StudyError, match="--resume needs --name RUN; runs of scene_count found in .*other-run"):
        resume.restore_args(parse(["--resume", "--storage-path", str(elsewhere)]), scene_count.SPEC)
    uri = parse(["--storage-path", "s3://bucket/salgl"])
    assert "--storage-path s3://bucket/salgl" in resume.resume_command(uri, scene_count.SPEC, "r")
    assert "--storage-path" not in resume.resume_command(parse([]), scene_count.SPEC, "r")


def test_trial_names():
    assert monitor.trial_name("scene_count", "num_scenes", {"num_scenes": 4, "seed": 1}) == "scene_count K=4 seed=1"
    assert monitor.trial_name("momentum", "comat_momentum", {"comat_momentum": 0.9, "seed": 0}, "ab12") == \
        "momentum mu=0.9 seed=0"
    assert monitor.trial_name("tune", tune_study.SPEC.axis, {"num_scenes": 2, "seed": 0}, "ab12_00003") == \
        "tune ab12_00003 seed=0"


# --- token authentication, from a machine with no token yet ------------------------------------------------

_LOCAL_START = """
import json, os, sys, urllib.error, urllib.request
from studies import scene_count
from studies.tuning import cluster
args = scene_count.get_args_parser().parse_args(["--dashboard-port", sys.argv[1]])
assert cluster.start_ray(args)
import ray
url = "http://127.0.0.1:" + sys.argv[1] + "/api/jobs/"
def status(headers):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30).status
    except urllib.error.HTTPError as e:
        return e.code
token = open(os.path.expanduser("~/.ray/auth_token")).read().strip()
print(json.dumps({"without": status({}), "with": status({"Authorization": "Bearer " + token}),
                  "mode": os.environ.get("RAY_AUTH_MODE")}))
ray.shutdown()
"""


def _fresh_env(tmp_path) -> dict[str, str]:
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(tmp_path / "home")}


@pytest.mark.ray
def test_a_studys_local_ray_keeps_token_authentication_on(tmp_path):
    """The Ray a study starts for itself (start_ray: ray.init with the dashboard on 127.0.0.1), on a machine with no
    token: Ray makes one, and its dashboard (the job API) refuses a request without it and serves one with it."""
    out = subprocess.run([sys.executable, "-c", _LOCAL_START, str(free_port())], env=_fresh_env(tmp_path), cwd=REPO,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert (seen["without"], seen["with"], seen["mode"]) == (401, 200, "token"), seen
    assert len((tmp_path / "home" / ".ray" / "auth_token").read_text().strip()) == 64


@pytest.mark.slow
def test_token_auth_on_makes_a_token_once_and_says_when_it_cannot(tmp_path):
    """For the Ray clusters a study's tools start without ray.init (the overhead benchmark's simulated cluster):
    RAY_AUTH_MODE=token and a token from Ray's own CLI, kept when one exists."""
    code = ("import os; from studies.tuning.cluster import token_auth_on; token_auth_on(); "
            "print(os.environ['RAY_AUTH_MODE'], open(os.path.expanduser('~/.ray/auth_token')).read().strip())")
    env = _fresh_env(tmp_path)
    first, second = (subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                                    timeout=120) for _ in range(2))
    assert first.returncode == 0, first.stderr[-2000:]
    mode, token = first.stdout.split()
    assert mode == "token" and len(token) == 64 and second.stdout == first.stdout  # the same token, kept
    bad = {**env, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "no" / "such" / "token")}
    code = "from studies.tuning.cluster import token_auth_on; token_auth_on()"
    out = subprocess.run([sys.executable, "-c", code], env=bad, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "could not make a Ray auth token at " + str(tmp_path) in out.stderr
