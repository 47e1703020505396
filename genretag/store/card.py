"""Model cards: the JSON file beside a model's safetensors weights.

The card is the single source of truth for everything a model needs besides
its weights: the labels, the audio and mel parameters its front-end was
trained with, the architecture to rebuild, and what was measured. Nothing
else in genretag hard-codes a sample rate or a mel setting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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
        d["audio"] = AudioParams(**d.get("audio", {}))
        d["mel"] = MelParams(**d.get("mel", {}))
        d.setdefault("architecture", {})
        return cls(**d)


def load_card(path: str | Path) -> ModelCard:
    """Read a model card JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not a valid model card ({e.msg})") from None
    return ModelCard.from_dict(data)


def save_card(card: ModelCard, path: str | Path) -> None:
    """Write a model card as indented JSON (stable key order for diffs)."""
    Path(path).write_text(json.dumps(card.to_dict(), indent=2) + "\n", encoding="utf-8")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
