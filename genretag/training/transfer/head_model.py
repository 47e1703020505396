"""`--mode head`: a head on the frozen tagger's embeddings, in four steps held by one `HeadRun`:
select the head on valid (grid, bag), assemble the network and its card (with the zero-shot prior
when chosen), refit on train + valid when asked, finish (calibrate, save, measure)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genretag.card import ModelCard
from genretag.model import resolve_device
from genretag.nets import musicnn as M
from genretag.training.common import better
from genretag.training.transfer.cards import finish_model, transfer_card
from genretag.training.transfer.config import POOLING_CHOICES, TransferConfig
from genretag.training.transfer.data import Data, load_data
from genretag.training.transfer.embeddings import Embedder, load_tagger
from genretag.training.transfer.heads import (
    HeadData,
    HeadResult,
    HeadSpec,
    choose_bag,
    fit_head,
    load_heads,
    train_head,
)
from genretag.training.transfer.prior import choose_prior, prior_card, prior_offset, require_msd_tags
from genretag.training.transfer.scores import split_rows


@dataclass(frozen=True)
class HeadChoice:
    """What selection on valid chose: the best grid row's head, the embeddings (and prior rows) it was
    trained and scored on, the whole grid, and the bag of heads (states, epochs, bag grid)."""

    best: HeadResult
    heads: HeadData
    grid: list[dict]
    states: list[dict]
    epochs: list[int]
    bag_grid: list[dict]


@dataclass
class HeadModel:
    """The assembled network and its card, the valid sub-track logits it is calibrated on, and the
    card's record of what was selected."""

    net: M.MusicnnTransfer
    card: ModelCard
    valid_logits: list[np.ndarray]
    selected: dict[str, Any]


