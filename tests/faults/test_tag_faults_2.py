"""Odd but real containers and tags through `genretag tag --write` and `genretag undo` (the real CLI).

Each file is built here the way other software writes it: a fragmented MP4 (`frag_keyframe+empty_moov`,
as PyAV/FFmpeg mux it), an ID3v2.4 tag with tag-level unsynchronisation, genre text that is not UTF-8,
multi-valued ID3v2.3/2.2 genres. The checks are the reader's: the audio decodes to its end with PyAV,
every packet is the same, every other tag as mutagen decodes it is the same, and undo gives back the
genre field's stored bytes.
"""

from __future__ import annotations

import base64
import json
import os
import random
import struct
from fractions import Fraction
from pathlib import Path

import audio_factory as af
import numpy as np
import pytest
from test_tag_faults import cli, jsonl, no_traceback, temps

from genretag.tags import vorbis

ARGS = ("--min-confidence", "0", "-j", "1", "--format", "jsonl")


def tag_write(model: Path, journal: Path, *paths: Path, policy: str = "--overwrite"):
    res = cli("tag", *paths, "--write", policy, *ARGS, "--journal", journal, "--model", model)
    no_traceback(res.stderr)
    return res


def undo(journal: Path):
    res = cli("undo", journal)
    no_traceback(res.stderr)
    return res


# --- what a player sees ---------------------------------------------------------------

