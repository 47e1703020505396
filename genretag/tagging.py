"""Reading and writing the genre tag, one safe write at a time.

Each format keeps its genre in its native field: ID3v2 TCON (mp3, and the ID3
chunk of wav/aiff), the Vorbis comment GENRE (flac, ogg vorbis/opus), the MP4
`©gen` atom (m4a). Multiple genres are written as real multiple values where
the format has them; ID3v2.3 has none, so those files keep their version and
get the values joined with a separator.

A write never edits the user's file in place: it copies it to a hidden
temporary file in the same folder, changes the copy, re-reads the copy to
check the genre is what was intended and the audio payload is untouched,
fsyncs it, and only then renames it over the original. A crash at any
moment leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from genretag.fingerprint import FingerprintError, container_of, file_fingerprint, fingerprint

DEFAULT_NAMES: dict[str, str] = {
    "blues": "Blues", "classical": "Classical", "country": "Country", "disco": "Disco",
    "hiphop": "Hip-Hop", "jazz": "Jazz", "metal": "Metal", "pop": "Pop", "reggae": "Reggae",
    "rock": "Rock",
}
#: Joins several genres in formats with no multi-value field (ID3v2.3).
DEFAULT_SEPARATOR = "; "
#: Below this top-1 probability nothing is written: with 10 genres a random
#: guess scores 0.1, and a coin flip between two genres 0.5.
DEFAULT_MIN_CONFIDENCE = 0.5
POLICIES = ("keep-existing", "overwrite", "append")

# Actions of a TagPlan (and rows of `genretag tag`).
WRITE = "write"
SKIP_HAS_GENRE = "skip: has genre"
SKIP_BELOW = "skip: below confidence"
SKIP_UNCHANGED = "skip: unchanged"
ERROR = "error"

TMP_MARK = ".genretag-tmp-"
TMP_RE = re.compile(r"^\..+\.genretag-tmp-[0-9a-f]{16}$")


class TagError(Exception):
    """A file whose genre cannot be read or written; one line for the user."""


# --- genre names ----------------------------------------------------------------

def genre_name(label: str, names: dict[str, str] | None = None) -> str:
    """The readable name for a model label (overrides, then defaults, then Title Case)."""
    if names and label in names:
        return names[label]
    return DEFAULT_NAMES.get(label, label.replace("_", " ").title())


def load_genre_names(path: str | os.PathLike) -> dict[str, str]:
    """Read label -> name overrides: a JSON object, or `label=Name` lines (# comments)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
        if not all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in data.items()):
            raise ValueError(f"{path}: expected an object of label -> non-empty name strings")
        return {k.strip(): v.strip() for k, v in data.items()}
    names = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        label, sep, name = line.partition("=")
        if not sep or not label.strip() or not name.strip():
            raise ValueError(f"{path}:{n}: expected label=Name, got {line!r}")
        names[label.strip()] = name.strip()
    return names


# --- reading -------------------------------------------------------------------

_OGG_KINDS = {"OggVorbis": "ogg-vorbis", "OggOpus": "ogg-opus", "OggFLAC": "ogg-flac",
              "OggSpeex": "ogg-speex", "OggTheora": "ogg-theora"}


@dataclass
class GenreTags:
    """What a file holds in its genre field now."""

    format: str  # mp3, wav, aiff, flac, ogg-vorbis, ogg-opus, ..., mp4
    values: list[str]  # exactly as stored
    id3_version: int | None = None  # 3 or 4 for ID3-tagged formats that have a tag

    @property
    def multi_value(self) -> bool:
        """False only for ID3v2.3, which has no way to store several values."""
        return self.id3_version != 3


