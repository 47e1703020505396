"""The typer app, global options, and the one way the CLI reports errors."""

from __future__ import annotations

import logging
import os
import shlex
import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from typer.completion import completion_init
from typer.core import TyperGroup

from genretag.errors import GenretagError, missing_extra
from genretag.version import __version__


class _Commands(TyperGroup):
    """The root command: a `GenretagError` from any command ends it with one line and its exit code.

    Caught here rather than in `main` alone so that every way of running the
    app (the console script, `python -m genretag`, click's test runner) reports
    it the same way.
    """

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GenretagError as e:
            fail(str(e), e.exit_code)
        except ImportError as e:  # an extra's module, not installed: name the pip install that adds it
            missing = missing_extra(e)
            if missing is None:
                raise
            fail(str(missing), missing.exit_code)

    def make_context(self, info_name, args, parent=None, **extra):
        argv = list(args)  # before parsing consumes them
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        ctx.meta[_ARGV] = argv
        return ctx


_ARGV = "genretag.argv"


def command_line(ctx: typer.Context) -> str:
    """The command line this run was started with (``genretag`` and every argument, quoted as a
    shell would need), for a model card to record. Global options are included wherever they stood."""
    return shlex.join(["genretag", *ctx.meta.get(_ARGV, [])])


app = typer.Typer(
    name="genretag",
    cls=_Commands,
    help="Listen to a music library and say (or tag) which genre each track is.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Completions are files in completions/ (no --install-completion writing rc files,
# genretag.cli.completions writes them); this switches on the protocol they call back into.
completion_init()


class State:
    """What this run's global options and start-up found.

    `quiet` is read from the level of the `genretag` logger, which `setup_logging` sets from -q:
    one setting decides both what the CLI's own notes and progress show and what the library's
    log records do. `verbose` counts -v, which also asks for more detail in results (`models list`),
    even with -q.
    """

    verbose: int = 0
    stdout_closed: bool = False  # genretag was started with file descriptor 1 closed (`>&-`)

    @property
    def quiet(self) -> bool:
        """-q: errors only (no notes, no progress)."""
        return logging.getLogger("genretag").getEffectiveLevel() >= logging.ERROR


state = State()


def err_console() -> Console:
    """Console for messages and progress: stderr, no colour when NO_COLOR or not a terminal."""
    return Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")), highlight=False, soft_wrap=True)


def out_console() -> Console:
    """Console for results on stdout; wide when piped so that paths are not folded."""
    width = None if sys.stdout.isatty() else 240
    return Console(no_color=bool(os.environ.get("NO_COLOR")), highlight=False, soft_wrap=True, width=width)


def info(msg: str) -> None:
    if not state.quiet:
        err_console().print(msg, markup=False)


def debug(msg: str) -> None:
    if state.verbose and not state.quiet:
        err_console().print(msg, markup=False)


def fail(msg: str, code: int = 2) -> NoReturn:
    """Print a one-line error to stderr and exit with `code` (2: usage, 1: failure)."""
    err_console().print(f"genretag: error: {msg}", markup=False)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        print(f"genretag {__version__}")
        raise typer.Exit(0)


class _StderrLog(logging.Handler):
    """genretag's log records on stderr as the CLI's own lines: notes plain, warnings prefixed."""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            msg = f"genretag: {record.levelname.lower()}: {msg}"
        err_console().print(msg, markup=False)


def _log_level(quiet: bool, verbose: int) -> int:
    """--quiet: errors only; default: notes (INFO); -v: DEBUG as well."""
    if quiet:
        return logging.ERROR
    return logging.DEBUG if verbose else logging.INFO


def setup_logging(quiet: bool, verbose: int) -> None:
    """Send the `genretag` loggers to stderr at the level -q/-v ask for (replacing an earlier setup)."""
    logger = logging.getLogger("genretag")
    for h in [h for h in logger.handlers if isinstance(h, _StderrLog)]:
        logger.removeHandler(h)
    logger.addHandler(_StderrLog())
    logger.setLevel(_log_level(quiet, verbose))


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only results and errors; no progress or notes.")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More detail on stderr (repeatable).")] = 0,
) -> None:
    """Listen to a music library and say (or tag) which genre each track is."""
    state.verbose = verbose
    setup_logging(quiet, verbose)


def safe_std_streams() -> None:
    """Standard streams that cannot raise on what genretag prints.

    A name the terminal's encoding cannot show (``LC_ALL=C``, ``PYTHONIOENCODING=ascii``) is written
    with backslash escapes instead of raising UnicodeEncodeError. A standard descriptor that was
    closed at start (``>&-``, ``2>&-``) is opened on /dev/null, so that no file genretag opens later
    (an output, the result cache) gets descriptor 1 or 2 and receives what is printed; with stderr
    closed the results are still produced, with stdout closed `classify` says so (`stdout_closed`).
    """
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            os.set_inheritable(fd, True)  # as a standard descriptor is: the decoding workers get it too
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", encoding="utf-8", closefd=False))
            if fd == 1:
                state.stdout_closed = True
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main() -> None:
    """Console-script entry point: no tracebacks for expected errors, 130 on Ctrl-C."""
    from genretag.pipeline.heap import keep_freed_memory
    from genretag.pipeline.threads import prefer_passive_openmp

    safe_std_streams()
    keep_freed_memory()  # genretag owns this process: batch-sized buffers are reused, not re-faulted
    prefer_passive_openmp()  # before torch is imported
    try:
        rc = app(standalone_mode=False)
    except typer.TyperException as e:  # click's usage errors: one line too, not typer's boxed panel
        if type(e).__name__ == "NoArgsIsHelpError":  # bare `genretag`: the help was the answer
            if e.format_message():
                err_console().print(e.format_message(), markup=False)
            sys.exit(2)
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        err_console().print(f"genretag: error: {e.format_message()}{hint}", markup=False)
        sys.exit(getattr(e, "exit_code", 2))
    except (KeyboardInterrupt, typer.Abort):
        err_console().print("genretag: interrupted", markup=False)
        sys.exit(130)
    except GenretagError as e:  # raised outside a command (the commands' own are caught by _Commands)
        err_console().print(f"genretag: error: {e}", markup=False)
        sys.exit(e.exit_code)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
    if rc == 130:  # typer turns a Ctrl-C inside a command into Exit(130), silently
        err_console().print("genretag: interrupted", markup=False)
    sys.exit(rc if isinstance(rc, int) else 0)
