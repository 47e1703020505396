"""Transfer learning from the pretrained musicnn MSD tagger to GTZAN genres.

Four ways to get a genre model out of the tagger, all selected on the valid
split and measured on the test split exactly as `genretag evaluate` would:

- head: embeddings of every sub-track are extracted once with the frozen
  tagger (cached on disk) and a small head (logistic regression or an MLP
  with dropout; AdamW, classes balanced) is trained on them. Pooling set,
  head size and weight decay are chosen on valid.
- finetune: starting from the best head, the trunk is trained too (low LR,
  BatchNorm statistics frozen, random crops + gain + noise, optional mixup);
  by default the front-end convolutions (~90 % of the arithmetic) stay frozen.
- zeroshot: no training at all: MSD tags are mapped to genres by name.
- ensemble: a card averaging members' probabilities (e.g. musicnn + ResNet).

Every model is temperature-calibrated on valid and written with save_model.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genretag.card import ModelCard, load_card, save_card
from genretag.card.metrics import CardMetrics, SubsetMetrics
from genretag.model import Model, load_net, resolve_device
from genretag.nets import musicnn as M
from genretag.paths import cache_dir
from genretag.pipeline.segments import cut_at
from genretag.store.resolve import find_card
from genretag.store.weights import save_model
from genretag.training import evaluate as ev
from genretag.training.common import (
    CropSampler,
    augment_waves,
    better,
    calibrate_temperature,
    config_from_dict,
    mixup,
    net_logits,
    softmax,
    track_score,
)
from genretag.training.dataset import Track, WaveCache, labels_of, scan, split, tracks_key, wave_cache
from genretag.training.excerpts import Excerpts, load_excerpts

# Pooling sets tried for the head (names from genretag.nets.musicnn.POOLABLE).
POOLING_CHOICES: dict[str, list[str]] = {
    "all": list(M.DEFAULT_POOLING),
    "midend": ["timbral", "temporal", "cnn1", "cnn2", "cnn3"],  # musicnn's mean_pool + max_pool
    "penultimate": ["penultimate"],
}

# Zero-shot: MSD tag names -> GTZAN genres. The MSD top-50 has no "classical",
# "disco" or "reggae" tag; "proxy" fills the first two with the closest tags,
# reggae stays empty (never predicted) in both.
ZEROSHOT_MAPPINGS: dict[str, dict[str, list[str]]] = {
    "strict": {
        "blues": ["blues"], "classical": [], "country": ["country"], "disco": [],
        "hiphop": ["Hip-Hop"], "jazz": ["jazz"], "metal": ["metal", "heavy metal"], "pop": ["pop"],
        "reggae": [], "rock": ["rock", "classic rock", "hard rock"],
    },
    "proxy": {
        "blues": ["blues"], "classical": ["instrumental", "ambient", "easy listening"],
        "country": ["country"], "disco": ["dance", "funk", "70s"], "hiphop": ["Hip-Hop", "rnb"],
        "jazz": ["jazz"], "metal": ["metal", "heavy metal"], "pop": ["pop"], "reggae": [],
        "rock": ["rock", "classic rock", "hard rock", "alternative rock"],
    },
}


@dataclass
class TransferConfig:
    """Everything a transfer run depends on; saved with the run and in the model card."""

    data_dir: str = ""
    out: str = "runs/transfer"
    name: str = "gtzan-musicnn"
    mode: str = "head"  # head | finetune | zeroshot
    base_model: str = "msd-musicnn"  # the tagger whose trunk is reused
    freq_stride: int = 1  # front-end mel stride (musicnn.MusicnnNet.set_freq_stride): speed vs. fidelity
    split: str = "fault-filtered"
    fold: int = 0
    seed: int = 0
    extra: str = ""  # excerpts folder (training/excerpts.py): its train (+ valid) excerpts train, valid selects
    extra_repeat: list[int] = field(default_factory=lambda: [1])  # each excerpt embedding counts N times (grid)
    # library versions (training/augment.py) of every training track added beside the clean ones (grid;
    # 0 = none): compression + loudness, EQ tilt, MP3 round trip, drawn per track and copy
    augment_copies: list[int] = field(default_factory=lambda: [0])
    heads: list[int] = field(default_factory=lambda: [1])  # head bag sizes tried on valid (seeds seed..seed+n-1)
    # head (grid searched on valid)
    poolings: list[str] = field(default_factory=lambda: ["all", "midend", "penultimate"])
    hidden: list[int] = field(default_factory=lambda: [0, 256])
    weight_decays: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0])  # AdamW (decoupled)
    head_dropout: float = 0.5
    head_epochs: int = 60
    head_lr: float = 1e-3
    head_batch: int = 128
    label_smoothing: float = 0.1
    refit: bool = False  # after selection on valid: train the chosen head again on train + valid
    # zero-shot prior: head logits + w * log(zero-shot score) of the MSD tags; w (0 = none) and the
    # mapping (zeroshot_mappings) chosen on valid after the head
    prior_weights: list[float] = field(default_factory=lambda: [0.0])
    # the prior inside training: each (mapping, weight > 0) is added to the head's logits in its loss,
    # so the head learns what to add to the prior; mapping and weight join the head grid
    prior_in_training: bool = False
    train_crops: int = 19  # embeddings per training track (overlapping crops; 10 eval sub-tracks elsewhere)
    # finetune
    epochs: int = 8
    crops_per_track: int = 4  # random crops per training track per epoch
    batch_size: int = 16
    lr: float = 1e-4  # trunk (the head gets 10x)
    weight_decay: float = 1e-2
    finetune_from: str = "midend"  # front | midend | backend: first trainable trunk stage
    aug_gain_db: float = 6.0
    aug_noise_snr_db: float = 30.0
    aug_mixup: float = 0.0
    from_head: str = ""  # finetune: start from this head model's card instead of training one
    # zeroshot
    zeroshot_mappings: list[str] = field(default_factory=lambda: ["strict", "proxy"])
    zeroshot_aggs: list[str] = field(default_factory=lambda: ["max", "mean"])
    half_weights: bool = True
    device: str = "auto"
    jobs: int = 1
    command: str = ""  # the command line that started the run, recorded in the card (the CLI passes its own)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransferConfig":
        """From a mapping of field names (e.g. a --params file); `ConfigError` naming a bad key or value."""
        return config_from_dict(cls, d)


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# (a) frozen embeddings, extracted once and cached
# ---------------------------------------------------------------------------


@torch.inference_mode()
def extract_embeddings(tagger: M.MusicnnTagger, segs: list[np.ndarray], device, batch: int = 32,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """All pooled embeddings (+ 'tag_logits') of every sub-track, rows in track order, plus 'track'."""
    flat = np.concatenate(segs)
    out: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(flat), batch):
        x = torch.from_numpy(flat[s:s + batch]).to(device)
        logits, emb = M.trunk_outputs(tagger, M.musicnn_frontend(x))
        emb["tag_logits"] = logits
        for k, v in emb.items():
            if k in ("mean_pool", "max_pool"):
                continue  # = the per-layer pieces, concatenated
            out.setdefault(k, []).append(v.float().cpu().numpy())
        if progress:
            progress(min(s + batch, len(flat)), len(flat))
    res = {k: np.concatenate(v) for k, v in out.items()}
    res["track"] = np.concatenate([np.full(len(s), i) for i, s in enumerate(segs)])
    return res


def trunk_digest(net: torch.nn.Module) -> str:
    """sha256 of the weights a trunk computes with (the cache key of its embeddings)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def as_stored(net: torch.nn.Module, half: bool) -> torch.nn.Module:
    """The trunk with the weights its genre model will be stored with (float16 unless --full-precision).

    The embeddings a head trains on are then the ones the saved model computes. Rounding also
    makes the MSD tagger's dead front-end filters (|w| < 6e-8) exactly zero, which the
    live-filter convolution skips: extraction is ~5x faster.
    """
    if half:
        with torch.no_grad():
            for t in net.state_dict().values():
                if t.is_floating_point():
                    t.copy_(t.half().float())
    return net


