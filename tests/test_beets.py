"""The beets plugin against a real beets library: `beet import -A`, `beet genretag`, the import hook.

Every beets command runs in a subprocess, as a user runs it, in a library of
its own (BEETSDIR with its own config and library.db). The database is read
back with beets' own `Library`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import audio_factory as af
import pytest
from typer.testing import CliRunner

from genretag.cli import app
from genretag.store.local import default_model_name
from genretag.tags.fields import read_genres, read_tags
from genretag.tags.plan import DEFAULT_NAMES

pytest.importorskip("beets")

REPO = Path(__file__).resolve().parents[1]


class Beets:
    """One beets setup: its config dir, library folder and the source folder of the audio to import."""

    def __init__(self, root: Path, write: bool = False, **genretag) -> None:
        self.root = root
        self.config_dir, self.library, self.src = root / "beetsdir", root / "library", root / "src"
        for d in (self.config_dir, self.library, self.src):
            d.mkdir()
        self.configure(write, **genretag)

    def configure(self, write: bool, **genretag) -> None:
        config = {
            "directory": str(self.library), "library": str(self.config_dir / "library.db"),
            "create_backup_before_migrations": False, "plugins": ["genretag"], "threaded": False,
            "import": {"write": write, "copy": True, "quiet": True},
            "genretag": {"jobs": 1, **genretag},
        }
        (self.config_dir / "config.yaml").write_text(json.dumps(config))  # JSON is YAML

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "BEETSDIR": str(self.config_dir),
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-m", "beets", *args], cwd=self.root, env=env,
                              capture_output=True, text=True, timeout=600)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    def items(self) -> dict[str, dict]:
        """title -> the item's fields (genres, genretag_* attributes, path), read from library.db."""
        from beets.library import Library

        lib = Library(str(self.config_dir / "library.db"), str(self.library))
        try:
            return {it.title: {"genres": list(it.genres), "path": Path(os.fsdecode(it.path)),
                               **{k: it.get(k) for k in ("genretag_genre", "genretag_confidence",
                                                         "genretag_model")}}
                    for it in lib.items()}
        finally:
            lib._close()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def proposed(folder: Path, *opts: str) -> dict[str, list[str]]:
    """File name -> the genres `genretag tag` proposes for it (its own dry run, JSONL)."""
    out = CliRunner().invoke(app, ["tag", str(folder), "--jobs", "1", "--format", "jsonl",
                                   "--overwrite", "--min-confidence", "0", *opts], catch_exceptions=False)
    return {Path(d["path"]).name: d["proposed"] for d in map(json.loads, out.stdout.splitlines())}


@pytest.fixture
def beets(tmp_path) -> Beets:
    return Beets(tmp_path, min_confidence=0.0)


