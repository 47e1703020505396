"""Training, resuming, splitting, evaluating and tuning on a tiny synthetic GTZAN-layout set."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
import typer
from audio_factory import write_audio
from safetensors.torch import load_file
from typer.testing import CliRunner

from genretag.cli import app
from genretag.training import metrics
from genretag.training.dataset import scan, split
from genretag.training.evaluate import Predictions, report
from genretag.training.train import TrainConfig, train

runner = CliRunner()
SR = 8000
GENRES = ("blues", "classical", "country")  # stand-ins: tone / noise / clicks


def signal(genre: str, k: int, seconds: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(k)
    n = int(SR * seconds)
    t = np.arange(n) / SR
    if genre == "blues":
        return (0.4 * np.sin(2 * np.pi * (150 + 20 * k) * t)).astype(np.float32)
    if genre == "classical":
        return (0.2 * rng.standard_normal(n)).astype(np.float32)
    x = np.zeros(n, dtype=np.float32)
    period = int(SR / (3 + k % 3))
    x[::period] = 0.9
    return np.convolve(x, np.hanning(64), mode="same").astype(np.float32)


@pytest.fixture(scope="module")
def tiny_gtzan(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gtzan")
    for g in GENRES:
        (root / g).mkdir()
        for k in range(9):
            ext = ".wav" if k % 2 else ".flac"
            write_audio(root / g / f"{g}.{k:05d}{ext}", signal(g, k), SR)
    return root


#: What `genretag tune` searches (tune.suggest), as TrainConfig fields.
SEARCHED = {"lr", "weight_decay", "dropout", "label_smoothing", "aug_mixup", "aug_gain_db", "aug_noise_snr_db",
            "aug_specaugment", "segment_seconds", "widths"}


def tiny_config(data: Path, out: Path, **kw) -> TrainConfig:
    base = TrainConfig(data_dir=str(data), out=str(out), name="tiny", split="kfold:3", layers=[1, 1],
                       widths=[8, 16], stem_stride=1, dropout=0.1, sample_rate=SR, segment_seconds=1.0,
                       max_segments=4, n_fft=256, hop_length=128, n_mels=32, epochs=6, steps_per_epoch=6,
                       batch_size=16, lr=3e-3, aug_noise_snr_db=0.0, aug_mixup=0.0, patience=100, jobs=1,
                       seed=1, half_weights=False)
    return replace(base, **kw)


def test_training_lowers_the_loss_and_beats_chance(tiny_gtzan, tmp_path):
    card_path = train(tiny_config(tiny_gtzan, tmp_path / "run"))
    card = json.loads(card_path.read_text())
    hist = json.loads((tmp_path / "run" / "log.json").read_text())
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert card["metrics"]["test"]["accuracy_soft"] > 1 / 3 + 0.2  # 3 genres present
    assert card["metrics"]["test"]["n_tracks"] == 9
    assert 0.05 < card["temperature"] < 20
    for f in ("log.csv", "curves.png", "checkpoint.pt", "config.json"):
        assert (tmp_path / "run" / f).exists()


def test_resume_continues_where_it_stopped(tiny_gtzan, tmp_path):
    full = train(tiny_config(tiny_gtzan, tmp_path / "full", epochs=4))

    class Stop(Exception):
        pass

    def stop_after_2(log):
        if log.epoch == 2:
            raise Stop

    cfg = tiny_config(tiny_gtzan, tmp_path / "cut", epochs=4)
    with pytest.raises(Stop):
        train(cfg, on_epoch=stop_after_2)
    seen = []
    resumed = train(cfg, resume=True, on_epoch=lambda log: seen.append(log.epoch))
    assert seen == [3, 4]
    a, b = load_file(str(full.with_suffix(".safetensors"))), load_file(str(resumed.with_suffix(".safetensors")))
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-5, err_msg=k)


def test_same_seed_same_result(tiny_gtzan, tmp_path):
    a = train(tiny_config(tiny_gtzan, tmp_path / "a", epochs=2))
    b = train(tiny_config(tiny_gtzan, tmp_path / "b", epochs=2))
    assert a.with_suffix(".safetensors").read_bytes() == b.with_suffix(".safetensors").read_bytes()


@pytest.mark.parametrize("how", ["random", "kfold:3", "kfold:5"])
def test_splits_never_leak_a_track(tiny_gtzan, how):
    tracks = scan(tiny_gtzan)
    parts = split(tracks, how, seed=3)
    ids = {k: {t.id for t in v} for k, v in parts.items()}
    assert not ids["train"] & ids["valid"] and not ids["train"] & ids["test"] and not ids["valid"] & ids["test"]
    assert ids["train"] | ids["valid"] | ids["test"] == {t.id for t in tracks}
    for k in ("valid", "test"):
        assert {t.genre for t in parts[k]} == set(GENRES)  # stratified


def test_fault_filtered_lists_do_not_overlap_and_restrict_to_present(tmp_path):
    from genretag.training.dataset import fault_filtered_lists

    lists = fault_filtered_lists()
    assert [len(lists[s]) for s in ("train", "valid", "test")] == [443, 197, 290]
    sets = [set(v) for v in lists.values()]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    (tmp_path / "blues").mkdir()
    test_id = lists["test"][0]
    genre = test_id.split("/")[0]
    (tmp_path / genre).mkdir(exist_ok=True)
    write_audio(tmp_path / f"{test_id}.wav", signal("blues", 0, 1.0), SR)  # FF test
    write_audio(tmp_path / "blues" / "blues.00000.wav", signal("blues", 0, 1.0), SR)  # FF valid
    write_audio(tmp_path / "blues" / "blues.00029.wav", signal("blues", 1, 1.0), SR)  # FF train
    parts = split(scan(tmp_path), "fault-filtered")
    assert [t.id for t in parts["test"]] == [test_id]
    assert [t.id for t in parts["valid"]] == ["blues/blues.00000"]
    assert [t.id for t in parts["train"]] == ["blues/blues.00029"]


def test_metrics_are_exact_on_known_predictions():
    labels = ["a", "b", "c"]
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    conf = metrics.confusion(y_true, y_pred, 3)
    assert conf.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    pc = metrics.per_class(conf, labels)
    assert pc["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8), "support": 3}
    assert pc["b"]["precision"] == 0.5 and pc["b"]["recall"] == 0.5
    assert pc["c"]["precision"] == 0.5 and pc["c"]["recall"] == 1.0 and pc["c"]["f1"] == pytest.approx(2 / 3)
    assert metrics.macro_f1(conf, labels) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # ECE: two bins, confidences 0.9 (right) and 0.6 (wrong, wrong)
    probs = np.array([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.6, 0.4, 0.0]])
    assert metrics.ece(probs, np.array([0, 1, 1])) == pytest.approx((1 / 3) * 0.1 + (2 / 3) * 0.6)


def test_report_votes_and_segments_are_exact():
    from genretag.training.dataset import Track

    labels = ["a", "b"]
    tracks = [Track("a/a.00000", "a", Path("x")), Track("b/b.00000", "b", Path("y"))]
    seg = [np.array([[0.9, 0.1], [0.4, 0.6], [0.4, 0.6]]),  # soft: a (0.567), hard: b (2 of 3)
           np.array([[0.2, 0.8], [0.3, 0.7]])]
    rep = report(Predictions(tracks, labels, seg), "x", "test")
    assert rep["accuracy"] == {"soft": 1.0, "hard": 0.5, "segment": pytest.approx(3 / 5)}
    assert rep["confusion"] == [[1, 0], [0, 1]] and rep["n_tracks"] == 2
    assert set(rep) >= {"split", "subset", "n_tracks", "labels", "accuracy", "macro_f1", "per_class", "confusion", "ece"}


@pytest.mark.slow
def test_cli_train_evaluate_and_tune(tiny_gtzan, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "genretag", *args], capture_output=True, text=True, timeout=600)

    cfg = tiny_config(tiny_gtzan, tmp_path / "cli")
    params = tmp_path / "params.json"
    from dataclasses import asdict

    params.write_text(json.dumps({k: v for k, v in asdict(cfg).items() if k not in ("data_dir", "out")}))
    r = cli("train", str(tiny_gtzan), "--params", str(params), "--epochs", "2", "--out", str(tmp_path / "cli"),
            "--split", "kfold:3")
    assert r.returncode == 0, r.stderr
    card = Path(r.stdout.strip().splitlines()[-1])
    assert json.loads(card.read_text())["training"]["command"].startswith("genretag train ")
    out = tmp_path / "rep.json"
    png = tmp_path / "conf.png"
    r = cli("evaluate", str(tiny_gtzan), "--split", "kfold:3", "--model", str(card), "--model", str(card),
            "--json", str(out), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    assert rep["n_tracks"] == 9 and png.stat().st_size > 1000
    assert sum(map(sum, rep["confusion"])) == 9
    hits = sum(rep["confusion"][i][i] for i in range(len(rep["labels"])))
    assert rep["accuracy"]["soft"] == pytest.approx(hits / 9)  # the figure is the table's diagonal
    r = cli("tune", str(tiny_gtzan), "--trials", "2", "--epochs", "1", "--steps-per-epoch", "2",
            "--split", "kfold:3", "--out", str(tmp_path / "tune"))
    assert r.returncode == 0, r.stderr
    best = json.loads((tmp_path / "tune" / "best_params.json").read_text())
    assert set(best) == SEARCHED  # the trial's parameters, under their TrainConfig names
    assert not set(best) & {"epochs", "patience", "steps_per_epoch", "device", "jobs", "seed", "split", "arch"}
    w = best["widths"][0]
    assert best["widths"] == [w, 2 * w, 4 * w, 8 * w] and w in (16, 24, 32)
    assert 3e-4 <= best["lr"] <= 5e-3 and isinstance(best["aug_specaugment"], bool)
    assert TrainConfig.from_dict(best).epochs == TrainConfig().epochs  # a valid --params file, without a budget
    r = cli("evaluate", str(tmp_path / "nothing-here"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def tiny_card(tiny_gtzan, tmp_path_factory) -> Path:
    """A tiny model trained for one short epoch on `tiny_gtzan` (kfold:3, seed 1)."""
    return train(tiny_config(tiny_gtzan, tmp_path_factory.mktemp("card"), epochs=1, steps_per_epoch=2))


@pytest.fixture()
def tiny_params(tmp_path) -> Path:
    """A --params file of the tiny network and data settings (no budget: epochs, patience come from flags)."""
    cfg = tiny_config(Path("."), Path("."))
    keys = ("layers", "widths", "stem_stride", "sample_rate", "segment_seconds", "max_segments", "n_fft",
            "hop_length", "n_mels", "steps_per_epoch", "batch_size", "aug_noise_snr_db", "aug_mixup", "jobs",
            "seed", "half_weights")
    path = tmp_path / "tiny-params.json"
    path.write_text(json.dumps({k: getattr(cfg, k) for k in keys}))
    return path


def test_evaluate_figures_match_the_card(tiny_card, tiny_gtzan, tmp_path):
    """evaluate on the split the model was measured on (same seed) gives the card's test figures."""
    out = tmp_path / "rep.json"
    r = runner.invoke(app, ["evaluate", str(tiny_gtzan), "--split", "kfold:3", "--seed", "1",
                            "--model", str(tiny_card), "--json", str(out)])
    assert r.exit_code == 0, r.output
    rep, card = json.loads(out.read_text()), json.loads(tiny_card.read_text())
    assert rep["accuracy"]["soft"] == pytest.approx(card["metrics"]["test"]["accuracy_soft"])
    assert rep["macro_f1"] == pytest.approx(card["metrics"]["test"]["macro_f1"])


