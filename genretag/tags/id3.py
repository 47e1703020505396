"""ID3v2 at the byte level: read every frame, replace only the genre frame.

mutagen parses a frame into values and renders it again on save, which is
not always the same bytes (text encodings, terminators, frame flags), and a
tag with one damaged frame makes it stop reading and silently drop the
frames after it. So the genre write works on the raw tag instead: the tag is
walked frame by frame, strictly (a frame ID that is not [A-Z0-9], a size
that runs past the tag, or anything but zeros after the last frame refuses
the file), and the new tag is the old frames' own bytes, in order, with the
TCON frame (TCO in v2.2) replaced. The version is kept (v2.2, v2.3, v2.4).

What the new tag drops: tag-level unsynchronisation (the frames are stored
decoded, which every reader accepts: v2.2/v2.3 undo it on the whole tag,
v2.4 frame by frame), the extended header (a CRC, restrictions and an update
flag; no frame data) and the v2.4 footer.

Below the tag itself: where it sits in each format that carries one (the
front of an mp3, beside its ID3v1 tag and an APEv2 tag whose genre is read;
an `id3`/`ID3` chunk of wav and aiff), parsed into an `Id3File` and written
back in place (`genretag.tags.fields` maps the formats to these).
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field

from genretag.errors import one_line
from genretag.tags.errors import DamagedTagError, TagError

_FRAME_ID = {2: re.compile(rb"^[A-Z0-9]{3}$"), 3: re.compile(rb"^[A-Z0-9]{4}$"), 4: re.compile(rb"^[A-Z0-9]{4}$")}
HEADER = 10


def syncsafe(b: bytes) -> int:
    if any(x & 0x80 for x in b):
        raise ValueError("not syncsafe")
    n = 0
    for x in b:
        n = (n << 7) | x
    return n


def to_syncsafe(n: int, width: int = 4) -> bytes:
    return bytes((n >> (7 * (width - 1 - i))) & 0x7F for i in range(width))


@dataclass
class Frame:
    id: str
    raw: bytes  # header + body, exactly as it will be written (tag-level unsynchronisation undone)
    body: bytes  # the body as stored (frame flags not undone)


@dataclass
class Id3Tag:
    """A parsed ID3v2 tag: its version and frames, in file order."""

    major: int  # 2, 3 or 4
    revision: int = 0
    flags: int = 0
    frames: list[Frame] = field(default_factory=list)
    size: int = 0  # bytes the tag occupies in the file (header + body [+ footer]); 0 when absent
    plain_sizes: bool = False  # v2.4 frame sizes stored as plain integers (an old iTunes bug)

    @property
    def genre_id(self) -> str:
        return "TCO" if self.major == 2 else "TCON"

    def others(self) -> list[bytes]:
        """Every frame but the genre, as raw bytes (what a genre write must keep)."""
        return [f.raw for f in self.frames if f.id != self.genre_id]

    def genre_raw(self) -> list[bytes]:
        """The genre frame(s), raw bytes, in file order (what undo puts back to restore them exactly)."""
        return [f.raw for f in self.frames if f.id == self.genre_id]

    def genres(self) -> list[str]:
        """The genre frame's values as stored (several frames' values concatenated)."""
        out: list[str] = []
        for f in self.frames:
            if f.id == self.genre_id:
                out.extend(decode_text(f.body, f.id))
        return out


def parse(data: bytes, where: str = "ID3v2 tag") -> Id3Tag:
    """Parse a whole tag (starting with b"ID3"); raise DamagedTagError unless every byte is accounted for."""
    if len(data) < HEADER or data[:3] != b"ID3":
        raise DamagedTagError(f"{where}: no ID3v2 header")
    major, rev, flags = data[3], data[4], data[5]
    if major not in (2, 3, 4):
        raise DamagedTagError(f"{where}: unknown ID3v2 version 2.{major}")
    try:
        size = syncsafe(data[6:10])
    except ValueError:
        raise DamagedTagError(f"{where}: damaged header (size)") from None
    body = data[HEADER:HEADER + size]
    if len(body) < size:
        raise DamagedTagError(f"{where}: truncated ({len(body)} of {size} bytes)")
    total = HEADER + size + (HEADER if major == 4 and flags & 0x10 else 0)
    if major < 4 and flags & 0x80:
        body = body.replace(b"\xff\x00", b"\xff")
    if major == 2 and flags & 0x40:
        raise DamagedTagError(f"{where}: compressed ID3v2.2 tag (not readable)")
    pos = 0
    if major >= 3 and flags & 0x40:  # extended header
        try:
            ext = int.from_bytes(body[0:4], "big") + 4 if major == 3 else syncsafe(body[0:4])
        except ValueError:
            raise DamagedTagError(f"{where}: damaged extended header") from None
        if ext > len(body):
            raise DamagedTagError(f"{where}: damaged extended header")
        pos = ext
    try:
        frames = _walk(body, pos, major, plain=False)
        plain = False
    except DamagedTagError as first:
        if major != 4:
            raise DamagedTagError(f"{where}: {first}") from None
        try:  # v2.4 with plain (not syncsafe) frame sizes
            frames = _walk(body, pos, major, plain=True)
            plain = True
        except DamagedTagError:
            raise DamagedTagError(f"{where}: {first}") from None
    if major == 4 and flags & 0x80:
        frames = [_desync_v24(f, plain) for f in frames]
    return Id3Tag(major, rev, flags, frames, total, plain)


def _desync_v24(frame: Frame, plain: bool) -> Frame:
    """A frame of a v2.4 tag whose header says "unsynchronised", as it is without that flag.

    In v2.4 the tag-level flag means each frame body is unsynchronised (a 00
    after every FF), frame by frame, and the sizes count the stored bytes. The
    new tag is written without the flag, so each frame gets its decoded body,
    its unsynchronisation frame flag cleared and its size recounted; a body
    that is not validly unsynchronised is kept as it is, as mutagen reads it.
    """
    from mutagen.id3._util import unsynch

    flags = int.from_bytes(frame.raw[8:10], "big")
    body = frame.body
    head, data = (body[:4], body[4:]) if flags & 0x0009 else (b"", body)  # data length indicator
    try:
        data = unsynch.decode(data)
    except ValueError:
        pass
    body = head + data
    size = len(body).to_bytes(4, "big") if plain else to_syncsafe(len(body))
    raw = frame.raw[:4] + size + (flags & ~0x0002).to_bytes(2, "big") + body
    return Frame(frame.id, raw, body)


def _walk(body: bytes, pos: int, major: int, plain: bool) -> list[Frame]:
    hdr = 6 if major == 2 else 10
    idlen = 3 if major == 2 else 4
    frames = []
    while pos < len(body):
        if body[pos] == 0:
            if any(body[pos:]):
                raise DamagedTagError(f"unexpected bytes after the last frame (at byte {HEADER + pos})")
            break
        if pos + hdr > len(body):
            raise DamagedTagError(f"truncated frame header at byte {HEADER + pos}")
        fid = body[pos:pos + idlen]
        if not _FRAME_ID[major].match(fid):
            raise DamagedTagError(f"invalid frame ID {fid!r} at byte {HEADER + pos}")
        raw_size = body[pos + idlen:pos + idlen + (3 if major == 2 else 4)]
        if major == 4 and not plain:
            try:
                size = syncsafe(raw_size)
            except ValueError:
                raise DamagedTagError(f"frame {fid.decode()}: damaged size") from None
        else:
            size = int.from_bytes(raw_size, "big")
        end = pos + hdr + size
        if end > len(body):
            raise DamagedTagError(f"frame {fid.decode()} runs past the end of the tag")
        frames.append(Frame(fid.decode("ascii"), body[pos:end], body[pos + hdr:end]))
        pos = end
    return frames


# --- genre frame text -------------------------------------------------------------

def decode_text(body: bytes, fid: str = "TCON") -> list[str]:
    """The values of a text frame body (encoding byte + null-separated text)."""
    if not body:
        return []
    enc, text = body[0], body[1:]
    codec, term = {0: ("latin-1", b"\0"), 1: ("utf-16", b"\0\0"), 2: ("utf-16-be", b"\0\0"),
                   3: ("utf-8", b"\0")}.get(enc, (None, None))
    if codec is None:
        raise DamagedTagError(f"frame {fid}: unknown text encoding {enc}")
    if len(term) == 2:
        parts, i, start = [], 0, 0
        while i + 1 < len(text):
            if text[i:i + 2] == term:
                parts.append(text[start:i])
                start = i + 2
            i += 2
        parts.append(text[start:])
    else:
        parts = text.split(term)
    values = []
    for p in parts:
        try:
            values.append(p.decode(codec))
        except UnicodeDecodeError:
            raise DamagedTagError(f"frame {fid}: text is not valid {codec}") from None
    values = [v.lstrip("\ufeff") for v in values]
    while values and values[-1] == "":
        values.pop()
    return values


def genre_frame(tag: Id3Tag, values: list[str]) -> bytes:
    """A TCON (TCO) frame for this tag's version: UTF-8 and null-separated in v2.4, UTF-16 before."""
    if tag.major == 4:
        body = b"\x03" + "\0".join(values).encode("utf-8")
    else:
        body = b"\x01" + "\0".join(values).encode("utf-16")  # with BOM
    if tag.major == 2:
        return b"TCO" + len(body).to_bytes(3, "big") + body
    size = len(body).to_bytes(4, "big") if tag.major == 3 or tag.plain_sizes else to_syncsafe(len(body))
    return b"TCON" + size + b"\0\0" + body


