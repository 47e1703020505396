"""Hostile model cards, weights and indexes: one-line errors naming the file once, nothing unpickled."""

from __future__ import annotations

import json
import math
import pickle
import shutil
import struct

import pytest
from audio_factory import make_file
from hostile import assert_clean_stderr, run_cli

from genretag.errors import GenretagError, ModelError
from genretag.model import load_net
from genretag.store.index import load_index


class Boom:
    """Unpickling this would leave a marker file: it must never happen."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def card_copy(tiny_model_dir, tmp_path, **changes):
    """The tiny model's card and weights copied to tmp_path/model/, the card edited by `changes`."""
    d = json.loads(tiny_model_dir.read_text())
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    shutil.copy(tiny_model_dir.with_suffix(".safetensors"), folder / "weights.safetensors")
    d["weights"] = "weights.safetensors"  # the copy is made before any edit: never outside tmp_path
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            d[section][field] = value
        else:
            d[section] = value
    path = folder / "card.json"
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("changes, says", [
    ({"audio__segment_seconds": -3.0}, "'audio.segment_seconds' must be a number from 0.05 to 600, not -3.0"),
    ({"audio__segment_seconds": math.inf}, "'audio.segment_seconds' must be a number from 0.05 to 600, not inf"),
    ({"audio__sample_rate": 0}, "'audio.sample_rate' must be an integer"),
    ({"audio__max_segments": 2.5}, "'audio.max_segments' must be an integer"),
    ({"weights": "../../etc/passwd"}, "'weights' must name a file beside the card, not '../../etc/passwd'"),
    ({"weights": "/etc/passwd"}, "'weights' must name a file beside the card"),
    ({"labels": []}, "'labels' must be a non-empty list"),
    ({"temperature": 0}, "'temperature' must be a number"),
    ({"audio": [1, 2]}, "'audio' must be an object"),
    ({"architecture__name": "transformer"}, "unknown architecture 'transformer'"),
])
def test_invalid_local_card_is_one_line_naming_the_file_once(tiny_model_dir, tmp_path, changes, says):
    path = card_copy(tiny_model_dir, tmp_path, **changes)
    with pytest.raises(ModelError) as e:
        load_net(str(path), "cpu")
    msg = str(e.value)
    assert says in msg and "\n" not in msg
    assert msg.count(str(path)) == 1 and msg.startswith(f"{path}: not a valid model card")


@pytest.mark.slow
def test_invalid_card_through_the_cli(tiny_model_dir, tmp_path):
    path = card_copy(tiny_model_dir, tmp_path, audio__segment_seconds=-1)
    r = run_cli("classify", str(make_file(tmp_path / "a.wav")), "--model", str(path), "-f", "csv")
    assert r.returncode != 0 and r.stdout == b""  # no CSV header before the model failed
    lines = assert_clean_stderr(r.stderr)
    assert len(lines) == 1 and lines[0].count(str(path)) == 1, lines


@pytest.mark.parametrize("weights", ["pickle", "huge-header", "short"])
def test_weights_that_are_not_safetensors_are_refused_unread(tiny_model_dir, tmp_path, weights):
    path = card_copy(tiny_model_dir, tmp_path, weights_sha256="")
    wfile = path.parent / "weights.safetensors"
    marker = tmp_path / "unpickled"
    if weights == "pickle":
        wfile.write_bytes(pickle.dumps(Boom(str(marker))))
    elif weights == "huge-header":
        wfile.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    else:
        wfile.write_bytes(b"\x05")
    with pytest.raises(ModelError) as e:
        load_net(str(path), "cpu")
    assert "not a readable safetensors file" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("size", ["1e400", "Infinity", "-5", "12.5", "\"big\"", "true"])
def test_index_size_must_be_a_whole_number_of_bytes(tmp_path, size):
    index = tmp_path / "index.json"
    index.write_text('{"models": [{"name": "m", "url": "https://example.org/m.safetensors", "size": %s}]}' % size)
    with pytest.raises(GenretagError) as e:
        load_index(str(index))
    assert "'size' must be a whole number of bytes" in str(e.value)


def test_index_size_through_the_cli(tmp_path):
    index = tmp_path / "index.json"
    index.write_text('{"models": [{"name": "m", "url": "https://example.org/m.safetensors", "size": 1e400}]}')
    r = run_cli("models", "download", "m", "--index", str(index))
    assert r.returncode != 0
    assert len(assert_clean_stderr(r.stderr)) == 1


def test_segments_has_an_upper_bound(tmp_path, tiny_model_dir):
    r = run_cli("classify", str(make_file(tmp_path / "a.wav")), "--model", str(tiny_model_dir), "--segments", "100000")
    assert r.returncode == 2
    lines = assert_clean_stderr(r.stderr)
    assert len(lines) == 1 and "--segments" in lines[0] and "1000" in lines[0]
