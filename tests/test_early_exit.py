"""Early-exit voting: the rule's order and stopping, and run_model/classify applying it."""

from __future__ import annotations

import numpy as np
import pytest
from audio_factory import make_file

from genretag.model import load_net
from genretag.pipeline.early_exit import DEFAULT_EARLY_EXIT, EarlyExit
from genretag.pipeline.inference import DecodeStream, classify, run_model
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
    got = list(run_model(prepared, net, vote="soft", batch_segments=batch, early_exit=rule))
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
    full = list(run_model(prepared, net, vote="soft", batch_segments=4, early_exit=None))
    never = list(run_model(prepared, net, vote="soft", batch_segments=4, early_exit=EarlyExit((1,), 2.0)))
    always = EarlyExit((1,), 0.0)
    hard = list(run_model(prepared, net, vote="hard", batch_segments=4, early_exit=always))
    for a, b, h, p in zip(full, never, hard, prepared):
        assert a.genre == b.genre and a.segments == b.segments == h.segments
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
        if p.waves is not None:
            assert a.segments == len(p.waves)
    stopped = list(run_model(prepared, net, vote="soft", batch_segments=4, early_exit=always))
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


def _mixed_rule(net, prepared) -> EarlyExit:
    """A first look after 2 sub-tracks whose margin some files clear and some do not."""
    margins = sorted(float(np.diff(np.sort(net.predict(p.waves[EarlyExit((2,), 0).order(len(p.waves))[:2]])
                                           .mean(axis=0))[-2:])[0])
                     for p in prepared if p.waves is not None and len(p.waves) > 2)
    mid = len(margins) // 2
    return EarlyExit((2, 4), (margins[mid - 1] + margins[mid]) / 2)


class CountingStream(DecodeStream):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[str] = []

    def rest(self, first):
        self.asked.append(first.path)
        return super().rest(first)


@pytest.mark.parametrize("jobs", [1, 2])
def test_decoding_the_rest_only_when_asked_gives_the_answers_of_decoding_everything(library, jobs):
    files, net = library
    full = [prepare_file(f, net.card.audio, 9) for f in files]
    rule = _mixed_rule(net, full)
    want = list(run_model(full, net, batch_segments=3, early_exit=rule))
    stream = CountingStream(files, net.card.audio, segments=9, jobs=jobs, early_exit=rule)
    got = list(run_model(stream, net, batch_segments=3, early_exit=rule, decoder=stream))
    assert [(r.path, r.genre, r.segments, r.error) for r in got] == [(r.path, r.genre, r.segments, r.error) for r in want]
    for a, b in zip(got, want):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
    # the rest of a file is decoded exactly when its vote needed more than the first look
    more = [r.path for r in want if r.ok and r.segments > 2]
    assert sorted(stream.asked) == sorted(more) and 0 < len(more) < len([r for r in want if r.ok])
    # without a decoder the model stage decodes the rest itself, with the same answers
    inline = list(run_model([prepare_file(f, net.card.audio, 9, rule) for f in files], net, batch_segments=3, early_exit=rule))
    assert [(r.genre, r.segments) for r in inline] == [(r.genre, r.segments) for r in want]


def test_a_rest_that_turned_silent_or_unreadable_starts_the_track_over(tmp_path, tiny_model_dir):
    """Between the first look and the rest the file changed: silence where music was (another
    plan: the silent sub-tracks are replaced, as a first decode would) or garbage."""
    import soundfile as sf

    from genretag.pipeline.prepare import prepare_rest

    net = load_net(tiny_model_dir)
    never = EarlyExit((2,), 2.0)  # never decided: every track asks for its rest
    quiet, broken = make_file(tmp_path / "quiet.wav", seconds=9.0), make_file(tmp_path / "broken.wav", seconds=9.0)
    firsts = [prepare_file(str(p), net.card.audio, 9, never) for p in (quiet, broken)]
    assert all(p.missing for p in firsts)
    x, sr = sf.read(str(quiet), dtype="float32")
    x[: int(4.5 * sr)] = 0.0  # the first half silent: sub-tracks 0-3 are replaced
    sf.write(str(quiet), x, sr)
    broken.write_bytes(b"RIFF no longer audio")
    rest = prepare_rest(firsts[0], net.card.audio)
    assert rest.rows is None and rest.offsets != firsts[0].offsets  # another plan: the whole track again
    got = list(run_model(firsts, net, batch_segments=4, early_exit=never))
    want = run_model([prepare_file(str(quiet), net.card.audio, 9)], net, batch_segments=4, early_exit=never)
    (w,) = list(want)
    assert got[0].genre == w.genre and got[0].segments == w.segments
    assert got[0].probabilities == pytest.approx(w.probabilities, abs=1e-6)
    assert not got[1].ok and got[1].path == str(broken)
