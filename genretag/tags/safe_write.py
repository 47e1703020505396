"""A write never edits the user's file in place: it copies it to a hidden
temporary file in the same folder, changes the copy, re-reads the copy to
check the genre is what was intended, every other tag field and the audio
payload are untouched, fsyncs it, and only then renames it over the
original. A crash at any moment leaves either the old file or the new one.
The check is made twice over: on the bytes (`genretag.tags.fields`) and as a
reader sees the file (`genretag.tags.verify`: every other tag field as
mutagen decodes it, every audio packet as PyAV demuxes it).

A temporary file is named after the host and process that own it
(`.genretag-tmp-<8 hex of the host name>-<pid>-<16 hex>`, at most 50 bytes
whatever the file's name, so any legal name can be written) and is kept
locked (flock) while it lives, so a run cleans up only the temporaries whose
owner is gone, never those of a run working next to it: on this host, a
temporary whose process is not running and whose lock nobody holds; another
host's (a network share), only one untouched for STALE_AFTER seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import socket
import stat
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from genretag.audio.containers import file_fingerprint, fingerprint
from genretag.errors import FingerprintError, one_line
from genretag.fs import fsync_dir, fsync_path, lock_fd
from genretag.tags import mp4
from genretag.tags.errors import ChangedSinceClassified, TagError
from genretag.tags.fields import GENRE_FIELDS, read_tags, set_genres, stored_form
from genretag.tags.verify import VerifyError, audio_packets, reader_fields

log = logging.getLogger(__name__)

TMP_MARK = ".genretag-tmp-"
#: Seconds a write waits for another writer's lock on the same file before it gives up on that file.
LOCK_WAIT = 120.0
#: This host, in temporary names: a process id means something only on the host that made it.
HOST_ID = hashlib.blake2b(socket.gethostname().encode("utf-8", "surrogateescape"), digest_size=4).hexdigest()
TMP_RE = re.compile(r"^\.genretag-tmp-([0-9a-f]{8})-(\d+)-[0-9a-f]{16}$")
#: Names of genretag 0.2.0 and earlier (`.<name>.genretag-tmp-<pid>-<16 hex>`): removed only when old too.
OLD_TMP_RE = re.compile(r"^\..+\.genretag-tmp-(\d+)-[0-9a-f]{16}$")
#: Seconds after which a temporary whose owner cannot be checked (another host's, an old-style name)
#: counts as abandoned: a write keeps its temporary for seconds, not days.
STALE_AFTER = 24 * 3600.0


@dataclass
class WriteOutcome:
    """What one safe write did: the journal records exactly this."""

    path: str  # absolute
    format: str
    old: list[str]  # stored values before
    new: list[str]  # stored values after
    file_before: str  # whole-file fingerprints (`file_fingerprint`): the journal's fingerprint_before/_after
    file_after: str
    audio_fingerprint: str  # the audio payload's (`fingerprint`), the same before and after (verified)
    old_id3v1_genre: int | None = None  # an mp3's ID3v1 genre byte before (None: no ID3v1 tag)
    old_raw: list[bytes] = field(default_factory=list)  # the genre field's stored items, exactly (undo's input)
    new_raw: list[bytes] = field(default_factory=list)
    had_tag: bool = True  # False: an ID3 format whose file had no ID3 tag (chunk) before this write

    @property
    def fingerprint_before(self) -> str:
        """Deprecated name of `file_before`."""
        _renamed("WriteOutcome.fingerprint_before", "WriteOutcome.file_before")
        return self.file_before

    @property
    def fingerprint_after(self) -> str:
        """Deprecated name of `file_after`."""
        _renamed("WriteOutcome.fingerprint_after", "WriteOutcome.file_after")
        return self.file_after


def _renamed(old: str, new: str) -> None:
    warnings.warn(f"genretag.tags.{old} is deprecated and will be removed in genretag 0.4.0; use {new}",
                  DeprecationWarning, stacklevel=3)


def _no_checkpoint(step: str) -> None:
    """Nothing: what `_checkpoint` is outside the crash tests."""


#: Called with the name of each step of a safe write ("after_tmp_write", "after_modify",
#: "before_replace", "after_replace"). The crash tests (tests/tags/test_safe_write.py) set it, in the process
#: they kill, to a function that dies or pauses at one step; production code never changes it.
_checkpoint: Callable[[str], None] = _no_checkpoint


def is_read_only(st: os.stat_result, path: str) -> bool:
    """No write permission bit, or no access for this user (root ignores the bits)."""
    return not (st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) or not os.access(path, os.W_OK)


def write_problem(path: str | os.PathLike, st: os.stat_result) -> str | None:
    """Why a safe write of `path` would fail before it starts (the dry run reports the same), or None."""
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if is_read_only(st, os.fspath(path)):
        return "read-only file (permission denied)"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.access(folder, os.W_OK | os.X_OK):
        return "read-only folder (the temporary copy cannot be created; permission denied)"
    return owner_problem(st)


def owner_problem(st: os.stat_result) -> str | None:
    """Why the rewritten file could not keep `st`'s owner and group, or None.

    The new file is created by this user: giving it the old owner back needs CAP_CHOWN (root), and
    the old group needs the user to be in it. Without that the file would change hands, so the
    write is refused."""
    if _can_chown():
        return None
    if st.st_uid != os.geteuid():
        return (f"owned by another user (uid {st.st_uid}): a rewritten file would belong to uid {os.geteuid()}; "
                "left as it is (tag it as its owner or as root)")
    if st.st_gid != os.getegid() and st.st_gid not in os.getgroups():
        return (f"owned by group {st.st_gid}, which this user is not in: a rewritten file would change group; "
                "left as it is")
    return None


def _can_chown() -> bool:
    """Whether this process may give a file to another user (CAP_CHOWN in its effective set)."""
    if not hasattr(os, "geteuid"):
        return True
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & 1)  # bit 0: CAP_CHOWN
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def temp_name(path: Path) -> Path:
    """A new temporary name beside `path`, at most 50 bytes long whatever `path`'s name is."""
    return path.with_name(f"{TMP_MARK}{HOST_ID}-{os.getpid()}-{secrets.token_hex(8)}")


