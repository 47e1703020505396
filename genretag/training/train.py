"""Training a genre model on a GTZAN-layout folder.

Tracks are split first (genretag.training.dataset.split), decoded once into a
memory-mapped cache, and every step draws random sub-track crops from the
training tracks, balanced across genres (the partial GTZAN copy is heavily
imbalanced). Augmentations (each switchable): random crops, gain, noise,
precomputed pitch shift / time stretch, SpecAugment, mixup. Selection is on
the valid split's track-level accuracy; confidences are then calibrated by
temperature scaling on valid.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genretag.card import AudioParams, MelParams, ModelCard
from genretag.card.metrics import SubsetMetrics
from genretag.model import resolve_device
from genretag.nets import build_net, count_parameters
from genretag.store.weights import save_model
from genretag.training import common
from genretag.training import evaluate as ev
from genretag.training.dataset import Track, WaveCache, labels_of, scan, split, wave_cache
from genretag.training.excerpts import Excerpts, load_excerpts
from genretag.training.limits import bounded


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved with the run and in the model card."""

    data_dir: str = ""
    out: str = "runs/latest"
    name: str = "gtzan-resnet"
    split: str = "fault-filtered"
    fold: int = 0
    train_subsets: list[str] = field(default_factory=lambda: ["train"])
    extra: str = ""  # excerpts folder (training/excerpts.py): trains with train_subsets, valid selects too
    arch: str = "resnet"  # resnet | cnn1d
    variant: str = "narrow"
    layers: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    stem_stride: int = 2
    dropout: float = bounded("dropout", 0.3)
    sample_rate: int = 22050
    segment_seconds: float = bounded("segment_seconds", 3.0)
    max_segments: int = 10
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    epochs: int = 30
    steps_per_epoch: int = 0  # 0: about 8 crops per training track per epoch
    batch_size: int = 32
    lr: float = bounded("lr", 2e-3)
    weight_decay: float = bounded("weight_decay", 1e-2)
    label_smoothing: float = bounded("label_smoothing", 0.1)
    schedule: str = "onecycle"  # onecycle | cosine | constant
    balance: bool = True
    aug_gain_db: float = 6.0  # 0: off
    aug_noise_snr_db: float = 30.0  # 0: off; else white noise at SNR drawn in [snr, snr+20]
    aug_specaugment: bool = True
    aug_mixup: float = 0.2  # Beta(alpha, alpha); 0: off
    aug_pitch: list[float] = field(default_factory=list)  # semitones, precomputed (e.g. -2 2)
    aug_stretch: list[float] = field(default_factory=list)  # rates, precomputed (e.g. 0.9 1.1)
    aug_offline_p: float = 0.5  # chance a crop comes from a precomputed variant
    patience: int = 12
    seed: int = 0
    device: str = "auto"
    jobs: int = bounded("jobs", 2)
    half_weights: bool = True  # store weights as float16 (halves the file, same accuracy)
    command: str = ""  # the command line that started the run, recorded in the card (the CLI passes its own)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """From a mapping of field names (e.g. a --params file); `ConfigError` naming a bad key or value."""
        return common.config_from_dict(cls, d)


def make_card(cfg: TrainConfig, labels: list[str]) -> ModelCard:
    if cfg.arch == "cnn1d":
        arch = {"name": "cnn1d", "widths": cfg.widths or None, "dropout": cfg.dropout}
    else:
        arch = {"name": "resnet", "variant": cfg.variant, "layers": cfg.layers, "widths": cfg.widths,
                "dropout": cfg.dropout, "stem_stride": cfg.stem_stride}
    return ModelCard(
        name=cfg.name, labels=labels, architecture=arch,
        audio=AudioParams(cfg.sample_rate, cfg.segment_seconds, cfg.max_segments),
        mel=MelParams(n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels),
        description="Genre classifier trained with `genretag train` on GTZAN.",
    )


