"""The input side under hostile files: the real CLI, documented exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
from audio_factory import make_file
from hostile import add_cover, assert_clean_stderr, cbr_mp3_without_xing, run_cli, varied_tone

from genretag.audio import decode as audio


def jsonl(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode("utf-8").splitlines() if line.strip()]


@pytest.mark.slow
def test_cover_art_of_any_size_changes_no_probability(tmp_path, tiny_model_dir):
    bare = cbr_mp3_without_xing(tmp_path / "bare.mp3", seconds=8.0)
    files = [bare]
    for size in (200_000, 20_000_000):
        files.append(add_cover(shutil.copy(bare, tmp_path / f"cover{size}.mp3"), size))
    r = run_cli("classify", *map(str, files), "--model", str(tiny_model_dir), "-f", "jsonl", "-j", "1")
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)
    rows = jsonl(r.stdout)
    assert [row["path"] for row in rows] == list(map(str, files))
    ref = rows[0]["probabilities"]
    for row in rows[1:]:
        assert row["segments"] == rows[0]["segments"] == 3
        assert row["probabilities"] == pytest.approx(ref, abs=1e-5)


def test_mp3_length_is_the_decoded_length(tmp_path):
    """Frame-header count == samples a full decode gives (CBR, VBR with a LAME tag, MPEG-2 and 2.5)."""
    import soundfile as sf
    from audio_factory import make_file

    files = [cbr_mp3_without_xing(tmp_path / "cbr.mp3", seconds=3.3)]
    files += [make_file(tmp_path / f"vbr{sr}.mp3", seconds=2.2, sr=sr) for sr in (44100, 22050, 8000)]
    files.append(add_cover(shutil.copy(files[-1], tmp_path / "vbr_cover.mp3"), 50_000))
    for f in files:
        decoded = sf.read(str(f))[0].shape[0]
        ai = audio.info(f)
        assert round(ai.duration * ai.sample_rate) == decoded, f.name


@pytest.mark.slow
def test_silence_and_near_empty_audio_get_no_genre(tmp_path, tiny_model_dir):
    import numpy as np
    import soundfile as sf

    one = tmp_path / "one-sample.wav"
    sf.write(str(one), np.array([0.5], dtype=np.float32), 16000)
    quiet = tmp_path / "twenty-minutes-of-silence.flac"
    with sf.SoundFile(str(quiet), "w", 8000, 1, format="FLAC") as f:
        for _ in range(20):
            f.write(np.zeros(8000 * 60, dtype=np.float32))
    music = tmp_path / "music.flac"
    sf.write(str(music), varied_tone(16000, 4.0), 16000)
    r = run_cli("classify", str(one), str(quiet), str(music), "--model", str(tiny_model_dir), "-f", "jsonl")
    assert r.returncode == 1, r.stderr
    assert_clean_stderr(r.stderr)
    rows = {row["path"]: row for row in jsonl(r.stdout)}
    for f, why in ((one, "too short: under 0.25 s of audio"), (quiet, "silent: no sub-track above -60 dBFS")):
        row = rows[str(f)]
        assert row["genre"] is None and row["confidence"] is None and row["segments"] == 0
        assert row["error"] == why
    assert rows[str(music)]["genre"] is not None and rows[str(music)]["error"] is None


def test_sub_tracks_avoid_a_long_silent_intro_and_outro(tmp_path):
    import numpy as np
    import soundfile as sf

    from genretag.card import AudioParams
    from genretag.pipeline.prepare import prepare_file

    sr = 16000
    x = np.concatenate([np.zeros(sr * 30, np.float32), varied_tone(sr, 20.0), np.zeros(sr * 40, np.float32)])
    path = tmp_path / "hidden-track-gaps.flac"
    sf.write(str(path), x, sr)
    p = prepare_file(path, AudioParams(sample_rate=sr, segment_seconds=3.0, max_segments=10))
    assert p.error is None
    assert len(p.offsets) == 10 and p.offsets == sorted(p.offsets)
    assert all(30.0 - 3.0 < o < 50.0 for o in p.offsets), p.offsets  # each sub-track overlaps the music
    assert all(np.sqrt(np.mean(w ** 2)) > 0.1 for w in p.waves)


def _without_dac_override() -> list[str]:
    """A command prefix that runs a child without root's power to ignore file modes, or skips."""
    import os
    import subprocess

    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("setpriv is not available to drop CAP_DAC_OVERRIDE")
    if probe.returncode != 0:
        pytest.skip("cannot drop CAP_DAC_OVERRIDE here")
    return prefix


