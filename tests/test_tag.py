"""`genretag tag` / `genretag undo`: per-format genre writes, policies, safety, journal, cache."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import audio_factory as af
import numpy as np
import pytest
from mutagen import id3
from typer.testing import CliRunner

from genretag.audio.containers import file_fingerprint, fingerprint
from genretag.cli import app
from genretag.pipeline import classifier as classifier_mod
from genretag.pipeline.inference import TrackResult
from genretag.pipeline.result_cache import ResultCache
from genretag.tags.errors import DamagedTagError
from genretag.tags.fields import TagError, read_tags
from genretag.tags.journal import read_entries, undo
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
from genretag.tags.safe_write import TMP_MARK, write_genres_safely

EXTS = list(af.FORMATS)  # mp3 flac ogg opus m4a wav aiff
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def rows(result) -> dict[str, dict]:
    return {Path(d["path"]).name: d for d in map(json.loads, result.stdout.splitlines())}


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


result = af.track_result


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


def library(folder: Path, genre: str | list[str] | None = "Rock", exts=EXTS, seconds: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, ext in enumerate(exts):
        af.make_file(folder / f"song{ext}", seconds=seconds, freq=300 + 50 * i, genre=genre)
    return folder


# --- fingerprint -----------------------------------------------------------------

@pytest.mark.parametrize("ext", EXTS)
def test_fingerprint_ignores_tag_writes(tmp_path, ext):
    p = af.make_file(tmp_path / f"a{ext}", genre="Rock")
    before, whole = fingerprint(p), file_fingerprint(p)
    write_genres_safely(p, ["Jazz", "Blues" * 3000])  # big enough to move things around
    assert fingerprint(p) == before
    assert file_fingerprint(p) != whole
    other = af.make_file(tmp_path / f"b{ext}", freq=880.0, genre="Rock")
    assert fingerprint(other) != before


def test_fingerprint_mp3_skips_trailing_tags(tmp_path):
    p = af.make_file(tmp_path / "a.mp3", genre="Rock")
    before = fingerprint(p)
    with open(p, "ab") as f:  # an ID3v1 tag at the end
        f.write(b"TAG" + b"\0" * 124 + b"\x11")
    assert fingerprint(p) == before


# --- genre names and planning ------------------------------------------------------

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
    assert plan(r, ["Rock"], "overwrite").new_values == ["Jazz"]
    assert plan(r, ["Rock"], "append").new_values == ["Rock", "Jazz"]
    assert plan(r, ["JAZZ"], "append").action == SKIP_UNCHANGED  # case-insensitive
    assert plan(r, ["Jazz"], "overwrite").action == SKIP_UNCHANGED
    assert plan(r, [], top_k=2, min_confidence=0.1).new_values == ["Jazz", "Blues"]
    assert plan(r, [], top_k=2, min_confidence=0.5).new_values == ["Jazz"]  # only those >= min
    assert plan(r, [], min_confidence=0.8).action == SKIP_BELOW
    assert plan(r, [], names={"jazz": "Jazz Music"}).new_values == ["Jazz Music"]
    err = TrackResult("x", None, None, {}, 0, "cannot decode")
    assert plan(err, []).action == ERROR


# --- dry run ---------------------------------------------------------------------

def test_dry_run_changes_no_byte(tmp_path, fake_model, tiny):
    lib = library(tmp_path / "lib", genre=None)
    af.make_file(lib / "tagged.mp3", genre="Rock")
    before = snapshot(lib)
    res = run("tag", lib, "-j", "1", "--overwrite", "--top-k", "2", "--min-confidence", "0.2",
              "--format", "jsonl", "--model", tiny)
    assert res.exit_code == 0, res.output
    out = rows(res)
    assert {d["action"] for d in out.values()} == {"write"}
    assert out["tagged.mp3"]["current"] == ["Rock"] and out["song.flac"]["new"] == ["Jazz", "Blues"]
    assert snapshot(lib) == before
    assert not (Path(os.environ["GENRETAG_DATA_DIR"]) / "journal.jsonl").exists()
    assert "dry run" in res.stderr
    table = run("tag", lib, "-j", "1", "--model", tiny)
    assert table.exit_code == 0 and "write" in table.stdout and "song.wav" in table.stdout
    assert snapshot(lib) == before


# --- writing, per format -----------------------------------------------------------

def test_write_sets_only_the_genre_in_every_format(tmp_path, fake_model, tiny):
    lib = library(tmp_path / "lib", genre="Rock")
    for p in lib.iterdir():
        os.chmod(p, 0o640)
    tags_before = {p.name: af.all_tags(p) for p in lib.iterdir()}
    audio_before = {p.name: af.decode(p) for p in lib.iterdir()}
    res = run("tag", lib, "--write", "--overwrite", "--top-k", "2", "--min-confidence", "0.25",
              "-j", "1", "--format", "jsonl", "--model", tiny)
    assert res.exit_code == 0, res.output
    out = rows(res)
    assert {d["action"] for d in out.values()} == {"written"}
    for p in lib.iterdir():
        assert not p.name.startswith("."), "temporary file left behind"
        assert af.genre_values(p) == ["Jazz", "Blues"], p.name  # real multiple values
        assert af.all_tags(p) == tags_before[p.name], p.name  # art and every other tag intact
        assert np.array_equal(af.decode(p), audio_before[p.name]), p.name
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
    # the right field in each format, and never ID3 where it does not belong
    for name in ("song.mp3", "song.wav", "song.aiff"):
        import mutagen

        tags = mutagen.File(lib / name).tags
        assert tags.version[:2] == (2, 4) and tags["TCON"].text == ["Jazz", "Blues"]
    from mutagen.flac import FLAC
    from mutagen.mp4 import MP4

    flac = FLAC(lib / "song.flac")
    assert flac.tags.get("GENRE") == ["Jazz", "Blues"] and len(flac.pictures) == 1
    assert [k for k, _ in flac.tags if k.upper() == "GENRE"] == ["GENRE", "GENRE"]
    assert MP4(lib / "song.m4a").tags["\xa9gen"] == ["Jazz", "Blues"]
    assert MP4(lib / "song.m4a").tags["covr"][0] == af.png_bytes()
    for name in ("song.ogg", "song.opus", "song.flac"):
        data = (lib / name).read_bytes()
        assert not data.startswith(b"ID3") and b"TCON" not in data
    entries = read_entries(Path(os.environ["GENRETAG_DATA_DIR"]) / "journal.jsonl")
    assert len(entries) == len(EXTS)
    e = next(e for e in entries if e["path"].endswith("song.opus"))
    assert e["old"] == ["Rock"] and e["new"] == ["Jazz", "Blues"] and e["format"] == "ogg-opus"
    assert os.path.isabs(e["path"]) and e["fingerprint_after"] == file_fingerprint(lib / "song.opus")
    assert "T" in e["time"]


def test_policies_on_files(tmp_path, fake_model, tiny):
    lib = tmp_path / "lib"
    lib.mkdir()
    af.make_file(lib / "keep.flac", genre="Rock")
    af.make_file(lib / "empty.flac")
    af.make_file(lib / "app.m4a", genre="Rock")
    af.make_file(lib / "dup.mp3", genre="jazz")
    af.make_file(lib / "low.ogg")
    fake_model["low.ogg"] = {"jazz": 0.3, "blues": 0.25}
    res = run("tag", lib, "--write", "-j", "1", "--format", "jsonl", "--model", tiny)
    assert res.exit_code == 0, res.output
    out = rows(res)
    assert out["keep.flac"]["action"] == "skip: has genre" and af.genre_values(lib / "keep.flac") == ["Rock"]
    assert out["empty.flac"]["action"] == "written" and af.genre_values(lib / "empty.flac") == ["Jazz"]
    assert out["low.ogg"]["action"] == "skip: below confidence" and af.genre_values(lib / "low.ogg") == []
    res = run("tag", lib, "--write", "--append", "-j", "1", "--format", "jsonl", "--model", tiny)
    out = rows(res)
    assert af.genre_values(lib / "app.m4a") == ["Rock", "Jazz"]
    assert out["dup.mp3"]["action"] == "skip: unchanged" and af.genre_values(lib / "dup.mp3") == ["jazz"]
    res = run("tag", lib, "--write", "--overwrite", "-j", "1", "--format", "jsonl", "--model", tiny)
    assert af.genre_values(lib / "app.m4a") == ["Jazz"] and af.genre_values(lib / "keep.flac") == ["Jazz"]
    bad = run("tag", lib, "--overwrite", "--append", "--model", tiny)
    assert bad.exit_code == 2 and "only one of" in bad.stderr


def test_id3v23_keeps_version_and_uses_separator(tmp_path, fake_model, tiny):
    p = af.make_file(tmp_path / "old.mp3", genre="Rock", id3_version=3)
    before = af.all_tags(p)
    res = run("tag", p, "--write", "--append", "--top-k", "2", "--min-confidence", "0.25", "-j", "1",
              "--model", tiny)
    assert res.exit_code == 0, res.output
    tags = id3.ID3(p, translate=False)
    assert tags.version[:2] == (2, 3)
    assert tags["TCON"].text == ["Rock; Jazz; Blues"]
    assert "TYER" in tags or "TDRC" not in tags  # no v2.4-only frames appeared
    assert af.all_tags(p) == before
    # a second append does not duplicate what the joined value already holds
    res = run("tag", p, "--write", "--append", "--top-k", "2", "--min-confidence", "0.25", "-j", "1",
              "--format", "jsonl", "--model", tiny)
    assert rows(res)["old.mp3"]["action"] == "skip: unchanged"


def test_explicit_separator_joins_everywhere(tmp_path, fake_model, tiny):
    lib = library(tmp_path / "lib", genre=None, exts=[".flac", ".mp3", ".m4a"])
    res = run("tag", lib, "--write", "--top-k", "2", "--min-confidence", "0.25", "--separator", " / ",
              "-j", "1", "--model", tiny)
    assert res.exit_code == 0, res.output
    for p in lib.iterdir():
        assert af.genre_values(p) == ["Jazz / Blues"], p.name


def test_genre_names_option(tmp_path, fake_model, tiny):
    p = af.make_file(tmp_path / "a.flac")
    names = tmp_path / "names.txt"
    names.write_text("jazz=Jazz & Swing\n")
    fake_model["a.flac"] = {"jazz": 0.9}
    res = run("tag", p, "--write", "--genre-names", names, "-j", "1", "--model", tiny)
    assert res.exit_code == 0, res.output
    assert af.genre_values(p) == ["Jazz & Swing"]
    names.write_text("{not json")
    assert run("tag", p, "--genre-names", names, "--model", tiny).exit_code == 2


def test_keep_mtime(tmp_path, fake_model, tiny):
    p = af.make_file(tmp_path / "a.wav")
    os.utime(p, ns=(1_500_000_000_000_000_000, 1_600_000_000_000_000_000))
    assert run("tag", p, "--write", "--keep-mtime", "-j", "1", "--model", tiny).exit_code == 0
    st = p.stat()
    assert af.genre_values(p) == ["Jazz"]
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_500_000_000_000_000_000, 1_600_000_000_000_000_000)


# --- errors ------------------------------------------------------------------------

def test_bad_files_are_reported_and_skipped(tmp_path, fake_model, tiny):
    lib = library(tmp_path / "lib", genre=None, exts=[".flac", ".mp3"])
    ro = af.make_file(lib / "readonly.ogg")
    os.chmod(ro, 0o444)
    ro_bytes = ro.read_bytes()
    (lib / "garbage.m4a").write_bytes(b"\0\0\0\x08ftypM4A junk that is not an mp4 file at all")
    res = run("tag", lib, "--write", "-j", "1", "--format", "jsonl", "--model", tiny)
    assert res.exit_code == 1
    out = rows(res)
    assert out["readonly.ogg"]["action"] == "error" and "read-only" in out["readonly.ogg"]["error"]
    assert ro.read_bytes() == ro_bytes
    assert out["garbage.m4a"]["action"] == "error" and "\n" not in out["garbage.m4a"]["error"]
    assert out["song.flac"]["action"] == out["song.mp3"]["action"] == "written"
    assert "Traceback" not in res.output
    assert "1 failed" not in res.stderr and "2 failed" in res.stderr


def test_vanished_file_is_an_error(tmp_path, fake_model, tiny):
    p = af.make_file(tmp_path / "a.flac")
    with pytest.raises(TagError, match="not found"):
        write_genres_safely(tmp_path / "gone.flac", ["Jazz"])
    res = run("tag", p, tmp_path / "gone.mp3", "--write", "-j", "1", "--format", "jsonl", "--model", tiny)
    assert res.exit_code == 1 and rows(res)["gone.mp3"]["action"] == "error"
    assert af.genre_values(p) == ["Jazz"]


# --- journal and undo --------------------------------------------------------------

def test_undo_restores_and_refuses_changed_files(tmp_path, fake_model, tiny):
    lib = library(tmp_path / "lib", genre="Rock", exts=[".mp3", ".flac", ".m4a", ".opus"])
    originals = {p.name: af.genre_values(p) for p in lib.iterdir()}
    tags_before = {p.name: af.all_tags(p) for p in lib.iterdir()}
    journal = tmp_path / "j.jsonl"
    res = run("tag", lib, "--write", "--overwrite", "--journal", journal, "-j", "1", "--model", tiny)
    assert res.exit_code == 0, res.output
    # a second write of the same file (append), so undo must walk back through both
    fake_model["song.mp3"] = {"metal": 0.8}
    run("tag", lib / "song.mp3", "--write", "--append", "--journal", journal, "--no-cache", "-j", "1",
        "--model", tiny)
    assert af.genre_values(lib / "song.mp3") == ["Jazz", "Metal"]
    # someone edits one file afterwards
    from mutagen.flac import FLAC

    f = FLAC(lib / "song.flac")
    f["GENRE"] = ["Edited"]
    f.save()
    dry = run("undo", journal, "--dry-run")
    assert dry.exit_code == 1 and "would restore" in dry.stdout
    assert af.genre_values(lib / "song.mp3") == ["Jazz", "Metal"]
    res = run("undo", journal)
    assert res.exit_code == 1
    assert "refused" in res.stdout and "song.flac" in res.stdout.split("refused")[1].splitlines()[0]
    for name in ("song.mp3", "song.m4a", "song.opus"):
        assert af.genre_values(lib / name) == originals[name], name
        assert af.all_tags(lib / name) == tags_before[name]
    assert af.genre_values(lib / "song.flac") == ["Edited"]
    again = run("undo", journal)
    assert again.stdout.count("skipped") == 4 and "restored" not in again.stdout.replace("already restored", "")
    assert again.exit_code == 1  # the edited file is still refused


def test_undo_default_journal(tmp_path, fake_model, tiny):
    p = af.make_file(tmp_path / "a.aiff", genre="Rock")
    run("tag", p, "--write", "--overwrite", "-j", "1", "--model", tiny)
    assert af.genre_values(p) == ["Jazz"]
    res = run("undo")
    assert res.exit_code == 0 and af.genre_values(p) == ["Rock"]
    assert [i.status for i in undo()] == ["skipped"]


def test_a_folder_as_journal_is_a_usage_error_before_any_work(tmp_path, fake_model, tiny):
    p = af.make_file(tmp_path / "a.flac", genre="Rock")
    before = p.read_bytes()
    res = run("tag", p, "--write", "--journal", tmp_path, "--model", tiny)
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines()[-1] == (
        f"genretag: error: --journal {tmp_path} is a folder: give the journal's file name")
    assert p.read_bytes() == before


def test_an_unusable_result_cache_is_a_warning_and_tagging_goes_on(tmp_path, fake_model, tiny, monkeypatch):
    p = af.make_file(tmp_path / "a.ogg", genre="Rock")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("GENRETAG_CACHE_DIR", str(blocker))  # the cache's folder cannot be made
    res = run("tag", p, "--write", "--overwrite", "--journal", tmp_path / "j.jsonl", "--model", tiny)
    assert res.exit_code == 0 and af.genre_values(p) == ["Jazz"]
    warned = [line for line in res.stderr.splitlines() if "result cache" in line]
    assert len(warned) == 1 and warned[0].startswith("genretag: warning: result cache unavailable (")
    assert warned[0].endswith("; classifying everything")


def test_undo_of_a_file_without_genre_removes_it(tmp_path):
    p = af.make_file(tmp_path / "a.m4a")
    j = tmp_path / "j.jsonl"
    from genretag.tags.journal import JournalWriter

    write_genres_safely(p, ["Pop"], before_replace=JournalWriter(j))
    assert [i.status for i in undo(j)] == ["restored"]
    assert af.genre_values(p) == []


# --- crash safety ------------------------------------------------------------------

# The crash point, installed in the child before it writes: at the step named by
# GENRETAG_TEST_CRASH_AT the process pauses (GENRETAG_TEST_CRASH_PAUSE, waiting for the kill) or exits.
_CRASH_HOOK = """
import os, sys, time
from genretag.tags import safe_write