def spec_augment(x: torch.Tensor, gen: torch.Generator, *, n_freq: int = 2, f_max: int = 15,
                 n_time: int = 2, t_max: int = 20) -> torch.Tensor:
    """Mask random mel bands and frames (Park et al. 2019), filling with each example's mean."""
    b, _, nm, nt = x.shape
    x = x.clone()
    fill = x.mean(dim=(1, 2, 3), keepdim=True)
    for _ in range(n_freq):
        w = torch.randint(0, f_max + 1, (b,), generator=gen)
        s = (torch.rand(b, generator=gen) * (nm - w).clamp(min=1)).long()
        idx = torch.arange(nm)
        m = (idx[None] >= s[:, None]) & (idx[None] < (s + w)[:, None])
        x = torch.where(m[:, None, :, None].to(x.device), fill, x)
    for _ in range(n_time):
        w = torch.randint(0, t_max + 1, (b,), generator=gen)
        s = (torch.rand(b, generator=gen) * (nt - w).clamp(min=1)).long()
        idx = torch.arange(nt)
        m = (idx[None] >= s[:, None]) & (idx[None] < (s + w)[:, None])
        x = torch.where(m[:, None, None, :].to(x.device), fill, x)
    return x


def _lr_scheduler(opt, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total_steps, 1),
                                                   pct_start=0.2)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


@dataclass
class EpochLog:
    """One epoch's figures. With valid trained on (``train+valid``) there is no held-out valid
    figure: ``valid_loss`` and ``valid_acc`` are None."""

    epoch: int
    train_loss: float
    train_acc: float
    valid_loss: float | None
    valid_acc: float | None
    lr: float
    seconds: float


@dataclass
class _Data:
    """The tracks of one run; valid excerpts follow the valid tracks (selection pools both, metrics never do)."""

    tracks: list[Track]  # every track found
    parts: dict[str, list[Track]]
    labels: list[str]
    train: list[Track]
    valid: list[Track]  # empty when valid is trained on
    n_train: int  # tracks, without excerpts
    n_valid: int
    excerpts: Excerpts | None


@dataclass
class _Progress:
    """What a checkpoint keeps besides the network, optimiser and random states."""

    epoch: int = 0
    best: tuple[float, float] | None = None  # valid (accuracy, NLL) of the kept epoch
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)


def train(cfg: TrainConfig, *, resume: bool = False,
          on_step: Callable[[int, int, float], None] | None = None,
          on_epoch: Callable[[EpochLog], None] | None = None,
          on_note: Callable[[str], None] | None = None) -> Path:
    """Train, select on valid, calibrate, save `<out>/<name>.{safetensors,json}`; returns the card path.

    With valid trained on there is nothing to select on: the last epoch is kept and the
    temperature stays 1. The card records ``cfg.command`` as the command that made it.
    """
    note = on_note or (lambda s: None)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    random.seed(cfg.seed)
    device = resolve_device(cfg.device)
    data = load_data(cfg, note)  # a data folder that is not GTZAN fails here, before --out is made
    out.mkdir(parents=True, exist_ok=True)
    card = make_card(cfg, data.labels)
    net = build_net(card).to(device)
    note(f"{cfg.arch} with {count_parameters(net):,} parameters on {device.type}")
    sampler = common.CropSampler(data.train, data.labels, caches=_train_caches(cfg, data.train, note),
                                 seg_samples=card.audio.segment_samples, balance=cfg.balance,
                                 offline_p=cfg.aug_offline_p, rng=rng)
    valid_cache = wave_cache(data.valid, cfg.sample_rate, jobs=cfg.jobs) if data.valid else None
    steps = cfg.steps_per_epoch or max(1, math.ceil(8 * len(data.train) / cfg.batch_size))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _lr_scheduler(opt, cfg, steps * cfg.epochs)
    ckpt_path, best_path = out / "checkpoint.pt", out / "best_state.safetensors"
    run = _Progress()
    if resume and ckpt_path.exists():
        run = _load_checkpoint(ckpt_path, net, opt, sched, rng, gen)
        note(f"resumed after epoch {run.epoch}")
    elif resume:
        note(f"no checkpoint in {out}: starting from scratch")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    for epoch in range(run.epoch, cfg.epochs):
        t0 = time.time()
        loss, acc = _train_epoch(net, sampler, opt, sched, cfg, rng, gen, device, steps, len(data.labels),
                                 on_step)
        v_acc = v_loss = None
        if valid_cache is not None:
            rep = _report(_net_logits(net, card, data.valid, valid_cache, device), card, data.valid)
            v_acc, v_loss = rep["accuracy"]["soft"], rep["nll"]
        log = EpochLog(epoch + 1, loss, acc, v_loss, v_acc, float(opt.param_groups[0]["lr"]), time.time() - t0)
        run.epoch = epoch + 1
        run.history.append(asdict(log))
        if v_acc is None or common.better(v_acc, v_loss, run.best):  # nothing held out: keep the last epoch
            run.best = None if v_acc is None else (v_acc, v_loss)
            run.bad_epochs = 0
            _save_state(net, best_path)
        else:
            run.bad_epochs += 1
        _save_checkpoint(ckpt_path, net, opt, sched, rng, gen, run)
        _write_log(out, run.history)
        if on_epoch:
            on_epoch(log)
        if valid_cache is not None and run.bad_epochs >= cfg.patience:
            note(f"early stop: no valid improvement for {cfg.patience} epochs")
            break

    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(best_path)))
    net.eval()
    _measure(net, card, cfg, data, valid_cache, device, note)
    card.training = _training_record(cfg, data, run)
    _plot_curves(out, run.history)
    return save_model(net, card, out, half=cfg.half_weights)


