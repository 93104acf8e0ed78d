import os
import stat

import pytest

from salgl_core import io


def test_writes_create_the_folder_and_replace_whole_files(tmp_path):
    path = tmp_path / "a" / "b" / "config.json"
    io.atomic_write_text(path, "first\n")
    io.atomic_write_text(path, "second\n")
    assert path.read_text() == "second\n"
    io.atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]  # no temporary left behind


def test_permissions_follow_the_umask_like_open(tmp_path):
    old = os.umask(0o027)
    try:
        mask = io._current_umask()
    finally:
        os.umask(old)
    assert mask == 0o027
    io.atomic_write_text(tmp_path / "f.txt", "x")
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~io._UMASK


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    io.atomic_write_text(path, "old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_publish_dir_moves_a_built_folder_in_once(tmp_path):
    from salgl_core.io import publish_dir

    final = tmp_path / "final"
    first, second = tmp_path / "a", tmp_path / "b"
    for d in (first, second):
        d.mkdir()
        (d / "x").write_text(d.name)
    assert publish_dir(first, final, (final / "x").is_file) is True and (final / "x").read_text() == "a"
    # A lost race: the winner's complete copy stands and the loser's folder is left for its caller to delete.
    assert publish_dir(second, final, (final / "x").is_file) is False and (final / "x").read_text() == "a"
    assert second.is_dir()
    with pytest.raises(OSError):  # not a race (nothing complete at the destination): a real error
        publish_dir(tmp_path / "missing", tmp_path / "elsewhere", lambda: False)
