"""Each format's genre field: reading it, and setting it on a file.

Each format keeps its genre in its native field: ID3v2 TCON (mp3, and the ID3
chunk of wav/aiff), the Vorbis comment GENRE (flac, ogg vorbis/opus), the MP4
`©gen` atom (m4a). Multiple genres are written as real multiple values where
the format has them; ID3v2.3 and v2.2 have none, so those files keep their
version and get the values joined with a separator.

A tag is always read whole: `read_tags` returns the genre and the raw bytes
of every other field, and refuses (DamagedTagError) a tag it cannot account
for byte by byte. The writers keep those bytes, so the safe write can check
that nothing but the genre changed.

This module is the table (`GENRE_FIELDS`: format -> field, parser, writer) and
what every format shares; each format's storage code lives beside its format:
`genretag.tags.id3` (an mp3's tag, the ID3 chunk of wav/aiff), `.vorbis` (FLAC
metadata, Ogg comment headers) and `.mp4`. A new format is a table row over a
module of its own.
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


GENRE_FIELDS: dict[str, GenreField] = {
    "mp3": GenreField("ID3v2 TCON", True, id3.parse_file, lambda p, t, v, r: id3.write_file(p, "mp3", t, v, raw=r)),
    "wav": GenreField("ID3v2 TCON", True, id3.parse_file, lambda p, t, v, r: id3.write_file(p, "wav", t, v, raw=r)),
    "aiff": GenreField("ID3v2 TCON", True, id3.parse_file, lambda p, t, v, r: id3.write_file(p, "aiff", t, v, raw=r)),
    "flac": GenreField("Vorbis GENRE", False, vorbis.parse_flac_file, vorbis.write_flac_file),
    "ogg-vorbis": GenreField("Vorbis GENRE", False, vorbis.parse_ogg,
                             lambda p, t, v, r: vorbis.write_ogg(p, "ogg-vorbis", t, v, raw=r)),
    "ogg-opus": GenreField("Vorbis GENRE", False, vorbis.parse_ogg,
                           lambda p, t, v, r: vorbis.write_ogg(p, "ogg-opus", t, v, raw=r)),
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
    version = parsed.tag.major if isinstance(parsed, id3.Id3File) and parsed.tag.size else None
    if isinstance(parsed, id3.Id3File):
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
        values = id3.TCON_genres(values)
    sep = effective_separator(tags, separator)
    out = split_values(values, sep) if sep else [v for v in values if v.strip()]
    return out or list(tags.other_genres) or id3.v1_name(tags.id3v1_genre)


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


def set_genres(path: str | os.PathLike, values: list[str], *, separator: str | None = None,
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
    if isinstance(parsed, id3.Id3File):  # from the values before ID3v2.3 joins them: its first genre
        parsed.v1_write = id3.v1_genre(values) if id3v1_genre is None else id3v1_genre
    try:
        GENRE_FIELDS[fmt].write(path, parsed, stored_form(before, values, separator), raw)
        if drop_empty_tag and GENRE_FIELDS[fmt].id3:
            id3.drop_empty_tag(path, fmt, _parse(path)[1])
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
