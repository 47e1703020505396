"""What a genre write knows about a file besides its genre field: its audio, its other genres, its name,
its owner, and where the journal goes.

Each case builds its files at test time and runs the real CLI (in a subprocess) or the Tagger a user
would call, and checks what a user relies on: a fingerprint that tells the audio apart anywhere, a genre
held elsewhere in the file counted as the current genre (and restored by undo), any legal file name
written, an owner kept or the write refused, one-line refusals for names and journals genretag cannot
use. The beets plugin's cases are at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import audio_factory as af
import numpy as np
import pytest
import soundfile as sf

from genretag.audio.containers import fingerprint
from genretag.pipeline.inference import TrackResult
from genretag.tags import Tagger, undo
from genretag.tags.fields import read_genres, read_tags
from genretag.tags.safe_write import TMP_MARK, cleanup_stray_temps, temp_name

REPO = Path(__file__).resolve().parents[2]


def cli(*args, timeout: float = 300, preexec: list[str] | None = None, env: dict | None = None,
        **kw) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess; output as bytes."""
    env = dict(os.environ if env is None else env, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    return subprocess.run([*(preexec or []), sys.executable, "-m", "genretag", *map(os.fsencode, map(str, args))],
                          capture_output=True, timeout=timeout, env=env, **kw)


def rows(out: bytes) -> dict[str, dict]:
    return {os.path.basename(d["path"]): d for d in map(json.loads, out.decode("utf-8").splitlines())}


def no_traceback(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace")
    assert "Traceback" not in text, text
    return text


def result(path, genre: str = "metal", p: float = 0.9, fp: str | None = None) -> TrackResult:
    from genretag.card import GTZAN_GENRES

    probs = {g: (1 - p) / (len(GTZAN_GENRES) - 1) for g in GTZAN_GENRES}
    probs[genre] = p
    r = TrackResult(str(path), genre, p, probs, 3, None)
    r.fingerprint = fp
    return r


# --- defect 3: the fingerprint hears the whole payload -----------------------------------------

def _quiet_ends_wav(path: Path, seed: int, sr: int = 44100, edge: float = 7.0, middle: float = 3.0) -> Path:
    """Digital silence at both ends (more than a MiB each), noise in the middle, CD format."""
    rng = np.random.default_rng(seed)
    quiet = np.zeros((int(sr * edge), 2), dtype=np.float32)
    loud = (0.3 * rng.standard_normal((int(sr * middle), 2))).astype(np.float32)
    sf.write(str(path), np.concatenate([quiet, loud, quiet]), sr, subtype="PCM_16")
    return path


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_fingerprint_tells_apart_files_that_differ_only_in_the_middle(tmp_path):
    a, b = _quiet_ends_wav(tmp_path / "a.wav", 1), _quiet_ends_wav(tmp_path / "b.wav", 2)
    assert a.stat().st_size == b.stat().st_size and a.stat().st_size > 2 << 20
    assert fingerprint(a) != fingerprint(b)
    for ext in (".flac", ".mp3", ".aiff"):  # a same-length edit anywhere in the payload is seen
        p = af.make_file(tmp_path / f"long{ext}", seconds=40 if ext == ".mp3" else 30, channels=2, sr=44100,
                         genre="Rock")
        before = fingerprint(p)
        _flip_middle(p)
        assert fingerprint(p) != before, ext


@pytest.mark.slow
def test_result_cache_does_not_answer_for_a_file_with_other_audio_in_the_middle(tmp_path, tiny_model_dir):
    """`tag a.wav` fills the cache; `tag b.wav --write` (same length, same silent ends) must classify b."""
    a, b = _quiet_ends_wav(tmp_path / "a.wav", 1), _quiet_ends_wav(tmp_path / "b.wav", 2)
    common = ["--overwrite", "--min-confidence", "0", "-j", "1", "--format", "jsonl", "--model", tiny_model_dir]
    first = cli("tag", a, *common)
    assert first.returncode == 0, no_traceback(first.stderr)
    fresh = cli("tag", b, *common, "--no-cache")
    want = rows(fresh.stdout)["b.wav"]["new"]
    res = cli("tag", b, *common, "--write", "--journal", tmp_path / "j.jsonl")
    text = no_traceback(res.stderr)
    assert res.returncode == 0, text
    assert "(1 classified, 0 from cache)" in text, text
    assert rows(res.stdout)["b.wav"]["new"] == want


def test_a_same_length_edit_of_the_middle_is_changed_since_classified(tmp_path):
    p = _quiet_ends_wav(tmp_path / "song.wav", 3)
    r = result(p, fp=fingerprint(p))
    _flip_middle(p)
    tagger = Tagger(policy="overwrite", write=True, journal=tmp_path / "j.jsonl")
    plan = tagger.plan(r)
    assert plan.action == "skip: changed since classified"
    assert tagger.apply(plan).action == "skip: changed since classified" and read_genres(p) == []


# --- defect 4: a genre held only in ID3v1 (and in APEv2) ---------------------------------------

def _id3v1(genre: int) -> bytes:
    return (b"TAG" + b"Old Title".ljust(30, b"\0") + b"Old Artist".ljust(30, b"\0") + b"Old Album".ljust(30, b"\0")
            + b"1999" + b"a comment".ljust(28, b"\0") + b"\0\x07" + bytes([genre]))


def _ape(items: dict[str, str]) -> bytes:
    """An APEv2 tag (header and footer) holding text items."""
    import struct

    body = b"".join(struct.pack("<II", len(v.encode()), 0) + k.encode() + b"\0" + v.encode() for k, v in items.items())
    size = len(body) + 32

    def hf(flags: int) -> bytes:
        return b"APETAGEX" + struct.pack("<IIII", 2000, size, len(items), flags) + b"\0" * 8

    return hf(0xA0000000) + body + hf(0x80000000)


def _bare_mp3(path: Path) -> Path:
    p = af.make_file(path, seconds=1.0)
    assert p.read_bytes()[:3] != b"ID3"
    return p


def _v1_only(tmp: Path) -> Path:
    p = _bare_mp3(tmp / "v1-only.mp3")
    with open(p, "ab") as f:
        f.write(_id3v1(9))  # Metal
    return p


def _v2_without_tcon(tmp: Path) -> Path:
    p = af.make_file(tmp / "v2-no-tcon.mp3", seconds=1.0, title="T", artist="A")
    with open(p, "ab") as f:
        f.write(_id3v1(9))
    assert b"TCON" not in p.read_bytes()
    return p


def _ape_and_v1(tmp: Path) -> Path:
    p = _bare_mp3(tmp / "ape-v1.mp3")
    with open(p, "ab") as f:
        f.write(_ape({"Title": "T"}) + _id3v1(9))
    return p


V1_CASES = {"v1 only": _v1_only, "ID3v2 without TCON": _v2_without_tcon, "APEv2 + ID3v1": _ape_and_v1}


@pytest.mark.parametrize("case", list(V1_CASES))
def test_id3v1_genre_is_the_current_genre_and_undo_restores_its_byte(tmp_path, case):
    p = V1_CASES[case](tmp_path)
    assert read_genres(p) == ["Metal"]
    raw = p.read_bytes()
    keep = Tagger(write=True, journal=tmp_path / "keep.jsonl")  # --keep-existing
    plan = keep.plan(result(p, "jazz"))
    assert plan.action == "skip: has genre" and plan.current == ["Metal"]
    assert keep.apply(plan).action == "skip: has genre" and p.read_bytes() == raw
    journal = tmp_path / "j.jsonl"
    over = Tagger(policy="overwrite", write=True, journal=journal)
    assert over.apply(over.plan(result(p, "jazz"))).action == "written"
    assert read_genres(p) == ["Jazz"] and p.read_bytes()[-1] == 8  # ID3v1 Jazz
    assert [i.status for i in undo(journal)] == ["restored"]
    assert p.read_bytes()[-128:] == raw[-128:]  # the whole ID3v1 tag, genre byte 9 included
    assert read_genres(p) == ["Metal"] and read_tags(p).values == []


@pytest.mark.slow
def test_id3v1_genre_in_the_dry_run_and_keep_existing_cli(tmp_path, tiny_model_dir):
    lib = tmp_path / "lib"
    lib.mkdir()
    p = _v1_only(lib)
    raw = p.read_bytes()
    args = ["tag", lib, "--min-confidence", "0", "-j", "1", "--format", "jsonl", "--model", tiny_model_dir]
    dry = cli(*args)
    assert rows(dry.stdout)["v1-only.mp3"]["current"] == ["Metal"], dry.stdout
    res = cli(*args, "--write", "--journal", tmp_path / "j.jsonl")
    assert rows(res.stdout)["v1-only.mp3"]["action"] == "skip: has genre" and p.read_bytes() == raw


def test_undo_restores_an_id3v1_byte_that_disagreed_with_tcon(tmp_path):
    """TCON `Alt Rock` with the ID3v1 byte 17 (Rock): undo gives back 17, not 255."""
    p = af.make_file(tmp_path / "s.mp3", genre="Alt Rock")
    with open(p, "ab") as f:
        f.write(_id3v1(17))
    raw_v1 = p.read_bytes()[-128:]
    journal = tmp_path / "j.jsonl"
    t = Tagger(policy="overwrite", write=True, journal=journal)
    assert t.apply(t.plan(result(p, "jazz"))).action == "written"
    assert [i.status for i in undo(journal)] == ["restored"]
    assert p.read_bytes()[-128:] == raw_v1 and read_tags(p).values == ["Alt Rock"]


def test_id3v1_byte_follows_the_first_genre_of_a_joined_id3v23_value(tmp_path):
    """--append on ID3v2.3 stores `Rock; Jazz` as one value; the ID3v1 byte is still Rock's (17), not 255."""
    p = af.make_file(tmp_path / "s.mp3", genre="Rock", id3_version=3)
    with open(p, "ab") as f:
        f.write(_id3v1(17))
    t = Tagger(policy="append", write=True, journal=tmp_path / "j.jsonl")
    assert t.apply(t.plan(result(p, "jazz"))).action == "written"
    assert read_tags(p).values == ["Rock; Jazz"] and p.read_bytes()[-1] == 17


def test_apev2_genre_counts_as_current_genre(tmp_path):
    p = _bare_mp3(tmp_path / "ape.mp3")
    with open(p, "ab") as f:
        f.write(_ape({"Title": "T", "Genre": "Chanson"}))
    raw = p.read_bytes()
    t = Tagger(write=True, journal=tmp_path / "j.jsonl")
    plan = t.plan(result(p, "jazz"))
    assert plan.action == "skip: has genre" and plan.current == ["Chanson"]
    assert t.apply(plan).action == "skip: has genre" and p.read_bytes() == raw


def _riff_info_ignr(path: Path, genre: bytes) -> None:
    """Append a LIST/INFO chunk with an IGNR to a wav (and fix the RIFF size)."""
    import struct

    body = genre + b"\0"
    sub = b"IGNR" + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)
    chunk = b"LIST" + struct.pack("<I", 4 + len(sub)) + b"INFO" + sub
    data = bytearray(path.read_bytes()) + chunk
    struct.pack_into("<I", data, 4, len(data) - 8)
    path.write_bytes(bytes(data))


def _id3_before_flac(path: Path, genre: str) -> None:
    from mutagen.id3 import ID3, TCON

    tag = ID3()
    tag.add(TCON(encoding=3, text=[genre]))
    import io

    buf = io.BytesIO()
    tag.save(buf, v2_version=4)
    path.write_bytes(buf.getvalue() + path.read_bytes())


def test_riff_info_and_id3_before_flac_genres_count_as_current(tmp_path):
    wav = af.make_file(tmp_path / "info.wav")
    _riff_info_ignr(wav, b"Chanson")
    flac = af.make_file(tmp_path / "front.flac")
    _id3_before_flac(flac, "Chanson")
    for p in (wav, flac):
        raw = p.read_bytes()
        assert read_genres(p) == ["Chanson"], p.name
        t = Tagger(write=True, journal=tmp_path / "j.jsonl")
        plan = t.plan(result(p, "jazz"))
        assert plan.action == "skip: has genre" and t.apply(plan).action == "skip: has genre"
        assert p.read_bytes() == raw


def test_tcon_255_is_no_genre(tmp_path):
    p = af.make_file(tmp_path / "s.mp3", genre="(255)")
    assert read_genres(p) == []
    t = Tagger(write=True, journal=tmp_path / "j.jsonl")
    assert t.apply(t.plan(result(p, "jazz"))).action == "written" and read_genres(p) == ["Jazz"]


# --- defect 7: long names ----------------------------------------------------------------------------

@pytest.mark.slow
def test_a_name_of_nearly_name_max_bytes_is_written_and_undone(tmp_path, tiny_model_dir):
    lib = tmp_path / "lib"
    lib.mkdir()
    name = "Ж" * 125 + ".mp3"  # 254 bytes: legal, ~40 bytes short of what a name-based temp name needs
    assert len(os.fsencode(name)) == 254
    p = af.make_file(lib / name, genre="Rock")
    assert len(os.fsencode(temp_name(p).name)) <= 64
    journal = tmp_path / "j.jsonl"
    args = ["tag", lib, "--overwrite", "--min-confidence", "0", "-j", "1", "--format", "jsonl", "--model",
            tiny_model_dir]
    assert rows(cli(*args).stdout)[name]["action"] == "write"
    res = cli(*args, "--write", "--journal", journal)
    no_traceback(res.stderr)
    assert rows(res.stdout)[name]["action"] == "written", res.stdout
    assert read_genres(p) != ["Rock"] and [q for q in lib.iterdir() if TMP_MARK in q.name] == []
    assert cli("undo", journal).returncode == 0 and read_genres(p) == ["Rock"]


# --- risk: stray-temp cleanup deletes only genretag's own, dead temporaries ------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stray_temp_cleanup_spares_files_it_cannot_prove_dead(tmp_path):
    from genretag.tags.safe_write import HOST_ID

    dead = _dead_pid()
    mine = temp_name(tmp_path / "song.mp3")  # this process: alive
    mine.write_bytes(b"x")
    assert mine.name.startswith(f"{TMP_MARK}{HOST_ID}-{os.getpid()}-")
    stray = tmp_path / f"{TMP_MARK}{HOST_ID}-{dead}-0123456789abcdef"
    stray.write_bytes(b"x")
    # a user's own file that looks like an old-style temporary name, and another host's temporary
    lookalike = tmp_path / f".notes.txt{TMP_MARK}{dead}-0123456789abcdef"
    lookalike.write_bytes(b"keep me")
    other = "0" * 8 if HOST_ID != "0" * 8 else "1" * 8
    other_host = tmp_path / f"{TMP_MARK}{other}-{dead}-0123456789abcdef"
    other_host.write_bytes(b"x")
    removed = cleanup_stray_temps(tmp_path)
    assert removed == [stray], removed
    assert mine.exists() and lookalike.exists() and other_host.exists()
    old = time.time() - 3 * 86400  # abandoned for days: another host's temporary goes too
    os.utime(other_host, (old, old))
    assert cleanup_stray_temps(tmp_path) == [other_host]


# --- risk: --journal naming a FIFO ---------------------------------------------------------------------

def test_journal_that_is_a_fifo_is_refused_at_once(tmp_path, tiny_model_dir):
    (tmp_path / "lib").mkdir()
    p = af.make_file(tmp_path / "lib" / "a.flac", genre="Rock")
    fifo = tmp_path / "journal.fifo"
    os.mkfifo(fifo)
    res = cli("tag", p.parent, "--write", "--overwrite", "--min-confidence", "0", "-j", "1", "--journal", fifo,
              "--model", tiny_model_dir, timeout=60)
    lines = no_traceback(res.stderr).splitlines()
    assert res.returncode == 2 and lines == [f"genretag: error: --journal {fifo} is not a regular file (a FIFO)"], lines
    assert read_genres(p) == ["Rock"]
    res = cli("undo", fifo, timeout=60)
    lines = no_traceback(res.stderr).splitlines()
    assert res.returncode == 2 and lines == [f"genretag: error: journal {fifo} is not a regular file (a FIFO)"], lines


# --- defect 17: a genre name holding NUL ----------------------------------------------------------------

def test_genre_name_with_nul_is_refused_by_the_dry_run_as_by_the_write(tmp_path, tiny_model_dir):
    from genretag.card import GTZAN_GENRES

    lib = tmp_path / "lib"
    lib.mkdir()
    p = af.make_file(lib / "a.mp3", genre="Rock")
    raw = p.read_bytes()
    names = tmp_path / "names.json"
    names.write_text(json.dumps({g: f"{g}\0x" for g in GTZAN_GENRES}))
    args = ["tag", lib, "--overwrite", "--min-confidence", "0", "-j", "1", "--genre-names", names, "--model",
            tiny_model_dir, "--journal", tmp_path / "j.jsonl"]
    dry, real = cli(*args), cli(*args, "--write")
    for res in (dry, real):
        lines = no_traceback(res.stderr).splitlines()
        assert res.returncode == 2 and len(lines) == 1 and "NUL" in lines[0], lines
    assert p.read_bytes() == raw
    tagger = Tagger(policy="overwrite", names={"metal": "Me\0tal"})  # the Python API: an error row, not `write`
    plan = tagger.plan(result(p))
    assert plan.action == "error" and "NUL" in plan.error


# --- defect 9: the owner ------------------------------------------------------------------------------------

def _runner_without_chown() -> tuple[list[str], int] | None:
    """(command prefix, uid the runner has) for a genretag run that cannot give files away.

    Another user (nobody) when this Python runs for them; otherwise root without CAP_CHOWN, which is
    the same case for genretag (the rewritten file would belong to the runner)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run([*nobody, sys.executable, "-c", "import typer, genretag"], capture_output=True,
                           env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)))
    if probe.returncode == 0:
        return nobody, 65534
    no_chown = ["setpriv", "--bounding-set=-chown", "--inh-caps=-chown"]
    if subprocess.run([*no_chown, "true"], capture_output=True).returncode == 0:
        return no_chown, 0
    return None


@pytest.mark.slow
def test_a_file_owned_by_another_user_is_refused_not_given_away(tiny_model_dir):
    runner = _runner_without_chown()
    if runner is None:
        pytest.skip("needs root and setpriv to run genretag as a user who cannot chown")
    prefix, uid = runner
    shared = Path(tempfile.mkdtemp(prefix="genretag-owner-"))
    try:
        os.chmod(shared, 0o777)
        lib = shared / "lib"
        lib.mkdir()
        os.chmod(lib, 0o777)  # the folder allows it, the file's mode allows it: only the owner cannot be kept
        theirs = af.make_file(lib / "theirs.flac", genre="Rock")
        os.chmod(theirs, 0o666)
        os.chown(theirs, 4321, 4321)
        model = shutil.copytree(tiny_model_dir.parent, shared / "model")
        home = shared / "home"
        home.mkdir()
        os.chmod(home, 0o777)
        env = dict(os.environ, GENRETAG_CACHE_DIR=str(home / "cache"), GENRETAG_DATA_DIR=str(home / "data"),
                   NUMBA_CACHE_DIR=str(home / "numba"), HOME=str(home))
        raw, st = theirs.read_bytes(), theirs.stat()
        args = ["tag", lib, "--overwrite", "--min-confidence", "0", "-j", "1", "--format", "jsonl", "--model",
                model / tiny_model_dir.name, "--journal", home / "j.jsonl"]
        dry = cli(*args, preexec=prefix, env=env)
        real = cli(*args, "--write", preexec=prefix, env=env)
        for res in (dry, real):
            no_traceback(res.stderr)
            row = rows(res.stdout)["theirs.flac"]
            assert res.returncode == 1 and row["action"] == "error" and "owned by another user" in row["error"], row
        assert rows(dry.stdout)["theirs.flac"]["error"] == rows(real.stdout)["theirs.flac"]["error"]
        now = theirs.stat()
        assert theirs.read_bytes() == raw and (now.st_uid, now.st_gid, now.st_ino) == (st.st_uid, st.st_gid, st.st_ino)
        # a file of the runner's own is written
        mine = af.make_file(lib / "mine.flac", genre="Rock")
        os.chown(mine, uid, uid)
        res = cli(*args, "--write", preexec=prefix, env=env)
        assert rows(res.stdout)["mine.flac"]["action"] == "written" and mine.stat().st_uid == uid
        assert read_genres(mine) != ["Rock"] and theirs.read_bytes() == raw
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_failing_chown_refuses_the_write(tmp_path):
    """Root without CAP_CHOWN, past the up-front check (told the process may chown, as a kernel or file
    system might refuse anyway): the real chown fails, and the write is refused, not the failure swallowed."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv")
    prefix = ["setpriv", "--bounding-set=-chown", "--inh-caps=-chown"]
    if subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("setpriv cannot drop CAP_CHOWN here")
    p = af.make_file(tmp_path / "a.flac", genre="Rock")
    os.chown(p, 4321, 4321)
    raw = p.read_bytes()
    code = ("import sys\nimport genretag.tags.safe_write as sw\nfrom genretag.errors import TagError\n"
            "print('up front:', sw.owner_problem(sw.os.stat(sys.argv[1])))\n"
            "sw._can_chown = lambda: True\n"
            "try:\n    sw.write_genres_safely(sys.argv[1], ['Jazz'])\nexcept TagError as e:\n    print('refused:', e)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([*prefix, sys.executable, "-c", code, str(p)], capture_output=True, text=True, env=env,
                         timeout=120)
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and "owned by another user (uid 4321)" in lines[0], out.stdout + out.stderr
    assert lines[1].startswith("refused: cannot keep the file's owner 4321:4321"), out.stdout + out.stderr
    assert p.read_bytes() == raw and p.stat().st_uid == 4321
    assert [q for q in tmp_path.iterdir() if TMP_MARK in q.name] == []