@pytest.fixture
def trained_configs(tmp_path, monkeypatch) -> list:
    """`genretag train` without the training: the TrainConfig each call would train, in order."""
    import genretag.training.train as training
    import genretag.training.tune  # noqa: F401  (binds the real train at import: not the stand-in below)

    seen = []

    def fake_train(cfg, **kw):
        seen.append(cfg)
        card = tmp_path / "card.json"
        card.write_text(json.dumps({"metrics": {}}))
        return card

    monkeypatch.setattr(training, "train", fake_train)
    return seen


def test_train_params_take_only_the_file_keys_and_flags_the_budget(tiny_gtzan, tmp_path, trained_configs):
    """`train --params best_params.json`: the searched values from the file, epochs/patience from train's own
    defaults or flags (a file of tune's choices never carries tune's short budget)."""
    from genretag.training.tune import searched

    seen = trained_configs

    class Trial:  # what searched() reads of an Optuna trial
        params = {"width": 16, "lr": 1e-3, "weight_decay": 0.05, "dropout": 0.2, "label_smoothing": 0.0,
                  "aug_mixup": 0.1, "aug_gain_db": 3.0, "aug_noise_snr_db": 20.0, "aug_specaugment": False,
                  "segment_seconds": 2.0}

        def __getattr__(self, name):  # suggest_float/suggest_categorical: the stored choice
            return lambda key, *a, **k: self.params[key]

    tune_base = TrainConfig(epochs=1, patience=3, steps_per_epoch=2, device="cpu", jobs=1)
    best = searched(Trial(), tune_base)
    assert set(best) == SEARCHED and best["widths"] == [16, 32, 64, 128]
    assert "widths" not in searched(Trial(), replace(tune_base, arch="cnn1d", widths=[]))
    params = tmp_path / "best_params.json"
    params.write_text(json.dumps(best))
    r = runner.invoke(app, ["train", str(tiny_gtzan), "--params", str(params), "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    cfg = seen[-1]
    assert (cfg.epochs, cfg.patience, cfg.steps_per_epoch, cfg.device, cfg.jobs) == (30, 12, 0, "auto", 2)
    assert (cfg.lr, cfg.dropout, cfg.widths, cfg.aug_specaugment) == (1e-3, 0.2, [16, 32, 64, 128], False)
    r = runner.invoke(app, ["train", str(tiny_gtzan), "--params", str(params), "--epochs", "7", "--lr", "0.01"])
    assert r.exit_code == 0, r.output
    assert (seen[-1].epochs, seen[-1].lr, seen[-1].dropout) == (7, 0.01, 0.2)  # flags given win


@pytest.mark.parametrize("text, key", [
    ("[1, 2]", "JSON object"),
    ('{"epochs": "ten"}', "epochs"),
    ('{"bogus_field": 1}', "bogus_field"),
    ('{"widths": [8, "x"]}', "widths"),
    ('{"aug_specaugment": 1}', "aug_specaugment"),
    ('{"label_smoothing": 5}', "label_smoothing=5"),
    ('{"segment_seconds": 100}', "segment_seconds=100"),
    ('{"weight_decay": -1}', "weight_decay=-1"),
    ('{"jobs": 0}', "jobs=0"),
])
def test_train_params_with_a_bad_key_or_value_is_a_usage_error(tiny_gtzan, tmp_path, text, key):
    params = tmp_path / "p.json"
    params.write_text(text)
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(tiny_gtzan), "--params", str(params), "--out", str(run)])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"genretag: error: --params {params}: ") and key in lines[0]
    assert not run.exists()