def write_genres_safely(
    path: str | os.PathLike,
    values: list[str],
    *,
    separator: str | None = None,
    keep_mtime: bool = False,
    before_replace: Callable[[WriteOutcome], None] | None = None,
    expect_file: str | None = None,
    times: tuple[int, int] | None = None,
    expect_audio: str | None = None,
    id3v1_genre: int | None = None,
    raw: list[bytes] | None = None,
    drop_empty_tag: bool = False,
) -> WriteOutcome:
    """Set the genre of `path` through a verified temporary copy and an atomic rename.

    `before_replace` (e.g. a journal append) runs once the new file is ready
    and fsynced, just before it replaces the original. When
    `expect_file` is given, the write is refused unless the file's
    whole-file fingerprint still matches it (undo uses this); when
    `expect_audio` is given, it is refused with ChangedSinceClassified unless
    the audio-payload fingerprint matches it (the one classified). With
    `keep_mtime`, the new file gets `times` (atime_ns, mtime_ns) -- taken by
    the caller before it read the file -- or else the file's times now.
    `id3v1_genre` sets an mp3's ID3v1 genre byte (undo: the byte as it was).
    `raw` (undo) is the genre field's exact stored items from an earlier
    `WriteOutcome.old_raw`: they are written instead of items built from
    `values`, so encodings and several frames come back as they were;
    `drop_empty_tag` removes an ID3 tag (chunk) the write leaves empty
    (undo of a write that added it).
    Raises TagError (one line); the original is untouched on any failure,
    including a write that cannot be verified.
    """
    # A symlink is followed: the file it points to gets the new tag, the link stays a link.
    path = Path(os.path.realpath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TagError("file not found") from None
    except OSError as e:
        raise TagError(e.strerror or str(e)) from None
    problem = write_problem(path, st)
    if problem:
        raise TagError(problem)
    writer = _lock_target(path)  # one writer per file at a time: a second run waits, then reads the new file
    tmp = temp_name(path)
    lock = -1
    try:
        st = os.fstat(writer)
        file_before, lock = _copy_hashing(path, tmp)
        if expect_file is not None and file_before != expect_file:
            raise TagError("file changed since it was last written by genretag")
        _checkpoint("after_tmp_write")
        audio_before = fingerprint(tmp)
        if expect_audio is not None and audio_before != expect_audio:
            raise ChangedSinceClassified("changed since classified")
        fmt = read_tags(tmp).format
        seen_before = _reader_view(str(tmp), fmt)
        before = set_genres(tmp, values, separator=separator, id3v1_genre=id3v1_genre, raw=raw,
                            drop_empty_tag=drop_empty_tag)
        _checkpoint("after_modify")
        after = read_tags(tmp)
        if raw is not None:
            if after.raw != list(raw):
                raise TagError("verification failed: the genre field does not read back as the stored bytes")
        else:
            want = stored_form(before, values, separator)
            if after.values != want:
                raise TagError(f"verification failed: genre reads back as {after.values!r}, not {want!r}")
        if after.others != before.others:
            raise TagError("verification failed: other tag fields would change; file left as it is")
        audio_after = fingerprint(tmp)
        if audio_after != audio_before:
            raise TagError("verification failed: the audio payload changed")
        _verify_as_read(str(tmp), fmt, seen_before)
        file_after = file_fingerprint(tmp)
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        tst = os.stat(tmp)
        if (tst.st_uid, tst.st_gid) != (st.st_uid, st.st_gid):
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except OSError as e:
                raise TagError(f"cannot keep the file's owner {st.st_uid}:{st.st_gid} ({e.strerror or e}); "
                               "left as it is") from None
            os.chmod(tmp, stat.S_IMODE(st.st_mode))  # chown clears set-user/group-ID bits
        _copy_xattrs(path, tmp)
        if keep_mtime:
            os.utime(tmp, ns=times or (st.st_atime_ns, st.st_mtime_ns))
        fsync_path(tmp)
        _unchanged_since(path, st)
        outcome = WriteOutcome(str(path), after.format, before.values, after.values, file_before, file_after,
                               audio_after, before.id3v1_genre, before.raw, after.raw,
                               not (GENRE_FIELDS[fmt].id3 and before.id3_version is None))
        if before_replace is not None:
            before_replace(outcome)  # the journal line, fsynced: the slow step, so it goes before the last check
        _checkpoint("before_replace")
        _unchanged_since(path, st)  # from here to the rename: one stat and one rename(2)
        os.replace(tmp, path)
    except TagError:
        _unlink_quietly(tmp)
        raise
    except FingerprintError as e:
        _unlink_quietly(tmp)
        raise TagError(str(e)) from None
    except FileNotFoundError:
        _unlink_quietly(tmp)
        raise TagError("file not found (vanished while writing)") from None
    except OSError as e:
        _unlink_quietly(tmp)
        raise TagError(e.strerror or str(e)) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise
    finally:
        if lock != -1:
            os.close(lock)
        os.close(writer)
    fsync_dir(path.parent)
    _checkpoint("after_replace")
    return outcome


def _reader_view(path: str, fmt: str) -> tuple[list, str | None, str]:
    """What a reader sees of `path`: every other tag field as mutagen decodes it, for MP4 what is wrong
    with its fragment offsets (None: nothing), and every audio packet as PyAV demuxes it."""
    fields = reader_fields(path, fmt)
    fragments = None
    if fmt == "mp4":
        with open(path, "rb") as f:
            try:
                fragments = mp4.fragment_problem(f)
            except Exception as e:  # noqa: BLE001 -- mutagen's atom errors: the file cannot be verified
                raise VerifyError(f"cannot verify the write: MP4 atoms unreadable ({one_line(e)})") from None
    return fields, fragments, audio_packets(path, fmt)


def _verify_as_read(tmp: str, fmt: str, before: tuple[list, str | None, str]) -> None:
    """Refuse the write unless a reader sees the copy as it saw the original (see `_reader_view`)."""
    fields_before, fragments_before, packets_before = before
    fields_after, fragments_after, packets_after = _reader_view(tmp, fmt)
    if fields_after != fields_before:
        changed = sorted({k for k, _ in set(fields_after) ^ set(fields_before)})
        raise TagError(f"verification failed: {', '.join(changed[:3]) or 'the tag fields'} would read differently; "
                       "file left as it is")
    if fragments_after and fragments_after != fragments_before:
        raise TagError(f"verification failed: {fragments_after}; file left as it is")
    if packets_after != packets_before:
        raise TagError("verification failed: the audio would demux differently; file left as it is")


def _copy_xattrs(src: Path, dst: Path) -> None:
    """Give the new file the original's extended attributes (user.*, and ACLs where this user may set them).

    The rename gives the name a new inode, which would otherwise have none. An attribute the
    file system or this user cannot set (trusted.*, security.* without the privilege) is left out.
    """
    if not hasattr(os, "listxattr"):
        return
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for name in names:
        try:
            os.setxattr(dst, name, os.getxattr(src, name))
        except OSError as e:
            log.debug("extended attribute %s of %s not copied: %s", name, src, e.strerror or e)


def _lock_target(path: Path) -> int:
    """Open `path` and hold an exclusive advisory lock on the file it names now.

    Two genretag runs (or a run and an undo) writing the same file would each
    see the other's rename as a change and refuse; holding this lock from the
    first read to the rename serialises them instead. A rename by the holder
    swaps the inode, so after waiting the lock is re-taken on the new file.
    The wait is bounded (LOCK_WAIT): a run stopped with Ctrl-Z, or stalled,
    while holding the lock makes this file an error, not a run that never ends.
    Raises TagError when the file cannot be opened or stays locked.
    """
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise TagError("file not found") from None
        except OSError as e:
            raise TagError(e.strerror or str(e)) from None
        deadline = time.monotonic() + LOCK_WAIT
        while not lock_fd(fd, blocking=False):
            if time.monotonic() >= deadline:
                os.close(fd)
                raise TagError(f"locked by another process for {LOCK_WAIT:g} s (a stopped or stalled genretag "
                               "run?); left as it is")
            time.sleep(0.05)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if same:
            return fd
        os.close(fd)


def _unchanged_since(path: Path, st: os.stat_result) -> None:
    """Refuse to replace a file that someone changed (or replaced) since genretag read it."""
    now = os.stat(path)
    if (now.st_size, now.st_mtime_ns, now.st_ctime_ns, now.st_ino) != \
            (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino):
        raise TagError("file changed while genretag was writing it; left as it is")


def _copy_hashing(src: Path, dst: Path) -> tuple[str, int]:
    """Copy src to a new file dst (created exclusively, owner-only, locked while the returned fd is open).

    Returns src's whole-file fingerprint and that fd.
    """
    import hashlib

    h = hashlib.sha256()
    n = 0
    lock = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        lock_fd(lock)
        with open(src, "rb") as fin, open(dst, "r+b") as fout:
            while block := fin.read(1 << 20):
                h.update(block)
                n += len(block)
                fout.write(block)
    except BaseException:
        os.close(lock)
        raise
    return f"{n}:{h.hexdigest()}", lock


def _owner_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _unlink_quietly(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def cleanup_stray_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files killed runs left in `folder`.

    Only genretag's own names, and only a temporary whose owner is provably
    gone: made on this host, its process not running and its lock free; made
    on another host (a shared folder) or named the old way, also untouched
    for STALE_AFTER seconds. A live run's temporary files are never touched.
    """
    removed = []
    now = time.time()
    try:
        with os.scandir(folder) as it:
            for e in it:
                m, old = TMP_RE.match(e.name), OLD_TMP_RE.match(e.name)
                if not (m or old) or not e.is_file(follow_symlinks=False):
                    continue
                here = m is not None and m.group(1) == HOST_ID
                pid = int(m.group(2) if m else old.group(1))
                if (here or old) and _owner_alive(pid):
                    continue
                try:
                    if not here and now - e.stat(follow_symlinks=False).st_mtime < STALE_AFTER:
                        continue
                    fd = os.open(e.path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    if lock_fd(fd, blocking=False):
                        os.unlink(e.path)
                        removed.append(Path(e.path))
                except OSError:
                    pass
                finally:
                    os.close(fd)
    except OSError:
        pass
    return removed
