"""Loading a model: name or path -> card + network with verified weights.

Only JSON cards and safetensors weights are ever read (never a pickle), and
the weights' sha256 is checked against the card before they are used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from genretag.errors import ModelError, one_line
from genretag.nets.cnn import GenreNet, build_net
from genretag.store.card import ModelCard, load_card, save_card, sha256_file
from genretag.store.resolve import find_card


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda asked for, but no CUDA device is available", 2)
    try:
        return torch.device(device)
    except RuntimeError:
        raise ModelError(f"unknown device {device!r} (auto, cpu or cuda)", 2) from None


@dataclass
class LoadedNet:
    """A card and the network it describes, on a device, in eval mode."""

    card: ModelCard
    net: GenreNet
    device: torch.device
    path: Path | None = None
    members: list["LoadedNet"] = field(default_factory=list)
    precision: str = "fp32"

    @property
    def labels(self) -> list[str]:
        return self.card.labels

    @torch.inference_mode()
    def predict(self, waves: torch.Tensor | np.ndarray) -> np.ndarray:
        """Sub-track waveforms (batch, samples) -> calibrated probabilities (batch, labels)."""
        if self.members:
            return np.mean([m.predict(_adapt(waves, self.card, m.card)) for m in self.members], axis=0)
        x = torch.as_tensor(waves, dtype=torch.float32).to(self.device)
        # bf16: convolutions and matmuls in bfloat16 (the mel front-ends opt out and stay
        # float32); the temperature and softmax below run in float32 either way.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.net(x).float() / float(self.card.temperature or 1.0)
        if self.card.extra.get("multilabel"):
            return torch.sigmoid(logits).cpu().numpy()
        return torch.softmax(logits, dim=-1).cpu().numpy()


def _adapt(waves, src: ModelCard, dst: ModelCard) -> np.ndarray:
    """Resample/crop an ensemble's sub-tracks to what one member was trained on."""
    x = waves.cpu().numpy() if isinstance(waves, torch.Tensor) else np.asarray(waves, dtype=np.float32)
    if src.audio.sample_rate != dst.audio.sample_rate:
        import soxr

        x = np.stack([soxr.resample(w, src.audio.sample_rate, dst.audio.sample_rate) for w in x])
    n = dst.audio.segment_samples
    if x.shape[1] >= n:
        start = (x.shape[1] - n) // 2
        return np.ascontiguousarray(x[:, start:start + n], dtype=np.float32)
    return np.pad(x, ((0, 0), (0, n - x.shape[1]))).astype(np.float32)


PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, dev: torch.device) -> None:
    """fp32 (exact, the default) or bf16 (faster where the hardware has bfloat16 units:
    CUDA, or CPUs with AVX512-BF16/AMX; elsewhere emulated and slower, so refused)."""
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r} (fp32 or bf16)", 2)
    if precision == "bf16" and not (torch.cuda.is_bf16_supported() if dev.type == "cuda"
                                    else torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        raise ModelError(f"--precision bf16 needs bfloat16 hardware ({dev.type} has none here: a CUDA "
                         "GPU from Ampere on, or a CPU with AVX512-BF16/AMX); use fp32", 2)


def load_net(name_or_path: str | os.PathLike | None = None, device: str = "auto",
             verify: bool = True, precision: str = "fp32") -> LoadedNet:
    """Load a card and its safetensors weights (sha256-verified) onto a device.

    ``precision="bf16"`` runs the network in bfloat16: 1.4-2x faster on a CPU with AMX,
    probabilities move by up to a few hundredths, the genre almost never (bench/README.md).
    The default, fp32, is exact.
    """
    dev = resolve_device(device)
    check_precision(precision, dev)
    card_path = find_card(name_or_path)
    try:
        card = load_card(card_path)
    except (ValueError, TypeError) as e:
        raise ModelError(f"{card_path}: {e}") from None
    if card.members:
        members = [load_net(card_path.parent / m, device, verify, precision) for m in card.members]
        if any(m.labels != card.labels for m in members):
            raise ModelError(f"{card_path}: ensemble members disagree on labels")
        return LoadedNet(card, members[0].net, dev, card_path, members, precision)
    wpath = card_path.parent / (card.weights or card_path.with_suffix(".safetensors").name)
    if not wpath.exists():
        raise ModelError(f"{card_path.name}: weights file {wpath.name} is missing")
    if verify and card.weights_sha256:
        if sha256_file(wpath) != card.weights_sha256:
            raise ModelError(f"{wpath}: sha256 does not match the model card (corrupt or tampered)")
    try:
        net = build_net(card)
        state = load_file(str(wpath))
        state = {k: v.float() for k, v in state.items()}
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ModelError(f"{wpath.name}: weights do not fit the card's architecture ({one_line(e)})") from None
    net.eval().to(dev)
    return LoadedNet(card, net, dev, card_path, precision=precision)


def save_model(net: torch.nn.Module, card: ModelCard, out_dir: str | os.PathLike,
               half: bool = False) -> Path:
    """Write `<name>.safetensors` and `<name>.json` (with its sha256) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in net.state_dict().items()}
    wpath = out / f"{card.name}.safetensors"
    save_file(state, str(wpath))
    card.weights = wpath.name
    card.weights_sha256 = sha256_file(wpath)
    cpath = out / f"{card.name}.json"
    save_card(card, cpath)
    return cpath
