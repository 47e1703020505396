"""Each format's genre field: reading it, and setting it on a file.

Each format keeps its genre in its native field: ID3v2 TCON (mp3, and the ID3
chunk of wav/aiff), the Vorbis comment GENRE (flac, ogg vorbis/opus), the MP4
`©gen` atom (m4a). Multiple genres are written as real multiple values where
the format has them; ID3v2.3 and v2.2 have none, so those files keep their
version and get the values joined with a separator.

A tag is always read whole: `read_tags` returns the genre and the raw bytes
of every other field, and refuses (DamagedTagError) a tag it cannot account
for byte by byte. The writers (`genretag.tags.id3`, `.vorbis`, `.mp4`) keep
those bytes, so the safe write can check that nothing but the genre changed.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from genretag.audio.containers import container_of, open_regular
from genretag.errors import one_line
from genretag.tags import id3, mp4, vorbis
from genretag.tags.errors import ChangedSinceClassified, DamagedTagError, TagError

__all__ = ["ChangedSinceClassified", "DamagedTagError", "GENRE_FIELDS", "GenreTags", "TagError", "read_genres",
           "read_tags", "readable_values", "set_genres", "stored_form"]

log = logging.getLogger(__name__)

#: Joins several genres in formats with no multi-value field (ID3v2.3).
DEFAULT_SEPARATOR = "; "


# --- reading -------------------------------------------------------------------

@dataclass
class GenreTags:
    """What a file holds in its genre field now, and every other tag field, raw."""

    format: str  # mp3, wav, aiff, flac, ogg-vorbis, ogg-opus, mp4
    values: list[str]  # exactly as stored
    id3_version: int | None = None  # 2, 3 or 4 for ID3-tagged formats that have a tag
    others: list[bytes] = field(default_factory=list, repr=False)  # every other field's bytes

    @property
    def multi_value(self) -> bool:
        """False only for ID3v2.3 (and v2.2), which have no way to store several values."""
        return self.id3_version not in (2, 3)


@dataclass(frozen=True)
class GenreField:
    """One format's genre field: how to parse the whole tag, and how to write it back."""

    key: str  # the field, for messages and docs
    id3: bool  # ID3 semantics: version, "(17)" references, separator
    parse: Callable[[BinaryIO, str], Any]  # (open file, format) -> parsed tag with .genres() / .others()
    write: Callable[[str, Any, list[str]], None]  # (path, parsed tag, stored values)


def _id3_in_iff(f, fmt: str):
    """The ID3 chunk of a wav/aiff file, as mutagen's chunk object (None when absent)."""
    from mutagen._iff import InvalidChunk

    if fmt == "wav" and f.read(4) == b"RF64":  # 64-bit sizes in a ds64 chunk: mutagen reads RIFF only
        raise TagError("unsupported format for tagging: RF64 wav")
    f.seek(0)
    try:
        if fmt == "wav":
            from mutagen.wave import _WaveFile

            iff, key = _WaveFile(f), "id3"
        else:
            from mutagen.aiff import AIFFFile

            iff, key = AIFFFile(f), "ID3"
    except (InvalidChunk, EOFError, struct.error, ValueError) as e:
        raise DamagedTagError(f"damaged {fmt} chunks ({one_line(e)})") from None
    _check_chunk_walk(f, iff.root, fmt)
    return iff, (iff[key] if key in iff else None)


def _check_chunk_walk(f, root, fmt: str) -> None:
    """The chunks must fill the file exactly: mutagen stops at the first chunk header it cannot read,
    so a chunk cut off or shifted (bytes inserted or lost before it) would be silently missing, and a
    write would add a second ID3 chunk beside the one not seen. A pad byte more or less is accepted."""
    chunks = list(root.subchunks())
    walked = chunks[-1].data_offset + chunks[-1].data_size + chunks[-1].padding() if chunks else root.data_offset + 4
    stated = root.data_offset + root.data_size
    size = f.seek(0, os.SEEK_END)
    if abs(walked - stated) > 1 or abs(size - stated) > 1:
        raise DamagedTagError(f"damaged {fmt} chunks: they cover {walked} bytes, the header says {stated}, "
                              f"the file has {size}")


@dataclass
class _Id3File:
    tag: id3.Id3Tag
    extra: list[bytes]  # what else the file's tags hold (ID3v1 but its genre byte; other IFF chunks)
    v1_at: int | None = None  # offset of an ID3v1 tag (mp3)

    def genres(self) -> list[str]:
        return self.tag.genres()

    def others(self) -> list[bytes]:
        return self.tag.others() + self.extra


