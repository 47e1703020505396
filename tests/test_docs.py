"""Every `genretag ...` command the README and docs/*.md show exists, parses, and the cheap ones run.

Collected: command lines in fenced code blocks (in a block with `$ ` prompts, only the prompt lines;
`\\` continuations joined; `;`, `&&`, `|` and redirections cut) and inline code spans starting with
`genretag `. Each is walked through the typer app (`typer.main.get_command(app)`): the subcommands,
every option name, the value of every choice option, and the number of positional arguments.

Then, per page, the cheap commands of its code blocks (classify, tag, undo, models list/info, --version,
--help) run in order in one scratch folder standing in for the user's home, each path argument made
into generated audio (a file for an audio extension, a folder of two files otherwise), so that a page's
`tag --write` and its `undo` act on the same files. A command touching the shared data, the network, a
card path or an input file the page does not create is only checked, not run.

Each ```python block runs too, as a script in a scratch folder holding the audio files it names.
"""

from __future__ import annotations

import enum
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main
from audio_factory import make_file
from typer.testing import CliRunner

from genretag.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CLI = typer.main.get_command(app)

#: Commands cheap enough to run on a few seconds of generated audio.
CHEAP = {(), ("classify",), ("tag",), ("undo",), ("models", "list"), ("models", "info")}
#: Options that need something a scratch folder does not have (a cluster, CUDA or bf16 hardware, a
#: network index, an input file): a command with one is checked, not run.
NOT_RUN = {"--scheduler", "--scheduler-file", "--device", "--precision", "--index", "--genre-names", "--params", "--journal",
           "--only"}
AUDIO = {".mp3", ".flac", ".ogg", ".opus", ".m4a", ".wav", ".aiff"}


@dataclass
class Line:
    page: str
    lineno: int
    text: str
    tokens: list[str]
    in_block: bool

    def __str__(self) -> str:
        return f"{self.page}:{self.lineno}: `{self.text}`"


def _commands(text: str) -> list[list[str]]:
    """The `genretag ...` token lists in one shell line (cut at ; && || |, redirections dropped)."""
    text = re.sub(r"<([A-Za-z][\w-]*)>", lambda m: m.group(1).upper(), text)  # <card> placeholders
    text = re.sub(r"(^|\s)\d+>", r"\1>", text)  # 2> file: the fd number is not an argument
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    try:
        tokens = list(lex)
    except ValueError:  # unbalanced quotes: not a shell line
        return []
    out, cur, redirect_target = [], [], False
    for t in [*tokens, ";"]:
        if t and set(t) <= set("();<>|&"):  # a shell operator
            if t.startswith((">", "<")):  # the next word is a file; the command goes on after it
                redirect_target = True
                continue
            while cur and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", cur[0]):  # VAR=value genretag ...
                cur.pop(0)
            if cur and cur[0] == "genretag":
                out.append(cur)
            cur = []
        elif redirect_target:
            redirect_target = False
        else:
            cur.append(t)
    return out


def collect(page: Path) -> list[Line]:
    lines, name = [], page.relative_to(ROOT).as_posix()
    raw = page.read_text().splitlines()
    fence, block = None, []
    for n, text in enumerate(raw, 1):
        stripped = text.strip()
        if fence is None and re.match(r"^(```|~~~)", stripped):
            fence, block = stripped[:3], []
            continue
        if fence is not None and stripped.startswith(fence):
            prompts = any(t.lstrip().startswith("$ ") for _, t in block)
            joined: list[tuple[int, str]] = []
            for k, t in block:
                if joined and joined[-1][1].endswith("\\"):
                    joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + t.strip())
                else:
                    joined.append((k, t))
            for k, t in joined:
                t = t.strip()
                if prompts and not t.startswith("$ "):
                    continue
                t = t.removeprefix("$ ")
                lines += [Line(name, k, t, c, True) for c in _commands(t)]
            fence = None
            continue
        if fence is not None:
            block.append((n, text))
            continue
        for span in re.findall(r"`(genretag\s[^`]*)`", text):
            lines += [Line(name, n, span, c, False) for c in _commands(span)]
    return lines


LINES = [line for page in PAGES for line in collect(page)]


# typer may carry its own copy of click, so the command tree is read by duck typing, not isinstance.
def _is_group(cmd) -> bool:
    return hasattr(cmd, "commands")


def _options(cmd) -> dict:
    opts = {}
    for p in cmd.params:
        if p.param_type_name == "option":
            for name in [*p.opts, *p.secondary_opts]:
                opts[name] = p
    return opts


def _choices(p) -> list[str]:
    """The values a choice option accepts (an Enum annotation, or a click Choice type); [] otherwise."""
    ann = getattr(getattr(p, "type_descriptor", None), "annotation", None)
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return [str(e.value) for e in ann]
    return [str(getattr(c, "value", c)) for c in getattr(getattr(p, "type", None), "choices", None) or []]


