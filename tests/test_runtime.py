"""A musicnn model runs from its checked ONNX export without importing torch, with the PyTorch answers.

Real networks (the bundled cards), real exports in the session's ONNX folder (tests/conftest.py),
real processes for "torch is never imported"; the reference is the model loaded with
precision="fp32" (PyTorch).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_factory import make_tone, write_audio

from genretag.errors import ModelError
from genretag.model import load_net
from genretag.nets.musicnn import musicnn_frontend
from genretag.runtime import ExportRecord, OnnxNet, card_key, musicnn_logmel, open_export

REPO = Path(__file__).resolve().parent.parent


def _waves(n: int = 4, samples: int = 47616, seed: int = 3) -> np.ndarray:
    """Sub-tracks that look like music to a log-mel: chords, a beat, noise, one near silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000.0
    rows = []
    for i in range(n):
        chord = sum(np.sin(2 * np.pi * f * (i + 1) * t) for f in (196.0, 246.9, 293.7)) / 3
        beat = (np.sin(2 * np.pi * (1.5 + i) * t) > 0.9) * rng.standard_normal(samples)
        rows.append(0.3 * chord + 0.2 * beat + 0.02 * rng.standard_normal(samples))
    x = np.stack(rows).astype(np.float32)
    x[-1] *= 1e-3
    return x


def test_the_numpy_log_mel_is_the_torch_one():
    x = _waves()
    ours = musicnn_logmel(x)
    ref = musicnn_frontend(torch.from_numpy(x)).numpy()
    assert ours.shape == ref.shape == (4, 187, 96) and ours.dtype == np.float32
    diff = np.abs(ours - ref)
    # float rounding, and now and then a bin on the other side of a float16 rounding boundary
    assert float(diff.mean()) < 1e-5 and float(diff.max()) < 2e-3
    with pytest.raises(ValueError, match="more than 256 samples"):
        musicnn_logmel(np.zeros((1, 200), np.float32))


def test_the_float16_rounding_of_the_mel_power_is_numpys_bit_for_bit():
    """`through_float16` replaces numpy's float16 round trip (slow below float16's normal range):
    every 251st float32 from 0 to 65504, and every one around the edges (the smallest normal,
    the largest value, subnormal float32, halfway cases), rounds to the same bits."""
    from genretag.runtime.frontend import through_float16

    top = int(np.float32(65504).view(np.uint32))
    edges = [int(np.float32(v).view(np.uint32)) for v in (2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 1.0, 65504.0)]
    bits = np.unique(np.concatenate([np.arange(0, top + 1, 251, dtype=np.uint32), np.arange(0, 5000, dtype=np.uint32)]
                                    + [np.arange(max(0, e - 5000), min(top, e + 5000) + 1, dtype=np.uint32) for e in edges]))
    x = bits.view(np.float32)
    want = x.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(through_float16(x).view(np.uint32), want.view(np.uint32))
    assert np.isnan(through_float16(np.array([np.nan], np.float32)))[0]


def test_a_model_loaded_from_its_export_gives_the_pytorch_answers_and_builds_its_net_on_demand():
    first = load_net(None, device="cpu")  # exports (or finds) the graph and records it
    assert first.runtime == "onnxruntime fp32"
    record = ExportRecord.read(card_key(first.card))
    assert record is not None and record.graph == first._runner.path.name
    light = load_net(None, device="cpu")
    assert light._net is None and isinstance(light._runner, OnnxNet)  # no PyTorch network built
    assert light.runtime == "onnxruntime fp32" and light.device_type == "cpu"
    ref = load_net(None, device="cpu", precision="fp32")
    x = _waves()
    np.testing.assert_allclose(light.predict(x), ref.predict(x), atol=1e-4, rtol=0)
    # the PyTorch network, when asked for, is the card's, with its weights
    net = light.net
    with torch.inference_mode():
        np.testing.assert_array_equal(net(torch.from_numpy(x)).numpy(), ref.net(torch.from_numpy(x)).numpy())


def test_an_export_that_does_not_match_its_record_is_not_used(tmp_path):
    model = load_net("gtzan-musicnn", device="cpu")
    assert model.runtime == "onnxruntime fp32"  # built: exported (or found) and recorded
    key = card_key(model.card)
    record = ExportRecord.read(key)
    assert record is not None and open_export(model.card, 1) is not None
    # a record whose probe logits are not the network's: the export computes something else
    wrong = [[v + 1.0 if j == 0 else v for j, v in enumerate(row)] for row in record.probe_logits]
    ExportRecord(record.graph, record.graph_sha256, record.n_samples, wrong).write(key)
    assert open_export(model.card, 1) is None
    # a graph file changed after it was checked
    ExportRecord(record.graph, "0" * 64, record.n_samples, record.probe_logits).write(key)
    assert open_export(model.card, 1) is None
    # either way the model loads through PyTorch, which checks and records the export again
    again = load_net("gtzan-musicnn", device="cpu")
    assert again._net is not None and again.runtime == "onnxruntime fp32"
    assert ExportRecord.read(key) == record


