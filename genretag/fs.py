"""Small file-system helpers every writer shares: locks, fsync, an atomic replace, a file's sha256, and file names in text.

The tag write, its journal and the model download each lock a file, flush it to the disk or put a new
version in place with a rename; results, journal lines and the review page each show file names that
need not be UTF-8. One copy of each lives here. Standard library only, so every layer may import it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path


def lock_fd(fd: int, *, blocking: bool = True) -> bool:
    """An exclusive advisory lock (flock) on `fd`, held until it is closed.

    False when another process holds it and `blocking` is off. True also where flock does not
    exist or the file system refuses it: the lock then serialises nothing, and the writes it
    guards still go through their own checks.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the lock file `path` (created if missing) for the `with` block.

    Released on exit, or by the kernel when the process dies. Unlike `lock_fd`, a file system
    that refuses the lock raises OSError: what it guards (a download) has no check of its own.
    A no-op where flock does not exist.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's data to the disk (before it is renamed over the file it replaces)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (after a rename in it), where the file system allows it; never raises."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Put `data` at `path` through a temporary file beside it and a rename.

    A reader sees the old file or the new one, never half of one. The temporary file
    (`.<name>.tmp<pid>`) is removed when the write fails. Raises OSError.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def printable_path(path: str) -> str:
    """`path` as valid UTF-8 text: bytes of the file name that are not UTF-8 become `\\xNN`.

    File names are bytes; Python hands undecodable ones over as lone
    surrogates (surrogateescape), which would make the output invalid UTF-8.
    JSON lines also carry such a name exactly, as `path_bytes` (see `path_bytes`).
    The escaped form is for reading only.
    """
    return path if _is_utf8(path) else os.fsencode(path).decode("utf-8", "backslashreplace")


def path_bytes(path: str) -> str | None:
    """The file name's exact bytes in base64, when they are not valid UTF-8 (else None).

    `os.fsdecode(base64.b64decode(row["path_bytes"]))` is the path to open again.
    """
    if _is_utf8(path):
        return None
    return base64.b64encode(os.fsencode(path)).decode("ascii")


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
