"""Model downloads (genretag.store.index, `genretag models ...`) against a local HTTP server.

Nothing here touches the network beyond 127.0.0.1: the server is started in the
test process (http.server in a thread, port 0).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from genretag.card import GTZAN_GENRES, AudioParams, MelParams, ModelCard
from genretag.cli import app
from genretag.cli.app import setup_logging, state
from genretag.errors import ModelError
from genretag.store import index as hub
from genretag.store.resolve import find_card
from genretag.store.weights import sha256_file

ARCH = {"name": "resnet", "variant": "tiny", "layers": [1, 1], "widths": [8, 16], "dropout": 0.0,
        "stem_stride": 2}


def tiny_card(name: str) -> ModelCard:
    return ModelCard(name=name, labels=list(GTZAN_GENRES), architecture=dict(ARCH),
                     audio=AudioParams(sample_rate=16000, segment_seconds=1.0, max_segments=3),
                     mel=MelParams(n_fft=512, hop_length=256, n_mels=32),
                     description=f"tiny test model {name}", metrics={"accuracy": 0.625})


@pytest.fixture(scope="session")
def model_files(tmp_path_factory) -> Path:
    """A folder with tiny models `tiny` (to bundle) and `remote` (to serve)."""
    import torch

    from genretag.nets import build_net
    from genretag.store.weights import save_model

    out = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    for name in ("tiny", "remote"):
        card = tiny_card(name)
        save_model(build_net(card), card, out)
    return out


class ModelServer:
    """Serves files from `root`; supports `Range: bytes=N-`; records every request.

    `cut_after = n` makes the next weights response stop after n bytes and drop
    the connection (once; `cuts = k` for the next k responses).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_after: int | None = None
        self.cuts = 1
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                f = server.root / self.path.lstrip("/")
                if not f.is_file():
                    self.send_error(404)
                    return
                data = f.read_bytes()
                start = 0
                if rng:
                    m = re.fullmatch(r"bytes=(\d+)-", rng)
                    start = int(m.group(1)) if m else 0
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                cut = server.cut_after if f.suffix == ".safetensors" else None
                if cut is not None:
                    server.cuts -= 1
                    if server.cuts <= 0:
                        server.cut_after, server.cuts = None, 1
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{path}"

    def weight_requests(self) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if r[0].endswith(".safetensors")]

    def __enter__(self) -> "ModelServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_index(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"format": 1, "models": entries}), encoding="utf-8")
    return path


def remote_entry(model_files: Path, **over) -> dict:
    w = model_files / "remote.safetensors"
    e = {"name": "remote", "url": "remote.safetensors", "card_url": "remote.json",
         "sha256": sha256_file(w), "size": w.stat().st_size, "description": "served by the test"}
    e.update(over)
    return e


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch, model_files):
    """Private cache, a bundled dir holding `tiny` (the default), no proxies, no user index."""
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    for ext in (".json", ".safetensors"):
        shutil.copy(model_files / f"tiny{ext}", bundled / f"tiny{ext}")
    (bundled / "DEFAULT").write_text("tiny\n")
    monkeypatch.setenv("GENRETAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GENRETAG_BUNDLED_MODELS", str(bundled))
    monkeypatch.delenv(hub.INDEX_ENV, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "*")
    state.verbose = 0
    setup_logging(quiet=False, verbose=0)
    yield
    state.verbose = 0
    setup_logging(quiet=False, verbose=0)


@pytest.fixture
def served(tmp_path, model_files):
    """A server over a copy of `remote`, with an index.json of its own."""
    root = tmp_path / "www"
    root.mkdir()
    for ext in (".json", ".safetensors"):
        shutil.copy(model_files / f"remote{ext}", root / f"remote{ext}")
    write_index(root / "index.json", [remote_entry(model_files)])
    with ModelServer(root) as srv:
        yield srv


def cache() -> Path:
    from genretag.paths import models_cache_dir

    return models_cache_dir()


runner = CliRunner()


def run(*args: str, **kw):
    return runner.invoke(app, list(args), **kw)


# --------------------------------------------------------------------------- download

def test_download_installs_verified_model(served, model_files):
    r = run("models", "download", "remote", "--index", served.url("index.json"))
    assert r.exit_code == 0, r.output
    assert "installed model 'remote'" in r.stderr
    assert (cache() / "remote.safetensors").read_bytes() == (model_files / "remote.safetensors").read_bytes()
    assert not (cache() / "remote.safetensors.part").exists()
    card = json.loads((cache() / "remote.json").read_text())
    assert card["weights_sha256"] == sha256_file(cache() / "remote.safetensors")
    assert [p for p, _ in served.requests] == ["/index.json", "/remote.json", "/remote.safetensors"]

    from genretag.model import load_net

    net = load_net("remote", "cpu")
    assert net.card.name == "remote" and net.path == cache() / "remote.json"


