"""The zero-shot prior: MSD tags mapped to genres by name, weighted and added to a head's logits (chosen
on valid after the head, or trained under with ``--prior-in-training``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from genretag.card import ModelCard
from genretag.nets import musicnn as M
from genretag.training.common import better
from genretag.training.transfer.config import TransferConfig
from genretag.training.transfer.data import Data
from genretag.training.transfer.scores import row_score, split_rows, valid_row

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


def prior_offset(emb: dict, labels: list[str], mapping: str, weight: float) -> np.ndarray:
    """``weight`` x the zero-shot prior of each embedding row's MSD tags: what the network adds to its
    head's logits when the card has that prior (MusicnnTransfer.logits_from)."""
    m = M.zeroshot_matrix(labels, ZEROSHOT_MAPPINGS[mapping], M.MSD_TAGS)
    return (weight * M.zeroshot_prior(torch.from_numpy(emb["tag_logits"]), m)).numpy().astype(np.float32)


def require_msd_tags(base: ModelCard) -> None:
    """`ValueError` unless ``base`` is an MSD tagger: the prior maps its tags."""
    if tuple(base.labels) != M.MSD_TAGS:
        raise ValueError("the zero-shot prior maps MSD tags: use it with an MSD tagger trunk")


def prior_card(mapping: str, weight: float) -> dict[str, Any]:
    """The card's ``architecture.prior`` for a zero-shot prior."""
    return {"mapping": ZEROSHOT_MAPPINGS[mapping], "mapping_name": mapping, "agg": "max", "weight": weight}


def choose_prior(head_logits: np.ndarray, emb_va: dict, y_va: np.ndarray, *, data: Data, base: ModelCard,
                 cfg: TransferConfig,
                 note: Callable[[str], None]) -> tuple[dict | None, list[np.ndarray], list[dict]]:
    """Blend weight and mapping of the zero-shot prior, chosen on valid (weight 0: no prior).

    Returns (the card's ``prior`` or None, the chosen valid sub-track logits, the grid)."""
    require_msd_tags(base)
    tracks = [t for s in data.with_excerpts("valid") for t in data.parts[s]]
    weights = sorted({0.0, *cfg.prior_weights})
    grid, best = [], None
    for mname in cfg.zeroshot_mappings:
        zl = prior_offset(emb_va, data.labels, mname, 1.0)
        for w in weights:
            seg = split_rows(head_logits + w * zl, emb_va["track"], len(y_va))
            row = valid_row({"mapping": mname, "weight": w}, seg, y=y_va, labels=data.labels, tracks=tracks)
            grid.append(row)
            note(f"  prior mapping={mname:<6} weight={w:<5g} valid acc {row['valid_acc']:.1%} nll {row['valid_nll']:.3f}")
            if better(row["valid_acc"], row["valid_nll"], None if best is None else row_score(best[0])):
                best = (row, seg)
    row, seg = best
    if row["weight"] == 0:
        return None, seg, grid
    return prior_card(row["mapping"], row["weight"]), seg, grid
