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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from genretag.tags.errors import DamagedTagError

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