@pytest.mark.slow
def test_unreadable_file_and_folder_on_the_command_line(tmp_path, tiny_model_dir):
    import os

    prefix = _without_dac_override()
    good = make_file(tmp_path / "good.wav", seconds=2.0)
    locked_file = make_file(tmp_path / "locked.wav", seconds=2.0)
    locked_dir = tmp_path / "locked-folder"
    locked_dir.mkdir()
    make_file(locked_dir / "inside.wav", seconds=2.0)
    os.chmod(locked_file, 0)
    os.chmod(locked_dir, 0)
    try:
        r = run_cli("classify", str(locked_file), str(locked_dir), str(good), "--model", str(tiny_model_dir),
                    "-f", "jsonl", "-j", "1", preexec=prefix)
    finally:
        os.chmod(locked_dir, 0o755)
    assert r.returncode == 1, r.stderr
    lines = assert_clean_stderr(r.stderr)
    assert f"genretag: error: cannot read folder {locked_dir}: Permission denied" in lines
    rows = {row["path"]: row for row in jsonl(r.stdout)}
    assert set(rows) == {str(locked_file), str(good)}
    assert rows[str(locked_file)]["error"] == "permission denied"
    assert rows[str(good)]["genre"] is not None


@pytest.mark.slow
def test_output_cut_short_by_head_is_no_failure(tmp_path, tiny_model_dir):
    import subprocess
    import sys

    files = [str(make_file(tmp_path / f"t{i}.wav", seconds=2.0, freq=300.0 + 50 * i)) for i in range(6)]
    for fmt in ("csv", "jsonl"):
        p = subprocess.Popen([sys.executable, "-m", "genretag", "classify", *files, "--model", str(tiny_model_dir),
                              "-f", fmt, "-j", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.readline()  # what `| head -1` does: one line, then the pipe is closed
        p.stdout.close()
        err = p.stderr.read()
        p.stderr.close()
        assert p.wait(timeout=300) == 0, err
        assert_clean_stderr(err)


@pytest.mark.slow
def test_names_are_printed_as_given_and_no_decoder_chatter(tmp_path, tiny_model_dir):
    from hostile import truncated

    make_file(tmp_path / "-dash.wav", seconds=2.0)
    vbr = make_file(tmp_path / "vbr.mp3", seconds=3.0)
    truncated(vbr, tmp_path / "cut.mp3", 0.3)
    r = run_cli("classify", "./-dash.wav", "./cut.mp3", "--model", str(tiny_model_dir), "-f", "csv", "-j", "1",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_clean_stderr(r.stderr)  # libmpg123's "Xing stream size off" / resync notes stay out
    assert [line.split(",")[0] for line in r.stdout.decode().splitlines()] == ["path", "./-dash.wav", "./cut.mp3"]


@pytest.mark.slow
def test_model_failure_prints_no_csv_header(tmp_path):
    card = tmp_path / "broken.json"
    card.write_text("{not json")
    r = run_cli("classify", str(make_file(tmp_path / "a.wav")), "--model", str(card), "-f", "csv")
    assert r.returncode != 0 and r.stdout == b""
    lines = assert_clean_stderr(r.stderr)
    assert len(lines) == 1 and lines[0].count("broken.json") == 1, lines


@pytest.mark.slow
def test_non_utf8_file_names_keep_the_output_valid_utf8(tmp_path, tiny_model_dir):
    import base64
    import os

    folder = os.fsencode(tmp_path)
    name = folder + b"/caf\xe9-latin1.wav"  # Latin-1 bytes: not UTF-8
    os.rename(make_file(tmp_path / "cafe.wav", seconds=2.0), name)  # soundfile writes UTF-8 names only
    for fmt in ("jsonl", "csv"):
        r = run_cli("classify", name, "--model", str(tiny_model_dir), "-f", fmt, "-j", "1")
        assert r.returncode == 0, r.stderr
        text = r.stdout.decode("utf-8")  # strict: raises on invalid UTF-8
        if fmt == "jsonl":
            (row,) = jsonl(r.stdout)
            assert base64.b64decode(row["path_bytes"]) == name and row["genre"] is not None
            assert row["path"].endswith("/caf\\xe9-latin1.wav")
        else:
            assert text.splitlines()[1].startswith(f"{tmp_path}/caf\\xe9-latin1.wav,")




def test_mp3_whose_id3_size_runs_past_the_file(tmp_path):
    """A damaged ID3v2 size, 1000 bytes past the end of the file: FFmpeg still decodes the frames behind
    the tag, and the length is counted from them (it was an internal ValueError)."""
    good = add_cover(make_file(tmp_path / "good.mp3", seconds=2.0), 5_000)
    data = bytearray(good.read_bytes())
    size = len(data) + 1000
    data[6:10] = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])  # syncsafe
    bad = tmp_path / "bad-id3-size.mp3"
    bad.write_bytes(bytes(data))
    assert audio.info(bad).duration == audio.info(good).duration
    assert audio.load(bad, 16000).shape == audio.load(good, 16000).shape


def _specials(folder, tmp_path):
    """A FIFO, a symlink loop, a link to itself and a dangling link, each with an audio name, in `folder`."""
    import os

    os.mkfifo(folder / "fifo.mp3")
    (folder / "dangling.ogg").symlink_to(tmp_path / "nowhere.ogg")
    (folder / "self.wav").symlink_to(folder / "self.wav")
    (folder / "loop-dir").symlink_to(folder / "loop-dir")
    return [folder / "fifo.mp3", folder / "self.wav", folder / "dangling.ogg"]


SPECIAL_ERRORS = {"fifo.mp3": "not a regular file (a FIFO)", "self.wav": "symbolic link loop",
                  "dangling.ogg": "broken symbolic link (its target does not exist)"}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["classify", "tag"])
