"""Where Ray keeps a study's experiment state and trial checkpoints (--storage-path): a local folder or a
URI, and the checks a multi-node cluster needs before a study starts there.

`Folder` reads and writes a folder on this machine or behind a URI through pyarrow's filesystems, the
ones Ray Tune itself uses for `RunConfig(storage_path=...)` (s3://, gs://, abfs://, hdfs://, file://).
On a cluster with more than one node a trial may run, and after a lost node resume, on any node, so
`check_cluster_storage` refuses the machine-local default and has every node write to the folder the
user gave, before any trial starts. The export in results/ is written by the driver alone and stays a
local folder.
"""

from __future__ import annotations

import functools
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studies.design.paths import DEFAULT_STORAGE
from studies.design.spec import StudyError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

CLUSTER_HELP = "see 'Running on a Ray cluster' in README.md"


def is_uri(where: str) -> bool:
    return "://" in where


def storage_root(where: str | Path | None) -> str:
    """--storage-path as Ray takes it: a URI unchanged, a local path absolute (the default when None)."""
    if where is None:
        return str(DEFAULT_STORAGE)
    where = str(where)
    return where.rstrip("/") if is_uri(where) else str(Path(where).expanduser().resolve())


def experiment_dir(storage_path: str | Path | None, study: str, run: str) -> str:
    """A run's Ray experiment folder, <storage>/<study>/<run>: an absolute path or a URI."""
    return str(Folder(storage_root(storage_path)) / study / run)


def is_default(storage_path: str | Path | None) -> bool:
    return storage_root(storage_path) == str(DEFAULT_STORAGE)


class Folder:
    """A folder on this machine or behind a URI; `str()` gives what Ray takes (path or URI)."""

    def __init__(self, where: str | Path) -> None:
        where = storage_root(where)
        # A URI may carry options after '?' (s3://bucket/prefix?region=...): children keep them.
        self._base, sep, query = where.partition("?") if is_uri(where) else (where, "", "")
        self._query = sep + query

    @functools.cached_property
    def _fs_path(self) -> tuple[pafs.FileSystem, str]:
        # Resolved on first use (and pyarrow imported then: a second, too slow for --help): an object
        # store's filesystem may look up credentials or a region.
        import pyarrow.fs as pafs

        if not is_uri(str(self)):
            return pafs.LocalFileSystem(), self._base
        try:
            return pafs.FileSystem.from_uri(str(self))
        except (ValueError, OSError) as e:  # pyarrow's ArrowInvalid / ArrowIOError
            raise StudyError(f"--storage-path {self} cannot be opened: {e}") from None

    @property
    def fs(self) -> pafs.FileSystem:
        return self._fs_path[0]

    @property
    def path(self) -> str:
        return self._fs_path[1]

    def __str__(self) -> str:
        return self._base + self._query

    def __truediv__(self, name: str) -> Folder:
        return Folder(f"{self._base}/{name}{self._query}")

    @property
    def name(self) -> str:
        return self._base.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Folder:
        return Folder(self._base.rstrip("/").rsplit("/", 1)[0] + self._query)

    def _type(self, name: str | None = None) -> str:
        """'file', 'dir' or 'none'."""
        import pyarrow.fs as pafs

        kind = self.fs.get_file_info(f"{self.path}/{name}" if name else self.path).type
        return {pafs.FileType.File: "file", pafs.FileType.Directory: "dir"}.get(kind, "none")

    def exists(self) -> bool:
        return self._type() != "none"

    def has_file(self, name: str) -> bool:
        return self._type(name) == "file"

    def subfolders(self) -> list[str]:
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path, allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.Directory)

    def read_text(self, name: str) -> str:
        with self.fs.open_input_stream(f"{self.path}/{name}") as f:
            return f.read().decode()

    def write_text(self, name: str, text: str) -> None:
        if not is_uri(str(self)):
            from salgl_core.io import atomic_write_text

            atomic_write_text(Path(self.path) / name, text)
            return
        self.fs.create_dir(self.path, recursive=True)
        with self.fs.open_output_stream(f"{self.path}/{name}") as f:
            f.write(text.encode())

    def delete(self) -> None:
        if self.exists():
            self.fs.delete_dir(self.path)


# ---------------------------------------------------------------------------------------------------
# a multi-node cluster


def _write_marker(probe: str, node_id: str, node_ip: str) -> str | None:
    """Runs on one node: write a marker file into the probe folder; the error text if that fails."""
    try:
        Folder(probe).write_text(node_id, node_ip)
    except Exception as e:  # any failure is the answer: reported to the user with the node's name
        return f"{type(e).__name__}: {e}"
    return None


def check_cluster_storage(storage_path: str | Path | None, nodes: list[dict[str, Any]], timeout: float = 120) -> None:
    """On a multi-node cluster (`nodes`: the alive entries of ray.nodes()), make sure Ray's experiment folder
    is one every node reaches: not the machine-local default, writable from every node, and what a node
    writes there visible on this machine. StudyError naming the folder (and the node) otherwise."""
    if len(nodes) < 2:
        return
    if is_default(storage_path):
        raise StudyError(
            f"this Ray cluster has {len(nodes)} nodes: a trial runs on any of them and, when its node is lost, "
            "restarts on another from its last checkpoint, so Ray's experiment folder (checkpoints and experiment "
            "state) must be storage every node reaches. Pass --storage-path with a folder every node mounts at "
            "the same path (NFS, EFS, ...) or a URI such as s3://bucket/prefix; the default, "
            f"{DEFAULT_STORAGE}, is on this machine only ({CLUSTER_HELP})")
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = Folder(storage_path) / f".salgl-probe-{uuid.uuid4().hex[:12]}"
    write = ray.remote(num_cpus=0, max_retries=0)(_write_marker)
    refs = [write.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(str(probe), n["NodeID"], n["NodeManagerAddress"]) for n in nodes]
    try:
        try:
            errors = ray.get(refs, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise StudyError(f"checking --storage-path {storage_root(storage_path)}: not every node of the Ray "
                             f"cluster answered within {timeout:.0f} s; check that the worker nodes are alive "
                             "(`ray status`)") from None
        for n, error in zip(nodes, errors, strict=True):
            where = f"node {n['NodeManagerAddress']} ({n['NodeID'][:12]})"
            if error:
                raise StudyError(f"--storage-path {storage_root(storage_path)} is not writable from {where}: "
                                 f"{error}. Mount it at the same path on every node, or use a URI every node "
                                 f"can write to ({CLUSTER_HELP})")
            if not probe.has_file(n["NodeID"]):
                raise StudyError(f"--storage-path {storage_root(storage_path)} is not shared: {where} wrote a file "
                                 "there that this machine does not see. Use a folder every node mounts at the same "
                                 f"path (NFS, EFS, ...) or a URI such as s3://bucket/prefix ({CLUSTER_HELP})")
    finally:
        try:
            probe.delete()
        except OSError:
            pass  # a leftover marker folder is harmless


def runs_found(storage_path: str | Path | None, study: str) -> str:
    """'<storage>/<study>: a, b' for the given storage path and the default one: what --resume can find."""
    places = [storage_root(storage_path)]
    if not is_default(storage_path):
        places.append(str(DEFAULT_STORAGE))
    lines = []
    for where in places:
        folder = Folder(where) / study
        try:
            runs = [r for r in folder.subfolders() if not r.startswith(".")]
        except OSError as e:
            lines.append(f"{folder}: cannot be listed ({e})")
            continue
        lines.append(f"{folder}: {', '.join(runs) or 'no runs'}")
    return "; ".join(lines)
