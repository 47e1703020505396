"""`--mode ensemble`: a card averaging its members' probabilities (e.g. musicnn + ResNet); every subset
of the members is tried on valid and the best is written."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from genretag.card import ModelCard, load_card, save_card
from genretag.model import load_net
from genretag.store.resolve import find_card
from genretag.training import evaluate as ev
from genretag.training.common import better
from genretag.training.transfer.cards import measure
from genretag.training.transfer.config import TransferConfig
from genretag.training.transfer.data import load_data
from genretag.training.transfer.scores import row_score


def adapt_waves(waves, src: ModelCard, dst: ModelCard) -> np.ndarray:
    """An ensemble's sub-tracks (cut with ``src``'s audio parameters) resampled and cropped or padded
    to what the member ``dst`` was trained on: what the ensemble feeds each member."""
    from genretag.model import _adapt

    return _adapt(waves, src, dst)


def make_ensemble(members: list[str | os.PathLike], out_dir: str | os.PathLike, name: str,
                  description: str = "") -> Path:
    """An ensemble card (mean of the members' probabilities) beside or above its members.

    Member cards are referenced by path relative to the new card. The ensemble cuts
    sub-tracks with the audio parameters of its highest-sample-rate member, so no
    member is fed upsampled audio (each member gets its own rate/length: `adapt_waves`).
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
    for m, mp in zip(full.members, full.card.members):
        note(f"  valid predictions of {m.card.name}")
        per_member[mp] = [m.predict(adapt_waves(s, full.card, m.card)) for s in segs]
    y = data.y("valid")
    grid, best = [], None
    for k in range(1, len(members) + 1):
        for combo in combinations(full.card.members, k):
            probs = [np.mean([per_member[c][i] for c in combo], axis=0) for i in range(len(y))]
            rep = ev.report(ev.Predictions(data.parts["valid"], data.labels, probs))
            row = {"members": list(combo), "valid_acc": rep["accuracy"]["soft"], "valid_nll": rep["nll"]}
            grid.append(row)
            note(f"  {' + '.join(Path(c).stem for c in combo):<60} valid acc {row['valid_acc']:.1%} nll {row['valid_nll']:.3f}")
            if k >= 2 and better(row["valid_acc"], row["valid_nll"], None if best is None else row_score(best)):
                best = row
    chosen = [str((Path(cfg.out) / c).resolve()) for c in best["members"]]
    cpath = make_ensemble(chosen, cfg.out, cfg.name)
    card = load_card(cpath)
    card.training = {"mode": "ensemble", "split": cfg.split, "candidates": list(full.card.members),
                     "grid": grid, "selected_on": "valid soft accuracy (ties: NLL)", "command": cfg.command}
    card.metrics = measure(load_net(cpath, cfg.device), data)
    save_card(card, cpath)
    return cpath
