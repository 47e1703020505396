"""Classifying and tagging on a Dask cluster: the same rows, writes and journal as a local run.

One LocalCluster of two single-thread worker processes serves the module (it costs a few seconds to
start); the test that kills a worker runs last.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import audio_factory as af
import pytest
from audio_factory import FORMATS, make_file
from typer.testing import CliRunner

distributed = pytest.importorskip("distributed")

from genretag.audio.containers import fingerprint  # noqa: E402
from genretag.cli import app  # noqa: E402
from genretag.model import load_net  # noqa: E402
from genretag.pipeline import cluster as cluster_mod  # noqa: E402
from genretag.pipeline.executor import Executor  # noqa: E402
from genretag.pipeline.inference import classify  # noqa: E402
from genretag.pipeline.result_cache import default_cache_path  # noqa: E402
from genretag.tags.journal import read_entries  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def dask_cluster():
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None,
                                  silence_logs=40) as lc, distributed.Client(lc, set_as_default=False) as client:
        yield lc, client


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """Every format twice, one nested, plus an empty mp3, a corrupt flac and a text file."""
    root = tmp_path_factory.mktemp("cluster-lib") / "music"
    (root / "sub").mkdir(parents=True)
    for i, ext in enumerate(sorted(FORMATS) * 2):
        make_file(root / ("sub" if i % 5 == 4 else "") / f"t{i:02d}{ext}", seconds=2.5, freq=180.0 + 70 * i)
    (root / "empty.mp3").write_bytes(b"")
    (root / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(256)) * 8)
    (root / "notes.txt").write_text("not music")
    return root


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def same_rows(got: list[dict], want: list[dict]) -> None:
    assert [r["path"] for r in got] == [r["path"] for r in want]
    for g, w in zip(got, want):
        assert (g["genre"], g["segments"], g["error"]) == (w["genre"], w["segments"], w["error"]), g["path"]
        assert g["probabilities"].keys() == w["probabilities"].keys()
        for k, p in w["probabilities"].items():
            assert g["probabilities"][k] == pytest.approx(p, abs=1.5e-6)


@pytest.mark.slow
def test_cluster_rows_equal_local_rows_and_each_worker_loads_the_model_once(dask_cluster, library,
                                                                           tiny_model_dir):
    lc, client = dask_cluster
    missing = str(library / "gone.flac")  # a file no worker can see: its own error row
    args = ["classify", str(library), missing, "--model", str(tiny_model_dir), "--format", "jsonl", "-j", "1"]
    local = runner.invoke(app, args)
    assert local.exit_code == 1, local.output  # the bad files
    on_cluster = runner.invoke(app, [*args, "--scheduler", lc.scheduler_address])
    assert on_cluster.exit_code == 1, on_cluster.output
    want, got = jsonl(local.stdout), jsonl(on_cluster.stdout)
    assert len(want) == 17 and sum(r["error"] is not None for r in want) == 3
    same_rows(got, want)

    # a second run with small chunks, through the API: both workers work, neither loads the model again
    net = load_net(str(tiny_model_dir), "cpu")
    ex = cluster_mod.ClusterExecutor(client, net, chunk=2, fingerprints=False)
    paths = [r["path"] for r in want]
    same_rows([r.to_json() for r in ex.classify(paths)], want)
    loads = client.run(cluster_mod.model_loads)
    assert len(loads) == 2
    assert [list(v.values()) for v in loads.values()] == [[1], [1]], loads


def test_an_ensemble_travels_as_flat_files_that_load_to_the_same_model(tiny_model_dir, tmp_path):
    """Member cards may sit outside the ensemble's folder; the worker gets one folder of renamed files."""
    import numpy as np

    from genretag.pipeline.result_cache import model_id
    from genretag.training.transfer import make_ensemble

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir.parent, other)
    ens = make_ensemble([tiny_model_dir, other / tiny_model_dir.name], tmp_path / "ens", "pair")
    main, files = cluster_mod.model_files(ens)
    assert main == "pair.json" and sorted(files) == ["pair.0.json", "pair.0.safetensors", "pair.1.json",
                                                     "pair.1.safetensors", "pair.json"]
    flat = tmp_path / "flat"
    flat.mkdir()
    for name, data in files.items():
        (flat / name).write_bytes(data)
    a, b = load_net(ens, "cpu"), load_net(flat / main, "cpu")
    assert model_id(a) == model_id(b)  # the result cache sees the same model
    x = np.random.default_rng(0).standard_normal((2, a.card.audio.segment_samples)).astype(np.float32)
    assert np.array_equal(a.predict(x), b.predict(x))


@pytest.mark.slow
def test_unreachable_scheduler_is_one_line_exit_1_and_writes_nothing(library, tiny_model_dir, tmp_path,
                                                                     monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(cluster_mod.TIMEOUT_ENV, "1")
    snapshot = {p: p.read_bytes() for p in sorted(library.rglob("*")) if p.is_file()}
    out = tmp_path / "out.jsonl"
    r = runner.invoke(app, ["classify", str(library), "--model", str(tiny_model_dir), "-o", str(out),
                            "--scheduler", f"tcp://127.0.0.1:{port}"])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("model: tiny-test"), r.stderr
    assert lines[1].startswith(f"genretag: error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port}")
    assert not out.exists()
    r = runner.invoke(app, ["-q", "tag", str(library), "--model", str(tiny_model_dir), "--write",
                            "--scheduler", f"tcp://127.0.0.1:{port}"])
    assert r.exit_code == 1 and r.stderr.strip().startswith("genretag: error: cannot reach the Dask scheduler")
    assert not default_cache_path().exists()  # the result cache is opened only once the scheduler answered
    assert snapshot == {p: p.read_bytes() for p in sorted(library.rglob("*")) if p.is_file()}
    r = runner.invoke(app, ["-q", "tag", str(library), "--model", str(tiny_model_dir),
                            "--scheduler-file", str(tmp_path / "no-such.json")])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        f"genretag: error: no scheduler file at {tmp_path / 'no-such.json'}"]


