"""A model's calibrated confidence: how often its answer is right on real recordings.

A network's softmax says how sure it is, not how often it is right on music unlike its training
data: on recordings outside GTZAN, a GTZAN model that says 0.9 is right far less often than 9 times
in 10. A card whose ``extra["calibration"]`` holds a fitted map (see ``scripts/broad_model.py``)
turns a genre's voted probability into the share of such answers that were right on labelled
recordings the network never saw. ``tag --min-confidence P`` then means: write only answers of which
at least about P are right.

The map is a logistic regression on two features of one label: its log-odds, and whether it is a
tag-evidence genre (:class:`genretag.nets.musicnn.MusicnnBroad`), whose probabilities run on a
different scale from the GTZAN head's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: How many of a file's best labels get a calibrated confidence (`--top-k` beyond this writes nothing more).
CALIBRATED_LABELS = 3


@dataclass(frozen=True)
class Calibration:
    """``confidence = sigmoid(w0 * logodds(p) + w1 * [label is tag-evidence] + c)``."""

    weights: tuple[float, float]
    intercept: float
    evidence_labels: frozenset[str] = frozenset()

    @classmethod
    def from_card(cls, card) -> Calibration | None:
        """The card's calibration, or None when it has none (its confidence is the softmax)."""
        spec: dict[str, Any] | None = card.extra.get("calibration")
        if not spec:
            return None
        if spec.get("kind") != "logistic" or len(spec.get("weights", [])) != 2:
            raise ValueError("extra.calibration must be {'kind': 'logistic', 'weights': [w0, w1], 'intercept': c}")
        values = [*spec["weights"], spec["intercept"]]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError("extra.calibration's weights and intercept must be finite numbers")
        evidence = frozenset(card.architecture.get("evidence", {}))
        return cls((float(spec["weights"][0]), float(spec["weights"][1])), float(spec["intercept"]), evidence)

    def __call__(self, label: str, probability: float) -> float:
        """The calibrated confidence of `label` given its voted probability."""
        p = min(max(float(probability), 1e-6), 1 - 1e-6)
        z = self.weights[0] * math.log(p / (1 - p)) + self.weights[1] * (label in self.evidence_labels)
        return 1.0 / (1.0 + math.exp(-(z + self.intercept)))

    def top(self, probabilities: dict[str, float], k: int = CALIBRATED_LABELS) -> dict[str, float]:
        """Calibrated confidences of the `k` most probable labels (rounded as the output is)."""
        ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])[:k]
        return {label: round(self(label, p), 6) for label, p in ranked}
