"""Ray's command line as the documentation runs it: the commands read out of README.md and cluster/, a
`ray start --block` node that is stopped whatever happens, and a client with or without the cluster's token.

Each documented cluster runs under a HOME of its own, fresh and empty like a new machine's: its token comes
from the documented `ray get-auth-token --generate`, never from a ~/.ray left by anything else.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from helpers import descendants, kill, psutil, wait_until

BIN = Path(sys.executable).parent  # the project's environment (.venv/bin): `ray`, and the jobs' `python`
_ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_temp_dir(prefix: str) -> str:
    """A fresh folder for one Ray node's session files, under the clean room's TMPDIR (tests/conftest.py, which
    keeps it short enough for Ray's AF_UNIX socket paths)."""
    return tempfile.mkdtemp(prefix=prefix)


def _words(line: str, comments: bool = False) -> list[str]:
    """shlex.split, with each `$(...)` kept as part of one word, as the shell keeps it."""
    line = re.sub(r"\$\([^)]*\)", lambda m: m.group(0).replace(" ", "\0"), line)
    return [w.replace("\0", " ") for w in shlex.split(line, comments=comments)]


def shell_lines(text: str) -> list[str]:
    """The commands of a shell snippet: continuation lines joined, comments and blank lines dropped."""
    text = re.sub(r"\\\n\s*", " ", text)
    return [line for line in (shlex.join(_words(raw, comments=True)) for raw in text.splitlines()) if line]


def split_command(line: str) -> tuple[dict[str, str], list[str]]:
    """`A=1 B=$(cmd) cmd args` -> ({A: 1, B: $(cmd)}, [cmd, *args])."""
    words = _words(line)
    env = {}
    while words and _ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def find(commands: list[str], *prefix: str) -> tuple[dict[str, str], list[str]]:
    """The one command among `commands` whose words start with `prefix` (after its variable assignments)."""
    found = [split_command(c) for c in commands if split_command(c)[1][:len(prefix)] == list(prefix)]
    assert len(found) == 1, f"expected one `{' '.join(prefix)}` in {commands}"
    return found[0]


def fresh_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a machine whose home is `home`, as after `source .venv/bin/activate`: no RAY_AUTH_*
    unless given."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "HOME": str(home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def ray(argv: list[str], env: dict[str, str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """`ray ...` from the project's environment."""
    assert argv[0] == "ray", argv
    return subprocess.run([str(BIN / "ray"), *argv[1:]], env=env, capture_output=True, text=True, timeout=timeout,
                          **kw)


def local_flags(temp_dir: str, head: bool) -> list[str]:
    """What a test adds to a documented `ray start`: block (the test stops the node by stopping that process),
    free ports instead of the fixed defaults, one CPU, a short temp dir."""
    flags = ["--block", "--num-cpus=1", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    if head:
        flags += [f"--dashboard-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                  f"--ray-client-server-port={free_port()}"]
    return flags


@contextlib.contextmanager
def ray_node(argv: list[str], env: dict[str, str], log: Path, timeout: float = 120) -> Iterator[str]:
    """Run `ray start --block ...` (argv) until Ray says it started; yield its log's text. On the way out,
    stop it through its `--block` process and kill by PID whatever it started, whatever happened."""
    assert argv[:2] == ["ray", "start"] and "--block" in argv, argv
    temp = next(a.split("=", 1)[1] for a in argv if a.startswith("--temp-dir="))
    with open(log, "w") as f:
        proc = subprocess.Popen([str(BIN / "ray"), *argv[1:]], stdout=f, stderr=subprocess.STDOUT, env=env)
    started: list[int] = []
    try:
        wait_until(lambda: ("Ray runtime started" in log.read_text()) or proc.poll() is not None, timeout,
                   f"`{shlex.join(argv)}`", poll=0.5)
        assert proc.poll() is None, f"`{shlex.join(argv)}` exited:\n{log.read_text()[-3000:]}"
        started = descendants(proc.pid)
        yield log.read_text()
    finally:
        started += descendants(proc.pid)
        proc.terminate()  # `ray start --block` stops the processes it started
        try:
            proc.wait(timeout=60)
        finally:
            # Also those its exit left behind (reparented, no longer below it): they name its temp dir.
            kill([proc.pid, *started, *processes_using(temp)])
            shutil.rmtree(temp, ignore_errors=True)


def processes_using(folder: str) -> list[int]:
    """PIDs of the other processes whose command line or working directory names `folder` (a Ray node's
    session processes name their temp dir)."""
    pids = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and any(folder in part for part in [p.cwd(), *p.cmdline()]):
                pids.append(p.pid)
        except (psutil.Error, OSError):
            pass
    return pids


def http_status(url: str, token: str | None = None) -> int:
    """The HTTP status of a GET, with the token as Ray's clients send it (a bearer token) or none."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
