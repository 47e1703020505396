"""How a transfer run scores what it tries on valid: per-track rows of sub-track logits, soft votes,
and the grid rows `better` compares (accuracy, then NLL)."""

from __future__ import annotations

from typing import Any

import numpy as np

from genretag.training import evaluate as ev
from genretag.training.common import softmax
from genretag.training.dataset import Track


def track_metrics(seg_logits: list[np.ndarray], y: np.ndarray, *, labels: list[str], tracks: list[Track],
                  temperature: float = 1.0) -> dict:
    """ev.report on per-track sub-track logits (softmax of logits / temperature)."""
    pred = ev.Predictions(tracks, labels, [softmax(lg / temperature) for lg in seg_logits])
    return ev.report(pred)


def split_rows(values: np.ndarray, track: np.ndarray, n_tracks: int) -> list[np.ndarray]:
    """Rows of ``values`` (one per sub-track) grouped by track: ``track[i]`` numbers row i's track."""
    return [values[track == i] for i in range(n_tracks)]


def valid_row(settings: dict[str, Any], seg_logits: list[np.ndarray], *, y: np.ndarray, labels: list[str],
              tracks: list[Track]) -> dict[str, Any]:
    """A grid row: the settings tried, with the valid tracks' soft-vote accuracy and NLL under them."""
    rep = track_metrics(seg_logits, y, labels=labels, tracks=tracks)
    return {**settings, "valid_acc": rep["accuracy"]["soft"], "valid_nll": rep["nll"]}


def row_score(row: dict) -> tuple[float, float]:
    """A grid row's valid (accuracy, NLL), as `better` compares them."""
    return row["valid_acc"], row["valid_nll"]
