"""`genretag tag` (`genretag.cli.tag`): the dry run, writes in every format, policies, separators, names,
times, bad files, hard links.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import audio_factory as af
import numpy as np
import pytest
from mutagen import id3
from tag_library import EXTS, library, rows, run, snapshot

from genretag.audio.containers import file_fingerprint
from genretag.tags.fields import TagError
from genretag.tags.journal import read_entries
from genretag.tags.safe_write import write_genres_safely


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
