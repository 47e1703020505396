"""The device-agnostic inference path: same numbers however a batch is formed and wherever it runs.

`Model.predict` moves the batch to the network's device; `classify`
re-batches sub-tracks of consecutive files and (on CPU) stores the conv
weights channels-last. None of that may change a prediction beyond float
rounding. The CUDA checks run only where CUDA is available.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genretag.errors import ModelError
from genretag.model import Model, load_net, resolve_device
from genretag.pipeline.inference import classify

ATOL = 1e-5
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture()
def net(tiny_model_dir) -> Model:
    return load_net(tiny_model_dir, device="cpu")


def _waves(net: Model, n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(net.card.audio.segment_samples) / net.card.audio.sample_rate
    tones = np.stack([0.3 * np.sin(2 * np.pi * (110 * (i + 1)) * t) for i in range(n)])
    return (tones + 0.05 * rng.standard_normal(tones.shape)).astype(np.float32)


def test_cpu_device_is_explicit(net):
    assert resolve_device("cpu") == torch.device("cpu")
    assert net.device == torch.device("cpu")
    assert all(p.device == torch.device("cpu") for p in net.net.parameters())
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")


def test_batch_equals_one_by_one(net):
    x = _waves(net)
    batch = net.predict(x)
    single = np.concatenate([net.predict(x[i:i + 1]) for i in range(len(x))])
    assert batch.shape == (len(x), len(net.labels))
    np.testing.assert_allclose(batch, single, atol=ATOL, rtol=0)
    np.testing.assert_allclose(batch.sum(axis=1), 1.0, atol=1e-5)


def test_numpy_and_cpu_tensor_inputs_agree(net):
    x = _waves(net)
    from_numpy = net.predict(x)
    from_tensor = net.predict(torch.from_numpy(x).to(torch.device("cpu")))
    np.testing.assert_allclose(from_numpy, from_tensor, atol=ATOL, rtol=0)


def test_inference_tuning_does_not_change_predictions(tiny_model_dir):
    plain = load_net(tiny_model_dir, device="cpu")
    tuned = load_net(tiny_model_dir, device="cpu")
    weights = {k: v.clone() for k, v in plain.net.state_dict().items()}
    own_body = tuned.net.body
    tuned.tune()
    body = tuned._runner.body
    tuned.tune()  # idempotent
    assert tuned._runner.body is body
    # the fp32 CPU ResNet runs a frozen TorchScript graph (not a silent fallback) ...
    assert isinstance(body, torch.jit.ScriptModule)
    # ... in a copy: the model's own network is not rewritten
    assert tuned.net.body is own_body and not isinstance(own_body, torch.jit.ScriptModule)
    assert tuned.net.body.stages[0][0].conv1.weight.is_contiguous()  # still NCHW (channels-last went to the copy)
    for n in (1, 5):  # traced once, any batch size
        x = _waves(plain, n=n, seed=1)
        np.testing.assert_allclose(plain.predict(x), tuned.predict(x), atol=ATOL, rtol=0)
    # only the in-memory module changes: the loaded weights do not
    for k, v in plain.net.state_dict().items():
        assert torch.equal(v, weights[k]), k


def test_bf16_is_close_to_fp32_or_refused(tiny_model_dir):
    fp32 = load_net(tiny_model_dir, device="cpu")
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        with pytest.raises(ModelError, match="bf16"):
            load_net(tiny_model_dir, device="cpu", precision="bf16")
        return
    bf16 = load_net(tiny_model_dir, device="cpu", precision="bf16")
    bf16.tune()
    assert not isinstance(bf16.net.body, torch.jit.ScriptModule)  # autocast stays eager
    x = _waves(fp32, n=6, seed=3)
    p32, p16 = fp32.predict(x), bf16.predict(x)
    assert p16.dtype == np.float32
    np.testing.assert_allclose(p16.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p16, p32, atol=0.05, rtol=0)
    assert not np.array_equal(p16, p32)  # it did run in bfloat16


def test_unknown_precision_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ModelError, match="precision"):
        load_net(tiny_model_dir, device="cpu", precision="int4")


def test_classify_batching_is_invisible(net):
    waves = [w for w in _waves(net, n=7, seed=2)]
    # each 1 s waveform is one sub-track: batches of 1, 3 and all 7 sub-tracks
    runs = [list(classify(waves, net, batch_segments=b)) for b in (1, 3, 64)]
    for other in runs[1:]:
        assert [r.path for r in other] == [r.path for r in runs[0]]
        for a, b in zip(runs[0], other):
            assert a.genre == b.genre
            for k in a.probabilities:
                assert abs(a.probabilities[k] - b.probabilities[k]) <= ATOL


def test_files_straddling_batches_keep_their_results_and_order(net):
    """Files of 3, 1, 4 and 2 sub-tracks plus a failed file, through batches of 1-64:
    a file split across two forward passes gets the same probabilities, in input order."""
    from genretag.pipeline.inference import run_model
    from genretag.pipeline.prepare import Prepared

    waves = _waves(net, n=10, seed=4)
    sizes, items, start = (3, 1, None, 4, 2), [], 0
    for i, k in enumerate(sizes):
        if k is None:
            items.append(Prepared(f"bad{i}", None, [], 0.0, "cannot decode"))
            continue
        items.append(Prepared(f"f{i}", waves[start:start + k], [0.0] * k, 3.0))
        start += k
    whole = net.predict(waves)
    for b in (1, 3, 4, 7, 64):
        out = list(run_model(items, net, vote="soft", batch_segments=b))
        assert [r.path for r in out] == [p.path for p in items]
        assert out[2].error == "cannot decode" and out[2].genre is None
        start = 0
        for r, k in zip(out, sizes):
            if k is None:
                continue
            want = whole[start:start + k].mean(axis=0)
            got = np.array([r.probabilities[label] for label in net.labels])
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
            assert r.segments == k
            start += k


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_clear_error(tiny_model_dir):
    with pytest.raises(ModelError, match="no CUDA"):
        resolve_device("cuda")
    with pytest.raises(ModelError):
        load_net(tiny_model_dir, device="cuda")


@cuda
def test_cuda_puts_network_and_batch_on_the_gpu(tiny_model_dir):
    gpu = load_net(tiny_model_dir, device="cuda")
    cpu = load_net(tiny_model_dir, device="cpu")
    assert gpu.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in gpu.net.parameters())
    x = _waves(cpu)
    on_gpu = gpu.predict(x)  # numpy in, moved to the GPU by predict, numpy out
    assert isinstance(on_gpu, np.ndarray)
    np.testing.assert_allclose(on_gpu, cpu.predict(x), atol=1e-4, rtol=0)
    np.testing.assert_allclose(on_gpu, np.concatenate([gpu.predict(x[i:i + 1]) for i in range(len(x))]),
                               atol=1e-4, rtol=0)
    gpu.tune()  # CPU-only tuning: leaves a GPU network alone
    assert not getattr(gpu, "_tuned", False)


def test_bundled_musicnn_batch_equals_one_by_one():
    """The default model skips its dead filters with index arithmetic on the batch: a batch and
    its sub-tracks one at a time give the same probabilities."""
    net = load_net("gtzan-musicnn", device="cpu", verify=False)
    x = _waves(net, n=5, seed=3)
    batch = net.predict(x)
    single = np.concatenate([net.predict(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(batch, single, atol=ATOL, rtol=0)


@cuda
def test_bundled_musicnn_on_cuda_equals_cpu():
    cpu = load_net("gtzan-musicnn", device="cpu", verify=False)
    gpu = load_net("gtzan-musicnn", device="cuda", verify=False)
    x = _waves(cpu, n=4)
    np.testing.assert_allclose(gpu.predict(x), cpu.predict(x), atol=1e-4, rtol=0)


def test_bundled_musicnn_bf16_is_close_to_fp32_or_refused():
    """bf16 autocast runs the live-filter convolutions in bfloat16; the dead filters' constants
    must follow (this crashed once: index_put of float32 into bfloat16)."""
    fp32 = load_net("gtzan-musicnn", device="cpu", verify=False)
    x = _waves(fp32, n=4, seed=5)
    try:
        bf16 = load_net("gtzan-musicnn", device="cpu", verify=False, precision="bf16")
    except ModelError:
        assert not torch.ops.mkldnn._is_mkldnn_bf16_supported()
        return
    np.testing.assert_allclose(bf16.predict(x), fp32.predict(x), atol=0.05, rtol=0)
