"""`genretag evaluate` on any labelled music: a folder per label, a CSV manifest, a library's own genre tags;
the synonym map (genretag.labels) and the precision/coverage report. Real files of several formats, tagged
with mutagen, through the tiny test model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from audio_factory import add_tags, make_file, write_audio
from typer.testing import CliRunner

from genretag.card import GTZAN_GENRES
from genretag.cli import app
from genretag.errors import DatasetError
from genretag.labels import BROAD_GENRES, OUTSIDE, LabelMap, is_placeholder, label_key, load_map_file, parse_map
from genretag.training import metrics

runner = CliRunner()


def evaluate(*args: str):
    return runner.invoke(app, ["evaluate", *args, "--jobs", "1", "--device", "cpu"])


def classified(model: Path, paths: list[Path]) -> dict[str, tuple[str, float]]:
    """What `genretag classify` says of each file (genre, confidence), by path."""
    import genretag

    return {r.path: (r.genre, r.confidence) for r in genretag.classify([str(p) for p in paths], str(model))}


def one_line_error(r, *needles: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("genretag: error: ") and "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def broad_model_dir(tmp_path_factory) -> Path:
    """A tiny, randomly initialised model with the broad model's 16 labels (Hip-Hop, R&B, ...)."""
    import torch

    from genretag.card import AudioParams, MelParams, ModelCard
    from genretag.nets import build_net
    from genretag.store.weights import save_model

    card = ModelCard(name="tiny-broad", labels=list(BROAD_GENRES),
                     architecture={"name": "resnet", "variant": "tiny", "layers": [1, 1], "widths": [8, 16],
                                   "dropout": 0.0, "stem_stride": 2},
                     audio=AudioParams(sample_rate=16000, segment_seconds=1.0, max_segments=3),
                     mel=MelParams(n_fft=512, hop_length=256, n_mels=32), extra={"min_confidence": 0.12})
    torch.manual_seed(1)
    return save_model(build_net(card), card, tmp_path_factory.mktemp("tiny-broad"))


# --------------------------------------------------------------------------- labels

def test_label_key_ignores_case_spaces_punctuation_and_accents():
    assert label_key("R&B") == label_key("r and b") == label_key("R & B") == "randb"
    assert label_key("Hip-Hop") == label_key("hip hop") == label_key("HipHop") == "hiphop"
    assert label_key("Música Clásica") == "musicaclasica"
    assert label_key("alt. rock") == "altrock"
    assert is_placeholder("Other") and is_placeholder(" unknown genre ") and is_placeholder("--")
    assert not is_placeholder("Rock")


def test_label_map_matches_the_models_labels_through_synonyms():
    gtzan, broad = LabelMap(GTZAN_GENRES), LabelMap(BROAD_GENRES)
    assert [gtzan.resolve(x) for x in ("Hip-Hop", "hip hop", "rap", "Heavy Metal", "Classic Rock", "blues")] == [
        "hiphop", "hiphop", "hiphop", "metal", "rock", "blues"]
    assert [broad.resolve(x) for x in ("hiphop", "rnb", "R & B", "soul", "rhythm and blues", "R&B/Soul")] == [
        "Hip-Hop", "R&B", "R&B", "R&B", "R&B", "R&B"]
    assert [broad.resolve(x) for x in ("techno", "house", "edm", "electronica", "dance", "electronic")] == [
        "Electronic"] * 6
    assert [broad.resolve(x) for x in ("new age", "ambient_newage", "easy listening", "vocal", "lounge",
                                       "punk rock", "alternative rock", "hard rock", "alt. rock")] == [
        "Ambient", "Ambient", "Easy Listening", "Easy Listening", "Easy Listening", "Punk", "Rock", "Rock", "Rock"]
    # a genre the model does not have, and a name no table knows, place nowhere
    assert gtzan.resolve("R&B") is None and gtzan.resolve("electronic") is None
    assert broad.resolve("world") is None and broad.resolve("soundtrack") is None


