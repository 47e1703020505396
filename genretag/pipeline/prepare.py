"""The per-file stage: path -> sub-track waveforms, ready for the model.

This module imports neither torch nor librosa, so worker processes that run
it start fast and stay small. Any executor that can call a picklable
top-level function (a joblib/loky pool here, a Dask cluster elsewhere) can
run it; the model stage (genretag.pipeline.inference) only sees `Prepared` items.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from genretag.audio import decode as audio
from genretag.card import AudioParams
from genretag.errors import one_line
from genretag.pipeline.segments import SilentError, cut_segments, pick_audible

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """One input after decoding: its sub-tracks, or the one-line reason it failed."""

    path: str
    waves: np.ndarray | None  # (segments, samples) float32
    offsets: list[float]
    duration: float
    error: str | None = None


def input_name(item: object) -> str:
    """How a result names an input that is neither a path nor a waveform: `<NoneType>`, `<int>`."""
    return f"<{type(item).__name__}>"


def prepare_file(path: str | bytes | os.PathLike, params: AudioParams, max_segments: int | None = None) -> Prepared:
    """Decode only the sub-tracks the model needs from one file (a `bytes` path is a file name's
    bytes). Never raises: anything that is not a path is an error result too."""
    n = max_segments or params.max_segments
    try:
        p = os.fsdecode(path)
    except TypeError:
        why = ("not a file path: a waveform outside a list (give waveforms in a list)" if isinstance(path, np.ndarray)
               else f"not a file path or a waveform: {type(path).__name__}")
        return Prepared(input_name(path), None, [], 0.0, why)
    try:
        ai = audio.info(p)
        if ai.duration <= 0:
            raise audio.AudioError("no audio (zero length)")
        offsets, waves = pick_audible(ai.duration, params.segment_seconds, n, lambda offs: audio.read_segments(
            p, offs, params.segment_seconds, params.sample_rate, ai))
        return Prepared(p, waves, offsets, ai.duration)
    except audio.AudioError as e:  # SilentError included
        return Prepared(p, None, [], 0.0, str(e))
    except MemoryError:
        return Prepared(p, None, [], 0.0, "out of memory while decoding")
    except Exception as e:  # a decoder bug must not stop a library-wide run
        log.debug("decoding %s failed", p, exc_info=True)
        return Prepared(p, None, [], 0.0, f"cannot decode: {one_line(e)}")


def prepare_waveform(name: str, wave: np.ndarray, params: AudioParams,
                     max_segments: int | None = None) -> Prepared:
    """Cut an in-memory waveform (already at the model's sample rate) into sub-tracks. Never raises.

    Mono is 1-D. A 2-D array is downmixed to the mean of its channels, which are its shorter
    axis: `(samples, channels)` as `soundfile.read` returns, or `(channels, samples)` as librosa
    and torchaudio do. Integer samples are scaled by their type's range (int16 full scale is
    1.0); anything but numbers (strings, objects, a 0-d array, 3 or more dimensions) is an
    error result.
    """
    n = max_segments or params.max_segments
    try:
        wave = waveform_as_mono(wave)
    except ValueError as e:
        return Prepared(name, None, [], 0.0, f"not a waveform: {e}")
    sr = params.sample_rate
    duration = wave.shape[0] / sr
    if wave.size == 0:
        return Prepared(name, None, [], 0.0, "no audio (zero length)")
    try:
        offsets, out = pick_audible(duration, params.segment_seconds, n,
                                    lambda offs: cut_segments(wave, sr, offs, params.segment_samples))
    except SilentError as e:
        return Prepared(name, None, [], duration, str(e))
    return Prepared(name, out, offsets, duration)


def waveform_as_mono(wave: np.ndarray) -> np.ndarray:
    """A waveform as mono float32 (see `prepare_waveform` for the rules); ValueError when it is none."""
    wave = np.asarray(wave)
    kind = wave.dtype.kind
    if kind not in "fiu":
        raise ValueError(f"its samples are {wave.dtype} values, not numbers")
    if wave.ndim not in (1, 2):
        raise ValueError(f"a {wave.ndim}-d array (mono is 1-d; several channels 2-d)")
    if kind == "i":
        wave = wave.astype(np.float32) / float(-np.iinfo(wave.dtype).min)
    elif kind == "u":
        mid = float(np.iinfo(wave.dtype).max // 2 + 1)
        wave = (wave.astype(np.float32) - mid) / mid
    else:
        wave = wave.astype(np.float32, copy=False)
    if wave.ndim == 2:  # the channels are the shorter axis
        wave = wave.mean(axis=1 if wave.shape[1] <= wave.shape[0] else 0, dtype=np.float32)
    return wave
