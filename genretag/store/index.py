"""Downloading models into the user cache: the model index, resumable verified downloads.

A model is two files: a JSON card and its safetensors weights. The index (a
JSON file shipped at ``genretag/data/model_index.json``, overridable with
``--index URL|FILE`` or the ``GENRETAG_MODEL_INDEX`` environment variable)
says where each model's files live::

    {"format": 1, "models": [
      {"name": "resnet18-gtzan", "url": "https://.../resnet18-gtzan.safetensors",
       "card_url": "https://.../resnet18-gtzan.json",   # or "card": {...inline...}
       "sha256": "<hex of the weights>", "size": 44730000, "description": "..."}]}

``url: null`` marks a model that ships with genretag (nothing to download).
Relative URLs are resolved against the index's own location.

Downloads are streamed with urllib into ``<name>.safetensors.part`` in
``models_cache_dir()``, resumed with an HTTP Range request when a previous
attempt was cut, sha256-checked, checked to really be safetensors (8-byte
little-endian header length + JSON header), and only then moved into place
with ``os.replace``; the card is written last, so a model is either fully
installed or not visible at all. Nothing but JSON cards and safetensors
weights is ever fetched or loaded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import struct
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from genretag.card import ModelCard
from genretag.deprecation import deprecated, no_attribute
from genretag.errors import ChecksumError, HubError, OfflineError
from genretag.fs import atomic_write, locked, sha256_file
from genretag.paths import bundled_models_dir, models_cache_dir
from genretag.version import __version__

INDEX_ENV = "GENRETAG_MODEL_INDEX"
TIMEOUT = 30.0  # seconds without data before a connection counts as dead
CHUNK = 1 << 16
ATTEMPTS = 4  # a download cut mid-way is resumed this many times before giving up
MAX_CARD_BYTES = 4 << 20
MAX_INDEX_BYTES = 4 << 20
MAX_HEADER_BYTES = 100 << 20  # safetensors' own limit on the JSON header
USER_AGENT = f"genretag/{__version__} (+python-urllib)"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- names and URLs

def valid_name(name: str) -> bool:
    """A model name that is safe as a file name in the cache (no paths, no dots first)."""
    return bool(_NAME_RE.match(name)) and not name.endswith((".json", ".safetensors", ".part"))


def check_name(name: str) -> str:
    if not valid_name(name):
        raise HubError(f"{name!r} is not a valid model name (letters, digits, '.', '_', '+', '-')", 2)
    return name


def is_url(s: str) -> bool:
    return urllib.parse.urlsplit(str(s)).scheme.lower() in ("http", "https", "file")


def _url_path_suffix(url: str) -> str:
    return Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).suffix.lower()


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.netloc or parts.path


def _check_suffix(url: str, suffix: str, what: str) -> None:
    """Only .safetensors weights and .json cards are ever fetched."""
    if _url_path_suffix(url) != suffix:
        raise HubError(f"refusing {url}: {what} must be a {suffix} file", 2)


def _check_sha(hexdigest: str, what: str = "--sha256") -> str:
    h = hexdigest.strip().lower()
    if not _HEX64_RE.match(h):
        raise HubError(f"{what}: expected 64 hex digits, got {hexdigest!r}", 2)
    return h


# --------------------------------------------------------------------------- network

def _is_network_error(e: BaseException) -> bool:
    import http.client  # the network modules load with the first download, not with the CLI
    import urllib.error

    if isinstance(e, urllib.error.HTTPError):
        return e.code >= 500
    if isinstance(e, urllib.error.URLError):
        return not isinstance(e.reason, FileNotFoundError | PermissionError | IsADirectoryError)
    return isinstance(e, (http.client.HTTPException, ConnectionError, TimeoutError, OSError))


def _wrap(e: BaseException, url: str) -> HubError:
    import urllib.error

    if isinstance(e, urllib.error.HTTPError):
        msg = f"{url}: HTTP {e.code} {e.reason}"
    elif isinstance(e, urllib.error.URLError):
        reason = e.reason
        msg = f"{url}: {getattr(reason, 'strerror', None) or reason}"
    else:
        msg = f"{url}: {getattr(e, 'strerror', None) or e or type(e).__name__}"
    return OfflineError(msg) if _is_network_error(e) else HubError(msg)


def _open(url: str, headers: dict[str, str] | None = None):
    import urllib.request

    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise HubError(f"refusing {url}: only http, https and file URLs", 2)
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return urllib.request.urlopen(req, timeout=TIMEOUT)


def fetch_bytes(url: str, limit: int) -> bytes:
    """A small file (an index or a card), at most `limit` bytes."""
    import http.client
    import urllib.error

    log.debug(f"fetching {url}")
    try:
        with _open(url) as resp:
            data = resp.read(limit + 1)
    except HubError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise _wrap(e, url) from None
    if len(data) > limit:
        raise HubError(f"{url}: larger than {limit >> 20} MB; not a model card or index")
    return data


# --------------------------------------------------------------------------- the index

@dataclass
class IndexEntry:
    """One model the index knows about."""

    name: str
    url: str | None = None  # the safetensors weights; None: bundled, nothing to download
    card_url: str | None = None
    card: dict[str, Any] | None = None  # the card inline, instead of card_url
    sha256: str | None = None
    size: int | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "card_url": self.card_url, "card": self.card,
                "sha256": self.sha256, "size": self.size, "description": self.description}


def shipped_index_path() -> Path:
    return Path(str(resources.files("genretag") / "data" / "model_index.json"))


def index_source(source: str | os.PathLike | None = None) -> str:
    """Where the index comes from: the argument, else $GENRETAG_MODEL_INDEX, else the shipped file."""
    if source:
        return str(source)
    return os.environ.get(INDEX_ENV) or str(shipped_index_path())


def _size(value: Any, where: str) -> int | None:
    """An index entry's byte count: a whole number of bytes, or absent (1e400 and Infinity are neither)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or not 0 < value <= 1 << 50:
        raise HubError(f"{where}: 'size' must be a whole number of bytes, not {value!r}")
    return int(value)


