"""The journal and undo (`genretag.tags.journal`, `genretag undo`)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import audio_factory as af
from tag_library import library, run

from genretag.tags.journal import read_entries, undo
from genretag.tags.safe_write import write_genres_safely


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


def test_undo_of_a_file_without_genre_removes_it(tmp_path):
    p = af.make_file(tmp_path / "a.m4a")
    j = tmp_path / "j.jsonl"
    from genretag.tags.journal import JournalWriter

    write_genres_safely(p, ["Pop"], before_replace=JournalWriter(j))
    assert [i.status for i in undo(j)] == ["restored"]
    assert af.genre_values(p) == []


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


def test_undo_statuses_are_the_journal_modules_constants(tmp_path):
    from genretag.tags.journal import REFUSED, RESTORED, SKIPPED, WOULD_RESTORE, JournalWriter

    a, b = af.make_file(tmp_path / "a.flac", genre="Rock"), af.make_file(tmp_path / "b.ogg", genre="Pop")
    j = tmp_path / "j.jsonl"
    for p in (a, b):
        write_genres_safely(p, ["Jazz"], before_replace=JournalWriter(j))
    af.make_file(b, freq=900.0, genre="Metal")  # changed since genretag wrote it
    assert [i.status for i in undo(j, dry_run=True)] == [REFUSED, WOULD_RESTORE]
    assert [i.status for i in undo(j)] == [REFUSED, RESTORED]
    assert [i.status for i in undo(j)] == [REFUSED, SKIPPED]
    assert af.genre_values(a) == ["Rock"] and af.genre_values(b) == ["Metal"]