def _is_placeholder(value: str) -> bool:
    return bool(re.fullmatch(r"[\[<$]?[A-Z][A-Z0-9_.|-]*[\]>]?(\.\.\.)?", value)) or value.startswith(("<", "$"))


@dataclass
class Parsed:
    path: tuple[str, ...]
    options: list[str]
    positionals: list[str]
    problems: list[str]


def parse(tokens: list[str]) -> Parsed:
    """Walk `tokens` (starting with "genretag") through the click command tree."""
    cmd, path, options, positionals, problems = CLI, [], [], [], []
    i = 1
    while i < len(tokens):
        t = tokens[i]
        where = " ".join(["genretag", *path])
        if t == "--":
            positionals += tokens[i + 1:]
            break
        if t.startswith("-") and len(t) > 1 and not re.fullmatch(r"-[\d.,]+", t):
            name, _, inline = t.partition("=")
            opts = _options(cmd)
            if name in ("-h", "--help"):
                options.append(name)
                i += 1
                continue
            if name not in opts and re.fullmatch(r"-[A-Za-z]{2,}", name) and all(
                    f"-{c}" in opts and getattr(opts[f"-{c}"], "count", False) for c in name[1:]):  # -vv
                options.append(name)
                i += 1
                continue
            if name not in opts:
                known = ", ".join(sorted(n for n in opts if n.startswith("--"))) or "none"
                problems.append(f"'{where}' has no option {name!r} (its options: {known})")
                i += 1
                continue
            p = opts[name]
            options.append(name)
            takes_value = not (getattr(p, "is_flag", False) or getattr(p, "count", False))
            if takes_value and not inline:
                i += 1
                inline = tokens[i] if i < len(tokens) else ""
                if not inline:
                    problems.append(f"'{where}' option {name} needs a value")
            choices = _choices(p)
            if takes_value and choices and not _is_placeholder(inline):
                if inline not in choices:
                    problems.append(f"'{where}' {name} {inline!r}: not one of {', '.join(choices)}")
            i += 1
            continue
        if _is_group(cmd) and not positionals:
            if _is_placeholder(t):  # `genretag COMMAND --help`
                break
            sub = cmd.commands.get(t)
            if sub is None:
                problems.append(f"'{where}' has no command {t!r} (its commands: {', '.join(sorted(cmd.commands))})")
                break
            cmd, path = sub, [*path, t]
        else:
            positionals.append(t)
        i += 1
    if not problems and not _is_group(cmd):
        args = [p for p in cmd.params if p.param_type_name == "argument"]
        if not any(a.nargs == -1 for a in args) and len(positionals) > sum(a.nargs for a in args):
            problems.append(f"'genretag {' '.join(path)}' takes {sum(a.nargs for a in args)} argument(s), "
                            f"the line gives {len(positionals)}: {positionals}")
    return Parsed(tuple(path), options, positionals, problems)


def test_the_docs_show_commands():
    assert any(line.page == "README.md" and line.in_block for line in LINES)
    paths = {parse(line.tokens).path for line in LINES}
    assert {("classify",), ("tag",), ("undo",)} <= paths


@pytest.mark.parametrize("line", LINES, ids=[f"{x.page}:{x.lineno}" for x in LINES])
def test_command_matches_the_cli(line):
    problems = parse(line.tokens).problems
    assert not problems, f"{line}\n  " + "\n  ".join(problems)


def _bundled_names() -> set[str]:
    from genretag.paths import bundled_models_dir

    return {p.stem for p in bundled_models_dir().glob("*.json")} | {"default"}


def runnable(line: Line) -> bool:
    if not line.in_block:
        return False
    p = parse(line.tokens)
    if p.problems or p.path not in CHEAP or NOT_RUN & {o.split("=")[0] for o in p.options}:
        return False
    if p.path == () and not p.options:  # bare `genretag` prints the help and exits 2
        return False
    if any("../" in t or "://" in t or t.startswith(("$", "<", "/")) or _is_placeholder(t) for t in line.tokens[1:]):
        return False
    tokens = line.tokens
    models = [v for k, t in enumerate(tokens) for v in
              ([tokens[k + 1] if k + 1 < len(tokens) else ""] if t in ("--model", "-m") else
               [t.partition("=")[2]] if t.startswith("--model=") else [])]
    if not set(models) <= _bundled_names():  # a card path or a download: checked, not run
        return False
    if p.path == ("models", "info") and not set(p.positionals) <= _bundled_names():
        return False
    return True


RUN_PAGES = sorted({line.page for line in LINES if runnable(line)})
#: A classify or models command shown on several pages runs once (they do not change any file).
_STATELESS = {("classify",), ("models", "list"), ("models", "info"), ()}
_ran: set[tuple[str, ...]] = set()


