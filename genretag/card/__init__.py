"""Model cards: the JSON file beside a model's safetensors weights.

The card is the single source of truth for everything a model needs besides
its weights: the labels, the audio and mel parameters its front-end was
trained with, the architecture to rebuild, and what was measured. Nothing
else in genretag hard-codes a sample rate or a mel setting.

The networks, the pipeline and the model store all read cards, so this package
sits below them: it imports nothing of genretag but its errors, and no torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genretag.card.metrics import CardMetrics
from genretag.errors import ModelError, one_line

GTZAN_GENRES: tuple[str, ...] = (
    "blues", "classical", "country", "disco", "hiphop",
    "jazz", "metal", "pop", "reggae", "rock",
)


@dataclass
class AudioParams:
    """How a track is decoded and cut into the sub-tracks the network sees."""

    sample_rate: int = 22050
    segment_seconds: float = 3.0
    max_segments: int = 10

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))


@dataclass
class MelParams:
    """Log-mel front-end parameters (see genretag.nets.features.LogMel)."""

    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    power: float = 2.0
    htk: bool = False
    norm: str | None = "slaney"
    # "db": 10*log10(max(x, 1e-10)) with top_db clipping against each input's max;
    # "log10p": log10(1 + scale * x) as in musicnn.
    log: str = "db"
    top_db: float | None = 80.0
    scale: float = 10000.0
    center: bool = True


@dataclass
class ModelCard:
    """Everything known about one model, serialised as JSON beside its weights."""

    name: str
    labels: list[str]
    architecture: dict[str, Any]
    audio: AudioParams = field(default_factory=AudioParams)
    mel: MelParams = field(default_factory=MelParams)
    weights: str = ""  # file name of the safetensors weights, relative to the card
    weights_sha256: str = ""
    temperature: float = 1.0  # calibration: logits are divided by this
    members: list[str] = field(default_factory=list)  # ensemble: member card files
    description: str = ""
    license: str = ""
    source: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: CardMetrics = field(default_factory=CardMetrics)  # what was measured (genretag.card.metrics)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.metrics, CardMetrics):
            self.metrics = CardMetrics.from_dict(self.metrics)

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["metrics"] = CardMetrics.from_dict(self.metrics).to_dict()  # also when a plain dict was assigned
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelCard":
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            extra = dict(d.get("extra", {}))
            for k in unknown:
                extra[k] = d.pop(k)
            d["extra"] = extra
        if "name" not in d or "labels" not in d:
            raise ValueError("model card needs at least 'name' and 'labels'")
        for key, kind in (("audio", AudioParams), ("mel", MelParams)):
            if not isinstance(d.get(key, {}), dict):
                raise ValueError(f"'{key}' must be an object")
            d[key] = kind(**d.get(key, {}))
        d.setdefault("architecture", {})
        card = cls(**d)
        card.validate()
        return card

    def validate(self) -> None:
        """Refuse values that would make every file fail later, or reach outside the card's folder.

        Raises ValueError naming the field. A negative or infinite
        `segment_seconds` would otherwise surface as "cannot decode" on every
        file, and a `weights` path with `..` could make genretag read any file.
        """
        a, m = self.audio, self.mel
        if not (isinstance(self.labels, list) and self.labels and all(isinstance(x, str) for x in self.labels)
                and len(set(self.labels)) == len(self.labels)):
            raise ValueError("'labels' must be a non-empty list of distinct strings")
        _number("audio.sample_rate", a.sample_rate, 1000, 768000, integer=True)
        _number("audio.segment_seconds", a.segment_seconds, 0.05, 600)
        _number("audio.max_segments", a.max_segments, 1, 100000, integer=True)
        _number("temperature", self.temperature, 1e-6, 1e6)
        for name in ("n_fft", "hop_length", "n_mels"):
            _number(f"mel.{name}", getattr(m, name), 1, 1 << 16, integer=True)
        _number("mel.fmin", m.fmin, 0, a.sample_rate / 2)
        if m.fmax is not None:
            _number("mel.fmax", m.fmax, m.fmin, a.sample_rate)
        rel = self.weights
        if not isinstance(rel, str) or Path(rel).is_absolute() or ".." in Path(rel).parts or "\\" in rel:
            raise ValueError(f"'weights' must name a file beside the card, not {rel!r}")
        # Members are cards of their own (an ensemble made by `transfer --mode ensemble` names them
        # relative to its folder, never absolute); each is validated, weights included, when it is loaded.
        for rel in self.members:
            if not isinstance(rel, str) or not rel.endswith(".json"):
                raise ValueError(f"'members' must name model cards (*.json), not {rel!r}")
            if Path(rel).is_absolute() or "\\" in rel:
                raise ValueError(f"'members' must name cards by paths relative to the card, not {rel!r}")


def _number(name: str, value: Any, lo: float, hi: float, integer: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value) or not lo <= value <= hi:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"'{name}' must be {kind} from {lo:g} to {hi:g}, not {value!r}")


def load_card(path: str | Path) -> ModelCard:
    """Read and check a model card JSON file; ModelError (one line, naming the file once) if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not a valid model card ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: cannot read the model card ({getattr(e, 'strerror', None) or e.reason})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: not a valid model card (not a JSON object)")
    try:
        return ModelCard.from_dict(data)
    except (ValueError, TypeError) as e:
        raise ModelError(f"{path}: not a valid model card: {one_line(e)}") from None


def save_card(card: ModelCard, path: str | Path) -> None:
    """Write a model card as indented JSON (stable key order for diffs)."""
    Path(path).write_text(json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8")