def test_config_from_dict_checks_keys_and_types_for_both_configs():
    from genretag.errors import ConfigError
    from genretag.training.transfer import TransferConfig

    cfg = TrainConfig.from_dict({"lr": 1, "widths": [8, 16], "aug_pitch": [-2, 2], "balance": False})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.aug_pitch == [-2.0, 2.0] and cfg.balance is False
    assert TransferConfig.from_dict({"poolings": ["all"], "head_lr": 0.01}).poolings == ["all"]
    for cls, bad, key in ((TransferConfig, {"head_lrr": 0.01}, "head_lrr"), (TransferConfig, {"epochs": 2.5}, "epochs"),
                          (TrainConfig, {"lr": None}, "lr"), (TrainConfig, {"epochs": True}, "epochs")):
        with pytest.raises(ConfigError, match=key) as e:
            cls.from_dict(bad)
        assert e.value.exit_code == 2


def test_evaluate_output_paths_are_checked_before_the_work(tiny_card, tiny_gtzan, tmp_path):
    """A --json/--plot folder that is not there is a usage error before any model is loaded (a missing model
    would be another error); a write that fails at the end is exit 1 after the table is printed."""
    for flag in ("--json", "--plot"):
        target = tmp_path / "no-such-dir" / "x.out"
        r = runner.invoke(app, ["evaluate", str(tiny_gtzan), "--model", "no-such-model", flag, str(target)])
        assert r.exit_code == 2
        assert r.stderr.strip().splitlines() == [
            f"genretag: error: {flag} {target}: folder {target.parent} does not exist"]
    r = runner.invoke(app, ["evaluate", str(tiny_gtzan), "--model", "no-such-model", "--json", str(tmp_path)])
    assert r.exit_code == 2 and r.stderr.strip() == f"genretag: error: --json {tmp_path}: is a folder"
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full to fill")
    r = runner.invoke(app, ["evaluate", str(tiny_gtzan), "--split", "kfold:3", "--seed", "1",
                            "--model", str(tiny_card), "--json", "/dev/full"])
    assert r.exit_code == 1
    assert "kfold:3/test: 9 tracks" in r.stdout and "recall" in r.stdout  # the results came first
    assert r.stderr.strip().splitlines()[-1] == "genretag: error: cannot write /dev/full: No space left on device"
    assert "Traceback" not in r.stderr


