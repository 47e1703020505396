"""genretag 0.1's names: each still works, with a DeprecationWarning naming its new home and 0.4.0."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
from audio_factory import make_file

from genretag import card, errors, model
from genretag.card import metrics
from genretag.deprecation import REMOVED_IN
from genretag.pipeline import cache, inference, prepare
from genretag.store import resolve, weights
from genretag.tags import errors as tag_errors


def _old(module: str, name: str):
    """`module.name` with its warning: (the object, the warning's text); the warning points at this file."""
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning) as caught:
        obj = getattr(mod, name)
    assert len(caught) == 1 and caught[0].filename == __file__
    return obj, str(caught[0].message)


def _says(message: str, old: str, new: str) -> None:
    assert message == f"{old} is deprecated and will be removed in genretag {REMOVED_IN}; use {new}"


MOVED = [  # old module, old name, the object now, the name the warning gives it
    ("genretag.store.load", "LoadedNet", model.Model, "genretag.model.Model"),
    ("genretag.store.load", "Model", model.Model, "genretag.model.Model"),
    ("genretag.store.load", "load_net", model.load_net, "genretag.model.load_net"),
    ("genretag.store.load", "load_model", model.load_model, "genretag.model.load_model"),
    ("genretag.store.load", "resolve_device", model.resolve_device, "genretag.model.resolve_device"),
    ("genretag.store.load", "find_card", resolve.find_card, "genretag.store.resolve.find_card"),
    ("genretag.store.load", "save_model", weights.save_model, "genretag.store.weights.save_model"),
    ("genretag.store.load", "ModelError", errors.ModelError, "genretag.errors.ModelError"),
    ("genretag.store.load", "load_card", card.load_card, "genretag.card.load_card"),
    ("genretag.store.card", "ModelCard", card.ModelCard, "genretag.card.ModelCard"),
    ("genretag.store.card", "GTZAN_GENRES", card.GTZAN_GENRES, "genretag.card.GTZAN_GENRES"),
    ("genretag.store.card", "sha256_file", weights.sha256_file, "genretag.store.weights.sha256_file"),
    ("genretag.store.metrics", "CardMetrics", metrics.CardMetrics, "genretag.card.metrics.CardMetrics"),
    ("genretag.store.metrics", "HEADLINE_SUBSET", metrics.HEADLINE_SUBSET, "genretag.card.metrics.HEADLINE_SUBSET"),
    ("genretag.api", "Model", model.Model, "genretag.model.Model"),
    ("genretag.api", "load_model", model.load_model, "genretag.model.load_model"),
    ("genretag.inference", "TrackResult", inference.TrackResult, "genretag.pipeline.inference.TrackResult"),
    ("genretag.inference", "classify", inference.classify, "genretag.pipeline.inference.classify"),
    ("genretag.inference", "run_model", inference.run_model, "genretag.pipeline.inference.run_model"),
    ("genretag.prepare", "Prepared", prepare.Prepared, "genretag.pipeline.prepare.Prepared"),
    ("genretag.prepare", "prepare_file", prepare.prepare_file, "genretag.pipeline.prepare.prepare_file"),
    ("genretag.prepare", "prepare_waveform", prepare.prepare_waveform, "genretag.pipeline.prepare.prepare_waveform"),
    ("genretag.store.index", "ModelError", errors.ModelError, "genretag.errors.ModelError"),
    ("genretag.tags.fields", "ChangedSinceClassified", tag_errors.ChangedSinceClassified,
     "genretag.tags.errors.ChangedSinceClassified"),
]


@pytest.mark.parametrize("module, name, now, new", MOVED, ids=[f"{m}.{n}" for m, n, *_ in MOVED])
def test_a_moved_name_warns_and_is_the_same_object(module, name, now, new):
    obj, message = _old(module, name)
    assert obj is now
    _says(message, f"{module}.{name}", new)


def test_from_import_of_an_old_name_warns_too():
    with pytest.warns(DeprecationWarning, match=r"genretag\.store\.load\.load_net is deprecated .* 0\.4\.0"):
        from genretag.store.load import load_net
    assert load_net is model.load_net


@pytest.mark.parametrize("module, name", [
    ("genretag.store.load", "no_such_name"), ("genretag.api", "load_net"), ("genretag.inference", "prepare_file"),
    ("genretag.prepare", "classify"), ("genretag.store.card", "Model"), ("genretag.store.metrics", "ModelCard"),
    ("genretag.store.load", "__path__"), ("genretag.pipeline.cache", "classify_uncached"),
    ("genretag.pipeline.inference", "tune"), ("genretag.store.index", "AudioError"), ("genretag.tags.fields", "Nope"),
])
def test_a_name_the_old_module_never_had_is_an_attribute_error(module, name):
    mod = importlib.import_module(module)
    with pytest.raises(AttributeError, match=f"module '{module}' has no attribute '{name}'"):
        getattr(mod, name)


def test_importing_an_old_module_does_not_warn():
    """The warning comes with the first name used, so a plain import (a tool walking the package) is quiet."""
    code = ("import warnings; warnings.simplefilter('error')\n"
            "import genretag.api, genretag.inference, genretag.prepare\n"
            "import genretag.store.load, genretag.store.card, genretag.store.metrics\n"
            "print('quiet')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0 and r.stdout.strip() == "quiet", r.stderr


@pytest.fixture(scope="module")
def tiny(tiny_model_dir) -> model.Model:
    return model.load_model(tiny_model_dir, device="cpu")


def test_classify_cached_still_classifies_through_the_cache(tiny, tmp_path):
    files = [str(make_file(tmp_path / f"t{i}.flac", seconds=1.0, freq=220.0 * (i + 1))) for i in range(2)]
    classify_cached, message = _old("genretag.pipeline.cache", "classify_cached")
    _says(message, "genretag.pipeline.cache.classify_cached",
          "genretag.pipeline.cache.Classifier(model, ...).classify(paths)")
    stats = cache.CacheStats()
    store = cache.ResultCache(tmp_path / "results.sqlite")
    try:
        got = list(classify_cached(files, tiny, cache=store, stats=stats))
    finally:
        store.close()
    want = list(cache.Classifier(tiny).classify(files))
    assert [(r.path, r.genre, r.probabilities) for r in got] == [(r.path, r.genre, r.probabilities) for r in want]
    assert (stats.cached, stats.classified) == (0, 2)


def test_tune_for_inference_tunes_the_model(tiny_model_dir):
    m = model.load_model(tiny_model_dir, device="cpu")
    tune_for_inference, message = _old("genretag.pipeline.inference", "tune_for_inference")
    _says(message, "genretag.pipeline.inference.tune_for_inference", "genretag.Model.tune()")
    assert not m._tuned
    tune_for_inference(m)
    assert m._tuned


def test_the_model_s_0_1_names_warn(tiny):
    import numpy as np

    with pytest.warns(DeprecationWarning) as caught:
        assert tiny.loaded is tiny
    assert caught[0].filename == __file__
    _says(str(caught[0].message), "genretag.Model.loaded", "the model itself")
    waves = np.zeros((2, tiny.card.audio.segment_samples), dtype=np.float32)
    with pytest.warns(DeprecationWarning) as caught:
        got = tiny.predict_segments(waves)
    assert caught[0].filename == __file__
    _says(str(caught[0].message), "genretag.Model.predict_segments", "genretag.Model.predict")
    np.testing.assert_array_equal(got, tiny.predict(waves))
