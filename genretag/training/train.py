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
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from genretag.nets.cnn import build_net, count_parameters
from genretag.store.card import GTZAN_GENRES, AudioParams, MelParams, ModelCard
from genretag.store.load import resolve_device, save_model
from genretag.training import evaluate as ev
from genretag.training.dataset import Track, WaveCache, scan, split, wave_cache
from genretag.training.excerpts import load_excerpts


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
    dropout: float = 0.3
    sample_rate: int = 22050
    segment_seconds: float = 3.0
    max_segments: int = 10
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    epochs: int = 30
    steps_per_epoch: int = 0  # 0: about 8 crops per training track per epoch
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
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
    jobs: int = 2
    half_weights: bool = True  # store weights as float16 (halves the file, same accuracy)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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


def spec_augment(x: torch.Tensor, gen: torch.Generator, n_freq: int = 2, f_max: int = 15,
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


class CropSampler:
    """Draws random sub-track crops from training tracks, balanced across genres."""

    def __init__(self, tracks: list[Track], labels: list[str], caches: list[WaveCache],
                 seg_samples: int, balance: bool, offline_p: float, rng: np.random.Generator) -> None:
        self.tracks, self.caches, self.seg = tracks, caches, seg_samples
        self.offline_p, self.rng = offline_p, rng
        self.y = np.array([labels.index(t.genre) for t in tracks])
        counts = np.bincount(self.y, minlength=len(labels)).astype(float)
        w = 1.0 / counts[self.y] if balance else np.ones(len(tracks))
        self.p = w / w.sum()
        self.idx = [c.index_of() for c in caches]

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        pick = self.rng.choice(len(self.tracks), size=n, p=self.p)
        out = np.zeros((n, self.seg), dtype=np.float32)
        for k, i in enumerate(pick):
            c = 0
            if len(self.caches) > 1 and self.rng.random() < self.offline_p:
                c = int(self.rng.integers(1, len(self.caches)))
            cache = self.caches[c]
            y = cache.wave(self.idx[c][self.tracks[i].id])
            start = int(self.rng.integers(0, max(1, len(y) - self.seg + 1)))
            chunk = y[start:start + self.seg]
            out[k, :len(chunk)] = chunk
        return out, self.y[pick]


def augment_waves(x: np.ndarray, cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """Gain and white noise, per example."""
    n = x.shape[0]
    if cfg.aug_gain_db > 0:
        g = 10 ** (rng.uniform(-cfg.aug_gain_db, cfg.aug_gain_db, size=(n, 1)) / 20)
        x = x * g.astype(np.float32)
    if cfg.aug_noise_snr_db > 0:
        snr = rng.uniform(cfg.aug_noise_snr_db, cfg.aug_noise_snr_db + 20, size=(n, 1))
        power = (x ** 2).mean(axis=1, keepdims=True) + 1e-10
        noise = rng.standard_normal(x.shape).astype(np.float32) * np.sqrt(power / 10 ** (snr / 10)).astype(np.float32)
        x = x + noise
    return x.astype(np.float32)


def calibrate_temperature(seg_logits: list[np.ndarray], y: np.ndarray) -> float:
    """Temperature minimising the track-level (soft vote) NLL on held-out tracks."""
    best_t, best = 1.0, math.inf
    for t in np.exp(np.linspace(np.log(0.3), np.log(5.0), 60)):
        probs = np.array([_softmax(lg / t).mean(axis=0) for lg in seg_logits])
        loss = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1)).mean()
        if loss < best:
            best_t, best = float(t), float(loss)
    return best_t


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _lr_scheduler(opt, cfg: TrainConfig, total_steps: int):
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total_steps, 1),
                                                   pct_start=0.2)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_acc: float
    valid_loss: float
    valid_acc: float
    lr: float
    seconds: float


