"""The network in the decoding workers: the same answers as in the main process, in input order,
bad files and dead workers handled, used only where it applies.

Real processes (the loky pool), the bundled default model from its real ONNX export, audio files
in every format made by tests/audio_factory.py; the reference is the same `Classifier` with the
network in the main process (``GENRETAG_SCHEDULE=stream``).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from audio_factory import FORMATS, make_file, make_tone, write_audio

from genretag.cli.common import SMALL_RUN, default_jobs_for
from genretag.model import load_net
from genretag.pipeline.classifier import Classifier
from genretag.pipeline.inference import default_jobs, worker_pool
from genretag.pipeline.worker_network import NetworkStream, WorkerModel, classify_in_worker


@pytest.fixture()
def model():  # per test: the export is recorded in the session's ONNX folder, which tests/conftest.py sets per test
    m = load_net(None, device="cpu")  # records the export on the session's first use
    assert m.runtime == "onnxruntime fp32"
    return m


def _library(folder: Path) -> list[str]:
    """Files in every format, chords over a beat, 2-12 s (one to four sub-tracks), plus a file that
    is not audio and one that is missing, in the middle."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (ext, sr) in enumerate(sorted(FORMATS.items())):
        seconds = 2.0 + 1.5 * i
        t = np.arange(int(sr * seconds)) / sr
        x = make_tone(sr, seconds, freq=110.0 * (i + 1), seed=i)
        x = x + 0.3 * (np.sin(2 * np.pi * (1 + i) * t) > 0.9).astype(np.float32) * make_tone(sr, seconds, 60.0, seed=9)
        paths.append(str(write_audio(folder / f"item{i}{ext}", np.clip(x, -0.99, 0.99).astype(np.float32), sr)))
    (folder / "notes.mp3").write_bytes(b"not audio at all")
    paths.insert(3, str(folder / "notes.mp3"))
    paths.insert(5, str(folder / "missing.flac"))
    return paths


class _Counting:
    """The main process's `predict`, counted: the workers' copies never call it."""

    def __init__(self, model) -> None:
        self.calls, self.predict = 0, model.predict

    def __call__(self, waves):
        self.calls += 1
        return self.predict(waves)


def _run(model, paths, schedule: str, **kw) -> tuple[list, int]:
    """The results of `Classifier` on `paths` under `schedule`, and how often this process ran the network."""
    counting = _Counting(model)
    with pytest.MonkeyPatch.context() as mp:  # undone on return; the test's own settings stay
        mp.setenv("GENRETAG_SCHEDULE", schedule)
        mp.setattr(model, "predict", counting)
        return list(Classifier(model, jobs=2, fingerprints=False, **kw).classify(paths)), counting.calls


@pytest.mark.parametrize("vote", ["soft", "hard"])
def test_the_workers_give_the_main_process_answers_in_input_order(model, tmp_path, vote):
    paths = _library(tmp_path / "lib")
    ref, ref_calls = _run(model, paths, "stream", vote=vote)
    got, calls = _run(model, paths, "workers", vote=vote)
    assert ref_calls > 0 and calls == 0  # the network ran in the workers, never here
    assert [r.path for r in got] == [r.path for r in ref] == paths
    bad = {paths[3], paths[5]}  # not audio, missing
    assert [r.ok for r in got] == [r.ok for r in ref] == [p not in bad for p in paths]
    for a, b in zip(got, ref):
        assert (a.genre, a.segments, a.error) == (b.genre, b.segments, b.error)
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
        assert a.confidences == pytest.approx(b.confidences, abs=1e-5)
    assert {r.segments for r in got if r.ok} >= {1, 3}  # short files and longer ones


def test_a_fixed_sub_track_count_runs_every_sub_track_in_the_workers(model, tmp_path):
    paths = [str(make_file(tmp_path / f"s{i}.flac", seconds=9.0, freq=150.0 * (i + 1))) for i in range(3)]
    ref, _ = _run(model, paths, "stream", segments=2)
    got, calls = _run(model, paths, "workers", segments=2)
    assert calls == 0 and [r.segments for r in got] == [r.segments for r in ref] == [2, 2, 2]
    for a, b in zip(got, ref):
        assert a.genre == b.genre and a.probabilities == pytest.approx(b.probabilities, abs=1e-5)