def cached_embeddings(data: Data, subset: str, tagger: M.MusicnnTagger, base_card: ModelCard, device,
                      dense: int = 0, note: Callable[[str], None] = lambda s: None) -> dict[str, np.ndarray]:
    """Embeddings of a subset's sub-tracks, from <cache>/transfer/<key>.npz when already computed."""
    tracks = data.parts[subset]
    a = base_card.audio
    scheme = f"{a.sample_rate}|{a.segment_samples}|{a.max_segments}|dense{dense}"
    if getattr(tagger, "freq_stride", 1) != 1:
        scheme += f"|stride{tagger.freq_stride}"
    if data.augment:
        scheme += f"|{data.augment}"
    key = tracks_key(tracks, trunk_digest(tagger), scheme, "v2")
    f = cache_dir() / "transfer" / f"{key}.npz"
    if f.exists():
        with np.load(f) as z:
            return {k: z[k] for k in z.files}
    segs, _ = subset_segments(data, subset, base_card, dense)
    n = sum(len(s) for s in segs)
    note(f"extracting musicnn embeddings: {subset}, {len(tracks)} tracks, {n} sub-tracks (once; cached)")
    t0 = time.time()
    emb = extract_embeddings(tagger, segs, device)
    note(f"  {n} sub-tracks in {time.time() - t0:.0f} s")
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f.stem + ".tmp.npz")
    np.savez(tmp, **emb)
    os.replace(tmp, f)
    return emb


def merged_embeddings(data: Data, subsets: list[str], tagger: M.MusicnnTagger, base_card: ModelCard, device,
                      dense: int = 0, note: Callable[[str], None] = lambda s: None,
                      repeat_excerpts: int = 1) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Embeddings of several subsets stacked (track numbers continue across them) and the labels per track.

    ``repeat_excerpts``: each excerpt's row appears that many times (an excerpt gives one
    embedding where a track gives ``dense``; repeating weights it up in training).
    """
    parts, offset = [], 0
    for s in subsets:
        emb = cached_embeddings(data, s, tagger, base_card, device, dense=dense, note=note)
        if s.endswith("_excerpts") and repeat_excerpts > 1:
            emb = {key: np.repeat(v, repeat_excerpts, axis=0) for key, v in emb.items()}
        parts.append(dict(emb, track=emb["track"] + offset))
        offset += len(data.parts[s])
    merged = {k: np.concatenate([e[k] for e in parts]) for k in parts[0]}
    return merged, data.y_of(subsets)


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


def augmented_embeddings(data: Data, subsets: list[str], copies: int, tagger: M.MusicnnTagger, base_card: ModelCard,
                         device, dense: int = 0, note: Callable[[str], None] = lambda s: None,
                         repeat_excerpts: int = 1) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """merged_embeddings of the clean tracks followed by ``copies`` library versions of them (labels repeated).

    Each subset's library versions are cached on their own, so a refit on train + valid reuses train's."""
    emb, y = merged_embeddings(data, subsets, tagger, base_card, device, dense, note, repeat_excerpts)
    parts, ys = [emb], [y]
    for k in range(max(0, copies)):
        for s in subsets:
            e, yk = merged_embeddings(library_data(data, [s], k, note), [s], tagger, base_card, device, dense,
                                      note, repeat_excerpts)
            parts.append(dict(e, track=e["track"] + sum(len(v) for v in ys)))
            ys.append(yk)
    return {k: np.concatenate([p[k] for p in parts]) for k in emb}, np.concatenate(ys)


# ---------------------------------------------------------------------------
# (b) the head on frozen embeddings
# ---------------------------------------------------------------------------


def track_metrics(seg_logits: list[np.ndarray], y: np.ndarray, labels: list[str], tracks: list[Track],
                  temperature: float = 1.0) -> dict:
    """ev.report on per-track sub-track logits (softmax of logits / temperature)."""
    pred = ev.Predictions(tracks, labels, [softmax(lg / temperature) for lg in seg_logits])
    return ev.report(pred)


def _split_rows(values: np.ndarray, track: np.ndarray, n_tracks: int) -> list[np.ndarray]:
    return [values[track == i] for i in range(n_tracks)]


def _valid_row(settings: dict[str, Any], seg_logits: list[np.ndarray], y: np.ndarray, labels: list[str],
               tracks: list[Track]) -> dict[str, Any]:
    """A grid row: the settings tried, with the valid tracks' soft-vote accuracy and NLL under them."""
    rep = track_metrics(seg_logits, y, labels, tracks)
    return {**settings, "valid_acc": rep["accuracy"]["soft"], "valid_nll": rep["nll"]}


def _score(row: dict) -> tuple[float, float]:
    """A grid row's valid (accuracy, NLL), as `better` compares them."""
    return row["valid_acc"], row["valid_nll"]