# --- defect 17: the beets plugin ----------------------------------------------------------------------------

def _beets(root: Path, **genretag):
    pytest.importorskip("beets")
    cfg, library, src = root / "beetsdir", root / "library", root / "src"
    for d in (cfg, library, src):
        d.mkdir()
    config = {"directory": str(library), "library": str(cfg / "library.db"),
              "create_backup_before_migrations": False, "plugins": ["genretag"], "threaded": False,
              "import": {"write": False, "copy": True, "quiet": True},
              "genretag": {"jobs": 1, "min_confidence": 0.0, **genretag}}
    (cfg / "config.yaml").write_text(json.dumps(config))
    env = {**os.environ, "BEETSDIR": str(cfg),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}

    def run(*args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*(prefix or []), sys.executable, "-m", "beets", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)

    return src, library, run


def _beets_items(root: Path) -> dict[str, tuple[list[str], Path]]:
    """title -> (genres, path), from the library database."""
    from beets.library import Library

    lib = Library(str(root / "beetsdir" / "library.db"), str(root / "library"))
    try:
        return {it.title: (list(it.genres), Path(os.fsdecode(it.path))) for it in lib.items()}
    finally:
        lib._close()


def test_beets_plugin_refuses_an_empty_genre_name(tmp_path):
    from genretag.card import GTZAN_GENRES

    src, _, run = _beets(tmp_path, names={g: "" for g in GTZAN_GENRES})
    af.make_file(src / "a.flac", seconds=2, title="a", genre="Folk")
    assert run("import", "-A", str(src)).returncode == 0
    res = run("genretag", "--force")
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1, res.stderr
    assert "empty" in res.stderr and _beets_items(tmp_path)["a"][0] == ["Folk"]


@pytest.mark.slow
def test_beets_plugin_counts_a_file_beets_could_not_write_as_failed(tmp_path):
    if os.geteuid() != 0:
        prefix: list[str] = []
    elif shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to make a file read-only for root")
    else:
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
    src, _, run = _beets(tmp_path)
    af.make_file(src / "a.flac", seconds=2, title="a", genre="Folk")
    af.make_file(src / "b.flac", seconds=2, freq=660, title="b", genre="Folk")
    assert run("import", "-A", str(src)).returncode == 0
    ro = _beets_items(tmp_path)["a"][1]
    os.chmod(ro, 0o444)
    try:
        res = run("genretag", "--force", "-w", prefix=prefix)
    finally:
        os.chmod(ro, 0o644)
    assert "2 items: 1 set" in res.stderr and "1 failed" in res.stderr, res.stderr
    assert read_genres(ro) == ["Folk"]