def load_index(source: str | os.PathLike | None = None) -> dict[str, IndexEntry]:
    """Read a model index (URL or file) into {name: entry}; relative URLs resolve against it."""
    src = index_source(source)
    if is_url(src):
        base, raw = src, fetch_bytes(src, MAX_INDEX_BYTES)
    else:
        p = Path(src).expanduser()
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise HubError(f"model index {p}: {e.strerror}", 2) from None
        base = p.resolve().as_uri()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HubError(f"model index {src}: not valid JSON ({getattr(e, 'msg', e)})") from None
    models = data.get("models") if isinstance(data, dict) else data
    if not isinstance(models, list):
        raise HubError(f"model index {src}: expected a list of models (or {{\"models\": [...]}})")
    out: dict[str, IndexEntry] = {}
    for i, m in enumerate(models):
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not valid_name(m["name"]):
            raise HubError(f"model index {src}: entry {i} has no valid 'name'")
        card = m.get("card")
        if card is not None and not isinstance(card, dict):
            raise HubError(f"model index {src}: {m['name']}: 'card' must be an object")
        e = IndexEntry(
            name=m["name"],
            url=urllib.parse.urljoin(base, m["url"]) if m.get("url") else None,
            card_url=urllib.parse.urljoin(base, m["card_url"]) if m.get("card_url") else None,
            card=card,
            sha256=_check_sha(m["sha256"], f"model index: {m['name']}: sha256") if m.get("sha256") else None,
            size=_size(m.get("size"), f"model index {src}: {m['name']}"),
            description=str(m.get("description") or ""),
        )
        if e.url and not e.card_url and e.card is None:
            e.card_url = e.url[: -len(".safetensors")] + ".json" if e.url.endswith(".safetensors") else None
        out[e.name] = e
    return out


# --------------------------------------------------------------------------- content checks