def render(tag: Id3Tag, values: list[str], min_size: int = 0, raw: list[bytes] | None = None) -> bytes:
    """The tag with its genre frame(s) replaced by `values` (none: removed), padded to `min_size`.

    `raw`, when given, is the genre frames' exact bytes (from `Id3Tag.genre_raw`), put in their place
    instead of a frame built from `values` (undo: the stored encoding and frames come back as they were).
    """
    new = b"".join(raw) if raw is not None else (genre_frame(tag, values) if values else b"")
    out, placed = [], False
    for f in tag.frames:
        if f.id == tag.genre_id:
            if not placed:
                out.append(new)
            placed = True
            continue
        out.append(f.raw)
    if not placed:
        out.append(new)
    frames = b"".join(out)
    flags = tag.flags & ~(0x80 | 0x40 | 0x10) if tag.major >= 3 else tag.flags & ~0x80
    size = max(len(frames), min_size - HEADER)
    if size >= 1 << 28:
        raise DamagedTagError("ID3v2 tag would exceed 256 MB")
    return (b"ID3" + bytes((tag.major, tag.revision, flags)) + to_syncsafe(size)
            + frames + b"\0" * (size - len(frames)))


# --- ID3 in files: an mp3's tag (with its ID3v1 and APEv2 neighbours), the ID3 chunk of wav and aiff ---

