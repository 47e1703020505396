"""`genretag tag` (write genres into files' tags) and `genretag undo`: thin loops over `genretag.tags`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from genretag.cli.app import app, err_console, fail, info, out_console, state
from genretag.cli.common import (
    DeviceOpt,
    JobsOpt,
    ModelOpt,
    Precision,
    PrecisionOpt,
    RecursiveOpt,
    SchedulerFileOpt,
    SchedulerOpt,
    SegmentsOpt,
    Vote,
    VoteOpt,
    classify_options,
    genre_names_option,
    iter_inputs,
    load,
    open_executor,
    open_result_cache,
)
from genretag.cli.outputs import refuse_unsafe_output

if TYPE_CHECKING:
    from genretag.tags.plan import TagPlan


class TagFormat(str, Enum):
    table = "table"
    jsonl = "jsonl"


def shown(path: str) -> str:
    """A path (or a genre) for the terminal: each byte that is not UTF-8 appears as \\xNN (as in `classify`'s
    output)."""
    from genretag.fs import printable_path

    return printable_path(path)


def write_json_line(obj: dict) -> None:
    """One JSON line on stdout, valid UTF-8 whatever the file names: a name that is not UTF-8 is shown
    with \\xNN escapes in `path` and given exactly, in base64, in `path_bytes` (as `classify` does)."""
    from genretag.fs import path_bytes

    raw = path_bytes(obj.get("path", ""))
    if raw is not None:
        obj = {**obj, "path": shown(obj["path"]), "path_bytes": raw}
    sys.stdout.flush()
    sys.stdout.buffer.write((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace"))
    sys.stdout.buffer.flush()


@dataclass
class _Report:
    """Counts, the progress line and the rows of one `tag` run."""

    write: bool
    fmt: TagFormat
    written: int = 0
    skipped: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self.rows: list[TagPlan] = []
        self.progress = None
        if not state.quiet and sys.stderr.isatty():
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} files"),
                TextColumn("[green]{task.fields[w]} {task.fields[verb]}[/] · {task.fields[s]} skipped · "
                           "[red]{task.fields[f]} failed"), TimeElapsedColumn(), console=err_console(), transient=True)
            self.task = self.progress.add_task("tagging" if self.write else "dry run", total=None, w=0, s=0, f=0,
                                               verb="written" if self.write else "to write")
            self.progress.start()

    @property
    def total(self) -> int:
        return self.written + self.skipped + self.failed

    def add(self, plan: TagPlan, result=None) -> None:
        from genretag.tags.plan import ERROR, WRITE, WRITTEN  # the tag stack loads with `tag`, not with the CLI

        if plan.action == ERROR:
            self.failed += 1
        elif plan.action in (WRITE, WRITTEN):
            self.written += 1
        else:
            self.skipped += 1
        if self.fmt is TagFormat.jsonl:
            row = plan.to_json()
            if result is not None and result.probabilities:  # what `genretag report` shows as the top 3
                row["top"] = [[label, p] for label, p in result.top(3)]
                row["segments"] = result.segments
            write_json_line(row)
        else:
            self.rows.append(plan)
        if self.progress is not None:
            self.progress.update(self.task, advance=1, w=self.written, s=self.skipped, f=self.failed)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def table(self):
        from rich.table import Table

        from genretag.tags.plan import ERROR

        t = Table(show_header=True, header_style="bold")
        t.add_column("file", overflow="fold")
        t.add_column("current genre")
        t.add_column("proposed")
        t.add_column("confidence", justify="right")
        t.add_column("action", overflow="fold")
        for p in self.rows:
            action = f"error: {p.error}" if p.action == ERROR else p.action
            conf = "" if p.confidence is None else f"{p.confidence:.3f}"
            t.add_row(shown(p.path), shown("; ".join(p.current)), shown("; ".join(p.new_values or p.proposed)), conf,
                      action)
        return t


#: `tag` takes no PATH with --only (the list names the files).
TagPathsArg = Annotated[list[str] | None, typer.Argument(help="Audio files and/or folders (none with --only).",
                                                         show_default=False)]


@app.command("tag")
def tag_cmd(
    paths: TagPathsArg = None,
    write: Annotated[bool, typer.Option("--write", help="Really write the tags (default: a dry run that changes nothing).")] = False,
    min_confidence: Annotated[float | None, typer.Option("--min-confidence", min=0.0, max=1.0, show_default=False,
                                                         help="Write only genres whose confidence is at least this (default: the model's, chosen for about 90% right on real recordings; 0.5 for a model without one).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Write up to K genres (each at or above --min-confidence).")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing genre.")] = False,
    keep_existing: Annotated[bool, typer.Option("--keep-existing", help="Skip files that have a genre (the default).")] = False,
    append: Annotated[bool, typer.Option("--append", help="Add to an existing genre (no duplicates, case-insensitive).")] = False,
    separator: Annotated[str | None, typer.Option("--separator", help="Join several genres into one value with this (default: only for ID3v2.3, with '; ').")] = None,
    genre_names: Annotated[Path | None, typer.Option("--genre-names", help="Label -> name overrides: a JSON object or label=Name lines.")] = None,
    journal: Annotated[Path | None, typer.Option("--journal", help="Journal file (default: journal.jsonl in the user data dir).")] = None,
    keep_mtime: Annotated[bool, typer.Option("--keep-mtime", help="Keep each file's modification (and access) time.")] = False,
    split_hard_links: Annotated[bool, typer.Option("--split-hard-links", help="Write files that have several names (hard links) too: the written name gets a new file, the other names keep the old one (default: skip them).")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Classify every file, ignoring the result cache.")] = False,
    fmt: Annotated[TagFormat, typer.Option("--format", "-f", help="Output format.")] = TagFormat.table,
    report_path: Annotated[Path | None, typer.Option("--report", metavar="FILE.html", help="Also write a review page: totals, genre charts, confidences and every file, in one HTML file.")] = None,
    only: Annotated[Path | None, typer.Option("--only", metavar="LIST", help="Only the files of LIST (the accepted.jsonl a review page downloads, or any genretag JSON lines); each is checked again before it is written.")] = None,
    recursive: RecursiveOpt = True,
    vote: VoteOpt = Vote.soft,
    segments: SegmentsOpt = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = Precision.auto,
    jobs: JobsOpt = None,
    scheduler: SchedulerOpt = None,
    scheduler_file: SchedulerFileOpt = None,
) -> None:
    """Write each file's genre into its tags (a dry run unless --write).

    mp3/wav/aiff: ID3v2 TCON; flac/ogg/opus: Vorbis GENRE; m4a: the ©gen atom.
    Several genres (--top-k) are stored as separate values where the format
    allows. Each write goes through a verified temporary copy and an atomic
    rename (every other tag field and the audio kept byte for byte), and is
    journalled, so `genretag undo` can take it back. A file whose audio
    changed since it was classified is skipped.
    Files whose top genre's confidence is below --min-confidence are left alone. With a
    calibrated model (the default), a confidence of P means about P of such answers were right
    on labelled recordings outside its training data, and the default threshold is the model's.

    --report review.html writes a page to look at before (or after) writing;
    the files ticked there are written with --write --only accepted.jsonl.

    Example: genretag tag ~/Music --write --top-k 2 --min-confidence 0.3

    Exit code 0 when no file failed, 1 when any did, 2 on a usage error.
    """
    from genretag.tags.plan import DEFAULT_MIN_CONFIDENCE
    from genretag.tags.tagger import Tagger

    if only is not None and paths:
        fail("give either PATH... or --only LIST, not both", 2)
    if only is None and not paths:
        fail("Missing argument 'PATHS...': audio files and/or folders, or --only LIST (see 'genretag tag --help')", 2)
    if report_path is not None:
        from genretag.report import check_writable

        check_writable(report_path)  # before any model is loaded or any file read
    accepted = None
    if only is not None:
        from genretag.report import read_accepted

        accepted = read_accepted(only)
    if sum((overwrite, keep_existing, append)) > 1:
        fail("use only one of --overwrite, --keep-existing, --append", 2)
    if separator == "":
        fail("--separator must not be empty", 2)
    names = genre_names_option(genre_names)
    tagger = Tagger(policy="overwrite" if overwrite else "append" if append else "keep-existing",
                    min_confidence=DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence, top_k=top_k, names=names, separator=separator,
                    keep_mtime=keep_mtime, journal=journal, write=write, split_hard_links=split_hard_links)
    if journal is not None:
        refuse_unsafe_output("--journal", journal, paths)
    if write:
        if tagger.journal.path.is_dir():
            fail(f"--journal {tagger.journal.path} is a folder: give the journal's file name", 2)
        kind = _not_regular(tagger.journal.path)
        if kind:
            fail(f"--journal {tagger.journal.path} is not a regular file ({kind})", 2)
        try:
            tagger.journal.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            fail(f"cannot create the journal folder {tagger.journal.path.parent}: {e.strerror}", 2)

    opts = classify_options(recursive, vote, segments, model, device, precision, jobs, scheduler, scheduler_file,
                            paths=paths)
    loaded_model = load(opts)
    if min_confidence is None and loaded_model.min_confidence is not None:
        tagger.min_confidence = loaded_model.min_confidence
    # a scheduler answers before the cache or any file is written: an unreachable one changes nothing
    executor = open_executor(opts, loaded_model, open_cache=None if no_cache else open_result_cache)
    unreadable: list[str] = []  # folders that could not be read: each is a failure, as in `classify`

    def inputs():
        # a listed path is taken as it is (never walked as a folder): exactly the listed files
        for p in (accepted.paths if accepted is not None else iter_inputs(paths, opts.recursive, unreadable)):
            for stray in tagger.note_times_and_clean(p):
                info(f"removed stray temporary file {shown(str(stray))}")
            yield p

    results = executor.classify(inputs())
    report = _Report(write, fmt)
    review = [] if report_path is not None else None
    try:
        for r in results:
            plan = tagger.plan(r)
            if accepted is not None:
                plan = accepted.check(plan)
            report.add(tagger.apply(plan), r)
            if review is not None:
                from genretag.report import row_from_plan

                review.append(row_from_plan(plan, r, names))
    finally:
        report.close()
        results.close()  # stopped early (Ctrl-C): cancels the work in flight, stores what is done
        executor.close()  # and its result cache
    if report.rows:
        out_console().print(report.table())
    if review is not None:
        _write_review(review, report_path, loaded_model, opts, write=write, threshold=tagger.min_confidence,
                      policy=tagger.policy)
    if report.total == 0 and not unreadable:
        fail("no audio files found", 1)
    verb = "written" if write else "would be written"
    folders = f", {len(unreadable)} unreadable folder{'s' * (len(unreadable) != 1)}" if unreadable else ""
    info(f"{report.total} file{'s' * (report.total != 1)}: {report.written} {verb}, {report.skipped} skipped, {report.failed} failed{folders} "
         f"({executor.stats.classified} classified, {executor.stats.cached} from cache)"
         + ("" if write else "; dry run, nothing changed (use --write)"))
    if report.failed or unreadable:
        raise typer.Exit(1)


def _not_regular(path: Path) -> str | None:
    """What `path` is when it exists and is not a regular file (a FIFO would block the run), else None."""
    from genretag.audio.containers import special_kind

    try:
        return special_kind(path.stat().st_mode)
    except OSError:
        return None


def _write_review(rows, path: Path, model, opts, *, write: bool, threshold: float, policy: str) -> None:
    from genretag.report import ReportSettings, write_report

    a = model.card.audio
    settings = ReportSettings(threshold=threshold, written=write, model=model.card.name, policy=policy,
                              segment_seconds=a.segment_seconds, max_segments=opts.segments or a.max_segments)
    write_report(rows, path, settings)
    info(f"review page: {shown(str(path))} ({len(rows)} file{'s' * (len(rows) != 1)})")


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
    A journal line that is not a well-formed entry is reported and counted;
    the other entries are still undone.

    Example: genretag undo --dry-run

    Exit code 0 when nothing was refused or failed and every journal line
    was readable (or there is nothing to undo), 1 otherwise; 2 when the
    journal named with --journal does not exist.
    """
    from genretag.tags.journal import (
        BAD_LINE,
        FAILED,
        LINE_STATUSES,
        REFUSED,
        RESTORED,
        WOULD_RESTORE,
        default_journal_path,
        undo,
    )

    jpath = journal or default_journal_path()
    if not jpath.exists():
        if journal is not None:
            fail(f"no journal at {jpath}", 2)
        info(f"nothing to undo: genretag has written nothing yet (no journal at {jpath})")
        return
    kind = _not_regular(jpath)
    if kind:
        fail(f"journal {jpath} is not a regular file ({kind})", 2)
    counts: dict[str, int] = {}
    out = out_console()
    try:
        for item in undo(jpath, dry_run=dry_run, keep_mtime=keep_mtime):
            counts[item.status] = counts.get(item.status, 0) + 1
            detail = ""
            if item.status in (RESTORED, WOULD_RESTORE):
                detail = shown(f": {'; '.join(item.new or []) or '(none)'} -> {'; '.join(item.old or []) or '(none)'}")
            elif item.message:
                detail = f": {item.message}"
            line = f"{item.status} {shown(item.path)}{detail}"
            if item.status in LINE_STATUSES:
                err_console().print(f"genretag: warning: {shown(item.path)}: {item.message}", markup=False)
            else:
                out.print(line, markup=False, highlight=False, soft_wrap=True)
    except OSError as e:
        fail(f"cannot read journal {jpath}: {e.strerror}", 1)
    summary = ", ".join(f"{n} {s}{'s' * (s in LINE_STATUSES and n != 1)}" for s, n in counts.items()) or "nothing to undo"
    info(summary + (" (dry run)" if dry_run else ""))
    if counts.get(REFUSED) or counts.get(FAILED) or counts.get(BAD_LINE):
        raise typer.Exit(1)