def check_safetensors(path: str | os.PathLike) -> None:
    """Raise HubError unless `path` starts like a safetensors file (u64 LE length + JSON header)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise HubError(f"{path.name}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > MAX_HEADER_BYTES or 8 + n > size:
            raise HubError(f"{path.name}: not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HubError(f"{path.name}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise HubError(f"{path.name}: not a safetensors file (header is not a JSON object)")
    for key, t in header.items():
        if key == "__metadata__":
            continue
        if not (isinstance(t, dict) and {"dtype", "shape", "data_offsets"} <= set(t)):
            raise HubError(f"{path.name}: not a safetensors file (bad tensor entry {key!r})")
        try:
            end = int(t["data_offsets"][1])
        except (TypeError, ValueError, IndexError, KeyError):
            raise HubError(f"{path.name}: not a safetensors file (bad tensor entry {key!r})") from None
        if end > size - 8 - n:
            raise HubError(f"{path.name}: safetensors file is truncated")


def parse_card(raw: bytes, where: str) -> dict[str, Any]:
    """A card's JSON as a dict, checked to be a ModelCard."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        ModelCard.from_dict(data)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError) as e:
        raise HubError(f"{where}: not a model card ({getattr(e, 'msg', None) or e})") from None
    return data


# --------------------------------------------------------------------------- downloading

class _Interrupted(Exception):
    pass


@contextlib.contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int, int | None], None]]:
    """Yields update(done, total): a rich bar on stderr when it is a terminal and notes are shown.

    "Notes are shown" is this module's logger taking INFO, which the CLI sets
    from --quiet; a library caller that has not configured logging gets no bar.
    """
    if not (log.isEnabledFor(logging.INFO) and sys.stderr.isatty()):
        yield lambda done, tot: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")) or None)
    cols = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn()]
    with Progress(*cols, console=console, transient=True) as p:
        task = p.add_task(label, total=total)
        yield lambda done, tot: p.update(task, completed=done, total=tot)


def _fetch_once(url: str, part: Path, update: Callable[[int, int | None], None],
                max_size: int | None) -> None:
    """One request: append to `part` (Range) or rewrite it.

    Raises _Interrupted when the transfer is cut short (what arrived is kept),
    OfflineError when the server cannot be reached, HubError otherwise.
    """
    import http.client
    import urllib.error

    start = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    log.debug(f"GET {url}" + (f" (resuming at byte {start})" if start else ""))
    try:
        resp = _open(url, headers)
    except HubError:
        raise
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:  # nothing left to send: the partial file is all there is
            return
        raise _wrap(e, url) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise _wrap(e, url) from None
    with resp:
        status = getattr(resp, "status", None)
        if start and status == 206:
            m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != start:
                raise HubError(f"{url}: server sent a range that does not continue the partial download")
            mode = "ab"
        else:
            start, mode = 0, "wb"  # the server ignored Range: start over
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total = start + length if length is not None else max_size
        done = start
        update(done, total)
        try:
            f = open(part, mode)
        except OSError as e:
            raise HubError(f"cannot write {part}: {e.strerror}") from None
        with f:
            while max_size is None or done <= max_size:
                try:
                    chunk = resp.read(CHUNK)
                except (http.client.HTTPException, OSError) as e:
                    raise _Interrupted(str(e) or type(e).__name__) from None
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as e:
                    raise HubError(f"cannot write {part}: {e.strerror}") from None
                done += len(chunk)
                update(done, total)
    if max_size is not None and done > max_size:
        part.unlink(missing_ok=True)
        raise HubError(f"{url}: larger than the index says ({max_size} bytes); download deleted")
    if length is not None and done < start + length:
        raise _Interrupted(f"connection closed after {done} of {start + length} bytes")


def download_file(url: str, part: Path, label: str, max_size: int | None = None) -> None:
    """Stream `url` into `part`, resuming (HTTP Range) from what is already there.

    A transfer cut mid-way is resumed at once (up to ATTEMPTS requests); if it
    still fails, the partial file stays for the next run to resume.
    """
    last_error = ""
    with _progress(label, max_size) as update:
        for attempt in range(ATTEMPTS):
            try:
                _fetch_once(url, part, update, max_size)
                return
            except _Interrupted as e:
                last_error = str(e)
                log.debug(f"download interrupted ({e}); resuming")
            except OfflineError as e:
                if attempt == 0:  # never reached the server: offline, not interrupted
                    raise
                last_error = str(e)
    have = part.stat().st_size if part.exists() else 0
    raise OfflineError(f"{url}: download interrupted ({last_error}); {have} bytes kept, "
                       "run the command again to resume")


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


