"""Hostile inputs for `genretag tag` and `genretag undo`, built here and run through the real CLI.

Each test builds its own library (`audio_factory` files, then damaged the way
files in the wild are), runs `python -m genretag` in a subprocess, and checks
what a user relies on: the documented exit code, one-line errors, every other
file processed, every file's audio and non-genre tags unchanged unless
written, and a written file holding exactly its old or its new genre.

Environment knob for longer runs: GENRETAG_KILL_TRIALS (kill -9 trials, 4 by
default). Fuzzing of the tag reader and writer is in test_fuzz.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import audio_factory as af
import pytest

from genretag.audio.containers import fingerprint
from genretag.tags import undo
from genretag.tags.safe_write import TMP_MARK

GOOD = [".mp3", ".flac", ".ogg", ".opus", ".m4a", ".wav", ".aiff"]


def cli(*args, timeout: float = 300, preexec: list[str] | None = None, **kw) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess; output as bytes (names need not be UTF-8)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([*(preexec or []), sys.executable, "-m", "genretag", *map(os.fsencode, map(str, args))],
                          capture_output=True, timeout=timeout, env=env, **kw)


def jsonl(out: bytes) -> dict[str, dict]:
    """Rows by file name; a name that is not UTF-8 is taken from `path_bytes`, its exact bytes."""
    def name(d: dict) -> str:
        import base64

        return os.path.basename(os.fsdecode(base64.b64decode(d["path_bytes"])) if "path_bytes" in d else d["path"])

    return {name(d): d for d in map(json.loads, out.decode("utf-8").splitlines())}


def no_traceback(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    return text


def state(p: Path) -> tuple:
    """What a genre write must keep: the audio payload and every other tag (art included)."""
    return fingerprint(p), af.all_tags(p)


def temps(folder: Path) -> list[Path]:
    return [q for q in folder.iterdir() if TMP_MARK in q.name]


# --- damage -------------------------------------------------------------------------

def _replace(p: Path, old: bytes, new: bytes, after: bytes = b"") -> None:
    data = p.read_bytes()
    at = data.index(old, data.index(after) if after else 0)
    p.write_bytes(data[:at] + new + data[at + len(old):])


def _damage_tit2_size(p: Path) -> None:
    data = bytearray(p.read_bytes())
    at = data.index(b"TIT2")
    data[at + 4:at + 8] = b"\x00\x00\x7f\x7f"
    p.write_bytes(bytes(data))


def _damage_tit2_id(p: Path) -> None:
    _replace(p, b"TIT2", b"T\x00T2")


def _damage_vorbis_count(p: Path) -> None:
    """The comment count of a FLAC comment block, far beyond what the block holds."""
    data = bytearray(p.read_bytes())
    pos = 4
    while data[pos] & 0x7F != 4:
        pos += 4 + int.from_bytes(data[pos + 1:pos + 4], "big")
    vendor = struct.unpack_from("<I", data, pos + 4)[0]
    struct.pack_into("<I", data, pos + 8 + vendor, 1000)
    p.write_bytes(bytes(data))


def _damage_opus_comment_length(p: Path) -> None:
    """A comment length running past the OpusTags packet (page CRC fixed, so only the tag is wrong)."""
    from mutagen.ogg import OggPage

    data = p.read_bytes()
    at = data.index(b"OpusTags")
    vendor = struct.unpack_from("<I", data, at + 8)[0]
    first = at + 8 + 4 + vendor + 4
    data = data[:first] + struct.pack("<I", 0x00FFFFFF) + data[first + 4:]
    start = data.rindex(b"OggS", 0, at)
    import io

    page = OggPage(io.BytesIO(data[start:]))
    p.write_bytes(data[:start] + page.write() + data[start + len(page.write()):])


def _damage_ilst(p: Path) -> None:
    """An ilst item whose size runs past its parent."""
    data = bytearray(p.read_bytes())
    at = data.index(b"\xa9nam") - 4
    data[at:at + 4] = struct.pack(">I", 0x7FFFFFF0)
    p.write_bytes(bytes(data))


DAMAGED = {
    "tit2-size.mp3": _damage_tit2_size,
    "tit2-id.mp3": _damage_tit2_id,
    "tit2-id.wav": _damage_tit2_id,
    "tit2-size.aiff": _damage_tit2_size,
    "comment-count.flac": _damage_vorbis_count,
    "comment-length.opus": _damage_opus_comment_length,
    "ilst-size.m4a": _damage_ilst,
}


def hostile_library(folder: Path) -> tuple[list[Path], list[Path]]:
    """(good files, damaged files): every format, a dash-leading and a non-UTF-8 name, damaged tags."""
    folder.mkdir(parents=True, exist_ok=True)
    good = [af.make_file(folder / f"song{ext}", freq=300 + 40 * i, genre="Rock") for i, ext in enumerate(GOOD)]
    good.append(af.make_file(folder / "-dash.mp3", genre="Rock"))
    odd = Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9-\xff.ogg"))
    os.rename(af.make_file(folder / "tmp-odd.ogg", genre="Rock"), odd)
    good.append(odd)
    damaged = []
    for name, damage in DAMAGED.items():
        p = af.make_file(folder / name, genre="Rock")
        damage(p)
        damaged.append(p)
    return good, damaged


# --- the tests ----------------------------------------------------------------------

@pytest.mark.slow
def test_hostile_library(tmp_path, tiny_model_dir):
    lib = tmp_path / "lib"
    good, damaged = hostile_library(lib)
    kept = {p: state(p) for p in good}
    raw = {p: p.read_bytes() for p in damaged}
    journal = tmp_path / "j.jsonl"
    res = cli("tag", lib, "--write", "--overwrite", "--min-confidence", "0", "-j", "1", "--format", "jsonl",
              "--journal", journal, "--model", tiny_model_dir)
    no_traceback(res.stderr)
    assert res.returncode == 1
    out = jsonl(res.stdout)
    assert len(out) == len(good) + len(damaged)
    for p in damaged:
        row = out[p.name]
        assert row["action"] == "error" and "\n" not in row["error"], row
        assert p.read_bytes() == raw[p], p.name
    for p in good:
        row = out[os.path.basename(p)]
        assert row["action"] == "written", row
        assert af.genre_values(p) == row["new"] and state(p) == kept[p], p
    assert temps(lib) == []
    assert f"{len(damaged)} failed" in res.stderr.decode()
    res = cli("undo", journal)
    no_traceback(res.stderr)
    assert res.returncode == 0
    for p in good:
        assert af.genre_values(p) == ["Rock"] and state(p) == kept[p], p
    for p in damaged:
        assert p.read_bytes() == raw[p]


def _without_dac_override() -> list[str] | None:
    """A command prefix under which file modes apply (root drops the capabilities that ignore them)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


