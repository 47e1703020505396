"""The small file-system helpers every writer shares (genretag.fs)."""

from __future__ import annotations

import base64
import os

import pytest

from genretag import fs


def test_lock_fd_is_exclusive_between_open_files(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x")
    a, b = os.open(p, os.O_RDONLY), os.open(p, os.O_RDONLY)
    try:
        assert fs.lock_fd(a, blocking=False)
        assert not fs.lock_fd(b, blocking=False)  # flock locks belong to the open file: b waits for a
        os.close(a)
        a = -1
        assert fs.lock_fd(b, blocking=False)
    finally:
        for fd in (a, b):
            if fd != -1:
                os.close(fd)


def test_locked_holds_the_lock_for_the_block(tmp_path):
    lock = tmp_path / ".model.lock"
    with fs.locked(lock):
        fd = os.open(lock, os.O_RDONLY)
        try:
            assert not fs.lock_fd(fd, blocking=False)
        finally:
            os.close(fd)
    fd = os.open(lock, os.O_RDONLY)
    try:
        assert fs.lock_fd(fd, blocking=False)
    finally:
        os.close(fd)


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "card.json"
    p.write_bytes(b"old")
    fs.atomic_write(p, b"new")
    assert p.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [p]
    with pytest.raises(OSError):
        fs.atomic_write(tmp_path / "no-such-folder" / "x", b"new")
    (tmp_path / "folder").mkdir()
    with pytest.raises(OSError):  # the rename fails: the temporary copy goes, the folder stays
        fs.atomic_write(tmp_path / "folder", b"new")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["card.json", "folder"]
    fs.fsync_path(p)
    fs.fsync_dir(tmp_path)
    fs.fsync_dir(tmp_path / "no-such-folder")  # never raises


def test_a_name_that_is_not_utf8_is_printable_and_exact():
    name = os.fsdecode(b"/music/caf\xe9.flac")
    assert fs.printable_path(name) == "/music/caf\\xe9.flac"
    assert os.fsdecode(base64.b64decode(fs.path_bytes(name))) == name
    assert fs.printable_path("/music/café.flac") == "/music/café.flac" and fs.path_bytes("/music/café.flac") is None
