"""Augmentations that move GTZAN's recordings toward a modern library, applied before embedding.

GTZAN's clips are 22 kHz mono recordings of mixed age and level; a user's library is mostly
loud, compressed, 44.1 kHz stereo releases stored as MP3 or AAC. The functions here turn one
mono waveform into a plausible "library" version of it:

- :func:`compress`: a feed-forward soft-knee compressor (RMS detector, attack/release),
  make-up gain to a target loudness and a look-ahead peak limiter (modern mastering).
- :func:`tilt`: a spectral tilt of +-N dB per decade around 1 kHz (brighter or darker EQ).
- :func:`codec_roundtrip`: an MP3 encode/decode at a given bit rate (libsndfile's LAME).
- :func:`library_version`: a random chain of the three, reproducible from a seed.

Every function takes and returns float32 mono audio of the same length. A stereo source
folded to mono is already what every GTZAN clip is, so no fold is simulated.

Augmented copies are precomputed once per track (``wave_cache(..., variant="library:K")``,
K = copy number) and their embeddings cached like the clean ones: see
``genretag transfer --augment``.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import asdict, dataclass

import numpy as np

log = logging.getLogger(__name__)

VARIANT_PREFIX = "library:"
CHAIN_VERSION = "v1"  # part of the cache key of library versions: bump when the chain or its draws change


def rms_db(y: np.ndarray) -> float:
    """Root-mean-square level in dB full scale (a plain, unweighted loudness estimate)."""
    return float(10 * np.log10(np.mean(np.square(y, dtype=np.float64)) + 1e-12))


def crest_factor_db(y: np.ndarray) -> float:
    """Peak over RMS in dB: what compression and limiting lower."""
    return float(20 * np.log10(np.max(np.abs(y)) + 1e-12) - rms_db(y))


def _one_pole(x: np.ndarray, coef_up: float, coef_down: float) -> np.ndarray:
    """Attack/release smoothing of a (short, per-frame) envelope."""
    out = np.empty_like(x)
    s = x[0]
    for i, v in enumerate(x):
        c = coef_up if v > s else coef_down
        s = c * s + (1 - c) * v
        out[i] = s
    return out


def compress(y: np.ndarray, sr: int, *, threshold_db: float = -20.0, ratio: float = 4.0, knee_db: float = 6.0,
             attack_ms: float = 10.0, release_ms: float = 150.0, target_db: float | None = -11.0,
             ceiling_db: float = -1.0) -> np.ndarray:
    """Soft-knee compression, then make-up gain into a peak limiter until the output is at ``target_db`` RMS.

    ``threshold_db`` is relative to full scale on the signal as given. The detector is the RMS
    of 5 ms frames; the gain is smoothed with the attack and release times and interpolated
    back to samples. The limiter keeps every peak at or below ``ceiling_db``, so a loud target
    also lowers the crest factor (at most ``ceiling_db - target_db``), as loud mastering does.
    ``target_db=None``: no make-up gain, only the limiter.
    """
    y = np.asarray(y, dtype=np.float32)
    if len(y) == 0 or not np.any(y):
        return y.copy()
    hop = max(1, int(sr * 0.005))
    n_frames = int(np.ceil(len(y) / hop))
    pad = np.zeros(n_frames * hop, dtype=np.float64)
    pad[:len(y)] = y
    level = 10 * np.log10(np.mean(pad.reshape(n_frames, hop) ** 2, axis=1) + 1e-12)
    # soft-knee gain computer (Giannoulis, Massberg & Reiss 2012)
    over = level - threshold_db
    gain = np.where(over <= -knee_db / 2, 0.0,
                    np.where(over >= knee_db / 2, (1 / ratio - 1) * over,
                             (1 / ratio - 1) * (over + knee_db / 2) ** 2 / (2 * max(knee_db, 1e-6))))
    frame_s = hop / sr
    # gain falls (attack) and recovers (release): smooth the *negative* gain reduction
    att = np.exp(-frame_s / max(attack_ms / 1000, 1e-6))
    rel = np.exp(-frame_s / max(release_ms / 1000, 1e-6))
    reduction = _one_pole(-gain, att, rel)  # >= 0 dB of reduction
    centres = (np.arange(n_frames) + 0.5) * hop
    g = 10 ** (-np.interp(np.arange(len(y)), centres, reduction) / 20)
    out = y * g.astype(np.float32)
    if target_db is None:
        return limit(out, sr, ceiling_db=ceiling_db)
    # make-up gain into the limiter until the *limited* signal sits at the target level
    gain_db = target_db - rms_db(out)
    for _ in range(4):
        res = limit(out * np.float32(10 ** (gain_db / 20)), sr, ceiling_db=ceiling_db)
        miss = target_db - rms_db(res)
        if abs(miss) < 0.25:
            break
        gain_db += miss
    return res


def limit(y: np.ndarray, sr: int, *, ceiling_db: float = -1.0, lookahead_ms: float = 5.0,
          release_ms: float = 50.0) -> np.ndarray:
    """Look-ahead peak limiter: no sample above ``ceiling_db`` (a hard clip catches what smoothing misses)."""
    from scipy.ndimage import maximum_filter1d, uniform_filter1d

    ceiling = np.float32(10 ** (ceiling_db / 20))
    peak = maximum_filter1d(np.abs(y), size=max(1, int(sr * lookahead_ms / 1000) * 2 + 1))
    g = np.minimum(1.0, ceiling / np.maximum(peak, 1e-9))
    g = np.minimum(g, uniform_filter1d(g, size=max(1, int(sr * release_ms / 1000))))
    return np.clip(y * g.astype(np.float32), -ceiling, ceiling).astype(np.float32)


def tilt(y: np.ndarray, sr: int, db_per_decade: float, *, pivot_hz: float = 1000.0,
         max_gain_db: float = 9.0) -> np.ndarray:
    """Spectral tilt: gain ``db_per_decade * log10(f / pivot_hz)``, clamped to +-``max_gain_db``.

    Positive values brighten (more treble, less bass), negative ones darken. Applied with
    one FFT over the whole signal (zero-phase).
    """
    y = np.asarray(y, dtype=np.float32)
    n = len(y)
    if n < 2 or db_per_decade == 0:
        return y.copy()
    spec = np.fft.rfft(y.astype(np.float64))
    f = np.fft.rfftfreq(n, 1 / sr)
    f[0] = f[1] if len(f) > 1 else 1.0
    gain_db = np.clip(db_per_decade * np.log10(f / pivot_hz), -max_gain_db, max_gain_db)
    return np.fft.irfft(spec * 10 ** (gain_db / 20), n=n).astype(np.float32)


def _mp3_level(kbps: float) -> float:
    """libsndfile's MP3 ``compression_level`` for a CBR rate at 32-48 kHz (0 -> 320 kbps, ~1 -> 32 kbps)."""
    return float(np.clip((320.0 - kbps) / 288.0, 0.0, 0.99))


