"""The result cache as `genretag tag` uses it: a resumed run, the keys, a damaged cache."""

from __future__ import annotations

import os
from pathlib import Path

import audio_factory as af
import pytest
from tag_library import library, result, rows, run

from genretag.pipeline.inference import TrackResult
from genretag.pipeline.result_cache import ResultCache


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
