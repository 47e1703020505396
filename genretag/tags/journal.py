"""The tag-write journal, and undo.

Every genre write appends one JSON line (fsynced) *before* the new file
replaces the old one, so a crash can leave a line for a write that never
happened (undo sees the file still at `fingerprint_before` and skips it) but
never a write without a line. Undo walks the journal backwards and writes
the old values back through the same safe path, refusing any file that was
changed since genretag wrote it. Each undo is journalled too (`op: undo`),
so running undo twice does nothing the second time.

Paths are stored bytes-safe, as in every JSON line genretag writes: a file
name that is not valid UTF-8 gets `path_bytes`, its exact bytes in base64,
which undo opens; `path` then shows each undecodable byte as `\\xNN`, for
reading only. (Lines without `path_bytes` whose `path` holds JSON `\\udcXX`
escapes, Python's surrogateescape form, are read too.) A journal line that is not a
well-formed entry (corrupt, or edited by hand with wrong types) is reported
and counted by undo, and the other entries are still undone.

`old` and `new` are the genre values; a value whose stored bytes are not
UTF-8 holds them as `\\udcXX` escapes (surrogateescape). `old_raw` and
`new_raw` are the genre field's stored items exactly (ID3 frames, Vorbis
comments, MP4 atoms), in base64: undo writes `old_raw` back, so the stored
encoding, several TCON frames and non-UTF-8 text come back as they were
(a line without `old_raw`, from an older genretag, is restored from `old`).
`old_tag: false` marks a write that added the file's ID3 tag (chunk): undo
removes the tag again when the genre was its only frame.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from genretag.audio.containers import file_fingerprint, open_regular
from genretag.errors import FingerprintError
from genretag.fs import lock_fd, path_bytes, printable_path
from genretag.paths import data_dir
from genretag.tags.errors import TagError
from genretag.tags.fields import read_tags
from genretag.tags.safe_write import WriteOutcome, cleanup_stray_temps, write_genres_safely


def default_journal_path() -> Path:
    return data_dir() / "journal.jsonl"


def make_entry(outcome: WriteOutcome, op: str = "tag", undoes: str | None = None) -> dict:
    """The journal line for one write."""
    entry = {
        "id": uuid.uuid4().hex, "op": op, "path": printable_path(outcome.path),
        "fingerprint_before": outcome.file_before, "fingerprint_after": outcome.file_after,
        "old": outcome.old, "new": outcome.new, "format": outcome.format,
        "old_raw": [base64.b64encode(b).decode("ascii") for b in outcome.old_raw],
        "new_raw": [base64.b64encode(b).decode("ascii") for b in outcome.new_raw],
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    raw = path_bytes(outcome.path)
    if raw is not None:
        entry["path_bytes"] = raw
    if outcome.old_id3v1_genre is not None:  # an mp3's ID3v1 genre byte, which `old` cannot tell
        entry["old_id3v1_genre"] = outcome.old_id3v1_genre
    if not outcome.had_tag:
        entry["old_tag"] = False  # the write added the ID3 tag (chunk): undo removes it again when empty
    if undoes:
        entry["undoes"] = undoes
    return entry


def _exact_path(e: dict) -> str | None:
    """Put the name `path_bytes` holds into `path`; why it cannot be done, or None."""
    raw = e.get("path_bytes")
    if raw is None:
        return None
    if not isinstance(raw, str):
        return "'path_bytes' is not a string"
    try:
        e["path"] = os.fsdecode(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        return "'path_bytes' is not base64"
    return None


def append_entry(journal: str | os.PathLike, entry: dict) -> None:
    """Append one line and fsync; a file lock keeps lines of concurrent runs whole."""
    journal = Path(journal)
    journal.parent.mkdir(parents=True, exist_ok=True)
    # names are in `path_bytes` (see make_entry); backslashreplace keeps the line valid UTF-8 should any
    # other field hold a lone surrogate (json.loads reads the \udcXX escape back as the same one)
    line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
    # O_NONBLOCK: a FIFO without a reader fails at once (ENXIO) instead of blocking; anything but a
    # regular file is refused before a byte is written
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NONBLOCK", 0), 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        lock_fd(fd)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


_STR_FIELDS = ("path", "fingerprint_before", "fingerprint_after")


def entry_problem(e) -> str | None:
    """Why a parsed journal line is not an entry undo can act on, or None."""
    if not isinstance(e, dict):
        return "not a JSON object"
    for key in _STR_FIELDS:
        if key not in e or e[key] is None:
            return f"'{key}' is missing"
        if not isinstance(e[key], str) or not e[key]:
            return f"'{key}' is not a non-empty string"
    if e.get("op", "tag") not in ("tag", "undo"):
        return f"unknown op {e.get('op')!r}"
    for key in ("old", "new"):
        if key not in e or e[key] is None:
            return f"'{key}' is missing"
        if not isinstance(e[key], list) or not all(isinstance(v, str) for v in e[key]):
            return f"'{key}' is not a list of strings"
    for key in ("id", "undoes"):
        if e.get(key) is not None and not isinstance(e[key], str):
            return f"'{key}' is not a string"
    v1 = e.get("old_id3v1_genre")
    if v1 is not None and (type(v1) is not int or not 0 <= v1 <= 255):
        return "'old_id3v1_genre' is not a byte (0-255)"
    for key in ("old_raw", "new_raw"):
        if e.get(key) is not None and _raw_items(e[key]) is None:
            return f"'{key}' is not a list of base64 strings"
    return None


def _raw_items(value) -> list[bytes] | None:
    """The stored items a journal line's `old_raw`/`new_raw` holds, or None when it is not a list of base64."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    try:
        return [base64.b64decode(v, validate=True) for v in value]
    except (binascii.Error, ValueError):
        return None


