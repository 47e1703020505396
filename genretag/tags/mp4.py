"""MP4 `ilst` items at the byte level.

The genre write keeps every other item atom's bytes (mutagen re-renders
items from their parsed values on save); the new `ilst` is the old items
with `©gen` (and the numeric `gnre`) replaced. mutagen places it: it moves
`mdat` and updates the chunk offsets when `moov` grows.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

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
                else:
                    text.append(d[8:].decode("utf-8", "replace"))
        return text or (TCON(encoding=3, text=numeric).genres if numeric else [])

    def render(self, values: list[str]) -> bytes:
        """The items of the new `ilst` (without its own header)."""
        new = b""
        if values:
            data = b"".join(struct.pack(">I4sII", 16 + len(b), b"data", 1, 0) + b
                            for b in (v.encode("utf-8") for v in values))
            new = struct.pack(">I4s", 8 + len(data), b"\xa9gen") + data
        out, placed = [], False
        for name, raw, _ in self.items:
            if name in GENRE_ATOMS:
                if not placed:
                    out.append(new)
                placed = True
            else:
                out.append(raw)
        if not placed:
            out.append(new)
        return b"".join(out)


def parse(f) -> Ilst:
    from mutagen.mp4 import Atoms

    f.seek(0)
    try:
        atoms = Atoms(f)
    except Exception as e:  # mutagen.mp4.AtomError and struct errors
        raise DamagedTagError(f"MP4 atoms damaged: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    try:
        ilst = atoms.path(b"moov", b"udta", b"meta", b"ilst")[-1]
    except KeyError:
        return Ilst()
    f.seek(ilst._dataoffset)
    data = f.read(ilst.datalength)
    if len(data) != ilst.datalength:
        raise DamagedTagError("MP4 ilst atom truncated")
    return Ilst(_atoms(data, "MP4 ilst"))


def write(path: str, ilst: Ilst, values: list[str]) -> None:
    """Let mutagen place an `ilst` whose items are built here."""
    from mutagen.mp4 import MP4

    obj = MP4(path)
    if obj.tags is None:
        obj.add_tags()
    tags = obj.tags
    items = ilst.render(values)
    tags.clear()
    tags._failed_atoms = {}
    tags._render = lambda key, value: items
    tags["\xa9gen"] = ["placeholder"]  # one item, so save() renders `items` once
    obj.save()
