"""The importable API: `load_model(...)` and `Model.classify(...)`."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from genretag.pipeline.inference import TrackResult, classify
from genretag.store.load import LoadedNet, load_net


@dataclass
class Model:
    """A loaded model: its card (labels, parameters, metrics) and network."""

    loaded: LoadedNet

    @property
    def name(self) -> str:
        return self.loaded.card.name

    @property
    def labels(self) -> list[str]:
        return self.loaded.labels

    @property
    def card(self):
        return self.loaded.card

    @property
    def sample_rate(self) -> int:
        return self.loaded.card.audio.sample_rate

    def classify(self, inputs: Iterable[str | os.PathLike | np.ndarray] | str | os.PathLike | np.ndarray,
                 vote: str = "soft", segments: int | None = None, jobs: int = 1) -> list[TrackResult]:
        """Classify paths or mono waveforms at `self.sample_rate`; one result per input."""
        return list(classify(inputs, self.loaded, vote=vote, segments=segments, jobs=jobs))

    def predict_segments(self, waves: np.ndarray) -> np.ndarray:
        """Probabilities (batch, labels) for sub-track waveforms (batch, samples)."""
        return self.loaded.predict(waves)


def load_model(name_or_path: str | os.PathLike | None = None, device: str = "auto",
               precision: str = "fp32") -> Model:
    """Load a model by name (bundled or cached) or card path; None means the bundled default.

    ``precision="bf16"`` trades up to a few hundredths in the probabilities for speed on
    CUDA or AMX CPUs (see `genretag.store.load.load_net`).
    """
    return Model(load_net(name_or_path, device, precision=precision))