def test_the_users_map_comes_first_and_may_say_outside():
    m = LabelMap(GTZAN_GENRES, {"Latin": "-", "dance": "disco", "Funk": "Disco", "Soul Jazz": "jazz"})
    assert m.resolve("latin") == OUTSIDE and m.resolve("DANCE") == "disco" and m.resolve("soul jazz") == "jazz"
    assert m.resolve("funk") == "disco"
    with pytest.raises(DatasetError, match=r"rnb=R&B, x=nothing: not a genre of m \(blues") as e:
        LabelMap(GTZAN_GENRES, {"rnb": "R&B", "x": "nothing"}, "m")
    assert e.value.exit_code == 2
    assert LabelMap(BROAD_GENRES, {"rnb": "R&B"}).resolve("rnb") == "R&B"


def test_map_items_and_files(tmp_path):
    assert parse_map(["rnb=R&B", " hip hop = Hip-Hop ", "world=-"]) == {"rnb": "R&B", "hip hop": "Hip-Hop",
                                                                         "world": "-"}
    for bad in ("rnb", "=Rock", "rock="):
        with pytest.raises(DatasetError, match="expected synonym=Label"):
            parse_map([bad])
    f = tmp_path / "map.txt"
    f.write_text("# my tags\nrnb=R&B\n\nworld = -\n", encoding="utf-8")
    assert load_map_file(f) == {"rnb": "R&B", "world": "-"}
    f.write_text("rnb=R&B\noops\n")
    with pytest.raises(DatasetError, match="map.txt:2: 'oops': expected"):
        load_map_file(f)


def test_coverage_point_counts_outside_files_as_false_writes():
    conf = np.array([0.9, 0.8, 0.6, 0.4, 0.7])
    right = np.array([True, False, True, True, False])
    inside = np.array([True, True, True, True, False])
    p = metrics.coverage_point(conf, right, inside, 0.6)
    assert p == {"threshold": 0.6, "written": 4, "right": 2, "coverage": 0.8, "precision": 0.5,
                 "coverage_in_labels": 0.75, "outside_written": 1, "abstained": 1}
    assert metrics.coverage_point(conf, right, inside, 0.95)["precision"] is None
    ts = metrics.thresholds(extra=(0.555,))
    assert ts[0] == 0.0 and ts[-1] == 1.0 and 0.555 in ts and len(ts) == 102


# --------------------------------------------------------------------------- a folder per label

@pytest.fixture(scope="module")
def label_folders(tmp_path_factory) -> Path:
    """<label>/<files> in several formats: two in 'Hip Hop', two in 'rock', one in 'world'."""
    root = tmp_path_factory.mktemp("folders")
    layout = {"Hip Hop": [("a.mp3", 300), ("sub/b.flac", 500)], "rock": [("c.ogg", 700), ("d.wav", 900)],
              "world": [("e.m4a", 1100)]}
    for label, files in layout.items():
        for name, freq in files:
            (root / label / name).parent.mkdir(parents=True, exist_ok=True)
            make_file(root / label / name, seconds=1.5, freq=freq)
    (root / "artwork").mkdir()
    (root / "artwork" / "cover.jpg").write_bytes(b"\xff\xd8not audio")
    return root