def test_version_does_not_import_torch(beets):
    code = ("import sys, beets.ui\n"
            "try:\n    beets.ui.main(['version'])\n"
            "finally:\n    print('torch imported' if 'torch' in sys.modules else 'no torch')\n")
    env = {**os.environ, "BEETSDIR": str(beets.config_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "plugins: genretag" in out.stdout, out.stdout + out.stderr
    assert out.stdout.strip().endswith("no torch")


@pytest.mark.slow
def test_fills_empty_genres_keeps_existing_and_reports_a_bad_item(beets):
    af.make_file(beets.src / "a.mp3", seconds=2, freq=330, title="a")
    af.make_file(beets.src / "b.flac", seconds=2, freq=550, title="b", genre="Folk")
    af.make_file(beets.src / "c.m4a", seconds=2, freq=770, title="c")
    af.make_file(beets.src / "d.ogg", seconds=2, freq=990, title="d")
    beets.run("import", "-A", str(beets.src))
    want = proposed(beets.src)
    before = beets.items()
    assert before["b"]["genres"] == ["Folk"] and before["a"]["genres"] == []
    before["d"]["path"].write_bytes(b"OggS" + b"\x00" * 200)  # damaged after the import
    files = snapshot(beets.library)

    pretend = beets.run("genretag", "-p")
    assert beets.items() == before and snapshot(beets.library) == files
    assert f"(none) -> {want['a.mp3'][0]}" in pretend.stdout

    done = beets.run("genretag")
    after = beets.items()
    assert after["a"]["genres"] == want["a.mp3"] and after["c"]["genres"] == want["c.m4a"]
    assert after["b"]["genres"] == ["Folk"]  # keep-existing: the audio only fills empty genres
    for title, name in (("a", "a.mp3"), ("b", "b.flac"), ("c", "c.m4a")):
        assert after[title]["genretag_genre"] == want[name][0]  # recorded even where genres were kept
        assert 0.0 < float(after[title]["genretag_confidence"]) <= 1.0
        assert after[title]["genretag_model"] == default_model_name()
    errors = [line for line in done.stderr.splitlines() if "d.ogg" in line]
    assert len(errors) == 1 and errors[0].startswith("genretag: "), done.stderr
    assert after["d"] == before["d"]
    assert snapshot(beets.library) == files  # import.write: no, and no -w: no file is touched
    assert "4 items: 2 set, 1 kept" in done.stderr

    query = beets.run("ls", "-f", "$title $genretag_confidence", "genretag_confidence:0.0..1.0")
    assert sorted(query.stdout.splitlines()) == [f"{t} {float(after[t]['genretag_confidence']):.3f}" for t in "abc"]


@pytest.mark.slow
def test_force_with_w_writes_files_through_beets_like_genretag_tag(beets):
    for i, ext in enumerate(af.FORMATS):
        af.make_file(beets.src / f"t{i}{ext}", seconds=2, freq=220 + 110 * i, title=f"t{i}", genre="Folk")
    beets.run("import", "-A", str(beets.src))
    reference = beets.root / "reference"
    shutil.copytree(beets.src, reference)
    card = REPO / "models" / f"{default_model_name()}.json"
    want = proposed(reference, "--model", str(card), "--top-k", "2", "--write")

    beets.run("genretag", "--force", "--top-k", "2", "-w", "--model", str(card))  # import.write is off: -w writes
    items = beets.items()
    for i, ext in enumerate(af.FORMATS):
        item, ref = items[f"t{i}"], reference / f"t{i}{ext}"
        assert item["genres"] == want[ref.name] and len(item["genres"]) == 2
        got, exp = read_tags(item["path"]), read_tags(ref)  # beets also writes its own other fields
        assert (got.format, got.values, got.id3_version) == (exp.format, exp.values, exp.id3_version), ext
    assert read_genres(beets.src / "t0.mp3") == ["Folk"]  # the imported originals are left alone


@pytest.mark.slow
def test_import_write_writes_the_changed_items_and_w_upper_none(tmp_path):
    beets = Beets(tmp_path, write=True, model=default_model_name(), min_confidence=0.0)
    af.make_file(beets.src / "a.flac", seconds=2, freq=330, title="a", genre="Folk")
    af.make_file(beets.src / "b.flac", seconds=2, freq=550, title="b")
    want = proposed(beets.src)
    af.make_file(beets.src / "b.flac", seconds=2, freq=550, title="b", genre=want["b.flac"][0])  # has its genre
    beets.run("import", "-A", str(beets.src))
    paths = {t: it["path"] for t, it in beets.items().items()}
    files, mtime = snapshot(beets.library), paths["b"].stat().st_mtime_ns

    beets.run("genretag", "--append", "-W")  # -W: the database only, whatever import.write says
    items = beets.items()
    assert items["a"]["genres"] == ["Folk", *want["a.flac"]] and items["b"]["genres"] == want["b.flac"]
    assert snapshot(beets.library) == files

    beets.run("genretag", "--force")  # import.write: yes writes a, whose genres change; b keeps its genres
    items = beets.items()
    assert items["a"]["genres"] == want["a.flac"] == read_genres(paths["a"])
    assert paths["b"].stat().st_mtime_ns == mtime  # not rewritten
    assert paths["b"].read_bytes() == files[str(paths["b"].relative_to(beets.library))]


@pytest.mark.slow
def test_import_hook_stores_in_the_database(tmp_path):
    beets = Beets(tmp_path)
    af.make_file(beets.src / "a.flac", seconds=3, freq=440, title="a")
    af.make_file(beets.src / "b.mp3", seconds=3, freq=660, title="b", genre="Folk")
    name = proposed(beets.src)["a.flac"][0]
    models = REPO / "models"
    labels = json.loads((models / ((models / "DEFAULT").read_text().strip() + ".json")).read_text())["labels"]
    label = name if name in labels else {v: k for k, v in DEFAULT_NAMES.items()}[name]  # the default model's label
    beets.configure(True, auto=True, min_confidence=0.0, names={label: "Own Name"})  # one label renamed
    sources = snapshot(beets.src)
    beets.run("import", "-A", str(beets.src))
    items = beets.items()
    assert items["a"]["genres"] == ["Own Name"] == [items["a"]["genretag_genre"]]
    assert items["b"]["genres"] == ["Folk"] and items["b"]["genretag_genre"]
    assert {it["genretag_model"] for it in items.values()} == {default_model_name()}
    assert snapshot(beets.src) == sources  # the source files are never rewritten
    # An as-is import writes no tags (beets' rule); `beet write` then writes what the hook stored.
    assert read_genres(items["a"]["path"]) == []
    beets.run("write")
    assert read_genres(items["a"]["path"]) == items["a"]["genres"]


@pytest.mark.slow
def test_bad_settings_are_one_line_errors(beets):
    af.make_file(beets.src / "a.flac", seconds=1, title="a")
    beets.run("import", "-A", str(beets.src))
    for args, message in ((["--top-k", "0"], "error: genretag: top_k must be at least 1, not 0"),
                          (["--min-confidence", "2"], "error: genretag: min_confidence must be between 0 and 1"),
                          (["-m", "no-such-model"], "error: genretag: model 'no-such-model' not found")):
        r = beets.run("genretag", *args, check=False)
        assert r.returncode == 1 and r.stderr.startswith(message) and len(r.stderr.splitlines()) == 1, r.stderr
    beets.configure(False, policy="sometimes")
    r = beets.run("genretag", check=False)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("configuration error: genretag.policy: must be one of"), r.stderr
    assert beets.items()["a"]["genres"] == [] and beets.items()["a"]["genretag_model"] is None


def _beet_genretag_lines() -> list[str]:
    """The `beet genretag ...` lines of docs/beets.md's code blocks (comments cut)."""
    text = (REPO / "docs" / "beets.md").read_text()
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    return [line.split(" #")[0].strip() for b in blocks for line in b.splitlines()
            if line.strip().startswith("beet genretag")]


def test_the_docs_beet_genretag_commands_and_options_match_the_plugin():
    from beetsplug.genretag import GenretagPlugin

    (cmd,) = GenretagPlugin.commands(object.__new__(GenretagPlugin))  # the parser alone: no config read
    lines = _beet_genretag_lines()
    assert len(lines) >= 3
    for line in lines:
        args = shlex.split(line)[2:]
        if args == ["[QUERY]"]:
            continue
        try:
            cmd.parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"docs/beets.md: `{line}` does not parse")
    table = re.findall(r"^\| (`-.*?) \|", (REPO / "docs" / "beets.md").read_text(), re.MULTILINE)
    documented = set(re.findall(r"`(--?[\w-]+)", " ".join(table)))
    options = {o for opt in cmd.parser.option_list for o in (*opt._short_opts, *opt._long_opts)} - {"-h", "--help"}
    assert documented == options


def test_the_docs_config_snippet_shows_the_plugins_defaults():
    import yaml

    from beetsplug.genretag import DEFAULTS

    text = (REPO / "docs" / "beets.md").read_text()
    snippet = yaml.safe_load(re.search(r"^```yaml\n(.*?)^```", text, re.MULTILINE | re.DOTALL).group(1))
    assert snippet["plugins"] == "genretag" and snippet["genretag"] == DEFAULTS
    table = dict(re.findall(r"^\| `(\w+)` \| `?([^|`]+?)`? \|", text, re.MULTILINE))
    assert set(table) == set(DEFAULTS)
    assert {k: yaml.safe_load(v) for k, v in table.items() if k != "names"} == {
        k: v for k, v in DEFAULTS.items() if k != "names"}
