"""Where sub-tracks are cut, and how their votes become one answer per track."""

from __future__ import annotations

import math

import numpy as np


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
