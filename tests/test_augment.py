"""The library augmentations (genretag/training/augment.py) on synthetic audio."""

from __future__ import annotations

import numpy as np
import pytest

from genretag.training import augment as A
from genretag.training.dataset import Track, wave_cache

SR = 16000


def _music_like(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """A quiet tone with short loud hits (50 ms every 0.5 s) over a little noise: a high crest factor."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    env = np.where((t % 0.5) < 0.05, 0.8, 0.05)
    return (env * np.sin(2 * np.pi * 220 * t) + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def _slope_db_per_decade(y: np.ndarray) -> float:
    """Least-squares slope of the power spectrum (dB) against log10 frequency, 100 Hz - 6 kHz."""
    spec = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    band = (f > 100) & (f < 6000)
    return float(np.polyfit(np.log10(f[band]), 10 * np.log10(spec[band] + 1e-20), 1)[0])


def test_compressor_lowers_crest_factor_and_reaches_target_level():
    y = _music_like()
    out = A.compress(y, SR, threshold_db=A.rms_db(y) - 6, ratio=6, target_db=-11.0)
    assert out.shape == y.shape and out.dtype == np.float32
    assert A.crest_factor_db(out) < A.crest_factor_db(y) - 2
    assert abs(A.rms_db(out) - (-11.0)) < 1.5  # the limiter may take a little off
    assert np.max(np.abs(out)) <= 10 ** (-1 / 20) + 1e-6


def test_compressor_leaves_signal_below_threshold_alone():
    y = 0.01 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32)
    out = A.compress(y, SR, threshold_db=-10, ratio=4, target_db=None)
    np.testing.assert_allclose(out, y, atol=1e-6)


@pytest.mark.parametrize("tilt", [-6.0, -3.0, 3.0, 6.0])
def test_tilt_moves_spectral_slope_in_its_direction(tilt):
    y = np.random.default_rng(1).standard_normal(SR * 2).astype(np.float32) * 0.1
    before, after = _slope_db_per_decade(y), _slope_db_per_decade(A.tilt(y, SR, tilt))
    assert abs((after - before) - tilt) < 1.0


def test_codec_roundtrip_same_length_and_close():
    y = _music_like(seconds=2.5)
    for kbps in (96, 320):
        out = A.codec_roundtrip(y, SR, kbps)
        assert out.shape == y.shape and out.dtype == np.float32
        assert np.corrcoef(out, y)[0, 1] > 0.95  # aligned: the decoder's delay is removed


def test_library_version_reproducible_per_track_and_copy(tmp_path):
    y = _music_like(seconds=2.0)
    a, pa = A.library_version(y, SR, "rock/rock.00001", 0)
    b, pb = A.library_version(y, SR, "rock/rock.00001", 0)
    c, pc = A.library_version(y, SR, "rock/rock.00001", 1)
    assert pa == pb and np.array_equal(a, b)
    assert pa != pc
    assert a.shape == y.shape == c.shape
    assert A.parse_variant("library:2") == 2 and A.parse_variant("orig") is None
    with pytest.raises(ValueError):
        A.parse_variant("library:x")


def test_library_cache_from_decoded_cache(tmp_path):
    from audio_factory import write_audio

    tracks = []
    for i, g in enumerate(("rock", "pop")):
        (tmp_path / g).mkdir()
        p = write_audio(tmp_path / g / f"{g}.0000{i}.wav", _music_like(seconds=1.5, seed=i), SR)
        tracks.append(Track(f"{g}/{g}.0000{i}", g, p))
    clean = wave_cache(tracks, SR, root=tmp_path / "cache")
    lib = A.library_cache(tracks, clean, 0, root=tmp_path / "cache")
    again = A.library_cache(tracks, clean, 0, root=tmp_path / "cache")
    assert lib.ids == clean.ids and list(lib.lengths) == list(clean.lengths)
    for i in range(2):
        expected, _ = A.library_version(np.asarray(clean.wave(i), np.float32), SR, tracks[i].id, 0)
        np.testing.assert_allclose(np.asarray(lib.wave(i), np.float32), expected, atol=2e-3)  # float16 storage
        assert np.array_equal(np.asarray(again.wave(i)), np.asarray(lib.wave(i)))
