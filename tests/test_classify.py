"""`genretag classify` end to end: real files, real CLI, real model."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from audio_factory import FORMATS, make_file, make_tone, write_audio

import genretag
from genretag.audio.walk import iter_audio_files
from genretag.card import GTZAN_GENRES
from genretag.model import load_net

JSONL_KEYS = {"path", "genre", "confidence", "probabilities", "segments", "error", "would_tag"}


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real console entry point, in a subprocess (no tracebacks allowed on stderr)."""
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "genretag", *args], capture_output=True, text=True,
                          env=e, timeout=300)


@pytest.fixture()
def mixed_folder(tmp_path) -> Path:
    """Good files in every format (one nested, one 6-channel 96 kHz), plus bad ones and non-audio."""
    root = tmp_path / "music"
    (root / "sub" / "deeper").mkdir(parents=True)
    for i, ext in enumerate(sorted(FORMATS)):
        make_file(root / f"good{i}{ext}", seconds=2.5, freq=220.0 * (i + 1))
    make_file(root / "sub" / "deeper" / "nested.flac", seconds=1.0)
    import soundfile as sf

    sf.write(str(root / "sub" / "surround.wav"), make_tone(96000, 1.5, 500.0, channels=6), 96000,
             subtype="PCM_24")
    (root / "empty.mp3").write_bytes(b"")
    (root / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(3000))
    (root / "notes.txt").write_text("not music")
    (root / "cover.jpg").write_bytes(b"\xff\xd8\xff" + b"0" * 100)
    return root


def parse_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_folder_with_good_and_bad_files(mixed_folder, tiny_model_dir):
    r = run_cli("classify", str(mixed_folder), "--model", str(tiny_model_dir), "--format", "jsonl", "--jobs", "2")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    rows = parse_jsonl(r.stdout)
    by_name = {Path(row["path"]).name: row for row in rows}
    good = {f"good{i}{ext}" for i, ext in enumerate(sorted(FORMATS))} | {"nested.flac", "surround.wav"}
    assert set(by_name) == good | {"empty.mp3", "corrupt.flac"}  # no txt/jpg
    for row in rows:
        assert set(row) == JSONL_KEYS
    for name in good:
        row = by_name[name]
        assert row["error"] is None, row
        assert row["genre"] in GTZAN_GENRES
        assert set(row["probabilities"]) == set(GTZAN_GENRES)
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert row["confidence"] == pytest.approx(max(row["probabilities"].values()), abs=1e-6)
        assert row["segments"] >= 1
    assert by_name["good0.aiff"]["segments"] == 2  # 2.5 s, 1 s sub-tracks, max 3 -> 2 whole ones
    for name in ("empty.mp3", "corrupt.flac"):
        row = by_name[name]
        assert row["genre"] is None and row["confidence"] is None and row["segments"] == 0
        assert row["error"] and "\n" not in row["error"]
    assert by_name["empty.mp3"]["error"] == "empty file"


@pytest.mark.slow
def test_all_good_exits_zero_and_csv_and_output_file(tmp_path, tiny_model_dir):
    a = make_file(tmp_path / "a.wav", seconds=2.0)
    b = make_file(tmp_path / "b.ogg", seconds=2.0, freq=880.0)
    out = tmp_path / "res.csv"
    r = run_cli("classify", str(a), str(b), "--model", str(tiny_model_dir), "--format", "csv", "-o", str(out))
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [Path(x["path"]).name for x in rows] == ["a.wav", "b.ogg"]
    assert list(rows[0]) == ["path", "genre", "confidence", "error", "would_tag"]
    assert all(x["genre"] in GTZAN_GENRES and x["error"] == "" for x in rows)