@pytest.mark.slow
def test_read_only_folder_and_file(tmp_path, tiny_model_dir):
    prefix = _without_dac_override()
    if prefix is None:
        pytest.skip("cannot make a folder read-only for this user")
    lib = tmp_path / "lib"
    (lib / "ro-dir").mkdir(parents=True)
    ok = af.make_file(lib / "ok.flac", genre="Rock")
    ro_file = af.make_file(lib / "ro-file.mp3", genre="Rock")
    os.chmod(ro_file, 0o444)
    ro_dir = lib / "ro-dir"
    inside = af.make_file(ro_dir / "inside.m4a", genre="Rock")
    os.chmod(ro_dir, 0o555)
    before = {p: p.read_bytes() for p in (ro_file, inside)}
    try:
        args = ["tag", lib, "--overwrite", "--min-confidence", "0", "-j", "1", "--format", "jsonl",
                "--model", tiny_model_dir]
        dry = cli(*args, preexec=prefix)
        no_traceback(dry.stderr)
        out = jsonl(dry.stdout)
        assert out["inside.m4a"]["action"] == "error" and "read-only folder" in out["inside.m4a"]["error"]
        assert out["ro-file.mp3"]["action"] == "error" and "read-only file" in out["ro-file.mp3"]["error"]
        assert out["ok.flac"]["action"] == "write" and dry.returncode == 1
        real = cli(*args, "--write", preexec=prefix)
        no_traceback(real.stderr)
        assert real.returncode == 1
        assert {n: d["error"] for n, d in jsonl(real.stdout).items() if d["action"] == "error"} == \
            {n: d["error"] for n, d in out.items() if d["action"] == "error"}
        assert af.genre_values(ok) != ["Rock"]
        assert {p: p.read_bytes() for p in (ro_file, inside)} == before
    finally:
        os.chmod(ro_dir, 0o755)


