"""The CLI as a shell sees it: version, --quiet/--verbose, NO_COLOR and pipes,
help examples, exit codes, and the shell completion files in completions/."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import genretag
from genretag.cli import app, completions
from genretag.cli.app import setup_logging, state
from genretag.store import index as hub

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()
ANSI = re.compile(r"\x1b\[([0-9;]*)m")


def has_color(text: str) -> bool:
    """True when `text` holds an SGR sequence that sets a colour (not just bold/reset)."""
    for m in ANSI.finditer(text):
        codes = [int(c) for c in m.group(1).split(";") if c]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c in (38, 48):  # extended colour: 38;5;n or 38;2;r;g;b
                return True
            if 30 <= c <= 37 or 40 <= c <= 47 or 90 <= c <= 97 or 100 <= c <= 107:
                return True
            i += 1
    return False


def run(*args: str, **kw):
    return runner.invoke(app, list(args), **kw)


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("GENRETAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(hub.INDEX_ENV, raising=False)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "*")
    state.verbose = 0
    setup_logging(quiet=False, verbose=0)
    yield
    state.verbose = 0
    setup_logging(quiet=False, verbose=0)



def test_quiet_is_read_from_the_log_level_the_options_set(capsys):
    """-q sets one thing, the `genretag` logger's level; the CLI's own notes and progress read it."""
    from genretag.cli.app import info

    logger = logging.getLogger("genretag")
    assert run("-q", "models", "list").exit_code == 0 and state.quiet and logger.level == logging.ERROR
    info("a note")
    assert capsys.readouterr().err == ""
    logger.setLevel(logging.INFO)  # a library user's level is the CLI's too
    assert not state.quiet
    info("a note")
    assert capsys.readouterr().err == "a note\n"
    assert run("models", "list").exit_code == 0 and not state.quiet and logger.level == logging.INFO


# --------------------------------------------------------------------------- terminals and processes

def _bash_stub_env(tmp: Path, words: list[str], cword: int) -> dict[str, str]:
    """Source completions/genretag.bash in a real bash and press <Tab>: the environment
    the stub hands to `genretag` (a recording stand-in on PATH, so no Python starts)."""
    bindir = tmp / "bin"
    bindir.mkdir(exist_ok=True)
    names = ("_GENRETAG_COMPLETE", "COMP_CWORD", "COMP_WORDS")
    fake = bindir / "genretag"
    fake.write_text("#!/bin/sh\n" + "".join(f'printf %s "${n}" > {shlex.quote(str(tmp / n))}\n' for n in names)
                    + "echo models\n")
    fake.chmod(0o755)
    script = (f"source {shlex.quote(str(REPO / 'completions' / 'genretag.bash'))} || exit 3\n"
              f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={cword}\n"
              "_genretag_completion genretag\n"
              'printf "%s\\n" "${COMPREPLY[@]}"\n'
              "complete -p genretag\n")
    r = subprocess.run([shutil.which("bash"), "--norc", "--noprofile", "-c", script], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["models", "complete -o default -F _genretag_completion genretag"]
    return {n: (tmp / n).read_text() for n in names}


@pytest.mark.skipif(shutil.which("bash") is None or sys.platform == "win32", reason="needs bash")
def test_bash_completion_file_works_when_sourced(tmp_path):
    env = _bash_stub_env(tmp_path, ["genretag", "mod"], 1)
    assert env["_GENRETAG_COMPLETE"] == "complete_bash" and env["COMP_CWORD"] == "1"
    assert env["COMP_WORDS"].split() == ["genretag", "mod"]
    # ... and the program answers exactly that request.
    r = runner.invoke(app, [], prog_name="genretag", env=env)
    assert r.exit_code == 0 and r.stdout.split() == ["models"]
    env = _bash_stub_env(tmp_path, ["genretag", "models", "d"], 2)
    r = runner.invoke(app, [], prog_name="genretag", env=env)
    assert r.stdout.split() == ["download"]


def run_in_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI in-process with stdout and stderr on a pseudo-terminal; (exit code, what it showed)."""
    import fcntl
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    tty = open(slave, "w", encoding="utf-8", buffering=1)
    chunks: list[bytes] = []

    def reader() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the terminal side is closed
                return
            if not data:
                return
            chunks.append(data)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = tty
    code = 0
    try:
        app(list(args), prog_name="genretag")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    finally:
        sys.stdout, sys.stderr = saved
        tty.close()
        t.join(5)
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