def load_data(cfg: TrainConfig, note: Callable[[str], None] = lambda s: None) -> _Data:
    """Scan, split and (with `cfg.extra`) add the excerpts: what a run trains and selects on.

    `DatasetError` for a folder not in GTZAN layout, ValueError for a split with no training tracks."""
    tracks = scan(cfg.data_dir)
    parts = split(tracks, cfg.split, cfg.seed, cfg.fold)
    train_tracks = [t for s in cfg.train_subsets for t in parts[s]]
    valid_tracks = parts["valid"] if "valid" not in cfg.train_subsets else []
    if not train_tracks:
        raise ValueError("no training tracks in this split")
    note(f"{len(tracks)} tracks found; split {cfg.split}: "
         + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
    data = _Data(tracks, parts, labels_of(tracks), train_tracks, valid_tracks, len(train_tracks), len(valid_tracks),
                 load_excerpts(cfg.extra, tracks, cfg.split) if cfg.extra else None)
    if data.excerpts is not None:
        data.train = data.train + data.excerpts.tracks(*cfg.train_subsets)
        data.valid = data.valid + (data.excerpts.parts["valid"] if data.valid else [])
        note("excerpts: " + ", ".join(f"{k} {v}" for k, v in data.excerpts.counts().items()))
    return data


def _train_caches(cfg: TrainConfig, tracks: list[Track], note: Callable[[str], None]) -> list[WaveCache]:
    """The training tracks' waves, then one cache per precomputed pitch shift / time stretch."""
    caches = [wave_cache(tracks, cfg.sample_rate, jobs=cfg.jobs)]
    for v in [f"ps{p:+g}" for p in cfg.aug_pitch] + [f"ts{r:g}" for r in cfg.aug_stretch]:
        note(f"precomputing augmentation {v} (once; cached)")
        caches.append(wave_cache(tracks, cfg.sample_rate, variant=v, jobs=cfg.jobs))
    return caches


def _train_epoch(net, sampler: common.CropSampler, opt, sched, cfg: TrainConfig, rng: np.random.Generator,
                 gen: torch.Generator, device, steps: int, n_classes: int,
                 on_step: Callable[[int, int, float], None] | None) -> tuple[float, float]:
    """One epoch of `steps` batches; returns the mean loss and crop accuracy."""
    net.train()
    tot_loss, tot_acc = 0.0, 0.0
    sa = (lambda s: spec_augment(s, gen)) if cfg.aug_specaugment and cfg.arch != "cnn1d" else None
    for step in range(steps):
        xb, yb = sampler.batch(cfg.batch_size)
        x = torch.from_numpy(common.augment_waves(xb, cfg.aug_gain_db, cfg.aug_noise_snr_db, rng)).to(device)
        y = torch.from_numpy(yb).long().to(device)
        x, target = common.mixup(x, F.one_hot(y, n_classes).float(), alpha=cfg.aug_mixup, rng=rng, gen=gen)
        logits = net(x, spec_transform=sa)
        loss = F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        sched.step()
        tot_loss += float(loss.detach())
        tot_acc += float((logits.argmax(1) == y).float().mean())
        if on_step:
            on_step(step + 1, steps, float(loss.detach()))
    return tot_loss / steps, tot_acc / steps


def _save_state(net, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(path))


def _save_checkpoint(path: Path, net, opt, sched, rng: np.random.Generator, gen: torch.Generator,
                     run: _Progress) -> None:
    best_acc, best_loss = run.best if run.best is not None else (None, None)
    torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "epoch": run.epoch, "best_acc": best_acc, "best_loss": best_loss,
                "bad_epochs": run.bad_epochs, "history": run.history, "np_rng": rng.bit_generator.state,
                "torch_gen": gen.get_state(), "torch_rng": torch.get_rng_state()}, path)


