"""The input side under hostile files: the real CLI, documented exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
from hostile import add_cover, assert_clean_stderr, cbr_mp3_without_xing, run_cli

from genretag.audio import decode as audio


def jsonl(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode("utf-8").splitlines() if line.strip()]


def test_cover_art_of_any_size_changes_no_probability(tmp_path, tiny_model_dir):
    bare = cbr_mp3_without_xing(tmp_path / "bare.mp3", seconds=8.0)
    files = [bare]
    for size in (200_000, 20_000_000):
        files.append(add_cover(shutil.copy(bare, tmp_path / f"cover{size}.mp3"), size))
    r = run_cli("classify", *map(str, files), "--model", str(tiny_model_dir), "-f", "jsonl", "-j", "1")
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    rows = jsonl(r.stdout)
    assert [row["path"] for row in rows] == list(map(str, files))
    ref = rows[0]["probabilities"]
    for row in rows[1:]:
        assert row["segments"] == rows[0]["segments"] == 3
        assert row["probabilities"] == pytest.approx(ref, abs=1e-5)


def test_mp3_length_is_the_decoded_length(tmp_path):
    """Frame-header count == samples a full decode gives (CBR, VBR with a LAME tag, MPEG-2 and 2.5)."""
    import soundfile as sf
    from audio_factory import make_file

    files = [cbr_mp3_without_xing(tmp_path / "cbr.mp3", seconds=3.3)]
    files += [make_file(tmp_path / f"vbr{sr}.mp3", seconds=2.2, sr=sr) for sr in (44100, 22050, 8000)]
    files.append(add_cover(shutil.copy(files[-1], tmp_path / "vbr_cover.mp3"), 50_000))
    for f in files:
        decoded = sf.read(str(f))[0].shape[0]
        ai = audio.info(f)
        assert round(ai.duration * ai.sample_rate) == decoded, f.name
