"""Genre names and the plan under each policy (`genretag.tags.plan`)."""

from __future__ import annotations

import pytest
from tag_library import result

from genretag.pipeline.inference import TrackResult
from genretag.tags.plan import (
    ERROR,
    SKIP_BELOW,
    SKIP_HAS_GENRE,
    SKIP_UNCHANGED,
    WRITE,
    genre_name,
    load_genre_names,
    plan_tag,
)


def test_genre_names(tmp_path):
    assert genre_name("hiphop") == "Hip-Hop"
    assert genre_name("rock") == "Rock"
    assert genre_name("drum_and_bass") == "Drum And Bass"
    js = tmp_path / "n.json"
    js.write_text('{"hiphop": "Rap"}')
    lines = tmp_path / "n.txt"
    lines.write_text("# mine\nhiphop = Hip Hop\n\nrock=Rock & Roll\n")
    assert load_genre_names(js) == {"hiphop": "Rap"}
    assert load_genre_names(lines) == {"hiphop": "Hip Hop", "rock": "Rock & Roll"}
    bad = tmp_path / "bad.txt"
    bad.write_text("hiphop\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected label=Name, got 'hiphop'"):
        load_genre_names(bad)
    bad.write_text('["hiphop", "Rap"]')
    with pytest.raises(ValueError, match=r"bad.txt: expected a JSON object of label -> name .*not a list"):
        load_genre_names(bad)


def test_plan_policies():
    r = result("x", jazz=0.7, blues=0.2)
    plan = plan_tag
    assert plan(r, []).action == WRITE and plan(r, []).new_values == ["Jazz"]
    assert plan(r, ["Rock"]).action == SKIP_HAS_GENRE
    assert plan(r, ["Rock"], policy="overwrite").new_values == ["Jazz"]
    assert plan(r, ["Rock"], policy="append").new_values == ["Rock", "Jazz"]
    assert plan(r, ["JAZZ"], policy="append").action == SKIP_UNCHANGED  # case-insensitive
    assert plan(r, ["Jazz"], policy="overwrite").action == SKIP_UNCHANGED
    assert plan(r, [], top_k=2, min_confidence=0.1).new_values == ["Jazz", "Blues"]
    assert plan(r, [], top_k=2, min_confidence=0.5).new_values == ["Jazz"]  # only those >= min
    assert plan(r, [], min_confidence=0.8).action == SKIP_BELOW
    assert plan(r, [], names={"jazz": "Jazz Music"}).new_values == ["Jazz Music"]
    err = TrackResult("x", None, None, {}, 0, "cannot decode")
    assert plan(err, []).action == ERROR