def test_cache_hit_makes_no_second_request(served, monkeypatch):
    monkeypatch.setenv(hub.INDEX_ENV, served.url("index.json"))
    first = hub.ensure_model("remote")
    assert first == cache() / "remote.json"
    n = len(served.requests)
    assert hub.ensure_model("remote") == first
    assert len(served.requests) == n  # not even the index
    r = run("models", "download", "remote")
    assert r.exit_code == 0, r.output
    assert "already in the cache" in r.stderr
    assert len(served.weight_requests()) == 1


def test_resume_after_cut_connection(served, model_files):
    served.cut_after = 1000
    r = run("models", "download", "remote", "--index", served.url("index.json"))
    assert r.exit_code == 0, r.output
    reqs = served.weight_requests()
    assert len(reqs) == 2
    assert reqs[0][1] is None and reqs[1][1] == "bytes=1000-"
    assert sha256_file(cache() / "remote.safetensors") == sha256_file(model_files / "remote.safetensors")


def test_interrupted_every_time_keeps_the_partial_file(served, model_files):
    served.cut_after, served.cuts = 700, hub.ATTEMPTS
    r = run("models", "download", "remote", "--index", served.url("index.json"))
    assert r.exit_code == 1
    assert "run the command again to resume" in r.stderr
    assert (cache() / "remote.safetensors.part").stat().st_size == 700 * hub.ATTEMPTS
    assert not (cache() / "remote.json").exists()
    r = run("models", "download", "remote", "--index", served.url("index.json"))
    assert r.exit_code == 0, r.output
    assert served.weight_requests()[-1] == ("/remote.safetensors", f"bytes={700 * hub.ATTEMPTS}-")
    assert sha256_file(cache() / "remote.safetensors") == sha256_file(model_files / "remote.safetensors")


def test_resume_partial_file_from_an_earlier_run(served, model_files):
    data = (model_files / "remote.safetensors").read_bytes()
    cache().mkdir(parents=True)
    (cache() / "remote.safetensors.part").write_bytes(data[:3000])
    r = run("models", "download", "remote", "--index", served.url("index.json"))
    assert r.exit_code == 0, r.output
    assert served.weight_requests() == [("/remote.safetensors", "bytes=3000-")]
    assert (cache() / "remote.safetensors").read_bytes() == data


def test_stale_partial_file_is_restarted_once(served, model_files):
    cache().mkdir(parents=True)
    (cache() / "remote.safetensors.part").write_bytes(b"\0" * 3000)  # from some other file
    r = run("models", "download", "remote", "--index", served.url("index.json"))
    assert r.exit_code == 0, r.output
    assert served.weight_requests() == [("/remote.safetensors", "bytes=3000-"), ("/remote.safetensors", None)]
    assert sha256_file(cache() / "remote.safetensors") == sha256_file(model_files / "remote.safetensors")


def test_checksum_mismatch_is_refused_and_deleted(served):
    w = served.root / "remote.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF  # corrupt the tensor data, keep the header valid
    w.write_bytes(bytes(data))
    r = run("models", "download", "remote", "--index", served.url("index.json"))
    assert r.exit_code == 1
    assert "sha256 mismatch" in r.stderr and "deleted" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2  # the "downloading" note and one error line
    assert r.stderr.strip().splitlines()[-1].startswith("genretag: error:")
    assert sorted(p.name for p in cache().iterdir() if not p.name.startswith(".")) == []


def test_sha256_option_must_agree(served):
    r = run("models", "download", served.url("remote.safetensors"), "--sha256", "0" * 64)
    assert r.exit_code == 1
    assert "disagree" in r.stderr
    assert served.weight_requests() == []
    r = run("models", "download", served.url("remote.safetensors"), "--sha256", "xyz")
    assert r.exit_code == 2 and "64 hex digits" in r.stderr


def test_download_by_url(served):
    r = run("models", "download", served.url("remote.json"))
    assert r.exit_code == 0, r.output
    assert (cache() / "remote.json").exists() and (cache() / "remote.safetensors").exists()


