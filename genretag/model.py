"""The loaded model, the API object: name or path -> `Model` (card + network with verified weights).

`load_model` finds a card (`genretag.store`), reads its weights (`genretag.store.weights`: safetensors
only, sha256-checked) and rebuilds its network (`genretag.nets`) on a device; `Model.classify` is the
pipeline's model stage (`genretag.pipeline.inference`), which names a model only through its
`Predictor` protocol, so this module builds on the pipeline and never the other way round.

On the CPU with ``precision="auto"`` a musicnn model whose ONNX export is already in the user
cache loads without torch (`genretag.runtime.open_export`): its PyTorch network is built only if
something asks for `Model.net`. This module therefore imports torch only inside the functions
that need it.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genretag.card import ModelCard, load_card
from genretag.deprecation import deprecated
from genretag.errors import ModelError, one_line
from genretag.pipeline import inference
from genretag.pipeline.calibration import Calibration
from genretag.pipeline.inference import TrackResult
from genretag.pipeline.threads import network_threads
from genretag.runtime import ExportRecord, OnnxNet, OnnxUnavailable, open_export
from genretag.runtime.probabilities import card_probabilities
from genretag.store.resolve import find_card
from genretag.store.weights import check_sha256, read_weights, weights_path

if TYPE_CHECKING:
    import torch

    from genretag.nets import GenreNet

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without CUDA is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda asked for, but no CUDA device is available", 2)
    try:
        return torch.device(device)
    except RuntimeError:
        raise ModelError(f"unknown device {device!r} (auto, cpu or cuda)", 2) from None


def cpu_for_sure(device: str) -> bool:
    """Whether `device` means the CPU on this machine, decided without importing torch.

    "auto" means CUDA when torch sees a GPU, so it counts as the CPU only where no GPU driver is
    visible (`CUDA_VISIBLE_DEVICES` empty, or no NVIDIA or ROCm device files on Linux, or macOS);
    when in doubt torch is asked (`resolve_device`)."""
    if device == "cpu":
        return True
    if device != "auto":
        return False
    if "torch" in sys.modules:  # already paid for: ask it
        return not sys.modules["torch"].cuda.is_available()
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    if sys.platform == "darwin":
        return True
    if sys.platform.startswith("linux"):
        return not any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0",
                                                   "/dev/kfd"))
    return False


class Model:
    """A loaded model: its card (labels, audio and mel parameters, metrics) and network, on a device.

    This is the API: `genretag.load_model()` returns one, `classify()` labels
    files or waveforms with it, and the pipeline, evaluation and training take it.
    ``net`` is the network exactly as loaded; the first classification on a CPU
    builds a separate inference-optimised copy of it (see `tune`), so the
    caller's module is never rewritten. A model that runs from its cached ONNX
    export (see the module) builds ``net`` the first time it is asked for.
    """

    def __init__(self, card: ModelCard, net: GenreNet | None, device: torch.device | None,
                 path: Path | None = None, members: list[Model] | None = None, precision: str = "fp32",
                 *, runner: OnnxNet | None = None, verify: bool = True) -> None:
        self.card, self.path, self.precision = card, path, precision
        self.members = list(members or [])
        self._net, self._device, self._verify = net, device, verify
        self._runner: torch.nn.Module | OnnxNet | None = runner
        self._tuned = runner is not None
        #: Threads of the ONNX Runtime session `tune` opens from the recorded export (`from_export`
        #: with ``defer``); None: nothing deferred.
        self._deferred_threads: int | None = None

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, device={self.device_type!r}, precision={self.precision!r})"

    @property
    def net(self) -> GenreNet:
        """The PyTorch network, with the card's verified weights (built now if the model was
        loaded from its ONNX export)."""
        if self._net is None and self.members:  # an ensemble: its first member's
            return self.members[0].net
        if self._net is None:
            if self.path is None:
                raise ModelError(f"{self.name}: no card file to build the network from")
            self._net = _build_net(self.card, self.path, self.device, verify=self._verify)
        return self._net

    @property
    def device(self) -> torch.device:
        """The torch device the network is on (importing torch, for a model loaded without it)."""
        if self._device is None:
            import torch

            self._device = torch.device("cpu")
        return self._device

    @property
    def verify(self) -> bool:
        """Whether the weights file is sha256-checked whenever it is read."""
        return self._verify

    @property
    def device_type(self) -> str:
        """"cpu" or "cuda": where the network runs, without importing torch."""
        return "cpu" if self._device is None else self._device.type

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def labels(self) -> list[str]:
        return self.card.labels

    @property
    def sample_rate(self) -> int:
        return self.card.audio.sample_rate

    @functools.cached_property
    def calibration(self) -> Calibration | None:
        """The card's map from probability to real-world confidence (None: the softmax is the confidence);
        read once (`load_net` checks it), as every result of a run uses it."""
        return Calibration.from_card(self.card)

    @property
    def min_confidence(self) -> float | None:
        """The card's default `tag --min-confidence` (chosen with its calibration), if it has one."""
        value = self.card.extra.get("min_confidence")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def loaded(self) -> Model:
        """Deprecated: the model itself (genretag 0.1's `Model` wrapped a separate `LoadedNet` here)."""
        deprecated("genretag.Model.loaded", "the model itself")
        return self

    def classify(self, inputs: Iterable[str | os.PathLike | np.ndarray] | str | os.PathLike | np.ndarray,
                 vote: str = "soft", segments: int | None = None, jobs: int = 1) -> list[TrackResult]:
        """Classify paths or mono waveforms at `self.sample_rate`; one result per input, in order."""
        return list(inference.classify(inputs, self, vote=vote, segments=segments, jobs=jobs))

    def predict(self, waves: torch.Tensor | np.ndarray) -> np.ndarray:
        """Sub-track waveforms (batch, samples) -> calibrated probabilities (batch, labels)."""
        if self.members:
            return np.mean([m.predict(_adapt(waves, self.card, m.card)) for m in self.members], axis=0)
        if self.precision == "auto" and not self._tuned:
            self.tune()
        if isinstance(self._runner, OnnxNet):  # --precision auto: the network in ONNX Runtime, no torch
            if not isinstance(waves, np.ndarray):
                waves = waves.cpu().numpy()
            return card_probabilities(self._runner(waves) / np.float32(self.card.temperature or 1.0), self.card)
        import torch

        with torch.inference_mode():
            x = torch.as_tensor(waves, dtype=torch.float32).to(self.device)
            net = self._runner if self._runner is not None else self.net
            # bf16: convolutions and matmuls in bfloat16 (the mel front-ends opt out and stay
            # float32); the temperature and softmax below run in float32 either way.
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
                logits = net(x).float() / float(self.card.temperature or 1.0)
            return card_probabilities(logits.cpu().numpy(), self.card)

    def predict_segments(self, waves: torch.Tensor | np.ndarray) -> np.ndarray:
        """Deprecated: genretag 0.1's name of `predict`."""
        deprecated("genretag.Model.predict_segments", "genretag.Model.predict")
        return self.predict(waves)

    @property
    def runtime(self) -> str:
        """What runs the network: "onnxruntime fp32", "pytorch fp32" or "pytorch bf16" (after `tune`;
        for a model whose export opens on first use, what its checked record says runs it)."""
        lead = self.members[0] if self.members else self
        if lead._deferred_threads is not None and not lead._tuned:
            return "onnxruntime fp32"
        self.tune()
        if isinstance(lead._runner, OnnxNet):
            return "onnxruntime fp32"
        return f"pytorch {'bf16' if self.precision == 'bf16' else 'fp32'}"

    def tune(self) -> None:
        """Build the inference-optimised copy `predict` runs, once (a no-op where it does not pay).

        - A musicnn network on the CPU with ``precision="auto"`` (the default): the network
          after its log-mel frozen and run in ONNX Runtime (`genretag.nets.onnx_runtime`), with
          the same outputs to float rounding (checked on a probe batch when it is built). Where
          ONNX Runtime cannot load, one warning line, and PyTorch fp32 runs instead.
        - A ResNet on the CPU: its weights channels-last (NHWC), where
          oneDNN's convolutions are faster (musicnn's are slower, so it is left
          alone), and in fp32 its body (log-mel -> logits) traced and frozen with
          TorchScript's ``optimize_for_inference`` (batch norm folded into the
          convolutions, ReLU fused, weights pre-packed); outputs equal to float
          rounding (tested). bf16 stays eager under autocast.

        `self.net`, the card and the weights are untouched. Figures: docs/performance.md.
        """
        for m in (self, *self.members):
            if m.device_type != "cpu" or m._runner is not None or m._tuned:
                continue
            m._tuned = True
            if m.precision == "auto":
                if m._deferred_threads is not None:
                    m._runner = open_export(m.card, m._deferred_threads)
                m._runner = m._runner or _onnx_runner(m)
                if m._runner is not None:
                    continue
            if m.card.architecture.get("name", "resnet") != "resnet":
                continue
            import torch

            runner = copy.deepcopy(m.net).to(memory_format=torch.channels_last)
            if m.precision != "bf16":
                runner.body = _frozen_body(runner, m.card.audio.segment_samples)
            m._runner = runner


