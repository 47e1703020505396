"""`genretag train`, `genretag evaluate`: retrain and measure on a GTZAN-layout folder (evaluate: on any labelled music)."""

from __future__ import annotations

import json
import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genretag.cli.app import app, command_line, err_console, fail, info, out_console, state
from genretag.cli.common import MAX_SEGMENTS, Device, DeviceOpt, Precision, PrecisionOpt
from genretag.cli.common import JobsOpt as ClassifyJobsOpt
from genretag.cli.evaluate import (
    Layout,
    check_plot_backend,
    evaluate_labelled,
    relabel,
    threshold_line,
    user_map,
    write_outputs,
)
from genretag.errors import DatasetError
from genretag.pipeline.threads import MAX_JOBS
from genretag.training.limits import MAX_LABEL_SMOOTHING, MAX_SEGMENT_SECONDS, MIN_LR, MIN_SEGMENT_SECONDS

JobsOpt = Annotated[int, typer.Option("--jobs", "-j", min=1, max=MAX_JOBS, help=f"Audio decoding worker processes, 1-{MAX_JOBS}.")]
DataArg = Annotated[Path, typer.Argument(help="Dataset folder in GTZAN layout: <genre>/<genre>.NNNNN.<ext>.")]
SplitOpt = Annotated[str, typer.Option("--split", help="fault-filtered (artist-aware), random (leaky) or kfold:K.")]
ExtraOpt = Annotated[Path | None, typer.Option(
    "--extra", help="Excerpts folder with a manifest.csv (e.g. ../shared/data/gtzan-excerpts): each excerpt in its "
    "clip's fault-filtered subset; test excerpts are measured apart, never merged with the tracks.")]


C = TypeVar("C")


def config_from_flags(cls: type[C], ctx: typer.Context, base: dict[str, Any]) -> C:
    """A `cls` config (a dataclass) from `base` (e.g. a --params file), overlaid with the command's options.

    A command parameter named like a field of `cls` sets that field (its flag may read otherwise:
    ``aug_mixup`` is ``--mixup``), when it was given on the command line or `base` does not set
    the field; an option left out (None) keeps the field as it is. Paths become text, choices
    their value, and text for a list field its items: names separated by commas, spaces or
    ``+`` (``train+valid``), numbers by commas or spaces. ValueError on a bad number.
    """
    cfg = cls.from_dict(base)
    types = get_type_hints(cls)
    for name, value in ctx.params.items():
        if name not in types or value is None:
            continue
        if ctx.get_parameter_source(name).name == "DEFAULT" and name in base:
            continue
        setattr(cfg, name, _field_value(types[name], value))
    return cfg


