"""Excerpts as extra data (genretag.training.excerpts): subsets from the manifest, checked against
the fault-filtered lists, trained on (train, and valid for a refit), measured apart from the tracks.

A tiny GTZAN-layout folder is made at test time with real fault-filtered clip names (three genres
of clearly different synthetic signals), plus an excerpts folder of 2.5 s cuts of other clips.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from genretag.card import load_card
from genretag.training.dataset import DatasetError, fault_filtered_lists, scan
from genretag.training.excerpts import load_excerpts

SIGNALS = {"hiphop": "tones", "metal": "noise", "reggae": "clicks"}


def _signal(kind: str, k: int, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    if kind == "tones":
        f = 80 + 20 * k
        y = 0.3 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(2 * np.pi * 2 * f * t)
    elif kind == "noise":
        y = 0.2 * rng.standard_normal(len(t)) * (np.sin(2 * np.pi * (1.5 + 0.2 * k) * t) > 0)
    else:
        y = np.zeros(len(t))
        for s in range(0, len(t) - 200, int(sr * 60 / (100 + 10 * k))):
            y[s:s + 200] += 0.8 * np.exp(-np.arange(200) / 30) * rng.choice([-1, 1], 200)
    return (y + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def _ids(genre: str) -> dict[str, list[str]]:
    lists = fault_filtered_lists()
    listed = {i for ids in lists.values() for i in ids}
    out = {s: [i for i in ids if i.startswith(genre + "/")] for s, ids in lists.items()}
    out["excluded"] = [f"{genre}/{genre}.{n:05d}" for n in range(100) if f"{genre}/{genre}.{n:05d}" not in listed]
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """(whole clips folder, excerpts folder): per genre 2 train / 2 valid / 2 test clips whole;
    excerpts of 2 train / 1 valid / 2 test / 1 excluded other clips, and one of a clip present whole."""
    root = tmp_path_factory.mktemp("excerpt-data")
    whole, ex = root / "gtzan", root / "excerpts"
    rng = np.random.default_rng(0)
    rows = []
    for g, kind in SIGNALS.items():
        ids = _ids(g)
        (whole / g).mkdir(parents=True)
        (ex / g).mkdir(parents=True)
        for s in ("train", "valid", "test"):
            for k, tid in enumerate(ids[s][:2]):
                sf.write(whole / f"{tid}.wav", _signal(kind, k, 4.0, 16000, rng), 16000)
        cuts = [(s, tid) for s, n in (("train", 2), ("valid", 1), ("test", 2)) for tid in ids[s][2:2 + n]]
        cuts += [("excluded", ids["excluded"][0]), ("train", ids["train"][0])]  # last: present whole
        for k, (s, tid) in enumerate(cuts):
            sf.write(ex / f"{tid}.flac", _signal(kind, k, 2.5, 22050, rng), 22050)
            rows.append({"path": f"{tid}.flac", "genre": g, "clip": tid.split("/")[1], "duration_s": 2.5,
                         "ff_subset": s, "sha256": ""})
    with (ex / "manifest.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return whole, ex


def test_subsets_come_from_the_manifest_and_agree_with_the_lists(data) -> None:
    whole, ex = data
    got = load_excerpts(ex, scan(whole))
    assert got.counts() == {"train": 6, "valid": 3, "test": 6}
    assert (got.n_excluded, got.n_dropped) == (3, 3)
    lists = {s: set(ids) for s, ids in fault_filtered_lists().items()}
    present = {t.id for t in scan(whole)}
    for s, tracks in got.parts.items():
        assert all(t.id in lists[s] and t.id not in present and t.path.is_file() for t in tracks)
    assert load_excerpts(ex).counts()["train"] == 9  # nothing present whole: nothing dropped


def test_bad_manifests_are_one_line_errors(data, tmp_path: Path) -> None:
    _, ex = data
    with pytest.raises(DatasetError, match="no manifest.csv"):
        load_excerpts(tmp_path)
    with pytest.raises(DatasetError, match="fault-filtered"):
        load_excerpts(ex, split="random")
    lines = (ex / "manifest.csv").read_text().splitlines()
    header, first = lines[0], lines[1]
    assert first.endswith(",train,")
    cases = {"the manifest says test": first.replace(",train,", ",test,"),  # a train clip called test
             "unknown ff_subset": first.replace(",train,", ",holdout,")}
    for msg, row in cases.items():
        bad = tmp_path / msg.replace(" ", "_")
        bad.mkdir()
        (bad / "manifest.csv").write_text(f"{header}\n{row}\n")
        with pytest.raises(DatasetError, match=msg):
            load_excerpts(bad)
    (tmp_path / "manifest.csv").write_text("path,genre\nmetal/metal.00000.flac,metal\n")
    with pytest.raises(DatasetError, match="missing column"):
        load_excerpts(tmp_path)


@pytest.fixture(scope="module")
def refit_model(data, tmp_path_factory) -> Path:
    from genretag.training.transfer import TransferConfig, run_head

    whole, ex = data
    out = tmp_path_factory.mktemp("excerpt-head")
    old = os.environ.get("GENRETAG_CACHE_DIR")
    os.environ["GENRETAG_CACHE_DIR"] = str(out / "cache")  # module fixture: outside monkeypatch
    try:
        cfg = TransferConfig(data_dir=str(whole), out=str(out / "run"), name="tiny-excerpts", device="cpu",
                             poolings=["penultimate"], hidden=[0], weight_decays=[1e-2], head_epochs=20, head_lr=1e-2,
                             train_crops=3, extra=str(ex), extra_repeat=[1, 3], refit=True, prior_weights=[0, 1])
        return run_head(cfg)[0]
    finally:
        if old is None:
            os.environ.pop("GENRETAG_CACHE_DIR", None)
        else:
            os.environ["GENRETAG_CACHE_DIR"] = old


def test_transfer_trains_on_excerpts_and_measures_them_apart(refit_model: Path) -> None:
    card = load_card(refit_model)
    tr = card.training
    assert tr["excerpts"]["trained_on"] == ["train", "valid"]
    assert (tr["excerpts"]["n_train"], tr["excerpts"]["n_valid"], tr["excerpts"]["n_test"]) == (6, 3, 6)
    assert tr["selected"]["extra_repeat"] in (1, 3)
    assert {(r["mapping"], r["weight"]) for r in tr["selected"]["prior_grid"]} == {
        (m, w) for m in ("strict", "proxy") for w in (0, 1)}
    assert {row["extra_repeat"] for row in tr["head_grid"]} == {1, 3}
    # 6 train tracks x 3 crops, then the 6 train excerpts (one crop each) repeated
    assert tr["n_train_embeddings"] == 18 + 6 * tr["selected"]["extra_repeat"]
    assert tr["refit"]["n_embeddings"] == 2 * 18 + 9 * tr["selected"]["extra_repeat"]
    m = card.metrics
    assert m["test"]["n_tracks"] == 6 and m["test_excerpts"]["n_tracks"] == 6
    assert m["test_excerpts"]["accuracy_soft"] == m["test_excerpts"]["accuracy_segment"]  # one sub-track each
    assert "valid" not in m and "valid_excerpts" not in m  # refit: valid was trained on
    assert m["valid_seen_in_training"]["n_tracks"] == 6 and m["valid_excerpts_seen_in_training"]["n_tracks"] == 3
    assert m["test"]["accuracy_soft"] > 1 / 3  # three easy "genres": better than chance


def test_evaluate_reports_the_excerpts_on_their_own_line(data, refit_model: Path, tmp_path: Path) -> None:
    from genretag.cli import app

    whole, ex = data
    rep_path = tmp_path / "rep.json"
    res = CliRunner().invoke(app, ["evaluate", str(whole), "--model", str(refit_model), "--extra", str(ex),
                                   "--device", "cpu", "--json", str(rep_path)])
    assert res.exit_code == 0, res.output
    rep = json.loads(rep_path.read_text())
    assert rep["n_tracks"] == 6 and rep["excerpts"]["n_tracks"] == 6 and rep["excerpts"]["n_segments"] == 6
    assert "fault-filtered/test: 6 tracks" in res.output
    assert "fault-filtered/test excerpts: 6 excerpts (one sub-track each; not merged with the tracks)" in res.output
    # the track-level figure is the one evaluate gives without --extra
    res2 = CliRunner().invoke(app, ["evaluate", str(whole), "--model", str(refit_model), "--device", "cpu",
                                    "--json", str(tmp_path / "plain.json")])
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert res2.exit_code == 0 and plain["accuracy"] == rep["accuracy"] and "excerpts" not in plain
    bad = CliRunner().invoke(app, ["evaluate", str(whole), "--model", str(refit_model), "--extra", str(tmp_path)])
    assert bad.exit_code == 2 and "no manifest.csv" in bad.output


def test_train_with_excerpts_keeps_the_figures_apart(data, tmp_path: Path) -> None:
    from genretag.training.train import TrainConfig, train

    whole, ex = data
    cfg = TrainConfig(data_dir=str(whole), out=str(tmp_path / "run"), layers=[1, 1], widths=[8, 16], stem_stride=1,
                      sample_rate=16000, segment_seconds=1.0, max_segments=4, n_fft=256, hop_length=128, n_mels=32,
                      epochs=1, steps_per_epoch=2, batch_size=8, aug_mixup=0.0, device="cpu", jobs=1,
                      extra=str(ex))
    card = load_card(train(cfg))
    assert card.training["excerpts"]["trained_on"] == ["train"]
    assert (card.training["n_train_tracks"], card.training["n_valid_tracks"]) == (6, 6)
    m = card.metrics
    assert (m["valid"]["n_tracks"], m["valid_excerpts"]["n_tracks"]) == (6, 3)
    assert (m["test"]["n_tracks"], m["test_excerpts"]["n_tracks"]) == (6, 6)


def test_zero_shot_prior_is_added_to_the_head_logits(refit_model: Path, tmp_path: Path) -> None:
    """A card's ``prior`` adds ``weight * log(zero-shot score)`` of the trunk's own MSD tags."""
    import shutil

    import torch

    from genretag.card import save_card
    from genretag.model import load_net
    from genretag.nets import musicnn as M
    from genretag.training.transfer import ZEROSHOT_MAPPINGS

    card = load_card(refit_model)
    card.architecture.pop("prior", None)
    plain_path = tmp_path / "plain.json"
    save_card(card, plain_path)
    shutil.copy(refit_model.parent / card.weights, tmp_path / card.weights)
    card.architecture["prior"] = {"mapping": ZEROSHOT_MAPPINGS["proxy"], "agg": "max", "weight": 0.5}
    save_card(card, tmp_path / "prior.json")
    plain, with_prior = (load_net(p, "cpu").net for p in (plain_path, tmp_path / "prior.json"))
    wave = torch.from_numpy(np.random.default_rng(3).standard_normal((2, M.SEGMENT_SAMPLES)).astype(np.float32) * 0.1)
    with torch.no_grad():
        tags = M.MusicnnNet.forward(plain.trunk, M.musicnn_frontend(wave))
        zs = M.zeroshot_logits(tags, M.zeroshot_matrix(card.labels, ZEROSHOT_MAPPINGS["proxy"], M.MSD_TAGS))
        got = with_prior(wave)
    reggae = card.labels.index("reggae")  # no MSD tag: the mean of the mapped genres' values
    mapped = [i for i in range(len(card.labels)) if i != reggae]
    prior = zs.clone()
    prior[:, reggae] = zs[:, mapped].mean(dim=1)
    torch.testing.assert_close(got, plain(wave) + 0.5 * prior)
    assert not torch.allclose(got, plain(wave))


@pytest.mark.slow
def test_the_trunk_experiments_script_runs_and_scores_valid_only(data, tmp_path: Path) -> None:
    """scripts/transfer_experiments.py (the multi-trunk figures of docs/results.md) on the tiny folder:
    one row per trunk, trunk pair, zero-shot blend and ensemble, all scored on valid items only."""
    import subprocess
    import sys

    whole, ex = data
    out = tmp_path / "exp.json"
    script = Path(__file__).resolve().parents[1] / "scripts" / "transfer_experiments.py"
    r = subprocess.run([sys.executable, str(script), str(whole), "--extra", str(ex),
                        "--trunks", "msd-musicnn,mtt-musicnn", "--hidden", "0", "--weight-decay", "0.01",
                        "--extra-repeat", "1", "--train-crops", "2", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, check=False,
                       env={**os.environ, "GENRETAG_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    heads = [row for row in rows if "trunks" in row and "blend" not in row]
    assert [row["trunks"] for row in heads] == [["msd-musicnn"], ["mtt-musicnn"], ["msd-musicnn", "mtt-musicnn"]]
    assert {row["blend"] for row in rows if "blend" in row} == {"zeroshot-proxy", "zeroshot-strict"}
    assert [row["ensemble"] for row in rows if "ensemble" in row] == [["msd-musicnn", "mtt-musicnn"]]
    # 2 valid clips per genre whole, 1 valid excerpt per genre: the test subsets never enter
    assert all(row["n"] == [6, 3] for row in rows if "n" in row)
    assert all(0.0 <= row["valid_pooled"] <= 1.0 for row in rows)
    msd = heads[0]
    assert msd["valid_pooled"] > 1 / 3  # three clearly different signals: better than chance


@pytest.mark.slow
def test_the_experiments_script_takes_tag_features_and_a_prior_inside_training(data, tmp_path: Path) -> None:
    """``NAME:tags`` trains heads on the 50 tag logits alone; ``--trained-prior W`` trains a head on top
    of W x the zero-shot prior and scores it with the prior added, on valid items only; ``--valid-library``
    scores each row on library versions of the valid items as well; ``--short-crops`` adds excerpt-like
    crops of the training tracks to training; ``--excerpt-fill tile`` repeats short excerpts' audio."""
    import subprocess
    import sys

    whole, ex = data
    out = tmp_path / "exp.json"
    script = Path(__file__).resolve().parents[1] / "scripts" / "transfer_experiments.py"
    r = subprocess.run([sys.executable, str(script), str(whole), "--extra", str(ex),
                        "--trunks", "msd-musicnn:tags", "--hidden", "0", "--weight-decay", "0.01",
                        "--extra-repeat", "1", "--train-crops", "2", "--trained-prior", "0.5",
                        "--augment-copies", "1", "--valid-library", "1", "--short-crops", "2",
                        "--excerpt-fill", "tile", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, check=False,
                       env={**os.environ, "GENRETAG_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    heads = [row for row in rows if "trunks" in row and "blend" not in row and "trained_prior" not in row]
    assert [row["trunks"] for row in heads] == [["msd-musicnn:tags"]]
    trained = [row for row in rows if "trained_prior" in row]
    assert sorted(row["trained_prior"] for row in trained) == ["proxy", "strict"]
    assert all(row["weight"] == 0.5 and row["n"] == [6, 3] for row in trained)
    assert heads[0]["valid_pooled"] > 1 / 3  # the tags of three clearly different signals: better than chance
    # --valid-library 1: every head, blend and trained-prior row is also scored on library version 1 of
    # the same valid items (--augment-copies 1 trained on library version 0 of the training items)
    scored = [row for row in rows if "ensemble" not in row]
    assert scored and all(set(row["library"]) == {"1"} for row in scored)
    # --short-crops 2: 2 crops of each of the 6 training tracks, clean and library version 0
    assert "24 short crops in training (2 per training track and version)" in r.stdout
    assert all(row["library"]["1"]["n"] == [6, 3] for row in scored)
    assert heads[0]["library"]["1"]["valid_pooled"] > 1 / 3


def test_a_head_trained_on_an_offset_is_scored_with_it() -> None:
    """train_head(offset=...): the offset joins the head's logits in the loss and in the valid score, so a
    prior that already names every valid item's genre scores 100% whatever the embeddings say."""
    from genretag.training import transfer as T

    rng = np.random.default_rng(0)
    n_classes, dim = 3, 8
    ytr = np.repeat(np.arange(n_classes), 20)
    xtr = rng.normal(size=(len(ytr), dim)).astype(np.float32)  # noise: nothing to learn from x
    y_va = np.arange(n_classes).repeat(4)
    x_va = rng.normal(size=(len(y_va), dim)).astype(np.float32)
    track = np.arange(len(y_va))
    cfg = T.TransferConfig(head_epochs=10)
    spec = T.HeadSpec(n_classes, 0, 0.01)
    _, acc_plain, _, _ = T.train_head(xtr, ytr, spec=spec, cfg=cfg, valid=T.ValidRows(x_va, track, y_va))
    prior = 10.0 * np.eye(n_classes, dtype=np.float32)
    head, acc, nll, _ = T.train_head(xtr, ytr, spec=spec, cfg=cfg, valid=T.ValidRows(x_va, track, y_va, prior[y_va]),
                                     offset=prior[ytr])
    assert acc == 1.0 and nll < 0.01
    assert acc_plain < 0.9


def test_transfer_trains_heads_on_top_of_the_prior_and_ships_that_prior(data, tmp_path: Path, monkeypatch) -> None:
    """--prior-in-training: each (mapping, weight > 0) joins the head grid, the heads (bag and refit
    included) train with the prior in their loss, and the card carries the chosen prior, which the
    loaded network adds to its head: its valid logits are the ones the selection scored."""
    from genretag.model import load_net
    from genretag.nets import musicnn as M
    from genretag.training import transfer as T

    whole, ex = data
    monkeypatch.setenv("GENRETAG_CACHE_DIR", str(tmp_path / "cache"))
    cfg = T.TransferConfig(data_dir=str(whole), out=str(tmp_path / "run"), name="tiny-trained-prior", device="cpu",
                           poolings=["penultimate"], hidden=[0], weight_decays=[1e-2], head_epochs=10,
                           head_lr=1e-2, train_crops=3, extra=str(ex), heads=[1, 2], prior_weights=[0, 0.5, 2],
                           prior_in_training=True)
    path, net, data_ = T.run_head(cfg)
    card = load_card(path)
    sel = card.training["selected"]
    grid = card.training["head_grid"]
    assert {(r["prior_mapping"], r["prior_weight"]) for r in grid} == {
        (m, w) for m in ("strict", "proxy") for w in (0.5, 2)}  # weight 0 is no prior to train on
    assert "prior_grid" not in sel  # chosen with the head, not after it
    chosen = sel["prior_in_training"]
    prior = card.architecture["prior"]
    assert (prior["mapping_name"], prior["weight"]) == (chosen["mapping"], chosen["weight"])
    best = max(grid, key=lambda r: (r["valid_acc"], -r["valid_nll"]))
    assert (best["prior_mapping"], best["prior_weight"]) == (chosen["mapping"], chosen["weight"])
    # the saved network adds the prior: head logits + weight x zero-shot prior of its own tags
    ln = load_net(path, "cpu")
    wave = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (2, ln.card.audio.segment_samples))
                            .astype(np.float32))
    with torch.no_grad():
        out = ln.net(wave)
        tags, emb = M.trunk_outputs(ln.net.trunk, M.musicnn_frontend(wave))
        head = ln.net.head(M.pool_embeddings(emb, ln.card.architecture["pooling"]))
    off = T.prior_offset({"tag_logits": tags.numpy()}, list(card.labels), chosen["mapping"], chosen["weight"])
    assert np.allclose(out.numpy(), head.numpy() + off, atol=1e-4)


def test_prior_in_training_without_a_weight_is_a_usage_error(data, tmp_path: Path) -> None:
    from genretag.cli import app

    whole, _ = data
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["transfer", str(whole), "--mode", "head", "--prior-in-training", "--device", "cpu",
                                 "--out", str(out)])
    assert r.exit_code == 2
    assert "--prior-in-training needs --prior-weight with a weight above 0" in r.stderr
    assert "Traceback" not in r.output and not out.exists()


