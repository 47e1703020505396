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
from genretag.errors import one_line
from genretag.pipeline.segments import SilentError, cut_segments, pick_audible
from genretag.store.card import AudioParams

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """One input after decoding: its sub-tracks, or the one-line reason it failed."""

    path: str
    waves: np.ndarray | None  # (segments, samples) float32
    offsets: list[float]
    duration: float
    error: str | None = None


def prepare_file(path: str | os.PathLike, params: AudioParams, max_segments: int | None = None) -> Prepared:
    """Decode only the sub-tracks the model needs from one file. Never raises."""
    n = max_segments or params.max_segments
    p = os.fspath(path)
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
    """Cut an in-memory mono waveform (already at the model's sample rate) into sub-tracks."""
    n = max_segments or params.max_segments
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim == 2:  # (channels, samples)
        wave = wave.mean(axis=0)
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