def codec_roundtrip(y: np.ndarray, sr: int, kbps: float = 128.0, codec_rate: int = 44100) -> np.ndarray:
    """MP3 encode + decode at ``kbps`` (constant bit rate), at ``codec_rate``, back at ``sr``, same length.

    The signal is resampled to ``codec_rate`` (a library's 44.1 kHz) so the bit rate means
    what it means for real files; the decoder's delay is removed by libsndfile (LAME header)
    and any difference in length is trimmed or zero-padded.
    """
    import soundfile as sf
    from scipy.signal import resample_poly

    y = np.asarray(y, dtype=np.float32)
    n = len(y)
    if n == 0:
        return y.copy()
    g = np.gcd(int(sr), int(codec_rate))
    up, down = codec_rate // g, sr // g
    x = resample_poly(y, up, down).astype(np.float32) if sr != codec_rate else y
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > 0.999:  # the encoder clips at full scale: keep the resampler's overshoot inside it
        x = x * np.float32(0.999 / peak)
    buf = io.BytesIO()
    sf.write(buf, x, codec_rate, format="MP3", subtype="MPEG_LAYER_III",
             compression_level=_mp3_level(kbps), bitrate_mode="CONSTANT")
    buf.seek(0)
    z, _ = sf.read(buf, dtype="float32", always_2d=False)
    if z.ndim > 1:
        z = z.mean(axis=1)
    if sr != codec_rate:
        z = resample_poly(z, down, up).astype(np.float32)
    out = np.zeros(n, dtype=np.float32)
    out[:min(n, len(z))] = z[:n]
    return out


@dataclass
class LibraryParams:
    """One draw of the chain (recorded per track; None = that step skipped)."""

    compress_threshold_below_rms_db: float | None
    compress_ratio: float | None
    target_db: float | None
    tilt_db_per_decade: float | None
    mp3_kbps: float | None


def draw_params(rng: np.random.Generator) -> LibraryParams:
    """Random chain: compression to -14..-9 dB RMS (p=0.8), tilt +-3..6 dB/decade (p=0.8), MP3 96-320 kbps (p=0.7)."""
    comp = rng.random() < 0.8
    til = rng.random() < 0.8
    mp3 = rng.random() < 0.7
    return LibraryParams(
        compress_threshold_below_rms_db=float(rng.uniform(0, 10)) if comp else None,
        compress_ratio=float(rng.uniform(2, 6)) if comp else None,
        target_db=float(rng.uniform(-14, -9)) if comp else None,
        tilt_db_per_decade=float(rng.choice([-1, 1]) * rng.uniform(3, 6)) if til else None,
        mp3_kbps=float(rng.choice([96, 128, 160, 192, 256, 320])) if mp3 else None,
    )


