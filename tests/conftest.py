"""Shared fixtures: an isolated cache/data dir for every test, and a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory) -> Path:
    """One folder of ONNX exports for the whole session (an export is named by the checksum of
    what it was made from, so tests share them safely; each costs a second or two to make)."""
    return tmp_path_factory.mktemp("genretag-onnx")


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path_factory, monkeypatch, onnx_dir) -> dict[str, Path]:
    """Keep the user's real cache (models, results, ONNX exports) and journal out of every test's reach."""
    base = tmp_path_factory.mktemp("genretag-home")
    dirs = {"cache": base / "cache", "data": base / "data"}
    monkeypatch.setenv("GENRETAG_CACHE_DIR", str(dirs["cache"]))
    monkeypatch.setenv("GENRETAG_DATA_DIR", str(dirs["data"]))
    monkeypatch.setenv("GENRETAG_ONNX_DIR", str(onnx_dir))
    monkeypatch.setenv("NO_COLOR", "1")
    return dirs


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny, randomly initialised (seeded) 10-genre model; returns its card path for --model."""
    import torch

    from genretag.card import GTZAN_GENRES, AudioParams, MelParams, ModelCard
    from genretag.nets import build_net
    from genretag.store.weights import save_model

    card = ModelCard(
        name="tiny-test",
        labels=list(GTZAN_GENRES),
        architecture={"name": "resnet", "variant": "tiny", "layers": [1, 1], "widths": [8, 16],
                      "dropout": 0.0, "stem_stride": 2},
        audio=AudioParams(sample_rate=16000, segment_seconds=1.0, max_segments=3),
        mel=MelParams(n_fft=512, hop_length=256, n_mels=32),
        description="random weights, for tests only",
    )
    torch.manual_seed(0)
    net = build_net(card)
    return save_model(net, card, tmp_path_factory.mktemp("tiny-model"))
