"""Random mutations of valid files, and what the decoders and the tag writer must do with them.

Shared by `tests/faults/test_fuzz.py` (hypothesis, bounded) and `bench/fuzz.py`
(many more iterations, a JSON report). A mutation is a list of operations on
the file's bytes:

- ("flip", pos, bit): one bit flipped;
- ("set", pos, value): one byte replaced;
- ("truncate", pos): the file cut at pos;
- ("insert", pos, data): bytes inserted;
- ("delete", pos, n): n bytes removed;
- ("dup", pos, n, to): a span copied to another place;
- ("dup_unit", k): the k-th structural unit (an ID3 frame, an Ogg page, an MP4
  atom, a RIFF/IFF chunk, an mp3 frame; found by its marker) repeated in place.

Positions are taken modulo the current length, so any operation applies to
any file. The contract checked (`check_decode`, `check_tags`): decoding gives
audio or raises a one-line `GenretagError`; a tag write on the mutated file
either refuses with a one-line `TagError` and leaves the file byte-identical,
or writes the genre and keeps the audio payload and every other field
byte-identical. Nothing else may be raised, and nothing may hang.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import random
import re
import shutil
import signal
from pathlib import Path

import audio_factory as af
import numpy as np
from hostile import add_cover, cbr_mp3_without_xing

from genretag.audio import decode as audio
from genretag.audio.containers import fingerprint
from genretag.errors import GenretagError
from genretag.pipeline.segments import pick_audible
from genretag.tags import TagError, read_tags, write_genres_safely
from genretag.tags.safe_write import TMP_MARK

#: The bytes where tags and headers live; half of all positions land here.
HEAD = 4096
#: Markers of structural units, with the offset of the unit's start from the marker.
_UNITS = [(m, 0) for m in (b"OggS", b"TIT2", b"TPE1", b"TALB", b"TRCK", b"COMM", b"TXXX", b"TCON", b"APIC",
                           b"fmt ", b"data", b"SSND", b"COMM", b"ID3 ", b"id3 ", b"\xff\xfb")]
_UNITS += [(m, -4) for m in (b"moov", b"trak", b"mdia", b"udta", b"meta", b"ilst", b"mdat", b"\xa9nam",
                             b"\xa9ART", b"covr", b"stco", b"stsz")]
#: Seconds one example may take before it counts as a hang.
TIME_LIMIT = 30.0
NEW = ["Fuzzed", "Twice"]


class Hang(BaseException):
    """An example ran past TIME_LIMIT (a BaseException: no `except Exception` in the code under test eats it)."""


# --- the seed files ----------------------------------------------------------------

SEEDS = ("song.mp3", "v23.mp3", "cover-no-xing.mp3", "song.flac", "song.ogg", "song.opus", "song.m4a",
         "song.wav", "song.aiff")


def make_seed(name: str, folder: Path) -> bytes:
    """A valid, tagged file (title, artist, album, track, comment, art, genre) of the kind `name` says."""
    p = folder / name
    if name == "cover-no-xing.mp3":
        cbr_mp3_without_xing(p, seconds=1.0)
        add_cover(p, 3000)
        af.add_tags(p, genre=["Rock", "Pop"])
    elif name == "v23.mp3":
        af.make_file(p, seconds=0.5, genre=["Rock"], id3_version=3)
    else:
        af.make_file(p, seconds=0.5, genre=["Rock", "Pop"])
    return p.read_bytes()


# --- mutations ---------------------------------------------------------------------

def _units(data: bytes) -> list[int]:
    starts = set()
    for marker, shift in _UNITS:
        i = data.find(marker)
        while i >= 0 and len(starts) < 4096:
            if i + shift >= 0:
                starts.add(i + shift)
            i = data.find(marker, i + 1)
    return sorted(starts)


def mutate(seed: bytes, ops: list[tuple]) -> bytes:
    data = bytearray(seed)
    for op in ops:
        kind, n = op[0], len(data)
        if n == 0:
            break
        if kind == "flip":
            data[op[1] % n] ^= 1 << (op[2] % 8)
        elif kind == "set":
            data[op[1] % n] = op[2] % 256
        elif kind == "truncate":
            del data[max(1, op[1] % n):]
        elif kind == "insert":
            at = op[1] % (n + 1)
            data[at:at] = op[2]
        elif kind == "delete":
            at = op[1] % n
            del data[at:at + op[2]]
        elif kind == "dup":
            at = op[1] % n
            span = bytes(data[at:at + op[2]])
            to = op[3] % (n + 1)
            data[to:to] = span
        elif kind == "dup_unit":
            units = _units(bytes(data))
            if units:
                k = op[1] % len(units)
                start = units[k]
                end = units[k + 1] if k + 1 < len(units) else n
                data[end:end] = data[start:end][:1 << 20]
        else:
            raise ValueError(f"unknown mutation {kind!r}")
    return bytes(data)


def random_ops(rng: random.Random, size: int, max_ops: int = 4) -> list[tuple]:
    """The operations `mutation_strategy` draws from, drawn with `rng` (for bench/fuzz.py)."""
    def pos() -> int:
        return rng.randrange(min(HEAD, size)) if rng.random() < 0.5 else rng.randrange(size)

    ops = []
    for _ in range(rng.randint(1, max_ops)):
        kind = rng.choice(("flip", "flip", "set", "truncate", "insert", "delete", "dup", "dup_unit"))
        if kind == "flip":
            ops.append((kind, pos(), rng.randrange(8)))
        elif kind == "set":
            ops.append((kind, pos(), rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))))
        elif kind == "truncate":
            ops.append((kind, pos()))
        elif kind == "insert":
            ops.append((kind, pos(), rng.randbytes(rng.choice((1, 2, 4, 16, 300)))))
        elif kind == "delete":
            ops.append((kind, pos(), rng.choice((1, 2, 4, 16, 300))))
        elif kind == "dup":
            ops.append((kind, pos(), rng.choice((4, 10, 64, 1000)), pos()))
        else:
            ops.append((kind, rng.randrange(1000)))
    return ops


def mutation_strategy(size: int, max_ops: int = 4):
    """A hypothesis strategy of operation lists for a seed of `size` bytes."""
    from hypothesis import strategies as st

    pos = st.one_of(st.integers(0, min(HEAD, size) - 1), st.integers(0, size - 1))
    length = st.sampled_from((1, 2, 4, 16, 300)) | st.integers(1, 2000)
    op = st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("set"), pos, st.sampled_from((0, 0xFF, 0x7F, 0x80)) | st.integers(0, 255)),
        st.tuples(st.just("truncate"), pos),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=300)),
        st.tuples(st.just("delete"), pos, length),
        st.tuples(st.just("dup"), pos, length, pos),
        st.tuples(st.just("dup_unit"), st.integers(0, 999)),
    )
    # hypothesis's own operations (which it shrinks to a minimal failing case), and as many drawn the
    # way bench/fuzz.py draws them (spread over the file, where the small ones cluster at byte 0)
    drawn = st.integers(0, 2 ** 32 - 1).map(lambda s: random_ops(random.Random(s), size, max_ops))
    return st.one_of(st.lists(op, min_size=1, max_size=max_ops), drawn)


# --- the contract ------------------------------------------------------------------

@contextlib.contextmanager
def time_limit(seconds: float = TIME_LIMIT):
    """Raise Hang if the block runs longer than `seconds` (a loop in Python; main thread only).

    A hang inside a C decoder never returns to Python to see the alarm: then, at twice the limit,
    faulthandler prints every thread's stack and ends the process, so the run fails instead of hanging.
    """
    def on_alarm(signum, frame):
        raise Hang(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    faulthandler.dump_traceback_later(2 * seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _one_line(e: GenretagError) -> str:
    msg = str(e)
    assert msg and "\n" not in msg and len(msg) <= 300, repr(msg)
    return f"{type(e).__name__}: {msg}"


def check_decode(path: Path, sample_rate: int = 16000, seconds: float = 0.25, segments: int = 3) -> str:
    """What classification does with a file (length, sub-track placement and decoding, the audio
    fingerprint): each step succeeds or raises a one-line GenretagError. Returns what happened."""
    try:
        fingerprint(path)
    except GenretagError as e:
        return "fingerprint: " + _one_line(e)
    try:
        ai = audio.info(path)
        assert ai.sample_rate > 0 and ai.channels > 0 and np.isfinite(ai.duration), ai
        if ai.duration <= 0:
            return "zero length"
        offsets, waves = pick_audible(ai.duration, seconds, segments, lambda offs: audio.read_segments(
            path, offs, seconds, sample_rate, ai))
    except GenretagError as e:
        return "decode: " + _one_line(e)
    assert waves.shape == (len(offsets), round(seconds * sample_rate)) and waves.dtype == np.float32, waves.shape
    assert np.all(np.isfinite(waves))
    return "decoded"


def _mutagen_view(path: Path) -> dict:
    """`af.all_tags`, with mutagen's names for Vorbis comments lacking '=' (`unknown<index>`: the index
    moves when a genre comment is added before them) replaced by one sorted list."""
    tags = af.all_tags(path)
    unnamed = sorted(repr(tags.pop(k)) for k in [k for k in tags if re.fullmatch(r"unknown\d+", k)])
    return {**tags, "unknown": unnamed} if unnamed else tags


def check_tags(path: Path) -> str:
    """Read the tags, then write a genre: refused (one line, file byte-identical) or written (the new
    genre; the audio payload, every other field as genretag reads them and as mutagen reads them the same)."""
    data = path.read_bytes()
    try:
        before = read_tags(path)
    except TagError as e:
        assert path.read_bytes() == data
        return "read refused: " + _one_line(e)
    audio_before = fingerprint(path)
    try:
        others_before = _mutagen_view(path)
    except Exception:  # mutagen's own view, where mutagen can read the file at all
        others_before = None
    try:
        write_genres_safely(path, NEW)
    except TagError as e:
        assert path.read_bytes() == data, "a refused write changed the file"
        return "write refused: " + _one_line(e)
    finally:
        assert [q for q in path.parent.iterdir() if TMP_MARK in q.name] == []
    after = read_tags(path)
    assert after.values in (NEW, ["; ".join(NEW)]), after.values
    assert after.others == before.others, "a field other than the genre changed"
    assert fingerprint(path) == audio_before, "the audio payload changed"
    if others_before is not None:
        assert _mutagen_view(path) == others_before, "mutagen reads other fields differently after the write"
    return "written"


def run_case(seed: bytes, ops: list[tuple], folder: Path, name: str) -> tuple[str, str]:
    """Write the mutated file into `folder` (emptied first), check decoding, then the tag write."""
    for q in folder.iterdir():
        q.unlink() if not q.is_dir() else shutil.rmtree(q)
    p = folder / f"fuzz{os.path.splitext(name)[1]}"
    p.write_bytes(mutate(seed, ops))
    with time_limit():
        decoded = check_decode(p)
        tagged = check_tags(p)
    return decoded, tagged