def test_folder_per_label_with_map_json_and_plot(label_folders, tiny_model_dir, tmp_path):
    out, png = tmp_path / "rep.json", tmp_path / "curve.png"
    r = evaluate(str(label_folders), "--model", str(tiny_model_dir), "--map", "world=-", "--json", str(out),
                 "--plot", str(png))
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["layout"] == "folders" and rep["models"] == ["tiny-test"]
    assert (rep["n_files"], rep["n_tracks"], rep["n_outside"], rep["n_errors"]) == (5, 4, 1, 0)
    files = {Path(f["path"]).name: f for f in rep["files"]}
    assert files["b.flac"]["truth"] == ["hiphop"] and files["b.flac"]["labels"] == ["Hip Hop"]
    assert files["e.m4a"]["kind"] == "outside" and files["e.m4a"]["right"] is False
    # the genres and confidences are exactly classify's
    said = classified(tiny_model_dir, [Path(p) for p in files_paths(rep)])
    for f in rep["files"]:
        assert (f["genre"], f["confidence"]) == said[f["path"]]
        assert f["right"] == (f["genre"] in f["truth"])
    # the figures are the files' figures
    inside = [f for f in rep["files"] if f["kind"] == "label"]
    assert rep["accuracy"]["top1"] == pytest.approx(sum(f["right"] for f in inside) / 4)
    assert sum(map(sum, rep["confusion"])) == 4 and sum(rep["confusion_outside"]) == 1
    assert rep["per_class"]["hiphop"]["support"] == 2 and rep["per_class"]["rock"]["support"] == 2
    t = rep["threshold"]["value"]
    assert (t, rep["threshold"]["source"]) == (0.5, "genretag default")
    for point in rep["curve"]:
        written = [f for f in rep["files"] if f["confidence"] >= point["threshold"]]
        assert point["written"] == len(written) and point["right"] == sum(f["right"] for f in written)
        assert point["outside_written"] == sum(f["kind"] == "outside" for f in written)
        assert point["coverage"] == pytest.approx(len(written) / 5)
    assert rep["curve"][0]["threshold"] == 0.0 and rep["curve"][0]["coverage"] == 1.0
    assert rep["at_threshold"] == next(p for p in rep["curve"] if p["threshold"] == t)
    assert rep["abstentions"]["files"] == sum(f["confidence"] < t for f in rep["files"])
    for lab, pc in rep["per_class"].items():
        written = [f for f in rep["files"] if f["genre"] == lab and f["confidence"] >= t]
        assert pc["at_threshold"]["written"] == len(written)
        assert pc["at_threshold"]["right"] == sum(f["right"] for f in written)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "folders " in r.stdout and "(outside)" in r.stdout and "genretag default" in r.stdout


def files_paths(rep: dict) -> list[str]:
    return [f["path"] for f in rep["files"]]


