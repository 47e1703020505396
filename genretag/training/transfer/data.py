"""The tracks a transfer run reads: its split (with excerpts, when given), their decoded audio, and the
sub-tracks cut from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from genretag.card import ModelCard
from genretag.nets import musicnn as M
from genretag.pipeline.segments import cut_at
from genretag.training import evaluate as ev
from genretag.training.dataset import Track, WaveCache, labels_of, scan, split, wave_cache
from genretag.training.excerpts import Excerpts, load_excerpts
from genretag.training.transfer.config import TransferConfig


@dataclass
class Data:
    """Tracks by subset; with excerpts also "train_excerpts", "valid_excerpts", "test_excerpts"."""

    parts: dict[str, list[Track]]
    labels: list[str]
    cache: WaveCache  # 16 kHz, every track (and excerpt) of the split
    n_found: int
    split: str = "fault-filtered"
    excerpts: Excerpts | None = None
    augment: str = ""  # "" = the clean decoded audio; "library:K" = training/augment.py's K-th copy

    def y(self, subset: str) -> np.ndarray:
        return np.array([self.labels.index(t.genre) for t in self.parts[subset]], dtype=np.int64)

    def with_excerpts(self, subset: str) -> list[str]:
        """``subset`` and, when there are any, its excerpts: what trains or selects together."""
        return [subset] + ([f"{subset}_excerpts"] if self.parts.get(f"{subset}_excerpts") else [])

    def y_of(self, subsets: list[str]) -> np.ndarray:
        return np.concatenate([self.y(s) for s in subsets])


def load_data(cfg: TransferConfig, sample_rate: int = M.SAMPLE_RATE) -> Data:
    """The split's tracks (and the excerpts of ``cfg.extra``), decoded once at ``sample_rate``."""
    tracks = scan(cfg.data_dir)
    parts = split(tracks, cfg.split, cfg.seed, cfg.fold)
    if not parts["train"] or not parts["valid"]:
        raise ValueError(f"split {cfg.split!r} leaves no train or no valid tracks")
    labels = labels_of(tracks)
    every = parts["train"] + parts["valid"] + parts["test"]
    excerpts = None
    if cfg.extra:
        excerpts = load_excerpts(cfg.extra, tracks, cfg.split)
        unknown = sorted({t.genre for t in excerpts.tracks("train", "valid", "test")} - set(labels))
        if unknown:
            raise ValueError(f"{cfg.extra}: excerpts of genres the data folder lacks: {', '.join(unknown)}")
        for s in ("train", "valid", "test"):
            parts[f"{s}_excerpts"] = excerpts.parts[s]
            every += excerpts.parts[s]
    return Data(parts, labels, wave_cache(every, sample_rate, jobs=cfg.jobs), len(tracks), cfg.split, excerpts)


def train_offsets(n_samples: int, seg: int, n: int) -> list[int]:
    """Start samples of n overlapping crops spread over a track (all 0 for a short track)."""
    if n_samples <= seg:
        return [0]
    return sorted({int(round(o)) for o in np.linspace(0, n_samples - seg, n)})


def subset_segments(data: Data, subset: str, card: ModelCard, dense: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-track sub-track waveforms: the evaluation cut (as classify/evaluate), or `dense` crops."""
    idx = data.cache.index_of()
    a = card.audio
    segs = []
    for t in data.parts[subset]:
        if dense:
            i = idx[t.id]
            segs.append(cut_at(data.cache.wave(i), train_offsets(int(data.cache.lengths[i]), a.segment_samples, dense),
                               a.segment_samples))
        else:
            segs.append(ev.track_segments(data.cache, idx[t.id], a.segment_samples, a.max_segments))
    return segs, data.y(subset)


def library_data(data: Data, subsets: list[str], copy: int, note: Callable[[str], None] = lambda s: None) -> Data:
    """``data`` whose audio is the ``copy``-th library version (training/augment.py) of ``subsets``' tracks."""
    import dataclasses

    from genretag.training.augment import VARIANT_PREFIX, library_cache

    tracks = [t for s in subsets for t in data.parts[s]]
    done = [0]

    def progress(t):
        done[0] += 1
        if done[0] % 100 == 0:
            note(f"  library version {copy}: {done[0]}/{len(tracks)} tracks")

    cache = library_cache(tracks, data.cache, copy, progress=progress)
    return dataclasses.replace(data, cache=cache, augment=f"{VARIANT_PREFIX}{copy}")