def test_refuses_other_file_types_by_name(served):
    (served.root / "remote.pt").write_bytes(b"\x80\x04K\x01.")
    r = run("models", "download", served.url("remote.pt"))
    assert r.exit_code == 2
    assert "only .safetensors weights and .json model cards" in r.stderr
    assert served.requests == []


def test_refuses_other_file_types_by_content(served, tmp_path):
    # A pickle named .safetensors, with a card and index that vouch for its hash.
    evil = b"\x80\x04\x95" + b"cos\nsystem\n(S'echo pwned'\ntR." * 10
    (served.root / "evil.safetensors").write_bytes(evil)
    card = json.loads((served.root / "remote.json").read_text())
    card.update(name="evil", weights="evil.safetensors", weights_sha256=hashlib.sha256(evil).hexdigest())
    (served.root / "evil.json").write_text(json.dumps(card))
    r = run("models", "download", served.url("evil.safetensors"))
    assert r.exit_code == 1
    assert "not a safetensors file" in r.stderr
    assert not any(cache().glob("evil*"))


def test_check_safetensors(tmp_path, model_files):
    hub.check_safetensors(model_files / "tiny.safetensors")
    bad = tmp_path / "x.safetensors"
    for content in (b"", b"1234", struct.pack("<Q", 10) + b"not json!!", struct.pack("<Q", 1 << 40) + b"{}",
                    struct.pack("<Q", 2) + b"[]"):
        bad.write_bytes(content)
        with pytest.raises(hub.HubError):
            hub.check_safetensors(bad)


# --------------------------------------------------------------------------- first use / offline