_onnx_warned: set[str] = set()


def _onnx_runner(m: Model) -> OnnxNet | None:
    """ONNX Runtime for a musicnn network (None for any other, which PyTorch runs in fp32); where it
    cannot be used, one warning line per reason and process, and None."""
    from genretag.nets.frozen import freezable
    from genretag.nets.onnx_runtime import build

    if not freezable(m.net):
        return None
    try:
        return build(m.net, m.card, network_threads())
    except OnnxUnavailable as e:
        reason = str(e)
        if reason not in _onnx_warned:
            _onnx_warned.add(reason)
            log.warning("ONNX Runtime cannot run %s (%s): running it in PyTorch fp32 (the same answers, slower)",
                        m.card.name, reason)
        return None


def _frozen_body(net: GenreNet, n_samples: int) -> torch.nn.Module:
    """The net's body as a frozen, inference-optimised TorchScript module (or as it was)."""
    import warnings

    import torch

    body = net.body
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            example = net.features(torch.zeros(2, n_samples)).contiguous(memory_format=torch.channels_last)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(body.eval(), example)))
            frozen(example)  # the first call compiles; keep it out of the timed loop
        return frozen
    except Exception:  # noqa: BLE001 - any failure means: keep the eager module (a torch without TorchScript)
        return body


def _adapt(waves, src: ModelCard, dst: ModelCard) -> np.ndarray:
    """Resample/crop an ensemble's sub-tracks to what one member was trained on."""
    x = np.asarray(waves, dtype=np.float32) if isinstance(waves, np.ndarray) else waves.cpu().numpy()
    if src.audio.sample_rate != dst.audio.sample_rate:
        import soxr

        x = np.stack([soxr.resample(w, src.audio.sample_rate, dst.audio.sample_rate) for w in x])
    n = dst.audio.segment_samples
    if x.shape[1] >= n:
        start = (x.shape[1] - n) // 2
        return np.ascontiguousarray(x[:, start:start + n], dtype=np.float32)
    return np.pad(x, ((0, 0), (0, n - x.shape[1]))).astype(np.float32)


PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str, dev: torch.device | None) -> None:
    """auto (the default: fp32, in ONNX Runtime where that is faster), fp32 (PyTorch, the reference)
    or bf16 (faster where the hardware has bfloat16 units: CUDA, or CPUs with AVX512-BF16/AMX;
    elsewhere emulated and slower, so refused). `dev` matters for bf16 only (None: not resolved yet,
    for a model that may load without torch)."""
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r} (auto, fp32 or bf16)", 2)
    if precision != "bf16":
        return
    import torch

    if not (torch.cuda.is_bf16_supported() if dev.type == "cuda" else torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        raise ModelError(f"--precision bf16 needs bfloat16 hardware ({dev.type} has none here: a CUDA "
                         "GPU from Ampere on, or a CPU with AVX512-BF16/AMX); use fp32", 2)


def load_net(name_or_path: str | os.PathLike | None = None, device: str = "auto", *,
             verify: bool = True, precision: str = "auto", defer_export: bool = False,
             _within: tuple[Path, ...] = ()) -> Model:
    """Load a card and its safetensors weights (sha256-verified) onto a device.

    ``precision="auto"`` (the default) runs a musicnn network on the CPU in ONNX Runtime in fp32
    (faster, the same answers to float rounding; PyTorch where ONNX Runtime cannot load), anything
    else in PyTorch fp32. ``"fp32"`` is PyTorch fp32 everywhere, the reference. ``"bf16"`` runs the
    network in bfloat16: faster on a CPU with AMX or on CUDA; probabilities move by up to a few
    hundredths, the genre almost never (docs/performance.md).

    With ``"auto"`` on the CPU, a model whose checked ONNX export is in the user cache is loaded
    from it without importing torch (its weights file still sha256-checked); `Model.net` builds
    the PyTorch network when asked for. `defer_export` opens that export on first use instead
    (`from_export`).
    """
    light = precision == "auto" and cpu_for_sure(device)
    dev = None if light else resolve_device(device)
    check_precision(precision, dev)
    card_path = find_card(name_or_path)
    try:
        card = load_card(card_path)
        Calibration.from_card(card)  # a bad calibration fails here, not at the first result
    except (ValueError, TypeError) as e:
        raise ModelError(f"{card_path}: {e}") from None
    if card.members:
        chain = (*_within, Path(card_path).resolve())
        for m in card.members:  # an ensemble that contains itself would recurse for ever
            if (Path(card_path).parent / m).resolve() in chain:
                raise ModelError(f"{card_path}: ensemble member {m} is the ensemble itself or contains it")
        members = [load_net(card_path.parent / m, device, verify=verify, precision=precision, _within=chain)
                   for m in card.members]
        if any(m.labels != card.labels for m in members):
            raise ModelError(f"{card_path}: ensemble members disagree on labels")
        return Model(card, None, dev, card_path, members, precision, verify=verify)
    if light:
        model = from_export(card, card_path, network_threads(), verify=verify, defer=defer_export)
        if model is not None:
            return model
        dev = resolve_device(device)
    return Model(card, _build_net(card, card_path, dev, verify=verify), dev, card_path, precision=precision,
                 verify=verify)


def from_export(card: ModelCard, card_path: Path, threads: int, *, verify: bool = True,
                defer: bool = False) -> Model | None:
    """The card's model run by ONNX Runtime on the CPU from its checked export in the user cache,
    on `threads` threads, without importing torch (its weights file still sha256-checked when
    `verify`); None when there is no usable export (`genretag.runtime.open_export`).

    With `defer`, only the export's record is looked for now; the session opens, and the export
    is checked, on first use (`Model.tune`), and should that fail, the model goes through PyTorch
    then. For a process whose decoding workers run the network (`genretag.pipeline.worker_network`:
    they open and check the export themselves), which then never opens a session it does not use."""
    if defer:
        if ExportRecord.for_card(card) is None:
            return None
        runner = None
    else:
        runner = open_export(card, threads)
        if runner is None:
            return None
    if verify and card.weights_sha256:
        check_sha256(weights_path(card_path, card), card.weights_sha256)
    model = Model(card, None, None, card_path, precision="auto", runner=runner, verify=verify)
    if defer:
        model._deferred_threads = threads
    return model


def _build_net(card: ModelCard, card_path: Path, dev: torch.device, *, verify: bool) -> GenreNet:
    """The card's PyTorch network with its weights (sha256-checked when `verify`), in eval mode on `dev`."""
    from genretag.nets import build_net

    wpath = weights_path(card_path, card)
    if verify and card.weights_sha256:
        check_sha256(wpath, card.weights_sha256)
    state = read_weights(wpath)
    try:
        net = build_net(card)
    except (ValueError, KeyError, TypeError) as e:  # the card asks for a network genretag cannot build
        raise ModelError(f"{card_path}: not a valid model card: {one_line(e)}") from None
    try:
        state = {k: v.float() for k, v in state.items()}
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ModelError(f"{wpath.name}: weights do not fit the card's architecture ({one_line(e)})") from None
    return net.eval().to(dev)


def load_model(name_or_path: str | os.PathLike | None = None, device: str = "auto",
               precision: str = "auto") -> Model:
    """Load a model by name (bundled, cached or downloaded) or card path; None means the bundled default.

    ``precision``: "auto" (the default), "fp32" (PyTorch, the reference) or "bf16" (see `load_net`).
    """
    return load_net(name_or_path, device, precision=precision)


def classify(inputs: Iterable[str | os.PathLike | np.ndarray] | str | os.PathLike | np.ndarray,
             model: Model | str | os.PathLike | None = None, *, vote: str = "soft", segments: int | None = None,
             jobs: int = 1, device: str = "auto", batch_segments: int | None = None) -> Iterator[TrackResult]:
    """`genretag.classify`: `genretag.pipeline.inference.classify` with a model given by name as well."""
    if not isinstance(model, Model):
        model = load_net(model, device)
    return inference.classify(inputs, model, vote=vote, segments=segments, jobs=jobs, batch_segments=batch_segments)
