"""Heads on frozen embeddings: one head trained (AdamW, classes balanced, the best valid epoch kept),
the grid of pooling x hidden width x weight decay, and the bag of heads from further seeds."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from genretag.nets import musicnn as M
from genretag.training.common import better, track_score
from genretag.training.transfer.config import POOLING_CHOICES, TransferConfig
from genretag.training.transfer.scores import split_rows


@dataclass
class HeadResult:
    """One grid cell's best head: its settings, valid score and epoch, and its weights."""

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


@dataclass(frozen=True)
class HeadData:
    """What a grid of heads trains and is scored on, held once: the train and valid embeddings (one row
    per sub-track; ``"track"`` numbers each row's track), each track's genre, the number of genres, and
    the (train rows, valid rows) of a fixed prior the heads are trained and scored on top of (see
    `train_head`), if any."""

    train: dict[str, np.ndarray]
    y_train: np.ndarray
    valid: dict[str, np.ndarray]
    y_valid: np.ndarray
    n_classes: int
    offsets: tuple[np.ndarray, np.ndarray] | None = None


def train_head(xtr: np.ndarray, ytr: np.ndarray, *, spec: HeadSpec, cfg: TransferConfig,
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
        acc, nll = track_score(split_rows(lv, valid.track, len(valid.y)), valid.y)
        if better(acc, nll, best[:2] if best[3] is not None else None):
            best = (acc, nll, epoch, copy.deepcopy(head.state_dict()))
    if valid is None:
        head.eval()
        return head, math.nan, math.nan, last
    head.load_state_dict(best[3])
    head.eval()
    return head, best[0], best[1], best[2]


def fit_head(d: HeadData, cfg: TransferConfig, note: Callable[[str], None]) -> tuple[HeadResult, list[dict]]:
    """Grid over pooling x hidden x weight decay; the best on valid (accuracy, then NLL)."""
    off_tr, off_va = d.offsets or (None, None)
    ytr = d.y_train[d.train["track"]]
    grid = []
    best: HeadResult | None = None
    for pname in cfg.poolings:
        pooling = POOLING_CHOICES[pname]
        xtr = M.pool_embeddings(d.train, pooling).astype(np.float32)
        xva = M.pool_embeddings(d.valid, pooling).astype(np.float32)
        for hidden in cfg.hidden:
            for wd in cfg.weight_decays:
                head, acc, nll, ep = train_head(xtr, ytr, spec=HeadSpec(d.n_classes, hidden, wd), cfg=cfg,
                                                valid=ValidRows(xva, d.valid["track"], d.y_valid, off_va),
                                                offset=off_tr)
                row = {"pooling": pname, "hidden": hidden, "weight_decay": wd, "valid_acc": acc,
                       "valid_nll": nll, "epoch": ep}
                grid.append(row)
                note(f"  head pooling={pname:<11} hidden={hidden:<4} wd={wd:<6g} valid acc {acc:.1%} nll {nll:.3f} (epoch {ep})")
                if better(acc, nll, None if best is None else (best.valid_acc, best.valid_nll)):
                    best = HeadResult(pname, hidden, wd, acc, nll, ep, head.state_dict())
    assert best is not None
    return best, grid


def choose_bag(best: HeadResult, d: HeadData, cfg: TransferConfig,
               note: Callable[[str], None]) -> tuple[list[dict], list[int], list[dict]]:
    """Head bag size (cfg.heads) on valid: the chosen head's recipe trained again from seeds seed+1, ...

    Each extra head keeps its own best valid epoch; the bag's logits are the heads' mean.
    Returns (head states, their epochs, the grid; empty when only one size is tried)."""
    sizes = sorted(set(cfg.heads))
    if sizes == [1]:
        return [best.state], [best.epoch], []
    n_classes = d.n_classes
    pooling = POOLING_CHOICES[best.pooling]
    xtr = M.pool_embeddings(d.train, pooling).astype(np.float32)
    ytr = d.y_train[d.train["track"]]
    xva = torch.from_numpy(M.pool_embeddings(d.valid, pooling).astype(np.float32))
    off_tr, off_va = d.offsets or (None, None)
    states, epochs, logits = [best.state], [best.epoch], []
    for j in range(1, max(sizes)):
        h, acc, nll, ep = train_head(xtr, ytr, spec=HeadSpec(n_classes, best.hidden, best.weight_decay),
                                     cfg=replace(cfg, seed=cfg.seed + j),
                                     valid=ValidRows(xva.numpy(), d.valid["track"], d.y_valid, off_va),
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
        acc, nll = track_score(split_rows(bag if off_va is None else bag + off_va, d.valid["track"], len(d.y_valid)),
                               d.y_valid)
        grid.append({"heads": k, "valid_acc": acc, "valid_nll": nll})
        note(f"  bag of {k} head(s): valid acc {acc:.1%} nll {nll:.3f}")
        if better(acc, nll, None if pick is None else pick[1:]):
            pick = (k, acc, nll)
    k = pick[0]
    return states[:k], epochs[:k], grid


def load_heads(net: M.MusicnnTransfer, states: list[dict]) -> None:
    """Head weights into ``net``: one head's, or each head of a bag's."""
    if len(states) == 1:
        net.head.load_state_dict(states[0])
    else:
        for h, st in zip(net.head.heads, states):
            h.load_state_dict(st)
