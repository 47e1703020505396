"""A musicnn network's ONNX export, run by ONNX Runtime: what `--precision auto` runs on the CPU.

The graph (trunk and heads, after the log-mel) is exported from PyTorch once per model, into
the user cache (`genretag.nets.onnx_runtime`, which needs torch). Beside the graph the export
leaves an `ExportRecord`, keyed by the model card (`card_key`): the graph file and its sha256,
and the PyTorch network's own logits on a fixed probe batch. `open_export` reads that record
and opens the graph without importing torch at all: it checks the file's checksum, runs the
probe through `OnnxNet` (the numpy log-mel, then the session) and compares the logits with
PyTorch's, so a damaged export or an ONNX Runtime that computes differently is never used
silently. Without torch, a `genretag classify` run starts in a fraction of a second instead of
the 1-2 s that importing torch takes (docs/performance.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genretag.card import ModelCard
from genretag.errors import one_line
from genretag.fs import atomic_write, sha256_file
from genretag.paths import onnx_cache_dir
from genretag.runtime.frontend import musicnn_logmel
from genretag.runtime.probabilities import sigmoid, softmax

log = logging.getLogger(__name__)

#: Bump when the exported graph changes for the same weights (invalidates cached exports).
EXPORT_VERSION = 3
OPSET = 17
#: Largest difference in probability the probe batch may show between the session and PyTorch
#: (float rounding gives about 1e-5; a wrong graph gives tenths).
PROBE_TOLERANCE = 1e-4


class OnnxUnavailable(RuntimeError):
    """ONNX Runtime cannot run this network here (the reason is the message)."""


class OnnxNet:
    """Callable like the network it was exported from: waveforms (B, N) -> logits (B, labels),
    float32 numpy arrays: the musicnn log-mel in numpy (`genretag.runtime.frontend`), then the session."""

    runtime = "onnxruntime"

    def __init__(self, session, path: Path) -> None:
        self.session, self.path = session, path
        self.input_name = session.get_inputs()[0].name

    def features(self, waves: np.ndarray) -> np.ndarray:
        return musicnn_logmel(waves)

    def __call__(self, waves: np.ndarray) -> np.ndarray:
        logmel = musicnn_logmel(np.asarray(waves, dtype=np.float32))
        return self.session.run(None, {self.input_name: logmel})[0]


def session(path: Path, threads: int):
    """An ONNX Runtime CPU session on `threads` threads (the network's, as PyTorch's:
    `genretag.pipeline.threads.network_threads`) that sleep instead of spinning when OpenMP is
    asked to (`OMP_WAIT_POLICY=PASSIVE`, the CLI's default), with denormal floats read and written
    as zero (4-7 % less CPU time in the convolutions, the same outputs on music to the last bit):
    see docs/performance.md."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


def session_options(threads: int):
    """The `onnxruntime.SessionOptions` of `session`."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    passive = os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"
    so.add_session_config_entry("session.intra_op.allow_spinning", "0" if passive else "1")
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    return so


def probe_waves(n_samples: int) -> np.ndarray:
    """Two fixed sub-tracks of `n_samples` at 16 kHz, float32: a chord with a beat, and seeded noise."""
    t = np.arange(n_samples, dtype=np.float64) / 16000.0
    tone = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    beat = (np.sin(2 * np.pi * 2.0 * t) > 0.95).astype(np.float64)
    noise = np.random.default_rng(0).standard_normal(n_samples)
    return np.stack([0.3 * tone + 0.2 * beat, 0.1 * noise]).astype(np.float32)


def probe_difference(got: np.ndarray, want: np.ndarray) -> float:
    """Largest difference between two sets of logits, as probabilities (softmax and sigmoid both:
    a card may read them either way)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf")
    diff = max(float(np.abs(softmax(got) - softmax(want)).max()),
               float(np.abs(sigmoid(got) - sigmoid(want)).max()))
    return diff if np.isfinite(diff) else float("inf")


def card_key(card: ModelCard) -> str | None:
    """What an export made for this card depends on, as a checksum: the weights (by their sha256),
    the architecture, the audio and mel parameters, the exporter. None for a card without a
    weights checksum (an ensemble, a card written by hand): such a model is always checked
    against PyTorch."""
    if not card.weights_sha256 or card.members:
        return None
    spec = {"weights": card.weights_sha256, "architecture": card.architecture, "audio": asdict(card.audio),
            "mel": asdict(card.mel) if card.mel is not None else None, "export": EXPORT_VERSION, "opset": OPSET}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ExportRecord:
    """What the PyTorch side checked when it exported a card's network, for `open_export` to check again."""

    graph: str  # the .onnx file's name, in the same folder
    graph_sha256: str
    n_samples: int
    probe_logits: list[list[float]]  # the PyTorch network's logits on probe_waves(n_samples)

    @staticmethod
    def path(key: str) -> Path:
        return onnx_cache_dir() / f"card-{key}.json"

    def write(self, key: str) -> None:
        atomic_write(self.path(key), (json.dumps(asdict(self), sort_keys=True) + "\n").encode())

    @classmethod
    def for_card(cls, card: ModelCard) -> ExportRecord | None:
        """The record of `card`'s export (`card_key`), made for its sub-track length; None when
        there is none, or for a card without a key."""
        key = card_key(card)
        record = cls.read(key) if key is not None else None
        return record if record is not None and record.n_samples == card.audio.segment_samples else None

    @classmethod
    def read(cls, key: str) -> ExportRecord | None:
        try:
            raw = json.loads(cls.path(key).read_text(encoding="utf-8"))
            return cls(str(raw["graph"]), str(raw["graph_sha256"]), int(raw["n_samples"]),
                       [[float(v) for v in row] for row in raw["probe_logits"]])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def open_export(card: ModelCard, threads: int) -> OnnxNet | None:
    """The card's network from its cached export, checked, without torch; None when there is no
    usable export (never made, made for other weights, damaged, or computing differently here):
    the caller then builds the network in PyTorch, which exports and checks it again."""
    record = ExportRecord.for_card(card)
    if record is None:
        return None
    graph = onnx_cache_dir() / record.graph  # beside the record
    try:
        if sha256_file(graph) != record.graph_sha256:
            log.debug("%s: the cached export %s is not the one checked", card.name, graph)
            return None
        net = OnnxNet(session(graph, threads), graph)
        diff = probe_difference(net(probe_waves(record.n_samples)), np.asarray(record.probe_logits))
    except Exception as e:  # noqa: BLE001 - onnxruntime missing or broken, a damaged file: PyTorch decides
        log.debug("%s: the cached export cannot run here (%s)", card.name, one_line(e))
        return None
    if diff > PROBE_TOLERANCE:
        log.debug("%s: the cached export differs from PyTorch by %.2g on the probe", card.name, diff)
        return None
    return net
