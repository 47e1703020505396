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
from genretag.deprecation import deprecated, no_attribute
from genretag.errors import one_line
from genretag.tags import id3, mp4, vorbis
from genretag.tags.errors import DamagedTagError, TagError

__all__ = ["GENRE_FIELDS", "GenreTags", "read_genres", "read_tags", "readable_values", "set_genres", "stored_form"]

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
    id3v1_genre: int | None = None  # the genre byte of an mp3's ID3v1 tag, as stored (None: no ID3v1 tag)
    #: genres held where genretag reads but never writes: an mp3's APEv2 `Genre`, a wav's RIFF INFO `IGNR`,
    #: the TCON of an ID3v2 tag in front of a FLAC stream
    other_genres: list[str] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list, repr=False)  # the genre field itself: its frames/comments/atoms

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
    write: Callable[[str, Any, list[str], list[bytes] | None], None]  # (path, parsed tag, stored values, raw)


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
    v1_genre: int | None = None  # its genre byte
    other_genres: list[str] = field(default_factory=list)  # APEv2 Genre (mp3), RIFF INFO IGNR (wav)
    v1_write: int | None = None  # the genre byte a write puts in the ID3v1 tag (None: from the values)

    def genres(self) -> list[str]:
        return self.tag.genres()

    def genre_raw(self) -> list[bytes]:
        return self.tag.genre_raw()

    def others(self) -> list[bytes]:
        return self.tag.others() + self.extra


def _parse_id3(f, fmt: str) -> _Id3File:
    if fmt == "mp3":
        f.seek(0)
        head = f.read(id3.HEADER)
        tag = id3.parse(head + f.read(_id3_total(head) - len(head))) if head[:3] == b"ID3" else id3.Id3Tag(4)
        end = f.seek(0, os.SEEK_END)
        extra, v1_at, v1_genre = [], None, None
        if end >= 128 + tag.size:
            f.seek(end - 128)
            v1 = f.read(128)
            if v1[:3] == b"TAG":
                extra, v1_at, v1_genre = [b"ID3v1" + v1[:127]], end - 128, v1[127]
        return _Id3File(tag, extra, v1_at, v1_genre, _ape_genres(f, end - 128 if v1_at is not None else end))
    iff, chunk = _id3_in_iff(f, fmt)
    extra, info = [], []
    for c in iff.root.subchunks():
        if c is chunk or c.id in ("data", "SSND"):
            continue
        f.seek(c.data_offset)
        extra.append(c.id.encode("latin-1") + f.read(c.data_size))
        if fmt == "wav" and c.id == "LIST":
            info += _riff_info_genres(extra[-1][4:])
    if chunk is None:
        return _Id3File(id3.Id3Tag(4), extra, other_genres=info)
    f.seek(chunk.data_offset)
    data = f.read(chunk.data_size)
    return _Id3File(id3.parse(data[:_id3_total(data)], "ID3 chunk"), extra, other_genres=info)


def _riff_info_genres(body: bytes) -> list[str]:
    """The `IGNR` of a RIFF `LIST` chunk of type `INFO` (read only; [] when absent or unreadable)."""
    if body[:4] != b"INFO":
        return []
    pos = 4
    while pos + 8 <= len(body):
        cid, n = body[pos:pos + 4], int.from_bytes(body[pos + 4:pos + 8], "little")
        if cid == b"IGNR":
            text = _text(body[pos + 8:pos + 8 + n].split(b"\0")[0]).strip()
            return [text] if text else []
        pos += 8 + n + (n & 1)
    return []


def _id3_total(head: bytes) -> int:
    try:
        return id3.HEADER + id3.syncsafe(head[6:10]) + (id3.HEADER if head[3] == 4 and head[5] & 0x10 else 0)
    except (ValueError, IndexError):
        raise DamagedTagError("ID3v2 tag: damaged header") from None


