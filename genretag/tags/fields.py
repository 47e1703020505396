"""Each format's genre field: reading it, and setting it on a file.


Each format keeps its genre in its native field: ID3v2 TCON (mp3, and the ID3
chunk of wav/aiff), the Vorbis comment GENRE (flac, ogg vorbis/opus), the MP4
`©gen` atom (m4a). Multiple genres are written as real multiple values where
the format has them; ID3v2.3 has none, so those files keep their version and
get the values joined with a separator.

"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from genretag.audio.containers import container_of
from genretag.errors import TagError, one_line

#: Joins several genres in formats with no multi-value field (ID3v2.3).
DEFAULT_SEPARATOR = "; "


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
        raise TagError(f"cannot read tags: {one_line(e)}") from None
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
    from mutagen import MutagenError, id3

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
        raise TagError(f"cannot write tags: {one_line(e)}") from None
    return before
