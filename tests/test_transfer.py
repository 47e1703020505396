"""Transfer learning from the musicnn tagger, on a tiny synthetic GTZAN-layout dataset.

Three "genres" of clearly different signals (low tones, noise bursts, click
rhythms), 6 tracks of 4 s each, split kfold:3 (2 train / 2 valid / 2 test per
genre). No network, no real GTZAN; the bundled msd-musicnn weights are used.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from genretag.card import AudioParams, MelParams, ModelCard, load_card
from genretag.model import load_net
from genretag.nets import build_net
from genretag.nets import musicnn as M
from genretag.store.weights import save_model

SR = 16000
GENRES = ("clicks", "noise", "tones")


def _signal(genre: str, k: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(4 * SR) / SR
    if genre == "tones":
        f = 80 + 20 * k
        y = 0.3 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(2 * np.pi * 2 * f * t)
    elif genre == "noise":
        env = (np.sin(2 * np.pi * (1.5 + 0.2 * k) * t) > 0).astype(float)
        y = 0.2 * rng.standard_normal(len(t)) * env
    else:
        y = np.zeros(len(t))
        period = int(SR * 60 / (100 + 10 * k))
        for s in range(0, len(t) - 200, period):
            y[s:s + 200] += 0.8 * np.exp(-np.arange(200) / 30) * rng.choice([-1, 1], 200)
    return (y + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tinygtzan")
    rng = np.random.default_rng(0)
    for g in GENRES:
        (root / g).mkdir()
        for k in range(6):
            sf.write(root / g / f"{g}.{k:05d}.wav", _signal(g, k, rng), SR)
    return root


def _cfg(dataset: Path, out: Path, **kw):
    from genretag.training.transfer import TransferConfig

    base = dict(data_dir=str(dataset), out=str(out), name="tiny-musicnn", split="kfold:3", device="cpu",
                poolings=["penultimate", "midend"], hidden=[0], weight_decays=[1e-2], head_epochs=20,
                train_crops=3)
    base.update(kw)
    return TransferConfig(**base)


@pytest.fixture(scope="module")
def head_model(dataset, tmp_path_factory) -> Path:
    import os

    from genretag.training.transfer import run_head

    out = tmp_path_factory.mktemp("head")
    old = os.environ.get("GENRETAG_CACHE_DIR")
    os.environ["GENRETAG_CACHE_DIR"] = str(out / "cache")  # module fixture: outside monkeypatch
    try:
        cpath, _, _ = run_head(_cfg(dataset, out / "run"))
    finally:
        if old is None:
            os.environ.pop("GENRETAG_CACHE_DIR", None)
        else:
            os.environ["GENRETAG_CACHE_DIR"] = old
    return cpath


def test_msd_tagger_card_is_multilabel() -> None:
    ln = load_net("msd-musicnn", "cpu")
    assert ln.card.extra["multilabel"] is True and isinstance(ln.net, M.MusicnnTagger)
    p = ln.predict(np.zeros((2, M.SEGMENT_SAMPLES), np.float32) + 1e-3)
    assert p.shape == (2, 50) and not np.allclose(p.sum(1), 1.0)  # sigmoid, not softmax


def test_head_beats_chance_and_card(head_model: Path) -> None:
    card = load_card(head_model)
    assert card.architecture["name"] == "musicnn-transfer"
    assert card.labels == list(GENRES)
    assert card.temperature > 0
    for subset in ("valid", "test"):
        m = card.metrics[subset]
        assert set(m) == {"n_tracks", "accuracy_soft", "accuracy_hard", "accuracy_segment", "macro_f1", "ece"}
        assert m["n_tracks"] == 6
    assert card.metrics["test"]["accuracy_soft"] > 1 / 3 + 0.2  # chance is 1/3
    assert card.training["mode"] == "head" and card.training["head_grid"]


def test_transfer_model_loads_from_its_own_file(head_model: Path, tmp_path: Path, dataset: Path) -> None:
    from safetensors import safe_open

    alone = tmp_path / "alone"
    alone.mkdir()
    card = load_card(head_model)
    for f in (head_model, head_model.with_name(card.weights)):
        shutil.copy2(f, alone / f.name)
    with safe_open(str(alone / card.weights), "pt") as f:
        keys = list(f.keys())
        assert f.get_tensor("trunk.dense.weight").dtype == torch.float16  # stored half precision
    assert any(k.startswith("trunk.timbral") for k in keys) and any(k.startswith("head.") for k in keys)
    a, b = load_net(head_model, "cpu"), load_net(alone / head_model.name, "cpu")
    y, _ = sf.read(dataset / "tones" / "tones.00000.wav", dtype="float32")
    x = y[None, :M.SEGMENT_SAMPLES]
    np.testing.assert_allclose(a.predict(x), b.predict(x), atol=1e-6)
    assert a.predict(x)[0].argmax() == GENRES.index("tones")


def test_classify_cli_with_transfer_model(head_model: Path, dataset: Path) -> None:
    from genretag.cli import app

    f = dataset / "clicks" / "clicks.00005.wav"
    r = CliRunner().invoke(app, ["classify", "--model", str(head_model), str(f), "--format", "jsonl",
                                 "--jobs", "1"])
    assert r.exit_code == 0, r.output
    row = json.loads(next(line for line in r.output.splitlines() if line.startswith("{")))
    assert set(row["probabilities"]) == set(GENRES)
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-4


def test_ensemble_is_the_mean_of_its_members(head_model: Path, tmp_path: Path) -> None:
    from genretag.training.transfer import adapt_waves, make_ensemble

    other = ModelCard(name="tiny-resnet", labels=list(GENRES),
                      architecture={"name": "resnet", "variant": "tiny", "layers": [1, 1], "widths": [8, 16],
                                    "dropout": 0.0, "stem_stride": 2},
                      audio=AudioParams(SR, 2.976, 10), mel=MelParams(n_fft=512, hop_length=256, n_mels=32))
    torch.manual_seed(0)
    other_path = save_model(build_net(other), other, tmp_path / "resnet")
    ens_path = make_ensemble([head_model, other_path], tmp_path / "ens", "tiny-ensemble")
    ens_card = load_card(ens_path)
    assert len(ens_card.members) == 2 and not Path(ens_card.members[0]).is_absolute()
    ens = load_net(ens_path, "cpu")
    members = [load_net(head_model, "cpu"), load_net(other_path, "cpu")]
    x = np.random.default_rng(1).standard_normal((3, M.SEGMENT_SAMPLES)).astype(np.float32) * 0.1
    want = np.mean([m.predict(adapt_waves(x, ens_card, m.card)) for m in members], axis=0)
    got = ens.predict(x)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


def test_finetune_one_epoch(head_model: Path, dataset: Path, tmp_path: Path) -> None:
    from genretag.training.transfer import run_finetune

    cpath = run_finetune(_cfg(dataset, tmp_path / "ft", from_head=str(head_model), epochs=1,
                              crops_per_track=1, batch_size=3))
    card = load_card(cpath)
    assert card.architecture["finetune"] is True and card.training["selected_epoch"] in (0, 1)
    assert len(card.training["history"]) == 2
    assert card.metrics["test"]["accuracy_soft"] > 1 / 3
    load_net(cpath, "cpu")


def test_zeroshot_network() -> None:
    card = ModelCard(name="zs", labels=["rockish", "jazzy", "none"],
                     architecture={"name": "musicnn-zeroshot", "mapping": {"rockish": ["rock", "hard rock"],
                                                                          "jazzy": ["jazz"]}},
                     audio=AudioParams(SR, 2.976, 10))
    net = M.build_net(card)
    root = Path(__file__).resolve().parents[1] / "models"
    net.load_state_dict(M.load_musicnn(root / "msd-musicnn.safetensors").state_dict())
    net.eval()
    x = torch.randn(2, M.SEGMENT_SAMPLES) * 0.1
    with torch.no_grad():
        tags = torch.sigmoid(M.MusicnnTagger.forward(net, x))
        lg = net(x)
    rock = tags[:, [M.MSD_TAGS.index("rock"), M.MSD_TAGS.index("hard rock")]].amax(1)
    torch.testing.assert_close(lg[:, 0], torch.log(rock + net.EPS))
    torch.testing.assert_close(lg[:, 2], torch.full((2,), float(np.log(net.EPS))))
    with pytest.raises(ValueError):
        M.MusicnnZeroShot(["x"], {"x": ["reggae"]})  # no such MSD tag


def test_freq_stride_takes_the_max_over_every_nth_mel_position() -> None:
    """A strided front-end = the exact network's conv maps, max-pooled over every stride-th band only."""
    torch.manual_seed(0)
    net = M.load_musicnn(Path(__file__).resolve().parents[1] / "models" / "msd-musicnn.safetensors")
    x = M.musicnn_frontend(torch.randn(2, M.SEGMENT_SAMPLES) * 0.1)
    with torch.no_grad():
        h = net.bn_input(x.unsqueeze(1))
        hp = torch.nn.functional.pad(h, (0, 0, 3, 3))
        blk = net.timbral[0]
        full = blk(hp)  # (B, C, T, F): conv -> ReLU -> BN at every mel position
        exact = net.front_maps(x)
        net.set_freq_stride(3)
        strided = net.front_maps(x)
    n = blk.conv.out_channels
    torch.testing.assert_close(exact[:, :n], full.amax(dim=3), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(strided[:, :n], full[..., ::3].amax(dim=3), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(strided, exact)  # really fewer positions
    assert net.timbral[1].conv.stride == (1, 3) and net.temporal[2].conv.stride == (1, 3)
    with pytest.raises(ValueError):
        net.set_freq_stride(0)


def test_refit_head_with_strided_front_end(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    from genretag.training.transfer import run_head

    monkeypatch.setenv("GENRETAG_CACHE_DIR", str(tmp_path / "cache"))
    cpath, net, _ = run_head(_cfg(dataset, tmp_path / "run", freq_stride=2, refit=True))
    card = load_card(cpath)
    assert card.architecture["freq_stride"] == 2
    assert card.training["refit"]["on"] == ["train", "valid"]
    assert card.training["refit"]["epochs"] == card.training["selected"]["epoch"]
    # valid was trained on: it must not be reported as a held-out number
    assert "valid" not in card.metrics and card.metrics["valid_seen_in_training"]["n_tracks"] == 6
    assert card.metrics["test"]["accuracy_soft"] > 1 / 3 + 0.2
    ln = load_net(cpath, "cpu")
    assert ln.net.trunk.freq_stride == 2
    y, _ = sf.read(dataset / "tones" / "tones.00001.wav", dtype="float32")
    with torch.inference_mode():
        want = torch.softmax(net(torch.from_numpy(y[None, :M.SEGMENT_SAMPLES])) / card.temperature, 1).numpy()
    np.testing.assert_allclose(ln.predict(y[None, :M.SEGMENT_SAMPLES]), want, atol=2e-3)  # float16 weights


@pytest.mark.slow
def test_head_bag_and_library_copies_with_refit(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    """--heads 1,2 and --augment-copies 0,1: a bag of two heads loads from its file; library copies
    of train (and, for the refit, valid) are cached beside the clean audio and add training rows."""
    from genretag.training.transfer import run_head

    monkeypatch.setenv("GENRETAG_CACHE_DIR", str(tmp_path / "cache"))
    # float32 weights: on these synthetic tones some features have a tiny spread, and a float16
    # standardisation would move the saved model's output away from the in-memory network's
    cfg = _cfg(dataset, tmp_path / "run", poolings=["penultimate"], heads=[2], augment_copies=[1], refit=True,
               half_weights=False)
    cpath, net, _ = run_head(cfg)
    card = load_card(cpath)
    sel = card.training["selected"]
    assert card.architecture["head"]["n"] == 2 and sel["heads"] == 2 and len(sel["head_epochs"]) == 2
    assert sel["augment_copies"] == 1 and card.training["refit"]["epochs"] == sel["head_epochs"]
    # 6 clean + 6 library-version train tracks, 3 crops each
    assert card.training["n_train_embeddings"] == 2 * 6 * 3
    assert card.training["refit"]["n_embeddings"] == 2 * 12 * 3
    assert len(list((tmp_path / "cache" / "features").glob("*/index.json"))) == 3  # clean, train copy, valid copy
    ln = load_net(cpath, "cpu")
    assert isinstance(ln.net.head, M.GenreHeadBag) and len(ln.net.head.heads) == 2
    z = torch.randn(4, M.pooled_dim(ln.net.pooling))
    with torch.no_grad():
        mean = (ln.net.head.heads[0](z) + ln.net.head.heads[1](z)) / 2
        np.testing.assert_allclose(ln.net.head(z).numpy(), mean.numpy(), atol=1e-5)
    y, _ = sf.read(dataset / "tones" / "tones.00001.wav", dtype="float32")
    with torch.inference_mode():
        want = torch.softmax(net(torch.from_numpy(y[None, :M.SEGMENT_SAMPLES])) / card.temperature, 1).numpy()
    np.testing.assert_allclose(ln.predict(y[None, :M.SEGMENT_SAMPLES]), want, atol=2e-3)


def test_the_experiments_script_uses_only_public_names_of_the_package() -> None:
    """scripts/transfer_experiments.py reads the transfer package through its public names: no
    ``T._name`` and no ``from genretag... import _name``, so the package may move its private helpers."""
    import ast

    tree = ast.parse((Path(__file__).resolve().parents[1] / "scripts" / "transfer_experiments.py").read_text())
    private = [f"{n.value.id}.{n.attr}" for n in ast.walk(tree)
               if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "T"
               and n.attr.startswith("_")]
    private += [f"{n.module}.{a.name}" for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("genretag")
                for a in n.names if a.name.startswith("_")]
    assert private == []
    from genretag.training import transfer as T

    used = {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "T"}
    assert used and used <= set(T.__all__)


def test_the_package_names_its_many_parameters_by_keyword() -> None:
    """Past the first two, the parameters of train_head and the card helpers are keyword-only: a
    positional call (the order that used to work) is refused instead of read in the wrong order."""
    from genretag.training import transfer as T

    x = np.zeros((6, 4), np.float32)
    y = np.arange(6) % 3
    with pytest.raises(TypeError):
        T.train_head(x, y, T.HeadSpec(3, 0, 0.01), T.TransferConfig(head_epochs=5))
    head, acc, nll, epoch = T.train_head(x, y, spec=T.HeadSpec(3, 0, 0.01), cfg=T.TransferConfig(head_epochs=5),
                                         stop_epoch=2)
    assert epoch == 2 and np.isnan(acc) and np.isnan(nll)
    with pytest.raises(TypeError):
        T.transfer_card(T.TransferConfig(), load_net("msd-musicnn", "cpu").card, list(GENRES), "all", 0, False)