def iff_chunk(f, fmt: str):
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
class Id3File:
    """A file's ID3 tag and what sits beside it: what `fields.GENRE_FIELDS` parses an mp3, wav or aiff into."""

    tag: Id3Tag
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


def parse_file(f, fmt: str) -> Id3File:
    """The ID3 tag of the open file `f` (an empty v2.4 tag when it has none), and for an mp3 its ID3v1 tag
    and APEv2 genre, for a wav or aiff its other chunks (and a wav's RIFF INFO genre)."""
    if fmt == "mp3":
        f.seek(0)
        head = f.read(HEADER)
        tag = parse(head + f.read(tag_size(head) - len(head))) if head[:3] == b"ID3" else Id3Tag(4)
        end = f.seek(0, os.SEEK_END)
        extra, v1_at, v1_genre = [], None, None
        if end >= 128 + tag.size:
            f.seek(end - 128)
            v1 = f.read(128)
            if v1[:3] == b"TAG":
                extra, v1_at, v1_genre = [b"ID3v1" + v1[:127]], end - 128, v1[127]
        return Id3File(tag, extra, v1_at, v1_genre, _ape_genres(f, end - 128 if v1_at is not None else end))
    iff, chunk = iff_chunk(f, fmt)
    extra, info = [], []
    for c in iff.root.subchunks():
        if c is chunk or c.id in ("data", "SSND"):
            continue
        f.seek(c.data_offset)
        extra.append(c.id.encode("latin-1") + f.read(c.data_size))
        if fmt == "wav" and c.id == "LIST":
            info += _riff_info_genres(extra[-1][4:])
    if chunk is None:
        return Id3File(Id3Tag(4), extra, other_genres=info)
    f.seek(chunk.data_offset)
    data = f.read(chunk.data_size)
    return Id3File(parse(data[:tag_size(data)], "ID3 chunk"), extra, other_genres=info)


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


