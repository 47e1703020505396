"""`--mode finetune`: from the best head (trained now, or ``--from-head``), the trunk is trained too
(low learning rate, BatchNorm statistics frozen, random crops + gain + noise, optional mixup), and the
epoch is selected on valid (epoch 0 = the head alone). By default the front-end convolutions (~90 %
of the arithmetic) stay frozen, and their maps of the valid sub-tracks are computed once."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genretag.card import ModelCard, load_card
from genretag.model import load_net, resolve_device
from genretag.nets import musicnn as M
from genretag.training.common import CropSampler, augment_waves, better, mixup, net_logits, track_score
from genretag.training.transfer.cards import finish_model, transfer_card
from genretag.training.transfer.config import POOLING_CHOICES, TransferConfig
from genretag.training.transfer.data import Data, load_data, subset_segments
from genretag.training.transfer.embeddings import load_tagger
from genretag.training.transfer.head_model import run_head


def set_trainable(net: M.MusicnnTransfer, start: str) -> list[torch.nn.Parameter]:
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
    """Fine-tune trunk + head from the best head, select on valid (epoch 0 = the head alone)."""
    device = resolve_device(cfg.device)
    start = _finetune_start(cfg, note)
    cfg = start.cfg
    data = start.data
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = start.net.float().to(device)
    trunk_params = set_trainable(net, cfg.finetune_from)
    frozen_front = cfg.finetune_from != "front"
    card = transfer_card(cfg, start.base, labels=data.labels, pooling=start.pooling, hidden=start.hidden,
                         finetune=True)
    valid = _FinetuneValid(net, data, card, device, frozen_front)

    lg = valid.logits()
    best_acc, best_nll = valid.score(lg)
    best_state, best_epoch, best_lg = copy.deepcopy(net.state_dict()), 0, lg
    note(f"epoch   0 (head only)  valid acc {best_acc:.1%} nll {best_nll:.3f}")
    history = [{"epoch": 0, "train_loss": None, "valid_acc": best_acc, "valid_nll": best_nll, "seconds": 0.0}]

    train_tracks = [t for s in data.with_excerpts("train") for t in data.parts[s]]
    sampler = CropSampler(train_tracks, data.labels, caches=[data.cache], seg_samples=card.audio.segment_samples,
                          balance=True, offline_p=0.0, rng=rng)
    steps = max(1, math.ceil(cfg.crops_per_track * len(train_tracks) / cfg.batch_size))
    opt, sched = _finetune_optimiser(net, trunk_params, cfg, steps)
    loop = _EpochLoop(net, sampler, opt, sched, cfg, rng, gen, device, frozen_front, steps, len(data.labels))
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.time()
        loss = loop.epoch()
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
    return finish_model(net, card, cfg=cfg, data=data, valid_logits=best_lg,
                        training={"mode": "finetune", **start.head_info, "selected_epoch": best_epoch,
                                  "history": history, "finetune_from": cfg.finetune_from}, note=note)


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
        model = load_net(cfg.from_head, "cpu")
        if model.card.architecture.get("name") != "musicnn-transfer":
            raise ValueError(f"--from-head must be a musicnn-transfer model, not {model.card.architecture.get('name')!r}")
        net, start_card = model.net, model.card
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
    _, base = load_tagger(cfg, "cpu")
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


@dataclass(frozen=True)
class _EpochLoop:
    """What every fine-tuning epoch trains with, held once: the network, its crop sampler, optimiser and
    schedule, the random sources, and whether the front-end is frozen."""

    net: M.MusicnnTransfer
    sampler: CropSampler
    opt: torch.optim.Optimizer
    sched: Any
    cfg: TransferConfig
    rng: np.random.Generator
    gen: torch.Generator
    device: Any
    frozen_front: bool
    steps: int
    n_classes: int

    def epoch(self) -> float:
        """One epoch of random crops; returns the mean loss."""
        net, cfg, rng, opt, sched, device = self.net, self.cfg, self.rng, self.opt, self.sched, self.device
        net.eval()  # BatchNorm statistics stay the pretrained ones (tiny batches, tiny data)
        net.head.train()  # ... but the head's dropout is on
        tot = 0.0
        for _ in range(self.steps):
            xb, yb = self.sampler.batch(cfg.batch_size)
            x = torch.from_numpy(augment_waves(xb, cfg.aug_gain_db, cfg.aug_noise_snr_db, rng)).to(device)
            target = F.one_hot(torch.from_numpy(yb).long(), self.n_classes).float().to(device)
            x, target = mixup(x, target, alpha=cfg.aug_mixup, rng=rng, gen=self.gen)
            mel = M.musicnn_frontend(x)
            if self.frozen_front:
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
        return tot / self.steps