def _load_checkpoint(path: Path, net, opt, sched, rng: np.random.Generator, gen: torch.Generator) -> _Progress:
    """Restore the network, optimiser, schedule and random states in place; returns where the run was."""
    # tensors, numbers, strings and dicts only: a checkpoint from elsewhere cannot run code when resumed
    ck = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    sched.load_state_dict(ck["sched"])
    rng.bit_generator.state = ck["np_rng"]
    gen.set_state(ck["torch_gen"])
    torch.set_rng_state(ck["torch_rng"])
    best = None if ck["best_acc"] is None or ck["best_acc"] < 0 else (ck["best_acc"], ck["best_loss"])
    return _Progress(ck["epoch"], best, ck["bad_epochs"], ck["history"])


def _measure(net, card: ModelCard, cfg: TrainConfig, data: _Data, valid_cache: WaveCache | None, device,
             note: Callable[[str], None]) -> None:
    """Calibrate on valid (when held out), then measure valid, test and the test excerpts into the card."""
    if valid_cache is not None:
        logits = _net_logits(net, card, data.valid, valid_cache, device)
        y_valid = np.array([data.labels.index(t.genre) for t in data.valid])
        card.temperature = common.calibrate_temperature(logits, y_valid)
        note(f"temperature {card.temperature:.3f} (calibrated on valid)")
        k = data.n_valid
        card.metrics["valid"] = SubsetMetrics.from_report(_report(logits[:k], card, data.valid[:k]))
        if len(data.valid) > k:
            card.metrics["valid_excerpts"] = SubsetMetrics.from_report(_report(logits[k:], card, data.valid[k:]))
    subsets = [("test" if cfg.split != "random" else "test_random_split_leaky", data.parts["test"], cfg.jobs)]
    if data.excerpts is not None:
        subsets.append(("test_excerpts", data.excerpts.parts["test"], 1))
    for key, tracks, jobs in subsets:
        if tracks:
            lg = _net_logits(net, card, tracks, wave_cache(tracks, cfg.sample_rate, jobs=jobs), device)
            card.metrics[key] = SubsetMetrics.from_report(_report(lg, card, tracks))


def _training_record(cfg: TrainConfig, data: _Data, run: _Progress) -> dict[str, Any]:
    """The card's ``training``: data, split, sizes, the selected valid accuracy, command and config."""
    return {
        "data": "GTZAN (" + str(len(data.tracks)) + " tracks present in the data folder)",
        "split": cfg.split, "train_subsets": cfg.train_subsets,
        "n_train_tracks": data.n_train, "n_valid_tracks": data.n_valid,
        "n_test_tracks": len(data.parts["test"]), "epochs_run": len(run.history),
        **({"excerpts": data.excerpts.describe(tuple(cfg.train_subsets))} if data.excerpts is not None else {}),
        "best_valid_accuracy": run.best[0] if run.best is not None else None,
        "command": cfg.command,
        "config": asdict(cfg),
    }


def _net_logits(net, card: ModelCard, tracks: list[Track], cache: WaveCache, device,
                batch: int = 64) -> list[np.ndarray]:
    """Each track's sub-track logits, as classify would cut them (eval mode, restored afterwards)."""
    was_training = net.training
    net.eval()
    idx = cache.index_of()
    segs = [ev.track_segments(cache, idx[t.id], card.audio.segment_samples, card.audio.max_segments)
            for t in tracks]
    out = common.net_logits(net, segs, device, batch)
    if was_training:
        net.train()
    return out


def _report(logits: list[np.ndarray], card: ModelCard, tracks: list[Track]) -> dict:
    """Track-level metrics from sub-track logits, with the card's temperature (as Model.predict)."""
    probs = [common.softmax(lg / float(card.temperature or 1.0)) for lg in logits]
    return ev.report(ev.Predictions(tracks, card.labels, probs))


def _write_log(out: Path, history: list[dict]) -> None:
    with open(out / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    (out / "log.json").write_text(json.dumps(history, indent=1))


def _plot_curves(out: Path, history: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    held_out = any(h["valid_acc"] is not None for h in history)  # None: valid was trained on
    a.plot(ep, [h["train_loss"] for h in history], label="train loss")
    if held_out:
        a.plot(ep, [h["valid_loss"] for h in history], label="valid NLL (track)")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(ep, [h["train_acc"] for h in history], label="train acc (crops)")
    if held_out:
        b.plot(ep, [h["valid_acc"] for h in history], label="valid acc (track, soft)")
    b.set_xlabel("epoch")
    b.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