def _field_value(kind: Any, value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if get_origin(kind) is list and isinstance(value, str):
        item = get_args(kind)[0]
        words = re.split(r"[\s,+]+" if item is str else r"[\s,]+", value.strip())
        return [item(w) for w in words if w]
    return value


#: --arch presets: the fields each sets (widths given with --widths win).
ARCH_PRESETS: dict[str, dict[str, Any]] = {
    "resnet": {"arch": "resnet"},
    "resnet18": {"arch": "resnet", "variant": "resnet18", "layers": [2, 2, 2, 2], "widths": [64, 128, 256, 512]},
    "resnet34": {"arch": "resnet", "variant": "resnet34", "layers": [3, 4, 6, 3], "widths": [64, 128, 256, 512]},
    "cnn1d": {"arch": "cnn1d", "widths": []},
}


def epoch_line(log) -> str:
    """The note printed after each training epoch (`genretag.training.train.EpochLog`)."""
    valid = (f"valid nll {log.valid_loss:.3f} acc {log.valid_acc:.1%}" if log.valid_acc is not None
             else "valid: trained on, no held-out figure")
    return f"epoch {log.epoch:3d}  train loss {log.train_loss:.3f} acc {log.train_acc:.1%}  {valid}  ({log.seconds:.0f} s)"


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    data_dir: DataArg,
    split: SplitOpt = "fault-filtered",
    fold: Annotated[int, typer.Option(help="Test fold for kfold:K.")] = 0,
    arch_preset: Annotated[str, typer.Option("--arch", help="resnet (narrow torchvision ResNet on log-mel), resnet18, resnet34, or cnn1d (raw waveform).")] = "resnet",
    widths: Annotated[str | None, typer.Option(help="ResNet stage widths, e.g. '32,64,128,256'.")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    batch_size: Annotated[int, typer.Option(min=2)] = 32,
    lr: Annotated[float, typer.Option(min=MIN_LR, help="AdamW learning rate (the peak of the one-cycle schedule).")] = 2e-3,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="AdamW (decoupled) weight decay, 0 or more.")] = 1e-2,
    dropout: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.3,
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=MAX_LABEL_SMOOTHING, help=f"Cross-entropy label smoothing, 0-{MAX_LABEL_SMOOTHING} (1 would make every target uniform).")] = 0.1,
    segment_seconds: Annotated[float, typer.Option(min=MIN_SEGMENT_SECONDS, max=MAX_SEGMENT_SECONDS, help=f"Sub-track length in seconds, {MIN_SEGMENT_SECONDS:g}-{MAX_SEGMENT_SECONDS:g} (a GTZAN clip is 30 s; a shorter track is zero-padded).")] = 3.0,
    train_subsets: Annotated[str, typer.Option("--train-on", help="Subsets to train on: 'train' or 'train+valid' (no early stopping, no valid figures).")] = "train",
    extra: ExtraOpt = None,
    aug_pitch: Annotated[str | None, typer.Option("--pitch", help="Precomputed pitch shifts in semitones, e.g. '-2,2'.")] = None,
    aug_stretch: Annotated[str | None, typer.Option("--stretch", help="Precomputed time-stretch rates, e.g. '0.9,1.1'.")] = None,
    aug_specaugment: Annotated[bool, typer.Option(" /--no-specaugment", show_default=False)] = True,
    aug_mixup: Annotated[float, typer.Option("--mixup", help="Mixup Beta alpha; 0 disables.")] = 0.2,
    aug_gain_db: Annotated[float, typer.Option("--gain-db", help="Random gain range in dB; 0 disables.")] = 6.0,
    aug_noise_snr_db: Annotated[float, typer.Option("--noise-snr-db", help="Lowest SNR of added noise; 0 disables.")] = 30.0,
    balance: Annotated[bool, typer.Option(" /--no-balance", show_default=False, help="Sample tracks uniformly instead of balancing genres.")] = True,
    patience: int = 12,
    seed: int = 0,
    name: Annotated[str, typer.Option(help="Model name (file names and card).")] = "gtzan-resnet",
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, logs, curves, the model.")] = Path("runs/latest"),
    params: Annotated[Path | None, typer.Option(help="JSON of TrainConfig fields (e.g. from `genretag tune`); flags given here win.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run folder's last checkpoint (none there: a note, then a new run).")] = False,
    device: DeviceOpt = Device.auto,
    jobs: JobsOpt = 2,
) -> None:
    """Train a genre model on a GTZAN-layout folder (split by track, then cut into sub-tracks).

    Example: genretag train ../shared/data/gtzan --epochs 40 --pitch=-2,2 --out runs/resnet
    """
    from genretag.errors import ConfigError
    from genretag.training.train import TrainConfig, train

    base = {}
    if params:
        try:
            base = json.loads(params.read_text())
        except (OSError, json.JSONDecodeError) as e:
            fail(f"cannot read --params {params}: {e}", 2)
        try:
            TrainConfig.from_dict(base)  # the file's own keys and values, before the flags join them
        except ConfigError as e:
            fail(f"--params {params}: {e}", 2)
    if arch_preset not in ARCH_PRESETS:
        fail(f"unknown --arch {arch_preset!r}", 2)
    arch_given = ctx.get_parameter_source("arch_preset").name != "DEFAULT"
    base = {**base, **{k: v for k, v in ARCH_PRESETS[arch_preset].items() if arch_given or k not in base}}
    try:
        cfg = config_from_flags(TrainConfig, ctx, base)
    except ValueError as e:
        fail(f"bad number in a list option: {e}", 2)
    cfg.command = command_line(ctx)
    if not set(cfg.train_subsets) <= {"train", "valid"}:
        fail("--train-on must be 'train' or 'train+valid'", 2)

    show = not state.quiet and err_console().is_terminal
    progress = Progress(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                        TextColumn("loss {task.fields[loss]:.3f}  {task.fields[valid]}"),
                        TimeElapsedColumn(), console=err_console(), disable=not show, transient=True)
    with progress:
        task = progress.add_task("train", total=None, epoch=0, epochs=cfg.epochs, loss=0.0, valid="")

        def on_step(step: int, steps: int, loss: float) -> None:
            progress.update(task, completed=step, total=steps, loss=loss)

        def on_epoch(log) -> None:
            progress.update(task, epoch=log.epoch,
                            valid="" if log.valid_acc is None else f"valid acc {log.valid_acc:.1%}")
            info(epoch_line(log))

        try:
            card_path = train(cfg, resume=resume, on_step=on_step, on_epoch=on_epoch, on_note=info)
        except ValueError as e:
            fail(str(e), 2)
    report_card(card_path)