@dataclass
class HeadResult:
    pooling: str
    hidden: int
    weight_decay: float
    valid_acc: float
    valid_nll: float
    epoch: int
    state: dict
    extra_repeat: int = 1
    augment_copies: int = 0
    prior: tuple[str, float] | None = None  # (mapping, weight) the head was trained on top of


@dataclass(frozen=True)
class HeadSpec:
    """The head to train: how many genres, its hidden width (0: linear) and its weight decay."""

    n_classes: int
    hidden: int
    weight_decay: float


@dataclass(frozen=True)
class ValidRows:
    """Valid embeddings (one row per sub-track), the track of each row, and each track's genre:
    a head is scored on valid by the tracks' soft votes, as `classify` answers."""

    x: np.ndarray
    track: np.ndarray
    y: np.ndarray
    offset: np.ndarray | None = None


def train_head(xtr: np.ndarray, ytr: np.ndarray, spec: HeadSpec, cfg: TransferConfig,
               valid: ValidRows | None = None, stop_epoch: int | None = None, offset: np.ndarray | None = None
               ) -> tuple[M.GenreHead, float, float, int]:
    """Train one head on train embeddings; keep the epoch with the best valid track accuracy (then NLL).

    Without `valid` there is nothing to select on: the head trains on the same cosine schedule
    and stops at ``stop_epoch`` (a refit on more data with an epoch chosen earlier on valid);
    accuracy and NLL are then returned as NaN.

    ``offset`` (one row of genre logits per training row, and ``valid.offset`` per valid row) is
    added to the head's logits in the loss and in the valid score: the head then learns what to
    add to a fixed prior (the zero-shot tags, already weighted), and weight decay pulls it toward
    the prior rather than toward uniform.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only spin (and fight other jobs)
    try:
        return _train_head(xtr, ytr, spec, cfg, valid, stop_epoch, offset)
    finally:
        torch.set_num_threads(threads)


def _train_head(xtr: np.ndarray, ytr: np.ndarray, spec: HeadSpec, cfg: TransferConfig, valid: ValidRows | None,
                stop_epoch: int | None, offset: np.ndarray | None = None) -> tuple[M.GenreHead, float, float, int]:
    n_classes, weight_decay = spec.n_classes, spec.weight_decay
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    head = M.GenreHead(xtr.shape[1], n_classes, spec.hidden, cfg.head_dropout)
    head.set_standardisation(xtr.mean(0), xtr.std(0))
    counts = np.bincount(ytr, minlength=n_classes).astype(np.float64)
    cw = torch.tensor(np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max(1, (counts > 0).sum()), 0.0),
                      dtype=torch.float32)  # balanced classes
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_lr, weight_decay=weight_decay)
    X, Y = torch.from_numpy(xtr), torch.from_numpy(ytr).long()
    off = None if offset is None else torch.from_numpy(np.asarray(offset, np.float32))
    if off is not None and off.shape != (len(X), n_classes):
        raise ValueError(f"offset is {tuple(off.shape)}, not one row of {n_classes} logits per training row")
    last = cfg.head_epochs if stop_epoch is None else min(stop_epoch, cfg.head_epochs)
    best = (-1.0, math.inf, 0, None)
    steps_per_epoch = max(1, math.ceil(len(X) / cfg.head_batch))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.head_epochs * steps_per_epoch)
    for epoch in range(1, last + 1):
        head.train()
        perm = torch.randperm(len(X), generator=gen)
        for s in range(0, len(X), cfg.head_batch):
            b = perm[s:s + cfg.head_batch]
            out = head(X[b]) if off is None else head(X[b]) + off[b]
            loss = F.cross_entropy(out, Y[b], weight=cw, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if valid is None or (epoch % 5 and epoch != last):
            continue
        head.eval()
        with torch.no_grad():
            lv = head(torch.from_numpy(valid.x)).numpy()
        if valid.offset is not None:
            lv = lv + valid.offset
        acc, nll = track_score(_split_rows(lv, valid.track, len(valid.y)), valid.y)
        if better(acc, nll, best[:2] if best[3] is not None else None):
            best = (acc, nll, epoch, copy.deepcopy(head.state_dict()))
    if valid is None:
        head.eval()
        return head, math.nan, math.nan, last
    head.load_state_dict(best[3])
    head.eval()
    return head, best[0], best[1], best[2]


def fit_head(emb_tr: dict, emb_va: dict, y_tr_tracks: np.ndarray, y_va: np.ndarray, n_classes: int,
             cfg: TransferConfig, note: Callable[[str], None],
             offsets: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[HeadResult, list[dict]]:
    """Grid over pooling x hidden x weight decay; the best on valid (accuracy, then NLL).

    ``offsets``: (train rows, valid rows) of a fixed prior the heads are trained and scored on top of
    (see `train_head`)."""
    off_tr, off_va = offsets or (None, None)
    ytr = y_tr_tracks[emb_tr["track"]]
    grid = []
    best: HeadResult | None = None
    for pname in cfg.poolings:
        pooling = POOLING_CHOICES[pname]
        xtr = M.pool_embeddings(emb_tr, pooling).astype(np.float32)
        xva = M.pool_embeddings(emb_va, pooling).astype(np.float32)
        for hidden in cfg.hidden:
            for wd in cfg.weight_decays:
                head, acc, nll, ep = train_head(xtr, ytr, HeadSpec(n_classes, hidden, wd), cfg,
                                                ValidRows(xva, emb_va["track"], y_va, off_va), offset=off_tr)
                row = {"pooling": pname, "hidden": hidden, "weight_decay": wd, "valid_acc": acc,
                       "valid_nll": nll, "epoch": ep}
                grid.append(row)
                note(f"  head pooling={pname:<11} hidden={hidden:<4} wd={wd:<6g} valid acc {acc:.1%} nll {nll:.3f} (epoch {ep})")
                if better(acc, nll, None if best is None else (best.valid_acc, best.valid_nll)):
                    best = HeadResult(pname, hidden, wd, acc, nll, ep, head.state_dict())
    assert best is not None
    return best, grid


# ---------------------------------------------------------------------------
# model cards
# ---------------------------------------------------------------------------


def transfer_card(cfg: TransferConfig, base: ModelCard, labels: list[str], pooling: str, hidden: int,
                  finetune: bool) -> ModelCard:
    card = ModelCard(
        name=cfg.name, labels=labels,
        architecture={"name": "musicnn-transfer", "pooling": POOLING_CHOICES[pooling],
                      "head": {"hidden": hidden, "dropout": cfg.head_dropout}, "finetune": finetune,
                      "trunk_classes": len(base.labels), "trunk": base.name,
                      "freq_stride": cfg.freq_stride},
        audio=copy.deepcopy(base.audio), mel=copy.deepcopy(base.mel),
        description=("GTZAN genre classifier: the pretrained musicnn MSD tagger's trunk "
                     + ("fine-tuned" if finetune else "frozen")
                     + f" + a {'MLP' if hidden else 'logistic-regression'} head on "
                     f"mean+max pooled embeddings ({pooling}); trained with `genretag transfer`."),
        license=base.license, source=f"trunk: {base.source}",
    )
    return card


def measure(ln: Model, data: Data, subsets=("valid", "test", "valid_excerpts", "test_excerpts")) -> CardMetrics:
    """Metrics of a saved (reloaded) model, cut and voted exactly as `genretag evaluate` does.

    Excerpts are measured apart from the tracks ("test_excerpts": one sub-track each)."""
    out = CardMetrics()
    for s in subsets:
        tracks = data.parts.get(s)
        if not tracks:
            continue
        cache = data.cache if data.cache.sample_rate == ln.card.audio.sample_rate else None
        rep = ev.report(ev.predict_tracks([ln], tracks, cache))
        key = "test_random_split_leaky" if s == "test" and data.split == "random" else s
        out[key] = SubsetMetrics.from_report(rep)
    return out


def _finish(net: torch.nn.Module, card: ModelCard, cfg: TransferConfig, data: Data, valid_seg_logits,
            extra_training: dict, note: Callable[[str], None], half: bool | None = None) -> Path:
    """Calibrate on valid, save, reload from disk and measure valid/test; write metrics to the card."""
    card.temperature = calibrate_temperature(valid_seg_logits, data.y_of(data.with_excerpts("valid")))
    note(f"temperature {card.temperature:.3f} (calibrated on valid)")
    card.training = {
        "data": f"GTZAN ({data.n_found} tracks present in the data folder)",
        "split": cfg.split, "n_train_tracks": len(data.parts["train"]),
        "n_valid_tracks": len(data.parts["valid"]), "n_test_tracks": len(data.parts["test"]),
        **extra_training, "command": cfg.command, "config": asdict(cfg),
    }
    if data.excerpts is not None:
        card.training["excerpts"] = data.excerpts.describe(("train", "valid") if "refit" in extra_training
                                                           else ("train",))
    out = Path(cfg.out)
    cpath = save_model(net, card, out, half=cfg.half_weights if half is None else half)
    ln = load_net(cpath, cfg.device)  # what users get: the stored (float16) weights
    card.metrics = measure(ln, data)
    if "refit" in extra_training:  # not held out: never a headline number
        for s in ("valid", "valid_excerpts"):
            if s in card.metrics:
                card.metrics[f"{s}_seen_in_training"] = card.metrics.pop(s)
    save_card(card, cpath)
    return cpath


# ---------------------------------------------------------------------------
# head / finetune / zeroshot / ensemble
# ---------------------------------------------------------------------------


def _load_tagger(cfg: TransferConfig, device) -> tuple[M.MusicnnTagger, ModelCard]:
    ln = load_net(cfg.base_model, "cpu")
    if ln.card.architecture.get("name") != "musicnn":
        raise ValueError(f"--base-model must be a musicnn tagger card, not {ln.card.architecture.get('name')!r}")
    ln.net.set_freq_stride(cfg.freq_stride)
    return as_stored(ln.net, cfg.half_weights).to(device).eval(), ln.card


def run_head(cfg: TransferConfig, note: Callable[[str], None] = lambda s: None,
             data: Data | None = None) -> tuple[Path, M.MusicnnTransfer, Data]:
    """(a)+(b): cached embeddings, head grid on valid, save; returns (card path, network, data)."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    tagger, base = _load_tagger(cfg, device)
    priors: list[tuple[str, float] | None] = [None]
    if cfg.prior_in_training:
        _require_msd_tags(base)
        priors = [(m, w) for m in cfg.zeroshot_mappings for w in cfg.prior_weights if w > 0]
        if not priors:
            raise ValueError("--prior-in-training needs --prior-weight with a weight above 0")
    data = data or load_data(cfg, base.audio.sample_rate)
    note(f"{data.n_found} tracks found; split {cfg.split}: "
         + ", ".join(f"{k} {len(v)}" for k, v in data.parts.items()))
    if data.excerpts is not None:
        note("excerpts: " + ", ".join(f"{k} {v}" for k, v in data.excerpts.counts().items())
             + " (test excerpts held out, measured apart)")
    emb_va, y_va = merged_embeddings(data, data.with_excerpts("valid"), tagger, base, device, note=note)
    va_offsets = {pr: prior_offset(emb_va, data.labels, *pr) for pr in priors if pr is not None}
    best, grid, emb_tr, best_offsets = None, [], None, None
    for copies in cfg.augment_copies:
        for repeat in cfg.extra_repeat if data.excerpts is not None else [1]:
            if copies:
                note(f"training data + {copies} library version(s) of every training track")
            e_tr, y_tr = augmented_embeddings(data, data.with_excerpts("train"), copies, tagger, base, device,
                                              dense=cfg.train_crops, note=note, repeat_excerpts=repeat)
            for pr in priors:
                offsets = None if pr is None else (prior_offset(e_tr, data.labels, *pr), va_offsets[pr])
                if pr is not None:
                    note(f"heads trained on top of the zero-shot prior '{pr[0]}' x {pr[1]:g}")
                res, g = fit_head(e_tr, emb_va, y_tr, y_va, len(data.labels), cfg, note, offsets)
                res.extra_repeat, res.augment_copies, res.prior = repeat, copies, pr
                tag = ({"extra_repeat": repeat} if data.excerpts is not None else {}) | (
                    {"augment_copies": copies} if cfg.augment_copies != [0] else {}) | (
                    {"prior_mapping": pr[0], "prior_weight": pr[1]} if pr is not None else {})
                grid += [dict(row, **tag) for row in g]
                if better(res.valid_acc, res.valid_nll, None if best is None else (best.valid_acc, best.valid_nll)):
                    best, emb_tr, y_tr_best, best_offsets = res, e_tr, y_tr, offsets
    note(f"best head: pooling {best.pooling}, hidden {best.hidden}, weight decay {best.weight_decay:g}: "
         f"valid acc {best.valid_acc:.1%}")
    pooling = POOLING_CHOICES[best.pooling]
    states, epochs, bag_grid = choose_bag(best, emb_tr, y_tr_best, emb_va, y_va, len(data.labels), cfg, note,
                                          best_offsets)
    card = transfer_card(cfg, base, data.labels, best.pooling, best.hidden, finetune=False)
    if len(states) > 1:
        card.architecture["head"]["n"] = len(states)
        card.description += f" The head is the mean of {len(states)} heads trained from different seeds."
    net = M.MusicnnTransfer(len(data.labels), pooling, best.hidden, cfg.head_dropout,
                            len(base.labels), cfg.freq_stride, n_heads=len(states))
    net.trunk.load_state_dict(tagger.state_dict())
    _load_heads(net, states)
    net.eval()
    # valid logits for calibration from the cached embeddings (same numbers as the network's)
    with torch.no_grad():
        lv = net.head(torch.from_numpy(M.pool_embeddings(emb_va, pooling).astype(np.float32))).numpy()
    valid_logits = _split_rows(lv, emb_va["track"], len(y_va))
    prior, prior_grid = None, []
    if best.prior is not None:  # trained on top of it: the prior is part of the head
        prior = prior_card(*best.prior)
        valid_logits = _split_rows(lv + best_offsets[1], emb_va["track"], len(y_va))
    elif any(w > 0 for w in cfg.prior_weights) and not cfg.prior_in_training:
        prior, valid_logits, prior_grid = choose_prior(lv, emb_va, y_va, data, base, cfg, note)
    if prior is not None:
        card.architecture["prior"] = prior
        card.description += (f" A zero-shot prior (MSD tags mapped to genres, '{prior['mapping_name']}', "
                             f"weight {prior['weight']:g}) is added to the head's logits"
                             + (", and the head was trained on top of it." if best.prior else "."))
        net.set_prior(prior, data.labels)
    selected = {"pooling": best.pooling, "hidden": best.hidden, "weight_decay": best.weight_decay,
                "epoch": best.epoch, "valid_accuracy_before_calibration": best.valid_acc}
    if cfg.augment_copies != [0]:
        selected["augment_copies"] = best.augment_copies
    if best.prior is not None:
        selected["prior_in_training"] = {"mapping": best.prior[0], "weight": best.prior[1]}
    if bag_grid:
        selected["heads"] = len(states)
        selected["head_epochs"] = epochs
        selected["bag_grid"] = bag_grid
    if data.excerpts is not None:
        selected["extra_repeat"] = best.extra_repeat
        selected["selected_on"] = "valid tracks and valid excerpts, pooled (each excerpt counts as one track)"
    extra: dict[str, Any] = {}
    if cfg.refit:
        extra = {"refit": _refit_head(net, best, epochs, data, tagger, base, device, cfg, note)}
        card.description += " Refitted on train + valid after selection on valid."
    if prior_grid:
        selected["prior_grid"] = prior_grid
    if best.augment_copies:
        from genretag.training.augment import describe

        extra["augmentation"] = describe(best.augment_copies)
    cpath = _finish(net, card, cfg, data, valid_logits,
                    {"mode": "head", "head_grid": grid, "selected": selected,
                     "n_train_embeddings": int(len(emb_tr["track"])), **extra}, note)
    return cpath, net, data


