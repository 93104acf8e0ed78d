"""cluster/ray-up-gpu.yaml's own `ray start` commands, run on this machine as `ray up` would run them on a
new cluster: the token generated on the launching machine as the file's header says, copied to each node
by its file_mounts, each node's environment from its docker run_options, then head_start_ray_commands'
`ray start --head` and worker_start_ray_commands' `ray start --address`. Token authentication is on:
a client without the token is refused, one with it is served, and a worker with the mounted token joins.

What `ray up` does that cannot run here is left out: `ray stop` (here it would stop every Ray on this
machine), the AWS autoscaler's --autoscaling-config, the fixed port 6379 (a free one instead), the
container. One head and one worker for the module, each stopped through its `ray start --block` process
and whatever they started killed by PID, whatever happens."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from helpers import wait_until
from ray_cli import find, free_port, fresh_env, http_status, local_flags, ray, ray_node, shell_lines, short_temp_dir

pytestmark = [pytest.mark.cluster, pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
YAML = REPO / "cluster" / "ray-up-gpu.yaml"
NODE_HOME = "/home/ray/"  # the image's user's home, where file_mounts puts the token


def header_commands() -> list[str]:
    """The commands the file's header comment shows (`#   command   # note`)."""
    return shell_lines("\n".join(line[1:] for line in YAML.read_text().splitlines() if line.startswith("#   ")))


def start_command(commands: list[str]) -> tuple[dict[str, str], list[str]]:
    """The one `ray start` of head_start_ray_commands or worker_start_ray_commands, made runnable here."""
    env, argv = find(commands, "ray", "start")
    return env, [a for a in argv if not a.startswith(("--autoscaling-config=", "--port=", "--address="))]


def node_env(config: dict, home: Path, laptop: Path) -> dict[str, str]:
    """A node's environment: its own HOME holding what file_mounts copies there from the launching machine,
    and the `-e NAME=VALUE` of docker run_options."""
    for dest, src in config["file_mounts"].items():
        if dest.startswith(NODE_HOME) and src.startswith("~/"):
            (home / dest.removeprefix(NODE_HOME)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(laptop / src.removeprefix("~/"), home / dest.removeprefix(NODE_HOME))
    options = [o.split() for o in config["docker"]["run_options"]]
    return fresh_env(home, **dict(o[1].split("=", 1) for o in options if o[0] == "-e"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray_up")
    config = yaml.safe_load(YAML.read_text())
    laptop = tmp / "laptop"  # where `ray up` runs: no token before the header's first command
    env, generate = find(header_commands(), "ray", "get-auth-token")
    out = ray(generate, fresh_env(laptop, **env))
    assert out.returncode == 0 and (laptop / ".ray" / "auth_token").is_file(), out.stdout + out.stderr
    token = (laptop / ".ray" / "auth_token").read_text()

    env, start = start_command(config["head_start_ray_commands"])
    port, flags = free_port(), local_flags(short_temp_dir("ru"), head=True)
    dashboard = next(f.split("=")[1] for f in flags if f.startswith("--dashboard-port="))
    head_env = {**node_env(config, tmp / "head", laptop), **env}
    with ray_node([*start, f"--port={port}", *flags], head_env, tmp / "head.log"):
        yield SimpleNamespace(config=config, tmp=tmp, laptop=laptop, token=token, port=port,
                              dashboard=f"http://127.0.0.1:{dashboard}")


def test_the_head_refuses_a_client_without_the_token(cluster):
    assert http_status(f"{cluster.dashboard}/api/jobs/") == 401
    out = ray(["ray", "job", "list", "--address", cluster.dashboard], fresh_env(cluster.tmp / "stranger"))
    assert out.returncode != 0 and "auth_token" in out.stdout + out.stderr, out.stdout + out.stderr


def test_the_head_serves_the_launching_machine_with_the_token(cluster):
    """As the header's `RAY_AUTH_MODE=token ray job submit` runs through `ray dashboard`'s tunnel: the token
    from the launching machine's ~/.ray/auth_token; or, anywhere, RAY_AUTH_TOKEN."""
    env, _ = find(header_commands(), "ray", "job", "submit")
    assert env == {"RAY_AUTH_MODE": "token"}
    for client in (fresh_env(cluster.laptop, **env),
                   fresh_env(cluster.tmp / "elsewhere", **env, RAY_AUTH_TOKEN=cluster.token)):
        out = ray(["ray", "job", "list", "--address", cluster.dashboard], client)
        assert out.returncode == 0, out.stdout + out.stderr
    assert http_status(f"{cluster.dashboard}/api/jobs/", token=cluster.token) == 200


def test_a_worker_with_the_mounted_token_joins(cluster):
    """worker_start_ray_commands on a node whose HOME got the token through file_mounts: it joins the head
    (`ray start` says so only once the head's GCS accepted it)."""
    env, start = start_command(cluster.config["worker_start_ray_commands"])
    assert "$RAY_HEAD_IP:6379" in " ".join(cluster.config["worker_start_ray_commands"])
    worker_env = {**node_env(cluster.config, cluster.tmp / "worker", cluster.laptop), **env}
    argv = [*start, f"--address=127.0.0.1:{cluster.port}", *local_flags(short_temp_dir("rw"), head=False)]
    with ray_node(argv, worker_env, cluster.tmp / "worker.log") as log:
        assert "Ray runtime started" in log
        client = fresh_env(cluster.laptop, RAY_AUTH_MODE="token")

        def nodes() -> int:
            out = ray(["ray", "status", f"--address=127.0.0.1:{cluster.port}"], client)
            return out.returncode == 0 and out.stdout.count(" node_")

        assert wait_until(lambda: nodes() == 2, 60, "two nodes in `ray status`", poll=1)