def tag_size(head: bytes) -> int:
    """The whole size of the ID3v2 tag whose 10-byte header is `head` (footer included)."""
    try:
        return HEADER + syncsafe(head[6:10]) + (HEADER if head[3] == 4 and head[5] & 0x10 else 0)
    except (ValueError, IndexError):
        raise DamagedTagError("ID3v2 tag: damaged header") from None


def write_file(path: str, fmt: str, parsed: Id3File, values: list[str], *, raw: list[bytes] | None = None) -> None:
    """Write the tag with the new genre back in place: at the front of an mp3 (and its ID3v1 genre byte),
    in the ID3 chunk of a wav or aiff (added when there is none)."""
    from mutagen._util import resize_bytes

    tag = parsed.tag
    with open(path, "r+b") as f:
        if fmt == "mp3":
            if tag.size or values or raw:
                data = render(tag, values, min_size=tag.size, raw=raw)
                if len(data) > tag.size:
                    data = render(tag, values, min_size=len(data) + 1024, raw=raw)
                    resize_bytes(f, tag.size, len(data), 0)
                f.seek(0)
                f.write(data)
            if parsed.v1_at is not None:
                f.seek(-1, os.SEEK_END)
                f.write(bytes([v1_genre(values) if parsed.v1_write is None else parsed.v1_write]))
            return
        iff, chunk = iff_chunk(f, fmt)
        if chunk is None and not values and not raw:
            return
        data = render(tag, values, min_size=chunk.data_size if chunk is not None else 0, raw=raw)
        if chunk is None or len(data) > chunk.data_size:
            data = render(tag, values, min_size=len(data) + 1024, raw=raw)
            if chunk is None:
                iff.insert_chunk("id3" if fmt == "wav" else "ID3")
                chunk = iff_chunk(f, fmt)[1]
                if chunk is None:
                    raise DamagedTagError(f"damaged {fmt} chunks: a new ID3 chunk cannot be found again")
            chunk.resize(len(data))
        f.seek(chunk.data_offset)
        f.write(data)


def drop_empty_tag(path: str, fmt: str, parsed: Id3File) -> None:
    """Remove an ID3 tag (mp3) or chunk (wav, aiff) that holds no frame (`parsed`: the file as it is now)."""
    from mutagen._util import resize_bytes

    if parsed.tag.frames or not parsed.tag.size:
        return
    with open(path, "r+b") as f:
        if fmt == "mp3":
            resize_bytes(f, parsed.tag.size, 0, 0)
            return
        chunk = iff_chunk(f, fmt)[1]
        if chunk is not None:
            chunk.delete()


def v1_genre(values: list[str]) -> int:
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


def v1_name(byte: int | None) -> list[str]:
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
