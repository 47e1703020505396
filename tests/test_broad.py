"""The broad genre model: its architecture, its calibrated confidence, and how `tag` and `classify` use them."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_factory import make_file
from typer.testing import CliRunner

from genretag.card import load_card
from genretag.cli import app
from genretag.pipeline.calibration import Calibration
from genretag.pipeline.inference import TrackResult, result_from_probs
from genretag.tags.plan import SKIP_BELOW, WRITE, plan_tag

ROOT = Path(__file__).resolve().parent.parent
BROAD = ROOT / "models" / "broad-musicnn.json"
runner = CliRunner()


def _script():
    spec = importlib.util.spec_from_file_location("broad_model", ROOT / "scripts" / "broad_model.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["broad_model"] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def test_the_bundled_card_names_the_broad_genres_and_reuses_the_default_weights():
    card = load_card(BROAD)
    default = load_card(ROOT / "models" / "gtzan-musicnn.json")
    assert card.labels[:10] == ["Blues", "Classical", "Country", "Disco", "Hip-Hop", "Jazz", "Metal", "Pop",
                                "Reggae", "Rock"]
    assert {"Electronic", "Folk", "R&B", "Punk", "Ambient", "Easy Listening"} <= set(card.labels)
    assert card.weights == default.weights and card.weights_sha256 == default.weights_sha256
    assert 0.5 <= card.extra["min_confidence"] < 1
    assert "CC BY-NC-SA" in card.license and "Emotify" in card.extra["calibration_data"]


def test_the_network_and_the_fitting_script_compute_the_same_probabilities():
    """scripts/broad_model.py fits on a numpy twin of MusicnnBroad.broad_logits: they must agree."""
    from genretag.nets import build_net

    card = load_card(BROAD)
    net = build_net(card)
    arch = card.architecture
    broad = _script().Broad(arch["gtzan_labels"], arch["gtzan_temperature"])
    rng = np.random.default_rng(0)
    tags, gtzan = rng.normal(0, 3, (7, 50)), rng.normal(0, 3, (7, 10))
    bias = np.array([arch["bias"][lab] for lab in card.labels])
    want = broad.track_probs(tags, gtzan, arch["scale"], bias)
    with torch.no_grad():
        logits = net.broad_logits(torch.tensor(tags, dtype=torch.float32), torch.tensor(gtzan, dtype=torch.float32))
    got = torch.softmax(logits, dim=-1).mean(dim=0).numpy()
    assert got.shape == (16,)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_evidence_genres_follow_their_tags():
    """A strong `punk` tag makes Punk the answer; with every evidence tag silent, a GTZAN genre wins."""
    from genretag.nets import build_net
    from genretag.nets.musicnn import MSD_TAGS

    card = load_card(BROAD)
    net = build_net(card)
    gtzan = torch.zeros(1, 10)
    gtzan[0, card.architecture["gtzan_labels"].index("rock")] = 3.0
    tags = torch.full((1, 50), -8.0)
    with torch.no_grad():
        assert card.labels[int(net.broad_logits(tags, gtzan).argmax())] == "Rock"
        tags[0, MSD_TAGS.index("punk")] = 6.0
        assert card.labels[int(net.broad_logits(tags, gtzan).argmax())] == "Punk"


def test_calibration_is_monotone_and_reads_the_card():
    card = load_card(BROAD)
    cal = Calibration.from_card(card)
    assert cal is not None and "Folk" in cal.evidence_labels and "Rock" not in cal.evidence_labels
    ps = [0.1, 0.3, 0.5, 0.7, 0.9, 0.99]
    conf = [cal("Rock", p) for p in ps]
    assert conf == sorted(conf) and all(0 < c < 1 for c in conf)
    assert Calibration.from_card(load_card(ROOT / "models" / "gtzan-musicnn.json")) is None
    card.extra["calibration"] = {"kind": "logistic", "weights": [1.0, math.nan], "intercept": 0.0}
    with pytest.raises(ValueError, match="finite"):
        Calibration.from_card(card)


def test_a_calibrated_result_carries_confidences_and_tag_uses_them_for_every_genre():
    cal = Calibration((1.0, 0.0), -1.0)  # confidence below the probability: sigmoid(logodds(p) - 1)
    labels = ["A", "B", "C", "D"]
    r = result_from_probs("x.mp3", labels, np.array([[0.6, 0.3, 0.05, 0.05]]), "soft", cal)
    assert r.genre == "A" and r.probabilities["A"] == pytest.approx(0.6)
    assert r.confidence == pytest.approx(cal("A", 0.6), abs=1e-6) and r.confidence < 0.6
    assert set(r.confidences) == {"A", "B", "C"} and "confidences" in r.to_json()
    # 0.6 -> 0.356, 0.3 -> 0.136: a bar of 0.3 writes A alone, even with --top-k 2
    plan = plan_tag(r, [], policy="overwrite", min_confidence=0.3, top_k=2)
    assert plan.action == WRITE and plan.new_values == ["A"]
    plan = plan_tag(r, [], policy="overwrite", min_confidence=0.1, top_k=2)
    assert plan.new_values == ["A", "B"]
    assert plan_tag(r, [], policy="overwrite", min_confidence=0.4).action == SKIP_BELOW
    # an uncalibrated result keeps using its probabilities
    plain = TrackResult("y.mp3", "A", 0.6, {"A": 0.6, "B": 0.3})
    assert plan_tag(plain, [], policy="overwrite", min_confidence=0.5).new_values == ["A"]


@pytest.fixture(scope="module")
def strict_card(tmp_path_factory) -> Path:
    """The bundled broad card, copied beside its weights with a `min_confidence` no answer reaches."""
    d = tmp_path_factory.mktemp("strict")
    card = json.loads(BROAD.read_text())
    shutil.copy(ROOT / "models" / card["weights"], d / card["weights"])
    card["name"], card["extra"]["min_confidence"] = "broad-strict", 0.9999
    (d / "broad-strict.json").write_text(json.dumps(card))
    return d / "broad-strict.json"


@pytest.mark.slow
def test_tag_defaults_to_the_models_threshold_and_classify_marks_what_tag_would_skip(tmp_path, strict_card):
    song = make_file(tmp_path / "song.flac", seconds=8.0)
    r = runner.invoke(app, ["tag", str(song), "--model", str(strict_card), "-f", "jsonl", "--no-cache"])
    assert r.exit_code == 0, r.output
    (row,) = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert row["action"] == SKIP_BELOW
    r = runner.invoke(app, ["tag", str(song), "--model", str(strict_card), "-f", "jsonl", "--no-cache",
                            "--min-confidence", "0"])
    (row,) = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert row["action"] == WRITE and row["new"][0] in load_card(BROAD).labels
    r = runner.invoke(app, ["classify", str(song), "--model", str(strict_card), "-f", "jsonl"])
    (row,) = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert row["would_tag"] is False and row["confidence"] == row["confidences"][row["genre"]]
    assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)


def test_a_review_page_from_classify_lines_plans_with_the_calibrated_confidence(tmp_path):
    """`genretag report` on a calibrated model's classify lines: the confidences, not the probabilities,
    meet the threshold, as in `tag` (a raw 0.9 with a calibrated 0.7 is below 0.79)."""
    from genretag.report.rows import read_results, rows_from_results
    from genretag.tags.tagger import Tagger

    song = make_file(tmp_path / "song.flac", seconds=1.0)
    line = {"path": str(song), "genre": "Rock", "confidence": 0.7, "segments": 1, "error": None,
            "probabilities": {"Rock": 0.9, "Punk": 0.1}, "confidences": {"Rock": 0.7, "Punk": 0.05},
            "would_tag": False}
    results = tmp_path / "genres.jsonl"
    results.write_text(json.dumps(line) + "\n")
    (row,) = rows_from_results(read_results(results), Tagger(min_confidence=0.79))
    assert row.action == SKIP_BELOW
    (row,) = rows_from_results(read_results(results), Tagger(min_confidence=0.6))
    assert row.action == WRITE and row.proposed == ["Rock"]
    results.write_text(json.dumps({**line, "confidences": {"Rock": 7}}) + "\n")
    with pytest.raises(Exception, match="confidences"):
        read_results(results)