def _refit_head(net: M.MusicnnTransfer, best: HeadResult, epochs: list[int], data: Data, tagger: M.MusicnnTagger,
                base: ModelCard, device, cfg: TransferConfig, note: Callable[[str], None]) -> dict[str, Any]:
    """Train the selected head(s) again on train + valid (valid's dense crops and library versions, as
    train's), with the same recipe and epoch counts, into `net`; returns the card's record of it.

    The temperature stays the one the train-only head got on valid: nothing held out is left."""
    emb_fit, y_fit = augmented_embeddings(data, data.with_excerpts("train") + data.with_excerpts("valid"),
                                          best.augment_copies, tagger, base, device, dense=cfg.train_crops,
                                          note=note, repeat_excerpts=best.extra_repeat)
    x = M.pool_embeddings(emb_fit, POOLING_CHOICES[best.pooling]).astype(np.float32)
    y = y_fit[emb_fit["track"]]
    spec = HeadSpec(len(data.labels), best.hidden, best.weight_decay)
    offset = None if best.prior is None else prior_offset(emb_fit, data.labels, *best.prior)
    refits = [train_head(x, y, spec, _with_seed(cfg, cfg.seed + j), stop_epoch=ep, offset=offset)[0].state_dict()
              for j, ep in enumerate(epochs)]
    _load_heads(net, refits)
    note(f"refit the selected head(s) on train + valid ({len(x)} embeddings, {epochs} epochs)")
    return {"on": ["train", "valid"], "epochs": best.epoch if len(epochs) == 1 else epochs,
            "n_embeddings": int(len(x)), "temperature_from": "the train-only head, calibrated on valid",
            "note": "valid was used for training: its metrics are not held-out"}


