"""GTZAN-layout datasets: finding tracks, the splits, and a decoded-audio cache.

A dataset folder holds `<genre>/<genre>.NNNNN.<ext>` (the original .au, the
common .wav copy or an .mp3 copy). Splits are made by *track* first; the
sub-tracks are cut afterwards, so a track never sits on both sides. The
fault-filtered (artist-aware) lists of Kereliuk, Sturm & Larsen (2015) ship
with the package: they define the benchmark.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from genretag.audio import decode as audio
from genretag.card import GTZAN_GENRES
from genretag.errors import DatasetError
from genretag.paths import cache_dir, numba_cache_dir

_NAME = re.compile(r"^(?P<genre>[a-z0-9_-]+)\.(?P<num>\d+)\.(?P<ext>[A-Za-z0-9]+)$")
SUBSETS = ("train", "valid", "test")


@dataclass(frozen=True)
class Track:
    id: str  # "<genre>/<genre>.NNNNN", as in the split lists
    genre: str
    path: Path


def labels_of(tracks: list[Track]) -> list[str]:
    """A model's labels for these tracks: the ten GTZAN genres when every genre found is one, else those found."""
    present = sorted({t.genre for t in tracks})
    return list(GTZAN_GENRES) if set(present) <= set(GTZAN_GENRES) else present


def scan(data_dir: str | os.PathLike) -> list[Track]:
    """All tracks in a GTZAN-layout folder, sorted by id (one file per id; .wav/.au/.flac before .mp3)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    pref = {".wav": 0, ".au": 1, ".flac": 2, ".aiff": 3, ".ogg": 4, ".mp3": 5}
    found: dict[str, Track] = {}
    for gdir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(gdir.iterdir()):
            m = _NAME.match(f.name)
            if not m or m["genre"] != gdir.name or not audio.is_audio_path(f):
                continue
            tid = f"{gdir.name}/{gdir.name}.{m['num']}"
            old = found.get(tid)
            if old is None or pref.get(f.suffix.lower(), 9) < pref.get(old.path.suffix.lower(), 9):
                found[tid] = Track(tid, gdir.name, f)
    if not found:
        raise DatasetError(f"{root}: no tracks in GTZAN layout (<genre>/<genre>.NNNNN.<ext>)")
    return [found[k] for k in sorted(found)]


def _read_list(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.rsplit(".", 1)[0] if line.endswith((".wav", ".au", ".mp3")) else line)
    return out


def fault_filtered_lists() -> dict[str, list[str]]:
    """The shipped fault-filtered split: subset -> track ids."""
    base = resources.files("genretag") / "data" / "splits"
    return {s: _read_list((base / f"{s}_filtered.txt").read_text()) for s in SUBSETS}


def split(tracks: list[Track], how: str = "fault-filtered", seed: int = 0,
          fold: int = 0) -> dict[str, list[Track]]:
    """Split tracks into train/valid/test.

    - "fault-filtered": the artist-aware lists, restricted to tracks present.
    - "random": stratified 80/10/10 by track (leaks artists: a flagged, secondary number).
    - "kfold:K": stratified K folds by track; `fold` is the test fold, the next one valid.
    """
    if how == "fault-filtered":
        lists = fault_filtered_lists()
        by_id = {t.id: t for t in tracks}
        return {s: [by_id[i] for i in lists[s] if i in by_id] for s in SUBSETS}
    rng = random.Random(seed)
    by_genre: dict[str, list[Track]] = {}
    for t in tracks:
        by_genre.setdefault(t.genre, []).append(t)
    out: dict[str, list[Track]] = {s: [] for s in SUBSETS}
    if how == "random":
        for g in sorted(by_genre):
            ts = sorted(by_genre[g], key=lambda t: t.id)
            rng.shuffle(ts)
            n = len(ts)
            n_test, n_valid = max(1, round(n * 0.1)), max(1, round(n * 0.1))
            out["test"] += ts[:n_test]
            out["valid"] += ts[n_test:n_test + n_valid]
            out["train"] += ts[n_test + n_valid:]
        return out
    m = re.fullmatch(r"kfold:(\d+)", how)
    if m:
        k = int(m[1])
        if k < 3 or not 0 <= fold < k:
            raise DatasetError("kfold needs K >= 3 and 0 <= fold < K")
        for g in sorted(by_genre):
            ts = sorted(by_genre[g], key=lambda t: t.id)
            rng.shuffle(ts)
            for i, t in enumerate(ts):
                f = i % k
                key = "test" if f == fold else "valid" if f == (fold + 1) % k else "train"
                out[key].append(t)
        return out
    raise DatasetError(f"unknown split {how!r} (fault-filtered, random or kfold:K)")


@dataclass
class WaveCache:
    """Decoded tracks at one sample rate in a float16 memory-mapped file.

    Decoding 1000 clips takes minutes on 2 cores; every epoch after the
    first reads this file instead.
    """

    ids: list[str]
    offsets: np.ndarray  # start sample of each track
    lengths: np.ndarray
    data: np.memmap
    sample_rate: int

    def wave(self, i: int) -> np.ndarray:
        o, n = int(self.offsets[i]), int(self.lengths[i])
        return self.data[o:o + n]

    def index_of(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.ids)}


def tracks_key(tracks: list[Track], *params: object) -> str:
    """Cache key for something computed from these files with these parameters.

    Changes when a file is replaced, resized or touched, or a parameter changes.
    """
    h = hashlib.sha256()
    for t in tracks:
        st = t.path.stat()
        h.update(f"{t.id}|{t.path.resolve()}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    h.update("|".join(map(str, params)).encode())
    return h.hexdigest()[:16]


def _decode_one(path: str, sample_rate: int, variant: str) -> np.ndarray:
    y = audio.load(path, sample_rate)
    if variant != "orig":
        y = augment_offline(y, sample_rate, variant)
    return y.astype(np.float16)


def augment_offline(y: np.ndarray, sr: int, variant: str) -> np.ndarray:
    """librosa's pitch shift ('ps+2') or time stretch ('ts1.1'): too slow for every batch, so precomputed."""
    import librosa

    if variant.startswith("ps"):
        return librosa.effects.pitch_shift(y, sr=sr, n_steps=float(variant[2:]))
    if variant.startswith("ts"):
        return librosa.effects.time_stretch(y, rate=float(variant[2:]))
    raise ValueError(f"unknown offline augmentation {variant!r}")