@pytest.mark.slow
def test_plot_without_matplotlib_says_what_to_install(label_folders, tiny_model_dir, tmp_path):
    """matplotlib made unimportable in a real run of the CLI: one line naming the extra, before any work."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['matplotlib'] = None; from genretag.cli import main; "
            f"sys.argv = ['genretag', 'evaluate', {str(label_folders)!r}, '--model', {str(tiny_model_dir)!r}, "
            f"'--map', 'world=-', '--plot', {str(tmp_path / 'x.png')!r}]; main()")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip() == "genretag: error: --plot needs matplotlib: pip install 'genretag[train]'"
    assert not (tmp_path / "x.png").exists()


def test_an_unknown_label_is_named_before_anything_is_decoded(tmp_path, tiny_model_dir):
    """Files that do not decode at all: had evaluation decoded them, each would be an error line."""
    for label in ("rock", "Latin", "Bossa"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "x.wav").write_bytes(b"RIFF garbage, not a wav file")
    r = evaluate(str(tmp_path), "--model", str(tiny_model_dir), "--map", "bossa=-")
    assert r.exit_code == 2
    one_line_error(r, "'Latin' (1 file)", "not among the genres of tiny-test", "--map 'LABEL=-'")
    assert "Bossa" not in r.stderr and "evaluating" not in r.stderr


def test_a_map_target_that_is_not_a_genre_of_the_model_is_a_usage_error(label_folders, tiny_model_dir):
    r = evaluate(str(label_folders), "--model", str(tiny_model_dir), "--map", "world=Worldbeat", "--map", "rnb=R&B")
    assert r.exit_code == 2
    one_line_error(r, "--map world=Worldbeat, rnb=R&B: not a genre of tiny-test")
    r = evaluate(str(label_folders), "--model", str(tiny_model_dir), "--map", "world")
    assert r.exit_code == 2
    one_line_error(r, "--map 'world': expected synonym=Label")


# --------------------------------------------------------------------------- a CSV manifest

@pytest.fixture(scope="module")
def manifest_set(tmp_path_factory) -> Path:
    """audio/<n>.<ext> and a manifest.csv with path,label,subset,artist (the labels written as people do)."""
    root = tmp_path_factory.mktemp("manifest")
    (root / "audio").mkdir()
    rows = [("audio/1.mp3", "Hip-Hop", "test"), ("audio/2.flac", "Classical", "test"), ("audio/3.ogg", "rnb", "test"),
            ("audio/4.wav", "Heavy Metal", "train"), ("audio/5.aiff", "rnb", "valid"), ("audio/6.m4a", "ROCK", "test")]
    for i, (rel, _, _) in enumerate(rows):
        make_file(root / rel, seconds=1.5, freq=200 + 150 * i)
    with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "subset", "artist"])
        w.writerows([(p, lab, s, f"artist {i}") for i, (p, lab, s) in enumerate(rows)])
    return root


def test_manifest_with_map_and_subset(manifest_set, tiny_model_dir, tmp_path):
    out = tmp_path / "m.json"
    r = evaluate("--manifest", str(manifest_set / "manifest.csv"), "--model", str(tiny_model_dir),
                 "--subset", "test", "--map", "rnb=-", "--json", str(out))
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["layout"] == "manifest" and rep["subset"] == "test"
    truth = {Path(f["path"]).name: (f["truth"], f["kind"]) for f in rep["files"]}
    assert truth == {"1.mp3": (["hiphop"], "label"), "2.flac": (["classical"], "label"),
                     "3.ogg": ([], "outside"), "6.m4a": (["rock"], "label")}
    assert all(Path(p).is_file() for p in files_paths(rep))  # relative to the CSV's folder
    assert rep["outside"]["labels"] == {"rnb": 1} and rep["outside"]["files"] == 1
    # every row (no --subset), the map from a file
    mapfile = tmp_path / "map.txt"
    mapfile.write_text("rnb = -\n")
    r = evaluate("--manifest", str(manifest_set / "manifest.csv"), "--model", str(tiny_model_dir),
                 "--map-file", str(mapfile), "--json", str(out))
    assert r.exit_code == 0, r.output
    assert (json.loads(out.read_text())["n_tracks"], json.loads(out.read_text())["n_outside"]) == (4, 2)


def test_a_missing_or_undecodable_file_is_listed_and_the_others_scored(manifest_set, tiny_model_dir, tmp_path):
    mf, out = tmp_path / "with-missing.csv", tmp_path / "e.json"
    (tmp_path / "broken.mp3").write_bytes(b"ID3 not really an mp3")
    mf.write_text(f"path,label\n{manifest_set / 'audio' / '1.mp3'},hip hop\ngone.flac,rock\nbroken.mp3,jazz\n")
    r = evaluate("--manifest", str(mf), "--model", str(tiny_model_dir), "--json", str(out))
    assert r.exit_code == 1
    rep = json.loads(out.read_text())
    assert (rep["n_files"], rep["n_tracks"], rep["n_errors"]) == (3, 1, 2)
    assert {Path(e["path"]).name for e in rep["errors"]} == {"gone.flac", "broken.mp3"}
    assert [Path(line.split(": ")[2]).name for line in r.stderr.splitlines() if line.startswith("genretag: error")] == [
        "gone.flac", "broken.mp3"]
    assert "Traceback" not in r.stderr and rep["curve"][0]["written"] == 1


def test_manifest_errors_are_one_line_before_decoding(manifest_set, tiny_model_dir, tmp_path):
    mf = str(manifest_set / "manifest.csv")
    r = evaluate("--manifest", mf, "--model", str(tiny_model_dir))  # rnb: R&B, which a GTZAN model lacks
    assert r.exit_code == 2
    one_line_error(r, "label 'rnb' (2 files) not among the genres of tiny-test")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,genre\na.wav,rock\n")
    r = evaluate("--manifest", str(bad), "--model", str(tiny_model_dir))
    assert r.exit_code == 2
    one_line_error(r, "missing columns path, label (has: file, genre)")
    r = evaluate("--manifest", mf, "--model", str(tiny_model_dir), "--map", "rnb=-", "--subset", "holdout")
    assert r.exit_code == 2
    one_line_error(r, "no rows of subset 'holdout' (subsets: test, train, valid)")
    nosub = tmp_path / "nosub.csv"
    nosub.write_text("path,label\naudio/1.mp3,rock\n")
    r = evaluate("--manifest", str(nosub), "--model", str(tiny_model_dir), "--subset", "test")
    assert r.exit_code == 2
    one_line_error(r, "missing column subset")
    r = evaluate(str(manifest_set), "--manifest", mf, "--model", str(tiny_model_dir))
    assert r.exit_code == 2
    one_line_error(r, "not both")


# --------------------------------------------------------------------------- a library's own tags

@pytest.fixture()
def tagged_library(tmp_path) -> tuple[Path, dict[str, list[str]]]:
    """Files of seven formats tagged with genres as people write them, some with none, one unreadable tag."""
    lib = tmp_path / "Music"
    (lib / "Artist" / "Album").mkdir(parents=True)
    genres = {"01.mp3": ["Hip Hop"], "02.mp3": ["(17)"], "03.flac": ["Rhythm and Blues"], "04.ogg": ["Other"],
              "05.m4a": ["classical"], "06.wav": ["Soundtrack", "Heavy Metal"], "07.aiff": [], "08.opus": ["R&B"],
              "09.flac": ["Jazz"]}
    for i, (name, gs) in enumerate(genres.items()):
        path = lib / "Artist" / "Album" / name
        make_file(path, seconds=1.5, freq=220 + 110 * i)
        add_tags(path, genre=gs or None, id3_version=3 if name == "02.mp3" else 4)
    junk = lib / "10.wav"  # a wav whose chunks do not fill the file: its tags cannot be read
    write_audio(junk, np.zeros(16000, dtype=np.float32), 16000)
    with junk.open("ab") as f:
        f.write(b"LIST\xff\xff\xff\x7fxx")
    return lib, genres


def test_against_tags_with_the_gtzan_labels(tagged_library, tiny_model_dir, tmp_path):
    lib, _ = tagged_library
    before = {p: p.read_bytes() for p in lib.rglob("*") if p.is_file()}
    out, png = tmp_path / "t.json", tmp_path / "t.png"
    r = evaluate(str(lib), "--against-tags", "--model", str(tiny_model_dir), "--json", str(out), "--plot", str(png))
    rep = json.loads(out.read_text())
    files = {Path(f["path"]).name: f for f in rep["files"]}
    assert {n: (f["truth"], f["kind"]) for n, f in files.items() if n != "10.wav"} == {
        "01.mp3": (["hiphop"], "label"), "02.mp3": (["rock"], "label"), "03.flac": ([], "outside"),
        "04.ogg": ([], "no label"), "05.m4a": (["classical"], "label"), "06.wav": (["metal"], "label"),
        "07.aiff": ([], "no label"), "08.opus": ([], "outside"), "09.flac": (["jazz"], "label")}
    assert files["06.wav"]["labels"] == ["Soundtrack", "Heavy Metal"]
    assert files["10.wav"]["kind"] == "no label" and files["10.wav"]["note"].startswith("tags not read")
    assert (rep["n_tracks"], rep["n_outside"]) == (5, 2)
    assert rep["n_no_label"] + rep["n_errors"] == 3  # files without a genre are not disagreements
    assert rep["outside"]["labels"] == {"Rhythm and Blues": 1, "R&B": 1}
    said = classified(tiny_model_dir, [Path(p) for p in files_paths(rep)])
    for f in rep["files"]:
        assert (f["genre"], f["confidence"]) == said[f["path"]]
    right = sum(files[n]["genre"] == files[n]["truth"][0] for n in ("01.mp3", "02.mp3", "05.m4a", "06.wav", "09.flac"))
    assert rep["accuracy"]["top1"] == pytest.approx(right / 5)
    nl = [f for f in rep["files"] if f["kind"] == "no label" and f["error"] is None]
    assert rep["no_label"] == {"files": len(nl), "written_at_threshold": sum(f["confidence"] >= 0.5 for f in nl)}
    assert r.exit_code == (1 if rep["n_errors"] else 0), r.output
    assert "without a genre in the tags" in r.stdout and png.stat().st_size > 10_000
    assert {p: p.read_bytes() for p in lib.rglob("*") if p.is_file()} == before  # nothing written


def test_against_tags_with_the_broad_labels_and_the_cards_threshold(tagged_library, broad_model_dir, tmp_path):
    lib, _ = tagged_library
    out = tmp_path / "b.json"
    r = evaluate(str(lib), "--against-tags", "--model", str(broad_model_dir), "--json", str(out),
                 "--map", "soundtrack=Classical")
    rep = json.loads(out.read_text())
    truth = {Path(f["path"]).name: f["truth"] for f in rep["files"]}
    assert truth["01.mp3"] == ["Hip-Hop"] and truth["03.flac"] == ["R&B"] and truth["08.opus"] == ["R&B"]
    assert truth["06.wav"] == ["Classical", "Metal"]  # right on either
    f6 = next(f for f in rep["files"] if f["path"].endswith("06.wav"))
    assert f6["right"] == (f6["genre"] in ("Classical", "Metal"))
    assert rep["n_outside"] == 0 and rep["n_tracks"] == 7
    assert rep["threshold"] == {"value": 0.12, "source": "model card"}
    assert any(p["threshold"] == 0.12 for p in rep["curve"])
    assert r.exit_code in (0, 1) and "model card" in r.stdout


# --------------------------------------------------------------------------- the GTZAN layout

@pytest.fixture(scope="module")
def gtzan_layout(tmp_path_factory) -> Path:
    """Test-subset tracks of the fault-filtered split, in GTZAN layout (a few genres)."""
    from genretag.training.dataset import fault_filtered_lists

    root = tmp_path_factory.mktemp("gtzan")
    test_ids = fault_filtered_lists()["test"]
    for g in ("hiphop", "blues", "rock"):
        for tid in [t for t in test_ids if t.startswith(g + "/")][:2]:
            (root / g).mkdir(exist_ok=True)
            make_file(root / f"{tid}.wav", seconds=1.5, freq=300 + 40 * len(list(root.rglob("*.wav"))))
    return root


def test_gtzan_layout_keeps_its_report_and_gains_the_curve(gtzan_layout, tiny_model_dir, broad_model_dir, tmp_path):
    out, png = tmp_path / "g.json", tmp_path / "g.png"
    r = evaluate(str(gtzan_layout), "--model", str(tiny_model_dir), "--json", str(out), "--plot", str(png))
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert set(rep) >= {"split", "subset", "n_tracks", "labels", "accuracy", "macro_f1", "per_class", "confusion",
                        "ece", "nll", "models", "curve", "at_threshold", "abstentions", "threshold"}
    assert rep["layout"] == "gtzan" and rep["subset"] == "test" and rep["n_tracks"] == 6
    assert set(rep["accuracy"]) == {"soft", "hard", "segment", "top1"}
    assert rep["curve"][0]["precision"] == pytest.approx(rep["accuracy"]["soft"])
    assert "fault-filtered/test: 6 tracks" in r.stdout and "at the tag threshold 0.50" in r.stdout
    assert png.stat().st_size > 10_000
    # a model whose labels are written as people write them measures GTZAN's genres as its own
    r = evaluate(str(gtzan_layout), "--model", str(broad_model_dir), "--json", str(out))
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert {lab for lab, pc in rep["per_class"].items() if pc["support"]} == {"Hip-Hop", "Blues", "Rock"}
    # options of the GTZAN layout are refused elsewhere
    r = evaluate(str(gtzan_layout), "--layout", "folders", "--split", "random", "--model", str(tiny_model_dir))
    assert r.exit_code == 2
    one_line_error(r, "--split: for a GTZAN layout only")


@pytest.mark.parametrize("intercept, written", [(-20.0, 0), (20.0, 6)])
def test_gtzan_layout_holds_a_calibrated_models_confidence_against_its_threshold(
        gtzan_layout, broad_model_dir, tmp_path, intercept, written):
    """What `tag` would write: the calibrated confidence (here far below or far above the card's
    threshold whatever the probabilities), not the softmax probability, against the threshold."""
    import shutil

    model_dir = tmp_path / "calibrated"
    shutil.copytree(Path(broad_model_dir).parent, model_dir)
    (card_path,) = model_dir.glob("*.json")
    card = json.loads(card_path.read_text())
    card["extra"]["calibration"] = {"kind": "logistic", "weights": [1.0, 0.0], "intercept": intercept}
    card_path.write_text(json.dumps(card))
    out = tmp_path / "g.json"
    r = evaluate(str(gtzan_layout), "--model", str(card_path), "--json", str(out))
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert rep["threshold"] == {"value": 0.12, "source": "model card"}
    assert rep["at_threshold"]["written"] == written
