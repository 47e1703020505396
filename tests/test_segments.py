"""Exact sub-track placement and both votes."""

from __future__ import annotations

import numpy as np
import pytest

from genretag.pipeline.segments import hard_vote, plan_segments, soft_vote, vote


def test_short_track_gives_one_segment_at_zero():
    assert plan_segments(1.0, 3.0, 10) == [0.0]
    assert plan_segments(3.0, 3.0, 10) == [0.0]


def test_thirty_second_clip_gives_ten_back_to_back_segments():
    assert plan_segments(30.0, 3.0, 10) == [0.0, 3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0, 27.0]


def test_few_whole_segments_fit():
    # 7.5 s holds two whole 3 s sub-tracks: first at 0, last ending at the end
    assert plan_segments(7.5, 3.0, 10) == [0.0, 4.5]
    # between one and two sub-tracks' worth: one, centred
    assert plan_segments(4.0, 3.0, 10) == [0.5]


def test_long_track_is_capped_and_spread_over_the_whole_track():
    offs = plan_segments(7200.0, 3.0, 10)
    assert len(offs) == 10
    assert offs[0] == 0.0 and offs[-1] == pytest.approx(7197.0)
    gaps = np.diff(offs)
    assert np.allclose(gaps, gaps[0]) and gaps[0] == pytest.approx(7197.0 / 9)


def test_max_segments_one_and_invalid():
    assert plan_segments(60.0, 3.0, 1) == [28.5]
    with pytest.raises(ValueError):
        plan_segments(60.0, 3.0, 0)


P = np.array([
    [0.6, 0.3, 0.1],
    [0.1, 0.5, 0.4],
    [0.2, 0.45, 0.35],
    [0.9, 0.05, 0.05],
])


def test_soft_vote_is_the_mean():
    np.testing.assert_allclose(soft_vote(P), [0.45, 0.325, 0.225])
    assert vote(P, "soft").argmax() == 0


def test_hard_vote_is_the_majority_and_confidence_is_the_vote_share():
    probs = np.array([[0.4, 0.6, 0.0], [0.45, 0.55, 0.0], [1.0, 0.0, 0.0]])
    d = hard_vote(probs)
    assert d.argmax() == 1  # two votes against one, although label 0 has the highest mean
    assert d[1] == pytest.approx(2 / 3, abs=1e-6) and d[0] == pytest.approx(1 / 3, abs=1e-6)
    assert soft_vote(probs).argmax() == 0


def test_hard_vote_ties_are_broken_by_mean_probability():
    # two votes each for labels 0 and 1; label 1 has the higher mean probability
    d = hard_vote(P)
    assert d.argmax() == 0  # P: votes 0,1,1,0 -> tie; means 0.45 vs 0.325 -> label 0
    q = np.array([[0.5, 0.4, 0.1], [0.45, 0.5, 0.05], [0.1, 0.9, 0.0], [0.51, 0.49, 0.0]])
    # votes: 0,1,1,0 -> tie; means 0.39 vs 0.5725 -> label 1
    assert hard_vote(q).argmax() == 1


def test_unknown_vote():
    with pytest.raises(ValueError):
        vote(P, "median")


def test_audible_tracks_keep_the_even_plan_with_one_read():
    from genretag.pipeline.segments import pick_audible

    reads = []

    def read(offsets):
        reads.append(list(offsets))
        return np.full((len(offsets), 100), 0.1, dtype=np.float32)

    offsets, waves = pick_audible(30.0, 3.0, 10, read)
    assert offsets == plan_segments(30.0, 3.0, 10) and waves.shape == (10, 100)
    assert reads == [offsets]