@pytest.mark.slow
def test_table_output_for_people(tmp_path, tiny_model_dir):
    a = make_file(tmp_path / "song.flac", seconds=2.0)
    r = run_cli("classify", str(a), "--model", str(tiny_model_dir), "--top-k", "3")
    assert r.returncode == 0, r.stderr
    assert "song.flac" in r.stdout and "confidence" in r.stdout and "top 3" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["classify", "--format", "xml", "x.mp3"], "xml"),
    (["classify", "x.mp3", "--vote", "median"], "median"),
    (["classify", "x.mp3", "--model", "no-such-model"], "no-such-model"),
    (["classify"], "Missing argument"),
])
@pytest.mark.slow
def test_usage_errors_exit_2_without_traceback(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and needle in r.stderr


@pytest.mark.parametrize("command", ["classify", "tag"])
def test_absurd_jobs_is_a_one_line_usage_error(tmp_path, command):
    """--jobs is a process count: 100000 is refused before any model is loaded or process started."""
    song = make_file(tmp_path / "song.wav", seconds=1.0)
    r = run_cli(command, "--jobs", "100000", str(song))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genretag: error: ") and "--jobs" in lines[0] and "256" in lines[0]
    assert r.stdout == ""


@pytest.mark.slow
def test_missing_path_is_an_error_row(tmp_path, tiny_model_dir):
    ok = make_file(tmp_path / "ok.wav", seconds=1.5)
    r = run_cli("classify", str(tmp_path / "nope.mp3"), str(ok), "--model", str(tiny_model_dir),
                "--format", "jsonl")
    rows = parse_jsonl(r.stdout)
    assert r.returncode == 1
    assert rows[0]["error"] == "file not found" and rows[1]["error"] is None


@pytest.mark.slow
def test_no_audio_found(tmp_path, tiny_model_dir):
    (tmp_path / "a.txt").write_text("x")
    r = run_cli("classify", str(tmp_path), "--model", str(tiny_model_dir))
    assert r.returncode == 1 and "no audio files found" in r.stderr


def test_walk_survives_symlink_loops_and_respects_no_recursive(tmp_path):
    root = tmp_path / "lib"
    (root / "a").mkdir(parents=True)
    make_file(root / "top.wav")
    make_file(root / "a" / "inner.wav")
    os.symlink(root, root / "a" / "loop")
    (root / "noext").write_bytes((root / "top.wav").read_bytes())  # sniffed by content
    found = [Path(p).relative_to(root).as_posix() for p in iter_audio_files([root])]
    assert found == ["noext", "top.wav", "a/inner.wav"]
    flat = [Path(p).name for p in iter_audio_files([root], recursive=False)]
    assert flat == ["noext", "top.wav"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable folders")
def test_unreadable_folder_is_reported_and_skipped(tmp_path):
    (tmp_path / "locked").mkdir()
    make_file(tmp_path / "locked" / "x.wav")
    make_file(tmp_path / "y.wav")
    (tmp_path / "locked").chmod(0)
    errors = []
    found = list(iter_audio_files([tmp_path], on_error=lambda p, why: errors.append(p)))
    (tmp_path / "locked").chmod(0o755)
    assert [Path(p).name for p in found] == ["y.wav"] and errors


def test_python_api_on_files_and_waveforms(tmp_path, tiny_model_dir):
    model = genretag.load_model(tiny_model_dir)
    assert model.labels == list(GTZAN_GENRES) and model.sample_rate == 16000
    path = make_file(tmp_path / "x.flac", seconds=3.0)
    wave = make_tone(16000, 3.0, 440.0)
    res = model.classify([path, wave, tmp_path / "missing.wav"])
    assert [r.ok for r in res] == [True, True, False]
    assert res[0].segments == 3 and res[1].segments == 3
    # the file and the same tone in memory get (nearly) the same answer
    assert res[0].genre == res[1].genre
    assert res[0].confidence == pytest.approx(res[1].confidence, abs=0.02)
    hard = model.classify([wave], vote="hard")[0]
    assert hard.confidence in (pytest.approx(1 / 3, abs=1e-6), pytest.approx(2 / 3, abs=1e-6),
                               pytest.approx(1.0, abs=1e-6))


def test_parallel_and_serial_give_the_same_results_in_input_order(tmp_path, tiny_model_dir):
    files = [make_file(tmp_path / f"f{i}.wav", seconds=1.0 + 0.5 * i, freq=200.0 + 100 * i) for i in range(6)]
    net = load_net(tiny_model_dir)
    serial = list(genretag.classify(files, net, jobs=1, batch_segments=4))
    parallel = list(genretag.classify(iter(files), net, jobs=2, batch_segments=7))
    assert [r.path for r in serial] == [str(f) for f in files] == [r.path for r in parallel]
    for a, b in zip(serial, parallel):
        assert a.genre == b.genre
        for k in a.probabilities:
            assert a.probabilities[k] == pytest.approx(b.probabilities[k], abs=1e-5)


def test_bundled_model_loads_and_classifies(tmp_path):
    model = genretag.load_model()  # the default in models/, offline
    models = Path(__file__).resolve().parent.parent / "models"
    assert model.name == (models / "DEFAULT").read_text().strip()
    assert set(GTZAN_GENRES) <= {label.lower().replace("-", "") for label in model.labels}
    assert model.card.metrics, "the bundled model card must carry its measured accuracy"
    sr = model.sample_rate
    rng = np.random.default_rng(0)
    path = write_audio(tmp_path / "noise.wav", (0.1 * rng.standard_normal(sr * 8)).astype(np.float32), sr)
    (r,) = model.classify([path])
    assert r.ok and r.genre in model.labels and r.segments == 2
    assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-4)



def test_decoder_noise_on_fd2_is_silenced_and_stderr_restored():
    """libmpg123 writes a line to fd 2 after mp3 seeks; the quiet window must swallow it, only it."""
    code = ("import os; from genretag.audio.decode import _quiet_stderr\n"
            "with _quiet_stderr(True):\n    os.write(2, b'libmpg123 noise\\n')\n"
            "os.write(2, b'after\\n')\n"
            "with _quiet_stderr(False):\n    os.write(2, b'kept\\n')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "after\nkept\n"


@pytest.mark.slow
def test_precision_flag_end_to_end(tmp_path, tiny_model_dir):
    """--precision bf16 classifies like fp32 where the CPU has bfloat16 units and is a clear
    one-line usage error where it has none; an unknown precision is a usage error."""
    import torch

    a = make_file(tmp_path / "a.flac", seconds=3.0, freq=330.0)
    base = ("classify", str(a), "--model", str(tiny_model_dir), "--format", "jsonl", "--jobs", "1")
    fp32 = run_cli(*base)
    assert fp32.returncode == 0, fp32.stderr
    bf16 = run_cli(*base, "--precision", "bf16")
    assert "Traceback" not in bf16.stderr
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert bf16.returncode == 0, bf16.stderr
        (x,), (y,) = parse_jsonl(fp32.stdout), parse_jsonl(bf16.stdout)
        assert x["segments"] == y["segments"]
        assert max(abs(x["probabilities"][k] - y["probabilities"][k]) for k in x["probabilities"]) < 0.05
    else:
        assert bf16.returncode == 2 and "bf16" in bf16.stderr and bf16.stdout == ""
    bad = run_cli(*base, "--precision", "fp8")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def _decode_all(files, jobs: int, overlap: bool, kill_after: int | None = None) -> list:
    """prepare_stream over files (window 4); optionally SIGKILL a decoding worker mid-run."""
    import signal

    from genretag.card import AudioParams
    from genretag.pipeline.inference import prepare_stream, worker_pool

    params = AudioParams(sample_rate=16000, segment_seconds=1.0, max_segments=3)
    out = []
    for i, p in enumerate(prepare_stream([str(f) for f in files], params, segments=None, jobs=jobs, prefetch=4,
                                         overlap=overlap)):
        out.append(p)
        if i == kill_after:
            os.kill(next(iter(worker_pool(jobs)._processes.values())).pid, signal.SIGKILL)
    return out


def test_decoding_in_rounds_or_streaming_gives_the_same_results_in_order(tmp_path) -> None:
    """Streaming (the default) and rounds (GENRETAG_SCHEDULE=rounds): same files, same order,
    same samples, bad files reported in place, more files than one window."""
    files = [make_file(tmp_path / f"f{i:02d}.wav", seconds=0.5 + 0.25 * i, freq=200.0 + 50 * i)
             for i in range(11)]
    files.insert(5, tmp_path / "missing.wav")
    (tmp_path / "bad.flac").write_bytes(b"not audio at all")
    files.insert(8, tmp_path / "bad.flac")
    serial = _decode_all(files, 1, True)
    for overlap in (True, False):
        got = _decode_all(files, 2, overlap)
        assert [p.path for p in got] == [str(f) for f in files]
        assert [p.error is None for p in got] == [p.error is None for p in serial]
        assert [p.error is None for p in got].count(False) == 2
        for a, b in zip(serial, got):
            assert (a.waves is None) == (b.waves is None)
            if a.waves is not None:
                np.testing.assert_array_equal(a.waves, b.waves)


def test_schedule_is_workers_unless_stream_or_rounds_are_asked_for(monkeypatch) -> None:
    from genretag.pipeline.inference import schedule

    monkeypatch.delenv("GENRETAG_SCHEDULE", raising=False)
    assert schedule() == "workers"
    for chosen in ("rounds", "stream", "workers"):
        monkeypatch.setenv("GENRETAG_SCHEDULE", chosen)
        assert schedule() == chosen


@pytest.mark.slow
@pytest.mark.parametrize("overlap", [True, False])
def test_a_worker_killed_while_sending_its_result_does_not_hang_the_run(tmp_path, overlap: bool) -> None:
    """The wedge a SIGKILL mid-send leaves: half a message in the pool's result pipe (loky's manager
    thread waits for the rest of it, so it never sees the dead worker) and a dead worker. Made here
    by hand, then the run must notice, break the pool, and decode every file on a fresh one."""
    import signal
    import struct
    import threading

    from genretag.pipeline.inference import worker_pool

    files = [make_file(tmp_path / f"w{i:02d}.flac", seconds=1.0, freq=300.0 + 20 * i) for i in range(6)]
    ex = worker_pool(2)
    assert ex.submit(os.getpid).result(timeout=60)  # the workers are up
    os.write(ex._result_queue._writer.fileno(), struct.pack("!i", 1000) + b"half a message")
    time.sleep(0.5)  # the manager thread is now reading a message that never ends
    os.kill(next(iter(ex._processes.values())).pid, signal.SIGKILL)
    got: list = []
    run = threading.Thread(target=lambda: got.extend(_decode_all(files, 2, overlap)), daemon=True)
    run.start()
    run.join(timeout=120)
    assert not run.is_alive(), "the run waited on a wedged pool"
    assert [p.path for p in got] == [str(f) for f in files]
    assert all(p.error is None and p.waves.shape == (1, 16000) for p in got), [p.error for p in got]


@pytest.mark.parametrize("overlap", [True, False])
def test_a_decoding_worker_killed_mid_run_costs_no_file(tmp_path, overlap: bool) -> None:
    """The OOM killer (or a decoder segfault) takes a worker and the pool: the files in
    flight are decoded again on a fresh pool, none is lost or reported as failed."""
    files = [make_file(tmp_path / f"k{i:02d}.flac", seconds=1.0, freq=300.0 + 20 * i) for i in range(14)]
    got = _decode_all(files, 2, overlap, kill_after=1)
    assert [p.path for p in got] == [str(f) for f in files]
    assert all(p.error is None and p.waves.shape == (1, 16000) for p in got), [p.error for p in got]