def _write_id3(path: str, fmt: str, parsed: _Id3File, values: list[str], raw: list[bytes] | None = None) -> None:
    from mutagen._util import resize_bytes

    tag = parsed.tag
    with open(path, "r+b") as f:
        if fmt == "mp3":
            if tag.size or values or raw:
                data = id3.render(tag, values, min_size=tag.size, raw=raw)
                if len(data) > tag.size:
                    data = id3.render(tag, values, min_size=len(data) + 1024, raw=raw)
                    resize_bytes(f, tag.size, len(data), 0)
                f.seek(0)
                f.write(data)
            if parsed.v1_at is not None:
                f.seek(-1, os.SEEK_END)
                f.write(bytes([_v1_genre(values) if parsed.v1_write is None else parsed.v1_write]))
            return
        iff, chunk = _id3_in_iff(f, fmt)
        if chunk is None and not values and not raw:
            return
        data = id3.render(tag, values, min_size=chunk.data_size if chunk is not None else 0, raw=raw)
        if chunk is None or len(data) > chunk.data_size:
            data = id3.render(tag, values, min_size=len(data) + 1024, raw=raw)
            if chunk is None:
                iff.insert_chunk("id3" if fmt == "wav" else "ID3")
                chunk = _id3_in_iff(f, fmt)[1]
                if chunk is None:
                    raise DamagedTagError(f"damaged {fmt} chunks: a new ID3 chunk cannot be found again")
            chunk.resize(len(data))
        f.seek(chunk.data_offset)
        f.write(data)


def _drop_empty_id3(path: str, fmt: str) -> None:
    """Remove an ID3 tag (mp3) or chunk (wav, aiff) that holds no frame."""
    from mutagen._util import resize_bytes

    parsed = _parse(path)[1]
    if parsed.tag.frames or not parsed.tag.size:
        return
    with open(path, "r+b") as f:
        if fmt == "mp3":
            resize_bytes(f, parsed.tag.size, 0, 0)
            return
        chunk = _id3_in_iff(f, fmt)[1]
        if chunk is not None:
            chunk.delete()


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
    """ID3 "(17)"-style references resolved to names, as mutagen's TCON.genres does.

    The reference 255 (`(255)`, `255`) means "no genre" in ID3v1 and is dropped (mutagen would call it
    `Unknown`)."""
    from mutagen.id3 import TCON

    values = [v for v in values if v.strip() not in ("(255)", "255")]
    return TCON(encoding=3, text=values).genres if values else []


def _v1_name(byte: int | None) -> list[str]:
    """The genre an ID3v1 genre byte names ([] for 255, "none", and for bytes past the list)."""
    from mutagen._constants import GENRES

    return [GENRES[byte]] if byte is not None and byte < len(GENRES) else []


