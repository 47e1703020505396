"""Vorbis comments (flac, ogg vorbis, ogg opus) at the byte level.

Like ID3 (see `genretag.tags.id3`), the genre write keeps every other
comment's own bytes: mutagen would decode an invalid UTF-8 value with
replacement characters and rename a comment without "=" to "unknownN" on
save. A comment block is parsed strictly (every length inside the block) and
rebuilt from the raw comments with the GENRE ones replaced. FLAC metadata
blocks are rewritten here (the other blocks byte for byte); for Ogg, mutagen
re-pages the header packets around the comment packet built here.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

from genretag.errors import one_line
from genretag.tags import id3
from genretag.tags.errors import DamagedTagError

GENRE = b"GENRE"


@dataclass
class Comments:
    """A parsed comment block: vendor, every comment as raw bytes, and what follows them."""

    vendor: bytes = b""
    comments: list[bytes] = field(default_factory=list)
    rest: bytes = b""  # framing bit, padding or (opus) binary data after the comments

    @staticmethod
    def is_genre(comment: bytes) -> bool:
        return comment.split(b"=", 1)[0].upper() == GENRE

    def genres(self) -> list[str]:
        """The GENRE values; bytes that are not UTF-8 (a Latin-1 value) come as surrogate escapes, so
        writing a value back (`--append`) gives its stored bytes, never U+FFFD."""
        return [c.split(b"=", 1)[1].decode("utf-8", "surrogateescape") if b"=" in c else ""
                for c in self.comments if self.is_genre(c)]

    def genre_raw(self) -> list[bytes]:
        """The GENRE comments, raw, in order (what undo puts back to restore them exactly)."""
        return [c for c in self.comments if self.is_genre(c)]

    def others(self) -> list[bytes]:
        return [b"vendor=" + self.vendor] + [c for c in self.comments if not self.is_genre(c)]

    def render(self, values: list[str], framing: bool, raw: list[bytes] | None = None) -> bytes:
        """The block with the GENRE comments replaced by `values` (at the first one's place), or by the
        exact comments `raw` when given."""
        new = list(raw) if raw is not None else [GENRE + b"=" + v.encode("utf-8", "surrogateescape")
                                                  for v in values]
        out, placed = [], False
        for c in self.comments:
            if self.is_genre(c):
                if not placed:
                    out.extend(new)
                placed = True
            else:
                out.append(c)
        if not placed:
            out.extend(new)
        parts = [struct.pack("<I", len(self.vendor)), self.vendor, struct.pack("<I", len(out))]
        for c in out:
            parts += [struct.pack("<I", len(c)), c]
        return b"".join(parts) + (b"\x01" if framing else b"")


def parse_comments(data: bytes, where: str) -> Comments:
    """Parse a comment block; DamagedTagError if a length points outside it."""
    def u32(pos: int) -> int:
        if pos + 4 > len(data):
            raise DamagedTagError(f"{where}: truncated comment block")
        return struct.unpack_from("<I", data, pos)[0]

    n = u32(0)
    if 4 + n > len(data):
        raise DamagedTagError(f"{where}: damaged vendor string length")
    vendor = data[4:4 + n]
    pos = 4 + n
    count = u32(pos)
    pos += 4
    comments = []
    for i in range(count):
        n = u32(pos)
        if pos + 4 + n > len(data):
            raise DamagedTagError(f"{where}: comment {i + 1} of {count} runs past the end of the block")
        comments.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return Comments(vendor, comments, data[pos:])


# --- FLAC ------------------------------------------------------------------------

STREAMINFO, PADDING, VORBIS_COMMENT = 0, 1, 4


@dataclass
class FlacMeta:
    start: int  # offset of b"fLaC"
    blocks: list[tuple[int, bytes]]  # (type, body) in file order
    end: int  # offset of the first audio frame
    comments: Comments | None
    front_genres: list[str] = field(default_factory=list)  # TCON of an ID3v2 tag in front (read, not written)

    def others(self) -> list[bytes]:
        out = [bytes([t]) + body for t, body in self.blocks if t not in (PADDING, VORBIS_COMMENT)]
        return out + (self.comments.others() if self.comments else [])

    def genres(self) -> list[str]:
        return self.comments.genres() if self.comments else []

    def genre_raw(self) -> list[bytes]:
        return self.comments.genre_raw() if self.comments else []


def parse_flac(f, id3_size: int) -> FlacMeta:
    f.seek(id3_size)
    if f.read(4) != b"fLaC":
        raise DamagedTagError("not a FLAC stream")
    size = f.seek(0, io.SEEK_END)
    pos = id3_size + 4
    blocks: list[tuple[int, bytes]] = []
    comments = None
    while True:
        f.seek(pos)
        head = f.read(4)
        if len(head) < 4:
            raise DamagedTagError("FLAC metadata truncated")
        last, kind, n = head[0] & 0x80, head[0] & 0x7F, int.from_bytes(head[1:4], "big")
        if kind == 127 or pos + 4 + n > size:
            raise DamagedTagError(f"FLAC metadata block {len(blocks) + 1} is damaged")
        body = f.read(n)
        if kind == VORBIS_COMMENT:
            if comments is not None:
                raise DamagedTagError("FLAC file has two comment blocks")
            comments = parse_comments(body, "FLAC comment block")
        blocks.append((kind, body))
        pos += 4 + n
        if last:
            break
    if not blocks or blocks[0][0] != STREAMINFO:
        raise DamagedTagError("FLAC metadata does not start with STREAMINFO")
    return FlacMeta(id3_size, blocks, pos, comments)


def write_flac(f, meta: FlacMeta, values: list[str], raw: list[bytes] | None = None) -> None:
    """Rewrite the metadata of the open FLAC file `f` with the new comment block (others byte for byte)."""
    from mutagen._util import resize_bytes

    body = (meta.comments or Comments(b"genretag")).render(values, framing=False, raw=raw)
    if len(body) >= 1 << 24:
        raise DamagedTagError("FLAC comment block would exceed 16 MB")
    blocks = [(t, b) for t, b in meta.blocks if t not in (PADDING, VORBIS_COMMENT)]
    at = next((i for i, (t, _) in enumerate(meta.blocks) if t == VORBIS_COMMENT), None)
    at = 1 if at is None else sum(1 for t, _ in meta.blocks[:at] if t != PADDING)
    blocks.insert(at, (VORBIS_COMMENT, body))
    used = sum(4 + len(b) for _, b in blocks)
    room = meta.end - meta.start - 4
    pad = room - used - 4
    if pad < 0:
        pad = 1024
    blocks.append((PADDING, b"\0" * pad))
    data = b"".join(bytes([t | (0x80 if i == len(blocks) - 1 else 0)]) + len(b).to_bytes(3, "big") + b
                    for i, (t, b) in enumerate(blocks))
    resize_bytes(f, room, len(data), meta.start + 4)
    f.seek(meta.start + 4)
    f.write(data)


def parse_flac_file(f, fmt: str = "flac") -> FlacMeta:
    """The FLAC metadata of the open file `f`, past an ID3v2 tag in front of the stream if there is one.

    That tag's genre is read (never written) into `front_genres`, for --keep-existing."""
    f.seek(0)
    head = f.read(id3.HEADER)
    if head[:3] != b"ID3":
        return parse_flac(f, 0)
    total = id3.tag_size(head)
    meta = parse_flac(f, total)
    f.seek(0)
    try:
        meta.front_genres = id3.TCON_genres(id3.parse(f.read(total)).genres())
    except DamagedTagError:
        meta.front_genres = []
    return meta


def write_flac_file(path: str, meta: FlacMeta, values: list[str], raw: list[bytes] | None = None) -> None:
    """`write_flac` on the file at `path`."""
    with open(path, "r+b") as f:
        write_flac(f, meta, values, raw)


# --- Ogg -------------------------------------------------------------------------

OGG_MAGIC = {"ogg-vorbis": (b"\x01vorbis", b"\x03vorbis", 3), "ogg-opus": (b"OpusHead", b"OpusTags", 2)}


def ogg_kind(f) -> str | None:
    """ogg-vorbis, ogg-opus, or None (another codec) from the first packet."""
    f.seek(0)
    head = f.read(27)
    if len(head) < 27 or head[:4] != b"OggS":
        return None
    f.seek(27 + head[26])
    first = f.read(8)
    for kind, (ident, _, _) in OGG_MAGIC.items():
        if first.startswith(ident):
            return kind
    return None


@dataclass
class OggHeaders:
    packets: list[bytes]  # the header packets of the first stream (ident, comments[, setup])
    comments: Comments
    framing: bool

    def others(self) -> list[bytes]:
        kept = [p for i, p in enumerate(self.packets) if i != 1]
        rest = self.comments.rest
        if self.framing:
            rest = rest[1:] if rest[:1] == b"\x01" else rest
        tail = [rest] if rest.strip(b"\0") else []
        return kept + self.comments.others() + tail

    def genres(self) -> list[str]:
        return self.comments.genres()

    def genre_raw(self) -> list[bytes]:
        return self.comments.genre_raw()


def parse_ogg(f, kind: str) -> OggHeaders:
    from mutagen.ogg import OggPage

    ident, magic, n = OGG_MAGIC[kind]
    f.seek(0)
    pages = []
    try:
        first = OggPage(f)
        pages.append(first)
        while sum(len(p.packets) - (0 if p.complete else 1) for p in pages) < n:
            page = OggPage(f)
            if page.serial == first.serial:
                pages.append(page)
        packets = OggPage.to_packets(pages, strict=False)[:n]
    except (EOFError, OSError, struct.error, ValueError) as e:
        raise DamagedTagError(f"Ogg header pages damaged ({e.__class__.__name__})") from None
    except Exception as e:  # mutagen.ogg.error
        raise DamagedTagError(f"Ogg header pages damaged: {one_line(e)}") from None
    if len(packets) < n or not packets[0].startswith(ident) or not packets[1].startswith(magic):
        raise DamagedTagError("Ogg comment header missing or damaged")
    framing = kind == "ogg-vorbis"
    comments = parse_comments(packets[1][len(magic):], "Ogg comment header")
    if framing and not comments.rest[:1] == b"\x01":
        raise DamagedTagError("Ogg Vorbis comment header lacks its framing bit")
    return OggHeaders(packets, comments, framing)


def write_ogg(path: str, kind: str, headers: OggHeaders, values: list[str], *,
              raw: list[bytes] | None = None) -> None:
    """Let mutagen re-page the header packets around the comment block built here."""
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis

    obj = (OggVorbis if kind == "ogg-vorbis" else OggOpus)(path)
    block = headers.comments.render(values, framing=False, raw=raw)
    obj.tags.write = lambda framing=True: block + (b"\x01" if framing else b"")
    obj.save()