def install(name: str, url: str, card: dict[str, Any] | None = None, card_url: str | None = None,
            sha256: str | None = None, size: int | None = None, force: bool = False) -> Path:
    """Download weights (+ card) into the cache under `name`; returns the installed card path.

    `sha256` (from the index or --sha256) and the card's `weights_sha256` must
    agree with the hash of what arrived; the weights must parse as safetensors.
    """
    check_name(name)
    _check_suffix(url, ".safetensors", "the weights")
    expected = {h for h in (sha256 and _check_sha(sha256),) if h}
    cache = models_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    card_path = cache / f"{name}.json"
    wpath = cache / f"{name}.safetensors"
    part = cache / f"{name}.safetensors.part"
    with locked(cache / f".{name}.lock"):
        if card_path.exists() and wpath.exists() and not force:
            return card_path  # someone (maybe a concurrent process) installed it meanwhile
        if card is None:
            if not card_url:
                raise HubError(f"model {name!r}: no card (card_url or an inline card) to go with the weights", 2)
            _check_suffix(card_url, ".json", "the model card")
            card = parse_card(fetch_bytes(card_url, MAX_CARD_BYTES), card_url)
        else:
            card = parse_card(json.dumps(card).encode(), f"model {name!r}: inline card")
        if card.get("members"):
            raise HubError(f"model {name!r}: ensemble cards cannot be downloaded as one file", 2)
        card_sha = card.get("weights_sha256") or ""
        if card_sha:
            expected.add(_check_sha(card_sha, f"model {name!r}: card weights_sha256"))
        if not expected:
            raise HubError(f"model {name!r}: no sha256 to check the weights against; pass --sha256", 2)
        if len(expected) > 1:
            raise ChecksumError(f"model {name!r}: the index/--sha256 and the card disagree on the weights' sha256")
        want = expected.pop()

        resumed = part.exists() and part.stat().st_size > 0
        for _ in range(2):
            download_file(url, part, f"{name} ", size)
            got = sha256_file(part)
            if got == want:
                break
            part.unlink(missing_ok=True)
            if not resumed:
                raise ChecksumError(f"model {name!r}: sha256 mismatch (expected {want[:12]}..., got {got[:12]}...); "
                                    "download deleted")
            log.debug("the resumed download does not verify; starting over")
            resumed = False
        try:
            check_safetensors(part)
        except HubError:
            part.unlink(missing_ok=True)
            raise
        card = dict(card)
        card["weights"] = wpath.name
        card["weights_sha256"] = want
        os.replace(part, wpath)
        atomic_write(card_path, (json.dumps(card, indent=2) + "\n").encode())
    return card_path


def installed_card(name: str) -> Path | None:
    """The card of a bundled or cached model called `name`, if any (bundled wins)."""
    if not valid_name(name):
        return None
    for d in (bundled_models_dir(), models_cache_dir()):
        c = d / f"{name}.json"
        if c.exists():
            return c
    return None


