"""The review page without a browser: what `tag --report` and `genretag report` write, hostile names,
bad results files, an unwritable page, and `tag --write --only` (the round trip's second half)."""

from __future__ import annotations

import base64
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import audio_factory as af
import pytest
from typer.testing import CliRunner

from genretag.cli import app
from genretag.pipeline import classifier as classifier_mod
from genretag.pipeline.inference import TrackResult
from genretag.report import ReportSettings, ReviewRow, render
from genretag.report.page import script_json

runner = CliRunner()

HOSTILE = [
    'quote " and \' apostrophe.flac',
    "<script>alert(1)<img src=x onerror=window.__pwned=1>.flac",
    "line\nbreak.flac",
    "\u200fright-to-left \u202egnp.exe.flac",
    "amp &amp; <b>bold\u2028sep.flac",
]
BAD_BYTES = b"caf\xe9-\xff.flac"


def run(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


fake_result = af.track_result


@pytest.fixture
def fake_model(monkeypatch):
    """The network's answers replaced by fixed ones (the CLI, cache, tags and page are the real code):
    name -> probabilities; other files get jazz 0.6 / blues 0.3."""
    answers: dict[str, dict[str, float]] = {}

    def fake_classify(paths, net, vote="soft", segments=None, jobs=1, **_):
        for p in paths:
            if not Path(p).exists():
                yield TrackResult(p, None, None, {}, 0, "file not found")
            else:
                yield fake_result(p, **answers.get(Path(p).name, {"jazz": 0.6, "blues": 0.3}))

    monkeypatch.setattr(classifier_mod, "classify", fake_classify)  # the way in of tag and classify
    return answers


@pytest.fixture
def tiny(tiny_model_dir) -> str:
    return str(tiny_model_dir)


class Page(HTMLParser):
    """The elements of a page, and the text of each <script>."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._in: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in = dict(attrs)
            self.scripts.append((self._in, ""))

    def handle_data(self, data):
        if self._in is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None

    def data(self) -> dict:
        (text,) = [t for a, t in self.scripts if a.get("type") == "application/json"]
        return json.loads(text)


def hostile_library(root: Path) -> tuple[Path, list[Path]]:
    lib = root / "lib"
    (lib / "odd").mkdir(parents=True)
    files = []
    for i, name in enumerate(HOSTILE):
        files.append(af.make_file(lib / "odd" / name, seconds=4, freq=300 + 40 * i, genre="Rock" if i % 2 else None))
    bad = Path(os.fsdecode(os.path.join(os.fsencode(lib / "odd"), BAD_BYTES)))
    os.rename(af.make_file(lib / "odd" / "plain.flac", seconds=4), bad)  # soundfile cannot open such names
    files.append(bad)
    return lib, files


def test_hostile_names_are_text_in_the_page(tmp_path, fake_model, tiny):
    lib, files = hostile_library(tmp_path)
    out = tmp_path / "out" / "review.html"
    out.parent.mkdir()
    res = run("tag", lib, "--report", out, "--model", tiny, "-j", "1")
    assert res.exit_code == 0, res.output
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    # two scripts: the data (JSON, not run) and the page's own code; no element from a file name
    assert [a.get("type") for a, _ in page.scripts] == ["application/json", None]
    assert not any(tag == "img" for tag, _ in page.tags)
    assert not any(k.startswith("on") for _, attrs in page.tags for k in attrs)
    data_text = page.scripts[0][1]
    assert not re.search("[<>&\u2028\u2029]", data_text)
    data = page.data()
    names = {r[1] for r in data["rows"]}
    assert names == set(HOSTILE) | {"caf\\xe9-\\xff.flac"}
    # the non-UTF-8 name travels exactly, for the accepted list
    (odd,) = [r for r in data["rows"] if r[1] == "caf\\xe9-\\xff.flac"]
    assert base64.b64decode(odd[11]) == os.fsencode(files[-1].resolve())
    # nothing of a name reaches the markup outside the data: the figures hold genres and counts only
    outside = text.replace(data_text, "")
    for name in HOSTILE:
        assert name not in outside
    # the same names through tag's JSON lines and `genretag report`
    res = run("tag", lib, "-f", "jsonl", "--model", tiny, "-j", "1")
    lines = tmp_path / "tag.jsonl"
    lines.write_bytes(res.stdout_bytes)
    again = tmp_path / "out" / "again.html"
    assert run("report", lines, "-o", again, "--model", tiny).exit_code == 0
    rows = Page(again.read_text(encoding="utf-8")).data()["rows"]
    assert {r[1] for r in rows} == names
    assert [base64.b64decode(r[11]) for r in rows if r[11]] == [os.fsencode(files[-1].resolve())]


def test_script_json_cannot_end_the_script():
    text = script_json({"a": "</script><script>alert(1)</script>", "b": "x\u2028y\u2029&"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><script>alert(1)</script>", "b": "x\u2028y\u2029&"}


def test_hostile_genres_in_the_figures_are_escaped(tmp_path):
    rows = [ReviewRow(path=f"/m/{i}.flac", action="skip: has genre", current=[g], proposed=["Jazz"], confidence=0.9)
            for i, g in enumerate(['<script>alert("x")</script>', "a\u202eb", "Jazz"])]
    page = Page(render(rows, ReportSettings(), str(tmp_path)))
    assert len(page.scripts) == 2 and not any(t == "script" and not a for t, a in page.tags[:-2])
    text = render(rows, ReportSettings(), str(tmp_path))
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert "a\u27e8U+202E\u27e9b" in text  # the direction mark is shown, not obeyed


def test_report_from_classify_and_from_tag_lines_agree(tmp_path, fake_model, tiny):
    lib = tmp_path / "lib"
    lib.mkdir()
    af.make_file(lib / "a.flac", genre="Rock")
    af.make_file(lib / "b.mp3")
    af.make_file(lib / "c.ogg", genre="Jazz")
    af.make_file(lib / "d.wav")
    fake_model["a.flac"] = {"metal": 0.9}  # disagrees with Rock
    fake_model["d.wav"] = {"pop": 0.3}  # below the threshold
    classified = tmp_path / "classify.jsonl"
    res = run("classify", lib, "-f", "jsonl", "-o", classified, "--model", tiny, "-j", "1")
    assert res.exit_code == 0, res.output
    tagged = tmp_path / "tag.jsonl"
    res = run("tag", lib, "-f", "jsonl", "--model", tiny, "-j", "1")
    tagged.write_text(res.stdout, encoding="utf-8")
    pages = {}
    for src in (classified, tagged):
        out = tmp_path / f"{src.stem}.html"
        res = run("report", src, "-o", out, "--model", tiny)
        assert res.exit_code == 0, res.output
        assert f"review page: {out} (4 files)" in res.stderr
        pages[src.stem] = Page(out.read_text(encoding="utf-8")).data()
    for d in pages.values():
        by_name = {r[1]: r for r in d["rows"]}
        action = {name: d["actions"][r[6]] for name, r in by_name.items()}
        assert action == {"a.flac": "skip: has genre", "b.mp3": "write", "c.ogg": "skip: has genre",
                          "d.wav": "skip: below confidence"}
        assert by_name["a.flac"][8] & 2 and by_name["a.flac"][10] == "a.flac"  # disagrees: a play link
        assert by_name["d.wav"][8] & 1 and by_name["d.wav"][9] is not None  # unsure: a start time
        assert by_name["b.mp3"][10] is None  # sure and new: nothing to listen to
    # both carry the probabilities: the top 3 is on the page, in readable names
    for d in pages.values():
        assert [g for g, _ in {r[1]: r for r in d["rows"]}["a.flac"][5]][:2] == ["Metal", "Blues"]


def test_the_play_start_is_a_stretch_the_model_listened_to(tmp_path):
    from genretag.pipeline.segments import plan_segments
    from genretag.report.page import listen_start

    f = af.make_file(tmp_path / "long.flac", seconds=30)
    settings = ReportSettings(segment_seconds=3.0, max_segments=10)
    start = listen_start(str(f), 10, settings)
    assert start in plan_segments(30.0, 3.0, 10) and 0 < start < 27
    assert listen_start(str(tmp_path / "missing.flac"), 10, settings) is None


@pytest.mark.parametrize("content, line", [
    ('{"path": "a.flac", "genre": "rock", "confidence": 0.9, "probabilities": {}, "error": null}\nnot json\n', 2),
    ("[1, 2]\n", 1),
    ('{"path": "a.flac", "genre": "rock"}\n', 1),
    ('\n{"path": "a.flac", "current": "Rock", "proposed": [], "new": [], "confidence": 1, "action": "write", '
     '"error": null}\n', 2),
    ('{"path": "a.flac", "genre": "rock", "confidence": 7, "probabilities": {}, "error": null}\n', 1),
    ("path,genre\na.flac,rock\n", 1),
])
def test_a_results_file_that_is_not_genretag_lines_is_one_line_naming_it(tmp_path, content, line):
    src = tmp_path / "results.jsonl"
    src.write_text(content, encoding="utf-8")
    out = tmp_path / "r.html"
    res = run("report", src, "-o", out)
    assert res.exit_code == 2
    (msg,) = res.stderr.strip().splitlines()
    assert msg.startswith(f"genretag: error: {src}:{line}: not a genretag result line")
    assert not out.exists()


def test_an_empty_or_missing_results_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    for src, want in ((empty, "no results in the file"), (tmp_path / "missing.jsonl", "cannot read")):
        res = run("report", src, "-o", tmp_path / "r.html")
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and want in res.stderr


def test_an_unwritable_report_fails_before_any_classification(tmp_path, monkeypatch, tiny):
    lib = tmp_path / "lib"
    lib.mkdir()
    af.make_file(lib / "a.flac")
    called = []
    monkeypatch.setattr(classifier_mod, "classify", lambda *a, **k: called.append(1) or iter(()))
    for bad in (tmp_path / "no" / "such" / "r.html", tmp_path):
        res = run("tag", lib, "--report", bad, "--model", tiny)
        assert res.exit_code == 2, res.output
        (msg,) = res.stderr.strip().splitlines()  # no "model: ..." line: nothing was loaded
        assert msg.startswith(f"genretag: error: cannot write the report {bad}")
    res = run("report", tmp_path / "whatever.jsonl", "-o", tmp_path / "no" / "r.html")
    assert res.exit_code == 2 and "cannot write the report" in res.stderr
    assert called == [] and not (tmp_path / "no").exists()


def accepted_line(path: Path, proposed: list[str], **extra) -> str:
    return json.dumps({"path": str(path.resolve()), "proposed": proposed, **extra}) + "\n"


def test_tag_write_only_writes_exactly_the_listed_files(tmp_path, fake_model, tiny):
    lib = tmp_path / "lib"
    lib.mkdir()
    files = [af.make_file(lib / f"s{i}{ext}", freq=300 + 30 * i) for i, ext in enumerate(af.FORMATS)]
    before = {p: p.read_bytes() for p in files}
    pick = [files[0], files[3], files[5]]
    accepted = tmp_path / "accepted.jsonl"
    accepted.write_text("".join(accepted_line(p, ["Jazz"]) for p in pick), encoding="utf-8")
    res = run("tag", "--write", "--only", accepted, "--model", tiny, "-j", "1", "-f", "jsonl",
              "--journal", tmp_path / "j.jsonl")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [Path(r["path"]) for r in rows] == [p.resolve() for p in pick]
    assert all(r["action"] == "written" for r in rows)
    for p in files:
        if p in pick:
            assert af.genre_values(p) == ["Jazz"]
        else:
            assert p.read_bytes() == before[p]


def test_tag_only_rechecks_each_file(tmp_path, fake_model, tiny):
    lib = tmp_path / "lib"
    lib.mkdir()
    a = af.make_file(lib / "a.flac")
    b = af.make_file(lib / "b.flac", freq=500)
    c = af.make_file(lib / "c.flac", freq=600, genre="Rock")
    d = af.make_file(lib / "d.flac", freq=700)
    accepted = tmp_path / "accepted.jsonl"
    accepted.write_text(accepted_line(a, ["Blues"])  # the reader saw another proposal
                        + accepted_line(b, ["Jazz"], fingerprint="0" * 64)  # the audio changed since
                        + accepted_line(c, ["Jazz"])  # has a genre: the policy still applies
                        + accepted_line(d, ["Jazz"]), encoding="utf-8")
    snap = {p: p.read_bytes() for p in (a, b, c)}
    res = run("tag", "--write", "--only", accepted, "--model", tiny, "-j", "1", "-f", "jsonl",
              "--journal", tmp_path / "j.jsonl")
    assert res.exit_code == 0, res.output
    action = {Path(r["path"]).name: r["action"] for r in map(json.loads, res.stdout.splitlines())}
    assert action == {"a.flac": "skip: not as reviewed", "b.flac": "skip: changed since classified",
                      "c.flac": "skip: has genre", "d.flac": "written"}
    assert all(p.read_bytes() == snap[p] for p in snap) and af.genre_values(d) == ["Jazz"]


def test_tag_only_usage_errors(tmp_path, tiny):
    lib = tmp_path / "lib"
    lib.mkdir()
    af.make_file(lib / "a.flac")
    good = tmp_path / "ok.jsonl"
    good.write_text(accepted_line(lib / "a.flac", ["Jazz"]), encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(accepted_line(lib / "a.flac", ["Jazz"]) + '{"proposed": ["Jazz"]}\n', encoding="utf-8")
    for args, want in (((lib, "--only", good), "either PATH... or --only"), ((), "Missing argument"),
                       (("--only", bad), f"{bad}:2: not an accepted-file line")):
        res = run("tag", *args, "--model", tiny)
        assert res.exit_code == 2 and want in res.stderr, res.output
        assert len(res.stderr.strip().splitlines()) == 1


def test_genretag_report_never_imports_torch(tmp_path):
    import subprocess
    import sys

    src = tmp_path / "results.jsonl"
    src.write_text(json.dumps({"path": str(tmp_path / "a.flac"), "current": [], "proposed": ["Jazz"], "new": ["Jazz"],
                               "confidence": 0.8, "action": "write", "error": None}) + "\n", encoding="utf-8")
    probe = ("import sys\nfrom genretag.cli import main\nsys.argv = ['genretag', '-q', 'report', sys.argv[1], '-o', sys.argv[2]]\n"
             "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    r = subprocess.run([sys.executable, "-c", probe, str(src), str(tmp_path / "r.html")], capture_output=True,
                       text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]" and (tmp_path / "r.html").exists()
