"""The model card of a transfer model, and the last steps every mode shares: calibrate on valid, save,
reload what was stored and measure it as `genretag evaluate` would."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from genretag.card import ModelCard, save_card
from genretag.card.metrics import CardMetrics, SubsetMetrics
from genretag.model import Model, load_net
from genretag.store.weights import save_model
from genretag.training import evaluate as ev
from genretag.training.common import calibrate_temperature
from genretag.training.transfer.config import POOLING_CHOICES, TransferConfig
from genretag.training.transfer.data import Data


def transfer_card(cfg: TransferConfig, base: ModelCard, *, labels: list[str], pooling: str, hidden: int,
                  finetune: bool) -> ModelCard:
    """The card of a musicnn-transfer model: ``base``'s trunk and audio, a head on ``pooling``."""
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


def measure(model: Model, data: Data, subsets=("valid", "test", "valid_excerpts", "test_excerpts")) -> CardMetrics:
    """Metrics of a saved (reloaded) model, cut and voted exactly as `genretag evaluate` does.

    Excerpts are measured apart from the tracks ("test_excerpts": one sub-track each)."""
    out = CardMetrics()
    for s in subsets:
        tracks = data.parts.get(s)
        if not tracks:
            continue
        cache = data.cache if data.cache.sample_rate == model.card.audio.sample_rate else None
        rep = ev.report(ev.predict_tracks([model], tracks, cache=cache))
        key = "test_random_split_leaky" if s == "test" and data.split == "random" else s
        out[key] = SubsetMetrics.from_report(rep)
    return out


def finish_model(net: torch.nn.Module, card: ModelCard, *, cfg: TransferConfig, data: Data, valid_logits,
                 training: dict, note: Callable[[str], None], half: bool | None = None) -> Path:
    """Calibrate on valid, save, reload from disk and measure valid/test; write metrics to the card.

    ``training``: the mode's own record, written into the card's ``training`` between the data's
    counts and the command line."""
    card.temperature = calibrate_temperature(valid_logits, data.y_of(data.with_excerpts("valid")))
    note(f"temperature {card.temperature:.3f} (calibrated on valid)")
    card.training = {
        "data": f"GTZAN ({data.n_found} tracks present in the data folder)",
        "split": cfg.split, "n_train_tracks": len(data.parts["train"]),
        "n_valid_tracks": len(data.parts["valid"]), "n_test_tracks": len(data.parts["test"]),
        **training, "command": cfg.command, "config": asdict(cfg),
    }
    if data.excerpts is not None:
        card.training["excerpts"] = data.excerpts.describe(("train", "valid") if "refit" in training
                                                           else ("train",))
    out = Path(cfg.out)
    cpath = save_model(net, card, out, half=cfg.half_weights if half is None else half)
    model = load_net(cpath, cfg.device)  # what users get: the stored (float16) weights
    card.metrics = measure(model, data)
    if "refit" in training:  # not held out: never a headline number
        for s in ("valid", "valid_excerpts"):
            if s in card.metrics:
                card.metrics[f"{s}_seen_in_training"] = card.metrics.pop(s)
    save_card(card, cpath)
    return cpath
