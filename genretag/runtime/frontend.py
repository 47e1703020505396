"""musicnn's log-mel in numpy: the input of every musicnn network, computed without torch.

The same steps as `genretag.nets.musicnn.musicnn_frontend` (torch, the reference): a periodic
Hann STFT (n_fft 512, hop 256, signal ends reflect-padded), power, a slaney mel filterbank of
96 bands, the mel power rounded to float16 and ``log10(10000 * mel + 1)``. The two agree to
float rounding; a mel value that falls next to a float16 rounding boundary can round the other
way (0.06 % of bins on music, a few 1e-4 in the log-mel), which moves a network's probabilities
by about 1e-5 (`tests/test_runtime.py`). Computing it here keeps torch out of a process that
runs the network in ONNX Runtime (`genretag.runtime.onnx`).
"""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
LOG_SCALE = 10000.0  # log10(1 + LOG_SCALE * mel)
FLOAT16_MAX = 65504.0


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    mel = f / f_sp
    log_region = f >= min_log_hz
    mel = np.where(log_region, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)
    return mel


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney-style, slaney-normalised mel filterbank, (n_mels, 1 + n_fft // 2) float32.

    Re-implements ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)`` (htk=False,
    norm="slaney") step by step, including its float32 storage between the triangle
    and the normalisation, so the result is bit-identical and librosa is not needed.
    """
    fmax = sr / 2.0 if fmax is None else fmax
    fftfreqs = np.linspace(0, sr / 2.0, 1 + n_fft // 2)
    mel_f = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    """The periodic Hann window of N_FFT samples, float32 (torch.hann_window(periodic=True))."""
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    window.setflags(write=False)
    return window


FLOAT16_MIN_NORMAL = np.float32(2.0 ** -14)


def through_float16(x: np.ndarray) -> np.ndarray:
    """``x.astype(np.float16).astype(np.float32)`` for a contiguous float32 array of values in
    [0, 65504] (or NaN), bit for bit, in float32 and integer arithmetic.

    numpy's conversion takes a slow path for values below float16's normal range, where about a
    fifth of a music log-mel's mel bins fall; it was a third of the log-mel's time (the figures
    are in docs/performance.md). Normal values keep their top 10 mantissa bits, rounded to nearest even on the 13 dropped
    bits (a carry moves into the exponent, as it must); smaller ones become the nearest even
    multiple of 2^-24, float16's subnormal step. Equal to numpy's on every float32 in
    [0, 65504] (`tests/test_runtime.py` checks a sample and the edges)."""
    bits = x.view(np.uint32)
    out = (bits >> 13) & np.uint32(1)
    out += bits
    out += np.uint32(0x0FFF)
    out &= np.uint32(0xFFFFE000)
    out = out.view(np.float32)
    tiny = x < FLOAT16_MIN_NORMAL
    if tiny.any():
        out[tiny] = np.rint(x[tiny] * np.float32(2.0 ** 24)) * np.float32(2.0 ** -24)
    return out


@functools.lru_cache(maxsize=1)
def _filterbank_t() -> np.ndarray:
    return np.ascontiguousarray(mel_filterbank().T)


def musicnn_logmel(waves: np.ndarray) -> np.ndarray:
    """(batch, samples) waveforms at 16 kHz -> (batch, frames, 96) float32 log-mel, frames = 1 + samples // 256.

    Needs more than 256 samples per waveform (the reflect padding), as the torch front end does.
    """
    import scipy.fft  # float32 in, complex64 out, and about twice as fast as numpy's FFT here

    x = np.asarray(waves, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected (batch, samples) waveforms, got shape {x.shape}")
    if x.shape[1] <= N_FFT // 2:
        raise ValueError(f"need more than {N_FFT // 2} samples per waveform, got {x.shape[1]}")
    x = np.pad(x, ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
    frames = 1 + (x.shape[1] - N_FFT) // HOP_LENGTH
    strided = np.lib.stride_tricks.as_strided(
        x, (x.shape[0], frames, N_FFT), (x.strides[0], x.strides[1] * HOP_LENGTH, x.strides[1]), writeable=False)
    # (batch, frames, 257) complex64; the windowed frames are a copy the transform may overwrite
    spec = scipy.fft.rfft(strided * _hann(), axis=-1, workers=1, overwrite_x=True)
    power = np.abs(spec)
    np.square(power, out=power)  # as torch computes it: the magnitude, squared
    # a BLAS product: `genretag.pipeline.threads.blas_threads` keeps it on one thread in a run
    mel = power @ _filterbank_t()  # (batch, frames, 96)
    # the original stores the mel power as float16 before the log; saturate instead of inf
    np.minimum(mel, np.float32(FLOAT16_MAX), out=mel)
    mel = through_float16(mel)
    mel *= np.float32(LOG_SCALE)  # the steps in place, each rounded as before
    mel += np.float32(1.0)
    return np.log10(mel, out=mel)