def train(cfg: TrainConfig, resume: bool = False,
          on_step: Callable[[int, int, float], None] | None = None,
          on_epoch: Callable[[EpochLog], None] | None = None,
          on_note: Callable[[str], None] | None = None) -> Path:
    """Train, select on valid, calibrate, save `<out>/<name>.{safetensors,json}`; returns the card path."""
    note = on_note or (lambda s: None)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    random.seed(cfg.seed)
    device = resolve_device(cfg.device)

    tracks = scan(cfg.data_dir)
    parts = split(tracks, cfg.split, cfg.seed, cfg.fold)
    train_tracks = [t for s in cfg.train_subsets for t in parts[s]]
    valid_tracks = parts["valid"] if "valid" not in cfg.train_subsets else []
    present = sorted({t.genre for t in tracks})
    labels = list(GTZAN_GENRES) if set(present) <= set(GTZAN_GENRES) else present
    if not train_tracks:
        raise ValueError("no training tracks in this split")
    note(f"{len(tracks)} tracks found; split {cfg.split}: "
         + ", ".join(f"{k} {len(v)}" for k, v in parts.items()))
    excerpts = load_excerpts(cfg.extra, tracks, cfg.split) if cfg.extra else None
    n_train_tracks, n_valid_tracks = len(train_tracks), len(valid_tracks)  # valid excerpts follow them: selection pools both, metrics never do
    if excerpts is not None:
        train_tracks = train_tracks + excerpts.tracks(*cfg.train_subsets)
        valid_tracks = valid_tracks + (excerpts.parts["valid"] if valid_tracks else [])
        note("excerpts: " + ", ".join(f"{k} {v}" for k, v in excerpts.counts().items()))

    card = make_card(cfg, labels)
    net = build_net(card).to(device)
    note(f"{cfg.arch} with {count_parameters(net):,} parameters on {device.type}")
    seg = card.audio.segment_samples

    caches = [wave_cache(train_tracks, cfg.sample_rate, jobs=cfg.jobs)]
    for v in [f"ps{p:+g}" for p in cfg.aug_pitch] + [f"ts{r:g}" for r in cfg.aug_stretch]:
        note(f"precomputing augmentation {v} (once; cached)")
        caches.append(wave_cache(train_tracks, cfg.sample_rate, variant=v, jobs=cfg.jobs))
    valid_cache = wave_cache(valid_tracks, cfg.sample_rate, jobs=cfg.jobs) if valid_tracks else None

    sampler = CropSampler(train_tracks, labels, caches, seg, cfg.balance, cfg.aug_offline_p, rng)
    steps = cfg.steps_per_epoch or max(1, math.ceil(8 * len(train_tracks) / cfg.batch_size))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _lr_scheduler(opt, cfg, steps * cfg.epochs)
    history: list[dict] = []
    start_epoch, best_acc, best_loss, bad_epochs = 0, -1.0, math.inf, 0
    ckpt_path = out / "checkpoint.pt"
    best_path = out / "best_state.safetensors"
    if resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        start_epoch, best_acc, best_loss, bad_epochs = ck["epoch"], ck["best_acc"], ck["best_loss"], ck["bad_epochs"]
        history = ck["history"]
        rng.bit_generator.state = ck["np_rng"]
        gen.set_state(ck["torch_gen"])
        torch.set_rng_state(ck["torch_rng"])
        sampler.rng = rng
        note(f"resumed after epoch {start_epoch}")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    from safetensors.torch import load_file, save_file

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        net.train()
        tot_loss, tot_acc = 0.0, 0.0
        for step in range(steps):
            xb, yb = sampler.batch(cfg.batch_size)
            xb = augment_waves(xb, cfg, rng)
            x = torch.from_numpy(xb).to(device)
            y = torch.from_numpy(yb).long().to(device)
            target = F.one_hot(y, len(labels)).float()
            if cfg.aug_mixup > 0:
                lam = float(rng.beta(cfg.aug_mixup, cfg.aug_mixup))
                perm = torch.randperm(x.shape[0], generator=gen).to(device)
                x = lam * x + (1 - lam) * x[perm]
                target = lam * target + (1 - lam) * target[perm]
            sa = (lambda s: spec_augment(s, gen)) if cfg.aug_specaugment and cfg.arch != "cnn1d" else None
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
        if valid_cache is not None:
            rep = _report(_net_logits(net, card, valid_tracks, valid_cache, device), card, valid_tracks)
            v_acc, v_loss = rep["accuracy"]["soft"], rep["nll"]
        else:  # training on train+valid: no selection, keep the last epoch
            v_acc, v_loss = float(epoch), 0.0
        log = EpochLog(epoch + 1, tot_loss / steps, tot_acc / steps, v_loss, v_acc,
                       float(opt.param_groups[0]["lr"]), time.time() - t0)
        history.append(asdict(log))
        improved = v_acc > best_acc or (v_acc == best_acc and v_loss < best_loss)
        if improved:
            best_acc, best_loss, bad_epochs = v_acc, v_loss, 0
            save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(best_path))
        else:
            bad_epochs += 1
        torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch + 1, "best_acc": best_acc, "best_loss": best_loss,
                    "bad_epochs": bad_epochs, "history": history, "np_rng": rng.bit_generator.state,
                    "torch_gen": gen.get_state(), "torch_rng": torch.get_rng_state()}, ckpt_path)
        _write_log(out, history)
        if on_epoch:
            on_epoch(log)
        if valid_cache is not None and bad_epochs >= cfg.patience:
            note(f"early stop: no valid improvement for {cfg.patience} epochs")
            break

    net.load_state_dict(load_file(str(best_path)))
    net.eval()
    if valid_cache is not None:
        logits = _net_logits(net, card, valid_tracks, valid_cache, device)
        y_valid = np.array([labels.index(t.genre) for t in valid_tracks])
        card.temperature = calibrate_temperature(logits, y_valid)
        note(f"temperature {card.temperature:.3f} (calibrated on valid)")
        k = n_valid_tracks
        card.metrics["valid"] = _summary(_report(logits[:k], card, valid_tracks[:k]))
        if len(valid_tracks) > k:
            card.metrics["valid_excerpts"] = _summary(_report(logits[k:], card, valid_tracks[k:]))
    test_tracks = parts["test"]
    if test_tracks:
        test_cache = wave_cache(test_tracks, cfg.sample_rate, jobs=cfg.jobs)
        test_rep = _report(_net_logits(net, card, test_tracks, test_cache, device), card, test_tracks)
        card.metrics["test" if cfg.split != "random" else "test_random_split_leaky"] = _summary(test_rep)
    if excerpts is not None and excerpts.parts["test"]:
        tx = excerpts.parts["test"]
        tx_rep = _report(_net_logits(net, card, tx, wave_cache(tx, cfg.sample_rate), device), card, tx)
        card.metrics["test_excerpts"] = _summary(tx_rep)
    card.training = {
        "data": "GTZAN (" + str(len(tracks)) + " tracks present in the data folder)",
        "split": cfg.split, "train_subsets": cfg.train_subsets,
        "n_train_tracks": n_train_tracks, "n_valid_tracks": n_valid_tracks,
        "n_test_tracks": len(test_tracks), "epochs_run": len(history),
        **({"excerpts": excerpts.describe(tuple(cfg.train_subsets))} if excerpts is not None else {}),
        "best_valid_accuracy": best_acc if valid_cache is not None else None,
        "command": "genretag train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 1 and sys.argv[1] == "train" else "",
        "config": asdict(cfg),
    }
    _plot_curves(out, history)
    return save_model(net, card, out, half=cfg.half_weights)


