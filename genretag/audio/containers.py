"""Fingerprints of a file's audio payload, so that rewriting tags keeps them.

The result cache is keyed by what the model hears, not by the file's bytes:
writing a genre (what `genretag tag --write` does) must not make a track look
new. So each container is parsed just far enough to find where its audio
lives, and only that region is hashed:

- mp3: after the ID3v2 tag(s), before a trailing APEv2 / ID3v1 tag;
- flac: after the metadata blocks (and any ID3v2 someone put in front);
- ogg (vorbis, opus, flac, speex): the pages after the header packets, with
  each page's sequence number and CRC masked (mutagen renumbers pages when
  a comment packet grows into a new page);
- mp4/m4a: the `mdat` atoms (mutagen may move them and patch `stco`, but
  never changes their content);
- wav / aiff: the `data` / `SSND` chunk bodies;
- anything else: the whole file.

Every byte of the payload is hashed (sha256, with the payload's length;
OpenSSL runs sha256 on the CPU's SHA instructions, faster than blake2b where
measured), so two files that differ anywhere the classifier could listen get
different fingerprints, and an edit of the audio anywhere is noticed. The
cost is one read of the file (docs/tagging.md gives the figures). Each
fingerprint starts with its scheme (`v2:`): the result cache is keyed by it,
so entries made under an earlier scheme (which hashed only the first and last
MiB) are never matched again. `file_fingerprint` is the other kind: every
byte of the file, used by the journal to notice any change at all.

The words keep the two apart everywhere: a `fingerprint` (`TrackResult.fingerprint`,
`TagPlan.fingerprint`, the result cache's key, `expect_audio=`) is always this
audio one; the whole-file one always says `file` (`file_fingerprint`,
`expect_file=`, `WriteOutcome.file_before` / `file_after`). Only the journal's
JSON keys `fingerprint_before` / `fingerprint_after`, kept so that old journals
still undo, name whole-file fingerprints without it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
from collections.abc import Callable
from typing import BinaryIO

from genretag.errors import FingerprintError

#: The fingerprint scheme, the first field of every fingerprint: a change of what is hashed changes it,
#: so the result cache never answers from an entry keyed under another scheme.
VERSION = "v2"
_CHUNK = 1 << 16
_READ = 1 << 20  # bytes read (and hashed) at a time


Region = tuple[int, int]  # [start, end) byte offsets of audio payload


def sniff(head: bytes) -> str | None:
    """The container a file's first bytes announce: mp3, flac, ogg, mp4, wav, aiff, or None."""
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def special_kind(mode: int) -> str | None:
    """What a file of this `st_mode` is when it is neither a regular file nor a folder ("a FIFO",
    "a socket or device"), else None: reading or writing one could block or never end."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return "a FIFO" if stat.S_ISFIFO(mode) else "a socket or device"


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """`open(path, "rb")` for a regular file only: a FIFO, socket or device raises OSError at once
    (opening a FIFO that no one writes to would block for ever)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        if special_kind(mode):
            raise OSError(f"not a regular file ({special_kind(mode)})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def container_of(path: str | os.PathLike) -> str | None:
    """The container of a file, by its content (an ID3v2 tag in front of FLAC is looked past)."""
    with open_regular(path) as f:
        return _container_of_file(f)


def _container_of_file(f: BinaryIO) -> str | None:
    start = _skip_id3v2(f, 0)
    f.seek(start)
    head = f.read(12)
    if start and head[:4] == b"fLaC":
        return "flac"
    if start:
        return "mp3"
    return sniff(head)


def fingerprint(path: str | os.PathLike) -> str:
    """`v2:<kind>:<payload length>:<sha256 hex>` of the whole audio payload; tag writes keep it.

    Raises FingerprintError (one line) when the file cannot be read.
    """
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            kind = _container_of_file(f) or "raw"  # the same open file: a file replaced meanwhile is not mixed in
            try:
                regions, mask = _payload(f, kind, size)
            except (ValueError, struct.error, EOFError):
                kind, regions, mask = "raw", [(0, size)], None
            if not regions or sum(e - s for s, e in regions) <= 0:
                kind, regions, mask = "raw", [(0, size)], None
            return _hash_regions(f, kind, regions, mask)
    except OSError as e:
        raise FingerprintError(e.strerror or str(e)) from None


def file_fingerprint(path: str | os.PathLike) -> str:
    """`<size>:<sha256>` of every byte of the file: any change at all changes it."""
    h = hashlib.sha256()
    n = 0
    try:
        with open_regular(path) as f:
            while block := f.read(_CHUNK * 16):
                h.update(block)
                n += len(block)
    except OSError as e:
        raise FingerprintError(e.strerror or str(e)) from None
    return f"{n}:{h.hexdigest()}"


# --- hashing -----------------------------------------------------------------

Mask = Callable[[BinaryIO, int, int, bytearray], None]


def _hash_regions(f: BinaryIO, kind: str, regions: list[Region], mask: Mask | None) -> str:
    """Hash every byte of the concatenated regions, and their length."""
    total = sum(e - s for s, e in regions)
    h = hashlib.sha256()
    h.update(f"{VERSION}:{kind}:{total}:".encode())
    for start, data in _read_virtual(f, regions, 0, total):
        if mask is not None:
            buf = bytearray(data)
            mask(f, start, start + len(buf), buf)
            data = buf
        h.update(data)
    return f"{VERSION}:{kind}:{total}:{h.hexdigest()}"


def _read_virtual(f: BinaryIO, regions: list[Region], lo: int, hi: int):
    """Yield (file offset, bytes) covering virtual offsets [lo, hi) of the region concatenation."""
    pos = 0
    for s, e in regions:
        n = e - s
        a, b = max(lo, pos), min(hi, pos + n)
        if a < b:
            off = s + (a - pos)
            f.seek(off)
            remaining = b - a
            while remaining:
                data = f.read(min(remaining, _READ))
                if not data:
                    raise EOFError("truncated file")
                yield off, data
                off += len(data)
                remaining -= len(data)
        pos += n


# --- per container -------------------------------------------------------------

def _payload(f: BinaryIO, kind: str, size: int) -> tuple[list[Region], Mask | None]:
    if kind == "mp3":
        return [(_skip_id3v2(f, 0), _end_before_trailing_tags(f, size))], None
    if kind == "flac":
        return [(_flac_audio_start(f, _skip_id3v2(f, 0)), _end_before_trailing_tags(f, size))], None
    if kind == "ogg":
        start = _ogg_audio_start(f, size)
        pages = _ogg_page_offsets(f, start, size)
        return [(start, size)], _ogg_mask(pages)
    if kind == "mp4":
        return _atoms_named(f, 0, size, b"mdat"), None
    if kind == "wav":
        return _iff_chunks(f, size, little=True, want=b"data"), None
    if kind == "aiff":
        return _iff_chunks(f, size, little=False, want=b"SSND"), None
    return [(0, size)], None


def _syncsafe(b: bytes) -> int:
    return (b[0] << 21) | (b[1] << 14) | (b[2] << 7) | b[3]


def _skip_id3v2(f: BinaryIO, pos: int) -> int:
    """Offset just past any ID3v2 tags starting at `pos` (several may be stacked)."""
    while True:
        f.seek(pos)
        hdr = f.read(10)
        if len(hdr) < 10 or hdr[:3] != b"ID3" or hdr[3] == 0xFF or any(x & 0x80 for x in hdr[6:10]):
            return pos
        pos += 10 + _syncsafe(hdr[6:10]) + (10 if hdr[5] & 0x10 else 0)


def _end_before_trailing_tags(f: BinaryIO, end: int) -> int:
    """Offset before a trailing ID3v1 (and enhanced TAG+) and APEv2 tag."""
    for _ in range(3):
        if end >= 128:
            f.seek(end - 128)
            if f.read(3) == b"TAG":
                end -= 128
                if end >= 227:
                    f.seek(end - 227)
                    if f.read(4) == b"TAG+":
                        end -= 227
                continue
        if end >= 32:
            f.seek(end - 32)
            footer = f.read(32)
            if footer[:8] == b"APETAGEX":
                tag_size, _items, flags = struct.unpack("<III", footer[12:24])
                end -= tag_size + (32 if flags & 0x80000000 else 0)
                continue
        break
    return max(end, 0)


def _flac_audio_start(f: BinaryIO, pos: int) -> int:
    f.seek(pos)
    if f.read(4) != b"fLaC":
        raise ValueError("not flac")
    pos += 4
    while True:
        f.seek(pos)
        hdr = f.read(4)
        if len(hdr) < 4:
            raise EOFError("truncated flac metadata")
        pos += 4 + int.from_bytes(hdr[1:4], "big")
        if hdr[0] & 0x80:
            return pos


def _ogg_page(f: BinaryIO, pos: int) -> tuple[int, list[int]]:
    """(page length, lacing values) of the Ogg page at `pos`."""
    f.seek(pos)
    hdr = f.read(27)
    if len(hdr) < 27 or hdr[:4] != b"OggS" or hdr[4] != 0:
        raise ValueError("bad ogg page")
    lacing = list(f.read(hdr[26]))
    if len(lacing) != hdr[26]:
        raise EOFError("truncated ogg page")
    return 27 + len(lacing) + sum(lacing), lacing


def ogg_is_chained(path: str | os.PathLike) -> bool:
    """True for a chained Ogg file: a new logical stream begins after another one's pages (two Vorbis
    files back to back, a radio recording). Only the 27-byte page headers are read, the bodies are
    seeked over; a file that stops being valid Ogg is taken as it is up to there."""
    with open_regular(path) as f:
        size = f.seek(0, os.SEEK_END)
        pos, seen_data = 0, False
        while pos + 27 <= size:
            f.seek(pos)
            hdr = f.read(27)
            if hdr[:4] != b"OggS" or hdr[4] != 0:
                return False
            if hdr[5] & 0x02:  # beginning of a logical stream
                if seen_data:
                    return True
            else:
                seen_data = True
            lacing = f.read(hdr[26])
            pos += 27 + len(lacing) + sum(lacing)
    return False


def _ogg_audio_start(f: BinaryIO, size: int) -> int:
    """Offset of the first page after the codec's header packets (comments included)."""
    f.seek(0)
    first = f.read(64)
    body = first[28:] if len(first) > 28 else b""
    if body.startswith(b"\x01vorbis"):
        n_headers = 3
    elif body.startswith(b"\x7fFLAC"):
        n_headers = 1 + int.from_bytes(body[7:9], "big")
    else:  # OpusHead, Speex, ...: identification + comments
        n_headers = 2
    pos, packets = 0, 0
    while pos < size:
        length, lacing = _ogg_page(f, pos)
        packets += sum(1 for v in lacing if v < 255)
        pos += length
        if packets >= n_headers:
            return pos
    raise ValueError("no audio pages")


def _ogg_page_offsets(f: BinaryIO, start: int, size: int) -> list[int]:
    """Where every page from `start` on begins (headers only are read; bodies are seeked over)."""
    offsets, pos = [], start
    while pos < size:
        length, _ = _ogg_page(f, pos)
        offsets.append(pos)
        pos += length
    return offsets


def _ogg_mask(pages: list[int]) -> Mask:
    """Zero each page's sequence number and CRC (bytes 18..26) inside a read buffer."""
    import bisect

    def mask(_f: BinaryIO, start: int, end: int, buf: bytearray) -> None:
        i = max(0, bisect.bisect_right(pages, start) - 1)
        while i < len(pages) and pages[i] < end:
            for off in range(pages[i] + 18, pages[i] + 26):
                if start <= off < end:
                    buf[off - start] = 0
            i += 1

    return mask


def _atoms_named(f: BinaryIO, pos: int, end: int, name: bytes) -> list[Region]:
    """Bodies of the top-level MP4 atoms called `name`."""
    out = []
    while pos + 8 <= end:
        f.seek(pos)
        hdr = f.read(8)
        size, kind = struct.unpack(">I4s", hdr)
        head = 8
        if size == 1:
            size = struct.unpack(">Q", f.read(8))[0]
            head = 16
        elif size == 0:
            size = end - pos
        if size < head:
            raise ValueError("bad mp4 atom")
        if kind == name:
            out.append((pos + head, min(pos + size, end)))
        pos += size
    if not out:
        raise ValueError(f"no {name.decode()} atom")
    return out


def _iff_chunks(f: BinaryIO, size: int, little: bool, want: bytes) -> list[Region]:
    """Bodies of the RIFF/IFF chunks called `want` (chunks are word-aligned)."""
    fmt = "<I" if little else ">I"
    out, pos = [], 12
    while pos + 8 <= size:
        f.seek(pos)
        hdr = f.read(8)
        n = struct.unpack(fmt, hdr[4:8])[0]
        if hdr[:4] == want:
            out.append((pos + 8, min(pos + 8 + n, size)))
        pos += 8 + n + (n & 1)
    if not out:
        raise ValueError(f"no {want.decode()} chunk")
    return out
