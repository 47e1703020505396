"""Hyper-parameter search with Optuna over `genretag train`'s TrainConfig.

Each trial is a short training run; the objective is the valid split's
track-level accuracy (ties: lower NLL), reported every epoch so that the
median pruner can stop hopeless trials. The study lives in SQLite, so an
interrupted search resumes where it stopped; the best parameters are written
as a JSON file that `genretag train --params FILE` reads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from genretag.errors import GenretagError, one_line
from genretag.training.train import TrainConfig, load_data, train


class _Pruned(Exception):
    pass


def suggest(trial, base: TrainConfig) -> TrainConfig:
    """The search space: optimiser, regularisation, augmentation strengths, sub-track length, width."""
    width = trial.suggest_categorical("width", [16, 24, 32])
    return replace(
        base,
        lr=trial.suggest_float("lr", 3e-4, 5e-3, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-4, 1e-1, log=True),
        dropout=trial.suggest_float("dropout", 0.0, 0.6),
        label_smoothing=trial.suggest_float("label_smoothing", 0.0, 0.2),
        aug_mixup=trial.suggest_float("aug_mixup", 0.0, 0.5),
        aug_gain_db=trial.suggest_float("aug_gain_db", 0.0, 12.0),
        aug_noise_snr_db=trial.suggest_categorical("aug_noise_snr_db", [0.0, 20.0, 30.0]),
        aug_specaugment=trial.suggest_categorical("aug_specaugment", [True, False]),
        segment_seconds=trial.suggest_categorical("segment_seconds", [2.0, 3.0, 4.0]),
        widths=[width, width * 2, width * 4, width * 8] if base.arch == "resnet" else base.widths,
    )


def searched(trial, base: TrainConfig) -> dict:
    """The TrainConfig fields the search set in `trial`, as `suggest` set them (``width`` becomes
    ``widths``, for resnet only): the budget (epochs, patience, steps, device, jobs) stays out, so
    that `train --params` takes it from its own flags."""
    cfg = asdict(suggest(trial, base))
    keys = [k for k in trial.params if k != "width"] + (["widths"] if base.arch == "resnet" else [])
    return {k: cfg[k] for k in keys}


def check_data(base: TrainConfig) -> None:
    """Load the data as each trial's `train` will (train.load_data), so that a folder not in GTZAN
    layout fails before any study exists; trials are scored on valid, so valid must hold tracks."""
    if not load_data(base).valid:
        raise ValueError(f"no valid tracks in {base.data_dir} with split {base.split}: trials are scored on valid")


def trial_error(number: int, exc: Exception) -> GenretagError:
    """The one-line error for trial `number` that raised `exc`: a `GenretagError` keeps its class and
    exit code; a ValueError (data or settings train refuses) is a usage error (2), as `genretag train`
    makes it; anything else failed at run time (1)."""
    if isinstance(exc, GenretagError):
        return type(exc)(f"trial {number}: {exc}", exc.exit_code)
    return GenretagError(f"trial {number} failed: {one_line(exc)}", 2 if isinstance(exc, ValueError) else 1)


#: The trial states that spend the --trials budget: a FAILED trial (an error) ran nothing to compare.
SPENT = ("COMPLETE", "PRUNED")


def tune(base: TrainConfig, trials: int, *, storage: str, study_name: str = "genretag",
         out: str | Path = "runs/tune", on_note: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) a study of `trials` complete or pruned trials; write `<out>/best_params.json`
    (the searched fields of the best trial); return it.

    The data folder is scanned and split first: a folder that is not in GTZAN layout is a `DatasetError`
    before `out` or the study is made. A trial that raises stops the study with a one-line
    `GenretagError` (see `trial_error`): the errors a trial meets (a file that does not decode, a
    split without tracks) are the same in the next trial, so going on would only repeat them. The
    failed trial stays in the study as FAILED and does not count toward `trials`: a resumed study
    runs until `trials` trials completed or were pruned."""
    import optuna

    note = on_note or (lambda s: None)
    check_data(base)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # ERROR: Optuna logs a failed trial as a WARNING with the whole traceback; the error it re-raises
    # is the one line the caller shows.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=study_name, storage=storage, direction="maximize",
                                load_if_exists=True,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2))

    def objective(trial) -> float:
        cfg = suggest(trial, base)
        cfg = replace(cfg, out=str(out / f"trial{trial.number:03d}"), name=f"trial{trial.number:03d}")

        def on_epoch(log) -> None:
            trial.report(log.valid_acc, log.epoch)
            if trial.should_prune():
                raise _Pruned()

        try:
            card_path = train(cfg, on_epoch=on_epoch)
        except _Pruned:
            raise optuna.TrialPruned() from None
        except Exception as e:
            raise trial_error(trial.number, e) from e
        card = json.loads(Path(card_path).read_text())
        acc = card["training"]["best_valid_accuracy"]
        note(f"trial {trial.number}: valid accuracy {acc:.1%}")
        return float(acc)

    done = sum(1 for t in study.trials if t.state.name in SPENT)
    study.optimize(objective, n_trials=max(0, trials - done))
    best = searched(study.best_trial, base)
    (out / "best_params.json").write_text(json.dumps(best, indent=2))
    return {"best_value": study.best_value, "best_params": best, "trials": len(study.trials)}