def _materialise(arg: str) -> str:
    """Generated audio at a path argument (a file for an audio extension, else a folder of two files).

    Returned absolute: decoding workers outlive one command and keep the folder they started in.
    """
    target = Path(arg).absolute()
    if arg in _bundled_names() or target.exists():
        return str(target) if target.exists() else arg
    if target.suffix.lower() in AUDIO:
        target.parent.mkdir(parents=True, exist_ok=True)
        make_file(target, seconds=4.0)
    else:
        target.mkdir(parents=True)
        make_file(target / "one.mp3", seconds=4.0, freq=220.0)
        make_file(target / "two.flac", seconds=4.0, freq=660.0)
    return str(target)


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES)
def test_cheap_commands_run_on_generated_audio(page, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    runner = CliRunner()
    ran = 0
    for line in (x for x in LINES if x.page == page and runnable(x)):
        args = [str(home) + t[1:] if t == "~" or t.startswith("~/") else t for t in line.tokens[1:]]
        parsed = parse(["genretag", *args])
        if parsed.path in _STATELESS and tuple(line.tokens[1:]) in _ran:
            continue
        made = {a: _materialise(a) for a in parsed.positionals}
        args = [made.get(a, a) for a in args]
        r = runner.invoke(app, args, prog_name="genretag")
        assert r.exit_code == 0, f"{line} exited {r.exit_code}:\n{r.output[-1500:]}"
        _ran.add(tuple(line.tokens[1:]))
        ran += 1
    assert ran or all(parse(x.tokens).path in _STATELESS for x in LINES if x.page == page and runnable(x))


def _python_blocks(page: Path) -> list[tuple[int, str]]:
    blocks, text = [], page.read_text()
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        blocks.append((text[:m.start()].count("\n") + 1, m.group(1)))
    return blocks


PYTHON = [(page.relative_to(ROOT).as_posix(), n, code) for page in PAGES for n, code in _python_blocks(page)]


@pytest.mark.slow
@pytest.mark.parametrize("page,lineno,code", PYTHON, ids=[f"{p}:{n}" for p, n, _ in PYTHON])
def test_python_examples_run_on_generated_audio(page, lineno, code, tmp_path):
    """Each ```python block runs as a script of its own, its quoted audio file names made into generated audio."""
    names = sorted(set(re.findall(r"""["']([\w./-]+\.(?:mp3|flac|ogg|opus|m4a|wav|aiff))["']""", code)))
    for name in names:
        make_file(tmp_path / name, seconds=4.0)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, f"{page}:{lineno}: the python example failed:\n{r.stderr[-1500:]}"
    assert "not found" not in r.stdout and "cannot decode" not in r.stdout, f"{page}:{lineno}:\n{r.stdout}"


# -- the README as a user's guide --------------------------------------------------------------

README = (ROOT / "README.md").read_text()
#: The README's sections, in order (a word each heading must hold).
README_SECTIONS = ["Install", "The two commands", "Quick start", "written", "Models", "Python API", "Documentation"]
#: First-person narration and project history, which belong in CHANGELOG.md and commit messages.
NARRATION = re.compile(r"\b(I|I'm|I've|we|We|our|Our)\b(?!/O)|this round|the issue|last round|[Tt]his PR")


def test_readme_is_a_short_guide_with_its_sections_in_order():
    lines = README.splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines"
    headings = [(n, t) for n, t in enumerate(lines) if t.startswith("## ")]
    at = [next((n for n, t in headings if word in t), None) for word in README_SECTIONS]
    assert None not in at and at == sorted(at), dict(zip(README_SECTIONS, at))
    assert "```text" in "\n".join(lines[:headings[0][0]]), "no real output before the first section"
    two = "\n".join(lines[at[1]:at[2]])
    assert at[1] < 60 and "../shared/data/gtzan" in two and "python3 -m pytest" in two


def test_ci_runs_the_readmes_install_and_test_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    two = README.split("## The two commands")[1].split("\n## ")[0]
    setup = re.search(r"^(python3 -m pip install [^&\n]+?)\s*&&", two, re.MULTILINE).group(1)
    quiet = setup.replace("install", "install -q", 1)  # .ci/run runs it with -q
    assert quiet in ci and "python3 -m pytest" in two
    assert ci.index(quiet) < ci.index("\npython3 -m pytest") < ci.index("-m build") < ci.index("-m venv")
    assert "--system-site-packages" not in ci  # the user's install: only what genretag declares


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_user_docs_state_what_is_without_narration(page):
    hits = [f"{n}: {t.strip()}" for n, t in enumerate(page.read_text().splitlines(), 1) if NARRATION.search(t)]
    assert hits == []