def packets(path: Path) -> list[tuple]:
    """Every audio packet PyAV demuxes: (pts, dts, bytes)."""
    import av

    with av.open(str(path), metadata_errors="replace") as c:
        return [(p.pts, p.dts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.size]


def decoded_samples(path: Path) -> int:
    """Decode the whole file with PyAV (raises on data a decoder cannot read)."""
    import av

    with av.open(str(path), metadata_errors="replace") as c:
        return sum(f.samples for f in c.decode(c.streams.audio[0]))


# --- defect: fragmented MP4 with absolute tfhd base_data_offset in every moof ----------------------

def fragmented_m4a(path: Path, seconds: float = 6.0, sr: int = 44100) -> Path:
    """AAC in a fragmented MP4 (`frag_keyframe+empty_moov`, a fragment every 0.5 s), title and artist in moov."""
    import av

    x = af.make_tone(sr, seconds, freq=330.0)
    with av.open(str(path), "w", format="mp4",
                 options={"movflags": "frag_keyframe+empty_moov", "frag_duration": "500000"}) as out:
        out.metadata["title"] = "A Fragmented Song"
        out.metadata["artist"] = "Someone"
        st = out.add_stream("aac", rate=sr, layout="mono")
        st.time_base = Fraction(1, sr)
        for i in range(0, len(x), 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, i:i + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sr, i, Fraction(1, sr)
            for p in st.encode(frame):
                out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    return path


def top_atoms(path: Path) -> list[bytes]:
    data, pos, names = path.read_bytes(), 0, []
    while pos < len(data):
        size, name = struct.unpack_from(">I4s", data, pos)
        names.append(name)
        pos += size
    return names


@pytest.mark.slow
def test_fragmented_mp4_stays_decodable(tmp_path, tiny_model_dir):
    p = fragmented_m4a(tmp_path / "frag.m4a")
    names = top_atoms(p)
    assert names.count(b"moof") >= 8 and b"mfra" in names  # many fragments, and their index
    want_packets, want_samples, want_tags = packets(p), decoded_samples(p), af.all_tags(p)
    journal = tmp_path / "j.jsonl"
    res = tag_write(tiny_model_dir, journal, p)
    assert res.returncode == 0, res.stderr
    assert jsonl(res.stdout)["frag.m4a"]["action"] == "written"
    assert af.genre_values(p)  # the genre is there
    assert top_atoms(p).count(b"moof") == names.count(b"moof")
    assert packets(p) == want_packets and decoded_samples(p) == want_samples
    assert af.all_tags(p) == want_tags
    res = undo(journal)
    assert res.returncode == 0 and b"1 restored" in res.stderr, res.stderr
    assert af.genre_values(p) == []
    assert packets(p) == want_packets and decoded_samples(p) == want_samples
    assert temps(tmp_path) == []


def test_fragment_offsets_a_writer_forgets_are_refused(tmp_path, monkeypatch):
    """The safety net on its own: a writer that moves only the first fragment's offset (as mutagen alone
    does) is caught by the reader-side verification, and the file is left untouched."""
    import genretag.tags.mp4 as mp4
    from genretag.tags import TagError, write_genres_safely

    def first_fragment_only(tags, fileobj, atoms, delta, offset):
        for atom in atoms[b"moov"].findall(b"stco", True):
            tags._MP4Tags__update_offset_table(fileobj, ">%dI", atom, delta, offset)
        for atom in atoms[b"moof"].findall(b"tfhd", True):
            tags._MP4Tags__update_tfhd(fileobj, atom, delta, offset)

    p = fragmented_m4a(tmp_path / "frag.m4a")
    before = p.read_bytes()
    monkeypatch.setattr(mp4, "_update_offsets", first_fragment_only)
    with pytest.raises(TagError, match="verification failed"):
        write_genres_safely(p, ["Jazz"])
    assert p.read_bytes() == before and temps(tmp_path) == []


# --- defect: ID3v2.4 tag-level unsynchronisation ---------------------------------------

def _syncsafe(n: int) -> bytes:
    return bytes((n >> s) & 0x7F for s in (21, 14, 7, 0))


def unsynchronised_v24(path: Path, cover: bytes) -> Path:
    """An mp3 whose ID3v2.4 tag has the header's unsynchronisation flag, each frame body unsynchronised
    (a 00 after every FF), as some taggers write it."""
    from mutagen import id3
    from mutagen.id3._util import unsynch

    af.make_file(path, seconds=3.0)
    tags = id3.ID3()
    tags.add(id3.TIT2(encoding=3, text=["Unsynced"]))
    tags.add(id3.TPE1(encoding=3, text=["Someone"]))
    tags.add(id3.APIC(encoding=3, mime="image/jpeg", type=3, desc="cover", data=cover))
    tags.save(str(path), v2_version=4, padding=lambda info: 0)
    data = path.read_bytes()
    size = sum(b << s for b, s in zip(data[6:10], (21, 14, 7, 0)))
    body, audio = data[10:10 + size], data[10 + size:]
    frames, pos = [], 0
    while pos < len(body) and body[pos]:
        fsize = sum(b << s for b, s in zip(body[pos + 4:pos + 8], (21, 14, 7, 0)))
        fbody = unsynch.encode(body[pos + 10:pos + 10 + fsize])
        frames.append(body[pos:pos + 4] + _syncsafe(len(fbody)) + body[pos + 8:pos + 10] + fbody)
        pos += 10 + fsize
    new = b"".join(frames)
    path.write_bytes(b"ID3\x04\x00\x80" + _syncsafe(len(new)) + new + audio)
    return path


@pytest.mark.slow
def test_id3v24_unsynchronised_tag_keeps_cover_art(tmp_path, tiny_model_dir):
    cover = b"\xff\xd8\xff\xe0" + bytes(random.Random(7).choice([0xFF, 0x00, 0xE1, 0x12]) for _ in range(2400))
    p = unsynchronised_v24(tmp_path / "unsync.mp3", cover)
    assert p.read_bytes()[5] & 0x80 and len(p.read_bytes()) > len(cover) + 500  # really unsynchronised
    tags = af.all_tags(p)
    assert tags["APIC:cover"][1] == cover  # mutagen reads it back
    want_packets = packets(p)
    journal = tmp_path / "j.jsonl"
    res = tag_write(tiny_model_dir, journal, p)
    assert res.returncode == 0 and jsonl(res.stdout)["unsync.mp3"]["action"] == "written", res.stdout
    assert af.all_tags(p) == tags, "a tag field reads differently after the write"
    assert af.all_tags(p)["APIC:cover"][1] == cover
    assert packets(p) == want_packets and decoded_samples(p) > 0
    res = undo(journal)
    assert res.returncode == 0, res.stderr
    assert af.all_tags(p) == tags and af.genre_values(p) == []


# --- defect: genre text that is not UTF-8 -----------------------------------------------------

LATIN1 = b"Chanson fran\xe7aise"
PLACEHOLDER = b"Chanson franXaise"  # same length: swapped for the Latin-1 bytes after mutagen writes it


def latin1_genre(path: Path) -> Path:
    """A file whose genre holds Latin-1 bytes where UTF-8 belongs (FLAC GENRE, MP4 ©gen)."""
    af.make_file(path, seconds=3.0, genre=PLACEHOLDER.decode())
    data = path.read_bytes()
    assert data.count(PLACEHOLDER) == 1
    path.write_bytes(data.replace(PLACEHOLDER, LATIN1))
    return path


def stored_genre_items(path: Path) -> list[bytes]:
    """The genre field as stored, found without genretag: FLAC GENRE comments or the MP4 ©gen data payloads."""
    data = path.read_bytes()
    if path.suffix == ".flac":
        pos = 4
        while True:
            kind, n = data[pos] & 0x7F, int.from_bytes(data[pos + 1:pos + 4], "big")
            if kind == 4:
                block = vorbis.parse_comments(data[pos + 4:pos + 4 + n], "test")
                return [c for c in block.comments if c.upper().startswith(b"GENRE=")]
            if data[pos] & 0x80:
                return []
            pos += 4 + n
    at = data.find(b"\xa9gen")
    if at < 0:
        return []
    size = struct.unpack_from(">I", data, at - 4)[0]
    out, pos = [], at + 4
    while pos < at - 4 + size:
        n = struct.unpack_from(">I", data, pos)[0]
        out.append(data[pos + 16:pos + n])
        pos += n
    return out


def tag_api(p: Path, journal: Path, policy: str) -> None:
    """`genretag tag --write` through the Python API, for a file the CLI cannot classify here (an m4a with
    a non-UTF-8 text atom is a classification defect of its own): a Tagger fed a classification result."""
    from genretag.pipeline.inference import TrackResult
    from genretag.tags import Tagger

    result = TrackResult(str(p), "jazz", 0.9, {"jazz": 0.9, "rock": 0.1}, segments=1)
    [plan] = Tagger(policy=policy, write=True, journal=journal).run([result])
    assert plan.action == "written", plan


@pytest.mark.slow
@pytest.mark.parametrize("ext", [".flac", ".m4a"])
def test_genre_not_utf8_kept_by_append_and_undo(tmp_path, tiny_model_dir, ext):
    p = latin1_genre(tmp_path / f"latin1{ext}")
    original = stored_genre_items(p)
    assert len(original) == 1 and LATIN1 in original[0]
    others = af.all_tags(p)
    journal = tmp_path / "j.jsonl"
    if ext == ".flac":
        res = cli("tag", p, "--append", "--min-confidence", "0", "--model", tiny_model_dir)  # the table
        assert res.returncode == 0 and b"Chanson fran\\xe7aise" in res.stdout, no_traceback(res.stderr)
        res = tag_write(tiny_model_dir, journal, p, policy="--append")
        assert res.returncode == 0 and jsonl(res.stdout)[p.name]["action"] == "written", res.stdout
    else:
        tag_api(p, journal, "append")
    items = stored_genre_items(p)
    assert items[0] == original[0] and len(items) == 2  # the old value's bytes, then the new genre
    assert "\ufffd".encode() not in p.read_bytes()
    assert af.all_tags(p) == others
    if ext == ".flac":
        assert tag_write(tiny_model_dir, journal, p, policy="--overwrite").returncode == 0
    else:
        tag_api(p, journal, "overwrite")
    assert LATIN1 not in p.read_bytes()
    entries = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()]
    assert entries[0]["old"] == ["Chanson fran\udce7aise"]  # the stored byte, not U+FFFD
    assert [base64.b64decode(v) for v in entries[0]["old_raw"]] == [
        original[0] if ext == ".flac" else p_atom_of(original[0])]
    res = undo(journal)
    assert res.returncode == 0 and b"2 restored" in res.stderr, res.stderr
    assert stored_genre_items(p) == original and "\ufffd".encode() not in p.read_bytes()
    assert af.all_tags(p) == others and decoded_samples(p) > 0


def p_atom_of(payload: bytes) -> bytes:
    """The ©gen atom holding one UTF-8-typed data atom with `payload` (as mutagen wrote it)."""
    data = struct.pack(">I4sII", 16 + len(payload), b"data", 1, 0) + payload
    return struct.pack(">I4s", 8 + len(data), b"\xa9gen") + data


# --- defect: multi-valued ID3v2.3 / v2.2 genres through undo ----------------------------------

def _frame(version: int, fid: bytes, body: bytes) -> bytes:
    if version == 2:
        return fid + len(body).to_bytes(3, "big") + body
    return fid + len(body).to_bytes(4, "big") + b"\0\0" + body


def id3_with_genre_frames(path: Path, version: int, genre_frames: list[bytes]) -> Path:
    """An mp3 with a hand-built ID3v2.`version` tag: title, the given genre frame bodies, cover art."""
    af.make_file(path, seconds=3.0)
    tit, tcon, pic = (b"TT2", b"TCO", b"PIC") if version == 2 else (b"TIT2", b"TCON", b"APIC")
    art = (b"\x00PNG\x03cover\x00" if version == 2 else b"\x00image/png\x00\x03cover\x00") + af.png_bytes()
    frames = [_frame(version, tit, b"\x01" + "Two Genres".encode("utf-16"))]
    frames += [_frame(version, tcon, body) for body in genre_frames]
    frames.append(_frame(version, pic, art))
    body = b"".join(frames) + b"\0" * 64
    path.write_bytes(b"ID3" + bytes((version, 0, 0)) + _syncsafe(len(body)) + body + path.read_bytes())
    return path


@pytest.mark.parametrize("version,bodies", [
    (3, [b"\x00Rock", b"\x00Pop"]),  # two TCON frames
    (3, [b"\x01" + "Rock\0Pop".encode("utf-16")]),  # one UTF-16 frame, two null-separated values
    (2, [b"\x00Rock", b"\x00Pop"]),  # two TCO frames
    (2, [b"\x01" + "Rock\0Pop\0".encode("utf-16")]),
], ids=["v23-two-frames", "v23-utf16-null", "v22-two-frames", "v22-utf16-null"])
@pytest.mark.slow
def test_undo_restores_multi_valued_id3_genres_as_stored(tmp_path, tiny_model_dir, version, bodies):
    p = id3_with_genre_frames(tmp_path / "multi.mp3", version, bodies)
    originals = [_frame(version, b"TCO" if version == 2 else b"TCON", b) for b in bodies]
    others = af.all_tags(p)
    journal = tmp_path / "j.jsonl"
    res = tag_write(tiny_model_dir, journal, p)
    assert res.returncode == 0 and jsonl(res.stdout)["multi.mp3"]["action"] == "written", res.stdout
    assert not any(f in p.read_bytes() for f in originals)
    res = undo(journal)
    assert res.returncode == 0 and b"1 restored" in res.stderr, res.stderr
    data = p.read_bytes()
    assert b"".join(originals) in data, "the genre frames are not back as they were stored"
    assert "Rock; Pop".encode("utf-16-le") not in data and b"Rock; Pop" not in data
    assert af.genre_values(p) == ["Rock", "Pop"] and af.all_tags(p) == others
    assert data[3] == version


# --- user extended attributes --------------------------------------------------------------------

@pytest.mark.slow
def test_user_xattrs_survive_write_and_undo(tmp_path, tiny_model_dir):
    p = af.make_file(tmp_path / "x.flac", seconds=2.0, genre=None)
    try:
        os.setxattr(p, "user.comment", b"rated five stars")
    except OSError as e:
        pytest.skip(f"no user xattrs on this file system ({e.strerror})")
    journal = tmp_path / "j.jsonl"
    res = tag_write(tiny_model_dir, journal, p)
    assert res.returncode == 0 and af.genre_values(p), res.stdout
    assert os.getxattr(p, "user.comment") == b"rated five stars"
    assert undo(journal).returncode == 0
    assert os.getxattr(p, "user.comment") == b"rated five stars"


# --- undo of a write that added the tag ----------------------------------------------------------

@pytest.mark.parametrize("ext", [".mp3", ".wav", ".aiff"])
def test_undo_removes_the_id3_tag_the_write_added(tmp_path, ext):
    """A file without an ID3 tag (chunk) gets one from the write; undo gives back the file as it was,
    byte for byte, instead of leaving an empty tag behind."""
    from genretag.tags import JournalWriter, write_genres_safely
    from genretag.tags import undo as undo_api

    p = af.make_file(tmp_path / f"bare{ext}", seconds=1.0)
    before = p.read_bytes()
    journal = tmp_path / "j.jsonl"
    write_genres_safely(p, ["Rock"], before_replace=JournalWriter(journal))
    assert b"Rock" in p.read_bytes()
    assert [i.status for i in undo_api(journal)] == ["restored"]
    assert p.read_bytes() == before


def test_a_bad_old_raw_is_a_bad_journal_line(tmp_path):
    """`old_raw` is what undo writes back: one that is not base64 makes the line unusable, reported,
    and the file is not touched."""
    from genretag.tags import JournalWriter, write_genres_safely
    from genretag.tags import undo as undo_api

    p = af.make_file(tmp_path / "a.flac", seconds=1.0, genre="Pop")
    journal = tmp_path / "j.jsonl"
    write_genres_safely(p, ["Rock"], before_replace=JournalWriter(journal))
    entry = json.loads(journal.read_text())
    entry["old_raw"] = ["not base64 !"]
    journal.write_text(json.dumps(entry) + "\n")
    written = p.read_bytes()
    items = list(undo_api(journal))
    assert [i.status for i in items] == ["bad journal line"] and "old_raw" in items[0].message
    assert p.read_bytes() == written
