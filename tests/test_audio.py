"""Decoding every supported format, reading only the sub-tracks needed, bad files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_factory import FORMATS, make_file, make_tone, write_audio

from genretag.audio import decode as audio
from genretag.card import AudioParams, MelParams
from genretag.nets.features import LogMel
from genretag.pipeline.prepare import prepare_file


def dominant_freq(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[spec.argmax()])


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_every_format_decodes_to_mono_at_the_asked_rate(tmp_path, ext):
    path = make_file(tmp_path / f"tone{ext}", seconds=2.0, freq=440.0, channels=2)
    ai = audio.info(path)
    assert ai.duration == pytest.approx(2.0, abs=0.1)
    segs = audio.read_segments(path, [0.5, 1.0], 0.5, 16000, ai)
    assert segs.shape == (2, 8000) and segs.dtype == np.float32
    for s in segs:
        assert np.abs(s).max() > 0.1, "decoded audio is silent"
        assert dominant_freq(s, 16000) == pytest.approx(440.0, abs=8.0)


def test_multichannel_96k_24bit(tmp_path):
    x = make_tone(96000, 1.5, 1000.0, channels=6)
    path = tmp_path / "surround.wav"
    sf.write(str(path), x, 96000, subtype="PCM_24")
    y = audio.load(path, 22050)
    assert y.shape == (int(round(1.5 * 22050)),)
    assert dominant_freq(y[2000:20000], 22050) == pytest.approx(1000.0, abs=5.0)


@pytest.mark.parametrize("ext", [".wav", ".flac", ".aiff"])
def test_segments_equal_the_same_stretch_of_a_full_decode(tmp_path, ext):
    """Reading pieces gives exactly the samples (and mel) of decoding everything."""
    sr = 22050
    rng = np.random.default_rng(1)
    x = (0.3 * rng.standard_normal(sr * 40)).astype(np.float32)
    path = write_audio(tmp_path / f"long{ext}", x, sr)
    full = audio.load(path, sr)
    offsets = [0.0, 7.25, 20.0, 37.0]
    segs = audio.read_segments(path, offsets, 3.0, sr)
    n = 3 * sr
    ref = np.stack([full[int(round(o * sr)):int(round(o * sr)) + n] for o in offsets])
    np.testing.assert_array_equal(segs, ref)
    mel = LogMel(MelParams(), sr)
    with torch.inference_mode():
        np.testing.assert_allclose(mel(torch.from_numpy(segs)).numpy(), mel(torch.from_numpy(ref)).numpy())


def test_lossy_segments_match_full_decode_closely(tmp_path):
    sr = 44100
    path = make_file(tmp_path / "long.mp3", seconds=20.0, freq=330.0, sr=sr)
    full = audio.load(path, sr)
    seg = audio.read_segments(path, [12.0], 2.0, sr)[0]
    ref = full[12 * sr:14 * sr]
    # mp3 seeking is frame-accurate in libsndfile; allow a little codec slop
    assert np.corrcoef(seg, ref)[0, 1] > 0.99


def test_segment_past_the_end_is_zero_padded(tmp_path):
    path = make_file(tmp_path / "short.wav", seconds=1.0, sr=22050)
    segs = audio.read_segments(path, [0.0], 3.0, 22050)
    assert segs.shape == (1, 66150)
    assert np.abs(segs[0, :20000]).max() > 0.1
    assert np.all(segs[0, 23000:] == 0)


def test_long_file_costs_only_the_needed_reads(tmp_path):
    """A 20-minute file: ten 3 s sub-tracks come out, spread over the whole track."""
    sr = 8000
    n = sr * 60 * 20
    t = np.arange(n) / sr
    # frequency rises over the file, so each sub-track's pitch says where it came from
    f = 200 + 600 * t / t[-1]
    x = (0.4 * np.sin(2 * np.pi * np.cumsum(f) / sr)).astype(np.float32)
    path = write_audio(tmp_path / "mix.flac", x, sr)
    p = prepare_file(path, AudioParams(sample_rate=8000, segment_seconds=3.0, max_segments=10))
    assert p.error is None and p.waves.shape == (10, 24000)
    assert p.offsets[0] == 0.0 and p.offsets[-1] == pytest.approx(1200 - 3.0)
    freqs = [dominant_freq(w, sr) for w in p.waves]
    assert freqs == sorted(freqs) and freqs[0] < 260 and freqs[-1] > 740


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_bytes(b"this is not audio at all, just text\n" * 50), "cannot decode"),
    (lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt "), "cannot decode"),
])
def test_bad_files_raise_one_line_audio_errors(tmp_path, make, expected):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(audio.AudioError) as e:
        audio.read_segments(path, [0.0], 1.0, 16000)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_zero_length_audio(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(str(path), np.zeros((0,), dtype=np.float32), 22050)
    p = prepare_file(path, AudioParams())
    assert p.waves is None and "zero length" in p.error


def test_truncated_file_is_reported_not_raised(tmp_path):
    path = make_file(tmp_path / "cut.flac", seconds=3.0)
    data = path.read_bytes()
    path.write_bytes(data[:200])
    p = prepare_file(path, AudioParams())
    assert p.waves is None and p.error


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_permission_denied(tmp_path):
    path = make_file(tmp_path / "locked.wav")
    path.chmod(0)
    p = prepare_file(path, AudioParams())
    assert p.error == "permission denied"


def _chirp_noise(sr: int, seconds: float) -> np.ndarray:
    """Audio with no period: any stretch read from the wrong place differs from the right one."""
    rng = np.random.default_rng(7)
    t = np.arange(int(sr * seconds)) / sr
    return (0.3 * np.sin(2 * np.pi * (200 + 300 * t) * t) + 0.1 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("ext", [".ogg", ".opus", ".flac", ".wav", ".mp3"])
def test_each_stretch_decodes_as_a_linear_read_of_the_file(tmp_path, ext):
    """Sub-tracks a little apart (seek forward just past the last read) read the samples a decode
    of the whole file has there: libsndfile's forward seek in an Ogg stream does not."""
    sr = FORMATS[ext]
    path = write_audio(tmp_path / f"x{ext}", _chirp_noise(sr, 12.0), sr)
    whole, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    ai = audio.info(path)
    seconds = 0.9
    offsets = [0.0, 1.05, 2.1, 3.15, 6.0, 6.95]
    got = audio.read_segments(path, offsets, seconds, file_sr, ai)
    n = int(round(seconds * file_sr))
    for off, row in zip(offsets, got):
        start = int(round(off * file_sr))
        want = whole[start:start + n, 0]
        assert np.abs(row[:want.size] - want).max() < 1e-5, f"stretch at {off} s"


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_a_subset_of_sub_tracks_decodes_as_among_all_of_them(tmp_path, ext):
    """What early exit decodes first (and later the rest) is what a decode of every sub-track
    gives for those sub-tracks."""
    sr = FORMATS[ext]
    path = write_audio(tmp_path / f"x{ext}", _chirp_noise(sr, 20.0), sr)
    params = AudioParams(sample_rate=16000, segment_seconds=1.488, max_segments=10)
    from genretag.pipeline.early_exit import EarlyExit
    from genretag.pipeline.prepare import prepare_rest

    full = prepare_file(path, params)
    first = prepare_file(path, params, early_exit=EarlyExit((3,), 0.5))
    assert full.error is None and first.error is None and full.offsets == first.offsets
    if audio.info(path).backend != "soundfile":  # PyAV files are decoded in one pass
        assert first.rows is None and np.array_equal(first.waves, full.waves)
        return
    assert first.rows == (1, 5, 8) and first.missing == (0, 2, 3, 4, 6, 7, 9)
    rest = prepare_rest(first, params)
    assert rest.rows == first.missing
    together = np.zeros_like(full.waves)
    together[list(first.rows)] = first.waves
    together[list(rest.rows)] = rest.waves
    assert np.abs(together - full.waves).max() < 1e-5