def _crash_at(step):
    if os.environ.get("GENRETAG_TEST_CRASH_AT") != step:
        return
    if os.environ.get("GENRETAG_TEST_CRASH_PAUSE"):
        print(f"GENRETAG-PAUSED {step}", file=sys.stderr, flush=True)
        time.sleep(3600)
    os._exit(70)

safe_write._checkpoint = _crash_at
"""

_CRASH_SCRIPT = _CRASH_HOOK + """
from genretag.tags.journal import JournalWriter
from genretag.tags.safe_write import write_genres_safely
write_genres_safely(sys.argv[1], ["Jazz"], before_replace=JournalWriter(sys.argv[2]))
print("done")
"""


def test_kill_during_write_leaves_old_or_new_and_next_run_cleans(tmp_path, fake_model, tiny):
    """kill -9 at each step of a safe write (paused there by a test hook), in parallel."""
    steps = ["after_tmp_write", "after_modify", "before_replace", "after_replace"]
    procs = {}
    for i, step in enumerate(steps):
        d = tmp_path / step
        d.mkdir()
        p = af.make_file(d / ("song.mp3" if i % 2 else "song.flac"), genre="Rock")
        env = dict(os.environ, GENRETAG_TEST_CRASH_AT=step, GENRETAG_TEST_CRASH_PAUSE="1")
        procs[step] = (p, subprocess.Popen([sys.executable, "-c", _CRASH_SCRIPT, str(p), str(tmp_path / "j.jsonl")],
                                           env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                                           start_new_session=True))
    # and one that simply exits (os._exit) just before the rename, started alongside
    (tmp_path / "quick").mkdir()
    quick = af.make_file(tmp_path / "quick" / "a.wav", genre="Rock")
    quick_bytes = quick.read_bytes()
    quick_proc = subprocess.Popen([sys.executable, "-c", _CRASH_SCRIPT, str(quick), str(tmp_path / "j.jsonl")],
                                  env=dict(os.environ, GENRETAG_TEST_CRASH_AT="before_replace"),
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for step, (p, proc) in procs.items():
        line = proc.stderr.readline().decode()
        assert f"GENRETAG-PAUSED {step}" in line, line + proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
        assert af.genre_values(p) in (["Rock"], ["Jazz"]), step
        af.decode(p)  # still a readable audio file
        strays = [q for q in p.parent.iterdir() if TMP_MARK in q.name]
        assert len(strays) == (0 if step == "after_replace" else 1), step
        if step in ("after_replace",):
            assert af.genre_values(p) == ["Jazz"]
        elif step != "before_replace":
            assert af.genre_values(p) == ["Rock"]
    out, _ = quick_proc.communicate(timeout=120)
    assert quick_proc.returncode != 0 and b"done" not in out
    assert quick.read_bytes() == quick_bytes
    # something that merely looks similar is not touched
    keep = tmp_path / "after_modify" / ".notes.genretag-tmp-mine"
    keep.write_text("mine")
    res = run("tag", *[tmp_path / s for s in steps], "--write", "--overwrite", "-j", "1", "--model", tiny)
    assert res.exit_code == 0, res.output
    assert "removed stray temporary file" in res.stderr
    for step, (p, _) in procs.items():
        assert [q.name for q in p.parent.iterdir() if TMP_MARK in q.name and q != keep] == []
        assert af.genre_values(p) == ["Jazz"]
    assert keep.exists()
    # the journal line written before the interrupted replace does not confuse undo
    statuses = [i.status for i in undo(tmp_path / "j.jsonl")]
    assert "refused" not in statuses


# --- cache -------------------------------------------------------------------------

def _counts(stderr: str) -> tuple[int, int]:
    import re

    m = re.search(r"\((\d+) classified, (\d+) from cache\)", stderr)
    assert m, stderr
    return int(m.group(1)), int(m.group(2))


def test_resumed_run_classifies_only_what_changed(tmp_path, tiny):
    """Real (tiny) model end to end: the cache survives genretag's own tag writes."""
    lib = library(tmp_path / "lib", genre=None, exts=[".mp3", ".flac", ".ogg", ".m4a", ".wav"], seconds=1.5)
    args = ["tag", lib, "--write", "--min-confidence", "0", "-j", "1", "--model", tiny, "--format", "jsonl"]
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert _counts(first.stderr) == (5, 0)
    assert {d["action"] for d in rows(first).values()} == {"written"}
    written = {n: d["new"] for n, d in rows(first).items()}
    af.make_file(lib / "new.opus", seconds=1.5)
    af.make_file(lib / "song.wav", seconds=1.5, freq=1234.0)  # new audio under an old name
    second = run(*args, "--overwrite")
    assert second.exit_code == 0, second.output
    assert _counts(second.stderr) == (2, 4)
    out = rows(second)
    for n in ("song.mp3", "song.flac", "song.ogg", "song.m4a"):  # same answer from the cache
        assert out[n]["action"] == "skip: unchanged" and out[n]["proposed"] == written[n]
    third = run(*args, "--no-cache")
    assert _counts(third.stderr) == (6, 0)
    assert (Path(os.environ["GENRETAG_CACHE_DIR"]) / "results.sqlite").exists()


