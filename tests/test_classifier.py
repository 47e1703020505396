"""`Classifier`: the model and its settings held once, the result cache, one model stream, input order."""

from __future__ import annotations

import pytest
from audio_factory import make_file, track_result

from genretag.audio.containers import fingerprint
from genretag.model import Model, load_model
from genretag.pipeline import classifier as classifier_mod
from genretag.pipeline import inference
from genretag.pipeline.classifier import Classifier
from genretag.pipeline.early_exit import EarlyExit
from genretag.pipeline.result_cache import ResultCache, model_id


@pytest.fixture(scope="module")
def model(tiny_model_dir) -> Model:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture()
def files(tmp_path):
    return [str(make_file(tmp_path / f"t{i}.flac", seconds=1.0 + 0.3 * i, freq=220.0 * (i + 1))) for i in range(5)]


def _same(a, b):
    assert (a.path, a.genre, a.segments, a.error) == (b.path, b.genre, b.segments, b.error)
    assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)


def test_classify_streams_in_input_order_and_answers_again_from_the_cache(model, files, tmp_path):
    want = list(inference.classify(files, model))
    cache = ResultCache(tmp_path / "results.sqlite")
    first = Classifier(model, cache=cache, jobs=1)
    got = list(first.classify(iter(files)))
    for a, b in zip(got, want, strict=True):
        _same(a, b)
    assert (first.stats.cached, first.stats.classified) == (0, 5)
    assert len(cache) == 5

    missing = str(tmp_path / "gone.flac")
    mixed = [files[0], missing, *files[1:]]
    again = Classifier(model, cache=cache, jobs=1)
    out = list(again.classify(mixed))
    assert [r.path for r in out] == mixed
    assert out[1].error and not out[1].ok
    for a, b in zip([out[0], *out[2:]], want, strict=True):
        _same(a, b)
    assert (again.stats.cached, again.stats.classified) == (5, 1)


def test_a_long_stream_with_cache_hits_is_one_model_stream(model, files, tmp_path, monkeypatch):
    cache = ResultCache(tmp_path / "results.sqlite")
    list(Classifier(model, cache=cache).classify(files[:2]))  # files 0 and 1 are now cached
    streams = []

    def counting_classify(paths, net, **kw):  # the real model stream, counted
        streams.append(kw)
        return inference.classify(paths, net, **kw)

    monkeypatch.setattr(classifier_mod, "classify", counting_classify)
    gone = [str(tmp_path / f"missing-{i}.wav") for i in range(300)]  # misses that fail fast
    paths = [files[0], *gone[:150], files[1], *gone[150:], files[2]]
    clf = Classifier(model, cache=cache, vote="soft", jobs=1)
    out = list(clf.classify(paths))
    assert len(streams) == 1  # not restarted every N files
    assert [r.path for r in out] == paths
    assert [r.ok for r in out] == [True, *[False] * 150, True, *[False] * 150, True]
    assert (clf.stats.cached, clf.stats.classified) == (2, 301)


def test_per_file_steps_match_the_stream(model, files, tmp_path):
    cache = ResultCache(tmp_path / "results.sqlite")
    clf = Classifier(model, cache=cache, segments=2)
    stream = list(Classifier(model, segments=2).classify(files))
    one_by_one = [clf.classify_file(p) for p in files]
    split = [clf.finish(clf.prepare(p)) for p in files]  # decoding and the network apart, as an executor would
    for a, b, c in zip(stream, one_by_one, split, strict=True):
        _same(a, b)
        _same(a, c)
    assert max(r.segments for r in stream) == 2  # the settings held by the object are the ones used
    assert len(cache) == 5 and clf.stats.classified == 5
    assert clf.classify_file(files[0]).genre == stream[0].genre and clf.stats.cached == 1


def test_classify_leaves_the_callers_network_alone(model, files):
    body = model.net.body
    state = {k: v.clone() for k, v in model.net.state_dict().items()}
    model.classify(files[:1])
    assert model.net.body is body
    for k, v in model.net.state_dict().items():
        assert v.equal(state[k]) and v.is_contiguous(), k


def test_the_loaded_model_is_the_api(tiny_model_dir):
    import genretag
    from genretag.model import Model

    m = genretag.load_model(tiny_model_dir)
    assert isinstance(m, genretag.Model) and genretag.Model is Model
    assert m.name == "tiny-test" and m.sample_rate == 16000


