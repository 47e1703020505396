"""The safe write (`genretag.tags.safe_write`): a kill at each step, symlinks, one writer per file, a stalled
writer, live temporary files, an edit during the journal append.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import audio_factory as af
import pytest
from tag_library import run

from genretag.tags.fields import TagError
from genretag.tags.journal import undo
from genretag.tags.safe_write import TMP_MARK, write_genres_safely

# The crash point, installed in the child before it writes: at the step named by
# GENRETAG_TEST_CRASH_AT the process pauses (GENRETAG_TEST_CRASH_PAUSE, waiting for the kill) or exits.
_CRASH_HOOK = """
import os, sys, time
from genretag.tags import safe_write

def _crash_at(step):
    if os.environ.get("GENRETAG_TEST_CRASH_AT") != step:
        return
    if os.environ.get("GENRETAG_TEST_CRASH_PAUSE"):
        print(f"GENRETAG-PAUSED {step}", file=sys.stderr, flush=True)
        time.sleep(3600)
    os._exit(70)

safe_write._checkpoint = _crash_at
"""


_CRASH_SCRIPT = _CRASH_HOOK + """
from genretag.tags.journal import JournalWriter
from genretag.tags.safe_write import write_genres_safely
write_genres_safely(sys.argv[1], ["Jazz"], before_replace=JournalWriter(sys.argv[2]))
print("done")
"""


def test_kill_during_write_leaves_old_or_new_and_next_run_cleans(tmp_path, fake_model, tiny):
    """kill -9 at each step of a safe write (paused there by a test hook), in parallel."""
    steps = ["after_tmp_write", "after_modify", "before_replace", "after_replace"]
    procs = {}
    for i, step in enumerate(steps):
        d = tmp_path / step
        d.mkdir()
        p = af.make_file(d / ("song.mp3" if i % 2 else "song.flac"), genre="Rock")
        env = dict(os.environ, GENRETAG_TEST_CRASH_AT=step, GENRETAG_TEST_CRASH_PAUSE="1")
        procs[step] = (p, subprocess.Popen([sys.executable, "-c", _CRASH_SCRIPT, str(p), str(tmp_path / "j.jsonl")],
                                           env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                                           start_new_session=True))
    # and one that simply exits (os._exit) just before the rename, started alongside
    (tmp_path / "quick").mkdir()
    quick = af.make_file(tmp_path / "quick" / "a.wav", genre="Rock")
    quick_bytes = quick.read_bytes()
    quick_proc = subprocess.Popen([sys.executable, "-c", _CRASH_SCRIPT, str(quick), str(tmp_path / "j.jsonl")],
                                  env=dict(os.environ, GENRETAG_TEST_CRASH_AT="before_replace"),
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for step, (p, proc) in procs.items():
        line = proc.stderr.readline().decode()
        assert f"GENRETAG-PAUSED {step}" in line, line + proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
        assert af.genre_values(p) in (["Rock"], ["Jazz"]), step
        af.decode(p)  # still a readable audio file
        strays = [q for q in p.parent.iterdir() if TMP_MARK in q.name]
        assert len(strays) == (0 if step == "after_replace" else 1), step
        if step in ("after_replace",):
            assert af.genre_values(p) == ["Jazz"]
        elif step != "before_replace":
            assert af.genre_values(p) == ["Rock"]
    out, _ = quick_proc.communicate(timeout=120)
    assert quick_proc.returncode != 0 and b"done" not in out
    assert quick.read_bytes() == quick_bytes
    # something that merely looks similar is not touched
    keep = tmp_path / "after_modify" / ".notes.genretag-tmp-mine"
    keep.write_text("mine")
    res = run("tag", *[tmp_path / s for s in steps], "--write", "--overwrite", "-j", "1", "--model", tiny)
    assert res.exit_code == 0, res.output
    assert "removed stray temporary file" in res.stderr
    for step, (p, _) in procs.items():
        assert [q.name for q in p.parent.iterdir() if TMP_MARK in q.name and q != keep] == []
        assert af.genre_values(p) == ["Jazz"]
    assert keep.exists()
    # the journal line written before the interrupted replace does not confuse undo
    statuses = [i.status for i in undo(tmp_path / "j.jsonl")]
    assert "refused" not in statuses


def test_symlink_target_is_written_and_link_kept(tmp_path):
    real = af.make_file(tmp_path / "real.flac", genre="Rock")
    link = tmp_path / "link.flac"
    link.symlink_to(real)
    out = write_genres_safely(link, ["Jazz"])
    assert link.is_symlink() and out.path == str(real.resolve())
    assert af.genre_values(real) == ["Jazz"]


def test_second_writer_waits_for_the_first_then_writes_the_new_file(tmp_path):
    """A write waits while another writer holds the file, then reads the file that writer renamed in place."""
    import fcntl
    import threading

    p = af.make_file(tmp_path / "a.flac", genre="Rock", title="T")
    holder = os.open(p, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # what a concurrent genretag run holds from its first read to its rename
    done: dict = {}
    t = threading.Thread(target=lambda: done.update(out=write_genres_safely(p, ["Jazz"])))
    t.start()
    t.join(1.0)
    assert t.is_alive(), "the second writer did not wait"
    other = tmp_path / "other.flac"
    other.write_bytes(p.read_bytes())
    write_genres_safely(other, ["Metal"])
    os.replace(other, p)  # the first writer's rename: a new inode at the same path
    os.close(holder)
    t.join(30)
    assert not t.is_alive()
    assert done["out"].old == ["Metal"] and af.genre_values(p) == ["Jazz"]


def test_a_stalled_writer_makes_the_file_an_error_not_a_hang(tmp_path, monkeypatch):
    """A writer that holds the lock and never finishes (stopped with Ctrl-Z, say): after LOCK_WAIT the
    file is a one-line error, left as it is, and the next file can be written."""
    import fcntl

    from genretag.tags import safe_write

    monkeypatch.setattr(safe_write, "LOCK_WAIT", 0.3)
    p = af.make_file(tmp_path / "a.flac", genre="Rock")
    before = p.read_bytes()
    holder = os.open(p, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(TagError, match=r"^locked by another process for 0.3 s") as e:
            write_genres_safely(p, ["Jazz"])
        assert "\n" not in str(e.value) and p.read_bytes() == before
    finally:
        os.close(holder)
    assert write_genres_safely(p, ["Jazz"]).new == ["Jazz"]


_PAUSED_WRITE = _CRASH_HOOK + """
from genretag.tags.safe_write import write_genres_safely
write_genres_safely(sys.argv[1], ["Jazz"])
"""


def test_a_live_runs_temporary_file_is_not_cleaned(tmp_path, fake_model, tiny):
    """Run A is paused inside a write (its temporary copy exists); run B works on the same folder."""
    p = af.make_file(tmp_path / "a.flac", genre="Rock")
    af.make_file(tmp_path / "b.flac", genre="Rock")
    a = subprocess.Popen([sys.executable, "-c", _PAUSED_WRITE, str(p)], stderr=subprocess.PIPE,
                         env=dict(os.environ, GENRETAG_TEST_CRASH_AT="after_modify", GENRETAG_TEST_CRASH_PAUSE="1"))
    try:
        assert "GENRETAG-PAUSED" in a.stderr.readline().decode()
        temps = [q for q in tmp_path.iterdir() if TMP_MARK in q.name]
        assert len(temps) == 1
        # b.flac only: a.flac is locked by A (see the next test); the folder's strays are still cleaned
        res = run("tag", tmp_path / "b.flac", "--write", "--overwrite", "-j", "1", "--format", "jsonl",
                  "--model", tiny)
        assert res.exit_code == 0, res.output
        assert af.genre_values(tmp_path / "b.flac") == ["Jazz"]
        assert temps[0].exists() and "removed stray" not in res.stderr
    finally:
        a.kill()
        a.wait(10)
        a.stderr.close()
    res = run("tag", tmp_path, "--write", "--overwrite", "-j", "1", "--model", tiny)
    assert "removed stray temporary file" in res.stderr and not temps[0].exists()


def test_an_edit_during_the_journal_append_is_not_lost(tmp_path):
    """The last check runs after the (slow) journal fsync, right before the rename."""
    p = af.make_file(tmp_path / "a.mp3", genre="Rock")

    def user_edits(_outcome):
        with open(p, "ab") as f:
            f.write(b"TAG" + b"\0" * 125)

    with pytest.raises(TagError, match="changed while"):
        write_genres_safely(p, ["Jazz"], before_replace=user_edits)
    assert af.genre_values(p) == ["Rock"] and p.read_bytes().endswith(b"TAG" + b"\0" * 125)
    assert not [q for q in tmp_path.iterdir() if TMP_MARK in q.name]


def test_whole_file_and_audio_fingerprints_are_named_apart(tmp_path):
    """`expect_file` holds a whole-file fingerprint (undo's check), `expect_audio` an audio one (tag's)."""
    from genretag.audio.containers import file_fingerprint, fingerprint
    from genretag.tags.errors import ChangedSinceClassified

    p = af.make_file(tmp_path / "a.flac", genre="Rock")
    with pytest.raises(TypeError):
        write_genres_safely(p, ["Jazz"], "; ")  # everything after the values is by keyword
    with pytest.raises(TagError, match="file changed since it was last written by genretag"):
        write_genres_safely(p, ["Jazz"], expect_file=fingerprint(p))  # an audio fingerprint is not the file's
    with pytest.raises(ChangedSinceClassified):
        write_genres_safely(p, ["Jazz"], expect_audio=file_fingerprint(p))
    assert af.genre_values(p) == ["Rock"]
    whole, audio = file_fingerprint(p), fingerprint(p)
    out = write_genres_safely(p, ["Jazz"], expect_file=whole, expect_audio=audio)
    assert (out.file_before, out.file_after, out.audio_fingerprint) == (whole, file_fingerprint(p), audio)
    with pytest.warns(DeprecationWarning, match=r"WriteOutcome.fingerprint_before is deprecated and will be "
                                                r"removed in genretag 0.4.0; use WriteOutcome.file_before"):
        assert out.fingerprint_before == whole
    with pytest.warns(DeprecationWarning, match=r"use WriteOutcome.file_after"):
        assert out.fingerprint_after == out.file_after