@dataclass
class JournalProblem:
    """A journal line undo cannot use: where, and why."""

    line: int
    message: str
    path: str | None = None
    torn: bool = False  # the unterminated last line a crash mid-append leaves: not an error


def read_journal(journal: str | os.PathLike) -> tuple[list[dict], list[JournalProblem]]:
    """Well-formed entries (oldest first) and the lines that are not."""
    entries, problems = [], []
    with open_regular(journal) as f:  # a FIFO is refused, not waited on
        lines = f.read().split(b"\n")
    last = len(lines) - 1  # after the final newline: b"" (or the torn line of a crash)
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            e = json.loads(raw.decode("utf-8", "surrogateescape"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            torn = n == last + 1
            problems.append(JournalProblem(n, "unterminated last line (a crash while appending); skipped" if torn
                                           else "not valid JSON; skipped", torn=torn))
            continue
        why = (_exact_path(e) if isinstance(e, dict) else None) or entry_problem(e)
        if why:
            path = e.get("path") if isinstance(e, dict) and isinstance(e.get("path"), str) else None
            problems.append(JournalProblem(n, f"malformed entry: {why}; skipped", path))
            continue
        e["_line"] = n
        entries.append(e)
    return entries, problems


def read_entries(journal: str | os.PathLike) -> list[dict]:
    """All well-formed entries, oldest first (see `read_journal` for the others)."""
    return read_journal(journal)[0]


class JournalWriter:
    """The `before_replace` hook of `write_genres_safely` that records each write."""

    def __init__(self, journal: str | os.PathLike | None = None, op: str = "tag") -> None:
        self.path = Path(journal) if journal else default_journal_path()
        self.op = op
        self.undoes: str | None = None
        self.last: dict | None = None

    def __call__(self, outcome: WriteOutcome) -> None:
        self.last = make_entry(outcome, self.op, self.undoes)
        try:
            append_entry(self.path, self.last)
        except OSError as e:
            raise TagError(f"cannot write the journal {self.path}: {e.strerror or e}") from None


# Statuses of an UndoItem (and the first word of each line of `genretag undo`).
RESTORED = "restored"
WOULD_RESTORE = "would restore"  # a dry run
SKIPPED = "skipped"  # already restored, or already holding its old genre
REFUSED = "refused"  # changed since genretag wrote it: not touched
FAILED = "error"  # the file could not be read or written
BAD_LINE = "bad journal line"  # path is `journal:line`; the other entries are still undone
TORN_LINE = "warning"  # the unterminated last line a crash mid-append leaves: not an error
#: Statuses that name a journal line, not a file (nouns: "2 bad journal lines", where the others are verbs).
LINE_STATUSES = (BAD_LINE, TORN_LINE)


@dataclass
class UndoItem:
    """What undo did (or would do) for one journal entry."""

    path: str
    status: str  # RESTORED, WOULD_RESTORE, SKIPPED, REFUSED, FAILED, BAD_LINE, TORN_LINE
    message: str = ""
    old: list[str] | None = None
    new: list[str] | None = None


def undo(journal: str | os.PathLike | None = None, dry_run: bool = False,
         keep_mtime: bool = False) -> Iterator[UndoItem]:
    """Restore the old genre of every journalled write, newest first.

    A file is restored only while its whole-file fingerprint is the one
    genretag left (or one an earlier undo produced for it); otherwise it is
    refused, unless its genre already is the old one (then it is skipped).
    """
    jpath = Path(journal) if journal else default_journal_path()
    entries, problems = read_journal(jpath)
    for p in problems:
        where = f"{jpath}:{p.line}" + (f" ({p.path})" if p.path else "")
        yield UndoItem(where, TORN_LINE if p.torn else BAD_LINE, p.message)
    undone = {e.get("undoes") for e in entries if e.get("op") == "undo"}
    by_id = {e.get("id"): e for e in entries if e.get("id")}
    # whole-file fingerprint an undo produced -> the one it stands for (the state before the write)
    aliases: dict[str, dict[str, str]] = {}
    for e in entries:
        target = by_id.get(e.get("undoes"))
        if e.get("op") == "undo" and target:
            aliases.setdefault(e["path"], {})[e["fingerprint_after"]] = target["fingerprint_before"]
    virtual: dict[str, str | None] = {}  # path -> the whole-file fingerprint it is (logically) at now
    file_now: dict[str, str] = {}  # path -> its actual whole-file fingerprint
    times: dict[str, tuple[int, int]] = {}  # path -> (atime, mtime) before undo read it
    writer = JournalWriter(jpath, op="undo")
    cleaned: set[str] = set()
    for e in reversed(entries):
        if e.get("op", "tag") != "tag":
            continue
        path = e["path"]
        if e.get("id") in undone:
            yield UndoItem(path, SKIPPED, "already restored", e.get("old"), e.get("new"))
            continue
        if path not in virtual:
            try:
                st = os.stat(path)
                times[path] = (st.st_atime_ns, st.st_mtime_ns)
                file_fp = file_fingerprint(path)
            except FileNotFoundError:
                yield UndoItem(path, FAILED, "file not found")
                virtual[path] = None
                continue
            except FingerprintError as err:
                yield UndoItem(path, FAILED, str(err))
                virtual[path] = None
                continue
            file_now[path] = file_fp
            seen = set()
            while file_fp in aliases.get(path, {}) and file_fp not in seen:
                seen.add(file_fp)
                file_fp = aliases[path][file_fp]
            virtual[path] = file_fp
        current = virtual[path]
        if current is None:
            yield UndoItem(path, FAILED, "file not readable")
            continue
        if current != e["fingerprint_after"]:
            if current == e["fingerprint_before"]:
                yield UndoItem(path, SKIPPED, "already restored (or never written)", e["old"], e["new"])
                continue
            try:
                now = read_tags(path).values
            except TagError:
                now = None
            if now == e["old"]:
                yield UndoItem(path, SKIPPED, "already has its old genre", e["old"], e["new"])
                continue
            yield UndoItem(path, REFUSED, "changed since genretag wrote it (fingerprint differs); not touched",
                           e["old"], e["new"])
            continue
        if dry_run:
            virtual[path] = e["fingerprint_before"]
            yield UndoItem(path, WOULD_RESTORE, "", e["old"], e["new"])
            continue
        folder = os.path.dirname(path)
        if folder not in cleaned:
            cleaned.add(folder)
            cleanup_stray_temps(folder)
        writer.undoes = e.get("id")
        try:
            # values are the exact stored form, so no separator: they are written back as they were
            raw = _raw_items(e["old_raw"]) if e.get("old_raw") is not None else None
            out = write_genres_safely(path, list(e["old"]), keep_mtime=keep_mtime, before_replace=writer,
                                      expect_file=file_now[path], times=times.get(path),
                                      id3v1_genre=e.get("old_id3v1_genre"), raw=raw,
                                      drop_empty_tag=e.get("old_tag") is False)
        except TagError as err:
            virtual[path] = None
            yield UndoItem(path, FAILED, str(err), e["old"], e["new"])
            continue
        aliases.setdefault(path, {})[out.file_after] = e["fingerprint_before"]
        file_now[path] = out.file_after
        virtual[path] = e["fingerprint_before"]
        yield UndoItem(path, RESTORED, "", e["old"], e["new"])