def wave_cache(tracks: list[Track], sample_rate: int, *, variant: str = "orig", jobs: int = 1,
               root: Path | None = None, progress=None) -> WaveCache:
    """Decode `tracks` once into a memory-mapped cache (reused while the files are unchanged)."""
    root = root or cache_dir() / "features"
    key = tracks_key(tracks, sample_rate, variant)
    d = root / key
    meta_f, data_f = d / "index.json", d / "waves.f16"
    if meta_f.exists() and data_f.exists():
        meta = json.loads(meta_f.read_text())
        data = np.memmap(data_f, dtype=np.float16, mode="r")
        return WaveCache(meta["ids"], np.array(meta["offsets"]), np.array(meta["lengths"]), data, sample_rate)
    d.mkdir(parents=True, exist_ok=True)
    if variant != "orig" or jobs > 1:
        os.environ["NUMBA_CACHE_DIR"] = str(numba_cache_dir())  # the decoding workers inherit it
    if jobs > 1:
        from joblib import Parallel, delayed

        gen = Parallel(n_jobs=jobs, return_as="generator")(
            delayed(_decode_one)(str(t.path), sample_rate, variant) for t in tracks)
    else:
        gen = (_decode_one(str(t.path), sample_rate, variant) for t in tracks)
    offsets, lengths = [], []
    tmp = data_f.with_suffix(".tmp")
    pos = 0
    with open(tmp, "wb") as f:
        for t, y in zip(tracks, gen):
            f.write(y.tobytes())
            offsets.append(pos)
            lengths.append(len(y))
            pos += len(y)
            if progress:
                progress(t)
    os.replace(tmp, data_f)
    meta_f.write_text(json.dumps({"ids": [t.id for t in tracks], "offsets": offsets, "lengths": lengths,
                                  "sample_rate": sample_rate, "variant": variant}))
    data = np.memmap(data_f, dtype=np.float16, mode="r")
    return WaveCache([t.id for t in tracks], np.array(offsets), np.array(lengths), data, sample_rate)
