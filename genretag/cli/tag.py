"""`genretag tag` (write genres into files' tags) and `genretag undo`."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from genretag.cli.app import app, err_console, fail, info, out_console, state
from genretag.cli.common import (
    DeviceOpt,
    JobsOpt,
    ModelOpt,
    PathsArg,
    Precision,
    PrecisionOpt,
    RecursiveOpt,
    SegmentsOpt,
    Vote,
    VoteOpt,
    classify_options,
    iter_inputs,
    load,
)
from genretag.tags.fields import TagError, read_tags, readable_values
from genretag.tags.plan import DEFAULT_MIN_CONFIDENCE, ERROR, WRITE, load_genre_names, plan_tag
from genretag.tags.safe_write import cleanup_stray_temps, is_read_only, write_genres_safely


class TagFormat(str, Enum):
    table = "table"
    jsonl = "jsonl"


@dataclass
class Counts:
    written: int = 0
    skipped: int = 0
    failed: int = 0


@dataclass
class Row:
    path: str
    current: list[str] = field(default_factory=list)
    proposed: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    confidence: float | None = None
    action: str = ""
    error: str | None = None

    def to_json(self) -> dict:
        return {"path": self.path, "current": self.current, "proposed": self.proposed, "new": self.new,
                "confidence": self.confidence, "action": self.action, "error": self.error}


@app.command("tag")
def tag_cmd(
    paths: PathsArg,
    write: Annotated[bool, typer.Option("--write", help="Really write the tags (default: a dry run that changes nothing).")] = False,
    min_confidence: Annotated[float, typer.Option("--min-confidence", min=0.0, max=1.0,
                                                  help="Write nothing for files whose top genre is less likely than this.")] = DEFAULT_MIN_CONFIDENCE,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Write up to K genres (those at or above --min-confidence).")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing genre.")] = False,
    keep_existing: Annotated[bool, typer.Option("--keep-existing", help="Skip files that have a genre (the default).")] = False,
    append: Annotated[bool, typer.Option("--append", help="Add to an existing genre (no duplicates, case-insensitive).")] = False,
    separator: Annotated[str | None, typer.Option("--separator", help="Join several genres into one value with this (default: only for ID3v2.3, with '; ').")] = None,
    genre_names: Annotated[Path | None, typer.Option("--genre-names", help="Label -> name overrides: a JSON object or label=Name lines.")] = None,
    journal: Annotated[Path | None, typer.Option("--journal", help="Journal file (default: journal.jsonl in the user data dir).")] = None,
    keep_mtime: Annotated[bool, typer.Option("--keep-mtime", help="Keep each file's modification (and access) time.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Classify every file, ignoring the result cache.")] = False,
    fmt: Annotated[TagFormat, typer.Option("--format", "-f", help="Output format.")] = TagFormat.table,
    recursive: RecursiveOpt = True,
    vote: VoteOpt = Vote.soft,
    segments: SegmentsOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.fp32,
    jobs: JobsOpt = None,
) -> None:
    """Write each file's genre into its tags (a dry run unless --write).

    mp3/wav/aiff: ID3v2 TCON; flac/ogg/opus: Vorbis GENRE; m4a: the ©gen atom.
    Several genres (--top-k) are stored as separate values where the format
    allows. Each write goes through a verified temporary copy and an atomic
    rename, and is journalled, so `genretag undo` can take it back.
    Files whose top genre scores below --min-confidence (default 0.5) are left alone.

    Example: genretag tag ~/Music --write --top-k 2 --min-confidence 0.3

    Exit code 0 when no file failed, 1 when any did, 2 on a usage error.
    """
    from genretag.pipeline.cache import CacheStats, ResultCache, classify_cached
    from genretag.pipeline.inference import default_jobs
    from genretag.tags.journal import JournalWriter

    if sum((overwrite, keep_existing, append)) > 1:
        fail("use only one of --overwrite, --keep-existing, --append", 2)
    policy = "overwrite" if overwrite else "append" if append else "keep-existing"
    if separator == "":
        fail("--separator must not be empty", 2)
    names: dict[str, str] = {}
    if genre_names is not None:
        try:
            names = load_genre_names(genre_names)
        except ValueError as e:
            fail(str(e), 2)
    writer = JournalWriter(journal) if write else None
    if writer is not None:
        try:
            writer.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            fail(f"cannot create the journal folder {writer.path.parent}: {e.strerror}", 2)

    opts = classify_options(recursive, vote, segments, model, device, precision, jobs)
    net = load(opts)
    cache = None
    if not no_cache:
        try:
            cache = ResultCache()
        except Exception as e:  # a broken cache must not stop tagging
            info(f"genretag: warning: result cache unavailable ({e}); classifying everything")
    stats = CacheStats()
    counts = Counts()
    cleaned: set[str] = set()
    times: dict[str, tuple[int, int]] = {}  # --keep-mtime: times before genretag read the file

    def inputs():
        for p in iter_inputs(paths, opts.recursive):
            if keep_mtime and write:
                try:
                    st = os.stat(p)
                    times[p] = (st.st_atime_ns, st.st_mtime_ns)
                except OSError:
                    pass
            folder = os.path.dirname(os.path.abspath(p))
            if write and folder not in cleaned:
                cleaned.add(folder)
                for stray in cleanup_stray_temps(folder):
                    info(f"removed stray temporary file {stray}")
            yield p

    results = classify_cached(inputs(), net, vote=opts.vote, segments=opts.segments,
                              jobs=opts.jobs or default_jobs(), cache=cache, stats=stats)
    rows: list[Row] = []
    total = 0
    progress = None
    if not state.quiet and sys.stderr.isatty():
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} files"),
                            TextColumn("[green]{task.fields[w]} {task.fields[verb]}[/] · {task.fields[s]} skipped · "
                                       "[red]{task.fields[f]} failed"), TimeElapsedColumn(),
                            console=err_console(), transient=True)
        task = progress.add_task("tagging" if write else "dry run", total=None, w=0, s=0, f=0,
                                 verb="written" if write else "to write")
        progress.start()
    try:
        for r in results:
            total += 1
            row = _handle(r, write, policy, min_confidence, top_k, names, separator, keep_mtime, writer,
                          times.pop(r.path, None))
            if row.action == ERROR:
                counts.failed += 1
            elif row.action in ("write", "written"):
                counts.written += 1
            else:
                counts.skipped += 1
            if fmt is TagFormat.jsonl:
                sys.stdout.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
                sys.stdout.flush()
            else:
                rows.append(row)
            if progress is not None:
                progress.update(task, advance=1, w=counts.written, s=counts.skipped, f=counts.failed)
    finally:
        if progress is not None:
            progress.stop()
        if cache is not None:
            cache.close()
    if fmt is TagFormat.table and rows:
        out_console().print(_table(rows, write))
    if total == 0:
        fail("no audio files found", 1)
    verb = "written" if write else "would be written"
    info(f"{total} files: {counts.written} {verb}, {counts.skipped} skipped, {counts.failed} failed "
         f"({stats.classified} classified, {stats.cached} from cache)"
         + ("" if write else "; dry run, nothing changed (use --write)"))
    if counts.failed:
        raise typer.Exit(1)


def _handle(r, write: bool, policy: str, min_confidence: float, top_k: int, names: dict[str, str],
            separator: str | None, keep_mtime: bool, writer, times: tuple[int, int] | None = None) -> Row:
    """Plan (and with --write, do) one file; never raises for a bad file."""

    row = Row(r.path, confidence=r.confidence)
    if not r.ok:
        row.action, row.error = ERROR, r.error
        return row
    try:
        current = read_tags(r.path)
    except TagError as e:
        row.action, row.error = ERROR, str(e)
        return row
    row.current = readable_values(current, separator)
    plan = plan_tag(r, row.current, policy, min_confidence, top_k, names)
    row.proposed, row.new, row.action = plan.proposed, plan.new_values, plan.action
    if plan.action != WRITE:
        row.new = []
        return row
    if not write:  # say now what --write would run into
        try:
            if is_read_only(os.stat(r.path), r.path):
                row.action, row.error = ERROR, "read-only file (permission denied)"
        except OSError as e:
            row.action, row.error = ERROR, e.strerror or str(e)
        return row
    try:
        write_genres_safely(r.path, plan.new_values, separator=separator, keep_mtime=keep_mtime,
                                    before_replace=writer, times=times)
        row.action = "written"
    except TagError as e:
        row.action, row.error = ERROR, str(e)
    return row


def _table(rows: list[Row], write: bool):
    from rich.table import Table

    t = Table(show_header=True, header_style="bold")
    t.add_column("file", overflow="fold")
    t.add_column("current genre")
    t.add_column("proposed")
    t.add_column("confidence", justify="right")
    t.add_column("action", overflow="fold")
    for row in rows:
        action = f"error: {row.error}" if row.action == "error" else row.action
        conf = "" if row.confidence is None else f"{row.confidence:.3f}"
        t.add_row(row.path, "; ".join(row.current), "; ".join(row.new or row.proposed), conf, action)
    return t


@app.command("undo")
def undo_cmd(
    journal: Annotated[Path | None, typer.Argument(help="Journal file (default: the user data dir's journal.jsonl).",
                                                   show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be restored; change nothing.")] = False,
    keep_mtime: Annotated[bool, typer.Option("--keep-mtime", help="Keep each file's modification (and access) time.")] = False,
) -> None:
    """Take back the genre writes in a journal, newest first.

    A file changed since genretag wrote it is refused (and left alone);
    files already restored are skipped, so running undo twice is harmless.

    Example: genretag undo --dry-run

    Exit code 0 when nothing was refused or failed, 1 otherwise.
    """
    from genretag.tags.journal import default_journal_path, undo

    jpath = journal or default_journal_path()
    if not jpath.exists():
        fail(f"no journal at {jpath}", 1 if journal is None else 2)
    counts: dict[str, int] = {}
    out = out_console()
    try:
        for item in undo(jpath, dry_run=dry_run, keep_mtime=keep_mtime):
            counts[item.status] = counts.get(item.status, 0) + 1
            detail = ""
            if item.status in ("restored", "would restore"):
                detail = f": {'; '.join(item.new or []) or '(none)'} -> {'; '.join(item.old or []) or '(none)'}"
            elif item.message:
                detail = f": {item.message}"
            out.print(f"{item.status} {item.path}{detail}", markup=False)
    except OSError as e:
        fail(f"cannot read journal {jpath}: {e.strerror}", 1)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "nothing to undo"
    info(summary + (" (dry run)" if dry_run else ""))
    if counts.get("refused") or counts.get("error"):
        raise typer.Exit(1)