def _with_seed(cfg: TransferConfig, seed: int) -> TransferConfig:
    return replace(cfg, seed=seed)


def _load_heads(net: M.MusicnnTransfer, states: list[dict]) -> None:
    if len(states) == 1:
        net.head.load_state_dict(states[0])
    else:
        for h, st in zip(net.head.heads, states):
            h.load_state_dict(st)


def choose_bag(best: HeadResult, emb_tr: dict, y_tr_tracks: np.ndarray, emb_va: dict, y_va: np.ndarray,
               n_classes: int, cfg: TransferConfig, note: Callable[[str], None],
               offsets: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[list[dict], list[int], list[dict]]:
    """Head bag size (cfg.heads) on valid: the chosen head's recipe trained again from seeds seed+1, ...

    Each extra head keeps its own best valid epoch; the bag's logits are the heads' mean.
    Returns (head states, their epochs, the grid; empty when only one size is tried)."""
    sizes = sorted(set(cfg.heads))
    if sizes == [1]:
        return [best.state], [best.epoch], []
    pooling = POOLING_CHOICES[best.pooling]
    xtr = M.pool_embeddings(emb_tr, pooling).astype(np.float32)
    ytr = y_tr_tracks[emb_tr["track"]]
    xva = torch.from_numpy(M.pool_embeddings(emb_va, pooling).astype(np.float32))
    off_tr, off_va = offsets or (None, None)
    states, epochs, logits = [best.state], [best.epoch], []
    for j in range(1, max(sizes)):
        h, acc, nll, ep = train_head(xtr, ytr, HeadSpec(n_classes, best.hidden, best.weight_decay),
                                     _with_seed(cfg, cfg.seed + j),
                                     ValidRows(xva.numpy(), emb_va["track"], y_va, off_va),
                                     offset=off_tr)
        note(f"  head seed {cfg.seed + j}: valid acc {acc:.1%} nll {nll:.3f} (epoch {ep})")
        states.append(h.state_dict())
        epochs.append(ep)
    for st in states:
        h = M.GenreHead(xva.shape[1], n_classes, best.hidden, cfg.head_dropout)
        h.load_state_dict(st)
        with torch.no_grad():
            logits.append(h.eval()(xva).numpy())
    grid, pick = [], None
    for k in sizes:
        bag = np.mean(logits[:k], axis=0)
        acc, nll = track_score(_split_rows(bag if off_va is None else bag + off_va, emb_va["track"], len(y_va)), y_va)
        grid.append({"heads": k, "valid_acc": acc, "valid_nll": nll})
        note(f"  bag of {k} head(s): valid acc {acc:.1%} nll {nll:.3f}")
        if better(acc, nll, None if pick is None else pick[1:]):
            pick = (k, acc, nll)
    k = pick[0]
    return states[:k], epochs[:k], grid


def prior_offset(emb: dict, labels: list[str], mapping: str, weight: float) -> np.ndarray:
    """``weight`` x the zero-shot prior of each embedding row's MSD tags: what the network adds to its
    head's logits when the card has that prior (MusicnnTransfer.logits_from)."""
    m = M.zeroshot_matrix(labels, ZEROSHOT_MAPPINGS[mapping], M.MSD_TAGS)
    return (weight * M.zeroshot_prior(torch.from_numpy(emb["tag_logits"]), m)).numpy().astype(np.float32)


def _require_msd_tags(base: ModelCard) -> None:
    if tuple(base.labels) != M.MSD_TAGS:
        raise ValueError("the zero-shot prior maps MSD tags: use it with an MSD tagger trunk")


def prior_card(mapping: str, weight: float) -> dict[str, Any]:
    """The card's ``architecture.prior`` for a zero-shot prior."""
    return {"mapping": ZEROSHOT_MAPPINGS[mapping], "mapping_name": mapping, "agg": "max", "weight": weight}


def choose_prior(head_logits: np.ndarray, emb_va: dict, y_va: np.ndarray, data: Data, base: ModelCard,
                 cfg: TransferConfig, note: Callable[[str], None]) -> tuple[dict | None, list[np.ndarray], list[dict]]:
    """Blend weight and mapping of the zero-shot prior, chosen on valid (weight 0: no prior).

    Returns (the card's ``prior`` or None, the chosen valid sub-track logits, the grid)."""
    _require_msd_tags(base)
    tracks = [t for s in data.with_excerpts("valid") for t in data.parts[s]]
    weights = sorted({0.0, *cfg.prior_weights})
    grid, best = [], None
    for mname in cfg.zeroshot_mappings:
        zl = prior_offset(emb_va, data.labels, mname, 1.0)
        for w in weights:
            seg = _split_rows(head_logits + w * zl, emb_va["track"], len(y_va))
            row = _valid_row({"mapping": mname, "weight": w}, seg, y_va, data.labels, tracks)
            grid.append(row)
            note(f"  prior mapping={mname:<6} weight={w:<5g} valid acc {row['valid_acc']:.1%} nll {row['valid_nll']:.3f}")
            if better(row["valid_acc"], row["valid_nll"], None if best is None else _score(best[0])):
                best = (row, seg)
    row, seg = best
    if row["weight"] == 0:
        return None, seg, grid
    return prior_card(row["mapping"], row["weight"]), seg, grid


def _set_trainable(net: M.MusicnnTransfer, start: str) -> list[torch.nn.Parameter]:
    """Freeze the trunk before stage `start` (front | midend | backend); returns the trunk params to train."""
    t = net.trunk
    stages = {"front": [t.bn_input, t.timbral, t.temporal], "midend": [t.midend],
              "backend": [t.bn_pool, t.dense, t.bn_dense]}
    order = ["front", "midend", "backend"]
    if start not in order:
        raise ValueError(f"unknown --finetune-from {start!r} (front, midend or backend)")
    for p in t.parameters():
        p.requires_grad_(False)
    trainable = []
    for s in order[order.index(start):]:
        for m in stages[s]:
            for p in m.parameters():
                p.requires_grad_(True)
                trainable.append(p)
    return trainable


def run_finetune(cfg: TransferConfig, note: Callable[[str], None] = lambda s: None,
                 on_epoch: Callable[[dict], None] | None = None) -> Path:
    """(c): fine-tune trunk + head from the best head, select on valid (epoch 0 = the head alone)."""
    device = resolve_device(cfg.device)
    start = _finetune_start(cfg, note)
    cfg = start.cfg
    data = start.data
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = start.net.float().to(device)
    trunk_params = _set_trainable(net, cfg.finetune_from)
    frozen_front = cfg.finetune_from != "front"
    card = transfer_card(cfg, start.base, data.labels, start.pooling, start.hidden, finetune=True)
    valid = _FinetuneValid(net, data, card, device, frozen_front)

    lg = valid.logits()
    best_acc, best_nll = valid.score(lg)
    best_state, best_epoch, best_lg = copy.deepcopy(net.state_dict()), 0, lg
    note(f"epoch   0 (head only)  valid acc {best_acc:.1%} nll {best_nll:.3f}")
    history = [{"epoch": 0, "train_loss": None, "valid_acc": best_acc, "valid_nll": best_nll, "seconds": 0.0}]

    train_tracks = [t for s in data.with_excerpts("train") for t in data.parts[s]]
    sampler = CropSampler(train_tracks, data.labels, [data.cache], card.audio.segment_samples, True, 0.0, rng)
    steps = max(1, math.ceil(cfg.crops_per_track * len(train_tracks) / cfg.batch_size))
    opt, sched = _finetune_optimiser(net, trunk_params, cfg, steps)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.time()
        loss = _finetune_epoch(net, sampler, opt, sched, cfg, rng, gen, device, frozen_front, steps,
                               len(data.labels))
        lg = valid.logits()
        acc, nll = valid.score(lg)
        log = {"epoch": epoch, "train_loss": loss, "valid_acc": acc, "valid_nll": nll, "seconds": time.time() - t0}
        history.append(log)
        note(f"epoch {epoch:3d}  train loss {loss:.3f}  valid acc {acc:.1%} nll {nll:.3f}  ({log['seconds']:.0f} s)")
        if on_epoch:
            on_epoch(log)
        if better(acc, nll, (best_acc, best_nll)):
            best_acc, best_nll, best_epoch, best_lg = acc, nll, epoch, lg
            best_state = copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(True)
    note(f"selected epoch {best_epoch} (valid acc {best_acc:.1%})")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "log.json").write_text(json.dumps(history, indent=1))
    return _finish(net, card, cfg, data, best_lg,
                   {"mode": "finetune", **start.head_info, "selected_epoch": best_epoch, "history": history,
                    "finetune_from": cfg.finetune_from}, note)


