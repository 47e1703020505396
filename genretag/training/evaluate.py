"""Measuring models on a dataset split: track and sub-track accuracy, F1, confusion, ECE.

Several models form an ensemble: the mean of their sub-track probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genretag.pipeline.segments import SilentError, cut_segments, hard_vote, pick_audible, plan_segments, soft_vote
from genretag.store.load import LoadedNet
from genretag.training import metrics
from genretag.training.common import per_track
from genretag.training.dataset import Track, WaveCache, wave_cache


@dataclass
class Predictions:
    """Sub-track probabilities for a list of tracks (all models averaged)."""

    tracks: list[Track]
    labels: list[str]
    seg_probs: list[np.ndarray]  # per track: (segments, labels)

    def y_true(self) -> np.ndarray:
        idx = {lab: i for i, lab in enumerate(self.labels)}
        return np.array([idx[t.genre] for t in self.tracks])


def track_segments(cache: WaveCache, i: int, seg_samples: int, max_segments: int) -> np.ndarray:
    """The sub-tracks of cached track i, as classify cuts them (silent stretches avoided)."""
    y = cache.wave(i)
    sr = cache.sample_rate

    def read(offsets: list[float]) -> np.ndarray:
        return cut_segments(y, sr, offsets, seg_samples)

    try:
        return pick_audible(len(y) / sr, seg_samples / sr, max_segments, read)[1]
    except SilentError:  # classify would answer "silent"; a measurement still scores the track
        return read(plan_segments(len(y) / sr, seg_samples / sr, max_segments))


def predict_tracks(nets: list[LoadedNet], tracks: list[Track], cache: WaveCache | None = None,
                   max_segments: int | None = None, batch: int = 64, progress=None,
                   logits: bool = False) -> Predictions:
    """Run every model over every track's sub-tracks; average the models' probabilities."""
    labels = nets[0].labels
    if any(n.labels != labels for n in nets):
        raise ValueError("models in an ensemble must share labels")
    per_model: list[list[np.ndarray]] = []
    for net in nets:
        a = net.card.audio
        c = cache if cache is not None and cache.sample_rate == a.sample_rate else wave_cache(tracks, a.sample_rate)
        idx = c.index_of()
        segs = [track_segments(c, idx[t.id], a.segment_samples, max_segments or a.max_segments) for t in tracks]
        per_model.append(per_track(net.predict, segs, batch))
        if progress:
            progress(net)
    seg_probs = [np.mean([m[i] for m in per_model], axis=0) for i in range(len(tracks))]
    return Predictions(tracks, labels, seg_probs)


def report(pred: Predictions, split: str = "", subset: str = "") -> dict:
    """All metrics as a JSON-ready dict (accuracies as fractions in [0, 1])."""
    labels = pred.labels
    y = pred.y_true()
    soft = np.array([soft_vote(p) for p in pred.seg_probs]) if pred.seg_probs else np.zeros((0, len(labels)))
    hard = np.array([hard_vote(p).argmax() for p in pred.seg_probs], dtype=int)
    seg_true = np.concatenate([[y[i]] * len(p) for i, p in enumerate(pred.seg_probs)]) if len(y) else np.array([])
    seg_pred = np.concatenate([p.argmax(axis=1) for p in pred.seg_probs]) if len(y) else np.array([])
    y_soft = soft.argmax(axis=1) if len(y) else np.array([], dtype=int)
    conf = metrics.confusion(y, y_soft, len(labels))
    return {
        "split": split,
        "subset": subset,
        "n_tracks": int(len(y)),
        "n_segments": int(len(seg_true)),
        "labels": labels,
        "accuracy": {"soft": metrics.accuracy(y, y_soft), "hard": metrics.accuracy(y, hard),
                     "segment": metrics.accuracy(seg_true, seg_pred)},
        "macro_f1": metrics.macro_f1(conf, labels),
        "per_class": metrics.per_class(conf, labels),
        "confusion": conf.tolist(),
        "ece": metrics.ece(soft, y),
        "nll": metrics.nll(soft, y) if len(y) else 0.0,
    }


def plot_confusion(conf: list[list[int]], labels: list[str], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(conf)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center",
                        color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
