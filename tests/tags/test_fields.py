"""Each format's whole tag (`genretag.tags.fields` over `id3`, `vorbis`, `mp4`): only the genre changes, every
other byte and the audio payload are kept, a tag that cannot be read whole is refused.
"""

from __future__ import annotations

from pathlib import Path

import audio_factory as af
import pytest
from tag_library import EXTS, library, rows, run

from genretag.audio.containers import file_fingerprint, fingerprint
from genretag.tags.errors import DamagedTagError
from genretag.tags.fields import TagError, read_tags
from genretag.tags.safe_write import write_genres_safely


@pytest.mark.parametrize("ext", EXTS)
def test_fingerprint_ignores_tag_writes(tmp_path, ext):
    p = af.make_file(tmp_path / f"a{ext}", genre="Rock")
    before, whole = fingerprint(p), file_fingerprint(p)
    write_genres_safely(p, ["Jazz", "Blues" * 3000])  # big enough to move things around
    assert fingerprint(p) == before
    assert file_fingerprint(p) != whole
    other = af.make_file(tmp_path / f"b{ext}", freq=880.0, genre="Rock")
    assert fingerprint(other) != before


def test_fingerprint_mp3_skips_trailing_tags(tmp_path):
    p = af.make_file(tmp_path / "a.mp3", genre="Rock")
    before = fingerprint(p)
    with open(p, "ab") as f:  # an ID3v1 tag at the end
        f.write(b"TAG" + b"\0" * 124 + b"\x11")
    assert fingerprint(p) == before


@pytest.mark.parametrize("ext", [".wav", ".aiff"])
@pytest.mark.parametrize("damage", ["shifted", "cut"])
def test_iff_chunks_that_do_not_fill_the_file_are_refused(tmp_path, ext, damage):
    """Bytes lost or added inside the audio chunk hide the ID3 chunk behind it (mutagen stops at the first
    chunk header it cannot read): the tag is refused as damaged, not read as "no genre" and given a second one."""
    p = af.make_file(tmp_path / f"a{ext}", genre="Rock")
    data = p.read_bytes()
    mid = len(data) // 2  # inside the audio chunk; the ID3 chunk comes after it
    data = data[:mid] + b"\0" * 10 + data[mid:] if damage == "shifted" else data[:mid]
    p.write_bytes(data)
    with pytest.raises(DamagedTagError, match=r"^damaged (wav|aiff) chunks: they cover"):
        read_tags(p)
    with pytest.raises(TagError, match="damaged"):
        write_genres_safely(p, ["Jazz"])
    assert p.read_bytes() == data


def _corrupt_frame(p: Path, how: str) -> bytes:
    """Damage the TIT2 frame of an mp3's ID3v2.4 tag: its size, or its frame ID."""
    data = bytearray(p.read_bytes())
    at = data.index(b"TIT2")
    if how == "size":
        data[at + 4:at + 8] = b"\x00\x00\x7f\x7f"
    else:
        data[at:at + 4] = b"T\x00T2"
    p.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("how", ["size", "id"])
def test_corrupt_id3_frame_is_refused_untouched(tmp_path, fake_model, tiny, how):
    lib = library(tmp_path / "lib", genre="Rock", exts=[".flac"])
    bad = af.make_file(lib / "bad.mp3", genre="Rock")
    damaged = _corrupt_frame(bad, how)
    res = run("tag", lib, "--write", "--overwrite", "-j", "1", "--format", "jsonl", "--model", tiny)
    assert res.exit_code == 1, res.output
    out = rows(res)
    assert out["bad.mp3"]["action"] == "error"
    assert any(w in out["bad.mp3"]["error"] for w in ("invalid frame ID", "past the end", "damaged")), out
    assert "\n" not in out["bad.mp3"]["error"]
    assert bad.read_bytes() == damaged
    assert out["song.flac"]["action"] == "written"
    dry = run("tag", bad, "--overwrite", "-j", "1", "--format", "jsonl", "--model", tiny)
    assert dry.exit_code == 1 and rows(dry)["bad.mp3"]["action"] == "error"