def test_an_offset_of_the_wrong_shape_is_refused() -> None:
    from genretag.training import transfer as T

    x = np.zeros((6, 4), np.float32)
    y = np.arange(6) % 3
    with pytest.raises(ValueError, match="one row of 3 logits per training row"):
        T.train_head(x, y, spec=T.HeadSpec(3, 0, 0.01), cfg=T.TransferConfig(head_epochs=5), offset=np.zeros((5, 3)))


def test_the_experiments_scripts_short_crops_and_tiled_excerpts_are_cut_as_described(data) -> None:
    """The experiments script's excerpt-like crops: 2-3 s of a training track from inside it, zero-padded
    at the end to one sub-track; the same seed draws the same crops (every trunk sees the same rows).
    Its tiled excerpts repeat the excerpt's audio to fill the sub-track."""
    import importlib.util

    from genretag.training import transfer as T

    whole, ex = data
    path = Path(__file__).resolve().parents[1] / "scripts" / "transfer_experiments.py"
    spec = importlib.util.spec_from_file_location("transfer_experiments", path)
    X = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(X)
    d = T.load_data(T.TransferConfig(data_dir=str(whole), extra=str(ex), device="cpu"))
    card = load_card(Path(__file__).resolve().parents[1] / "models" / "msd-musicnn.json")
    seg, sr = card.audio.segment_samples, card.audio.sample_rate
    crops = X.short_crops(d, "train", card, 3, seed=0)
    assert len(crops) == len(d.parts["train"]) and all(c.shape == (3, seg) for c in crops)
    idx = d.cache.index_of()
    for t, rows in zip(d.parts["train"], crops):
        wave = d.cache.wave(idx[t.id])
        for row in rows:
            audible = int(np.flatnonzero(row)[-1]) + 1
            assert 2.0 * sr - 2 <= audible <= seg
            assert not row[audible:].any()
            starts = [s for s in np.flatnonzero(wave == row[0])
                      if np.array_equal(wave[s:s + audible], row[:audible])]
            assert starts and starts[0] + audible <= len(wave)  # a stretch of the track itself
    again = X.short_crops(d, "train", card, 3, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(crops, again))
    assert not all(np.array_equal(a, b) for a, b in zip(crops, X.short_crops(d, "train", card, 3, seed=1)))
    # --excerpt-fill tile: a 2.5 s excerpt fills its one sub-track by repeating, never with zeros
    for t, rows in zip(d.parts["train_excerpts"], X.tiled_segments(d, "train_excerpts", card)):
        wave = d.cache.wave(idx[t.id])
        assert len(wave) < seg and rows.shape == (1, seg)
        np.testing.assert_array_equal(rows[0], np.concatenate([wave, wave])[:seg])
