"""Early-exit voting: the rule's order and stopping, and run_model/classify applying it."""

from __future__ import annotations

import numpy as np
import pytest
from audio_factory import make_file

from genretag.model import load_net
from genretag.pipeline.early_exit import DEFAULT_EARLY_EXIT, EarlyExit
from genretag.pipeline.inference import classify, run_model
from genretag.pipeline.prepare import prepare_file


@pytest.mark.parametrize("checkpoints", [(1,), (2,), (3,), (2, 4), (3, 5, 7)])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 13])
def test_order_is_a_permutation_whose_first_checkpoint_is_spread(checkpoints, n):
    order = EarlyExit(checkpoints, 0.5).order(n)
    assert sorted(order) == list(range(n))
    k = min(checkpoints[0], n)
    first = sorted(order[:k])
    if k > 1:  # spread: no gap between chosen sub-tracks more than twice the even spacing
        assert max(np.diff(first)) <= 2 * n / k
        assert first[0] < n / k and first[-1] >= n - n / k


def test_order_of_ten_and_next_stop():
    rule = EarlyExit((3, 6), 0.5)
    assert rule.order(10)[:3] == [1, 5, 8]
    assert [rule.next_stop(d, 10) for d in (0, 3, 6)] == [3, 6, 10]
    assert rule.next_stop(0, 2) == 2  # a short track runs all its sub-tracks


def test_decided_is_the_soft_vote_margin():
    rule = EarlyExit((2,), 0.3)
    assert rule.decided(np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]]))  # mean 0.6 vs 0.25
    assert not rule.decided(np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1]]))  # 0.45 vs 0.45
    probs = np.array([[0.9, 0.1]] * 3 + [[0.1, 0.9]] * 7)
    assert EarlyExit((3,), 0.5).run_count(probs) == 3
    assert EarlyExit((3,), 0.9).run_count(probs) == 10


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model_dir):
    """Files of 1-9 s (1-9 sub-tracks of 1 s), one unreadable in the middle, and the net."""
    d = tmp_path_factory.mktemp("ee")
    files = [make_file(d / f"t{i}.wav", seconds=1.0 + (i * 5) % 9, freq=150.0 + 60 * i) for i in range(9)]
    bad = d / "bad.wav"
    bad.write_bytes(b"RIFF not audio")
    files.insert(4, bad)
    return [str(f) for f in files], load_net(tiny_model_dir)


def _reference(net, prepared, rule):
    """Per file: (genre index, probabilities, sub-tracks run), each file on its own."""
    out = []
    for p in prepared:
        if p.waves is None:
            out.append(None)
            continue
        order = rule.order(len(p.waves))
        probs = net.predict(p.waves[order])
        k = rule.run_count(probs)
        mean = probs[:k].astype(np.float64).mean(axis=0)
        out.append((int(mean.argmax()), mean, k))
    return out


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_run_model_stops_each_track_where_the_rule_says(library, batch):
    files, net = library
    prepared = [prepare_file(f, net.card.audio, 9) for f in files]
    # a margin between the files' own first-checkpoint margins: some stop early, some do not
    margins = []
    for p in prepared:
        if p.waves is not None and len(p.waves) > 2:
            m = net.predict(p.waves[EarlyExit((2,), 0).order(len(p.waves))[:2]]).mean(axis=0)
            margins.append(float(np.diff(np.sort(m)[-2:])[0]))
    margins.sort()
    mid = len(margins) // 2  # halfway between two files' margins: no file sits on the threshold
    rule = EarlyExit((2, 4), (margins[mid - 1] + margins[mid]) / 2)
    want = _reference(net, prepared, rule)
    got = list(run_model(prepared, net, "soft", batch, rule))
    assert [r.path for r in got] == files
    runs = []
    for r, w in zip(got, want):
        if w is None:
            assert not r.ok
            continue
        genre, mean, k = w
        runs.append(k)
        assert r.segments == k and r.genre == net.labels[genre]
        assert [r.probabilities[lab] for lab in net.labels] == pytest.approx(mean, abs=1e-5)
    assert min(runs) < max(runs)  # the fixture really mixes stopped and full tracks


def test_never_decided_is_the_full_vote_and_hard_vote_runs_everything(library):
    files, net = library
    prepared = [prepare_file(f, net.card.audio, 9) for f in files]
    full = list(run_model(prepared, net, "soft", 4, None))
    never = list(run_model(prepared, net, "soft", 4, EarlyExit((1,), 2.0)))
    always = EarlyExit((1,), 0.0)
    hard = list(run_model(prepared, net, "hard", 4, always))
    for a, b, h, p in zip(full, never, hard, prepared):
        assert a.genre == b.genre and a.segments == b.segments == h.segments
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
        if p.waves is not None:
            assert a.segments == len(p.waves)
    stopped = list(run_model(prepared, net, "soft", 4, always))
    assert {r.segments for r in stopped if r.ok} == {1}


def test_classify_uses_the_default_rule_unless_segments_is_given(library):
    files, net = library
    long = [f for f in files if "bad" not in f]
    forced = list(classify(long, net, segments=3, jobs=1))
    assert {r.segments for r in forced} <= {1, 2, 3} and max(r.segments for r in forced) == 3
    default = list(classify(long, net, jobs=1))
    explicit = list(classify(long, net, jobs=1, early_exit=DEFAULT_EARLY_EXIT))
    assert [(r.genre, r.segments) for r in default] == [(r.genre, r.segments) for r in explicit]
    full = list(classify(long, net, jobs=1, early_exit=None))
    assert all(f.segments >= d.segments for f, d in zip(full, default))