def test_other_frames_keep_their_bytes(tmp_path):
    """Frames mutagen would re-encode (UTF-16 BE, trailing nulls, flags) are kept byte for byte; v2.2 stays v2.2."""
    def to_syncsafe(n: int) -> bytes:
        return bytes((n >> (7 * (3 - i))) & 0x7F for i in range(4))

    def frame(fid: bytes, body: bytes, flags: bytes = b"\0\0") -> bytes:
        return fid + len(body).to_bytes(4, "big") + flags + body

    for major, frames in (
        (3, [frame(b"TIT2", b"\x01\xfe\xff\x00A\x00\x00"), frame(b"TPE1", b"\x00Someone\x00"),
             frame(b"TCON", b"\x00Rock\x00"), frame(b"PRIV", b"owner\x00\x01\x02", b"\x00\x20"[::-1])]),
        (2, [b"TT2" + (9).to_bytes(3, "big") + b"\x00A Song\x00\x00", b"TCO" + (5).to_bytes(3, "big") + b"\x00Rock"]),
    ):
        body = b"".join(frames)
        tag = b"ID3" + bytes((major, 0, 0)) + to_syncsafe(len(body) + 64) + body + b"\0" * 64
        p = tmp_path / f"v2{major}.mp3"
        audio = af.make_file(tmp_path / "src.mp3").read_bytes()
        p.write_bytes(tag + audio)
        write_genres_safely(p, ["Jazz", "Blues"])
        data = p.read_bytes()
        assert data[3] == major
        for f in frames:
            if f[:3] not in (b"TCO",):
                assert f in data[:len(tag) + 200], f
        assert data.endswith(audio)
        assert af.genre_values(p) == ["Jazz; Blues"]  # v2.3 and v2.2 hold one text value: joined


def test_vorbis_comments_mutagen_would_rewrite_keep_their_bytes(tmp_path):
    """A comment that is not UTF-8, and one without "=": mutagen would save them changed."""
    import struct as st

    from mutagen.flac import FLAC

    p = af.make_file(tmp_path / "a.flac", genre="Rock")
    odd = [b"TITLE=caf\xe9", b"NOEQUALSIGN", b"genre=Rock"]
    f = FLAC(p)
    f.save()
    data = bytearray(p.read_bytes())
    pos = 4
    while True:  # replace the comment block by a hand-made one
        head, n = data[pos], int.from_bytes(data[pos + 1:pos + 4], "big")
        if head & 0x7F == 4:
            block = st.pack("<I", 3) + b"ven" + st.pack("<I", len(odd)) + b"".join(
                st.pack("<I", len(c)) + c for c in odd)
            data[pos:pos + 4 + n] = bytes([head]) + len(block).to_bytes(3, "big") + block
            break
        pos += 4 + n
    p.write_bytes(bytes(data))
    write_genres_safely(p, ["Jazz"])
    out = p.read_bytes()
    assert b"TITLE=caf\xe9" in out and b"NOEQUALSIGN" in out and b"GENRE=Jazz" in out
    assert b"=Rock" not in out
    assert len(FLAC(p).pictures) == 1


def test_mp4_items_keep_their_bytes(tmp_path):
    """A title whose data atom has a locale set: mutagen would render it with locale 0."""
    p = af.make_file(tmp_path / "a.m4a", genre="Rock")
    data = bytearray(p.read_bytes())
    i = data.index(b"\xa9nam")  # [size][\xa9nam][size]["data"][type][locale]...
    data[i + 16:i + 20] = b"\0\0\0\x07"
    p.write_bytes(bytes(data))
    item = bytes(data[i - 4:i - 4 + int.from_bytes(data[i - 4:i], "big")])
    write_genres_safely(p, ["Jazz"])
    assert af.genre_values(p) == ["Jazz"]
    assert item in p.read_bytes()