def test_tune_on_a_folder_not_in_gtzan_layout_fails_like_train_and_makes_no_study(tmp_path):
    bad = tmp_path / "notgtzan"
    (bad / "stuff").mkdir(parents=True)
    (bad / "stuff" / "song.wav").write_bytes(b"RIFF")
    t = runner.invoke(app, ["train", str(bad), "--out", str(tmp_path / "run")])
    r = runner.invoke(app, ["tune", str(bad), "--trials", "1", "--epochs", "1", "--out", str(tmp_path / "tune")])
    assert r.exit_code == t.exit_code == 2
    assert r.stderr.strip().splitlines() == t.stderr.strip().splitlines() == [
        f"genretag: error: {bad}: no tracks in GTZAN layout (<genre>/<genre>.NNNNN.<ext>)"]
    assert not (tmp_path / "tune").exists()  # no study.sqlite, no trial folder
    assert not (tmp_path / "run").exists()  # nor an empty run folder from train


@pytest.mark.slow
def test_a_failing_trial_stops_tune_with_one_line_and_spends_no_trial(tiny_gtzan, tmp_path, monkeypatch, capfd):
    """An error inside a trial ends the study with a one-line GenretagError (no Optuna traceback on
    stderr); the FAILED trials do not count toward --trials, so the resumed study still runs 2 trials."""
    import optuna

    import genretag.training.tune as tuning
    from genretag.errors import AudioError, GenretagError

    real_train = tuning.train
    base = tiny_config(tiny_gtzan, tmp_path, layers=[1, 1, 1, 1], epochs=1, steps_per_epoch=2, patience=3)
    storage, out = f"sqlite:///{tmp_path / 'study.sqlite'}", tmp_path / "tune"

    def states() -> list[str]:
        return [t.state.name for t in optuna.load_study(study_name="genretag", storage=storage).trials]

    def fails_with(exc: Exception):
        def broken_train(cfg, **kw):
            raise exc
        return broken_train

    monkeypatch.setattr(tuning, "train", fails_with(AudioError("blues/blues.00003.wav: cannot decode")))
    with pytest.raises(AudioError) as e:  # a genretag error keeps its class and exit code
        tuning.tune(base, 2, storage=storage, out=out)
    assert str(e.value) == "trial 0: blues/blues.00003.wav: cannot decode" and e.value.exit_code == 1
    assert states() == ["FAIL"]  # the study stopped at the first failure
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Trial 0" not in err, err  # nothing from Optuna's logger

    monkeypatch.setattr(tuning, "train", fails_with(ValueError("no training tracks in this split")))
    with pytest.raises(GenretagError) as e:  # what `genretag train` makes a usage error
        tuning.tune(base, 2, storage=storage, out=out)
    assert str(e.value) == "trial 1 failed: no training tracks in this split" and e.value.exit_code == 2
    assert isinstance(e.value.__cause__, ValueError)

    monkeypatch.setattr(tuning, "train", fails_with(RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")))
    r = runner.invoke(app, ["tune", str(tiny_gtzan), "--split", "kfold:3", "--trials", "2", "--out", str(out),
                            "--storage", storage])
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == ["genretag: error: trial 2 failed: CUDA out of memory."]
    assert states() == ["FAIL"] * 3

    monkeypatch.setattr(tuning, "train", real_train)
    res = tuning.tune(base, 2, storage=storage, out=out)
    assert len(states()) == 5 and set(states()[3:]) <= {"COMPLETE", "PRUNED"}  # two trials on top of the failed
    assert res["trials"] == 5 and json.loads((out / "best_params.json").read_text()).keys() == SEARCHED
    assert "Traceback" not in capfd.readouterr().err


def test_resume_without_a_checkpoint_says_so_and_trains(tiny_gtzan, tiny_params, tmp_path):
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(tiny_gtzan), "--params", str(tiny_params), "--split", "kfold:3",
                            "--epochs", "1", "--resume", "--out", str(run), "--name", "tiny"])
    assert r.exit_code == 0, r.output
    assert f"no checkpoint in {run}: starting from scratch" in r.stderr.splitlines()
    assert (run / "tiny.json").exists() and (run / "checkpoint.pt").exists()