@dataclass
class _FinetuneStart:
    """Where fine-tuning starts: a head model (trained now, or --from-head) and what it was built on."""

    cfg: TransferConfig  # freq_stride from the head model's card
    net: M.MusicnnTransfer
    base: ModelCard  # the tagger's card
    data: Data
    pooling: str
    hidden: int
    head_info: dict[str, Any]  # for the card's training record


def _finetune_start(cfg: TransferConfig, note: Callable[[str], None]) -> _FinetuneStart:
    """The head to fine-tune: the --from-head model, or one trained now on frozen embeddings."""
    if cfg.from_head:
        ln = load_net(cfg.from_head, "cpu")
        if ln.card.architecture.get("name") != "musicnn-transfer":
            raise ValueError(f"--from-head must be a musicnn-transfer model, not {ln.card.architecture.get('name')!r}")
        net, start_card = ln.net, ln.card
        cfg = replace(cfg, freq_stride=int(start_card.architecture.get("freq_stride", 1)))
        data = load_data(cfg, start_card.audio.sample_rate)
        if data.labels != start_card.labels:
            raise ValueError("--from-head model's labels differ from the dataset's genres")
        head_info: dict[str, Any] = {"from_head": str(cfg.from_head)}
    else:
        head_cfg = replace(cfg, out=str(Path(cfg.out) / "head"), name=cfg.name + "-head")
        note("step 1: the head on frozen embeddings")
        hpath, net, data = run_head(head_cfg, note)
        start_card = load_card(hpath)
        head_info = {"head_model": str(hpath), "head_metrics": start_card.metrics.to_dict(),
                     "head_selected": start_card.training.get("selected")}
        note("step 2: fine-tuning")
    _, base = _load_tagger(cfg, "cpu")
    pooling = next(k for k, v in POOLING_CHOICES.items() if v == list(start_card.architecture["pooling"]))
    hidden = int(start_card.architecture["head"].get("hidden", 0))
    return _FinetuneStart(cfg, net, base, data, pooling, hidden, head_info)