def _parse_id3(f, fmt: str) -> _Id3File:
    if fmt == "mp3":
        f.seek(0)
        head = f.read(id3.HEADER)
        tag = id3.parse(head + f.read(_id3_total(head) - len(head))) if head[:3] == b"ID3" else id3.Id3Tag(4)
        end = f.seek(0, os.SEEK_END)
        extra, v1_at = [], None
        if end >= 128 + tag.size:
            f.seek(end - 128)
            v1 = f.read(128)
            if v1[:3] == b"TAG":
                extra, v1_at = [b"ID3v1" + v1[:127]], end - 128
        return _Id3File(tag, extra, v1_at)
    iff, chunk = _id3_in_iff(f, fmt)
    extra = []
    for c in iff.root.subchunks():
        if c is chunk or c.id in ("data", "SSND"):
            continue
        f.seek(c.data_offset)
        extra.append(c.id.encode("latin-1") + f.read(c.data_size))
    if chunk is None:
        return _Id3File(id3.Id3Tag(4), extra)
    f.seek(chunk.data_offset)
    data = f.read(chunk.data_size)
    return _Id3File(id3.parse(data[:_id3_total(data)], "ID3 chunk"), extra)


def _id3_total(head: bytes) -> int:
    try:
        return id3.HEADER + id3.syncsafe(head[6:10]) + (id3.HEADER if head[3] == 4 and head[5] & 0x10 else 0)
    except (ValueError, IndexError):
        raise DamagedTagError("ID3v2 tag: damaged header") from None


def _write_id3(path: str, fmt: str, parsed: _Id3File, values: list[str]) -> None:
    from mutagen._util import resize_bytes

    tag = parsed.tag
    with open(path, "r+b") as f:
        if fmt == "mp3":
            if tag.size or values:
                data = id3.render(tag, values, min_size=tag.size)
                if len(data) > tag.size:
                    data = id3.render(tag, values, min_size=len(data) + 1024)
                    resize_bytes(f, tag.size, len(data), 0)
                f.seek(0)
                f.write(data)
            if parsed.v1_at is not None:
                f.seek(-1, os.SEEK_END)
                f.write(bytes([_v1_genre(values)]))
            return
        iff, chunk = _id3_in_iff(f, fmt)
        if chunk is None and not values:
            return
        data = id3.render(tag, values, min_size=chunk.data_size if chunk is not None else 0)
        if chunk is None or len(data) > chunk.data_size:
            data = id3.render(tag, values, min_size=len(data) + 1024)
            if chunk is None:
                iff.insert_chunk("id3" if fmt == "wav" else "ID3")
                chunk = _id3_in_iff(f, fmt)[1]
                if chunk is None:
                    raise DamagedTagError(f"damaged {fmt} chunks: a new ID3 chunk cannot be found again")
            chunk.resize(len(data))
        f.seek(chunk.data_offset)
        f.write(data)


def _v1_genre(values: list[str]) -> int:
    """The ID3v1 genre byte for the first value (255: none of the 192 ID3v1 genres)."""
    from mutagen._constants import GENRES

    if values:
        first = TCON_genres(values)[:1]
        low = [g.lower() for g in GENRES]
        if first and first[0].lower() in low:
            return low.index(first[0].lower())
    return 255


def TCON_genres(values: list[str]) -> list[str]:  # noqa: N802 -- mutagen's name
    """ID3 "(17)"-style references resolved to names, as mutagen's TCON.genres does."""
    from mutagen.id3 import TCON

    return TCON(encoding=3, text=values).genres if values else []


def _parse_flac(f, fmt: str):
    f.seek(0)
    head = f.read(id3.HEADER)
    return vorbis.parse_flac(f, _id3_total(head) if head[:3] == b"ID3" else 0)


def _write_flac(path: str, parsed, values: list[str]) -> None:
    with open(path, "r+b") as f:
        vorbis.write_flac(f, parsed, values)


