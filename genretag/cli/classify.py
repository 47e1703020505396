"""`genretag classify`: genres for files and folders, as a table, JSON lines or CSV."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from genretag.cli.app import app, fail, out_console, state
from genretag.cli.common import (
    DeviceOpt,
    Format,
    JobsOpt,
    ModelOpt,
    PathsArg,
    Precision,
    PrecisionOpt,
    RecursiveOpt,
    SchedulerFileOpt,
    SchedulerOpt,
    SegmentsOpt,
    TopKOpt,
    Vote,
    VoteOpt,
    classify_options,
    classify_stream,
    load,
    open_executor,
)
from genretag.cli.outputs import refuse_unsafe_output


@app.command("classify")
def classify_cmd(
    paths: PathsArg,
    recursive: RecursiveOpt = True,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write results to FILE instead of stdout.")] = None,
    top_k: TopKOpt = 1,
    vote: VoteOpt = Vote.soft,
    segments: SegmentsOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.auto,
    jobs: JobsOpt = None,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
) -> None:
    """Say which genre each audio file is.

    Example: genretag classify ~/Music --format jsonl -o genres.jsonl

    Exit code 0 when every file was classified, 1 when any failed, 2 on a usage error.
    """
    opts = classify_options(recursive, vote, segments, model, device, precision, jobs, scheduler, scheduler_file,
                            paths=paths)
    from genretag.pipeline.output import ResultWriter

    if output is not None:
        refuse_unsafe_output("-o", output, paths)
    elif state.stdout_closed:
        fail("stdout is closed, so the results would be lost: give -o FILE", 2)
    loaded_model = load(opts)  # before any output: a model that fails to load leaves no CSV header behind
    executor = open_executor(opts, loaded_model, fingerprints=False)  # likewise a scheduler that does not answer
    try:
        stream = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    except OSError as e:
        fail(f"cannot write {output}: {e.strerror}", 2)
    failed = total = 0
    skipped: list[str] = []
    # each row says whether `tag` (with its default threshold for this model) would write its genre
    from genretag.tags.plan import DEFAULT_MIN_CONFIDENCE

    threshold = loaded_model.min_confidence if loaded_model.min_confidence is not None else DEFAULT_MIN_CONFIDENCE
    writer = None
    try:
        writer = ResultWriter(stream, fmt.value, top_k, threshold)  # the CSV header is written here
        try:
            for r in classify_stream(paths, opts, executor, skipped):
                total += 1
                failed += 0 if r.ok else 1
                writer.write(r)
        finally:  # a table of what was done, even on Ctrl-C
            if fmt is Format.table and total:
                writer.close(out_console() if stream is sys.stdout else None)
    except BrokenPipeError:  # `classify ... | head`: the reader stopped reading, which is no failure
        _drop_stdout()
        raise typer.Exit(0) from None
    except OSError as e:  # a full disk (`-o /dev/full`), an I/O error: what was written stays
        if not output:
            _drop_stdout()
        fail(f"cannot write the results to {output or 'stdout'}: {e.strerror or e}", 1)
    finally:
        if output:
            with contextlib.suppress(OSError):  # the error, if any, was reported above
                stream.close()
    if total == 0 and not skipped:
        fail("no audio files found", 1)
    if failed or skipped:
        raise typer.Exit(1)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not hit the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
