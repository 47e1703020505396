"""Frozen embeddings: every sub-track through the tagger's trunk once, pooled, and cached on disk by the
trunk's weights and the tracks, so that a grid of heads never runs the trunk again."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from genretag.card import ModelCard
from genretag.model import load_net
from genretag.nets import musicnn as M
from genretag.paths import cache_dir
from genretag.training.dataset import tracks_key
from genretag.training.transfer.config import TransferConfig
from genretag.training.transfer.data import Data, library_data, subset_segments


@torch.inference_mode()
def extract_embeddings(tagger: M.MusicnnTagger, segs: list[np.ndarray], device, *, batch: int = 32,
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


def load_tagger(cfg: TransferConfig, device) -> tuple[M.MusicnnTagger, ModelCard]:
    """The ``--base-model`` tagger (at ``cfg.freq_stride``, weights as they will be stored) and its card."""
    model = load_net(cfg.base_model, "cpu")
    if model.card.architecture.get("name") != "musicnn":
        raise ValueError(f"--base-model must be a musicnn tagger card, not {model.card.architecture.get('name')!r}")
    model.net.set_freq_stride(cfg.freq_stride)
    return as_stored(model.net, cfg.half_weights).to(device).eval(), model.card


@dataclass(frozen=True)
class Embedder:
    """A tagger's trunk, its card, the device it runs on and where progress notes go: held once for
    every subset a run embeds."""

    tagger: M.MusicnnTagger
    card: ModelCard
    device: object
    note: Callable[[str], None] = field(default=lambda s: None)

    def cached(self, data: Data, subset: str, *, dense: int = 0) -> dict[str, np.ndarray]:
        """Embeddings of a subset's sub-tracks, from <cache>/transfer/<key>.npz when already computed."""
        tracks = data.parts[subset]
        a = self.card.audio
        scheme = f"{a.sample_rate}|{a.segment_samples}|{a.max_segments}|dense{dense}"
        if getattr(self.tagger, "freq_stride", 1) != 1:
            scheme += f"|stride{self.tagger.freq_stride}"
        if data.augment:
            scheme += f"|{data.augment}"
        key = tracks_key(tracks, trunk_digest(self.tagger), scheme, "v2")
        f = cache_dir() / "transfer" / f"{key}.npz"
        if f.exists():
            with np.load(f) as z:
                return {k: z[k] for k in z.files}
        segs, _ = subset_segments(data, subset, self.card, dense)
        n = sum(len(s) for s in segs)
        self.note(f"extracting musicnn embeddings: {subset}, {len(tracks)} tracks, {n} sub-tracks (once; cached)")
        t0 = time.time()
        emb = extract_embeddings(self.tagger, segs, self.device)
        self.note(f"  {n} sub-tracks in {time.time() - t0:.0f} s")
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f.stem + ".tmp.npz")
        np.savez(tmp, **emb)
        os.replace(tmp, f)
        return emb

    def merged(self, data: Data, subsets: list[str], *, dense: int = 0,
               repeat_excerpts: int = 1) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Embeddings of several subsets stacked (track numbers continue across them) and the labels per track.

        ``repeat_excerpts``: each excerpt's row appears that many times (an excerpt gives one
        embedding where a track gives ``dense``; repeating weights it up in training).
        """
        parts, offset = [], 0
        for s in subsets:
            emb = self.cached(data, s, dense=dense)
            if s.endswith("_excerpts") and repeat_excerpts > 1:
                emb = {key: np.repeat(v, repeat_excerpts, axis=0) for key, v in emb.items()}
            parts.append(dict(emb, track=emb["track"] + offset))
            offset += len(data.parts[s])
        merged = {k: np.concatenate([e[k] for e in parts]) for k in parts[0]}
        return merged, data.y_of(subsets)

    def augmented(self, data: Data, subsets: list[str], copies: int, *, dense: int = 0,
                  repeat_excerpts: int = 1) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """`merged` of the clean tracks followed by ``copies`` library versions of them (labels repeated).

        Each subset's library versions are cached on their own, so a refit on train + valid reuses train's."""
        emb, y = self.merged(data, subsets, dense=dense, repeat_excerpts=repeat_excerpts)
        parts, ys = [emb], [y]
        for k in range(max(0, copies)):
            for s in subsets:
                e, yk = self.merged(library_data(data, [s], k, self.note), [s], dense=dense,
                                    repeat_excerpts=repeat_excerpts)
                parts.append(dict(e, track=e["track"] + sum(len(v) for v in ys)))
                ys.append(yk)
        return {k: np.concatenate([p[k] for p in parts]) for k in emb}, np.concatenate(ys)