def test_fifo_symlink_loop_and_dangling_link(tmp_path, tiny_model_dir, command):
    """Named on the command line: one error row each (a FIFO is never opened for reading: that would wait for
    a writer for ever), exit 1, the other files processed. Inside a walked folder: skipped, as every entry
    that is not a regular file or a folder is."""
    lib, named = tmp_path / "lib", tmp_path / "named"
    lib.mkdir()
    named.mkdir()
    make_file(lib / "good.wav", seconds=2.0)
    good = make_file(tmp_path / "good.flac", seconds=2.0)
    _specials(lib, tmp_path)
    specials = _specials(named, tmp_path)
    extra = ["--min-confidence", "0", "--write", "--journal", str(tmp_path / "j.jsonl")] if command == "tag" else []
    r = run_cli(command, str(lib), *map(str, specials), str(good), "--model", str(tiny_model_dir), "-f", "jsonl",
                "-j", "1", *extra, timeout=120)
    assert r.returncode == 1, r.stderr
    lines = assert_clean_stderr(r.stderr)
    assert not [line for line in lines if "error" in line], lines  # the errors are in the rows
    rows = {row["path"]: row for row in jsonl(r.stdout)}
    assert set(rows) == {str(lib / "good.wav"), *map(str, specials), str(good)}
    for p in specials:
        assert rows[str(p)]["error"] == SPECIAL_ERRORS[p.name], rows[str(p)]
    for p in (lib / "good.wav", good):
        row = rows[str(p)]
        assert row["error"] is None and (row["action"] == "written" if command == "tag" else row["genre"]), row


def _damaged_set(tmp_path):
    """Per format: a good file, one cut in half, one cut inside its header, one with 40 flipped bits."""
    from audio_factory import FORMATS, add_tags
    from hostile import bit_flipped, truncated

    good, bad = [], []
    for i, ext in enumerate(FORMATS):
        src = make_file(tmp_path / f"good{ext}", seconds=2.0, freq=300.0 + 40 * i)
        add_tags(src, genre="Rock")
        good.append(src)
        bad += [truncated(src, tmp_path / f"half{ext}", 0.5), truncated(src, tmp_path / f"head{ext}", 0.01),
                bit_flipped(src, tmp_path / f"flipped{ext}", 40, seed=i)]
    return good, bad


@pytest.mark.slow
def test_truncated_and_bit_flipped_files_of_every_format(tmp_path, tiny_model_dir):
    """classify: each damaged file is classified or gets a one-line error in its row; the good ones are
    classified; exit 1 exactly when a row has an error; nothing on stderr but the model line."""
    good, bad = _damaged_set(tmp_path)
    r = run_cli("classify", *map(str, good + bad), "--model", str(tiny_model_dir), "-f", "jsonl", "-j", "1")
    lines = assert_clean_stderr(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("model:"), lines
    rows = {row["path"]: row for row in jsonl(r.stdout)}
    assert list(rows) == list(map(str, good + bad))
    for p in good:
        assert rows[str(p)]["error"] is None and rows[str(p)]["genre"] is not None, rows[str(p)]
    failed = [row for row in rows.values() if row["error"] is not None]
    for row in failed:
        assert row["genre"] is None and "\n" not in row["error"] and len(row["error"]) <= 200, row
    assert r.returncode == (1 if failed else 0)
    assert {rows[str(tmp_path / f"head{ext}")]["error"] is not None for ext in (".flac", ".m4a", ".wav")} == {True}


def test_a_fifo_is_refused_by_the_library_without_waiting(tmp_path):
    import os

    from genretag.audio.containers import FingerprintError, file_fingerprint, fingerprint
    from genretag.tags import TagError, read_tags

    fifo = tmp_path / "fifo.flac"
    os.mkfifo(fifo)
    for call, err in ((fingerprint, FingerprintError), (file_fingerprint, FingerprintError), (read_tags, TagError),
                      (audio.info, audio.AudioError)):
        with pytest.raises(err, match=r"^not a regular file \(a FIFO\)$"):
            call(fifo)