@pytest.mark.slow
def test_unreadable_folder_is_a_failure(tmp_path, tiny_model_dir):
    """A folder that cannot be listed, inside the walked folder and named on the command line: one
    line each, the other files written, exit 1 (as `classify` does; the dry run takes the same path)."""
    prefix = _without_dac_override()
    if prefix is None:
        pytest.skip("cannot make a folder unreadable for this user")
    lib = tmp_path / "lib"
    lib.mkdir()
    ok = af.make_file(lib / "ok.flac", genre="Rock")
    inner, named = lib / "locked-inside", tmp_path / "locked-named"
    for d in (inner, named):
        d.mkdir()
        af.make_file(d / "hidden.mp3", genre="Rock")
        os.chmod(d, 0)
    try:
        res = cli("tag", lib, named, "--write", "--overwrite", "--min-confidence", "0", "-j", "1", "--format",
                  "jsonl", "--journal", tmp_path / "j.jsonl", "--model", tiny_model_dir, preexec=prefix)
        lines = no_traceback(res.stderr).splitlines()
        assert res.returncode == 1, lines
        for d in (inner, named):
            assert lines.count(f"genretag: error: cannot read folder {d}: Permission denied") == 1, lines
        assert "2 unreadable folders" in lines[-1], lines
        (row,) = jsonl(res.stdout).values()
        assert row["path"] == str(ok) and row["action"] == "written", row
    finally:
        for d in (inner, named):
            os.chmod(d, 0o755)
    assert af.genre_values(ok) != ["Rock"]
    assert af.genre_values(inner / "hidden.mp3") == ["Rock"] == af.genre_values(named / "hidden.mp3")


@pytest.mark.slow
def test_concurrent_runs(tmp_path, tiny_model_dir):
    """Two `tag --write` runs on one folder at once: no spurious errors, no journal line without its write."""
    lib = tmp_path / "lib"
    lib.mkdir()
    files = [af.make_file(lib / f"s{i}{ext}", freq=250 + 30 * i, genre="Rock")
             for i, ext in enumerate(GOOD * 2)]
    kept = {p: state(p) for p in files}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    procs = []
    for k, flag in enumerate(("--overwrite", "--append")):
        cmd = [sys.executable, "-m", "genretag", "tag", str(lib), "--write", flag, "--min-confidence", "0",
               "-j", "1", "--format", "jsonl", "--journal", str(tmp_path / f"j{k}.jsonl"), "--model",
               str(tiny_model_dir)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env))
    outs = [p.communicate(timeout=600) for p in procs]
    for (out, err), proc in zip(outs, procs):
        text = no_traceback(err)
        assert proc.returncode == 0, text
        assert "vanished" not in out.decode() and "removed stray" not in text
    assert temps(lib) == []
    journals = [tmp_path / f"j{k}.jsonl" for k in range(2)]  # a run that found nothing left to write keeps none
    written = [e for j in journals if j.exists() for e in map(json.loads, j.read_text().splitlines())]
    from genretag.audio.containers import file_fingerprint

    for p in files:
        assert state(p) == kept[p]
        mine = [e for e in written if e["path"] == str(p.resolve())]
        assert mine and file_fingerprint(p) in {e["fingerprint_after"] for e in mine}, p.name
        assert af.genre_values(p) in [e["new"] for e in mine]


