"""Fixtures of the tag tests: the tiny model's card path, and a network with fixed answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from tag_library import result

from genretag.pipeline import classifier as classifier_mod
from genretag.pipeline.inference import TrackResult


@pytest.fixture
def tiny(tiny_model_dir) -> str:
    """The tiny model's card path, for --model."""
    return str(tiny_model_dir)


@pytest.fixture
def fake_model(monkeypatch):
    """Replace the network's answers (not the CLI, cache or tag code) with fixed ones.

    Returns the dict name -> probabilities to fill; unknown files get jazz 0.6 / blues 0.3.
    """
    answers: dict[str, dict[str, float]] = {}

    def fake_classify(paths, net, vote="soft", segments=None, jobs=1, **_):
        for p in paths:
            name = Path(p).name
            if not Path(p).exists():
                yield TrackResult(p, None, None, {}, 0, "file not found")
            else:
                yield result(p, **answers.get(name, {"jazz": 0.6, "blues": 0.3}))

    monkeypatch.setattr(classifier_mod, "classify", fake_classify)
    return answers