def report_card(card_path: Path) -> None:
    """Note each measured subset of a freshly written card, then print the card's path."""
    card = json.loads(card_path.read_text())
    for subset, m in card.get("metrics", {}).items():
        info(f"{subset}: {m['n_tracks']} tracks, accuracy soft {m['accuracy_soft']:.1%} "
             f"hard {m['accuracy_hard']:.1%}, macro F1 {m['macro_f1']:.3f}, ECE {m['ece']:.3f}")
    print(card_path)


@app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Argument(
        help="A GTZAN-layout folder (<genre>/<genre>.NNNNN.<ext>), a folder per label (<label>/<files>), or "
        "with --against-tags a music library.", show_default=False)] = None,
    layout: Annotated[Layout, typer.Option(help="auto: the GTZAN layout when its file names are there, else a "
                                           "folder per label.")] = Layout.auto,
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", help="A CSV file with path and label columns (paths relative to its folder; other columns "
        "ignored) instead of a folder.")] = None,
    against_tags: Annotated[bool, typer.Option(
        "--against-tags", help="Take the genres already in the files' tags as the labels (files without one: "
        "no label; one the model does not have: outside).")] = False,
    map_items: Annotated[list[str] | None, typer.Option(
        "--map", metavar="SYNONYM=GENRE", help="A label and the model genre it means (repeatable), e.g. "
        "--map rnb=R&B --map 'hip hop=Hip-Hop'; GENRE - means outside the model's genres.")] = None,
    map_file: Annotated[Path | None, typer.Option("--map-file", help="SYNONYM=GENRE lines (# comments).")] = None,
    split: SplitOpt = "fault-filtered",
    subset: Annotated[str | None, typer.Option(
        help="GTZAN layout: train, valid or test (default test). --manifest: only the rows whose subset column "
        "holds this (default all).")] = None,
    fold: int = 0,
    seed: int = 0,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model name or card path; repeat for an ensemble (mean of probabilities; GTZAN layout only).")] = None,
    extra: ExtraOpt = None,
    segments: Annotated[int | None, typer.Option(min=1, max=MAX_SEGMENTS, help=f"Most sub-tracks per track, 1-{MAX_SEGMENTS} (default: the card's).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the precision/coverage curve and the confusion matrix as a PNG (needs matplotlib).")] = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    jobs: ClassifyJobsOpt = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Classify every file, ignoring the result cache (not the GTZAN layout).")] = False,
) -> None:
    """Measure a model on labelled music: top-1, F1 per genre, confusion, and the precision/coverage curve.

    A GTZAN-layout folder is measured on a split (--split, --subset, --fold, --seed; --extra adds
    the subset's excerpts, reported on their own line). Any other labelled music: a folder per
    label, a --manifest CSV, or a library's own tags (--against-tags). Labels are matched to the
    model's genres ignoring case and punctuation, through common synonyms (rnb, hip hop, new
    age, ...) and --map; a label that matches none is an error unless mapped to - (outside the
    model's genres: the right answer is to write nothing). The curve says, for each confidence
    threshold, how many files `genretag tag` would write and how many of those are right.

    Example: genretag evaluate ~/Music --against-tags --plot agreement.png

    Exit code 0 when every file was classified, 1 when any failed, 2 on a usage error.
    """
    from genretag.labels import LabelMap
    from genretag.model import load_net
    from genretag.training import evaluate as ev
    from genretag.training.dataset import scan
    from genretag.training.dataset import split as do_split
    from genretag.training.excerpts import load_excerpts

    for flag, path in (("--json", json_out), ("--plot", plot)):
        if path is not None:
            _check_writable(flag, path)
    if plot is not None:
        check_plot_backend()
    if (data_dir is None) == (manifest is None):
        fail("give a folder or --manifest FILE" if data_dir is None else "give a folder or --manifest, not both", 2)
    if against_tags and manifest is not None:
        fail("--against-tags reads a folder's files, not a --manifest", 2)
    if data_dir is not None and not data_dir.exists():
        fail(f"{data_dir}: no such file or folder", 2)
    if manifest is None and subset not in (None, "train", "valid", "test"):
        fail("--subset must be train, valid or test (or a value of a --manifest's subset column)", 2)
    names = user_map(map_items, map_file)
    models = [load_net(m, getattr(device, "value", device), precision=precision.value) for m in (model or [None])]
    if any(n.labels != models[0].labels for n in models):
        fail("ensemble members have different labels", 2)
    lmap = LabelMap(models[0].labels, names, models[0].card.name)
    found = None
    if manifest is None and not against_tags and layout is not Layout.folders:
        try:
            found = scan(data_dir)
        except DatasetError:
            if layout is Layout.gtzan:
                raise
    if found is None:  # any labelled music
        given = [f for f, name in (("--split", "split"), ("--fold", "fold"), ("--seed", "seed"))
                 if ctx.get_parameter_source(name).name != "DEFAULT"] + (["--extra"] if extra else [])
        if given:
            fail(f"{', '.join(given)}: for a GTZAN layout only", 2)
        if subset is not None and manifest is None:
            fail("--subset: for a GTZAN layout or a --manifest only", 2)
        if len(models) > 1:
            fail("an ensemble of several --model: for a GTZAN layout only (an ensemble card works everywhere)", 2)
        evaluate_labelled(models[0], lmap, data_dir=data_dir, manifest=manifest, against_tags=against_tags,
                          subset=subset, segments=segments, jobs=jobs, no_cache=no_cache, json_out=json_out,
                          plot=plot)
        return
    subset = subset or "test"
    tracks = relabel(do_split(found, split, seed, fold)[subset], lmap, str(data_dir))
    excerpts = relabel(load_excerpts(extra, found, split).parts[subset], lmap, str(extra)) if extra else []
    if not tracks:
        fail(f"no tracks of the {subset} subset found in {data_dir}", 1)
    threshold = ev.tag_threshold(models[0].card)
    info(f"evaluating {', '.join(n.card.name for n in models)} on {split}/{subset}: {len(tracks)} tracks")
    pred = ev.predict_tracks(models, tracks, max_segments=segments)
    # several --model average their probabilities: one model's calibration does not apply to the mean
    calibration = models[0].calibration if len(models) == 1 else None
    rep = ev.gtzan_coverage(ev.report(pred, split, subset), pred, *threshold, calibration=calibration)
    rep["models"] = [n.card.name for n in models]
    rep["layout"] = "gtzan"
    if excerpts:
        info(f"and {len(excerpts)} {subset} excerpts of {extra}")
        pred_ex = ev.predict_tracks(models, excerpts)
        rep["excerpts"] = ev.gtzan_coverage(ev.report(pred_ex, split, f"{subset} excerpts"), pred_ex, *threshold,
                                            calibration=calibration)
    _print_report(rep)
    out_console().print(threshold_line(rep), markup=False)
    if excerpts:
        _print_excerpts(rep["excerpts"])
        out_console().print(threshold_line(rep["excerpts"], "excerpts"), markup=False)
    write_outputs(rep, json_out, plot, f"{', '.join(rep['models'])}: {split}/{subset}")


