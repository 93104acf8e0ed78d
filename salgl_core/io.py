"""Atomic file writes: a crash never leaves half a file (temporary file in the same folder + rename).

No torch here: the config, the results schema and the dashboard use these writers (checkpoints, which
need torch.save, are streamed by `salgl_core.checkpoint` into `atomic_writer`'s file)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_writer(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through (creating its folder): a temporary file in the same folder, flushed,
    fsynced and renamed onto `path` when the block ends. An exception in the block leaves the old file untouched
    and no temporary file behind (a killed process: the old file untouched, a stray .tmp beside it). What is
    written goes straight to disk, never whole to memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` (creating its folder): all of it or, after a crash, the old file untouched."""
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def publish_dir(built: str | Path, final: str | Path, is_complete: Callable[[], bool]) -> bool:
    """Move a fully built folder into place in one rename, so that readers never see half of it. True if this
    call published it; False if another process published first (its complete copy stands; the caller's is
    left to delete); any other failure is raised."""
    try:
        os.rename(built, final)
        return True
    except OSError:
        if not is_complete():
            raise  # not a lost race: a real error
        return False
