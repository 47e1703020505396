"""Where sub-tracks are cut, and how their votes become one answer per track."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from genretag.errors import AudioError


def plan_segments(duration: float, segment_seconds: float, max_segments: int) -> list[float]:
    """Start times (s) of up to `max_segments` sub-tracks spread evenly over the track.

    A track shorter than one sub-track gives one sub-track at 0 (zero-padded
    when decoded). Otherwise as many whole sub-tracks as fit, capped at
    `max_segments`, with the first starting at 0 and the last ending at the
    track's end, so a 2-hour mix costs what a 30 s clip costs.
    """
    if max_segments < 1:
        raise ValueError("max_segments must be >= 1")
    if duration <= segment_seconds:
        return [0.0]
    fit = int(math.floor(duration / segment_seconds + 1e-9))
    n = max(1, min(max_segments, fit))
    if n == 1:
        return [round((duration - segment_seconds) / 2.0, 6)]
    last = duration - segment_seconds
    return [round(last * i / (n - 1), 6) for i in range(n)]


def cut_segments(wave: np.ndarray, sample_rate: int, offsets: list[float], samples: int) -> np.ndarray:
    """(len(offsets), samples) float32 stretches of an in-memory mono wave, zero-padded past its end."""
    return cut_at(wave, [int(round(off * sample_rate)) for off in offsets], samples)


def cut_at(wave: np.ndarray, starts: list[int], samples: int) -> np.ndarray:
    """(len(starts), samples) float32 stretches of `wave` from each start sample, zero-padded past its end."""
    out = np.zeros((len(starts), samples), dtype=np.float32)
    for i, start in enumerate(starts):
        chunk = wave[start:start + samples]
        out[i, :chunk.shape[0]] = chunk
    return out


#: A sub-track whose RMS is below this (-60 dBFS) is silence: a gap, a fade, an intro of
#: room noise. Quiet music (a pianissimo passage) stays 20 dB or more above it.
SILENCE_RMS = 10 ** (-60 / 20)


def audible(waves: np.ndarray) -> np.ndarray:
    """Per sub-track (rows of `waves`): True when its RMS is at or above SILENCE_RMS."""
    w = np.asarray(waves, dtype=np.float32)
    return np.sqrt(np.mean(np.square(w, dtype=np.float64), axis=1)) >= SILENCE_RMS


#: Less audio than this is a click or a cut-off stub, not a track: nothing to classify.
MIN_SECONDS = 0.25


class SilentError(AudioError):
    """Nothing to classify: every sub-track tried is silence, or the track is a stub."""


def pick_audible(duration: float, segment_seconds: float, max_segments: int,
                 read: Callable[[list[float]], np.ndarray]) -> tuple[list[float], np.ndarray]:
    """The evenly spread sub-tracks of `plan_segments`, with silent ones replaced by audible ones.

    `read(offsets)` decodes sub-tracks. When every planned sub-track is audible
    (music, the common case) that is the only read, and the result is exactly
    the plan. Otherwise up to 4x as many evenly spread candidates are read, and
    the silent sub-tracks are replaced by audible candidates spread over the
    track (fewer sub-tracks vote when fewer are audible), so long intros,
    outros and hidden-track gaps do not vote as "classical". Raises SilentError
    when nothing audible is found, or the track is shorter than MIN_SECONDS.
    """
    if duration < MIN_SECONDS:
        raise SilentError(f"too short: under {MIN_SECONDS} s of audio")
    offsets = plan_segments(duration, segment_seconds, max_segments)
    waves = read(offsets)
    loud = audible(waves)
    if loud.all():
        return offsets, waves
    keep = [(o, w) for o, w, ok in zip(offsets, waves, loud) if ok]
    tried = set(offsets)
    extra = [o for o in plan_segments(duration, segment_seconds, 4 * max_segments) if o not in tried]
    if extra and len(keep) < max_segments:
        extra_waves = read(extra)
        spare = [(o, w) for o, w, ok in zip(extra, extra_waves, audible(extra_waves)) if ok]
        want = min(max_segments - len(keep), len(spare))
        if want:
            picks = np.unique(np.round(np.linspace(0, len(spare) - 1, want)).astype(int))
            keep += [spare[i] for i in picks]
    if not keep:
        raise SilentError("silent: no sub-track above -60 dBFS")
    keep.sort(key=lambda ow: ow[0])
    return [o for o, _ in keep], np.stack([w for _, w in keep])


def soft_vote(probs: np.ndarray) -> np.ndarray:
    """Mean of the sub-tracks' probabilities: (segments, labels) -> (labels,)."""
    return np.asarray(probs, dtype=np.float64).mean(axis=0)


def hard_vote(probs: np.ndarray) -> np.ndarray:
    """Majority vote of sub-track argmaxes, ties broken by mean probability.

    Returns a distribution: the share of votes each label got, plus a tiny
    tie-breaking term from the mean probability, renormalised, so that
    argmax picks the majority and `confidence` is the vote share.
    """
    probs = np.asarray(probs, dtype=np.float64)
    votes = np.bincount(probs.argmax(axis=1), minlength=probs.shape[1]).astype(np.float64)
    share = votes / votes.sum()
    mean = probs.mean(axis=0)
    top = np.flatnonzero(votes == votes.max())
    winner = top[np.argmax(mean[top])]
    out = share.copy()
    # Make the winner strictly the argmax without changing any share by more than 1e-9.
    out[winner] += 1e-9
    return out / out.sum()


def vote(probs: np.ndarray, method: str = "soft") -> np.ndarray:
    """Combine (segments, labels) probabilities into one (labels,) distribution."""
    if method == "soft":
        return soft_vote(probs)
    if method == "hard":
        return hard_vote(probs)
    raise ValueError(f"unknown vote {method!r} (soft or hard)")
