"""`--mode zeroshot`: no training at all; the MSD tagger's tags are mapped to genres by name
(`ZEROSHOT_MAPPINGS`), the mapping and the aggregation chosen on valid, the temperature calibrated
on valid. The model's weights are the tagger's, copied byte for byte."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from genretag.card import ModelCard, save_card
from genretag.model import load_net, resolve_device
from genretag.nets import musicnn as M
from genretag.store.resolve import find_card
from genretag.training.common import better, calibrate_temperature
from genretag.training.transfer.cards import measure
from genretag.training.transfer.config import TransferConfig
from genretag.training.transfer.data import load_data
from genretag.training.transfer.embeddings import Embedder, load_tagger
from genretag.training.transfer.prior import ZEROSHOT_MAPPINGS
from genretag.training.transfer.scores import row_score, split_rows, valid_row


def run_zeroshot(cfg: TransferConfig, note: Callable[[str], None] = lambda s: None) -> Path:
    """MSD tags -> genres by name, no training; mapping/aggregation chosen on valid, T calibrated on valid."""
    device = resolve_device(cfg.device)
    tagger, base = load_tagger(cfg, device)
    data = load_data(cfg, base.audio.sample_rate)
    emb_va, y_va = Embedder(tagger, base, device, note).merged(data, data.with_excerpts("valid"))
    valid_tracks = [t for s in data.with_excerpts("valid") for t in data.parts[s]]
    best = None
    grid = []
    tag_logits = torch.from_numpy(emb_va["tag_logits"])
    for mname in cfg.zeroshot_mappings:
        mapping = M.zeroshot_matrix(data.labels, ZEROSHOT_MAPPINGS[mname], tuple(base.labels))
        for agg in cfg.zeroshot_aggs:
            lg = M.zeroshot_logits(tag_logits, mapping, agg, M.MusicnnZeroShot.EPS).numpy()  # as the card's network
            seg_lg = split_rows(lg, emb_va["track"], len(y_va))
            row = valid_row({"mapping": mname, "agg": agg}, seg_lg, y=y_va, labels=data.labels,
                            tracks=valid_tracks)
            grid.append(row)
            note(f"  zero-shot mapping={mname:<6} agg={agg:<4} valid acc {row['valid_acc']:.1%}")
            if better(row["valid_acc"], row["valid_nll"], None if best is None else row_score(best[0])):
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
