"""What a transfer run depends on: `TransferConfig`, saved with the run and in the model card, and
the pooling sets a head may read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genretag.nets import musicnn as M
from genretag.training.common import config_from_dict

# Pooling sets tried for the head (names from genretag.nets.musicnn.POOLABLE).
POOLING_CHOICES: dict[str, list[str]] = {
    "all": list(M.DEFAULT_POOLING),
    "midend": ["timbral", "temporal", "cnn1", "cnn2", "cnn3"],  # musicnn's mean_pool + max_pool
    "penultimate": ["penultimate"],
}


@dataclass
class TransferConfig:
    """Everything a transfer run depends on; saved with the run and in the model card."""

    data_dir: str = ""
    out: str = "runs/transfer"
    name: str = "gtzan-musicnn"
    mode: str = "head"  # head | finetune | zeroshot
    base_model: str = "msd-musicnn"  # the tagger whose trunk is reused
    freq_stride: int = 1  # front-end mel stride (musicnn.MusicnnNet.set_freq_stride): speed vs. fidelity
    split: str = "fault-filtered"
    fold: int = 0
    seed: int = 0
    extra: str = ""  # excerpts folder (training/excerpts.py): its train (+ valid) excerpts train, valid selects
    extra_repeat: list[int] = field(default_factory=lambda: [1])  # each excerpt embedding counts N times (grid)
    # library versions (training/augment.py) of every training track added beside the clean ones (grid;
    # 0 = none): compression + loudness, EQ tilt, MP3 round trip, drawn per track and copy
    augment_copies: list[int] = field(default_factory=lambda: [0])
    heads: list[int] = field(default_factory=lambda: [1])  # head bag sizes tried on valid (seeds seed..seed+n-1)
    # head (grid searched on valid)
    poolings: list[str] = field(default_factory=lambda: ["all", "midend", "penultimate"])
    hidden: list[int] = field(default_factory=lambda: [0, 256])
    weight_decays: list[float] = field(default_factory=lambda: [0.1, 1.0, 10.0])  # AdamW (decoupled)
    head_dropout: float = 0.5
    head_epochs: int = 60
    head_lr: float = 1e-3
    head_batch: int = 128
    label_smoothing: float = 0.1
    refit: bool = False  # after selection on valid: train the chosen head again on train + valid
    # zero-shot prior: head logits + w * log(zero-shot score) of the MSD tags; w (0 = none) and the
    # mapping (zeroshot_mappings) chosen on valid after the head
    prior_weights: list[float] = field(default_factory=lambda: [0.0])
    # the prior inside training: each (mapping, weight > 0) is added to the head's logits in its loss,
    # so the head learns what to add to the prior; mapping and weight join the head grid
    prior_in_training: bool = False
    train_crops: int = 19  # embeddings per training track (overlapping crops; 10 eval sub-tracks elsewhere)
    # finetune
    epochs: int = 8
    crops_per_track: int = 4  # random crops per training track per epoch
    batch_size: int = 16
    lr: float = 1e-4  # trunk (the head gets 10x)
    weight_decay: float = 1e-2
    finetune_from: str = "midend"  # front | midend | backend: first trainable trunk stage
    aug_gain_db: float = 6.0
    aug_noise_snr_db: float = 30.0
    aug_mixup: float = 0.0
    from_head: str = ""  # finetune: start from this head model's card instead of training one
    # zeroshot
    zeroshot_mappings: list[str] = field(default_factory=lambda: ["strict", "proxy"])
    zeroshot_aggs: list[str] = field(default_factory=lambda: ["max", "mean"])
    half_weights: bool = True
    device: str = "auto"
    jobs: int = 1
    command: str = ""  # the command line that started the run, recorded in the card (the CLI passes its own)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TransferConfig":
        """From a mapping of field names (e.g. a --params file); `ConfigError` naming a bad key or value."""
        return config_from_dict(cls, d)