GENRE_FIELDS: dict[str, GenreField] = {
    "mp3": GenreField("ID3v2 TCON", True, _parse_id3, lambda p, t, v: _write_id3(p, "mp3", t, v)),
    "wav": GenreField("ID3v2 TCON", True, _parse_id3, lambda p, t, v: _write_id3(p, "wav", t, v)),
    "aiff": GenreField("ID3v2 TCON", True, _parse_id3, lambda p, t, v: _write_id3(p, "aiff", t, v)),
    "flac": GenreField("Vorbis GENRE", False, _parse_flac, _write_flac),
    "ogg-vorbis": GenreField("Vorbis GENRE", False, vorbis.parse_ogg,
                             lambda p, t, v: vorbis.write_ogg(p, "ogg-vorbis", t, v)),
    "ogg-opus": GenreField("Vorbis GENRE", False, vorbis.parse_ogg,
                           lambda p, t, v: vorbis.write_ogg(p, "ogg-opus", t, v)),
    "mp4": GenreField("MP4 \xa9gen", False, lambda f, fmt: mp4.parse(f), mp4.write),
}


def _format_of(path: str, f) -> str:
    try:
        kind = container_of(path)
    except OSError as e:
        raise TagError(e.strerror or str(e)) from None
    if kind is None:
        kind = {".mp3": "mp3", ".m4a": "mp4", ".mp4": "mp4"}.get(Path(path).suffix.lower())
    if kind == "ogg":
        kind = vorbis.ogg_kind(f)
        if kind is None:
            raise TagError("unsupported Ogg codec for tagging (only Vorbis and Opus)")
    if kind not in GENRE_FIELDS:
        raise TagError("format not supported for tagging")
    return kind


def _parse(path: str) -> tuple[str, Any]:
    """(format, parsed whole tag). Raises TagError (one line), DamagedTagError for incomplete tags."""
    try:
        with open_regular(path) as f:  # a FIFO is refused, not waited on
            fmt = _format_of(path, f)
            return fmt, GENRE_FIELDS[fmt].parse(f, fmt)
    except TagError:
        raise
    except FileNotFoundError:
        raise TagError("file not found") from None
    except PermissionError:
        raise TagError("permission denied") from None
    except IsADirectoryError:
        raise TagError("is a directory") from None
    except OSError as e:
        raise TagError(e.strerror or str(e)) from None
    except (EOFError, struct.error, ValueError, IndexError) as e:
        raise DamagedTagError(f"cannot read tags: {one_line(e)}") from None
    except Exception as e:  # a parser's own failure on a file it did not expect: refuse the file, keep the trace
        log.debug("reading the tags of %r failed", path, exc_info=True)
        raise DamagedTagError(f"cannot read tags: {one_line(e)}") from None


def _state(fmt: str, parsed) -> GenreTags:
    version = parsed.tag.major if isinstance(parsed, _Id3File) and parsed.tag.size else None
    return GenreTags(fmt, parsed.genres(), version, parsed.others())


def read_tags(path: str | os.PathLike) -> GenreTags:
    """The genre field of a file, raw, and every other field. Raises TagError (one line)."""
    return _state(*_parse(os.fspath(path)))


def readable_values(tags: GenreTags, separator: str | None = None) -> list[str]:
    """The genres a person would see: ID3 numeric references resolved, joined values split."""
    values = tags.values
    if GENRE_FIELDS[tags.format].id3:
        values = TCON_genres(values)
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


# --- writing -------------------------------------------------------------------

def stored_form(tags: GenreTags, values: list[str], separator: str | None = None) -> list[str]:
    """How `values` will be stored in this file: as they are, or joined into one value."""
    sep = effective_separator(tags, separator)
    if sep and len(values) > 1:
        return [sep.join(values)]
    return list(values)


def set_genres(path: str | os.PathLike, values: list[str], separator: str | None = None) -> GenreTags:
    """Change the genre field of `path` in place (no safety net: used on the temporary copy).

    Every other field keeps its bytes. An empty `values` removes the field.
    Returns the state before the change.
    """
    from mutagen import MutagenError

    path = os.fspath(path)
    fmt, parsed = _parse(path)
    before = _state(fmt, parsed)
    try:
        GENRE_FIELDS[fmt].write(path, parsed, stored_form(before, values, separator))
    except TagError:
        raise
    except (MutagenError, EOFError, struct.error, ValueError) as e:
        raise TagError(f"cannot write tags: {one_line(e)}") from None
    except Exception as e:  # mutagen's layout code on a file it did not expect (only the copy is touched)
        log.debug("writing the tags of %r failed", path, exc_info=True)
        raise TagError(f"cannot write tags: {one_line(e)}") from None
    return before