def test_without_fingerprints_the_stream_is_the_model_stream(model, files, tmp_path):
    """What `genretag classify` runs locally: no fingerprint read, the results of `inference.classify`."""
    clf = Classifier(model, fingerprints=False)
    out = list(clf.classify(files))
    for a, b in zip(out, inference.classify(files, model), strict=True):
        _same(a, b)
        assert a.to_json() == b.to_json()
    assert all(r.fingerprint is None for r in out) and clf.lookup(files[0]) == (None, None)
    assert (clf.stats.cached, clf.stats.classified) == (0, 5)
    with_cache = Classifier(model, fingerprints=False, cache=ResultCache(tmp_path / "results.sqlite"))
    assert with_cache.fingerprints and all(r.fingerprint for r in with_cache.classify(files[:1]))  # a cache needs them


def test_closing_stores_what_is_left_and_closes_the_cache(model, files, tmp_path):
    cache = ResultCache(tmp_path / "results.sqlite")
    with Classifier(model, cache=cache) as clf:
        stream = clf.classify(files)
        assert [next(stream).path, next(stream).path] == files[:2]
        assert len(cache) == 0  # fewer than STORE_EVERY results: not stored yet
    assert cache.db is None  # the executor closed it, after storing the two
    stream.close()
    again = ResultCache(tmp_path / "results.sqlite")
    assert len(again) == 2
    again.close()


def test_the_cache_key_besides_the_fingerprint_is_held_once(model, files, tmp_path):
    cache = ResultCache(tmp_path / "results.sqlite")
    early = cache.for_model(model, vote="soft", segments=None, early_exit=EarlyExit((2, 4, 6), 0.35))
    ten = cache.for_model(model, vote="soft", segments=10, early_exit=None)
    assert (early.model_id, early.vote, early.segments) == (model_id(model), "soft/early-exit 2,4,6@0.35", 0)
    assert (ten.vote, ten.segments) == ("soft", 10)
    stored = track_result("/x/a.mp3", rock=0.9)
    stored.fingerprint = "fp-a"
    early.put_many([stored, track_result("/x/b.mp3", jazz=0.8)])  # b has no fingerprint: not stored
    assert len(cache) == 1
    hit = early.get("/y/renamed.mp3", "fp-a")
    assert (hit.path, hit.fingerprint, hit.genre) == ("/y/renamed.mp3", "fp-a", "rock")
    assert ten.get("/y/renamed.mp3", "fp-a") is None  # another setting: another key
    assert cache.get("fp-a", model_id(model), "soft/early-exit 2,4,6@0.35", 0).genre == "rock"


def test_a_result_of_another_early_exit_rule_is_not_served(model, files, tmp_path, monkeypatch):
    """The rule a result was voted by is part of its key: a run under another rule classifies again."""
    from genretag.pipeline.early_exit import DEFAULT_EARLY_EXIT

    def run(**kw):
        clf = Classifier(model, cache=ResultCache(tmp_path / "results.sqlite"), jobs=1, **kw)
        with clf:
            out = list(clf.classify(files))
        return out, (clf.stats.cached, clf.stats.classified)

    other_rule = EarlyExit((3, 5, 7), 0.26)
    assert DEFAULT_EARLY_EXIT != other_rule
    first, stats = run()
    assert stats == (0, 5)
    assert run()[1] == (5, 0)  # the same rule: every file from the cache
    monkeypatch.setattr(classifier_mod, "DEFAULT_EARLY_EXIT", other_rule)
    other, stats = run()
    assert stats == (0, 5)  # stored under another rule: a miss each, classified by the rule now in force
    for a, b in zip(other, first, strict=True):
        _same(a, b)  # one sub-track per file here: both rules give the full vote
    assert run()[1] == (5, 0)  # and stored under its own key, beside the first rule's
    monkeypatch.undo()
    assert run()[1] == (5, 0)  # the first rule's results are still there
    assert len(ResultCache(tmp_path / "results.sqlite")) == 10

    # a cache an earlier version filled keyed the early-exit vote as ("soft", 0): not looked up
    cache = ResultCache(tmp_path / "old.sqlite")
    planted = track_result(files[0], rock=0.9)
    cache.put_many([(fingerprint(files[0]), model_id(model), "soft", 0, planted)])
    clf = Classifier(model, cache=cache, jobs=1)
    with clf:
        (got,) = clf.classify(files[:1])
    assert (clf.stats.cached, clf.stats.classified) == (0, 1)
    _same(got, first[0])  # the model's answer, not the planted one


def test_an_executor_satisfies_the_protocol_and_the_old_address_still_imports(model):
    from genretag.pipeline import cache, classifier, executor, result_cache

    assert isinstance(Classifier(model), executor.Executor)
    assert not isinstance(object(), executor.Executor)
    assert cache.Classifier is classifier.Classifier  # classify_cached warns: tests/test_deprecation.py
    assert (cache.ResultCache, cache.UnusableCache, cache.model_id, cache.default_cache_path) == (
        result_cache.ResultCache, result_cache.UnusableCache, result_cache.model_id, result_cache.default_cache_path)
    assert cache.CacheStats is executor.CacheStats
