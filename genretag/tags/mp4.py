"""MP4 `ilst` items at the byte level.

The genre write keeps every other item atom's bytes (mutagen re-renders
items from their parsed values on save); the new `ilst` is the old items
with `©gen` (and the numeric `gnre`) replaced. mutagen places it: it moves
`mdat` when `moov` grows. The absolute offsets that point past `moov` are
updated here: the chunk offsets (`stco`, `co64`), the `base_data_offset` of
every fragment's `tfhd` (mutagen alone updates only the first `moof`'s, which
leaves every later fragment of a `frag_keyframe+empty_moov` file pointing
into the wrong bytes), and the `moof` offsets of the `mfra` index (`tfra`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from genretag.errors import one_line
from genretag.tags.errors import DamagedTagError

GENRE_ATOMS = (b"\xa9gen", b"gnre")


def _atoms(data: bytes, where: str) -> list[tuple[bytes, bytes, bytes]]:
    """(name, raw atom, payload) of each atom tiling `data`; DamagedTagError if they do not tile it."""
    out, pos = [], 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise DamagedTagError(f"{where}: truncated atom")
        size, name = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1:
            if pos + 16 > len(data):
                raise DamagedTagError(f"{where}: truncated atom")
            size, head = struct.unpack_from(">Q", data, pos + 8)[0], 16
        if size < head or pos + size > len(data):
            raise DamagedTagError(f"{where}: atom {name!r} has a damaged size")
        out.append((name, data[pos:pos + size], data[pos + head:pos + size]))
        pos += size
    return out


@dataclass
class Ilst:
    items: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)

    def others(self) -> list[bytes]:
        return [raw for name, raw, _ in self.items if name not in GENRE_ATOMS]

    def genres(self) -> list[str]:
        from mutagen.id3 import TCON  # ID3v1 genre list, for `gnre`

        text, numeric = [], []
        for name, _, payload in self.items:
            if name not in GENRE_ATOMS:
                continue
            for dname, _, d in _atoms(payload, name.decode("latin-1")):
                if dname != b"data" or len(d) < 8:
                    continue
                if name == b"gnre":
                    if len(d) >= 10:
                        numeric.append(f"({struct.unpack_from('>H', d, 8)[0] - 1})")
                else:  # not UTF-8 (a Latin-1 value): surrogate escapes, written back as the same bytes
                    text.append(d[8:].decode("utf-8", "surrogateescape"))
        return text or (TCON(encoding=3, text=numeric).genres if numeric else [])

    def genre_raw(self) -> list[bytes]:
        """The `©gen` and `gnre` atoms, raw, in order (what undo puts back to restore them exactly)."""
        return [raw for name, raw, _ in self.items if name in GENRE_ATOMS]

    def render(self, values: list[str], raw: list[bytes] | None = None) -> bytes:
        """The items of the new `ilst` (without its own header); `raw`: the exact genre atoms to put back."""
        new = b""
        if raw is not None:
            new = b"".join(raw)
        elif values:
            data = b"".join(struct.pack(">I4sII", 16 + len(b), b"data", 1, 0) + b
                            for b in (v.encode("utf-8", "surrogateescape") for v in values))
            new = struct.pack(">I4s", 8 + len(data), b"\xa9gen") + data
        out, placed = [], False
        for name, item, _ in self.items:
            if name in GENRE_ATOMS:
                if not placed:
                    out.append(new)
                placed = True
            else:
                out.append(item)
        if not placed:
            out.append(new)
        return b"".join(out)


def parse(f) -> Ilst:
    from mutagen.mp4 import Atoms

    f.seek(0)
    try:
        atoms = Atoms(f)
    except Exception as e:  # mutagen.mp4.AtomError and struct errors
        raise DamagedTagError(f"MP4 atoms damaged: {one_line(e)}") from None
    try:
        ilst = atoms.path(b"moov", b"udta", b"meta", b"ilst")[-1]
    except KeyError:
        return Ilst()
    f.seek(ilst._dataoffset)
    data = f.read(ilst.datalength)
    if len(data) != ilst.datalength:
        raise DamagedTagError("MP4 ilst atom truncated")
    return Ilst(_atoms(data, "MP4 ilst"))


def write(path: str, ilst: Ilst, values: list[str], raw: list[bytes] | None = None) -> None:
    """Let mutagen place an `ilst` whose items are built here.

    This sets private attributes of mutagen's MP4 writer (`_render`, `_failed_atoms` and the
    offset-table update), so pyproject.toml pins mutagen below 2; a version without the
    offset-table update is refused rather than guessed at."""
    from mutagen.mp4 import MP4

    obj = MP4(path)
    if obj.tags is None:
        obj.add_tags()
    tags = obj.tags
    items = ilst.render(values, raw)
    tags.clear()
    tags._failed_atoms = {}
    tags._render = lambda key, value: items
    tags["\xa9gen"] = ["placeholder"]  # one item, so save() renders `items` once
    if not hasattr(tags, "_MP4Tags__update_offset_table"):
        raise DamagedTagError("this mutagen version's MP4 writer is not supported (no offset table update)")
    tags._MP4Tags__update_offsets = lambda fileobj, atoms, delta, offset: _update_offsets(
        tags, fileobj, atoms, delta, offset)
    obj.save()


def _update_offsets(tags, fileobj, atoms, delta: int, offset: int) -> None:
    """Shift by `delta` every absolute file offset past `offset` (where the `ilst` grew or shrank).

    mutagen's own update (which this replaces) covers `stco`, `co64` and the first `moof` only.
    """
    if delta == 0:
        return
    moov = atoms[b"moov"]
    for atom in moov.findall(b"stco", True):
        tags._MP4Tags__update_offset_table(fileobj, ">%dI", atom, delta, offset)
    for atom in moov.findall(b"co64", True):
        tags._MP4Tags__update_offset_table(fileobj, ">%dQ", atom, delta, offset)
    for top in atoms.atoms:
        if top.name == b"moof":
            for atom in top.findall(b"tfhd", True):
                tags._MP4Tags__update_tfhd(fileobj, atom, delta, offset)
        elif top.name == b"mfra":
            _update_mfra(fileobj, top.offset + (delta if top.offset > offset else 0), top.length, delta, offset)


def _update_mfra(fileobj, at: int, length: int, delta: int, offset: int) -> None:
    """The `moof_offset` of every `tfra` entry in the `mfra` atom at `at` (after the move)."""
    fileobj.seek(at)
    data = bytearray(fileobj.read(length))
    pos = 8
    while pos + 8 <= len(data):
        size, name = struct.unpack_from(">I4s", data, pos)
        if size < 8 or pos + size > len(data):
            raise DamagedTagError("MP4 mfra atom damaged")
        if name == b"tfra" and size >= 24:
            version = data[pos + 8]
            sizes = struct.unpack_from(">I", data, pos + 16)[0]
            count = struct.unpack_from(">I", data, pos + 20)[0]
            wide = 8 if version == 1 else 4
            extra = ((sizes >> 4) & 3) + ((sizes >> 2) & 3) + (sizes & 3) + 3
            entry = 2 * wide + extra
            if 24 + count * entry > size:
                raise DamagedTagError("MP4 tfra atom damaged")
            fmt = ">Q" if wide == 8 else ">I"
            for i in range(count):
                at_off = pos + 24 + i * entry + wide
                o = struct.unpack_from(fmt, data, at_off)[0]
                if o > offset:
                    struct.pack_into(fmt, data, at_off, o + delta)
        pos += size
    fileobj.seek(at)
    fileobj.write(bytes(data))


def fragment_problem(f) -> str | None:
    """Why the fragments of the open MP4 file `f` are not where its offsets say, or None.

    Each `tfra` entry of `mfra` must name the start of a `moof`; each `tfhd` `base_data_offset` must
    point inside the file. Checked after a write, beside the demux of every packet.
    """
    from mutagen.mp4 import Atoms

    f.seek(0)
    atoms = Atoms(f)
    size = f.seek(0, 2)
    moofs = {a.offset for a in atoms.atoms if a.name == b"moof"}
    for top in atoms.atoms:
        if top.name == b"moof":
            for tfhd in top.findall(b"tfhd", True):
                f.seek(tfhd.offset + 8)
                head = f.read(16)
                if len(head) == 16 and int.from_bytes(head[1:4], "big") & 1:
                    base = struct.unpack_from(">Q", head, 8)[0]
                    if base > size:
                        return f"fragment at byte {top.offset} has a data offset past the end of the file"
        elif top.name == b"mfra":
            for o in _tfra_offsets(f, top.offset, top.length):
                if o not in moofs:
                    return f"the mfra index names byte {o}, which is not the start of a fragment"
    return None


def _tfra_offsets(f, at: int, length: int) -> list[int]:
    f.seek(at)
    data = f.read(length)
    out, pos = [], 8
    while pos + 8 <= len(data):
        size, name = struct.unpack_from(">I4s", data, pos)
        if size < 8:
            break
        if name == b"tfra" and size >= 24:
            wide = 8 if data[pos + 8] == 1 else 4
            sizes, count = struct.unpack_from(">II", data, pos + 16)
            entry = 2 * wide + ((sizes >> 4) & 3) + ((sizes >> 2) & 3) + (sizes & 3) + 3
            for i in range(min(count, (size - 24) // entry)):
                out.append(int.from_bytes(data[pos + 24 + i * entry + wide:pos + 24 + i * entry + 2 * wide], "big"))
        pos += size
    return out