def test_a_deferred_export_opens_on_first_use_with_the_same_answers():
    eager = load_net(None, device="cpu")  # exports (or finds) the graph and records it
    deferred = load_net(None, device="cpu", defer_export=True)
    assert deferred._runner is None and deferred._net is None
    assert deferred.runtime == "onnxruntime fp32" and deferred._runner is None  # said without opening
    x = _waves()
    np.testing.assert_array_equal(deferred.predict(x), eager.predict(x))
    assert isinstance(deferred._runner, OnnxNet) and deferred._net is None


def test_a_deferred_export_that_no_longer_checks_goes_through_pytorch_on_first_use():
    model = load_net("gtzan-musicnn", device="cpu")
    key = card_key(model.card)
    record = ExportRecord.read(key)
    wrong = [[v + 1.0 if j == 0 else v for j, v in enumerate(row)] for row in record.probe_logits]
    ExportRecord(record.graph, record.graph_sha256, record.n_samples, wrong).write(key)
    deferred = load_net("gtzan-musicnn", device="cpu", defer_export=True)  # the record is there: deferred
    assert deferred._runner is None
    x = _waves()
    ref = load_net("gtzan-musicnn", device="cpu", precision="fp32")
    np.testing.assert_allclose(deferred.predict(x), ref.predict(x), atol=1e-4, rtol=0)
    assert deferred._net is not None and deferred.runtime == "onnxruntime fp32"  # checked and recorded again
    assert ExportRecord.read(key) == record


def test_a_damaged_weights_file_is_an_error_even_with_an_export(tmp_path):
    src = REPO / "models"
    for name in ("gtzan-musicnn.json", "gtzan-musicnn.safetensors"):
        (tmp_path / name).write_bytes((src / name).read_bytes())
    card = tmp_path / "gtzan-musicnn.json"
    assert load_net(card, device="cpu").runtime == "onnxruntime fp32"  # exported and recorded
    weights = tmp_path / "gtzan-musicnn.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_net(card, device="cpu")


_RUN = """
import sys
sys.argv = ["genretag", "classify", *{paths!r}, "--format", "jsonl", "--jobs", "1"]
from genretag.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
print("TORCH", len(heavy), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.slow
def test_classify_imports_torch_only_to_make_the_export(tmp_path):
    paths = []
    for i, ext in enumerate((".flac", ".mp3")):
        x = make_tone(22050, 8.0, freq=220.0 * (i + 1), seed=i)
        paths.append(str(write_audio(tmp_path / f"t{i}{ext}", x, 22050)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "GENRETAG_BUNDLED_MODELS": str(REPO / "models"),
           "GENRETAG_ONNX_DIR": str(tmp_path / "onnx")}

    def run(*extra):
        r = subprocess.run([sys.executable, "-c", _RUN.format(paths=[*paths, *extra])], capture_output=True,
                           text=True, env=env, timeout=300, check=False)
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines()], r.stderr

    first, err1 = run()
    second, err2 = run()
    assert "TORCH 0" not in err1  # the first run builds the network and exports it
    assert "TORCH 0" in err2  # the second runs the recorded export: no torch at all
    assert "onnxruntime fp32" in err2
    assert [r["genre"] for r in second] == [r["genre"] for r in first]
    for a, b in zip(first, second):
        assert max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]) < 1e-4


def test_the_cpu_is_decided_without_torch_only_when_no_gpu_can_be_there(monkeypatch):
    from genretag.model import cpu_for_sure

    assert cpu_for_sure("cpu") and not cpu_for_sure("cuda") and not cpu_for_sure("cuda:1")
    with_torch = cpu_for_sure("auto")
    assert with_torch == (not torch.cuda.is_available())  # torch already imported: it is asked
    monkeypatch.delitem(sys.modules, "torch")
    if cpu_for_sure("auto"):  # no GPU device files: torch must not see one either
        assert not torch.cuda.is_available()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cpu_for_sure("auto")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(sys, "platform", "win32")
    assert not cpu_for_sure("auto")  # not known without torch: torch decides
