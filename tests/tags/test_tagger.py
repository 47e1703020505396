"""The Tagger (`genretag.tags.tagger`): the classified audio is the audio written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import audio_factory as af
import pytest
from tag_library import result, rows, run

from genretag.audio.containers import fingerprint
from genretag.pipeline import classifier as classifier_mod
from genretag.tags.plan import WRITE


def test_file_replaced_after_classification_is_skipped(tmp_path, monkeypatch, tiny):
    """The classified file is swapped for other audio before its write: no genre from the old audio."""
    lib = tmp_path / "lib"
    lib.mkdir()
    moved = af.make_file(lib / "a.flac", freq=300.0)
    kept = af.make_file(lib / "b.flac", freq=500.0)
    other = af.make_file(tmp_path / "other.flac", freq=900.0, seconds=2.0)

    def classify_then_swap(paths, net, vote="soft", segments=None, jobs=1, **_):
        for p in paths:
            r = result(p, metal=0.9)
            if Path(p).name == "a.flac":
                os.replace(other, moved)  # classified as metal, then replaced by another clip
            yield r

    monkeypatch.setattr(classifier_mod, "classify", classify_then_swap)
    res = run("tag", lib, "--write", "-j", "1", "--format", "jsonl", "--model", tiny)
    assert res.exit_code == 0, res.output
    out = rows(res)
    assert out["a.flac"]["action"] == "skip: changed since classified"
    assert af.genre_values(moved) == []
    assert out["b.flac"]["action"] == "written" and af.genre_values(kept) == ["Metal"]


def test_tagger_api_checks_the_classified_fingerprint(tmp_path):
    from genretag.tags import Tagger

    p = af.make_file(tmp_path / "a.ogg")
    r = result(str(p), jazz=0.8)
    r.fingerprint = fingerprint(p)
    tagger = Tagger(write=True, journal=tmp_path / "j.jsonl")
    plan = tagger.plan(r)
    assert plan.action == WRITE and plan.new_values == ["Jazz"]
    af.make_file(p, freq=1000.0)  # new audio between plan and apply
    assert tagger.apply(plan).action == "skip: changed since classified"
    assert af.genre_values(p) == [] and not (tmp_path / "j.jsonl").exists()
    r.fingerprint = fingerprint(p)
    assert tagger.apply(tagger.plan(r)).action == "written" and af.genre_values(p) == ["Jazz"]
    dry = Tagger(policy="overwrite", top_k=2, min_confidence=0.0)
    assert dry.apply(dry.plan(r)).action == WRITE and af.genre_values(p) == ["Jazz"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_note_times_and_clean_takes_the_times_and_cleans_each_folder_once(tmp_path):
    from genretag.tags import Tagger
    from genretag.tags.safe_write import HOST_ID, TMP_MARK

    p = af.make_file(tmp_path / "a.flac", genre="Rock")
    os.utime(p, ns=(1_000_000_000_000_000_000, 1_100_000_000_000_000_000))
    stray = tmp_path / f"{TMP_MARK}{HOST_ID}-{_dead_pid()}-0123456789abcdef"  # a killed run's copy
    stray.write_bytes(b"x")
    dry = Tagger(keep_mtime=True)
    assert dry.note_times_and_clean(str(p)) == [] and stray.exists()  # a dry run changes nothing
    tagger = Tagger(policy="overwrite", keep_mtime=True, write=True, journal=tmp_path / "j.jsonl")
    assert tagger.note_times_and_clean(str(p)) == [stray] and not stray.exists()
    stray.write_bytes(b"x")
    assert tagger.note_times_and_clean(str(p)) == [] and stray.exists()  # once per folder
    os.utime(p, ns=(1_200_000_000_000_000_000, 1_300_000_000_000_000_000))  # read after the times were taken
    assert tagger.apply(tagger.plan(result(str(p), jazz=0.8))).action == "written"
    st = os.stat(p)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000_000_000_000, 1_100_000_000_000_000_000)


def test_tagger_prepare_is_the_deprecated_name_of_note_times_and_clean(tmp_path):
    from genretag.tags import Tagger

    p = af.make_file(tmp_path / "a.flac")
    with pytest.warns(DeprecationWarning, match=r"Tagger.prepare is deprecated and will be removed in genretag "
                                                r"0.4.0; use Tagger.note_times_and_clean"):
        assert Tagger().prepare(str(p)) == []
