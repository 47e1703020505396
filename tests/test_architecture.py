"""The package's structure: one error root with exit codes, logging instead of hooks."""

from __future__ import annotations

import logging
import shutil

import pytest
from typer.testing import CliRunner

from genretag import errors
from genretag.cli import app

runner = CliRunner()


# --------------------------------------------------------------------------- the error root

def test_every_module_error_is_a_genretag_error_from_its_old_home():
    from genretag.audio.containers import FingerprintError
    from genretag.audio.decode import AudioError
    from genretag.store import index
    from genretag.store.load import ModelError as LoadModelError
    from genretag.store.local import ModelError
    from genretag.tags.fields import TagError
    from genretag.training.dataset import DatasetError

    assert AudioError is errors.AudioError and FingerprintError is errors.FingerprintError
    assert TagError is errors.TagError and DatasetError is errors.DatasetError
    assert ModelError is LoadModelError is errors.ModelError
    assert (index.HubError, index.OfflineError, index.ChecksumError) == (
        errors.HubError, errors.OfflineError, errors.ChecksumError)
    for cls in (AudioError, FingerprintError, TagError, DatasetError, ModelError):
        assert issubclass(cls, errors.GenretagError)
    assert issubclass(errors.OfflineError, errors.HubError) and issubclass(errors.ChecksumError, errors.HubError)
    assert issubclass(errors.HubError, errors.ModelError)


def test_exit_code_defaults_and_overrides():
    assert errors.AudioError("x").exit_code == 1
    assert errors.DatasetError("x").exit_code == 2
    e = errors.HubError("refused", 2)
    assert e.exit_code == e.code == 2 and str(e) == "refused"
    assert errors.ChecksumError("bad").exit_code == 1


def test_one_line():
    assert errors.one_line(ValueError("first\nsecond\nthird")) == "first"
    assert errors.one_line(KeyError()) == "KeyError"
    assert errors.one_line(RuntimeError("  \n  padded line \n")) == "padded line"
    assert len(errors.one_line(RuntimeError("x" * 1000))) == errors.MAX_MESSAGE


def test_model_errors_reach_the_cli_as_one_line_with_their_code(tiny_model_dir, tmp_path):
    unknown = runner.invoke(app, ["classify", str(tmp_path / "x.flac"), "--model", "no-such-model"])
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().splitlines() == [
        "genretag: error: model 'no-such-model' not found (not a card path, not bundled, not in the cache)"]

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir.parent, broken)
    w = broken / tiny_model_dir.with_suffix(".safetensors").name
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    r = runner.invoke(app, ["classify", str(tmp_path / "x.flac"), "--model", str(broken / tiny_model_dir.name)])
    assert r.exit_code == 1  # a model that cannot be loaded is a run-time failure, not a usage error
    assert r.stderr.strip().splitlines() == [
        f"genretag: error: {w}: sha256 does not match the model card (corrupt or tampered)"]


def test_dataset_errors_exit_2_through_the_cli(tmp_path):
    r = runner.invoke(app, ["evaluate", str(tmp_path / "nothing-here"), "--model", "no-such-model"])
    assert r.exit_code == 2 and r.stderr.startswith("genretag: error:") and len(r.stderr.splitlines()) == 1


# --------------------------------------------------------------------------- logging

@pytest.fixture()
def index_with_one_model(tmp_path):
    import json

    idx = tmp_path / "index.json"
    idx.write_text(json.dumps({"format": 1, "models": [{"name": "far-away",
                                                        "url": "http://127.0.0.1:9/far-away.safetensors",
                                                        "sha256": "0" * 64}]}))
    return idx


def test_library_messages_go_through_logging(caplog, monkeypatch, index_with_one_model):
    from genretag.store import index

    monkeypatch.setenv(index.INDEX_ENV, str(index_with_one_model))
    with caplog.at_level(logging.DEBUG, logger="genretag"):
        card = index.ensure_model("far-away")  # port 9 refuses: offline, so the bundled default
    assert card is not None and card.stem == index.default_model_name()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.name for r in warnings] == ["genretag.store.index"]
    assert "using the bundled default" in warnings[0].getMessage()


@pytest.mark.parametrize("flags, shown", [([], {"warning"}), (["-v"], {"warning", "debug"}), (["-q"], set())])
def test_quiet_and_verbose_set_the_log_level(flags, shown, monkeypatch, index_with_one_model, tmp_path):
    from genretag.store import index

    monkeypatch.setenv(index.INDEX_ENV, str(index_with_one_model))
    r = runner.invoke(app, [*flags, "models", "info", "far-away"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*flags, "classify", str(tmp_path / "missing.flac"), "--model", "far-away",
                            "--format", "jsonl"])
    lines = r.stderr.splitlines()
    got = set()
    if any(x.startswith("genretag: warning: model 'far-away' is not cached") for x in lines):
        got.add("warning")
    if any(x.startswith("download error:") for x in lines):
        got.add("debug")
    assert got == shown
