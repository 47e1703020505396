"""`genretag transfer`: genre models from the pretrained musicnn tagger (head, fine-tune, zero-shot, ensemble)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from genretag.cli.app import app, command_line, fail, info
from genretag.cli.common import Device, DeviceOpt
from genretag.cli.train import ExtraOpt, config_from_flags, report_card


class Mode(str, Enum):
    head = "head"
    finetune = "finetune"
    zeroshot = "zeroshot"
    ensemble = "ensemble"


@app.command("transfer")
def transfer_cmd(
    ctx: typer.Context,
    data_dir: Annotated[Path, typer.Argument(help="Dataset folder in GTZAN layout: <genre>/<genre>.NNNNN.<ext>.")],
    mode: Annotated[Mode, typer.Option("--mode", help="head: train a head on frozen musicnn embeddings; finetune: "
                                       "then fine-tune the trunk; zeroshot: MSD tags -> genres, no training; "
                                       "ensemble: average --member models.")] = Mode.head,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: logs and the model.")] = Path("runs/transfer"),
    name: Annotated[str | None, typer.Option(help="Model name (default: gtzan-musicnn[-zeroshot|-ensemble]).")] = None,
    split: Annotated[str, typer.Option("--split", help="fault-filtered (artist-aware), random (leaky) or kfold:K.")] = "fault-filtered",
    fold: Annotated[int, typer.Option(help="Test fold for kfold:K.")] = 0,
    extra: ExtraOpt = None,
    extra_repeat: Annotated[str | None, typer.Option(help="Head: how many times each excerpt's embedding counts "
                                                    "in training, tried on valid (e.g. '1,4'; a track gives 19).")] = None,
    augment_copies: Annotated[str | None, typer.Option(help="Head: library versions of every training track "
                                                      "added to training (compression to -14..-9 dB RMS, EQ tilt "
                                                      "+-3..6 dB/decade, MP3 96-320 kbps; drawn per track, made "
                                                      "before embedding, cached), tried on valid, e.g. '0,2'; "
                                                      "0 = clean audio only.")] = None,
    heads: Annotated[str | None, typer.Option(help="Head: bag sizes tried on valid, e.g. '1,3': the chosen head "
                                             "trained from N seeds, logits averaged (N heads, one trunk pass).")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Fine-tuning epochs.")] = 8,
    seed: int = 0,
    base_model: Annotated[str, typer.Option(help="The musicnn tagger card to start from.")] = "msd-musicnn",
    freq_stride: Annotated[int, typer.Option(min=1, max=8, help="Run the front-end convolutions at every N-th mel "
                                             "band: faster (2: network ~1.3x), embeddings approximated (1 = exact).")] = 1,
    poolings: Annotated[str | None, typer.Option("--pooling", help="Head pooling sets tried on valid: all, midend, penultimate (comma-separated).")] = None,
    hidden: Annotated[str | None, typer.Option(help="Head hidden sizes tried on valid; 0 = logistic regression (e.g. '0,256').")] = None,
    weight_decays: Annotated[str | None, typer.Option("--weight-decay", help="Head weight decays tried on valid (e.g. '0.1,1,10'; AdamW's decoupled decay).")] = None,
    head_epochs: Annotated[int, typer.Option(min=5)] = 60,
    prior_weights: Annotated[str | None, typer.Option("--prior-weight", help="Head: weights of the zero-shot prior (MSD tags mapped to "
                                                    "genres, added to the head's log-probabilities) tried on valid, "
                                                    "e.g. '0,0.5,1'; 0 = none.")] = None,
    prior_in_training: Annotated[bool, typer.Option("--prior-in-training", help="Head: train the heads on top of "
                                                    "each zero-shot prior of --prior-weight (w > 0; both mappings), "
                                                    "so a head learns what to add to the prior; the prior is chosen "
                                                    "with the head grid on valid.")] = False,
    refit: Annotated[bool, typer.Option("--refit", help="Head: after choosing it on valid, train the chosen head "
                                        "again on train + valid (same epochs; valid is then no longer held out).")] = False,
    lr: Annotated[float, typer.Option(help="Fine-tuning learning rate of the trunk (the head gets 10x).")] = 1e-4,
    finetune_from: Annotated[str, typer.Option(help="First trainable trunk stage: front (everything), midend or backend.")] = "midend",
    crops_per_track: Annotated[int, typer.Option(min=1, help="Fine-tuning: random crops per training track per epoch.")] = 4,
    aug_mixup: Annotated[float, typer.Option("--mixup", help="Fine-tuning mixup Beta alpha; 0 disables.")] = 0.0,
    aug_gain_db: Annotated[float, typer.Option("--gain-db", help="Random gain range in dB; 0 disables.")] = 6.0,
    aug_noise_snr_db: Annotated[float, typer.Option("--noise-snr-db", help="Lowest SNR of added noise; 0 disables.")] = 30.0,
    from_head: Annotated[str | None, typer.Option(help="Fine-tune this head model instead of training a new head.")] = None,
    member: Annotated[list[str] | None, typer.Option("--member", help="Ensemble member (card path or name); repeat. Every subset is tried on valid.")] = None,
    half_weights: Annotated[bool, typer.Option(" /--full-precision", show_default=False, help="Store float32 weights (default float16).")] = True,
    device: DeviceOpt = Device.auto,
) -> None:
    """Genre models from the pretrained musicnn MSD tagger: selected on valid, measured on test.

    Example: genretag transfer ../shared/data/gtzan --mode finetune --epochs 8 --out runs/transfer-ft
    """
    from genretag.training.transfer import (
        POOLING_CHOICES,
        TransferConfig,
        run_ensemble,
        run_finetune,
        run_head,
        run_zeroshot,
    )

    try:
        cfg = config_from_flags(TransferConfig, ctx, {})
    except ValueError as e:
        fail(f"bad number in a list option: {e}", 2)
    cfg.name = name or {"zeroshot": "gtzan-musicnn-zeroshot", "ensemble": "gtzan-ensemble"}.get(mode.value, "gtzan-musicnn")
    cfg.command = command_line(ctx)
    bad = [p for p in cfg.poolings if p not in POOLING_CHOICES]
    if bad:
        fail(f"unknown --pooling {', '.join(bad)} (all, midend or penultimate)", 2)
    if any(n < 1 for n in cfg.heads):
        fail("--heads takes sizes >= 1", 2)
    if any(c < 0 for c in cfg.augment_copies):
        fail("--augment-copies takes counts >= 0", 2)
    if finetune_from not in ("front", "midend", "backend"):
        fail("--finetune-from must be front, midend or backend", 2)
    if mode is Mode.ensemble and len(member or []) < 2:
        fail("--mode ensemble needs at least two --member models", 2)
    try:
        if mode is Mode.head:
            card_path = run_head(cfg, note=info)[0]
        elif mode is Mode.finetune:
            card_path = run_finetune(cfg, note=info)
        elif mode is Mode.zeroshot:
            card_path = run_zeroshot(cfg, note=info)
        else:
            card_path = run_ensemble(cfg, list(member or []), note=info)
    except ValueError as e:
        fail(str(e), 2)
    report_card(card_path)