class _FinetuneValid:
    """The valid tracks' (and excerpts') sub-track logits under the network being fine-tuned.

    With the front-end frozen, its maps of the valid sub-tracks never change: they are computed
    once (float16, on the CPU) and every epoch runs only the rest of the network.
    """

    def __init__(self, net: M.MusicnnTransfer, data: Data, card: ModelCard, device, frozen_front: bool) -> None:
        cut = [subset_segments(data, s, card) for s in data.with_excerpts("valid")]
        self.net, self.device = net, device
        self.segs = [seg for segs, _ in cut for seg in segs]
        self.y = np.concatenate([y for _, y in cut])
        self.front: list[torch.Tensor] | None = None
        if frozen_front:
            with torch.inference_mode():
                self.front = [net.trunk.front_maps(M.musicnn_frontend(torch.from_numpy(s).to(device))).half().cpu()
                              for s in self.segs]

    def logits(self) -> list[np.ndarray]:
        self.net.eval()
        if self.front is None:
            return net_logits(self.net, self.segs, self.device, batch=32)
        with torch.inference_mode():
            return [self.net.forward_front(f.float().to(self.device)).cpu().numpy() for f in self.front]

    def score(self, lg: list[np.ndarray]) -> tuple[float, float]:
        return track_score(lg, self.y)


def _finetune_optimiser(net: M.MusicnnTransfer, trunk_params: list[torch.nn.Parameter], cfg: TransferConfig,
                        steps: int):
    """AdamW with the head at 10x the trunk's learning rate, on a one-cycle schedule."""
    opt = torch.optim.AdamW([{"params": trunk_params, "lr": cfg.lr},
                             {"params": list(net.head.parameters()), "lr": cfg.lr * 10}],
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[cfg.lr, cfg.lr * 10],
                                                total_steps=steps * cfg.epochs, pct_start=0.15)
    return opt, sched


def _finetune_epoch(net: M.MusicnnTransfer, sampler: CropSampler, opt, sched, cfg: TransferConfig,
                    rng: np.random.Generator, gen: torch.Generator, device, frozen_front: bool, steps: int,
                    n_classes: int) -> float:
    """One epoch of random crops; returns the mean loss."""
    net.eval()  # BatchNorm statistics stay the pretrained ones (tiny batches, tiny data)
    net.head.train()  # ... but the head's dropout is on
    tot = 0.0
    for _ in range(steps):
        xb, yb = sampler.batch(cfg.batch_size)
        x = torch.from_numpy(augment_waves(xb, cfg.aug_gain_db, cfg.aug_noise_snr_db, rng)).to(device)
        target = F.one_hot(torch.from_numpy(yb).long(), n_classes).float().to(device)
        x, target = mixup(x, target, cfg.aug_mixup, rng, gen)
        mel = M.musicnn_frontend(x)
        if frozen_front:
            with torch.no_grad():
                front = net.trunk.front_maps(mel)
            logits = net.forward_front(front)
        else:
            logits = net.logits_from(*M.MusicnnNet.forward(net.trunk, mel, return_embeddings=True))
        loss = F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 5.0)
        opt.step()
        sched.step()
        tot += float(loss.detach())
    return tot / steps


