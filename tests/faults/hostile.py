"""Hostile inputs, built at test time, and the real CLI to run on them.

Every builder writes real files (made by `audio_factory`) and then damages or
disguises them the way files in the wild are damaged: cover art in front of an
mp3 with no Xing header, cut-off and bit-flipped files, names that are not
UTF-8 or start with a dash, FIFOs and symlink loops.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from audio_factory import make_tone


def run_cli(*args: str | bytes, cwd: str | os.PathLike | None = None, timeout: float = 300,
            preexec: list[str] | None = None, **kw) -> subprocess.CompletedProcess:
    """`python -m genretag ARGS` in a subprocess, output as bytes (names may not be UTF-8).

    `preexec` is a command prefix (for example `setpriv ...`) to run the CLI under.
    """
    cmd = [*(preexec or []), sys.executable, "-m", "genretag", *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run(cmd, capture_output=True, cwd=cwd, timeout=timeout, env=env, **kw)


def assert_clean_stderr(stderr: bytes) -> list[str]:
    """No traceback and no decoder chatter; returns the stderr lines."""
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    assert "libmpg123" not in text and "[src/" not in text, text
    return [line for line in text.splitlines() if line.strip()]


def varied_tone(sr: int, seconds: float) -> np.ndarray:
    """A tone whose pitch steps every second, so every sub-track position sounds different."""
    parts = [make_tone(sr, min(1.0, seconds - i), 220.0 * (1 + i % 7), seed=i)
             for i in range(int(np.ceil(seconds)))]
    return np.concatenate(parts)


def cbr_mp3_without_xing(path: str | os.PathLike, seconds: float = 8.0, sr: int = 44100) -> Path:
    """A constant-bitrate mp3 with no Xing/Info frame, as the GTZAN copies and many rips are."""
    from genretag.audio.mpeg import _FRAMES

    path = Path(path)
    sf.write(str(path), varied_tone(sr, seconds), sr, format="MP3", subtype="MPEG_LAYER_III",
             bitrate_mode="CONSTANT", compression_level=0.5)
    data = path.read_bytes()
    first = _FRAMES[(data[1] << 8) | data[2]][0]
    assert data[first:first + 2] == b"\xff\xfb" and b"Info" in data[:first]
    path.write_bytes(data[first:])  # drop the Info frame (it carries no audio)
    return path


def add_cover(path: str | os.PathLike, nbytes: int) -> Path:
    """Embed `nbytes` of cover art (an ID3v2 APIC frame) in front of an mp3's audio."""
    from mutagen import id3

    tags = id3.ID3()
    tags.add(id3.APIC(encoding=3, mime="image/jpeg", type=3, desc="cover",
                      data=b"\xff\xd8\xff\xe0" + random.Random(nbytes).randbytes(nbytes)))
    tags.save(str(path))
    return Path(path)


def truncated(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[:max(1, int(len(data) * fraction))])
    return dst


def bit_flipped(src: Path, dst: Path, flips: int, seed: int) -> Path:
    data = bytearray(src.read_bytes())
    rng = random.Random(seed)
    for _ in range(flips):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    dst.write_bytes(bytes(data))
    return dst
