"""The input side, second probe: outputs that would destroy inputs, odd but real containers, names a
terminal cannot show, the Python API's inputs, the result cache, environment bounds, closed streams.

Each test runs the real CLI (or the real API) on files made at test time.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from audio_factory import genre_values, make_file
from hostile import assert_clean_stderr, run_cli, varied_tone

from genretag.audio import decode as audio


def jsonl(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode("utf-8").splitlines() if line.strip()]


def cli(*args: str, env: dict[str, str | None] | None = None, **kw) -> subprocess.CompletedProcess:
    """`run_cli` with environment changes (a None value removes the variable)."""
    full = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    return subprocess.run([sys.executable, "-m", "genretag", *args], capture_output=True, timeout=300, env=full, **kw)


def error_lines(stderr: bytes) -> list[str]:
    return [line for line in assert_clean_stderr(stderr) if line.startswith("genretag: error:")]


# ----------------------------------------------------------------------------- outputs (defect 5)

@pytest.mark.slow
def test_an_output_that_names_an_input_or_an_audio_file_is_refused_before_anything_is_written(
        tmp_path, tiny_model_dir):
    song = make_file(tmp_path / "song.mp3", seconds=2.0)
    other = make_file(tmp_path / "other.flac", seconds=1.0)
    disguised = shutil.copy(make_file(tmp_path / "w.wav", seconds=1.0), tmp_path / "notes.txt")  # audio by content
    link = tmp_path / "link.mp3"
    link.symlink_to(song)
    hard = tmp_path / "hard-link"
    os.link(song, hard)
    before = {p: p.read_bytes() for p in (song, other, disguised)}
    cases = [(song, "is one of the input files"), (hard, "is one of the input files"),
             (other, "looks like an audio file (flac content)"), (disguised, "looks like an audio file (wav content)")]
    for target, why in cases:
        r = run_cli("classify", str(song), "--model", str(tiny_model_dir), "-o", str(target), "-f", "csv")
        assert r.returncode == 2, (target, r.stderr)
        assert error_lines(r.stderr) == [f"genretag: error: -o {target} {why}: refusing to overwrite it"]
        assert r.stdout == b""
    r = run_cli("classify", str(link), "--model", str(tiny_model_dir), "-o", str(song))  # the link's target
    assert r.returncode == 2 and b"is one of the input files" in r.stderr, r.stderr
    r = run_cli("tag", str(tmp_path), "--model", str(tiny_model_dir), "--write", "--min-confidence", "0",
                "--journal", str(other))
    assert r.returncode == 2, r.stderr
    assert error_lines(r.stderr) == [f"genretag: error: --journal {other} looks like an audio file (flac content): "
                                     "refusing to overwrite it"]
    assert {p: p.read_bytes() for p in before} == before
    assert genre_values(song) == []
    ok = tmp_path / "genres.csv"  # an ordinary output still works, and so does writing it again
    for _ in range(2):
        r = run_cli("classify", str(song), "--model", str(tiny_model_dir), "-o", str(ok), "-f", "csv")
        assert r.returncode == 0, r.stderr
        assert ok.read_text().startswith("path,genre,confidence,error,would_tag\n")


# ----------------------------------------------------------------------------- containers (10, 11, 17)

@pytest.mark.slow
def test_a_chained_ogg_is_classified_over_every_link(tmp_path, tiny_model_dir):
    """Two Vorbis files back to back: a short one, then a long one (libsndfile saw 3 s, and read nothing
    at the offsets its wrong length gave). The length is the sum and the sub-tracks reach the second link."""
    short = make_file(tmp_path / "short.ogg", seconds=3.0, freq=300.0)
    long = make_file(tmp_path / "long.ogg", seconds=20.0, freq=1000.0)
    chained = tmp_path / "chained.ogg"
    chained.write_bytes(short.read_bytes() + long.read_bytes())
    ai = audio.info(chained)
    assert ai.duration == pytest.approx(23.0, abs=0.05)
    x = audio.read_segments(chained, [1.0, 2.5, 15.0, 21.5], 1.0, 22050, ai)
    peaks = [int(np.argmax(np.abs(np.fft.rfft(seg)))) for seg in x]  # 1 Hz per bin for 1 s
    assert peaks[0] == pytest.approx(300, abs=3) and peaks[2] == pytest.approx(1000, abs=3), peaks
    assert peaks[3] == pytest.approx(1000, abs=3)  # the second link's end is read too
    r = run_cli("classify", str(chained), str(short), "--model", str(tiny_model_dir), "-f", "jsonl")
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    row = jsonl(r.stdout)[0]
    assert row["error"] is None and row["genre"] is not None and row["segments"] == 3


def _latin1_title(src, dst):
    """An m4a whose ©nam atom holds Latin-1 bytes (mutagen writes UTF-8; same length, patched in place)."""
    import mutagen.mp4

    shutil.copy(src, dst)
    f = mutagen.mp4.MP4(dst)
    f["\xa9nam"] = ["Chanson franQQQaise"]
    f.save()
    data = dst.read_bytes()
    assert data.count(b"QQQ") == 1
    dst.write_bytes(data.replace(b"QQQ", b"\xe7\xe9\xe8"))
    return dst


@pytest.mark.slow
def test_an_m4a_with_a_latin1_text_atom_is_classified(tmp_path, tiny_model_dir):
    clean = make_file(tmp_path / "clean.m4a", seconds=3.0, freq=500.0)
    latin = _latin1_title(clean, tmp_path / "latin.m4a")
    r = run_cli("classify", str(clean), str(latin), "--model", str(tiny_model_dir), "-f", "jsonl")
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    a, b = jsonl(r.stdout)
    assert b["error"] is None and b["probabilities"] == a["probabilities"]


@pytest.mark.slow
def test_an_rf64_wav_is_classified_and_its_tag_is_unsupported_not_damaged(tmp_path, tiny_model_dir):
    rf = tmp_path / "big.wav"
    sf.write(str(rf), varied_tone(16000, 3.0), 16000, format="RF64", subtype="PCM_16")
    assert rf.read_bytes()[:4] == b"RF64"
    before = rf.read_bytes()
    r = run_cli("tag", str(rf), "--model", str(tiny_model_dir), "--write", "--min-confidence", "0", "-f", "jsonl")
    assert r.returncode == 1, r.stderr
    (row,) = jsonl(r.stdout)
    assert row["error"] == "unsupported format for tagging: RF64 wav" and row["confidence"] is not None
    assert rf.read_bytes() == before


# ----------------------------------------------------------------------------- names (defect 12)

@pytest.mark.slow
@pytest.mark.parametrize("env", [{"PYTHONIOENCODING": "ascii"},
                                 {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
                                  "PYTHONIOENCODING": None}], ids=["ascii", "C-locale"])
def test_names_the_terminal_cannot_show_are_escaped_in_classify_tag_and_undo(tmp_path, tiny_model_dir, env):
    lib = tmp_path / "lib"
    lib.mkdir()
    names = ["Café.flac", "日本の歌.mp3", "plain.ogg", "Ærø.m4a"]
    files = [make_file(lib / n, seconds=1.5, freq=200.0 + 90 * i) for i, n in enumerate(names)]
    model = ["--model", str(tiny_model_dir)]
    for fmt in ("table", "csv", "jsonl"):
        r = cli("classify", str(lib), *model, "-f", fmt, env=env)
        assert r.returncode == 0, r.stderr
        assert_clean_stderr(r.stderr)
        text = r.stdout.decode("ascii")  # nothing the terminal cannot show
        assert "Caf\\xe9" in text or "Caf\\u00e9" in text, text
        if fmt == "jsonl":
            assert sorted(row["path"] for row in jsonl(r.stdout)) == sorted(map(str, files))
    journal = tmp_path / "journal.jsonl"
    r = cli("tag", str(lib), *model, "--write", "--min-confidence", "0", "--journal", str(journal), env=env)
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    assert all(genre_values(f) for f in files)
    r = cli("undo", str(journal), env=env)
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    assert r.stdout.decode("ascii").count("restored") == len(files)
    assert [genre_values(f) for f in files] == [[]] * len(files)  # every file undone, not just those before a name


# ----------------------------------------------------------------------------- the API (defect 13)

def test_the_api_takes_int_and_stereo_waveforms_and_bytes_paths_and_reports_bad_inputs(tmp_path, tiny_model_dir):
    from genretag.model import load_net

    model = load_net(tiny_model_dir, "cpu")
    x = varied_tone(model.sample_rate, 4.0) * 0.9
    left, right = x, np.roll(x, 3) * 0.5
    mono = (left + right) / 2
    stereo = np.stack([left, right], axis=1)  # (n, 2), as soundfile.read returns
    path = tmp_path / "clip.wav"
    sf.write(str(path), stereo, model.sample_rate, subtype="PCM_16")
    i16, _ = sf.read(str(path), dtype="int16")
    f64, _ = sf.read(str(path))
    results = model.classify([mono, stereo, stereo.T, i16, f64, (f64 * 32768).astype(np.int32) << 16,
                              np.array(0.5), None, 7, np.array(["a", "b"]), np.zeros((2, 2, 100))])
    ref = results[0]
    assert ref.ok and ref.segments == 3
    for r in results[1:6]:
        assert r.ok, r.error
        for k, p in r.probabilities.items():
            assert p == pytest.approx(ref.probabilities[k], abs=2e-3), (r.path, k)
    for r in results[6:]:
        assert r.error is not None and r.genre is None and r.probabilities == {}, r
    assert results[7].error == "not a file path or a waveform: NoneType"
    by_bytes, by_str = model.classify([os.fsencode(path), str(path)])
    assert by_bytes.ok and by_bytes.path == str(path) and by_bytes.probabilities == by_str.probabilities
    assert model.classify(None)[0].error == "not a file path or a waveform: NoneType"
    import genretag

    streamed = list(genretag.classify(iter([None, os.fsencode(path), 3]), model, jobs=2))
    assert [r.ok for r in streamed] == [False, True, False]  # None is an input, not the end of the stream


# ----------------------------------------------------------------------------- the result cache (defect 15)

@pytest.mark.slow
def test_a_cache_of_another_layout_is_left_alone_with_one_warning(tmp_path, tiny_model_dir):
    lib = tmp_path / "lib"
    lib.mkdir()
    make_file(lib / "a.flac", seconds=1.5)
    make_file(lib / "b.mp3", seconds=1.5, freq=600.0)
    db = tmp_path / "cache" / "results.sqlite"
    db.parent.mkdir()
    schemas = {"extra column": "CREATE TABLE results (fingerprint TEXT, model_id TEXT, vote TEXT, segments INTEGER,"
                               " result TEXT, created REAL, origin TEXT)",
               "other names": "CREATE TABLE results (fp TEXT, model TEXT, vote TEXT, n INTEGER, json TEXT, t REAL)"}
    env = {"GENRETAG_CACHE_DIR": str(db.parent)}
    for what, schema in schemas.items():
        db.unlink(missing_ok=True)
        with sqlite3.connect(db) as c:
            c.execute(schema)
        before = db.read_bytes()
        r = cli("tag", str(lib), "--model", str(tiny_model_dir), "--min-confidence", "0", "-f", "jsonl", env=env)
        assert r.returncode == 0, (what, r.stderr)
        lines = assert_clean_stderr(r.stderr)
        warnings = [line for line in lines if "warning" in line]
        assert len(warnings) == 1 and "another layout" in warnings[0], (what, r.stderr)
        assert [row["action"] for row in jsonl(r.stdout)] == ["write", "write"]
        assert db.read_bytes() == before  # another version's cache is not ours to change


def test_a_cache_locked_by_another_writer_is_given_up_with_one_warning(tmp_path, caplog):
    from genretag.pipeline.inference import TrackResult
    from genretag.pipeline.result_cache import ResultCache

    path = tmp_path / "c.sqlite"
    cache = ResultCache(path, busy_timeout=0.3)
    ok = TrackResult("a", "rock", 0.9, {"rock": 0.9}, 3)
    cache.put_many([("fp1", "m", "soft", 0, ok)])
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another writer, holding the lock longer than the busy timeout
    try:
        with caplog.at_level("WARNING", logger="genretag"):
            cache.put_many([("fp2", "m", "soft", 0, ok)])  # no exception: the run goes on without the cache
            assert cache.get("fp1", "m", "soft", 0) is None
            cache.put_many([("fp3", "m", "soft", 0, ok)])
    finally:
        other.execute("ROLLBACK")
        other.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "cannot be used" in warnings[0] and "locked" in warnings[0], warnings
    cache.close()
    again = ResultCache(path)
    assert again.get("fp1", "m", "soft", 0).genre == "rock" and len(again) == 1  # nothing was damaged
    again.close()


# ----------------------------------------------------------------------------- bounds and streams (defect 16)

@pytest.mark.slow
def test_genretag_threads_beyond_the_bound_is_ignored_with_one_warning(tmp_path, tiny_model_dir):
    song = make_file(tmp_path / "song.flac", seconds=1.5)
    for value in ("65536", "257", "0"):
        r = cli("classify", str(song), "--model", str(tiny_model_dir), "-f", "csv", env={"GENRETAG_THREADS": value})
        assert r.returncode == 0, (value, r.returncode, r.stderr)
        warnings = [line for line in assert_clean_stderr(r.stderr) if "warning" in line]
        assert warnings == [f"genretag: warning: GENRETAG_THREADS='{value}' ignored: expected a number from 1 to "
                            "256 or 'load'"]


@pytest.mark.slow
def test_a_full_output_is_one_line_exit_1(tmp_path, tiny_model_dir):
    song = make_file(tmp_path / "song.flac", seconds=1.5)
    for fmt in ("csv", "jsonl", "table"):
        r = run_cli("classify", str(song), "--model", str(tiny_model_dir), "-o", "/dev/full", "-f", fmt)
        assert r.returncode == 1, r.stderr
        assert error_lines(r.stderr) == ["genretag: error: cannot write the results to /dev/full: "
                                         "No space left on device"]
        with open("/dev/full", "wb") as full:  # stdout itself full
            r = subprocess.run([sys.executable, "-m", "genretag", "classify", str(song), "--model",
                                str(tiny_model_dir), "-f", fmt], stdout=full, stderr=subprocess.PIPE, timeout=300,
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
        assert r.returncode == 1, r.stderr
        assert error_lines(r.stderr) == ["genretag: error: cannot write the results to stdout: "
                                         "No space left on device"]


@pytest.mark.slow
def test_closed_stdout_or_stderr_still_gives_results_or_one_line(tmp_path, tiny_model_dir):
    song = make_file(tmp_path / "song.flac", seconds=1.5)
    out = tmp_path / "out.csv"
    model = ["--model", str(tiny_model_dir)]
    r = run_cli("classify", str(song), *model, preexec_fn=lambda: os.close(1))
    assert r.returncode == 2, r.stderr
    assert error_lines(r.stderr) == ["genretag: error: stdout is closed, so the results would be lost: give -o FILE"]
    r = run_cli("classify", str(song), *model, "-o", str(out), "-f", "csv", preexec_fn=lambda: os.close(1))
    assert r.returncode == 0, r.stderr
    assert out.read_text().splitlines()[1].startswith(f"{song},")
    r = run_cli("classify", str(song), *model, "-f", "csv", preexec_fn=lambda: os.close(2))
    assert r.returncode == 0 and r.stderr == b""
    assert r.stdout.decode().splitlines()[1].startswith(f"{song},")
    journal = tmp_path / "j.jsonl"
    r = run_cli("tag", str(song), *model, "--write", "--min-confidence", "0", "--journal", str(journal),
                preexec_fn=lambda: (os.close(1), os.close(2)))
    assert r.returncode == 0
    assert genre_values(song) and journal.exists()


def _card(path, members):
    path.write_text(json.dumps({"name": path.stem, "labels": ["a", "b"], "architecture": {"name": "ensemble"},
                                "members": members}))
    return path


@pytest.mark.slow
def test_an_ensemble_that_contains_itself_or_names_an_absolute_path_is_one_line(tmp_path, tiny_model_dir):
    song = make_file(tmp_path / "song.flac", seconds=1.5)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    _card(a, ["b.json"])
    _card(b, ["./a.json"])
    cases = {_card(tmp_path / "self.json", ["self.json"]): "is the ensemble itself or contains it",
             a: "is the ensemble itself or contains it",
             _card(tmp_path / "abs.json", [str(tiny_model_dir)]): "must name cards by paths relative to the card"}
    for card, why in cases.items():
        r = run_cli("classify", str(song), "--model", str(card), "-f", "csv")
        assert r.returncode == 1, (card, r.stderr)
        (line,) = error_lines(r.stderr)
        assert why in line, line
        assert r.stdout == b""