def download(name_or_url: str, sha256: str | None = None, index: str | os.PathLike | None = None,
             force: bool = False) -> Path:
    """`genretag models download`: a name from the index, or a URL of weights (.safetensors) or a card (.json)."""
    if is_url(name_or_url):
        url = name_or_url
        suffix = _url_path_suffix(url)
        stem = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).stem
        if suffix == ".json":
            card = parse_card(fetch_bytes(url, MAX_CARD_BYTES), url)
            wname = card.get("weights") or f"{stem}.safetensors"
            if "/" in wname or "\\" in wname:
                raise HubError(f"{url}: the card's 'weights' must be a plain file name", 2)
            return _install_verbose(check_name(stem), urllib.parse.urljoin(url, wname), card=card,
                                    sha256=sha256, force=force)
        if suffix == ".safetensors":
            return _install_verbose(check_name(stem), url, card_url=url[: -len(suffix)] + ".json",
                                    sha256=sha256, force=force)
        raise HubError(f"refusing {url}: only .safetensors weights and .json model cards are downloaded", 2)

    name = check_name(name_or_url)
    if (bundled_models_dir() / f"{name}.json").exists():
        log.info(f"model {name!r} is bundled with genretag; nothing to download")
        return bundled_models_dir() / f"{name}.json"
    entries = load_index(index)
    entry = entries.get(name)
    if entry is None:
        known = ", ".join(sorted(entries)) or "none"
        raise HubError(f"model {name!r} is not in the model index {index_source(index)} (known: {known})", 2)
    if not entry.url:
        raise HubError(f"model {name!r} has no download URL in the index (it ships with genretag, "
                       "but is not in this installation)", 2)
    if sha256 and entry.sha256 and _check_sha(sha256) != entry.sha256:
        raise ChecksumError(f"model {name!r}: --sha256 does not match the index's sha256")
    return _install_verbose(name, entry.url, card=entry.card, card_url=entry.card_url,
                            sha256=sha256 or entry.sha256, size=entry.size, force=force)


def _install_verbose(name: str, url: str, **kw: Any) -> Path:
    cache = models_cache_dir()
    if not kw.get("force") and (cache / f"{name}.json").exists():
        if verify_installed(cache / f"{name}.json"):
            log.info(f"model {name!r} is already in the cache ({cache})")
            return cache / f"{name}.json"
        log.info(f"model {name!r} in the cache does not verify; downloading it again")
        kw["force"] = True
    size = kw.get("size")
    log.info(f"downloading model {name!r} from {_host(url)}" + (f" ({human_size(size)})" if size else ""))
    path = install(name, url, **kw)
    log.info(f"installed model {name!r} into {cache}")
    return path


def remove(name: str) -> list[Path]:
    """Delete a cached model's files (and any partial download); bundled models are refused."""
    check_name(name)
    cache = models_cache_dir()
    files = [cache / f"{name}{ext}" for ext in (".json", ".safetensors", ".safetensors.part",
                                                  ".safetensors.part.tmp", ".json.tmp")]
    files = [f for f in files if f.exists()]
    if not files:
        if (bundled_models_dir() / f"{name}.json").exists():
            raise HubError(f"model {name!r} is bundled with genretag and cannot be removed", 2)
        raise HubError(f"model {name!r} is not in the cache ({cache})", 2)
    for f in files:
        f.unlink()
    (cache / f".{name}.lock").unlink(missing_ok=True)
    return files


# --------------------------------------------------------------------------- first use

def ensure_model(name: str) -> Path | None:
    """For a model name not found locally: download it if the index has it.

    Returns the installed card, or None when the name is not a model the
    index can provide (the caller reports it). Raises OfflineError when the
    index or the download cannot be reached (`genretag.store.resolve` then
    falls back to the bundled default); a checksum mismatch or a broken
    download is raised too, never papered over.
    """
    if not isinstance(name, str) or not valid_name(name):
        return None
    found = installed_card(name)
    if found is not None:
        return found
    try:
        entry = load_index().get(name)
    except OfflineError:
        raise
    except HubError as e:
        log.warning("%s", e)
        return None
    if entry is None or not entry.url:
        return None
    return _install_verbose(name, entry.url, card=entry.card, card_url=entry.card_url,
                            sha256=entry.sha256, size=entry.size)


def verify_installed(card_path: Path) -> bool:
    """True when a cached card's weights exist and match its sha256."""
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        w = card_path.parent / (card.get("weights") or card_path.with_suffix(".safetensors").name)
        return bool(card.get("weights_sha256")) and sha256_file(w) == card["weights_sha256"]
    except (OSError, ValueError):
        return False


def __getattr__(name: str):
    if name == "ModelError":  # imported here by genretag 0.1's users, never used here
        deprecated(f"{__name__}.ModelError", "genretag.errors.ModelError")
        from genretag.errors import ModelError

        return ModelError
    raise no_attribute(__name__, name)