def test_a_worker_killed_mid_run_loses_no_file(model, tmp_path):
    paths = [str(make_file(tmp_path / f"k{i:02d}.wav", seconds=4.0, freq=200.0 + 40 * i)) for i in range(24)]
    ref = WorkerModel.of(model)
    got = []
    for i, r in enumerate(NetworkStream(paths, ref, jobs=2, prefetch=4)):
        got.append(r)
        if i == 3:
            os.kill(next(iter(worker_pool(2)._processes.values())).pid, signal.SIGKILL)
    assert [r.path for r in got] == paths
    assert all(r.ok and r.segments == 1 for r in got), [r.error for r in got]


def test_only_a_model_onnx_runtime_runs_from_its_export_goes_to_the_workers(model, tiny_model_dir):
    ref = WorkerModel.of(model)
    assert ref is not None and ref == WorkerModel.recorded(None)  # what the CLI starts the workers with
    deferred = load_net(None, device="cpu", defer_export=True)  # as the CLI loads it then
    assert WorkerModel.of(deferred) == ref and deferred._runner is None  # never opened here
    assert WorkerModel.of(load_net(None, device="cpu", precision="fp32")) is None  # PyTorch: one copy, here
    assert WorkerModel.of(load_net(tiny_model_dir, device="cpu")) is None  # a ResNet
    assert WorkerModel.recorded(tiny_model_dir) is None
    assert WorkerModel.recorded("no-such-model") is None  # loading it says why


def test_a_worker_whose_model_cannot_open_gives_each_file_an_error_not_an_exception(model, tmp_path):
    path = str(make_file(tmp_path / "a.flac", seconds=3.0))
    changed = WorkerModel(WorkerModel.of(model).card_path, key="another card")
    r = classify_in_worker(path, changed, "soft", None, None)
    assert (r.path, r.genre, r.ok) == (path, None, False)
    assert r.error == f"cannot classify: {changed.card_path}: the model card changed during the run"
    good = classify_in_worker(path, WorkerModel.of(model), "soft", None, None)
    assert good.ok and good.genre in model.labels


def test_a_handful_of_named_files_runs_in_this_process(tmp_path):
    files = [str(make_file(tmp_path / f"n{i}.wav", seconds=0.5)) for i in range(SMALL_RUN)]
    assert default_jobs_for(files[:1]) == default_jobs_for(files[:SMALL_RUN - 1]) == 1
    assert default_jobs_for(files) == default_jobs()  # enough files to pay for the workers
    assert default_jobs_for([str(tmp_path)]) == default_jobs()  # a folder: any number of files
    assert default_jobs_for([*files[:2], str(tmp_path)]) == default_jobs()


def test_classify_on_a_folder_starts_the_workers_early_and_answers_as_the_main_process(model, tmp_path,
                                                                                        monkeypatch):
    import json

    from typer.testing import CliRunner

    from genretag.cli import app
    from genretag.pipeline import worker_network

    lib = tmp_path / "lib"
    _library(lib)
    for bad in ("notes.mp3",):
        (lib / bad).unlink()
    started = []
    real_start = worker_network.start_workers
    monkeypatch.setattr(worker_network, "start_workers", lambda ref, jobs: (started.append((ref, jobs)),
                                                                            real_start(ref, jobs)))
    runner = CliRunner()
    lines = {}
    for schedule in ("stream", "workers"):
        monkeypatch.setenv("GENRETAG_SCHEDULE", schedule)
        r = runner.invoke(app, ["classify", str(lib), "--format", "jsonl", "--jobs", "2"])
        assert r.exit_code == 0, r.output
        lines[schedule] = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert started == [(WorkerModel.of(model), 2)]  # once, for the run whose workers run the network
    assert len(lines["workers"]) == len(lines["stream"]) == len(FORMATS)
    for a, b in zip(lines["workers"], lines["stream"]):
        assert (a["path"], a["genre"], a["segments"]) == (b["path"], b["genre"], b["segments"])
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
