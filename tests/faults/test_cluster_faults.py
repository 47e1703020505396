"""The Dask side, under hostile settings: relative paths, malformed addresses and scheduler files, bad
timeouts, a cluster whose workers are all gone. Runs the real CLI against real LocalClusters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from audio_factory import make_file
from hostile import assert_clean_stderr

distributed = pytest.importorskip("distributed", reason="the [dask] extra is not installed")


def cli(*args: str, env: dict[str, str] | None = None, cwd=None, timeout: float = 120) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=os.pathsep.join(os.path.abspath(p) for p in sys.path if p), **(env or {}))
    return subprocess.run([sys.executable, "-m", "genretag", *args], capture_output=True, timeout=timeout,
                          env=full, cwd=cwd)


def error_lines(stderr: bytes) -> list[str]:
    return [line for line in assert_clean_stderr(stderr) if line.startswith("genretag: error:")]


@pytest.mark.slow
def test_relative_paths_reach_the_workers_as_the_client_sees_them(tmp_path, tiny_model_dir, monkeypatch):
    """The workers run in another folder, which holds another file of the same name: the results must be
    those of the client's file, reported under the name the user gave."""
    mine, theirs = tmp_path / "client", tmp_path / "workers"
    mine.mkdir()
    theirs.mkdir()
    make_file(mine / "clip.wav", seconds=3.0, freq=220.0)
    make_file(theirs / "clip.wav", seconds=3.0, freq=3000.0)
    local = cli("classify", "clip.wav", "--model", str(tiny_model_dir), "-f", "jsonl", "-j", "1", cwd=mine)
    assert local.returncode == 0, local.stderr
    monkeypatch.chdir(theirs)  # the worker processes start here
    with distributed.LocalCluster(processes=True, n_workers=1, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=40) as lc:
        for command in ("classify", "tag"):
            r = cli(command, "clip.wav", "--model", str(tiny_model_dir), "-f", "jsonl", "--min-confidence", "0",
                    "--scheduler", lc.scheduler_address, cwd=mine) if command == "tag" else \
                cli(command, "clip.wav", "--model", str(tiny_model_dir), "-f", "jsonl",
                    "--scheduler", lc.scheduler_address, cwd=mine)
            assert r.returncode == 0, r.stderr
            (row,) = [json.loads(line) for line in r.stdout.decode().splitlines()]
            assert row["path"] == "clip.wav"
            if command == "classify":
                assert row == json.loads(local.stdout)
            else:
                assert row["action"] == "write" and row["confidence"] == json.loads(local.stdout)["confidence"]


@pytest.mark.slow
@pytest.mark.parametrize("address", ["tcp://nonsense:xx", "foo://bar", "tcp://:8786", "tcp://host:99999",
                                     "localhost"])
def test_a_malformed_scheduler_address_is_one_line_at_once(tmp_path, tiny_model_dir, address):
    song = make_file(tmp_path / "song.flac", seconds=1.0)
    start = time.monotonic()
    r = cli("classify", str(song), "--model", str(tiny_model_dir), "--scheduler", address,
            env={"GENRETAG_SCHEDULER_TIMEOUT": "3"})
    took = time.monotonic() - start
    assert r.returncode == 2, r.stderr
    assert b"Exception ignored" not in r.stderr
    (line,) = error_lines(r.stderr)
    assert line.startswith(f"genretag: error: not a Dask scheduler address: {address} ("), line
    assert r.stdout == b""
    assert took < 30, took  # no wait for a connection that can never be made (was twice the timeout, or 40 s)


@pytest.mark.slow
def test_a_scheduler_file_that_is_not_json_or_has_no_address_is_one_line(tmp_path, tiny_model_dir):
    song = make_file(tmp_path / "song.flac", seconds=1.0)
    cases = {"garbage.json": "not json {", "list.json": "[1, 2]", "no-address.json": '{"id": "x"}'}
    for name, text in cases.items():
        f = tmp_path / name
        f.write_text(text)
        r = cli("classify", str(song), "--model", str(tiny_model_dir), "--scheduler-file", str(f))
        assert r.returncode == 2, (name, r.stderr)
        assert b"Exception ignored" not in r.stderr
        (line,) = error_lines(r.stderr)
        assert line.startswith(f"genretag: error: {f} is not a scheduler file"), line


@pytest.mark.slow
@pytest.mark.parametrize("value", ["nan", "inf", "-5", "0", "ten"])
def test_a_bad_scheduler_timeout_is_one_line(tmp_path, tiny_model_dir, value):
    song = make_file(tmp_path / "song.flac", seconds=1.0)
    r = cli("classify", str(song), "--model", str(tiny_model_dir), "--scheduler", "tcp://127.0.0.1:1",
            env={"GENRETAG_SCHEDULER_TIMEOUT": value})
    assert r.returncode == 2, r.stderr
    assert error_lines(r.stderr) == [
        f"genretag: error: GENRETAG_SCHEDULER_TIMEOUT must be a number of seconds above 0 and at most 86400, "
        f"not '{value}'"]


@pytest.mark.slow
def test_a_cluster_without_workers_ends_with_one_line_after_the_timeout(tmp_path, tiny_model_dir):
    """No worker ever joins (and, the same state, every worker died): one line once the scheduler timeout
    has passed with no worker, not a wait for ever."""
    song = make_file(tmp_path / "song.flac", seconds=1.0)
    with distributed.LocalCluster(processes=True, n_workers=0, dashboard_address=None, silence_logs=40) as lc:
        start = time.monotonic()
        r = cli("classify", str(song), "--model", str(tiny_model_dir), "-f", "csv", "--scheduler",
                lc.scheduler_address, env={"GENRETAG_SCHEDULER_TIMEOUT": "3"}, timeout=90)
        took = time.monotonic() - start
    assert r.returncode == 1, r.stderr
    (line,) = error_lines(r.stderr)
    assert line == ("genretag: error: the Dask cluster has had no worker for 3 s (GENRETAG_SCHEDULER_TIMEOUT): "
                    "the files not done yet have no result")
    assert b"waits up to 3 s for one to join" in r.stderr
    assert took < 60, took


@pytest.mark.slow
def test_every_worker_killed_mid_run_ends_with_one_line(tmp_path, tiny_model_dir):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(40):
        make_file(lib / f"t{i:02d}.flac", seconds=6.0, freq=200.0 + 20 * i)
    with distributed.LocalCluster(processes=True, n_workers=1, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=50) as lc:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(os.path.abspath(p) for p in sys.path if p),
                   GENRETAG_SCHEDULER_TIMEOUT="3")
        proc = subprocess.Popen([sys.executable, "-m", "genretag", "classify", str(lib), "--model",
                                 str(tiny_model_dir), "-f", "jsonl", "--scheduler", lc.scheduler_address],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        with distributed.Client(lc, set_as_default=False) as client:
            deadline = time.monotonic() + 60
            while not any(client.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert any(client.processing().values()), "the run never reached the worker"
            lc.scale(0)  # every worker goes, none comes back
            try:
                out, err = proc.communicate(timeout=90)
            finally:
                proc.kill()
    assert proc.returncode == 1, err
    (line,) = error_lines(err)
    assert line.startswith("genretag: error: the Dask cluster has had no worker for 3 s"), line
