"""The Ray cluster a study runs on: start or join it, keep its dashboard local, size the trials to it.

Joining checks the address first (`check_address`): Ray itself waits minutes for a cluster that does not
answer, then exits the process; a study says within seconds which address failed and what to check.
`resources` decides each trial's GPU share and CPUs and how many trials run at once from what the
cluster has (`cluster_info`) and the resource flags.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import ray

from studies.design.spec import StudyError
from studies.tuning.internals import enable_token_auth, ray_temp_dir

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# The level of Ray's "ray" logger in the driver (ray.init's public `logging_level`): its warnings and errors show,
# its INFO lines (Ray started, token generated, Tune's "Wrote the latest version of all result files") do not;
# the study prints what it did in its own words (studies/tuning/quiet.py lists what is silenced and how).
RAY_LOG_LEVEL = logging.WARNING
# How long joining a cluster may take to find out that nothing answers at its address (Ray itself waits
# minutes, then exits the process).
CONNECT_TIMEOUT_S = 5.0
# The client preface and an empty SETTINGS frame of HTTP/2, which Ray's GCS (gRPC) speaks.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_ADDRESS_HELP = ("check that the cluster's head node runs (`ray status` there; `ray start --head` prints the address "
                 "to join, port 6379 by default), that this machine reaches that host and port (firewall, VPN, or "
                 "an SSH tunnel), and that RAY_ADDRESS is not left over from another cluster")


def dashboard_warning(args: argparse.Namespace) -> str | None:
    """The warning to print when the Ray dashboard (which runs submitted jobs) would listen beyond this machine."""
    if args.no_dashboard or args.dashboard_host in LOCAL_HOSTS:
        return None
    return (f"WARNING: the Ray dashboard will listen on {args.dashboard_host}, not only on this machine. It accepts "
            "job submissions, which run arbitrary code here: expose it only on a network you trust, and keep "
            "token authentication on (RAY_AUTH_MODE=token, the default).")


def token_auth_on() -> None:
    """Token authentication for a Ray cluster this process starts other than with `ray.init()` (which turns it on
    itself): `ray.cluster_utils.Cluster` and `ray start` follow RAY_AUTH_MODE, and need a token that exists. Sets
    RAY_AUTH_MODE=token for this process and the nodes it starts, and makes a token with Ray's own CLI where there
    is none yet (~/.ray/auth_token, or RAY_AUTH_TOKEN_PATH; an existing one is kept)."""
    if not os.environ.get("RAY_AUTH_TOKEN"):
        out = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            where = os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")
            raise StudyError(f"could not make a Ray auth token at {where} (`ray get-auth-token --generate` said: "
                             f"{(out.stderr or out.stdout).strip()[-300:]}); make one there, or set RAY_AUTH_TOKEN")
    enable_token_auth()


def start_ray(args: argparse.Namespace) -> bool:
    """Join --address / RAY_ADDRESS, reuse a Ray already started in this process, or start one locally
    with the dashboard on 127.0.0.1. Returns whether this call started (and must stop) Ray."""
    if ray.is_initialized():
        return False
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        join_cluster(address, "--address" if args.address else "RAY_ADDRESS")
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        print(f"joined the Ray cluster at {address} ({nodes} node{'s' if nodes != 1 else ''})", flush=True)
        return True
    warning = dashboard_warning(args)
    if warning:
        print(warning, file=sys.stderr)
    temp_dir = str(Path(args.ray_temp_dir).resolve()) if args.ray_temp_dir else None
    if os.environ.get("RAY_AUTH_MODE") is None:
        # What ray.init does for a new local cluster when RAY_AUTH_MODE is unset, without its warning that it
        # did: the line below says that token authentication is on, and where the token is.
        enable_token_auth()
    ctx = ray.init(include_dashboard=not args.no_dashboard, dashboard_host=args.dashboard_host,
                   dashboard_port=args.dashboard_port, log_to_driver=False, logging_level=RAY_LOG_LEVEL,
                   **ray_temp_dir(temp_dir))
    if not args.no_dashboard and ctx.dashboard_url:
        token = os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")
        auth = (f"token authentication is on: paste the token from {token} (`ray get-auth-token` prints it) "
                "when the page asks" if os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
                else "token authentication is off (RAY_AUTH_MODE)")
        print(f"Ray dashboard: http://{ctx.dashboard_url}  ({auth})", flush=True)
    return True


def check_address(address: str, flag: str = "--address") -> None:
    """Fail within seconds, naming the address and what to check, when nothing that looks like a Ray cluster
    answers at `address` (HOST:PORT of its GCS). `auto` and ray:// client addresses are left to Ray."""
    if address.startswith(("http://", "https://")):
        raise StudyError(f"{flag} {address} is a dashboard address (where `ray job submit` sends jobs); a study joins "
                         "a cluster at its GCS address, HOST:6379 by default, or `auto` on one of its nodes")
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = address, "6379"
    try:
        port_number = int(port)
    except ValueError:
        raise StudyError(f"{flag} {address} is invalid: expected HOST:PORT (the address `ray start --head` prints, "
                         "port 6379 by default) or auto") from None
    try:
        with socket.create_connection((host.strip("[]"), port_number), timeout=CONNECT_TIMEOUT_S) as s:
            if os.environ.get("RAY_USE_TLS", "0") in ("0", ""):  # with TLS the GCS would not answer plain HTTP/2
                s.settimeout(CONNECT_TIMEOUT_S)
                s.sendall(_HTTP2_HELLO)
                reply = s.recv(9)
                if len(reply) < 4 or reply[3] != 0x04:  # a gRPC server answers with a SETTINGS frame
                    raise StudyError(f"{flag} {address} answers, but not as a Ray cluster (the dashboard listens on "
                                     "8265, the address to join is the GCS port, 6379 by default): " + _ADDRESS_HELP)
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise StudyError(f"cannot reach the Ray cluster at {flag} {address} ({reason}): {_ADDRESS_HELP}") from None