def describe(copies: int) -> dict:
    """What a model card records about the library versions its head was trained on."""
    return {"library_copies": copies, "made_by": "genretag.training.augment.library_version",
            "chain": ["EQ tilt +-3..6 dB/decade around 1 kHz (p=0.8)",
                      "soft-knee compressor, ratio 2-6, threshold 0-10 dB below the track's RMS, make-up gain "
                      "into a -1 dBFS peak limiter to -14..-9 dB RMS (p=0.8)",
                      "MP3 round trip at 44.1 kHz, 96-320 kbps CBR (p=0.7)"],
            "applied_to": "every training track and excerpt (and valid's for a refit), before embedding; "
                          "valid selection and test use the clean audio",
            "seeded_by": "sha256(track id | copy)"}


def apply_params(y: np.ndarray, sr: int, p: LibraryParams) -> np.ndarray:
    out = np.asarray(y, dtype=np.float32)
    if p.tilt_db_per_decade is not None:
        out = tilt(out, sr, p.tilt_db_per_decade)
    if p.compress_ratio is not None:
        out = compress(out, sr, threshold_db=rms_db(out) - p.compress_threshold_below_rms_db,
                       ratio=p.compress_ratio, target_db=p.target_db)
    if p.mp3_kbps is not None:
        out = codec_roundtrip(out, sr, p.mp3_kbps)
    return out


def seed_for(track_id: str, copy: int) -> int:
    """A per-track, per-copy seed that does not depend on the order tracks are processed in."""
    return int.from_bytes(hashlib.sha256(f"{track_id}|{copy}".encode()).digest()[:8], "little")


def library_version(y: np.ndarray, sr: int, track_id: str, copy: int = 0) -> tuple[np.ndarray, dict]:
    """The ``copy``-th random library version of a track, and the parameters drawn."""
    p = draw_params(np.random.default_rng(seed_for(track_id, copy)))
    return apply_params(y, sr, p), asdict(p)


def parse_variant(variant: str) -> int | None:
    """``"library:K"`` -> K (copy number); anything else -> None."""
    if not variant.startswith(VARIANT_PREFIX):
        return None
    try:
        k = int(variant[len(VARIANT_PREFIX):])
    except ValueError:
        raise ValueError(f"bad augmentation variant {variant!r} (library:K, K >= 0)") from None
    if k < 0:
        raise ValueError(f"bad augmentation variant {variant!r} (library:K, K >= 0)")
    return k


def library_cache(tracks: list, source, copy: int, *, root=None, progress=None):
    """A WaveCache of the ``copy``-th library version of ``tracks``, made from the decoded ``source`` cache.

    Stored beside the other decoded caches (``<cache>/features/<key>``) and reused while
    the files are unchanged; the drawn parameters are kept in its ``index.json``.
    """
    import json
    import os
    from pathlib import Path

    from genretag.paths import cache_dir
    from genretag.training.dataset import WaveCache, tracks_key

    root = Path(root) if root else cache_dir() / "features"
    key = tracks_key(tracks, source.sample_rate, f"{VARIANT_PREFIX}{copy}", CHAIN_VERSION)
    d = root / key
    meta_f, data_f = d / "index.json", d / "waves.f16"
    if meta_f.exists() and data_f.exists():
        meta = json.loads(meta_f.read_text())
        data = np.memmap(data_f, dtype=np.float16, mode="r")
        return WaveCache(meta["ids"], np.array(meta["offsets"]), np.array(meta["lengths"]), data, source.sample_rate)
    d.mkdir(parents=True, exist_ok=True)
    idx = source.index_of()
    offsets, lengths, params = [], [], []
    pos = 0
    tmp = data_f.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for t in tracks:
            y, p = library_version(np.asarray(source.wave(idx[t.id]), dtype=np.float32), source.sample_rate,
                                   t.id, copy)
            f.write(y.astype(np.float16).tobytes())
            offsets.append(pos)
            lengths.append(len(y))
            params.append(p)
            pos += len(y)
            if progress:
                progress(t)
    os.replace(tmp, data_f)
    meta_f.write_text(json.dumps({"ids": [t.id for t in tracks], "offsets": offsets, "lengths": lengths,
                                  "sample_rate": source.sample_rate, "variant": f"{VARIANT_PREFIX}{copy}",
                                  "params": params}))
    data = np.memmap(data_f, dtype=np.float16, mode="r")
    return WaveCache([t.id for t in tracks], np.array(offsets), np.array(lengths), data, source.sample_rate)
