"""Running a frozen musicnn network in ONNX Runtime on the CPU: the default `--precision auto`.

The log-mel is computed in torch (the network's own `features`), and everything after it
(trunk and head) runs in an ONNX Runtime session: ONNX Runtime's fp32 convolutions are faster
than PyTorch's on musicnn's front-end (docs/performance.md). The graph is exported from the
network frozen by `genretag.nets.frozen` the first time a model is used, into the user cache
(``<cache>/onnx/<key>.onnx``, `genretag.paths.onnx_cache_dir`; the key a checksum of the frozen weights and the card's
architecture), and checked once per load against the PyTorch network on a probe batch.

Whatever goes wrong (onnxruntime missing or unable to load, an export the installed torch
cannot make, a session whose outputs differ from PyTorch's) gives one warning line and the
PyTorch fp32 network: the answers never change silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genretag.errors import one_line
from genretag.nets.frozen import FromLogMel, freezable, freeze
from genretag.paths import onnx_cache_dir

log = logging.getLogger(__name__)

#: Bump when the exported graph changes for the same weights (invalidates cached exports).
EXPORT_VERSION = 1
OPSET = 17
#: Largest difference in probability the probe batch may show between the session and PyTorch
#: (float rounding gives about 1e-6; a wrong graph gives tenths).
PROBE_TOLERANCE = 1e-4


class OnnxUnavailable(RuntimeError):
    """ONNX Runtime cannot run this network here (the reason is the message)."""


class OnnxNet:
    """Callable like the network it was made from: waveforms (B, N) -> logits (B, labels), float32.

    `features` (the log-mel, in torch) runs first, then the session on its output."""

    runtime = "onnxruntime"

    def __init__(self, features, session, path: Path) -> None:
        self.features, self.session, self.path = features, session, path
        self.input_name = session.get_inputs()[0].name

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            logmel = self.features(wave.float())
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(logmel.numpy())})[0]
        return torch.from_numpy(out)


def _key(frozen: nn.Module, architecture: dict) -> str:
    """Checksum of what the exported graph depends on: the frozen tensors, the architecture, the exporter."""
    h = hashlib.sha256(json.dumps({"architecture": architecture, "export": EXPORT_VERSION, "opset": OPSET},
                                  sort_keys=True, default=str).encode())
    for name, t in sorted(frozen.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def export(body: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Write `body` (log-mel -> logits) as ONNX, atomically (a half-written file is never read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(body, (example,), tmp, dynamo=False, input_names=["logmel"],
                              output_names=["logits"], opset_version=OPSET,
                              dynamic_axes={"logmel": {0: "batch", 1: "frames"}, "logits": {0: "batch"}})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session on `threads` threads (the network's, as PyTorch's:
    `genretag.pipeline.threads.network_threads`) that sleep instead of spinning when OpenMP is
    asked to (`OMP_WAIT_POLICY=PASSIVE`, the CLI's default): see docs/performance.md."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    passive = os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"
    so.add_session_config_entry("session.intra_op.allow_spinning", "0" if passive else "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def build(net: nn.Module, architecture: dict, n_samples: int, threads: int) -> OnnxNet:
    """The ONNX Runtime form of `net` (exported into the cache unless already there), checked
    against `net` on a probe batch. Raises OnnxUnavailable with the reason when it cannot be used."""
    if not freezable(net):
        raise OnnxUnavailable("not a musicnn network")
    try:
        import onnxruntime  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising anything on import
        raise OnnxUnavailable(f"onnxruntime cannot be imported ({one_line(e)})") from None
    probe = _probe(n_samples)
    with torch.inference_mode():
        want = net(probe)
        logmel = net.features(probe)
    if not isinstance(want, torch.Tensor) or want.dim() != 2:
        raise OnnxUnavailable("the network's output is not one (batch, labels) tensor")
    try:
        with torch.inference_mode(False), torch.no_grad():  # tracing needs ordinary tensors
            frozen = FromLogMel(freeze(net))
            path = onnx_cache_dir() / f"{_key(frozen, architecture)}.onnx"
            if not path.exists():
                export(frozen, logmel.clone(), path)
            try:
                sess = session(path, threads)
            except Exception:  # a damaged cached file: export it again, once
                export(frozen, logmel.clone(), path)
                sess = session(path, threads)
        runner = OnnxNet(net.features, sess, path)
        got = runner(probe)
    except Exception as e:  # an exporter or runtime failure of any kind: PyTorch runs instead
        raise OnnxUnavailable(one_line(e)) from None
    if got.shape != want.shape:
        raise OnnxUnavailable(f"its outputs have the shape {tuple(got.shape)}, PyTorch's {tuple(want.shape)}")
    diff = max(float((torch.softmax(got, -1) - torch.softmax(want, -1)).abs().max()),
               float((torch.sigmoid(got) - torch.sigmoid(want)).abs().max()))
    if not np.isfinite(diff) or diff > PROBE_TOLERANCE:
        raise OnnxUnavailable(f"its outputs differ from PyTorch's by {diff:.2g} on a probe batch")
    return runner


def _probe(n_samples: int) -> torch.Tensor:
    """Two fixed sub-tracks: a chord with a beat, and seeded noise."""
    t = torch.arange(n_samples, dtype=torch.float64) / 16000.0
    tone = sum(torch.sin(2 * torch.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    beat = (torch.sin(2 * torch.pi * 2.0 * t) > 0.95).double()
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(n_samples, generator=gen, dtype=torch.float64)
    return torch.stack([0.3 * tone + 0.2 * beat, 0.1 * noise]).float()