@pytest.mark.parametrize("flag, value", [
    ("--lr", "0"), ("--lr", "-1"), ("--dropout", "5"), ("--dropout", "-0.1"),
    ("--label-smoothing", "1"), ("--label-smoothing", "-0.1"), ("--weight-decay", "-0.01"),
    ("--segment-seconds", "0"), ("--segment-seconds", "-3"), ("--segment-seconds", "31"), ("--jobs", "100000"),
])
@pytest.mark.slow
def test_out_of_range_hyper_parameters_are_usage_errors(tiny_gtzan, tmp_path, flag, value):
    run = tmp_path / "run"
    args = ["train", str(tiny_gtzan), f"{flag}={value}", "--out", str(run)]
    r = subprocess.run([sys.executable, "-m", "genretag", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"genretag: error: Invalid value for '{flag}'"), r.stderr
    assert not run.exists()


def test_tune_jobs_beyond_the_bound_is_a_usage_error(tiny_gtzan, tmp_path):
    out = tmp_path / "tune"
    r = runner.invoke(app, ["tune", str(tiny_gtzan), "--jobs", "100000", "--out", str(out)])
    assert r.exit_code == 2 and "--jobs" in r.stderr and "256" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_hyper_parameters_at_their_bounds_are_taken(tiny_gtzan, tmp_path, trained_configs):
    """The ends of each range are values, not errors: they reach the TrainConfig as given."""
    seen = trained_configs
    for args, field, value in ((["--label-smoothing", "0.99"], "label_smoothing", 0.99),
                               (["--weight-decay", "0"], "weight_decay", 0.0),
                               (["--segment-seconds", "30"], "segment_seconds", 30.0),
                               (["--segment-seconds", "0.05"], "segment_seconds", 0.05),
                               (["--jobs", "256"], "jobs", 256)):
        r = runner.invoke(app, ["train", str(tiny_gtzan), *args, "--out", str(tmp_path / "run")])
        assert r.exit_code == 0, r.output
        assert getattr(seen[-1], field) == value


def test_training_on_valid_records_no_valid_figures(tiny_gtzan, tmp_path):
    """With valid trained on there is nothing held out: no valid accuracy or loss anywhere (not the epoch)."""
    import csv

    from genretag.cli.train import epoch_line
    from genretag.training.train import EpochLog

    run = tmp_path / "tv"
    card = json.loads(train(tiny_config(tiny_gtzan, run, epochs=2, train_subsets=["train", "valid"])).read_text())
    hist = json.loads((run / "log.json").read_text())
    assert [h["valid_acc"] for h in hist] == [None, None] and [h["valid_loss"] for h in hist] == [None, None]
    with open(run / "log.csv", newline="") as f:
        assert [(r["valid_acc"], r["valid_loss"]) for r in csv.DictReader(f)] == [("", ""), ("", "")]
    assert card["training"]["best_valid_accuracy"] is None and "valid" not in card["metrics"]
    assert card["training"]["epochs_run"] == 2 and (run / "curves.png").exists()
    line = epoch_line(EpochLog(**hist[-1]))
    assert "trained on" in line and "valid acc" not in line and "valid nll" not in line


@pytest.mark.slow
def test_card_records_the_command_line_with_a_global_option_first(tiny_gtzan, tmp_path):
    """`genretag -v train ...`: the card records the whole command line (the library never reads sys.argv)."""
    import shlex

    params = tmp_path / "params.json"
    params.write_text(json.dumps({"steps_per_epoch": 2, "layers": [1, 1], "widths": [8, 16], "stem_stride": 1,
                                  "sample_rate": SR, "segment_seconds": 1.0, "max_segments": 2, "n_fft": 256,
                                  "hop_length": 128, "n_mels": 32, "batch_size": 8, "jobs": 1,
                                  "half_weights": False}))
    args = ["-v", "train", str(tiny_gtzan), "--params", str(params), "--epochs", "1", "--split", "kfold:3",
            "--train-on", "train+valid", "--out", str(tmp_path / "run"), "--name", "it's"]
    r = subprocess.run([sys.executable, "-m", "genretag", *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    card = json.loads(Path(r.stdout.strip().splitlines()[-1]).read_text())
    assert card["training"]["command"] == shlex.join(["genretag", *args])
    assert shlex.split(card["training"]["command"])[1:] == args
    epoch = [ln for ln in r.stderr.splitlines() if ln.startswith("epoch ")]
    assert len(epoch) == 1 and "trained on" in epoch[0] and "valid acc" not in epoch[0]


def test_options_named_after_config_fields_fill_them():
    """cli.train.config_from_flags: an option sets the field of its name when given, or when the base
    (--params) does not set it; lists are parsed from text; a left-out option (None) keeps the field."""
    from genretag.cli.train import config_from_flags

    seen = {}
    app = typer.Typer()

    @app.command()
    def cmd(ctx: typer.Context,
            aug_mixup: Annotated[float, typer.Option("--mixup")] = 0.2,
            aug_specaugment: Annotated[bool, typer.Option(" /--no-specaugment")] = True,
            aug_pitch: Annotated[str | None, typer.Option("--pitch")] = None,
            train_subsets: Annotated[str, typer.Option("--train-on")] = "train",
            lr: float = 2e-3, seed: int = 0, out: Path = Path("runs/x"), unrelated: int = 7) -> None:
        seen["cfg"] = config_from_flags(TrainConfig, ctx, {"lr": 0.5, "aug_mixup": 0.3, "widths": [4, 8]})

    runner = CliRunner()
    r = runner.invoke(app, ["--mixup", "0.1", "--no-specaugment", "--pitch=-2,2", "--train-on", "train+valid"])
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert (cfg.aug_mixup, cfg.aug_specaugment, cfg.aug_pitch, cfg.train_subsets) == (0.1, False, [-2.0, 2.0],
                                                                                      ["train", "valid"])
    assert cfg.lr == 0.5 and cfg.widths == [4, 8]  # the base wins over a default
    assert cfg.seed == 0 and cfg.out == "runs/x" and cfg.aug_stretch == []  # defaults fill the rest
    assert runner.invoke(app, ["--pitch", "x"]).exit_code != 0  # a bad number is an error, not a field


def test_train_flags_and_params_files_share_one_range_per_setting():
    """The typer bounds of train's flags are the ranges a --params file is checked against."""
    from genretag.training.limits import RANGES
    from genretag.training.train import TrainConfig

    command = typer.main.get_command(app).commands["train"]
    for name, (lo, hi) in RANGES.items():
        option = next(p for p in command.params if p.name == name)
        assert (option.min, option.max) == (lo, hi), name
        field = TrainConfig.__dataclass_fields__[name]
        assert field.metadata["range"] == (lo, hi)
        assert (lo is None or field.default >= lo) and (hi is None or field.default <= hi)