def check_join_address(args: argparse.Namespace) -> None:
    """check_address for the cluster a study will join (--address or RAY_ADDRESS), if any."""
    if args.address:
        check_address(args.address, "--address")
    elif os.environ.get("RAY_ADDRESS") and not ray.is_initialized():
        check_address(os.environ["RAY_ADDRESS"], "RAY_ADDRESS")


def join_cluster(address: str, flag: str = "--address") -> None:
    """ray.init(address=...) with the errors a user can act on."""
    check_address(address, flag)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=RAY_LOG_LEVEL)
    except ConnectionError as e:
        if address == "auto":
            raise StudyError(f"{flag} auto found no running Ray cluster on this machine ({e}): start one with "
                             "`ray start --head`, or give the head node's address, HOST:6379") from None
        # Ray logs the cause (a missing or wrong token, another Ray version) above its own one-line message.
        raise StudyError(f"cannot join the Ray cluster at {flag} {address} ({e}): see Ray's log line above. Token "
                         "authentication is on by default: this machine needs the cluster's token, in "
                         "~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN (`ray get-auth-token` on the head "
                         f"node prints it); the Ray versions must match; and {_ADDRESS_HELP}") from None


def cluster_info() -> dict[str, Any]:
    """{nodes, cpus, gpus} of the running Ray cluster (study.json's provenance.ray_cluster)."""
    res = ray.cluster_resources()
    return {"nodes": sum(1 for n in ray.nodes() if n.get("Alive")), "cpus": res.get("CPU", 0.0),
            "gpus": res.get("GPU", 0.0)}


def resources(args: argparse.Namespace, cluster: dict[str, Any], n_trials: int) -> tuple[float, float, int]:
    """(GPUs per trial, CPUs per trial, trials that can run at once)."""
    gpus, cpus = cluster["gpus"], cluster["cpus"]
    g = args.gpus_per_trial if args.gpus_per_trial is not None else (1.0 if gpus >= 1 else 0.0)
    if g < 0 or (g > 1 and g != int(g)):
        raise StudyError(f"--gpus-per-trial {g} is invalid: expected a fraction in (0, 1] or a whole number")
    if g > gpus:
        raise StudyError(f"--gpus-per-trial {g} is more than the Ray cluster has ({gpus:g} GPUs)")
    fit_gpu = math.floor(gpus / g + 1e-9) if g > 0 else n_trials
    c = args.cpus_per_trial if args.cpus_per_trial is not None else (
        1.0 if g == 0 else max(1.0, math.floor(cpus / max(1, min(fit_gpu, n_trials)))))
    if c <= 0 or c > cpus:
        raise StudyError(f"--cpus-per-trial {c} is invalid: the Ray cluster has {cpus:g} CPUs")
    concurrent = min(n_trials, fit_gpu, math.floor(cpus / c + 1e-9), args.max_concurrent or n_trials)
    return g, c, max(1, concurrent)


def tune_env(concurrent: int) -> None:
    """Ray Tune settings that only environment variables reach."""
    # Each reported checkpoint (every epoch by default, every --checkpoint-every epochs) makes Ray sync its
    # experiment state, which is what keeps a crash cheap; Ray warns about such frequent syncs, needlessly here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # With a custom searcher Ray keeps one trial pending at a time, so the second of two free slots would
    # wait for the first trial's worker to start (seconds each). Let every free slot fill at once.
    os.environ["TUNE_MAX_PENDING_TRIALS_PG"] = str(concurrent)