def notes(caplog) -> list[str]:
    """What genretag logged (INFO and up), one line each."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("genretag") and r.levelno >= logging.INFO]


def test_first_use_downloads(served, monkeypatch, caplog):
    monkeypatch.setenv(hub.INDEX_ENV, served.url("index.json"))
    with caplog.at_level(logging.INFO, logger="genretag"):
        assert hub.ensure_model("remote") == cache() / "remote.json"
    assert any("downloading model 'remote'" in m for m in notes(caplog))
    assert hub.ensure_model("not-in-index") is None


def test_offline_falls_back_to_bundled_default(tmp_path, model_files, monkeypatch, caplog):
    port = closed_port()
    index = write_index(tmp_path / "index.json",
                        [remote_entry(model_files, url=f"http://127.0.0.1:{port}/remote.safetensors",
                                      card_url=f"http://127.0.0.1:{port}/remote.json")])
    monkeypatch.setenv(hub.INDEX_ENV, str(index))
    with caplog.at_level(logging.INFO, logger="genretag"):
        got = find_card("remote")
    assert got is not None and got.name == "tiny.json" and got.parent.name == "bundled"
    err = notes(caplog)
    assert len(err) == 2  # "downloading ..." then the one-line fallback warning
    assert "using the bundled default 'tiny'" in err[-1] and "'remote'" in err[-1]
    assert not (cache() / "remote.json").exists()


def test_offline_index_url_falls_back(monkeypatch, caplog):
    monkeypatch.setenv(hub.INDEX_ENV, f"http://127.0.0.1:{closed_port()}/index.json")
    with caplog.at_level(logging.INFO, logger="genretag"):
        got = find_card("remote")
    assert got is not None and got.name == "tiny.json"
    assert "using the bundled default 'tiny'" in notes(caplog)[-1]


def test_checksum_mismatch_is_not_papered_over_by_fallback(served, monkeypatch):
    w = served.root / "remote.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + b"\x00")
    monkeypatch.setenv(hub.INDEX_ENV, served.url("index.json"))
    with pytest.raises(hub.ChecksumError):
        find_card("remote")


def test_a_missing_bundled_default_is_a_broken_install_not_a_name(tmp_path, monkeypatch):
    bundled = Path(tmp_path / "bundled")
    for f in bundled.glob("tiny.*"):
        f.unlink()  # DEFAULT still names "tiny"
    with pytest.raises(ModelError) as e:
        find_card(None)
    assert e.value.exit_code == 1
    assert str(e.value) == f"the default model 'tiny' is missing from {bundled} (reinstall genretag, or pass --model)"
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF")
    r = runner.invoke(app, ["classify", str(wav)])
    assert r.exit_code == 1 and r.stderr.strip().splitlines() == [f"genretag: error: {e.value}"]


def test_find_card_downloads_and_falls_back(served, monkeypatch, tmp_path, model_files):
    monkeypatch.setenv(hub.INDEX_ENV, served.url("index.json"))
    assert find_card("remote") == cache() / "remote.json"
    monkeypatch.setenv(hub.INDEX_ENV, f"http://127.0.0.1:{closed_port()}/index.json")
    assert find_card("other").name == "tiny.json"


# --------------------------------------------------------------------------- list / info / remove

def test_list_shows_bundled_cached_and_default(served):
    assert run("models", "download", "remote", "--index", served.url("index.json")).exit_code == 0
    r = run("models", "list", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["tiny"]["where"] == "bundled" and rows["tiny"]["default"] is True
    assert rows["remote"]["where"] == "cache" and rows["remote"]["default"] is False
    assert rows["remote"]["accuracy"] == 0.625 and len(rows["remote"]["labels"]) == 10
    assert rows["remote"]["size"] == (cache() / "remote.safetensors").stat().st_size
    table = run("models", "list").stdout
    assert "tiny" in table and "bundled" in table and "62.5%" in table and "*" in table


def test_list_available_from_index(served):
    r = run("models", "list", "--available", "--json", "--index", served.url("index.json"))
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["remote"]["where"] == "available"


def test_info_readable_and_json():
    r = run("models", "info", "tiny")
    assert r.exit_code == 0, r.output
    assert "blues" in r.stdout and "62.5%" in r.stdout and "bundled" in r.stdout
    r = run("models", "info", "tiny", "--json")
    from genretag.paths import bundled_models_dir

    assert r.stdout == (bundled_models_dir() / "tiny.json").read_text()
    r = run("models", "info", "nope")
    assert r.exit_code == 2 and "not found" in r.stderr


def test_remove_cache_only(served):
    assert run("models", "download", "remote", "--index", served.url("index.json")).exit_code == 0
    r = run("models", "remove", "remote")
    assert r.exit_code == 0, r.output
    assert not any(cache().glob("remote*"))
    r = run("models", "remove", "tiny")
    assert r.exit_code == 2 and "bundled" in r.stderr
    r = run("models", "remove", "remote")
    assert r.exit_code == 2 and "not in the cache" in r.stderr
    r = run("models", "remove", "../etc/passwd")
    assert r.exit_code == 2 and "not a valid model name" in r.stderr


def test_shipped_index_is_valid_and_has_no_fake_urls():
    entries = hub.load_index(hub.shipped_index_path())
    repo_models = Path(__file__).resolve().parent.parent / "models"
    for e in entries.values():
        # Only real entries: models that ship with genretag (url null), or URLs with a sha256 to check.
        assert e.url is None or (e.sha256 and e.url.startswith("https://")), e.name
        if e.url is None and repo_models.is_dir():
            assert (repo_models / f"{e.name}.json").exists(), f"index lists {e.name} as bundled, but it is not"


def test_info_values_are_not_rich_markup():
    """Card values such as pooling=[timbral, temporal] print as they are (rich would eat "[timbral ...]")."""
    from rich.console import Console

    from genretag.cli.models import _fmt_value, _kv_table

    value = _fmt_value({"pooling": ["timbral", "temporal"], "head": {"hidden": 256}})
    console = Console(width=200, record=True, color_system=None)
    console.print(_kv_table([("architecture", value)]))
    assert "pooling=[timbral, temporal], head={hidden=256}" in console.export_text()


def test_card_metrics_are_typed_and_written_back_as_read():
    """Every bundled card's metrics parse (subsets typed) and serialise to the same JSON; the headline is
    the test subset's soft accuracy, else a stated accuracy, else a tagger's first stated figure."""
    from genretag.card import load_card
    from genretag.card.metrics import CardMetrics, SubsetMetrics

    for path in sorted((Path(__file__).resolve().parents[1] / "models").glob("*.json")):
        raw = json.loads(path.read_text())["metrics"]
        card = load_card(path)
        assert card.to_dict()["metrics"] == raw, path.name
        if "test" in raw:
            assert isinstance(card.metrics["test"], SubsetMetrics)
            assert card.metrics.headline() == ("accuracy", raw["test"]["accuracy_soft"])
        else:
            assert card.metrics.headline() == ("roc_auc", raw["roc_auc"]), path.name
    odd = {"valid": {"acc": 0.9}, "notes": "by hand", "accuracy": 0.625}
    m = CardMetrics.from_dict(odd)
    assert m.to_dict() == odd and m.subset("valid") is None and m.headline() == ("accuracy", 0.625)
    assert CardMetrics.from_dict({"valid": {"acc": 0.9}}).headline() is None
