"""Ray in tests: short temp dirs for its nodes, free ports."""

from __future__ import annotations

import socket
import tempfile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def short_temp_dir(prefix: str) -> str:
    """A fresh folder for one Ray node's session files, under the clean room's TMPDIR (tests/conftest.py, which
    keeps it short enough for Ray's AF_UNIX socket paths)."""
    return tempfile.mkdtemp(prefix=prefix)
