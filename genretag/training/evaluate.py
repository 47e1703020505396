"""Measuring models: on a dataset split (track and sub-track accuracy, F1, confusion, ECE), and on any
labelled music (top-1, F1, the precision/coverage curve over confidence thresholds, abstentions).

Several models form an ensemble: the mean of their sub-track probabilities.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genretag.model import Model
from genretag.pipeline.calibration import Calibration
from genretag.pipeline.segments import SilentError, cut_segments, hard_vote, pick_audible, plan_segments, soft_vote
from genretag.training import metrics
from genretag.training.common import per_track
from genretag.training.dataset import Track, WaveCache, wave_cache
from genretag.training.labelled import IN_MODEL, NO_LABEL, Labelled


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


def predict_tracks(models: list[Model], tracks: list[Track], *, cache: WaveCache | None = None,
                   max_segments: int | None = None, batch: int = 64, progress=None,
                   logits: bool = False) -> Predictions:
    """Run every model over every track's sub-tracks; average the models' probabilities."""
    labels = models[0].labels
    if any(m.labels != labels for m in models):
        raise ValueError("models in an ensemble must share labels")
    per_model: list[list[np.ndarray]] = []
    for model in models:
        a = model.card.audio
        c = cache if cache is not None and cache.sample_rate == a.sample_rate else wave_cache(tracks, a.sample_rate)
        idx = c.index_of()
        segs = [track_segments(c, idx[t.id], a.segment_samples, max_segments or a.max_segments) for t in tracks]
        per_model.append(per_track(model.predict, segs, batch))
        if progress:
            progress(model)
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


def tag_threshold(card) -> tuple[float, str]:
    """The confidence below which `genretag tag` writes nothing with this model by default, and its source:
    the card's ``min_confidence`` when it has one, else genretag's default."""
    from genretag.tags.plan import DEFAULT_MIN_CONFIDENCE

    t = card.extra.get("min_confidence")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and 0.0 <= t <= 1.0:
        return float(t), "model card"
    return DEFAULT_MIN_CONFIDENCE, "genretag default"


def add_coverage(rep: dict, conf: np.ndarray, *, right: np.ndarray, in_labels: np.ndarray,
                 threshold: float, source: str) -> dict:
    """Add the precision/coverage curve (`curve`), the point at `threshold` (`at_threshold`) and the
    abstentions there to a report; returns it."""
    conf = np.asarray(conf, dtype=np.float64)
    in_labels = np.asarray(in_labels, dtype=bool)
    at = metrics.coverage_point(conf, right, in_labels, threshold)
    rep["threshold"] = {"value": float(threshold), "source": source}
    rep["curve"] = metrics.coverage_curve(conf, right, in_labels, metrics.thresholds(extra=(threshold,)))
    rep["at_threshold"] = at
    below = conf < threshold
    rep["abstentions"] = {"threshold": float(threshold), "files": int(below.sum()),
                          "in_labels": int((below & in_labels).sum()), "outside": int((below & ~in_labels).sum())}
    return rep


def gtzan_coverage(rep: dict, pred: Predictions, threshold: float, source: str,
                   calibration: Calibration | None = None) -> dict:
    """`add_coverage` for a dataset split. The confidence is what `tag` holds against the threshold:
    the soft vote's top probability, or for a calibrated model (`calibration`) that probability's
    calibrated confidence."""
    soft = np.array([soft_vote(p) for p in pred.seg_probs]) if pred.seg_probs else np.zeros((0, len(pred.labels)))
    conf = soft.max(axis=1) if len(soft) else np.zeros(0)
    if calibration is not None:
        conf = np.array([calibration(pred.labels[i], p) for i, p in zip(soft.argmax(axis=1), conf)])
    right = soft.argmax(axis=1) == pred.y_true() if len(soft) else np.zeros(0, dtype=bool)
    rep["accuracy"].setdefault("top1", rep["accuracy"]["soft"])
    return add_coverage(rep, conf, right=right, in_labels=np.ones(len(conf), dtype=bool), threshold=threshold,
                        source=source)


def labelled_report(items: Sequence[Labelled], results: Sequence, *, labels: list[str], threshold: float,
                    source: str = "") -> dict:
    """All metrics of one run over labelled files (`results`: their TrackResults, in the same order), JSON-ready.

    A file with one of the model's labels is right when its genre is one of them; a file
    outside the labels is never right (the right answer is to write nothing), so its genre
    counts against that genre's precision and as a false write in the curve. Files without a
    label are not scored: only how many would get a genre at `threshold` is counted.
    """
    idx = {lab: i for i, lab in enumerate(labels)}
    n = len(labels)
    conf_m = np.zeros((n, n), dtype=np.int64)
    outside_row = np.zeros(n, dtype=np.int64)
    files, errors = [], []
    conf, right, in_labels, probs, y = [], [], [], [], []
    outside_raw: Counter = Counter()
    per_written: Counter = Counter()
    per_right: Counter = Counter()
    no_label = no_label_written = 0
    for it, r in zip(items, results, strict=True):
        row = {"path": r.path, "labels": it.raw, "truth": it.truth, "kind": it.kind, "genre": r.genre,
               "confidence": r.confidence, "right": None, "error": r.error}
        if it.note:
            row["note"] = it.note
        files.append(row)
        if not r.ok:
            errors.append({"path": r.path, "error": r.error})
            continue
        if it.kind == NO_LABEL:
            no_label += 1
            no_label_written += int(r.confidence >= threshold)
            continue
        p = idx[r.genre]
        if it.kind == IN_MODEL:
            row["right"] = r.genre in it.truth
            t = idx[r.genre if row["right"] else it.truth[0]]
            conf_m[t, p] += 1
            probs.append([r.probabilities.get(lab, 0.0) for lab in labels])
            y.append(t)
        else:
            row["right"] = False
            outside_row[p] += 1
            outside_raw.update(it.raw)
        conf.append(r.confidence)
        right.append(row["right"])
        in_labels.append(it.kind == IN_MODEL)
        if r.confidence >= threshold:
            per_written[r.genre] += 1
            per_right[r.genre] += int(row["right"])
    y_arr = np.array(y, dtype=int)
    diag = int(np.trace(conf_m))
    rep = {
        "n_files": len(files),
        "n_tracks": int(conf_m.sum()),
        "n_outside": int(outside_row.sum()),
        "n_no_label": no_label,
        "n_errors": len(errors),
        "labels": labels,
        "accuracy": {"top1": diag / int(conf_m.sum()) if conf_m.sum() else 0.0},
        "macro_f1": metrics.macro_f1(conf_m, labels, outside_row),
        "per_class": metrics.per_class(conf_m, labels, outside_row),
        "confusion": conf_m.tolist(),
        "confusion_outside": outside_row.tolist(),
        "ece": metrics.ece(np.array(probs), y_arr) if len(y) else 0.0,
    }
    add_coverage(rep, np.array(conf), right=np.array(right, dtype=bool), in_labels=np.array(in_labels, dtype=bool),
                 threshold=threshold, source=source)
    for lab in labels:  # what `tag` would write of each genre at the threshold, and how much of it is right
        w = per_written[lab]
        rep["per_class"][lab]["at_threshold"] = {"written": w, "right": per_right[lab],
                                                 "precision": per_right[lab] / w if w else None}
    rep["outside"] = {"files": int(outside_row.sum()), "labels": dict(outside_raw.most_common()),
                      "predicted": {lab: int(c) for lab, c in zip(labels, outside_row) if c},
                      "written_at_threshold": rep["at_threshold"]["outside_written"]}
    rep["no_label"] = {"files": no_label, "written_at_threshold": no_label_written}
    rep["errors"] = errors
    rep["files"] = files
    return rep


def plot_report(rep: dict, path: str, title: str = "") -> None:
    """A PNG: precision against coverage, both against the confidence threshold, and the confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (axp, ax, axc) = plt.subplots(1, 3, figsize=(19, 6), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    curve = rep.get("curve", [])
    ts = [c["threshold"] for c in curve]
    prec = [np.nan if c["precision"] is None else c["precision"] for c in curve]
    cov = [c["coverage"] for c in curve]
    at = rep.get("at_threshold")
    axp.plot(cov, prec, marker=".", ms=3)
    if at and at["precision"] is not None:
        axp.plot([at["coverage"]], [at["precision"]], "o", color="grey")
        axp.annotate(f" t={at['threshold']:.2f} ({rep['threshold']['source']})", (at["coverage"], at["precision"]),
                     color="grey", va="top")
    axp.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="coverage (share of files written)",
            ylabel="precision (share of written genres right)", title="precision against coverage")
    axp.grid(alpha=0.3)
    ax.plot(ts, prec, label="precision")
    ax.plot(ts, cov, label="coverage")
    if rep.get("n_outside"):
        ax.plot(ts, [c["coverage_in_labels"] for c in curve], "--", label="coverage of the model's genres")
    if at:
        ax.axvline(at["threshold"], color="grey", lw=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence threshold (written when confidence >= t)",
           ylabel="share", title="over the confidence threshold")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    rows = rep["labels"] + (["(outside)"] if rep.get("n_outside") else [])
    m = np.asarray(rep["confusion"] + ([rep["confusion_outside"]] if rep.get("n_outside") else []))
    _draw_confusion(axc, m, rep["labels"], rows)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _draw_confusion(ax, m: np.ndarray, cols: list[str], rows: list[str]) -> None:
    ax.imshow(m, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center",
                        color="white" if m[i, j] > m.max() / 2 else "black")


def plot_confusion(conf: list[list[int]], labels: list[str], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    _draw_confusion(ax, np.asarray(conf), labels, labels)
    ax.set_aspect("equal")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
