"""What `train`, `transfer` and `evaluate` share: scores from sub-track logits, selection on valid,
the temperature, training crops and their augmentations, and running a network over sub-tracks."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from genretag.errors import ConfigError
from genretag.pipeline.segments import cut_at
from genretag.runtime.probabilities import softmax
from genretag.training import metrics
from genretag.training.dataset import Track, WaveCache
from genretag.training.limits import out_of_range

C = TypeVar("C")


def config_from_dict(cls: type[C], d: Any) -> C:
    """A `cls` config (a dataclass) from a mapping of its field names, each value checked against the
    field's type by pydantic, strictly (no "10" for 10, no 1 for true; an int is taken for a float).

    `ConfigError` (one line, naming the key) when `d` is not a mapping, a key is not a field, a
    value has the wrong type, or is outside the range its field carries (training.limits). The check reads the values as JSON, the form a --params file has."""
    import pydantic

    if not isinstance(d, dict):
        raise ConfigError(f"expected a JSON object of {cls.__name__} fields, got {type(d).__name__}")
    try:
        cfg = _adapter(cls).validate_json(json.dumps(d))
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or cls.__name__
        if err["type"] == "unexpected_keyword_argument":
            raise ConfigError(f"unknown key {key!r} (not a {cls.__name__} field)") from None
        raise ConfigError(f"{key}={err.get('input')!r}: {err['msg'][0].lower()}{err['msg'][1:]}") from None
    except (TypeError, ValueError) as e:  # a value JSON cannot hold
        raise ConfigError(f"not JSON values: {e}") from None
    for f in dataclasses.fields(cls):
        if "range" in f.metadata and (msg := out_of_range(f.name, getattr(cfg, f.name), *f.metadata["range"])):
            raise ConfigError(msg)
    return cfg


@functools.cache
def _adapter(cls: type):
    import pydantic

    return pydantic.TypeAdapter(pydantic.with_config(pydantic.ConfigDict(strict=True, extra="forbid"))(cls))


def track_probs(seg_logits: list[np.ndarray], temperature: float = 1.0) -> np.ndarray:
    """(tracks, labels): each track's soft vote (mean sub-track probability) at a temperature."""
    return np.array([softmax(lg / temperature).mean(axis=0) for lg in seg_logits])


def track_score(seg_logits: list[np.ndarray], y: np.ndarray) -> tuple[float, float]:
    """(accuracy, NLL) of the tracks' soft votes against labels `y`: what selection on valid compares."""
    probs = track_probs(seg_logits)
    return metrics.accuracy(y, probs.argmax(axis=1)), metrics.nll(probs, y)


def better(acc: float, nll: float, best: tuple[float, float] | None) -> bool:
    """Selection on valid: a higher track accuracy, ties broken by a lower NLL (`best` None: nothing yet)."""
    return best is None or acc > best[0] or (acc == best[0] and nll < best[1])


def calibrate_temperature(seg_logits: list[np.ndarray], y: np.ndarray) -> float:
    """Temperature minimising the track-level (soft vote) NLL on held-out tracks."""
    best_t, best = 1.0, math.inf
    for t in np.exp(np.linspace(np.log(0.3), np.log(5.0), 60)):
        loss = metrics.nll(track_probs(seg_logits, t), y)
        if loss < best:
            best_t, best = float(t), float(loss)
    return best_t


# ---------------------------------------------------------------------------
# training crops and augmentations
# ---------------------------------------------------------------------------


class CropSampler:
    """Draws random sub-track crops from training tracks, balanced across genres."""

    def __init__(self, tracks: list[Track], labels: list[str], *, caches: list[WaveCache],
                 seg_samples: int, balance: bool, offline_p: float, rng: np.random.Generator) -> None:
        self.tracks, self.caches, self.seg = tracks, caches, seg_samples
        self.offline_p, self.rng = offline_p, rng
        self.y = np.array([labels.index(t.genre) for t in tracks])
        counts = np.bincount(self.y, minlength=len(labels)).astype(float)
        w = 1.0 / counts[self.y] if balance else np.ones(len(tracks))
        self.p = w / w.sum()
        self.idx = [c.index_of() for c in caches]

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        pick = self.rng.choice(len(self.tracks), size=n, p=self.p)
        out = np.zeros((n, self.seg), dtype=np.float32)
        for k, i in enumerate(pick):
            c = 0
            if len(self.caches) > 1 and self.rng.random() < self.offline_p:
                c = int(self.rng.integers(1, len(self.caches)))
            y = self.caches[c].wave(self.idx[c][self.tracks[i].id])
            start = int(self.rng.integers(0, max(1, len(y) - self.seg + 1)))
            out[k] = cut_at(y, [start], self.seg)[0]
        return out, self.y[pick]


def augment_waves(x: np.ndarray, gain_db: float, noise_snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Per example: a random gain within ±`gain_db`, and white noise at an SNR drawn in
    [`noise_snr_db`, `noise_snr_db` + 20] dB (0 switches either off)."""
    n = x.shape[0]
    if gain_db > 0:
        g = 10 ** (rng.uniform(-gain_db, gain_db, size=(n, 1)) / 20)
        x = x * g.astype(np.float32)
    if noise_snr_db > 0:
        snr = rng.uniform(noise_snr_db, noise_snr_db + 20, size=(n, 1))
        power = (x ** 2).mean(axis=1, keepdims=True) + 1e-10
        noise = rng.standard_normal(x.shape).astype(np.float32) * np.sqrt(power / 10 ** (snr / 10)).astype(np.float32)
        x = x + noise
    return x.astype(np.float32)


def mixup(x: torch.Tensor, target: torch.Tensor, *, alpha: float, rng: np.random.Generator,
          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each example (and its soft target) with another of the batch, weight ~ Beta(alpha, alpha); 0: off."""
    if alpha <= 0:
        return x, target
    lam = float(rng.beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * target + (1 - lam) * target[perm]


# ---------------------------------------------------------------------------
# networks over sub-tracks
# ---------------------------------------------------------------------------


def per_track(fn: Callable[[np.ndarray], np.ndarray], segs: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """`fn` over every track's sub-tracks, `batch` rows at a time, split back into one array per track."""
    flat = np.concatenate(segs)
    out = np.concatenate([fn(flat[i:i + batch]) for i in range(0, len(flat), batch)])
    return np.split(out, np.cumsum([len(s) for s in segs])[:-1])


def net_logits(net: torch.nn.Module, segs: list[np.ndarray], device, batch: int) -> list[np.ndarray]:
    """A network's logits for every track's sub-tracks (inference mode; the network's mode is the caller's)."""
    with torch.inference_mode():
        return per_track(lambda x: net(torch.from_numpy(x).to(device)).cpu().numpy(), segs, batch)
