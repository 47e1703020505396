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
from genretag.pipeline.early_exit import EarlyExit
from genretag.pipeline.segments import MIN_SECONDS, SilentError, audible, cut_segments, pick_audible, plan_segments

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """One input after decoding: its sub-tracks, or the one-line reason it failed.

    `waves` holds one row per start time in `offsets`, or, when `rows` is set,
    only the rows of those start times (indices into `offsets`, ascending): the
    first sub-tracks an early-exit vote looks at (`prepare_file(early_exit=...)`),
    or the rest of them (`prepare_rest`).
    """

    path: str
    waves: np.ndarray | None  # (segments, samples) float32
    offsets: list[float]
    duration: float
    error: str | None = None
    rows: tuple[int, ...] | None = None
    #: The file's stream parameters and the sub-track count asked for, kept (with `rows`) for
    #: decoding the rest: no second probe of the file, the same plan.
    info: audio.AudioInfo | None = None
    max_segments: int | None = None

    @property
    def missing(self) -> tuple[int, ...]:
        """Indices of `offsets` whose sub-tracks are not in `waves`."""
        if self.rows is None or self.waves is None:
            return ()
        have = set(self.rows)
        return tuple(i for i in range(len(self.offsets)) if i not in have)


def input_name(item: object) -> str:
    """How a result names an input that is neither a path nor a waveform: `<NoneType>`, `<int>`."""
    return f"<{type(item).__name__}>"


def prepare_file(path: str | bytes | os.PathLike, params: AudioParams, max_segments: int | None = None,
                 early_exit: EarlyExit | None = None) -> Prepared:
    """Decode only the sub-tracks the model needs from one file (a `bytes` path is a file name's
    bytes). Never raises: anything that is not a path is an error result too.

    With `early_exit`, only the sub-tracks the rule looks at first are decoded, when they are
    all audible (`Prepared.rows`); the model stage asks for the rest (`prepare_rest`) only for
    a track whose vote they leave undecided. Most tracks are decided by their first three of
    ten, so most of the decoding is never done.
    """
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
        first = _first_rows(p, ai, params, n, early_exit) if early_exit is not None else None
        if first is not None:
            return first
        offsets, waves = pick_audible(ai.duration, params.segment_seconds, n, lambda offs: audio.read_segments(
            p, offs, params.segment_seconds, params.sample_rate, ai))
        return Prepared(p, waves, offsets, ai.duration)
    except Exception as e:  # a decoder bug must not stop a library-wide run
        return _failed(p, e)


def _failed(path: str, e: Exception) -> Prepared:
    """The error result for a file whose decoding raised `e`."""
    if isinstance(e, audio.AudioError):  # SilentError included
        return Prepared(path, None, [], 0.0, str(e))
    if isinstance(e, MemoryError):
        return Prepared(path, None, [], 0.0, "out of memory while decoding")
    log.debug("decoding %s failed", path, exc_info=e)
    return Prepared(path, None, [], 0.0, f"cannot decode: {one_line(e)}")


def _first_rows(path: str, ai: audio.AudioInfo, params: AudioParams, n: int, rule: EarlyExit) -> Prepared | None:
    """The planned sub-tracks `rule` runs first, decoded alone; None when every one should be
    decoded now: a track with no more sub-tracks than the first look, a silent one among the
    first (`pick_audible` then replaces it), or a file PyAV decodes. libsndfile's seeks are
    exact, so a stretch decodes the same (to 5e-7) whether read alone or among the others;
    after a seek in an AAC stream PyAV's output depends on what was decoded before it (by up to
    0.2 in sample value), so those files keep one pass over all their sub-tracks and give the
    same answers as always. Chained Ogg files are read from their start anyway."""
    if ai.backend != "soundfile" or ai.sequential or ai.duration < MIN_SECONDS:
        return None
    offsets = plan_segments(ai.duration, params.segment_seconds, n)
    first = rule.next_stop(0, len(offsets))
    if first >= len(offsets):
        return None
    rows = tuple(sorted(rule.order(len(offsets))[:first]))
    waves = audio.read_segments(path, [offsets[i] for i in rows], params.segment_seconds, params.sample_rate, ai)
    if not audible(waves).all():
        return None
    return Prepared(path, waves, offsets, ai.duration, rows=rows, info=ai, max_segments=n)


def prepare_rest(first: Prepared, params: AudioParams) -> Prepared:
    """The sub-tracks `prepare_file(early_exit=...)` left out of `first` (`first.missing`). Never raises.

    When they are all audible the result holds just them (`rows`). When one is silent, the whole
    track is prepared again as without early exit (silent sub-tracks replaced: another plan), and
    the result holds every row of that plan (`rows` None)."""
    rows = first.missing
    try:
        waves = audio.read_segments(first.path, [first.offsets[i] for i in rows], params.segment_seconds,
                                    params.sample_rate, first.info)
        if audible(waves).all():
            return Prepared(first.path, waves, first.offsets, first.duration, rows=rows, info=first.info)
    except Exception as e:
        return _failed(first.path, e)
    return prepare_file(first.path, params, first.max_segments)


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
