"""`genretag train`, `genretag evaluate`: retrain and measure on a GTZAN-layout folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genretag.cli.app import app, err_console, fail, info, out_console, state
from genretag.cli.common import Device, DeviceOpt, Precision, PrecisionOpt

DataArg = Annotated[Path, typer.Argument(help="Dataset folder in GTZAN layout: <genre>/<genre>.NNNNN.<ext>.")]
SplitOpt = Annotated[str, typer.Option("--split", help="fault-filtered (artist-aware), random (leaky) or kfold:K.")]
ExtraOpt = Annotated[Path | None, typer.Option(
    "--extra", help="Excerpts folder with a manifest.csv (e.g. ../shared/data/gtzan-excerpts): each excerpt in its "
    "clip's fault-filtered subset; test excerpts are measured apart, never merged with the tracks.")]


def _floats(s: str | None) -> list[float]:
    return [float(x) for x in s.replace(",", " ").split()] if s else []


def _ints(s: str | None) -> list[int]:
    return [int(x) for x in s.replace(",", " ").split()] if s else []


@app.command("train")
def train_cmd(
    ctx: typer.Context,
    data_dir: DataArg,
    split: SplitOpt = "fault-filtered",
    fold: Annotated[int, typer.Option(help="Test fold for kfold:K.")] = 0,
    arch: Annotated[str, typer.Option("--arch", help="resnet (narrow torchvision ResNet on log-mel), resnet18, resnet34, or cnn1d (raw waveform).")] = "resnet",
    widths: Annotated[str | None, typer.Option(help="ResNet stage widths, e.g. '32,64,128,256'.")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    batch_size: Annotated[int, typer.Option(min=2)] = 32,
    lr: float = 2e-3,
    weight_decay: float = 1e-2,
    dropout: float = 0.3,
    label_smoothing: float = 0.1,
    segment_seconds: float = 3.0,
    train_on: Annotated[str, typer.Option(help="Subsets to train on: 'train' or 'train+valid' (no early stopping).")] = "train",
    extra: ExtraOpt = None,
    pitch: Annotated[str | None, typer.Option(help="Precomputed pitch shifts in semitones, e.g. '-2,2'.")] = None,
    stretch: Annotated[str | None, typer.Option(help="Precomputed time-stretch rates, e.g. '0.9,1.1'.")] = None,
    no_specaugment: Annotated[bool, typer.Option("--no-specaugment")] = False,
    mixup: Annotated[float, typer.Option(help="Mixup Beta alpha; 0 disables.")] = 0.2,
    gain_db: Annotated[float, typer.Option(help="Random gain range in dB; 0 disables.")] = 6.0,
    noise_snr_db: Annotated[float, typer.Option(help="Lowest SNR of added noise; 0 disables.")] = 30.0,
    no_balance: Annotated[bool, typer.Option("--no-balance", help="Sample tracks uniformly instead of balancing genres.")] = False,
    patience: int = 12,
    seed: int = 0,
    name: Annotated[str, typer.Option(help="Model name (file names and card).")] = "gtzan-resnet",
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: checkpoints, logs, curves, the model.")] = Path("runs/latest"),
    params: Annotated[Path | None, typer.Option(help="JSON of TrainConfig fields (e.g. from `genretag tune`); flags given here win.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run folder's last checkpoint.")] = False,
    device: DeviceOpt = Device.auto,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1)] = 2,
) -> None:
    """Train a genre model on a GTZAN-layout folder (split by track, then cut into sub-tracks).

    Example: genretag train ../shared/data/gtzan --epochs 40 --pitch=-2,2 --out runs/resnet
    """
    from genretag.training.train import TrainConfig, train

    base = {}
    if params:
        try:
            base = json.loads(params.read_text())
        except (OSError, json.JSONDecodeError) as e:
            fail(f"cannot read --params {params}: {e}", 2)
    cfg = TrainConfig.from_dict(base)
    given = {k for k, v in ctx.params.items() if ctx.get_parameter_source(k).name != "DEFAULT"}

    def put(field: str, flag: str, value) -> None:
        if flag in given or field not in base:
            setattr(cfg, field, value)

    put("data_dir", "data_dir", str(data_dir))
    put("split", "split", split)
    put("fold", "fold", fold)
    put("extra", "extra", str(extra) if extra else "")
    if arch in ("resnet18", "resnet34"):
        put("arch", "arch", "resnet")
        put("variant", "arch", arch)
        put("layers", "arch", [2, 2, 2, 2] if arch == "resnet18" else [3, 4, 6, 3])
        put("widths", "arch", [64, 128, 256, 512])
    elif arch == "cnn1d":
        put("arch", "arch", "cnn1d")
        put("widths", "arch", [])
    elif arch == "resnet":
        put("arch", "arch", "resnet")
    else:
        fail(f"unknown --arch {arch!r}", 2)
    if widths:
        put("widths", "widths", _ints(widths))
    for f, flag, v in [("epochs", "epochs", epochs), ("batch_size", "batch_size", batch_size), ("lr", "lr", lr),
                       ("weight_decay", "weight_decay", weight_decay), ("dropout", "dropout", dropout),
                       ("label_smoothing", "label_smoothing", label_smoothing),
                       ("segment_seconds", "segment_seconds", segment_seconds),
                       ("train_subsets", "train_on", train_on.split("+")),
                       ("aug_pitch", "pitch", _floats(pitch)), ("aug_stretch", "stretch", _floats(stretch)),
                       ("aug_specaugment", "no_specaugment", not no_specaugment), ("aug_mixup", "mixup", mixup),
                       ("aug_gain_db", "gain_db", gain_db), ("aug_noise_snr_db", "noise_snr_db", noise_snr_db),
                       ("balance", "no_balance", not no_balance), ("patience", "patience", patience),
                       ("seed", "seed", seed), ("name", "name", name), ("out", "out", str(out)),
                       ("device", "device", getattr(device, "value", device)), ("jobs", "jobs", jobs)]:
        put(f, flag, v)
    if not set(cfg.train_subsets) <= {"train", "valid"}:
        fail("--train-on must be 'train' or 'train+valid'", 2)

    show = not state.quiet and err_console().is_terminal
    progress = Progress(TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                        TextColumn("loss {task.fields[loss]:.3f}  valid acc {task.fields[vacc]:.1%}"),
                        TimeElapsedColumn(), console=err_console(), disable=not show, transient=True)
    with progress:
        task = progress.add_task("train", total=None, epoch=0, epochs=cfg.epochs, loss=0.0, vacc=0.0)

        def on_step(step: int, steps: int, loss: float) -> None:
            progress.update(task, completed=step, total=steps, loss=loss)

        def on_epoch(log) -> None:
            progress.update(task, epoch=log.epoch, vacc=log.valid_acc)
            info(f"epoch {log.epoch:3d}  train loss {log.train_loss:.3f} acc {log.train_acc:.1%}  "
                 f"valid nll {log.valid_loss:.3f} acc {log.valid_acc:.1%}  ({log.seconds:.0f} s)")

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
    data_dir: DataArg,
    split: SplitOpt = "fault-filtered",
    subset: Annotated[str, typer.Option(help="train, valid or test.")] = "test",
    fold: int = 0,
    seed: int = 0,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Model name or card path; repeat for an ensemble (mean of probabilities).")] = None,
    extra: ExtraOpt = None,
    segments: Annotated[int | None, typer.Option(min=1, help="Most sub-tracks per track (default: the card's).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the confusion matrix as a PNG.")] = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.fp32,
) -> None:
    """Measure a model (or an ensemble) on a split of a GTZAN-layout folder.

    With --extra, the subset's excerpts are measured too and reported on their own line (one
    sub-track each: comparable to segment accuracy, never merged into the track figure).

    Example: genretag evaluate ../shared/data/gtzan --subset test --extra ../shared/data/gtzan-excerpts --json report.json
    """
    from genretag.store.load import load_net
    from genretag.training import evaluate as ev
    from genretag.training.dataset import scan
    from genretag.training.dataset import split as do_split
    from genretag.training.excerpts import load_excerpts

    if subset not in ("train", "valid", "test"):
        fail("--subset must be train, valid or test", 2)
    nets = [load_net(m, getattr(device, "value", device), precision=precision.value) for m in (model or [None])]
    found = scan(data_dir)
    tracks = do_split(found, split, seed, fold)[subset]
    excerpts = load_excerpts(extra, found, split).parts[subset] if extra else []
    if not tracks:
        fail(f"no tracks of the {subset} subset found in {data_dir}", 1)
    if any(n.labels != nets[0].labels for n in nets):
        fail("ensemble members have different labels", 2)
    info(f"evaluating {', '.join(n.card.name for n in nets)} on {split}/{subset}: {len(tracks)} tracks")
    pred = ev.predict_tracks(nets, tracks, max_segments=segments)
    rep = ev.report(pred, split, subset)
    rep["models"] = [n.card.name for n in nets]
    if excerpts:
        info(f"and {len(excerpts)} {subset} excerpts of {extra}")
        rep["excerpts"] = ev.report(ev.predict_tracks(nets, excerpts), split, f"{subset} excerpts")
    if json_out:
        json_out.write_text(json.dumps(rep, indent=2))
    if plot:
        ev.plot_confusion(rep["confusion"], rep["labels"], str(plot), f"{split}/{subset}")
    _print_report(rep)
    if excerpts:
        _print_excerpts(rep["excerpts"])


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
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1)] = 2,
) -> None:
    """Search hyper-parameters with Optuna (pruning, resumable SQLite study); saves best_params.json for `train --params`.

    Example: genretag tune ../shared/data/gtzan --trials 30 --epochs 10 && genretag train ../shared/data/gtzan --params runs/tune/best_params.json
    """
    from genretag.training.train import TrainConfig
    from genretag.training.tune import tune

    if arch not in ("resnet", "cnn1d"):
        fail("--arch must be resnet or cnn1d for tuning", 2)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.sqlite').resolve()}"
    base = TrainConfig(data_dir=str(data_dir), split=split, arch=arch, epochs=epochs, seed=seed,
                       steps_per_epoch=steps_per_epoch, device=getattr(device, "value", device), jobs=jobs,
                       patience=max(3, epochs // 3), widths=[] if arch == "cnn1d" else TrainConfig().widths)
    try:
        res = tune(base, trials, storage, study_name, out, on_note=info)
    except ValueError as e:
        fail(str(e), 2)
    info(f"best valid accuracy {res['best_value']:.1%} after {res['trials']} trials")
    print(out / "best_params.json")
