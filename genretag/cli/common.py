"""Options shared by `classify` and `tag`, the executor they name, and the classification loop with its
progress bar."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from genretag.cli.app import err_console, info, state
from genretag.pipeline.threads import MAX_JOBS

if TYPE_CHECKING:
    from genretag.pipeline.executor import Executor
    from genretag.pipeline.inference import TrackResult


class Vote(str, Enum):
    soft = "soft"
    hard = "hard"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class Format(str, Enum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


# Paths stay the strings given (pathlib would print ./-dash.mp3 as -dash.mp3), and an unreadable
# one is that path's one-line error (exit 1), not a usage error: no readable check here. The argument
# offers no completions of its own, so every shell completes file names there (bash's `-o default`,
# zsh's `_files`, fish's file list).
PathsArg = Annotated[list[str], typer.Argument(help="Audio files and/or folders.", show_default=False)]
RecursiveOpt = Annotated[bool, typer.Option("--recursive/--no-recursive", help="Walk folders recursively.")]
TopKOpt = Annotated[int, typer.Option("--top-k", min=1, help="How many genres to show per file.")]
VoteOpt = Annotated[Vote, typer.Option("--vote", help="soft: mean of sub-track probabilities; hard: majority.")]
#: --segments beyond this only costs memory: 1000 sub-tracks of 3 s already cover 50 minutes end to end.
MAX_SEGMENTS = 1000
SegmentsOpt = Annotated[int | None, typer.Option("--segments", min=1, max=MAX_SEGMENTS, help=f"Most sub-tracks per file, 1-{MAX_SEGMENTS} (default: the model card's, 10).")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model name (bundled or cached) or card path (default: the bundled default).")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto picks CUDA when present.")]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="auto: fp32, musicnn models on the CPU in ONNX Runtime (faster, the same answers); fp32: PyTorch fp32 (the reference); bf16: faster on CUDA and on CPUs with AMX/AVX512-BF16.")]
#: Fewer files than this, all named on the command line (no folder), are classified in this process.
SMALL_RUN = 16
JobsOpt = Annotated[int | None, typer.Option("--jobs", "-j", min=1, max=MAX_JOBS, help=f"Worker processes, 1-{MAX_JOBS}: each decodes files (and runs the network on them when ONNX Runtime runs it). Default: one per CPU core this process may use, at most 8; 1 for fewer than {SMALL_RUN} files named one by one. 1 runs everything in this process.")]
SchedulerOpt = Annotated[str | None, typer.Option("--scheduler", metavar="tcp://HOST:PORT", help="Run on the Dask cluster of this scheduler (needs genretag\\[dask]; every worker must see the files at the same paths).")]
SchedulerFileOpt = Annotated[Path | None, typer.Option("--scheduler-file", metavar="FILE", help="Run on the Dask cluster whose scheduler wrote FILE (dask scheduler --scheduler-file).")]


@dataclass
class ClassifyOptions:
    recursive: bool = True
    vote: str = "soft"
    segments: int | None = None
    model: str | None = None
    device: str = "auto"
    jobs: int | None = None
    precision: str = "auto"
    scheduler: str | None = None
    scheduler_file: Path | None = None


def classify_options(recursive: bool, vote: Vote, segments: int | None, model: str | None,
                     device: Device | str, precision: Precision, jobs: int | None,
                     scheduler: str | None = None, scheduler_file: Path | None = None, *,
                     paths: list[str] | None = None) -> ClassifyOptions:
    """The options `classify` and `tag` share, as plain values (typer hands over enums); without
    --jobs, the worker count `default_jobs_for(paths)`."""
    if scheduler is not None and scheduler_file is not None:
        from genretag.errors import GenretagError

        raise GenretagError("use only one of --scheduler, --scheduler-file", 2)
    return ClassifyOptions(recursive, vote.value, segments, model, getattr(device, "value", device),
                           jobs or default_jobs_for(paths or []), precision.value, scheduler, scheduler_file)


def default_jobs_for(paths: list[str]) -> int:
    """Worker processes for a run over `paths`: one per usable core (`default_jobs`), or 1 (none:
    everything in this process) for fewer than `SMALL_RUN` files named one by one. Starting the
    workers and opening the model in each costs about half a second, more than they save on a
    handful of files (docs/performance.md)."""
    from genretag.pipeline.inference import default_jobs

    if paths and len(paths) < SMALL_RUN and all(os.path.isfile(p) for p in paths):
        return 1
    return default_jobs()


def open_executor(opts: ClassifyOptions, model, *, open_cache=None, fingerprints: bool = True) -> Executor:
    """The executor the options name: a `ClusterExecutor` on the scheduler of --scheduler or
    --scheduler-file, else a local `Classifier`. The scheduler is connected before any output is
    written: an unreachable one is a one-line error (exit 1) and nothing is written.

    `open_cache` (a callable returning a `ResultCache` or None, such as `open_result_cache`) is
    called only once the scheduler answered, so a failed connection does not create the result
    cache either; the executor closes it. `fingerprints` puts each file's audio fingerprint on its
    result (the tagger needs it; a cache turns it on)."""
    if opts.scheduler is None and opts.scheduler_file is None:
        from genretag.pipeline.classifier import Classifier
        from genretag.pipeline.inference import default_jobs

        return Classifier(model, vote=opts.vote, segments=opts.segments, jobs=opts.jobs or default_jobs(),
                          cache=open_cache() if open_cache is not None else None, fingerprints=fingerprints)
    try:
        from genretag.pipeline.cluster import ClusterExecutor, connect
    except ImportError as e:
        from genretag.errors import GenretagError, missing_extra

        if missing_extra(e) is None:
            raise
        raise GenretagError("--scheduler needs Dask: pip install 'genretag[dask]'", 2) from None
    client = connect(opts.scheduler, opts.scheduler_file)
    try:
        ex = ClusterExecutor(client, model, vote=opts.vote, segments=opts.segments, fingerprints=fingerprints,
                             cache=open_cache() if open_cache is not None else None, device=opts.device,
                             close_client=True)
    except BaseException:
        client.close()
        raise
    threads = sum(ex.client.nthreads().values())
    info(f"cluster: {ex.client.scheduler.address}, {threads} worker threads"
         + ("" if threads else f" (none yet: the run waits up to {ex.no_worker_timeout:g} s for one to join)"))
    return ex


def open_result_cache():
    """The user's result cache, or None (with a warning) when it cannot be opened: a broken cache
    must not stop a run."""
    from genretag.pipeline.result_cache import ResultCache

    try:
        return ResultCache()
    except Exception as e:  # a broken cache must not stop the run
        logging.getLogger("genretag.cli").warning("result cache unavailable (%s); classifying everything", e)
        return None


def load(opts: ClassifyOptions):
    """Load the model the options name (a failure is a ModelError carrying its exit code).

    When the local workers will run the network themselves (`genretag.pipeline.worker_network`),
    they are started first and open the model while this process reads its card; this process's
    copy then opens the export only if it is ever asked to run (`load_net(defer_export=True)`)."""
    from genretag.model import load_net

    started = opts.scheduler is None and opts.scheduler_file is None and _start_workers(opts)
    # with the network in the workers, this process never runs it: its session would only cost time
    model = load_net(opts.model, opts.device, precision=opts.precision, defer_export=started)
    info(f"model: {model.card.name} ({model.device_type}, {model.runtime})")
    return model


def _start_workers(opts: ClassifyOptions) -> bool:
    """Start the workers and have them open the model, when they will run the network (True)."""
    from genretag.model import cpu_for_sure
    from genretag.pipeline.inference import default_jobs, schedule

    jobs = opts.jobs or default_jobs()
    if jobs < 2 or opts.precision != "auto" or not cpu_for_sure(opts.device) or schedule() != "workers":
        return False
    from genretag.pipeline.worker_network import WorkerModel, start_workers

    ref = WorkerModel.recorded(opts.model)
    if ref is not None:
        start_workers(ref, jobs)
    return ref is not None


def iter_inputs(paths: list[str], recursive: bool, skipped: list[str] | None = None) -> Iterator[str]:
    """Audio files under `paths`; each folder that cannot be read gets a one-line error and goes
    into `skipped` (the caller exits 1 then, as for a file that failed)."""
    from genretag.audio.walk import iter_audio_files

    def on_error(path: str, reason: str) -> None:
        err_console().print(f"genretag: error: cannot read folder {path}: {reason}", markup=False)
        if skipped is not None:
            skipped.append(path)

    return iter_audio_files(paths, recursive=recursive, on_error=on_error)


def classify_stream(paths: list[str], opts: ClassifyOptions, executor: Executor,
                    skipped: list[str] | None = None) -> Iterator[TrackResult]:
    """`executor`'s results for everything under `paths`, with a progress bar on a terminal, then the
    executor closed (also on Ctrl-C or an early stop). Folders that could not be read are appended to
    `skipped`."""
    results = executor.classify(iter_inputs(paths, opts.recursive, skipped))
    try:
        yield from with_progress(results)
    finally:
        results.close()  # cancels what is still running (and stores what is done) before the executor goes
        executor.close()


def with_progress(results: Iterator) -> Iterator:
    """`results`, counted on a progress bar on stderr when it is a terminal."""
    if state.quiet or not sys.stderr.isatty():
        yield from results
        return
    cols = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn()]
    with Progress(*cols, console=err_console(), transient=True) as progress:
        task = progress.add_task("classifying", total=None, failed=0)
        failed = 0
        for r in results:
            failed += 0 if r.ok else 1
            progress.update(task, advance=1, failed=failed)
            yield r


def genre_names_option(path: Path | None) -> dict[str, str]:
    """The label -> name overrides a `--genre-names` file gives (none without one); a bad file is a
    usage error (exit 2)."""
    from genretag.cli.app import fail
    from genretag.tags.plan import load_genre_names

    if path is None:
        return {}
    try:
        return load_genre_names(path)
    except ValueError as e:
        fail(str(e), 2)
