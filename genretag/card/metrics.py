"""What a model card says was measured: typed, read and written by `genretag.card`.

A card's ``metrics`` object holds two kinds of entries:

- a *subset* (``"valid"``, ``"test"``, ``"test_excerpts"``, ``"valid_seen_in_training"``, ...): the
  figures `genretag train`, `transfer` and `evaluate` compute on it, a `SubsetMetrics`;
- a single *figure* or a *note* stated by whoever made the model (a ported tagger's ``"roc_auc"``,
  ``"pr_auc"`` and ``"metrics_source"``; a card that only states an ``"accuracy"``).

Anything else a card made elsewhere states (an object of other figures, a list) is kept as written,
and never taken for a headline: a model is not refused for what its card says was measured.

The JSON stays what it always was (a subset is an object of its six numbers), and a `SubsetMetrics`
reads like that object too (``card.metrics["test"]["accuracy_soft"]``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: The subset whose soft-vote accuracy is a card's headline: held out from training and selection.
HEADLINE_SUBSET = "test"
#: A card's own figures shown, in this order, when it has no measured test subset.
HEADLINE_FIGURES = ("roc_auc", "macro_f1", "f1", "pr_auc")


@dataclass(frozen=True)
class SubsetMetrics(Mapping):
    """Track-level figures on one subset (accuracies are fractions in [0, 1])."""

    n_tracks: int
    accuracy_soft: float  # the soft vote (mean of sub-track probabilities): what classify answers
    accuracy_hard: float  # the majority vote of sub-tracks
    accuracy_segment: float  # each sub-track on its own
    macro_f1: float
    ece: float  # expected calibration error of the soft vote's confidence

    @classmethod
    def from_report(cls, rep: dict[str, Any]) -> SubsetMetrics:
        """The card's figures out of a `genretag.training.evaluate.report`."""
        a = rep["accuracy"]
        return cls(int(rep["n_tracks"]), float(a["soft"]), float(a["hard"]), float(a["segment"]),
                   float(rep["macro_f1"]), float(rep["ece"]))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SubsetMetrics:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in d]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}")
        values = {n: d[n] for n in names}
        for n, v in values.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"'{n}' must be a number, not {v!r}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # A read-only mapping of the same keys as the JSON object.
    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


class CardMetrics(dict[str, Any]):
    """A card's ``metrics``: subset name -> `SubsetMetrics`, or a stated figure (number) or note (text);
    anything else as written."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> CardMetrics:
        """Parse the JSON object: an object with a subset's six figures becomes a `SubsetMetrics`."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ValueError("'metrics' must be an object")
        out = cls()
        for key, v in d.items():
            try:
                out[key] = SubsetMetrics.from_dict(v) if isinstance(v, Mapping) else v
            except ValueError:
                out[key] = v  # not a subset's figures: kept as written
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, SubsetMetrics) else v for k, v in self.items()}

    def subset(self, name: str) -> SubsetMetrics | None:
        v = self.get(name)
        return v if isinstance(v, SubsetMetrics) else None

    def headline_accuracy(self) -> float | None:
        """The test subset's soft-vote accuracy, else the card's stated ``accuracy``, else None."""
        test = self.subset(HEADLINE_SUBSET)
        if test is not None:
            return test.accuracy_soft
        v = self.get("accuracy")
        return float(v) if _number(v) else None

    def headline(self) -> tuple[str, float] | None:
        """(what, value) to show for the card: ``("accuracy", a)``, else its first stated figure."""
        a = self.headline_accuracy()
        if a is not None:
            return "accuracy", a
        for k in HEADLINE_FIGURES:
            v = self.get(k)
            if _number(v):
                return k, float(v)
        return None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