def _chunk_keys(client) -> set[str]:
    """The keys of genretag's chunk tasks the scheduler holds (queued, running, or done and unread)."""
    return set(client.run_on_scheduler(lambda dask_scheduler: [
        str(k) for k in dask_scheduler.tasks if str(k).startswith(("classify_chunk-", "fingerprint_chunk-"))]))


def test_stopping_early_cancels_the_work_in_flight(dask_cluster, library, tiny_model_dir):
    _, client = dask_cluster
    net = load_net(str(tiny_model_dir), "cpu")
    good = sorted(str(p) for p in library.rglob("t*"))
    ex = cluster_mod.ClusterExecutor(client, net, chunk=1, window=4)
    assert isinstance(ex, Executor)  # what the CLI's open_executor returns for --scheduler
    before = _chunk_keys(client)
    stream = ex.classify(good * 4)
    assert [next(stream).path for _ in range(2)] == good[:2]
    mine = _chunk_keys(client) - before
    assert mine  # the window: chunks queued, running, or done and not read yet
    stream.close()  # what Ctrl-C or `| head` does to the generator
    deadline = time.monotonic() + 10
    while mine & _chunk_keys(client) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not mine & _chunk_keys(client)


def _journal(path: Path, root: Path) -> list[dict]:
    keep = ("op", "old", "new", "format", "fingerprint_before", "fingerprint_after")
    return [{"path": os.path.relpath(e["path"], root), **{k: e[k] for k in keep}} for e in read_entries(path)]


def test_tag_write_on_the_cluster_writes_and_journals_as_locally(dask_cluster, library, tiny_model_dir, tmp_path):
    lc, _ = dask_cluster
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(library, a)
    shutil.copytree(library, b)
    good = sorted(p for p in b.rglob("t*") if p.is_file())
    before = {p: (af.genre_values(p), af.all_tags(p), fingerprint(p)) for p in good}
    common = ["--write", "--overwrite", "--min-confidence", "0", "--model", str(tiny_model_dir), "--format", "jsonl"]
    on_cluster = runner.invoke(app, ["tag", str(b), *common, "--journal", str(tmp_path / "b.jsonl"),
                                     "--scheduler", lc.scheduler_address])
    local = runner.invoke(app, ["tag", str(a), *common, "--journal", str(tmp_path / "a.jsonl"), "-j", "1",
                                "--no-cache"])
    assert on_cluster.exit_code == local.exit_code == 1  # the two bad files
    assert "(16 classified, 0 from cache)" in on_cluster.stderr and "(16 classified, 0 from cache)" in local.stderr
    strip = [{**row, "path": os.path.relpath(row["path"], root)}
             for rows, root in ((jsonl(local.stdout), a), (jsonl(on_cluster.stdout), b)) for row in rows]
    assert strip[:len(strip) // 2] == strip[len(strip) // 2:]
    ja, jb = _journal(tmp_path / "a.jsonl", a), _journal(tmp_path / "b.jsonl", b)
    assert len(jb) == 14 and ja == jb
    for p in a.rglob("*"):
        if p.is_file():
            assert p.read_bytes() == (b / p.relative_to(a)).read_bytes(), p

    # the result cache the cluster run filled answers a second (dry) run on the cluster
    again = runner.invoke(app, ["tag", str(b), "--model", str(tiny_model_dir), "--scheduler", lc.scheduler_address])
    assert "(2 classified, 14 from cache)" in again.stderr, again.stderr  # errors are never cached

    assert all(af.genre_values(p) for p in good)
    undo = runner.invoke(app, ["undo", str(tmp_path / "b.jsonl")])
    assert undo.exit_code == 0 and undo.stdout.count("restored") == 14, undo.output
    assert {p: (af.genre_values(p), af.all_tags(p), fingerprint(p)) for p in good} == before


@pytest.mark.slow
def test_a_worker_killed_mid_run_still_gives_every_result_once(dask_cluster, library, tiny_model_dir):
    _, client = dask_cluster
    net = load_net(str(tiny_model_dir), "cpu")
    paths = sorted(str(p) for p in library.rglob("*") if p.suffix != ".txt") * 3
    want = [r.to_json() for r in classify(paths, net, jobs=1)]
    pids = client.run(os.getpid)
    ex = cluster_mod.ClusterExecutor(client, net, chunk=2, window=4, fingerprints=False)
    got, killed = [], None
    for r in ex.classify(paths):
        got.append(r.to_json())
        if killed is None:
            # the window was refilled just before this result: its new chunks reach the scheduler a
            # moment later, so look until a worker holds one (a look right away could see none)
            deadline = time.monotonic() + 10
            while not (busy := [w for w, keys in client.processing().items() if keys]) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert busy  # the window keeps both workers busy: the kill lands mid-chunk
            killed = pids[busy[0]]
            os.kill(killed, signal.SIGKILL)
    same_rows(got, want)
    deadline = time.monotonic() + 60
    while len(client.scheduler_info()["workers"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # the nanny restarts the worker
    assert killed not in client.run(os.getpid).values()