def _open_tags(path: str, translate: bool = False):
    """(format, mutagen object holding the tags (maybe None), ID3 version or None)."""
    import mutagen
    from mutagen import id3

    try:
        kind = container_of(path)
    except FileNotFoundError:
        raise TagError("file not found") from None
    except PermissionError:
        raise TagError("permission denied") from None
    except IsADirectoryError:
        raise TagError("is a directory") from None
    if kind is None:
        ext = Path(path).suffix.lower()
        kind = {".mp3": "mp3", ".m4a": "mp4", ".mp4": "mp4"}.get(ext)
    try:
        if kind == "mp3":
            try:
                tags = id3.ID3(path, translate=translate)
            except id3.ID3NoHeaderError:
                tags = None
            return "mp3", tags, _id3_version(tags)
        if kind in ("wav", "aiff"):
            from mutagen.aiff import AIFF
            from mutagen.wave import WAVE

            f = (WAVE if kind == "wav" else AIFF)(path, translate=translate)
            return kind, f, _id3_version(f.tags)
        if kind == "flac":
            from mutagen.flac import FLAC

            return "flac", FLAC(path), None
        if kind == "ogg":
            from mutagen.oggflac import OggFLAC
            from mutagen.oggopus import OggOpus
            from mutagen.oggspeex import OggSpeex
            from mutagen.oggvorbis import OggVorbis

            f = mutagen.File(path, options=[OggVorbis, OggOpus, OggFLAC, OggSpeex])
            if f is None:
                raise TagError("unsupported Ogg codec for tagging")
            return _OGG_KINDS.get(type(f).__name__, "ogg"), f, None
        if kind == "mp4":
            from mutagen.mp4 import MP4

            return "mp4", MP4(path), None
    except TagError:
        raise
    except mutagen.MutagenError as e:
        raise TagError(f"cannot read tags: {_one_line(e)}") from None
    except OSError as e:
        raise TagError(e.strerror or str(e)) from None
    raise TagError("format not supported for tagging")


def _id3_version(tags) -> int | None:
    return None if tags is None else int(tags.version[1])


def read_tags(path: str | os.PathLike) -> GenreTags:
    """The genre field of a file, raw. Raises TagError (one line)."""
    fmt, obj, version = _open_tags(os.fspath(path))
    return GenreTags(fmt, _stored_values(fmt, obj), version)


def _stored_values(fmt: str, obj) -> list[str]:
    if fmt == "mp3":
        frame = obj.get("TCON") if obj is not None else None
    elif fmt in ("wav", "aiff"):
        frame = obj.tags.get("TCON") if obj.tags is not None else None
    else:
        if obj.tags is None:
            return []
        key = "\xa9gen" if fmt == "mp4" else "genre"
        return [str(v) for v in obj.tags.get(key, [])]
    return [str(v) for v in frame.text] if frame is not None else []


def readable_values(tags: GenreTags, separator: str | None = None) -> list[str]:
    """The genres a person would see: ID3 numeric references resolved, joined values split."""
    values = tags.values
    if tags.id3_version is not None or tags.format == "mp3":
        from mutagen.id3 import TCON

        values = TCON(encoding=3, text=values).genres if values else []
    sep = effective_separator(tags, separator)
    return split_values(values, sep) if sep else [v for v in values if v.strip()]


def read_genres(path: str | os.PathLike, separator: str | None = None) -> list[str]:
    """The file's current genres as a list (see `readable_values`)."""
    return readable_values(read_tags(path), separator)


def effective_separator(tags: GenreTags, separator: str | None) -> str | None:
    """The separator for this file: the explicit one, the default for ID3v2.3, else none."""
    if separator:
        return separator
    return None if tags.multi_value else DEFAULT_SEPARATOR


def split_values(values: list[str], separator: str) -> list[str]:
    out = []
    for v in values:
        out.extend(p.strip() for p in v.split(separator) if p.strip())
    return out


# --- planning ------------------------------------------------------------------

@dataclass
class TagPlan:
    """What to do with one file, and why."""

    action: str  # WRITE, SKIP_*, ERROR
    new_values: list[str] = field(default_factory=list)
    proposed: list[str] = field(default_factory=list)
    confidence: float | None = None
    error: str | None = None


def proposed_genres(result, top_k: int = 1, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                    names: dict[str, str] | None = None) -> list[str]:
    """Readable names of the top-k labels at or above `min_confidence` (best first)."""
    ranked = result.top(top_k) if result.probabilities else [(result.genre, result.confidence or 0.0)]
    out: list[str] = []
    for label, p in ranked:
        if label is None or p < min_confidence:
            continue
        name = genre_name(label, names)
        if name.lower() not in (o.lower() for o in out):
            out.append(name)
    return out