def _summary(rep: dict) -> dict:
    return {"n_tracks": rep["n_tracks"], "accuracy_soft": rep["accuracy"]["soft"],
            "accuracy_hard": rep["accuracy"]["hard"], "accuracy_segment": rep["accuracy"]["segment"],
            "macro_f1": rep["macro_f1"], "ece": rep["ece"]}


def _net_logits(net, card: ModelCard, tracks: list[Track], cache: WaveCache, device,
                batch: int = 64) -> list[np.ndarray]:
    """Each track's sub-track logits, as classify would cut them (eval mode, restored afterwards)."""
    was_training = net.training
    net.eval()
    idx = cache.index_of()
    segs = [ev.track_segments(cache, idx[t.id], card.audio.segment_samples, card.audio.max_segments)
            for t in tracks]
    flat = np.concatenate(segs)
    with torch.inference_mode():
        out = np.concatenate([net(torch.from_numpy(flat[i:i + batch]).to(device)).cpu().numpy()
                              for i in range(0, len(flat), batch)])
    if was_training:
        net.train()
    return np.split(out, np.cumsum([len(s) for s in segs])[:-1])


def _report(logits: list[np.ndarray], card: ModelCard, tracks: list[Track]) -> dict:
    """Track-level metrics from sub-track logits, with the card's temperature (as LoadedNet.predict)."""
    probs = [_softmax(lg / float(card.temperature or 1.0)) for lg in logits]
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
    a.plot(ep, [h["train_loss"] for h in history], label="train loss")
    a.plot(ep, [h["valid_loss"] for h in history], label="valid NLL (track)")
    a.set_xlabel("epoch")
    a.legend()
    b.plot(ep, [h["train_acc"] for h in history], label="train acc (crops)")
    b.plot(ep, [h["valid_acc"] for h in history], label="valid acc (track, soft)")
    b.set_xlabel("epoch")
    b.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)
    plt.close(fig)