def run_zeroshot(cfg: TransferConfig, note: Callable[[str], None] = lambda s: None) -> Path:
    """(f): MSD tags -> genres by name, no training; mapping/aggregation chosen on valid, T calibrated on valid."""
    device = resolve_device(cfg.device)
    tagger, base = _load_tagger(cfg, device)
    data = load_data(cfg, base.audio.sample_rate)
    emb_va, y_va = merged_embeddings(data, data.with_excerpts("valid"), tagger, base, device, note=note)
    valid_tracks = [t for s in data.with_excerpts("valid") for t in data.parts[s]]
    best = None
    grid = []
    tag_logits = torch.from_numpy(emb_va["tag_logits"])
    for mname in cfg.zeroshot_mappings:
        mapping = M.zeroshot_matrix(data.labels, ZEROSHOT_MAPPINGS[mname], tuple(base.labels))
        for agg in cfg.zeroshot_aggs:
            lg = M.zeroshot_logits(tag_logits, mapping, agg, M.MusicnnZeroShot.EPS).numpy()  # as the card's network
            seg_lg = _split_rows(lg, emb_va["track"], len(y_va))
            row = _valid_row({"mapping": mname, "agg": agg}, seg_lg, y_va, data.labels, valid_tracks)
            grid.append(row)
            note(f"  zero-shot mapping={mname:<6} agg={agg:<4} valid acc {row['valid_acc']:.1%}")
            if better(row["valid_acc"], row["valid_nll"], None if best is None else _score(best[0])):
                best = (row, seg_lg)
    row, seg_lg = best
    mapping = ZEROSHOT_MAPPINGS[row["mapping"]]
    card = ModelCard(
        name=cfg.name, labels=data.labels,
        architecture={"name": "musicnn-zeroshot", "mapping": mapping, "agg": row["agg"],
                      "mapping_name": row["mapping"], "trunk": base.name},
        audio=copy.deepcopy(base.audio), mel=copy.deepcopy(base.mel),
        description=("Zero-shot GTZAN genres from the musicnn MSD tagger: no training; a genre's score is the "
                     f"{row['agg']} of the sigmoid probabilities of the MSD tags mapped to it. The MSD top-50 "
                     "has no reggae, classical or disco tag: reggae is never predicted"
                     + ("; classical and disco use proxy tags." if row["mapping"] == "proxy"
                        else ", nor are classical and disco.")),
        license=base.license, source=f"tagger: {base.source}",
    )
    card.temperature = calibrate_temperature(seg_lg, y_va)
    note(f"temperature {card.temperature:.3f} (calibrated on valid)")
    card.training = {"mode": "zeroshot", "split": cfg.split, "grid": grid, "command": cfg.command,
                     "n_valid_tracks": len(y_va), "n_test_tracks": len(data.parts["test"]),
                     "config": asdict(cfg)}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    base_path = find_card(cfg.base_model)
    bw = base_path.parent / base.weights
    if bw.parent.resolve() != out.resolve():
        shutil.copy2(bw, out / bw.name)  # same bytes, same sha256
    card.weights, card.weights_sha256 = bw.name, base.weights_sha256
    cpath = out / f"{card.name}.json"
    save_card(card, cpath)
    card.metrics = measure(load_net(cpath, cfg.device), data)
    save_card(card, cpath)
    return cpath


def make_ensemble(members: list[str | os.PathLike], out_dir: str | os.PathLike, name: str,
                  description: str = "") -> Path:
    """An ensemble card (mean of the members' probabilities) beside or above its members.

    Member cards are referenced by path relative to the new card. The ensemble cuts
    sub-tracks with the audio parameters of its highest-sample-rate member, so no
    member is fed upsampled audio (each member gets its own rate/length via _adapt).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [find_card(m) for m in members]
    cards = [load_card(p) for p in paths]
    if any(c.labels != cards[0].labels for c in cards):
        raise ValueError("ensemble members disagree on labels")
    lead = max(cards, key=lambda c: (c.audio.sample_rate, c.audio.segment_seconds))
    card = ModelCard(
        name=name, labels=list(cards[0].labels), architecture={"name": "ensemble"},
        audio=copy.deepcopy(lead.audio), mel=copy.deepcopy(lead.mel),
        members=[os.path.relpath(p.resolve(), out.resolve()) for p in paths],
        description=description or ("Ensemble (mean of probabilities) of " + ", ".join(c.name for c in cards) + "."),
        license=", ".join(sorted({c.license for c in cards if c.license})),
    )
    cpath = out / f"{name}.json"
    save_card(card, cpath)
    return cpath


def run_ensemble(cfg: TransferConfig, members: list[str], note: Callable[[str], None] = lambda s: None) -> Path:
    """Ensemble card of `members` (every non-empty subset tried; the best on valid is written), measured."""
    from itertools import combinations

    if len(members) < 2:
        raise ValueError("an ensemble needs at least two --member models")
    data = load_data(cfg, max(load_card(find_card(m)).audio.sample_rate for m in members))
    full = load_net(make_ensemble(members, cfg.out, cfg.name), cfg.device)
    idx = data.cache.index_of()
    a = full.card.audio
    per_member: dict[str, list[list[np.ndarray]]] = {}
    segs = [ev.track_segments(data.cache, idx[t.id], a.segment_samples, a.max_segments) for t in data.parts["valid"]]
    from genretag.model import _adapt

    for m, mp in zip(full.members, full.card.members):
        note(f"  valid predictions of {m.card.name}")
        per_member[mp] = [m.predict(_adapt(s, full.card, m.card)) for s in segs]
    y = data.y("valid")
    grid, best = [], None
    for k in range(1, len(members) + 1):
        for combo in combinations(full.card.members, k):
            probs = [np.mean([per_member[c][i] for c in combo], axis=0) for i in range(len(y))]
            rep = ev.report(ev.Predictions(data.parts["valid"], data.labels, probs))
            row = {"members": list(combo), "valid_acc": rep["accuracy"]["soft"], "valid_nll": rep["nll"]}
            grid.append(row)
            note(f"  {' + '.join(Path(c).stem for c in combo):<60} valid acc {row['valid_acc']:.1%} nll {row['valid_nll']:.3f}")
            if k >= 2 and better(row["valid_acc"], row["valid_nll"], None if best is None else _score(best)):
                best = row
    chosen = [str((Path(cfg.out) / c).resolve()) for c in best["members"]]
    cpath = make_ensemble(chosen, cfg.out, cfg.name)
    card = load_card(cpath)
    card.training = {"mode": "ensemble", "split": cfg.split, "candidates": list(full.card.members),
                     "grid": grid, "selected_on": "valid soft accuracy (ties: NLL)", "command": cfg.command}
    card.metrics = measure(load_net(cpath, cfg.device), data)
    save_card(card, cpath)
    return cpath