def _check_writable(flag: str, path: Path) -> None:
    """A usage error unless `path` can be written: its folder exists and is writable, and it is not a folder."""
    folder = path.parent
    if path.is_dir():
        fail(f"{flag} {path}: is a folder", 2)
    if not folder.is_dir():
        fail(f"{flag} {path}: folder {folder} does not exist", 2)
    if not os.access(folder, os.W_OK) and not (path.exists() and os.access(path, os.W_OK)):
        fail(f"{flag} {path}: folder {folder} is not writable", 2)


def _print_report(rep: dict) -> None:
    con = out_console()
    a = rep["accuracy"]
    con.print(f"{rep['split']}/{rep['subset']}: {rep['n_tracks']} tracks  accuracy soft {a['soft']:.1%}  "
              f"hard {a['hard']:.1%}  segment {a['segment']:.1%}  macro F1 {rep['macro_f1']:.3f}  "
              f"ECE {rep['ece']:.3f}", markup=False)
    t = Table("true \\ predicted", *[lab[:5] for lab in rep["labels"]], "recall", "F1")
    for lab, row in zip(rep["labels"], rep["confusion"]):
        pc = rep["per_class"][lab]
        t.add_row(lab, *[str(v) if v else "." for v in row], f"{pc['recall']:.2f}", f"{pc['f1']:.2f}")
    con.print(t)