class HeadRun:
    """One `--mode head` run: its configuration, data, tagger and progress notes, held once."""

    def __init__(self, cfg: TransferConfig, note: Callable[[str], None], data: Data | None = None) -> None:
        torch.manual_seed(cfg.seed)
        device = resolve_device(cfg.device)
        tagger, base = load_tagger(cfg, device)
        priors: list[tuple[str, float] | None] = [None]
        if cfg.prior_in_training:
            require_msd_tags(base)
            priors = [(m, w) for m in cfg.zeroshot_mappings for w in cfg.prior_weights if w > 0]
            if not priors:
                raise ValueError("--prior-in-training needs --prior-weight with a weight above 0")
        data = data or load_data(cfg, base.audio.sample_rate)
        note(f"{data.n_found} tracks found; split {cfg.split}: "
             + ", ".join(f"{k} {len(v)}" for k, v in data.parts.items()))
        if data.excerpts is not None:
            note("excerpts: " + ", ".join(f"{k} {v}" for k, v in data.excerpts.counts().items())
                 + " (test excerpts held out, measured apart)")
        self.cfg, self.note, self.data, self.tagger, self.base = cfg, note, data, tagger, base
        self.priors = priors
        self.embed = Embedder(tagger, base, device, note)

    def select(self) -> HeadChoice:
        """The head grid for every library-copy count, excerpt weight and prior tried; the best on
        valid; then its bag size."""
        cfg, data, note = self.cfg, self.data, self.note
        emb_va, y_va = self.embed.merged(data, data.with_excerpts("valid"))
        va_offsets = {pr: prior_offset(emb_va, data.labels, *pr) for pr in self.priors if pr is not None}
        best: HeadResult | None = None
        grid: list[dict] = []
        chosen: HeadData | None = None
        for copies in cfg.augment_copies:
            for repeat in cfg.extra_repeat if data.excerpts is not None else [1]:
                if copies:
                    note(f"training data + {copies} library version(s) of every training track")
                e_tr, y_tr = self.embed.augmented(data, data.with_excerpts("train"), copies, dense=cfg.train_crops,
                                                  repeat_excerpts=repeat)
                for pr in self.priors:
                    offsets = None if pr is None else (prior_offset(e_tr, data.labels, *pr), va_offsets[pr])
                    if pr is not None:
                        note(f"heads trained on top of the zero-shot prior '{pr[0]}' x {pr[1]:g}")
                    heads = HeadData(e_tr, y_tr, emb_va, y_va, len(data.labels), offsets)
                    res, g = fit_head(heads, cfg, note)
                    res.extra_repeat, res.augment_copies, res.prior = repeat, copies, pr
                    tag = ({"extra_repeat": repeat} if data.excerpts is not None else {}) | (
                        {"augment_copies": copies} if cfg.augment_copies != [0] else {}) | (
                        {"prior_mapping": pr[0], "prior_weight": pr[1]} if pr is not None else {})
                    grid += [dict(row, **tag) for row in g]
                    if better(res.valid_acc, res.valid_nll, None if best is None else (best.valid_acc, best.valid_nll)):
                        best, chosen = res, heads
        note(f"best head: pooling {best.pooling}, hidden {best.hidden}, weight decay {best.weight_decay:g}: "
             f"valid acc {best.valid_acc:.1%}")
        states, epochs, bag_grid = choose_bag(best, chosen, cfg, note)
        return HeadChoice(best, chosen, grid, states, epochs, bag_grid)

    def assemble(self, choice: HeadChoice) -> HeadModel:
        """The network (the trunk + the chosen head or bag), its card, the prior (trained under, or
        chosen on valid now) and the valid logits to calibrate on."""
        cfg, data, base, note = self.cfg, self.data, self.base, self.note
        best, states, heads = choice.best, choice.states, choice.heads
        emb_va, y_va = heads.valid, heads.y_valid
        pooling = POOLING_CHOICES[best.pooling]
        card = transfer_card(cfg, base, labels=data.labels, pooling=best.pooling, hidden=best.hidden,
                             finetune=False)
        if len(states) > 1:
            card.architecture["head"]["n"] = len(states)
            card.description += f" The head is the mean of {len(states)} heads trained from different seeds."
        net = M.MusicnnTransfer(len(data.labels), pooling, best.hidden, cfg.head_dropout,
                                len(base.labels), cfg.freq_stride, n_heads=len(states))
        net.trunk.load_state_dict(self.tagger.state_dict())
        load_heads(net, states)
        net.eval()
        # valid logits for calibration from the cached embeddings (same numbers as the network's)
        with torch.no_grad():
            lv = net.head(torch.from_numpy(M.pool_embeddings(emb_va, pooling).astype(np.float32))).numpy()
        valid_logits = split_rows(lv, emb_va["track"], len(y_va))
        prior, prior_grid = None, []
        if best.prior is not None:  # trained on top of it: the prior is part of the head
            prior = prior_card(*best.prior)
            valid_logits = split_rows(lv + heads.offsets[1], emb_va["track"], len(y_va))
        elif any(w > 0 for w in cfg.prior_weights) and not cfg.prior_in_training:
            prior, valid_logits, prior_grid = choose_prior(lv, emb_va, y_va, data=data, base=base, cfg=cfg,
                                                           note=note)
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
        if choice.bag_grid:
            selected["heads"] = len(states)
            selected["head_epochs"] = choice.epochs
            selected["bag_grid"] = choice.bag_grid
        if data.excerpts is not None:
            selected["extra_repeat"] = best.extra_repeat
            selected["selected_on"] = "valid tracks and valid excerpts, pooled (each excerpt counts as one track)"
        if prior_grid:
            selected["prior_grid"] = prior_grid
        return HeadModel(net, card, valid_logits, selected)

    def refit(self, model: HeadModel, choice: HeadChoice) -> dict[str, Any]:
        """Train the selected head(s) again on train + valid (valid's dense crops and library versions, as
        train's), with the same recipe and epoch counts, into the network; returns the card's record of it.

        The temperature stays the one the train-only head got on valid: nothing held out is left."""
        cfg, data, best, epochs = self.cfg, self.data, choice.best, choice.epochs
        emb_fit, y_fit = self.embed.augmented(data, data.with_excerpts("train") + data.with_excerpts("valid"),
                                              best.augment_copies, dense=cfg.train_crops,
                                              repeat_excerpts=best.extra_repeat)
        x = M.pool_embeddings(emb_fit, POOLING_CHOICES[best.pooling]).astype(np.float32)
        y = y_fit[emb_fit["track"]]
        spec = HeadSpec(len(data.labels), best.hidden, best.weight_decay)
        offset = None if best.prior is None else prior_offset(emb_fit, data.labels, *best.prior)
        refits = [train_head(x, y, spec=spec, cfg=replace(cfg, seed=cfg.seed + j), stop_epoch=ep,
                             offset=offset)[0].state_dict()
                  for j, ep in enumerate(epochs)]
        load_heads(model.net, refits)
        self.note(f"refit the selected head(s) on train + valid ({len(x)} embeddings, {epochs} epochs)")
        model.card.description += " Refitted on train + valid after selection on valid."
        return {"on": ["train", "valid"], "epochs": best.epoch if len(epochs) == 1 else epochs,
                "n_embeddings": int(len(x)), "temperature_from": "the train-only head, calibrated on valid",
                "note": "valid was used for training: its metrics are not held-out"}

    def finish(self, model: HeadModel, choice: HeadChoice, refit: dict[str, Any] | None = None) -> Path:
        """Calibrate, save, reload and measure; the card's path."""
        extra: dict[str, Any] = {} if refit is None else {"refit": refit}
        if choice.best.augment_copies:
            from genretag.training.augment import describe

            extra["augmentation"] = describe(choice.best.augment_copies)
        return finish_model(model.net, model.card, cfg=self.cfg, data=self.data, valid_logits=model.valid_logits,
                            training={"mode": "head", "head_grid": choice.grid, "selected": model.selected,
                                      "n_train_embeddings": int(len(choice.heads.train["track"])), **extra},
                            note=self.note)


def run_head(cfg: TransferConfig, note: Callable[[str], None] = lambda s: None,
             data: Data | None = None) -> tuple[Path, M.MusicnnTransfer, Data]:
    """Cached embeddings, head grid on valid, save; returns (card path, network, data)."""
    run = HeadRun(cfg, note, data)
    choice = run.select()
    model = run.assemble(choice)
    refit = run.refit(model, choice) if cfg.refit else None
    return run.finish(model, choice, refit), model.net, run.data