def _text(raw: bytes) -> str:
    """UTF-8, else Latin-1 (what RIFF INFO writers use): never U+FFFD, which `--append` would write back."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _ape_genres(f, end: int) -> list[str]:
    """The `Genre` values of an APEv2 tag ending at `end` ([] when there is none or it cannot be read).

    genretag does not write APEv2; it only reads the genre there, so that a file whose genre lives
    only in APEv2 counts as having one."""
    if end < 32:
        return []
    f.seek(end - 32)
    footer = f.read(32)
    if footer[:8] != b"APETAGEX":
        return []
    size, count = struct.unpack("<II", footer[12:20])
    if not 32 <= size <= min(end, 1 << 24):
        return []
    f.seek(end - size)
    body, pos = f.read(size - 32), 0
    for _ in range(count):
        if pos + 8 > len(body):
            break
        vlen, flags = struct.unpack_from("<II", body, pos)
        key_end = body.find(b"\0", pos + 8)
        if key_end < 0 or key_end + 1 + vlen > len(body):
            break
        key, value = body[pos + 8:key_end], body[key_end + 1:key_end + 1 + vlen]
        pos = key_end + 1 + vlen
        if key.lower() == b"genre" and not flags & 0x6:  # a text item (not binary, not a link)
            text = _text(value)
            return [v.strip() for v in text.split("\0") if v.strip()]
    return []


def _parse_flac(f, fmt: str):
    f.seek(0)
    head = f.read(id3.HEADER)
    if head[:3] != b"ID3":
        return vorbis.parse_flac(f, 0)
    total = _id3_total(head)
    meta = vorbis.parse_flac(f, total)
    f.seek(0)
    try:  # an ID3v2 tag in front of the stream: its genre is read (never written), for --keep-existing
        meta.front_genres = TCON_genres(id3.parse(f.read(total)).genres())
    except DamagedTagError:
        meta.front_genres = []
    return meta


def _write_flac(path: str, parsed, values: list[str], raw: list[bytes] | None = None) -> None:
    with open(path, "r+b") as f:
        vorbis.write_flac(f, parsed, values, raw)


GENRE_FIELDS: dict[str, GenreField] = {
    "mp3": GenreField("ID3v2 TCON", True, _parse_id3, lambda p, t, v, r: _write_id3(p, "mp3", t, v, r)),
    "wav": GenreField("ID3v2 TCON", True, _parse_id3, lambda p, t, v, r: _write_id3(p, "wav", t, v, r)),
    "aiff": GenreField("ID3v2 TCON", True, _parse_id3, lambda p, t, v, r: _write_id3(p, "aiff", t, v, r)),
    "flac": GenreField("Vorbis GENRE", False, _parse_flac, _write_flac),
    "ogg-vorbis": GenreField("Vorbis GENRE", False, vorbis.parse_ogg,
                             lambda p, t, v, r: vorbis.write_ogg(p, "ogg-vorbis", t, v, r)),
    "ogg-opus": GenreField("Vorbis GENRE", False, vorbis.parse_ogg,
                           lambda p, t, v, r: vorbis.write_ogg(p, "ogg-opus", t, v, r)),
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
    if isinstance(parsed, _Id3File):
        return GenreTags(fmt, parsed.genres(), version, parsed.others(), id3v1_genre=parsed.v1_genre,
                         other_genres=list(parsed.other_genres), raw=parsed.genre_raw())
    front = getattr(parsed, "front_genres", [])  # FLAC: an ID3v2 tag in front of the stream
    return GenreTags(fmt, parsed.genres(), version, parsed.others(), other_genres=list(front),
                     raw=parsed.genre_raw())


def read_tags(path: str | os.PathLike) -> GenreTags:
    """The genre field of a file, raw, and every other field. Raises TagError (one line)."""
    return _state(*_parse(os.fspath(path)))


def readable_values(tags: GenreTags, separator: str | None = None) -> list[str]:
    """The genres a person would see: ID3 numeric references resolved, joined values split.

    A file without a genre in its native field shows the genre held elsewhere (an mp3's APEv2 tag, or
    else its ID3v1 byte; a wav's RIFF INFO; an ID3v2 tag in front of FLAC): that is its current genre
    (for `--keep-existing`, `--append` and the dry run)."""
    values = tags.values
    if GENRE_FIELDS[tags.format].id3:
        values = TCON_genres(values)
    sep = effective_separator(tags, separator)
    out = split_values(values, sep) if sep else [v for v in values if v.strip()]
    return out or list(tags.other_genres) or _v1_name(tags.id3v1_genre)


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


def set_genres(path: str | os.PathLike, values: list[str], separator: str | None = None,
               id3v1_genre: int | None = None, raw: list[bytes] | None = None,
               drop_empty_tag: bool = False) -> GenreTags:
    """Change the genre field of `path` in place (no safety net: used on the temporary copy).

    Every other field keeps its bytes. An empty `values` removes the field.
    An mp3's ID3v1 tag gets the genre byte of the first value (255 when it
    is none of the ID3v1 genres), or `id3v1_genre` when given (undo gives
    back the byte as it was). `raw` (undo) is the genre field's exact stored
    items (`GenreTags.raw` of an earlier state), written instead of items
    built from `values`. With `drop_empty_tag` (undo of a write that added
    the tag), an ID3 tag or chunk left with no frame is removed whole.
    Returns the state before the change.
    """
    from mutagen import MutagenError

    path = os.fspath(path)
    fmt, parsed = _parse(path)
    before = _state(fmt, parsed)
    if isinstance(parsed, _Id3File):  # from the values before ID3v2.3 joins them: its first genre
        parsed.v1_write = _v1_genre(values) if id3v1_genre is None else id3v1_genre
    try:
        GENRE_FIELDS[fmt].write(path, parsed, stored_form(before, values, separator), raw)
        if drop_empty_tag and GENRE_FIELDS[fmt].id3:
            _drop_empty_id3(path, fmt)
    except TagError:
        raise
    except (MutagenError, EOFError, struct.error, ValueError) as e:
        raise TagError(f"cannot write tags: {one_line(e)}") from None
    except Exception as e:  # mutagen's layout code on a file it did not expect (only the copy is touched)
        log.debug("writing the tags of %r failed", path, exc_info=True)
        raise TagError(f"cannot write tags: {one_line(e)}") from None
    return before


def __getattr__(name: str):
    if name == "ChangedSinceClassified":  # exported here by genretag 0.1, never used here
        deprecated(f"{__name__}.ChangedSinceClassified", "genretag.tags.errors.ChangedSinceClassified")
        from genretag.tags.errors import ChangedSinceClassified

        return ChangedSinceClassified
    raise no_attribute(__name__, name)