def test_cache_keys(tmp_path):
    c = ResultCache(tmp_path / "c.sqlite")
    r = result("/x/a.mp3", rock=0.9)
    c.put_many([("fp1", "m@1", "soft", 3, r), ("fp2", "m@1", "soft", 3, TrackResult("b", None, None, {}, 0, "bad"))])
    got = c.get("fp1", "m@1", "soft", 3)
    assert got.genre == "rock" and got.probabilities == r.probabilities
    assert c.get("fp1", "m@2", "soft", 3) is None and c.get("fp1", "m@1", "hard", 3) is None
    assert c.get("fp1", "m@1", "soft", 5) is None and c.get("fp2", "m@1", "soft", 3) is None
    c2 = ResultCache(tmp_path / "c.sqlite")  # a second run sharing the cache
    assert c2.get("fp1", "m@1", "soft", 3) is not None
    c.close()
    c2.close()


def _fill_cache(path: Path, n: int = 3000) -> None:
    c = ResultCache(path)
    c.put_many([(f"fp{i:05d}", "m@1", "soft", 0, result(f"/x/{i}.mp3", rock=0.9)) for i in range(n)])
    c.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_cache_is_moved_aside_and_rebuilt(tmp_path, tiny, damage):
    """A cache file that is not a database, or a real one cut short: moved aside, one warning, a normal run."""
    db = Path(os.environ["GENRETAG_CACHE_DIR"]) / "results.sqlite"
    db.parent.mkdir(parents=True, exist_ok=True)
    if damage == "garbage":
        db.write_bytes(b"this is not a database " * 400)
    else:
        _fill_cache(db)
        with open(db, "r+b") as f:
            f.truncate(db.stat().st_size // 2)
    damaged = db.read_bytes()
    lib = library(tmp_path / "lib", genre=None, exts=[".flac", ".mp3"], seconds=1.5)
    args = ["tag", lib, "--min-confidence", "0", "-j", "1", "--model", tiny, "--format", "jsonl"]
    first = run(*args)
    assert first.exit_code == 0, first.output
    warnings = [line for line in first.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "corrupt" in warnings[0] and "moved aside" in warnings[0], first.stderr
    assert {d["action"] for d in rows(first).values()} == {"write"}
    assert _counts(first.stderr) == (2, 0)
    (aside,) = db.parent.glob("results.sqlite.corrupt-*")
    assert aside.read_bytes() == damaged
    second = run(*args)  # the rebuilt cache works: no warning, every answer from it
    assert second.exit_code == 0 and "warning" not in second.stderr, second.output
    assert _counts(second.stderr) == (0, 2)
    assert rows(second) == rows(first)


def test_cache_damaged_inside_is_rebuilt_on_first_use(tmp_path, caplog):
    """Page 1 intact (the file opens), table pages overwritten: the first lookup finds it, rebuilds, warns once."""
    path = tmp_path / "c.sqlite"
    _fill_cache(path)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = bytes(range(256)) * ((len(data) - page) // 256) + bytes((len(data) - page) % 256)
    path.write_bytes(bytes(data))
    c = ResultCache(path)
    assert c.moved_aside is None  # nothing wrong is visible on open
    with caplog.at_level("WARNING", logger="genretag"):
        assert c.get("fp00001", "m@1", "soft", 0) is None
        c.put_many([("fp1", "m@1", "soft", 0, result("/x/a.mp3", jazz=0.8))])
        assert c.get("fp1", "m@1", "soft", 0).genre == "jazz" and len(c) == 1
    assert c.moved_aside is not None and c.moved_aside.read_bytes() == bytes(data)
    assert len([r for r in caplog.records if "corrupt" in r.getMessage()]) == 1
    c.close()


def test_symlink_target_is_written_and_link_kept(tmp_path):
    real = af.make_file(tmp_path / "real.flac", genre="Rock")
    link = tmp_path / "link.flac"
    link.symlink_to(real)
    out = write_genres_safely(link, ["Jazz"])
    assert link.is_symlink() and out.path == str(real.resolve())
    assert af.genre_values(real) == ["Jazz"]


def test_second_writer_waits_for_the_first_then_writes_the_new_file(tmp_path):
    """A write waits while another writer holds the file, then reads the file that writer renamed in place."""
    import fcntl
    import threading

    p = af.make_file(tmp_path / "a.flac", genre="Rock", title="T")
    holder = os.open(p, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # what a concurrent genretag run holds from its first read to its rename
    done: dict = {}
    t = threading.Thread(target=lambda: done.update(out=write_genres_safely(p, ["Jazz"])))
    t.start()
    t.join(1.0)
    assert t.is_alive(), "the second writer did not wait"
    other = tmp_path / "other.flac"
    other.write_bytes(p.read_bytes())
    write_genres_safely(other, ["Metal"])
    os.replace(other, p)  # the first writer's rename: a new inode at the same path
    os.close(holder)
    t.join(30)
    assert not t.is_alive()
    assert done["out"].old == ["Metal"] and af.genre_values(p) == ["Jazz"]


def test_a_stalled_writer_makes_the_file_an_error_not_a_hang(tmp_path, monkeypatch):
    """A writer that holds the lock and never finishes (stopped with Ctrl-Z, say): after LOCK_WAIT the
    file is a one-line error, left as it is, and the next file can be written."""
    import fcntl

    from genretag.tags import safe_write

    monkeypatch.setattr(safe_write, "LOCK_WAIT", 0.3)
    p = af.make_file(tmp_path / "a.flac", genre="Rock")
    before = p.read_bytes()
    holder = os.open(p, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(TagError, match=r"^locked by another process for 0.3 s") as e:
            write_genres_safely(p, ["Jazz"])
        assert "\n" not in str(e.value) and p.read_bytes() == before
    finally:
        os.close(holder)
    assert write_genres_safely(p, ["Jazz"]).new == ["Jazz"]


@pytest.mark.parametrize("ext", [".wav", ".aiff"])
@pytest.mark.parametrize("damage", ["shifted", "cut"])
def test_iff_chunks_that_do_not_fill_the_file_are_refused(tmp_path, ext, damage):
    """Bytes lost or added inside the audio chunk hide the ID3 chunk behind it (mutagen stops at the first
    chunk header it cannot read): the tag is refused as damaged, not read as "no genre" and given a second one."""
    p = af.make_file(tmp_path / f"a{ext}", genre="Rock")
    data = p.read_bytes()
    mid = len(data) // 2  # inside the audio chunk; the ID3 chunk comes after it
    data = data[:mid] + b"\0" * 10 + data[mid:] if damage == "shifted" else data[:mid]
    p.write_bytes(data)
    with pytest.raises(DamagedTagError, match=r"^damaged (wav|aiff) chunks: they cover"):
        read_tags(p)
    with pytest.raises(TagError, match="damaged"):
        write_genres_safely(p, ["Jazz"])
    assert p.read_bytes() == data


# --- the whole tag -----------------------------------------------------------------

def _corrupt_frame(p: Path, how: str) -> bytes:
    """Damage the TIT2 frame of an mp3's ID3v2.4 tag: its size, or its frame ID."""
    data = bytearray(p.read_bytes())
    at = data.index(b"TIT2")
    if how == "size":
        data[at + 4:at + 8] = b"\x00\x00\x7f\x7f"
    else:
        data[at:at + 4] = b"T\x00T2"
    p.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("how", ["size", "id"])
def test_corrupt_id3_frame_is_refused_untouched(tmp_path, fake_model, tiny, how):
    lib = library(tmp_path / "lib", genre="Rock", exts=[".flac"])
    bad = af.make_file(lib / "bad.mp3", genre="Rock")
    damaged = _corrupt_frame(bad, how)
    res = run("tag", lib, "--write", "--overwrite", "-j", "1", "--format", "jsonl", "--model", tiny)
    assert res.exit_code == 1, res.output
    out = rows(res)
    assert out["bad.mp3"]["action"] == "error"
    assert any(w in out["bad.mp3"]["error"] for w in ("invalid frame ID", "past the end", "damaged")), out
    assert "\n" not in out["bad.mp3"]["error"]
    assert bad.read_bytes() == damaged
    assert out["song.flac"]["action"] == "written"
    dry = run("tag", bad, "--overwrite", "-j", "1", "--format", "jsonl", "--model", tiny)
    assert dry.exit_code == 1 and rows(dry)["bad.mp3"]["action"] == "error"


def test_other_frames_keep_their_bytes(tmp_path):
    """Frames mutagen would re-encode (UTF-16 BE, trailing nulls, flags) are kept byte for byte; v2.2 stays v2.2."""
    def to_syncsafe(n: int) -> bytes:
        return bytes((n >> (7 * (3 - i))) & 0x7F for i in range(4))

    def frame(fid: bytes, body: bytes, flags: bytes = b"\0\0") -> bytes:
        return fid + len(body).to_bytes(4, "big") + flags + body

    for major, frames in (
        (3, [frame(b"TIT2", b"\x01\xfe\xff\x00A\x00\x00"), frame(b"TPE1", b"\x00Someone\x00"),
             frame(b"TCON", b"\x00Rock\x00"), frame(b"PRIV", b"owner\x00\x01\x02", b"\x00\x20"[::-1])]),
        (2, [b"TT2" + (9).to_bytes(3, "big") + b"\x00A Song\x00\x00", b"TCO" + (5).to_bytes(3, "big") + b"\x00Rock"]),
    ):
        body = b"".join(frames)
        tag = b"ID3" + bytes((major, 0, 0)) + to_syncsafe(len(body) + 64) + body + b"\0" * 64
        p = tmp_path / f"v2{major}.mp3"
        audio = af.make_file(tmp_path / "src.mp3").read_bytes()
        p.write_bytes(tag + audio)
        write_genres_safely(p, ["Jazz", "Blues"])
        data = p.read_bytes()
        assert data[3] == major
        for f in frames:
            if f[:3] not in (b"TCO",):
                assert f in data[:len(tag) + 200], f
        assert data.endswith(audio)
        assert af.genre_values(p) == ["Jazz; Blues"]  # v2.3 and v2.2 hold one text value: joined


def test_vorbis_comments_mutagen_would_rewrite_keep_their_bytes(tmp_path):
    """A comment that is not UTF-8, and one without "=": mutagen would save them changed."""
    import struct as st

    from mutagen.flac import FLAC

    p = af.make_file(tmp_path / "a.flac", genre="Rock")
    odd = [b"TITLE=caf\xe9", b"NOEQUALSIGN", b"genre=Rock"]
    f = FLAC(p)
    f.save()
    data = bytearray(p.read_bytes())
    pos = 4
    while True:  # replace the comment block by a hand-made one
        head, n = data[pos], int.from_bytes(data[pos + 1:pos + 4], "big")
        if head & 0x7F == 4:
            block = st.pack("<I", 3) + b"ven" + st.pack("<I", len(odd)) + b"".join(
                st.pack("<I", len(c)) + c for c in odd)
            data[pos:pos + 4 + n] = bytes([head]) + len(block).to_bytes(3, "big") + block
            break
        pos += 4 + n
    p.write_bytes(bytes(data))
    write_genres_safely(p, ["Jazz"])
    out = p.read_bytes()
    assert b"TITLE=caf\xe9" in out and b"NOEQUALSIGN" in out and b"GENRE=Jazz" in out
    assert b"=Rock" not in out
    assert len(FLAC(p).pictures) == 1


def test_mp4_items_keep_their_bytes(tmp_path):
    """A title whose data atom has a locale set: mutagen would render it with locale 0."""
    p = af.make_file(tmp_path / "a.m4a", genre="Rock")
    data = bytearray(p.read_bytes())
    i = data.index(b"\xa9nam")  # [size][\xa9nam][size]["data"][type][locale]...
    data[i + 16:i + 20] = b"\0\0\0\x07"
    p.write_bytes(bytes(data))
    item = bytes(data[i - 4:i - 4 + int.from_bytes(data[i - 4:i], "big")])
    write_genres_safely(p, ["Jazz"])
    assert af.genre_values(p) == ["Jazz"]
    assert item in p.read_bytes()


# --- what changed since classification, names, concurrency, hard links ---------------

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


def test_non_utf8_file_name_is_journalled_and_undone(tmp_path, fake_model, tiny):
    lib = tmp_path / "lib"
    lib.mkdir()
    odd = Path(os.fsdecode(os.path.join(os.fsencode(lib), b"caf\xe9-\xff.flac")))
    os.rename(af.make_file(lib / "plain.flac", genre="Rock"), odd)  # soundfile cannot open such names
    af.make_file(lib / "zz.mp3", genre="Rock")
    journal = tmp_path / "j.jsonl"
    res = run("tag", lib, "--write", "--overwrite", "-j", "1", "--format", "jsonl", "--journal", journal,
              "--model", tiny)
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout_bytes.decode("utf-8").splitlines()]  # valid UTF-8
    by_name = {os.path.basename(d["path"]): d for d in lines}
    assert set(by_name) == {"caf\\xe9-\\xff.flac", "zz.mp3"} and all(d["action"] == "written" for d in lines)
    # the one reversible form, as in classify's JSON lines: path_bytes, the exact name in base64
    assert base64.b64decode(by_name["caf\\xe9-\\xff.flac"]["path_bytes"]) == os.fsencode(odd)
    assert "path_bytes" not in by_name["zz.mp3"]
    text = journal.read_bytes().decode("utf-8")  # the journal stays valid UTF-8, with no \\udcXX escapes
    assert "\\udc" not in text
    (entry,) = [e for e in map(json.loads, text.splitlines()) if "path_bytes" in e]
    assert base64.b64decode(entry["path_bytes"]) == os.fsencode(odd.resolve())
    assert entry["path"] == os.fsencode(odd.resolve()).decode("utf-8", "backslashreplace")
    assert {os.fsencode(e["path"]) for e in read_entries(journal)} == {os.fsencode(odd.resolve()),
                                                                       os.fsencode((lib / "zz.mp3").resolve())}
    res = run("undo", journal)  # undo finds the file by its journal entry's path_bytes
    assert res.exit_code == 0, res.output
    assert "restored " + entry["path"] in res.stdout
    assert af.genre_values(odd) == ["Rock"] and af.genre_values(lib / "zz.mp3") == ["Rock"]


def test_undo_reads_a_journal_line_with_surrogate_escapes(tmp_path):
    """A journal line whose `path` holds the JSON escapes \\udcXX (no path_bytes) names the same bytes."""
    from genretag.tags.journal import JournalWriter

    odd = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.flac")))
    os.rename(af.make_file(tmp_path / "plain.flac", genre="Rock"), odd)
    journal = tmp_path / "j.jsonl"
    write_genres_safely(odd, ["Jazz"], before_replace=JournalWriter(journal))
    entry = json.loads(journal.read_text())
    entry["path"] = os.fsdecode(base64.b64decode(entry.pop("path_bytes")))
    line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
    assert b"\\udce9" in line
    journal.write_bytes(line)
    assert [i.status for i in undo(journal)] == ["restored"] and af.genre_values(odd) == ["Rock"]
    bad = dict(entry, path_bytes="not base64!")
    journal.write_text(json.dumps(bad, ensure_ascii=True) + "\n")
    (item,) = undo(journal)
    assert item.status == "bad journal line" and "'path_bytes' is not base64" in item.message


_PAUSED_WRITE = _CRASH_HOOK + """
from genretag.tags.safe_write import write_genres_safely
write_genres_safely(sys.argv[1], ["Jazz"])
"""


def test_a_live_runs_temporary_file_is_not_cleaned(tmp_path, fake_model, tiny):
    """Run A is paused inside a write (its temporary copy exists); run B works on the same folder."""
    p = af.make_file(tmp_path / "a.flac", genre="Rock")
    af.make_file(tmp_path / "b.flac", genre="Rock")
    a = subprocess.Popen([sys.executable, "-c", _PAUSED_WRITE, str(p)], stderr=subprocess.PIPE,
                         env=dict(os.environ, GENRETAG_TEST_CRASH_AT="after_modify", GENRETAG_TEST_CRASH_PAUSE="1"))
    try:
        assert "GENRETAG-PAUSED" in a.stderr.readline().decode()
        temps = [q for q in tmp_path.iterdir() if TMP_MARK in q.name]
        assert len(temps) == 1
        # b.flac only: a.flac is locked by A (see the next test); the folder's strays are still cleaned
        res = run("tag", tmp_path / "b.flac", "--write", "--overwrite", "-j", "1", "--format", "jsonl",
                  "--model", tiny)
        assert res.exit_code == 0, res.output
        assert af.genre_values(tmp_path / "b.flac") == ["Jazz"]
        assert temps[0].exists() and "removed stray" not in res.stderr
    finally:
        a.kill()
        a.wait(10)
        a.stderr.close()
    res = run("tag", tmp_path, "--write", "--overwrite", "-j", "1", "--model", tiny)
    assert "removed stray temporary file" in res.stderr and not temps[0].exists()


def test_hard_links_are_skipped_unless_asked(tmp_path, fake_model, tiny):
    p = af.make_file(tmp_path / "a.flac", genre="Rock")
    other = tmp_path / "other-name.flac"
    os.link(p, other)
    res = run("tag", p, "--write", "--overwrite", "-j", "1", "--format", "jsonl", "--model", tiny)
    assert rows(res)["a.flac"]["action"] == "skip: hard link" and af.genre_values(p) == ["Rock"]
    res = run("tag", p, "--write", "--overwrite", "--split-hard-links", "-j", "1", "--format", "jsonl",
              "--model", tiny)
    assert rows(res)["a.flac"]["action"] == "written"
    assert af.genre_values(p) == ["Jazz"] and af.genre_values(other) == ["Rock"]


def test_an_edit_during_the_journal_append_is_not_lost(tmp_path):
    """The last check runs after the (slow) journal fsync, right before the rename."""
    p = af.make_file(tmp_path / "a.mp3", genre="Rock")

    def user_edits(_outcome):
        with open(p, "ab") as f:
            f.write(b"TAG" + b"\0" * 125)

    with pytest.raises(TagError, match="changed while"):
        write_genres_safely(p, ["Jazz"], before_replace=user_edits)
    assert af.genre_values(p) == ["Rock"] and p.read_bytes().endswith(b"TAG" + b"\0" * 125)
    assert not [q for q in tmp_path.iterdir() if TMP_MARK in q.name]


def test_undo_reports_malformed_entries_and_goes_on(tmp_path, fake_model, tiny):
    lib = library(tmp_path / "lib", genre="Rock", exts=[".flac", ".mp3"])
    journal = tmp_path / "j.jsonl"
    assert run("tag", lib, "--write", "--overwrite", "--journal", journal, "-j", "1", "--model", tiny).exit_code == 0
    good = journal.read_text().splitlines()
    base = json.loads(good[0])
    bad = []
    for change in ({"old": None}, {"old": "Rock"}, {"path": 5}, {"old": [1]}):
        bad.append(json.dumps({**base, **change, "id": "x" * 32}))
    for drop in ("old", "fingerprint_before"):
        bad.append(json.dumps({k: v for k, v in base.items() if k != drop}))
    journal.write_text("\n".join([good[0], *bad, "{not json at all", "[1, 2]", good[1]]) + "\n")
    res = run("undo", journal)
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 8 and all("j.jsonl:" in w and "skipped" in w for w in warnings)
    assert "'old' is not a list of strings" in res.stderr and "'path' is not a non-empty string" in res.stderr
    assert "'fingerprint_before' is missing" in res.stderr and "not valid JSON" in res.stderr
    assert "8 bad journal lines" in res.stderr and "2 restored" in res.stderr
    assert af.genre_values(lib / "song.flac") == ["Rock"] and af.genre_values(lib / "song.mp3") == ["Rock"]
    # a line torn by a crash at the very end is a warning, not a failure
    torn = tmp_path / "torn.jsonl"
    torn.write_text(good[0] + "\n" + good[1][:40])
    res = run("undo", torn)
    assert res.exit_code == 0 and "unterminated last line" in res.stderr