def _print_excerpts(rep: dict) -> None:
    """The excerpt figure on its own line: one prediction per excerpt (a single sub-track)."""
    out_console().print(
        f"{rep['split']}/{rep['subset']}: {rep['n_tracks']} excerpts (one sub-track each; not merged with the "
        f"tracks)  accuracy {rep['accuracy']['soft']:.1%}  macro F1 {rep['macro_f1']:.3f}  ECE {rep['ece']:.3f}",
        markup=False)
    per = ", ".join(f"{lab} {round(pc['recall'] * pc['support'])}/{pc['support']}"
                    for lab, pc in rep["per_class"].items() if pc["support"])
    out_console().print(f"  per genre: {per}", markup=False)


@app.command("tune")
def tune_cmd(
    data_dir: DataArg,
    trials: Annotated[int, typer.Option(min=1, help="Total trials in the study (a resumed study runs the rest).")] = 20,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per trial.")] = 12,
    steps_per_epoch: Annotated[int, typer.Option(min=0, help="Steps per epoch (0: about 8 crops per track).")] = 0,
    split: SplitOpt = "fault-filtered",
    arch: Annotated[str, typer.Option(help="resnet or cnn1d.")] = "resnet",
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (default: sqlite in the --out folder).")] = None,
    study_name: str = "genretag",
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("runs/tune"),
    seed: int = 0,
    device: DeviceOpt = Device.auto,
    jobs: JobsOpt = 2,
) -> None:
    """Search hyper-parameters with Optuna (pruning, resumable SQLite study); saves best_params.json for `train --params`.

    Example: genretag tune ../shared/data/gtzan --trials 30 --epochs 10 && genretag train ../shared/data/gtzan --params runs/tune/best_params.json
    """
    from genretag.training.train import TrainConfig
    from genretag.training.tune import tune

    if arch not in ("resnet", "cnn1d"):
        fail("--arch must be resnet or cnn1d for tuning", 2)
    storage = storage or f"sqlite:///{(out / 'study.sqlite').resolve()}"
    base = TrainConfig(data_dir=str(data_dir), split=split, arch=arch, epochs=epochs, seed=seed,
                       steps_per_epoch=steps_per_epoch, device=getattr(device, "value", device), jobs=jobs,
                       patience=max(3, epochs // 3), widths=[] if arch == "cnn1d" else TrainConfig().widths)
    try:
        res = tune(base, trials, storage=storage, study_name=study_name, out=out, on_note=info)
    except ValueError as e:
        fail(str(e), 2)
    info(f"best valid accuracy {res['best_value']:.1%} after {res['trials']} trials")
    print(out / "best_params.json")