def _kill_library(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [af.make_file(folder / f"k{i}{ext}", freq=220 + 35 * i, genre="Rock") for i, ext in enumerate(GOOD + GOOD[:3])]


@pytest.mark.slow
def test_kill_9_at_random_points(tmp_path, tiny_model_dir):
    """kill -9 after a random number of rows plus a random delay, again and again; then undo."""
    trials = int(os.environ.get("GENRETAG_KILL_TRIALS", "4"))
    rng = random.Random(1234)
    pristine = tmp_path / "pristine"
    files = _kill_library(pristine)
    kept = {p.name: state(p) for p in files}
    lib = tmp_path / "lib"
    args = ["tag", lib, "--overwrite", "--min-confidence", "0", "-j", "1", "--format", "jsonl",
            "--model", tiny_model_dir]
    shutil.copytree(pristine, lib)
    dry = cli(*args)  # fills the result cache: the killed runs spend their time writing
    new = {n: d["new"] for n, d in jsonl(dry.stdout).items()}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    killed_mid_write = 0
    for trial in range(trials):
        shutil.rmtree(lib)
        shutil.copytree(pristine, lib)
        journal = tmp_path / f"j{trial}.jsonl"
        proc = subprocess.Popen([sys.executable, "-m", "genretag", *map(str, args), "--write", "--journal",
                                 str(journal)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        rows = rng.randrange(len(files))
        for _ in range(rows):
            if not proc.stdout.readline():
                break
        time.sleep(rng.uniform(0, 0.05))
        proc.kill()
        proc.wait(60)
        proc.stdout.close()
        strays = temps(lib)
        killed_mid_write += bool(strays)
        for p in lib.iterdir():
            if TMP_MARK in p.name:
                continue
            assert af.genre_values(p) in (["Rock"], new[p.name]), (trial, p.name)
            assert state(p) == kept[p.name], (trial, p.name)
        statuses = [i.status for i in undo(journal)] if journal.exists() else []
        assert "refused" not in statuses and "error" not in statuses, statuses
        for p in lib.iterdir():
            if TMP_MARK not in p.name:
                assert af.genre_values(p) == ["Rock"] and state(p) == kept[p.name], (trial, p.name)
    # a complete run afterwards removes what the last killed run left, and writes everything
    res = cli(*args, "--write", "--journal", tmp_path / "final.jsonl")
    assert res.returncode == 0, no_traceback(res.stderr)
    assert temps(lib) == []
    assert all(af.genre_values(p) == new[p.name] for p in lib.iterdir())
    print(f"kill -9 trials: {trials}, {killed_mid_write} left a temporary file behind")


@pytest.mark.slow
def test_ctrl_c_during_tag(tmp_path, tiny_model_dir):
    lib = tmp_path / "lib"
    # enough files that the run is still writing when the test sees its first temporary copy
    files = _kill_library(lib) + [af.make_file(lib / f"more{i}{ext}", freq=300 + 11 * i, genre="Rock")
                                  for i, ext in enumerate(GOOD * 8)]
    args = ["tag", lib, "--overwrite", "--min-confidence", "0", "-j", "1", "--format", "jsonl",
            "--model", tiny_model_dir]
    new = {n: d["new"] for n, d in jsonl(cli(*args).stdout).items()}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    # as from a shell: SIGINT at its default (a test run may have left it ignored, which a child inherits)
    proc = subprocess.Popen([sys.executable, "-m", "genretag", *map(str, args), "--write"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # stdout is a pipe (block-buffered), so wait for the first temporary copy: the run is then writing
    deadline = time.monotonic() + 120
    while not temps(lib) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert no_traceback(err).strip().splitlines()[-1] == "genretag: interrupted"
    for p in files:
        assert af.genre_values(p) in (["Rock"], new[p.name])
    assert temps(lib) == []