def test_version_through_python_m(monkeypatch, capsys):
    """`python -m genretag --version`: __main__ -> main() -> the app, in-process."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["genretag", "--version"])
    with pytest.raises(SystemExit) as e:
        runpy.run_module("genretag", run_name="__main__")
    assert e.value.code in (0, None)
    assert capsys.readouterr().out.strip() == f"genretag {genretag.__version__}"


def test_main_turns_model_errors_into_one_line(monkeypatch, capsys, tmp_path):
    from genretag.cli import main

    monkeypatch.setattr(sys, "argv", ["genretag", "-q", "models", "download", "https://x.invalid/m.bin"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("genretag: error: refusing")


def test_version_in_process():
    r = run("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"genretag {genretag.__version__}"


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_terminal_gets_colour_and_no_color_removes_it(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    code, out = run_in_terminal("--help")
    assert code == 0 and "Usage" in out
    assert has_color(out), "a terminal should get colour (else the NO_COLOR check below proves nothing)"
    monkeypatch.setenv("NO_COLOR", "1")
    for args in (["--help"], ["models", "list"], ["models", "info", "nope"], ["classify", "--bogus"]):
        code, out = run_in_terminal(*args)
        assert out and not has_color(out), args


def test_non_terminal_output_is_plain():
    for args in (["--help"], ["models", "list"], ["models", "info", "nope"], ["classify", "--bogus"]):
        r = run(*args)
        assert "\x1b[" not in r.stdout + r.stderr, args


# --------------------------------------------------------------------------- --quiet / --verbose

@pytest.fixture
def file_index(tmp_path) -> str:
    """A model index on disk (file:// URLs: no server needed) offering `remote`."""
    import torch

    from genretag.card import GTZAN_GENRES, AudioParams, MelParams, ModelCard
    from genretag.nets import build_net
    from genretag.store.weights import save_model, sha256_file

    torch.manual_seed(0)
    card = ModelCard(name="remote", labels=list(GTZAN_GENRES),
                     architecture={"name": "resnet", "variant": "tiny", "layers": [1, 1], "widths": [8, 16],
                                   "dropout": 0.0, "stem_stride": 2},
                     audio=AudioParams(sample_rate=16000, segment_seconds=1.0, max_segments=3),
                     mel=MelParams(n_fft=512, hop_length=256, n_mels=32))
    www = tmp_path / "www"
    save_model(build_net(card), card, www)
    index = www / "index.json"
    index.write_text(json.dumps({"models": [{"name": "remote", "url": "remote.safetensors",
                                             "sha256": sha256_file(www / "remote.safetensors")}]}))
    return str(index)


def test_quiet_and_verbose(file_index):
    r = run("models", "download", "remote", "--index", file_index)
    assert r.exit_code == 0, r.output
    assert "installed model 'remote'" in r.stderr and "GET " not in r.stderr

    r = run("-q", "models", "download", "remote", "--index", file_index, "--force")
    assert r.exit_code == 0, r.output
    assert r.stderr == "" and r.stdout == ""

    r = run("-v", "models", "download", "remote", "--index", file_index, "--force")
    assert r.exit_code == 0, r.output
    assert "GET file://" in r.stderr and "installed model 'remote'" in r.stderr

    r = run("-q", "models", "remove", "no-such-model")  # --quiet never hides errors
    assert r.exit_code == 2 and r.stderr.startswith("genretag: error:")


# --------------------------------------------------------------------------- help and exit codes

def _command_paths() -> list[tuple[str, ...]]:
    """Every registered command and command group, as argv prefixes."""
    root = typer.main.get_command(app)
    out: list[tuple[str, ...]] = []

    def walk(cmd, path: tuple[str, ...]) -> None:
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            if getattr(sub, "hidden", False):
                continue
            out.append(path + (name,))
            walk(sub, path + (name,))

    walk(root, ())
    return out


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_every_command_help_has_an_example(path):
    r = run(*path, "--help")
    assert r.exit_code == 0, r.output
    assert "Example" in r.stdout, f"`genretag {' '.join(path)} --help` has no 'Example: ...' line"


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_help_shows_bracketed_words_rich_would_take_for_markup(path, monkeypatch):
    """`genretag[dask]` in an option's help must reach the user, not vanish as a Rich style tag."""
    import re

    monkeypatch.setenv("COLUMNS", "400")
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    words = {w.replace("\\[", "[") for p in cmd.params for w in re.findall(r"\S*\[\w+\]\S*", p.help or "")}
    out = run(*path, "--help").stdout
    assert [w for w in words if w.strip(".,;()") not in out] == []


def test_exit_codes():
    assert run("classify", "--no-such-option").exit_code == 2  # usage error
    assert run("models", "info", "no-such-model").exit_code == 2
    r = run("models", "download", "https://example.invalid/model.pt")  # refused before any request
    assert r.exit_code == 2 and "only .safetensors" in r.stderr
    assert run("--version").exit_code == 0


# --------------------------------------------------------------------------- completion files

def test_completion_files_are_current(tmp_path):
    fresh = completions.write(tmp_path)
    assert {p.name for p in fresh} == {"genretag.bash", "_genretag", "genretag.fish"}
    for p in fresh:
        committed = REPO / "completions" / p.name
        assert committed.exists(), f"{committed} is missing: run python -m genretag.cli.completions"
        assert committed.read_text(encoding="utf-8") == p.read_text(encoding="utf-8"), (
            f"{committed} is stale: run python -m genretag.cli.completions")
    assert completions.main(["--check"]) == 0


def test_completion_files_shape():
    zsh = (REPO / "completions" / "_genretag").read_text()
    assert zsh.startswith("#compdef genretag\n")
    assert "_GENRETAG_COMPLETE=complete_zsh" in zsh
    assert "_GENRETAG_COMPLETE=complete_bash" in (REPO / "completions" / "genretag.bash").read_text()
    assert "complete --command genretag" in (REPO / "completions" / "genretag.fish").read_text()


def test_check_reports_stale(tmp_path, capsys):
    completions.write(tmp_path)
    (tmp_path / "genretag.fish").write_text("# old\n")
    assert completions.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "genretag.fish" in capsys.readouterr().err


def test_program_answers_completion_requests():
    # What the stubs call back into: COMP_WORDS/COMP_CWORD with _GENRETAG_COMPLETE=complete_bash.
    r = runner.invoke(app, [], prog_name="genretag",
                      env={"_GENRETAG_COMPLETE": "complete_bash", "COMP_WORDS": "genretag models d",
                           "COMP_CWORD": "2"})
    assert r.stdout.split() == ["download"]


@pytest.mark.parametrize("args, message", [
    (["classify", "--bogus", "x.mp3"], "No such option: --bogus"),
    (["classify", "x.mp3", "--segments", "many"], "Invalid value for '--segments'"),
    (["tag"], "Missing argument"),
])
def test_usage_errors_are_one_line(args, message):
    """The real entry point (not CliRunner): a usage error is one plain line and exit code 2."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "genretag", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genretag: error: ") and message in lines[0], r.stderr
    assert r.stdout == ""


def test_path_arguments_complete_file_names_in_every_shell():
    """The paths argument offers nothing of its own, so each shell falls back to file names: zsh is
    told `_files`, fish is told the argument takes files (is-args fails), bash gets no words."""
    words = "genretag classify "
    r = runner.invoke(app, [], prog_name="genretag",
                      env={"_GENRETAG_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": words})
    assert r.stdout.strip() == "_files"
    r = runner.invoke(app, [], prog_name="genretag",
                      env={"_GENRETAG_COMPLETE": "complete_fish", "_TYPER_COMPLETE_ARGS": words,
                           "_TYPER_COMPLETE_FISH_ACTION": "is-args"})
    assert r.exit_code == 1
    r = runner.invoke(app, [], prog_name="genretag",
                      env={"_GENRETAG_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": "2"})
    assert r.stdout.strip() == ""