def plan_tag(result, current: list[str], policy: str = "keep-existing",
             min_confidence: float = DEFAULT_MIN_CONFIDENCE, top_k: int = 1,
             names: dict[str, str] | None = None) -> TagPlan:
    """Decide what to write for one classified file, given its current (readable) genres."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r} (one of {', '.join(POLICIES)})")
    if result.error:
        return TagPlan(ERROR, error=result.error)
    proposed = proposed_genres(result, top_k, min_confidence, names)
    conf = result.confidence
    if not proposed:
        return TagPlan(SKIP_BELOW, proposed=[], confidence=conf)
    if policy == "keep-existing" and current:
        return TagPlan(SKIP_HAS_GENRE, proposed=proposed, confidence=conf)
    if policy == "append":
        have = {c.lower() for c in current}
        new = list(current) + [p for p in proposed if p.lower() not in have]
    else:
        new = proposed
    if new == list(current):
        return TagPlan(SKIP_UNCHANGED, new_values=new, proposed=proposed, confidence=conf)
    return TagPlan(WRITE, new_values=new, proposed=proposed, confidence=conf)


# --- writing -------------------------------------------------------------------

def stored_form(tags: GenreTags, values: list[str], separator: str | None = None) -> list[str]:
    """How `values` will be stored in this file: as they are, or joined into one value."""
    sep = effective_separator(tags, separator)
    if sep and len(values) > 1:
        return [sep.join(values)]
    return list(values)


def set_genres(path: str | os.PathLike, values: list[str], separator: str | None = None) -> GenreTags:
    """Change the genre field of `path` in place (no safety net: used on the temporary copy).

    An empty `values` removes the field. Returns the state before the change.
    """
    from mutagen import MutagenError
    from mutagen import id3

    path = os.fspath(path)
    fmt, obj, version = _open_tags(path)
    if version is not None and version < 3:  # ID3v2.2: mutagen can only write it as v2.4
        fmt, obj, _ = _open_tags(path, translate=True)
    before = GenreTags(fmt, _stored_values(fmt, obj), version)
    stored = stored_form(before, values, separator)
    try:
        if fmt in ("mp3", "wav", "aiff"):
            if fmt == "mp3":
                tags = obj if obj is not None else id3.ID3()
            else:
                if obj.tags is None:
                    obj.add_tags()
                tags = obj.tags
            v2 = 3 if version == 3 else 4
            tags.delall("TCON")
            if stored:
                tags.add(id3.TCON(encoding=1 if v2 == 3 else 3, text=stored))
            # v23_sep=None: other multi-value frames of a v2.3 tag are written back
            # null-separated, i.e. exactly as mutagen read them.
            if fmt == "mp3":
                tags.save(path, v1=1, v2_version=v2, v23_sep=None)
            else:
                obj.save(v2_version=v2, v23_sep=None)
        else:
            if obj.tags is None:
                obj.add_tags()
            key = "\xa9gen" if fmt == "mp4" else "GENRE"
            if stored:
                obj.tags[key] = stored
            elif key in obj.tags:
                del obj.tags[key]
            obj.save()
    except MutagenError as e:
        raise TagError(f"cannot write tags: {_one_line(e)}") from None
    return before


@dataclass
class WriteOutcome:
    """What one safe write did: the journal records exactly this."""

    path: str  # absolute
    format: str
    old: list[str]  # stored values before
    new: list[str]  # stored values after
    fingerprint_before: str  # whole-file fingerprints (see genretag.fingerprint)
    fingerprint_after: str
    audio_fingerprint: str


def _checkpoint(step: str) -> None:
    """Test hook: GENRETAG_TEST_CRASH_AT=<step> makes the process die (or pause) here."""
    if os.environ.get("GENRETAG_TEST_CRASH_AT") != step:
        return
    if os.environ.get("GENRETAG_TEST_CRASH_PAUSE"):
        import sys

        print(f"GENRETAG-PAUSED {step}", file=sys.stderr, flush=True)
        time.sleep(3600)
    os._exit(70)


def is_read_only(st: os.stat_result, path: str) -> bool:
    """No write permission bit, or no access for this user (root ignores the bits)."""
    return not (st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) or not os.access(path, os.W_OK)


def temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{secrets.token_hex(8)}")


def write_genres_safely(
    path: str | os.PathLike,
    values: list[str],
    separator: str | None = None,
    keep_mtime: bool = False,
    before_replace: Callable[[WriteOutcome], None] | None = None,
    expect_fingerprint: str | None = None,
    times: tuple[int, int] | None = None,
) -> WriteOutcome:
    """Set the genre of `path` through a verified temporary copy and an atomic rename.

    `before_replace` (e.g. a journal append) runs once the new file is ready
    and fsynced, just before it replaces the original. When
    `expect_fingerprint` is given, the write is refused unless the file's
    whole-file fingerprint still matches it (undo uses this). With
    `keep_mtime`, the new file gets `times` (atime_ns, mtime_ns) -- taken by
    the caller before it read the file -- or else the file's times now.
    Raises TagError (one line); the original is untouched on any failure.
    """
    # A symlink is followed: the file it points to gets the new tag, the link stays a link.
    path = Path(os.path.realpath(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TagError("file not found") from None
    except OSError as e:
        raise TagError(e.strerror or str(e)) from None
    if not stat.S_ISREG(st.st_mode):
        raise TagError("not a regular file")
    if is_read_only(st, str(path)):
        raise TagError("read-only file (permission denied)")
    tmp = temp_name(path)
    try:
        fp_before = _copy_hashing(path, tmp)
        if expect_fingerprint is not None and fp_before != expect_fingerprint:
            raise TagError("file changed since it was last written by genretag")
        _checkpoint("after_tmp_write")
        audio_before = fingerprint(path)
        before = set_genres(tmp, values, separator)
        _checkpoint("after_modify")
        after = read_tags(tmp)
        want = stored_form(before, values, separator)
        if after.values != want:
            raise TagError(f"verification failed: genre reads back as {after.values!r}, not {want!r}")
        audio_after = fingerprint(tmp)
        if audio_after != audio_before:
            raise TagError("verification failed: the audio payload changed")
        fp_after = file_fingerprint(tmp)
        os.chmod(tmp, stat.S_IMODE(st.st_mode))
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except OSError:
            pass
        if keep_mtime:
            os.utime(tmp, ns=times or (st.st_atime_ns, st.st_mtime_ns))
        _fsync_path(tmp)
        now = os.stat(path)
        if (now.st_size, now.st_mtime_ns, now.st_ino) != (st.st_size, st.st_mtime_ns, st.st_ino):
            raise TagError("file changed while genretag was writing it; left as it is")
        outcome = WriteOutcome(str(path), after.format, before.values, after.values, fp_before, fp_after,
                               audio_after)
        if before_replace is not None:
            before_replace(outcome)
        _checkpoint("before_replace")
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
    _fsync_dir(path.parent)
    _checkpoint("after_replace")
    return outcome


def _copy_hashing(src: Path, dst: Path) -> str:
    """Copy src to a new file dst (created exclusively, owner-only); return src's file fingerprint."""
    import hashlib

    h = hashlib.sha256()
    n = 0
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            fd = -1
            while block := fin.read(1 << 20):
                h.update(block)
                n += len(block)
                fout.write(block)
    finally:
        if fd != -1:
            os.close(fd)
    return f"{n}:{h.hexdigest()}"


def _fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def cleanup_stray_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove `.<name>.genretag-tmp-<16 hex>` files a killed run left in `folder`."""
    removed = []
    try:
        with os.scandir(folder) as it:
            for e in it:
                if TMP_RE.match(e.name) and e.is_file(follow_symlinks=False):
                    try:
                        os.unlink(e.path)
                        removed.append(Path(e.path))
                    except OSError:
                        pass
    except OSError:
        pass
    return removed


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return (msg[0] if msg else type(e).__name__)[:200]
