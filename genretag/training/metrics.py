"""Classification metrics on label indices: exact, dependency-free, easy to test."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """n x n counts; rows are true labels, columns predictions."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return m


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if y_true.size else 0.0


def per_class(conf: np.ndarray, labels: list[str], wrong: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per label (0 where undefined).

    `wrong` (per label): predictions of files that have none of the labels (music outside
    them), which count against each label's precision.
    """
    out = {}
    for i, lab in enumerate(labels):
        tp = conf[i, i]
        pred, true = conf[:, i].sum() + (wrong[i] if wrong is not None else 0), conf[i, :].sum()
        p = tp / pred if pred else 0.0
        r = tp / true if true else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        out[lab] = {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(true)}
    return out


def macro_f1(conf: np.ndarray, labels: list[str], wrong: np.ndarray | None = None) -> float:
    """Mean F1 over the labels that occur in the true labels (absent classes would be 0 by fiat)."""
    pc = per_class(conf, labels, wrong)
    present = [v["f1"] for v in pc.values() if v["support"] > 0]
    return float(np.mean(present)) if present else 0.0


def ece(probs: np.ndarray, y_true: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top-label confidence, equal-width bins."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.size == 0:
        return 0.0
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if sel.any():
            total += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total)


def nll(probs: np.ndarray, y_true: np.ndarray) -> float:
    p = np.clip(np.asarray(probs)[np.arange(len(y_true)), np.asarray(y_true, int)], 1e-12, 1.0)
    return float(-np.log(p).mean())


def thresholds(step: float = 0.01, extra: tuple[float, ...] = ()) -> list[float]:
    """0, step, ..., 1, plus `extra` (e.g. a model's own threshold), sorted and rounded to 6 places."""
    grid = {round(float(t), 6) for t in np.linspace(0.0, 1.0, round(1 / step) + 1)}
    return sorted(grid | {round(float(t), 6) for t in extra})


def coverage_point(conf: np.ndarray, right: np.ndarray, in_labels: np.ndarray, t: float) -> dict:
    """What writing every file whose confidence is at least `t` would do.

    `conf`, `right` and `in_labels` are per scored file: its confidence, whether its top
    genre is right, and whether it has one of the model's labels at all (a file outside
    them is never right). `coverage`: the share of files written; `precision`: the share
    of written files that are right (None when nothing is written); `coverage_in_labels`:
    the share of the files with one of the labels that are written; `outside_written`:
    the files outside the labels that would get a genre (false writes).
    """
    conf, right, in_labels = (np.asarray(a) for a in (conf, right, in_labels))
    w = conf >= t
    n_w, n_in = int(w.sum()), int(in_labels.sum())
    return {"threshold": float(t), "written": n_w, "right": int((w & right).sum()),
            "coverage": n_w / len(conf) if len(conf) else 0.0,
            "precision": float((w & right).sum() / n_w) if n_w else None,
            "coverage_in_labels": float((w & in_labels).sum() / n_in) if n_in else 0.0,
            "outside_written": int((w & ~in_labels).sum()),
            "abstained": int(len(conf) - n_w)}


def coverage_curve(conf: np.ndarray, right: np.ndarray, in_labels: np.ndarray, ts: list[float]) -> list[dict]:
    """`coverage_point` at each threshold of `ts`."""
    return [coverage_point(conf, right, in_labels, t) for t in ts]
