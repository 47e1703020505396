"""Exporting a frozen musicnn network to ONNX: the PyTorch side of `--precision auto`.

Everything after the log-mel (trunk and heads) is exported from the network frozen by
`genretag.nets.frozen` the first time a model is used, into the user cache
(``<cache>/onnx/<key>.onnx``, `genretag.paths.onnx_cache_dir`; the key a checksum of the frozen
weights and the card's architecture), and checked against the PyTorch network on a probe
batch. A model loaded from a card also gets an `genretag.runtime.ExportRecord`, which lets the
next process open the export without torch (`genretag.runtime.open_export`). The exported
graph runs as `genretag.runtime.OnnxNet`: the log-mel in numpy, then the session.

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

from genretag.card import ModelCard
from genretag.errors import one_line
from genretag.fs import sha256_file
from genretag.nets.frozen import FromLogMel, freezable, freeze
from genretag.paths import onnx_cache_dir
from genretag.runtime.frontend import musicnn_logmel
from genretag.runtime.onnx import (
    EXPORT_VERSION,
    OPSET,
    PROBE_TOLERANCE,
    ExportRecord,
    OnnxNet,
    OnnxUnavailable,
    card_key,
    probe_difference,
    probe_waves,
    session,
)

log = logging.getLogger(__name__)

#: Largest difference between the network's own log-mel and the numpy one `OnnxNet` computes
#: (float rounding, and a float16 rounding boundary, give a few 1e-4; another front end gives ones).
FRONTEND_TOLERANCE = 1e-2


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


def build(net: nn.Module, card: ModelCard, threads: int) -> OnnxNet:
    """The ONNX Runtime form of `net` (exported into the cache unless already there), checked
    against `net` on a probe batch; for a card with a weights checksum, the `ExportRecord` that
    lets `genretag.runtime.open_export` open it without torch next time. Raises OnnxUnavailable
    with the reason when it cannot be used."""
    if not freezable(net):
        raise OnnxUnavailable("not a musicnn network")
    try:
        import onnxruntime  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising anything on import
        raise OnnxUnavailable(f"onnxruntime cannot be imported ({one_line(e)})") from None
    n_samples = card.audio.segment_samples
    probe = probe_waves(n_samples)
    with torch.inference_mode():
        want = net(torch.from_numpy(probe))
        logmel = net.features(torch.from_numpy(probe))
    if not isinstance(want, torch.Tensor) or want.dim() != 2:
        raise OnnxUnavailable("the network's output is not one (batch, labels) tensor")
    ours = musicnn_logmel(probe)
    if ours.shape != tuple(logmel.shape) or float(np.abs(ours - logmel.numpy()).max()) > FRONTEND_TOLERANCE:
        raise OnnxUnavailable("its log-mel is not musicnn's")
    want = want.float().numpy()
    try:
        with torch.inference_mode(False), torch.no_grad():  # tracing needs ordinary tensors
            frozen = FromLogMel(freeze(net))
            path = onnx_cache_dir() / f"{_key(frozen, card.architecture)}.onnx"
            if not path.exists():
                export(frozen, logmel.clone(), path)
            try:
                sess = session(path, threads)
            except Exception:  # a damaged cached file: export it again, once
                export(frozen, logmel.clone(), path)
                sess = session(path, threads)
        runner = OnnxNet(sess, path)
        got = runner(probe)
    except Exception as e:  # an exporter or runtime failure of any kind: PyTorch runs instead
        raise OnnxUnavailable(one_line(e)) from None
    if got.shape != want.shape:
        raise OnnxUnavailable(f"its outputs have the shape {tuple(got.shape)}, PyTorch's {tuple(want.shape)}")
    diff = probe_difference(got, want)
    if diff > PROBE_TOLERANCE:
        raise OnnxUnavailable(f"its outputs differ from PyTorch's by {diff:.2g} on a probe batch")
    key = card_key(card)
    if key is not None:
        try:
            ExportRecord(path.name, sha256_file(path), n_samples, want.tolist()).write(key)
        except OSError as e:  # a read-only cache: the next run checks against PyTorch again
            log.debug("cannot record the export of %s (%s)", card.name, one_line(e))
    return runner
