"""Classifying on a Dask cluster (the `[dask]` extra): the same results as a local run, many machines.

    client = connect("tcp://scheduler:8786")
    with ClusterExecutor(client, genretag.load_model(), vote="soft") as ex:
        for r in ex.classify(paths):           # one TrackResult per path, in input order
            print(r.path, r.genre)

The workers do all the per-track work (decoding, cutting, the network, the
vote, the audio fingerprint) and send back only the results, under a
kilobyte each: a decoded track is about 2 MB of waveform. Files go in chunks
(`chunk` files per task) with a bounded window of chunks in flight (twice the
cluster's worker threads), so a library of any size starts at once and the
client's memory stays flat; nothing maps a whole library up front.

The model reaches every worker once: its card and safetensors bytes travel in
a `distributed.WorkerPlugin`, are checked against the card's sha256 on the
worker and loaded there lazily, once per worker process, by the first task
that needs them (not in the worker's event loop).

The client keeps what must happen in one place: the output, the SQLite
result cache (filled from the fingerprints the workers send back) and, in
`genretag tag`, the tag writes and their journal. With a cache, each chunk is
fingerprinted on the workers first and only the files the cache cannot
answer are classified.

Every worker must see the audio files at the same path (a shared file
system); a file a worker cannot read is that file's error result, as in a
local run. A worker that dies mid-chunk has its chunk rerun elsewhere by
the scheduler; a chunk that keeps killing workers is split into single
files, and a file that kills a worker on its own becomes an error result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import distributed
from distributed import KilledWorker, WorkerPlugin, as_completed

from genretag.errors import GenretagError, ModelError, one_line
from genretag.pipeline.early_exit import DEFAULT_EARLY_EXIT, EarlyExit, applied
from genretag.pipeline.executor import CacheStats
from genretag.pipeline.inference import TrackResult, error_result
from genretag.pipeline.result_cache import ResultCache

log = logging.getLogger(__name__)

#: Seconds to wait for the scheduler (`GENRETAG_SCHEDULER_TIMEOUT` overrides).
CONNECT_TIMEOUT = 10.0
TIMEOUT_ENV = "GENRETAG_SCHEDULER_TIMEOUT"
#: Files per task: enough that the task overhead (milliseconds) is small next to the work (seconds).
DEFAULT_CHUNK = 16


class ClusterError(GenretagError):
    """The scheduler cannot be reached, or the cluster cannot run the work."""


# ----------------------------------------------------------------------------- connecting

def connect(address: str | None = None, scheduler_file: str | os.PathLike | None = None,
            timeout: float | None = None) -> distributed.Client:
    """A client of an existing scheduler, by address or scheduler file; never starts a cluster.

    Raises ClusterError (exit 1) when the scheduler does not answer within
    `timeout` seconds, and (exit 2) when neither or both are given, the
    scheduler file does not exist or holds no address, or the address is
    not one Dask can parse (checked first: Dask would wait for it).
    """
    if (address is None) == (scheduler_file is None):
        raise ClusterError("give either a scheduler address or a scheduler file", 2)
    timeout = scheduler_timeout() if timeout is None else timeout
    where = address if address is not None else f"the scheduler in {scheduler_file}"
    if scheduler_file is not None:
        address = _address_in(scheduler_file)
    _check_address(address, where)
    try:
        return distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler at {where}: {one_line(e)}") from None


#: The longest `GENRETAG_SCHEDULER_TIMEOUT` accepted: a day.
MAX_TIMEOUT = 86400.0


def scheduler_timeout() -> float:
    """Seconds to wait for the scheduler, and for a worker when the cluster has none:
    ``$GENRETAG_SCHEDULER_TIMEOUT`` (more than 0, at most a day), else 10. A usage error otherwise."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return CONNECT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TIMEOUT:  # also false for nan
        raise ClusterError(f"{TIMEOUT_ENV} must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, "
                           f"not {raw!r}", 2)
    return value


def _address_in(scheduler_file: str | os.PathLike) -> str:
    """The scheduler address a scheduler file (JSON written by `dask scheduler --scheduler-file`) holds."""
    path = Path(scheduler_file)
    if not path.is_file():
        raise ClusterError(f"no scheduler file at {scheduler_file}", 2)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ClusterError(f"{scheduler_file} is not a scheduler file (JSON with an 'address'): {one_line(e)}",
                           2) from None
    address = data.get("address") if isinstance(data, dict) else None
    if not isinstance(address, str) or not address:
        raise ClusterError(f"{scheduler_file} is not a scheduler file: it has no 'address'", 2)
    return address


def _check_address(address: str, where: str) -> None:
    """A usage error for an address Dask cannot parse (an unknown scheme, no port, a port that is no
    number): Dask would report it only after its timeout, twice over, with a traceback."""
    from distributed.comm import get_address_host_port, parse_address
    from distributed.comm.registry import get_backend

    try:
        scheme, _ = parse_address(address)
        get_backend(scheme)
        if scheme in ("tcp", "tls", "ws", "wss"):
            host, port = get_address_host_port(address)
            if not host or not 0 < int(port) < 65536:
                raise ValueError(f"no host, or a port outside 1-65535, in {address!r}")
    except (ValueError, TypeError, KeyError) as e:
        raise ClusterError(f"not a Dask scheduler address: {where} ({one_line(e)})", 2) from None


# ----------------------------------------------------------------------------- the model on the workers

def model_files(card_path: str | os.PathLike) -> tuple[str, dict[str, bytes]]:
    """A model as flat files: (main card name, {file name: bytes}), ensemble members included.

    Member cards and weights get names of their own in one folder, so the
    bundle can be written anywhere and loaded with `load_net`.
    """
    files: dict[str, bytes] = {}

    def add(path: Path, name: str) -> str:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"{path}: cannot read the model card ({one_line(e)})") from None
        if data.get("members"):
            data["members"] = [add(path.parent / m, f"{name}.{i}") for i, m in enumerate(data["members"])]
        else:
            weights = path.parent / (data.get("weights") or path.with_suffix(".safetensors").name)
            try:
                files[f"{name}.safetensors"] = weights.read_bytes()
            except OSError as e:
                raise ModelError(f"{weights}: cannot read the weights ({e.strerror})") from None
            data["weights"] = f"{name}.safetensors"
        files[f"{name}.json"] = json.dumps(data).encode("utf-8")
        return f"{name}.json"

    card_path = Path(card_path)
    return add(card_path, card_path.stem), files


class ModelPlugin(WorkerPlugin):
    """A model's card and weights on every worker, loaded once per worker process, on first use."""

    idempotent = True  # registered again (a second run, a second client): the loaded model stays

    def __init__(self, card_path: str | os.PathLike, device: str = "auto", precision: str = "fp32") -> None:
        self.main, self.files = model_files(card_path)
        self.device, self.precision = device, precision
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        self.name = f"genretag-model-{digest.hexdigest()[:16]}-{device}-{precision}"
        self.loads = 0
        self._model = None

    def setup(self, worker) -> None:  # in the worker's event loop: keep it cheap
        self._lock = threading.Lock()
        self._dir = None
        self._model = None
        self.loads = 0
        self._local = getattr(worker, "local_directory", None) or tempfile.gettempdir()

    def teardown(self, worker) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def model(self):
        """The loaded model (the first call in this process writes, verifies and loads it)."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
                self.loads += 1
            return self._model

    def _load(self):
        # the same process setup as the CLI's (genretag.cli.app.main), for a worker process running genretag's tasks
        from genretag.pipeline.heap import keep_freed_memory
        from genretag.pipeline.threads import prefer_passive_openmp

        prefer_passive_openmp()  # before torch starts its threads, as the CLI does
        # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also stops glibc from raising its
        # mmap threshold: every batch's multi-megabyte buffers were then page-faulted afresh, half of a
        # worker's CPU time (docs/cluster.md). Keep freed memory in the heap, as the CLI does.
        keep_freed_memory()
        from genretag.model import load_net

        folder = Path(tempfile.mkdtemp(prefix="genretag-model-", dir=self._local))
        self._dir = folder
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        # verify=True checks every weights file (members included) against its card's sha256
        model = load_net(folder / self.main, self.device, verify=True, precision=self.precision)
        model.tune()
        log.debug("loaded %s on this worker", model.card.name)
        return model


def model_loads(dask_worker) -> dict[str, int]:
    """How many times this worker process loaded each genretag model (for `client.run`)."""
    return {name: p.loads for name, p in dask_worker.plugins.items() if isinstance(p, ModelPlugin)}


# ----------------------------------------------------------------------------- what a task runs

@dataclass(frozen=True)
class _Settings:
    plugin: str
    vote: str
    segments: int | None
    batch_segments: int | None
    early_exit: EarlyExit | None  # the rule the workers run, as the client keys its cache


def _worker_model(plugin_name: str):
    worker = distributed.get_worker()
    plugin = worker.plugins.get(plugin_name)
    if not isinstance(plugin, ModelPlugin):
        raise ModelError(f"the model plugin {plugin_name} is not on worker {worker.address}")
    return plugin.model()


def fingerprint_chunk(paths: list[str]) -> list[str | None]:
    """The audio fingerprint of each file (None for one that cannot be read), on a worker."""
    from genretag.audio.containers import fingerprint
    from genretag.errors import FingerprintError

    out: list[str | None] = []
    for p in paths:
        try:
            out.append(fingerprint(p))
        except (FingerprintError, OSError):
            out.append(None)
    return out


def classify_chunk(paths: list[str], fps: list[str | None] | None, settings: _Settings,
                   with_fingerprints: bool) -> list[TrackResult]:
    """Decode, cut, run and vote a chunk of files on a worker, as the local pipeline does.

    A file that cannot be decoded is an error result, as locally; the task
    itself fails only when the model cannot be loaded.
    """
    from genretag.pipeline.inference import default_batch_segments, run_model
    from genretag.pipeline.prepare import prepare_file

    model = _worker_model(settings.plugin)
    if fps is None:
        fps = fingerprint_chunk(paths) if with_fingerprints else [None] * len(paths)
    prepared = (prepare_file(p, model.card.audio, settings.segments) for p in paths)
    results = list(run_model(prepared, model, vote=settings.vote,
                             batch_segments=settings.batch_segments or default_batch_segments(model),
                             early_exit=settings.early_exit))
    for r, fp in zip(results, fps):
        r.fingerprint = fp
    return results


# ----------------------------------------------------------------------------- the client side

@dataclass
class _Chunk:
    index: int
    paths: list[str]  # as the user gave them: what the results report
    sent: list[str]  # absolute, resolved here: what the workers open (their working folder is not ours)
    results: list[TrackResult | None] = field(default_factory=list)
    fps: list[str | None] | None = None
    todo: list[int] = field(default_factory=list)  # positions still to classify

    @property
    def done(self) -> bool:
        return all(r is not None for r in self.results)


class ClusterExecutor:
    """A model, its settings and a Dask client, held once: paths in, one TrackResult each out, in order.

    `cache` (a `ResultCache`) answers files classified before and stores new
    results, as `Classifier` does locally; `fingerprints` (default on) puts
    each file's audio fingerprint on its result, which `genretag.tags.Tagger`
    needs. `window` bounds the chunks in flight (default: twice the cluster's
    worker threads, looked up again as workers come and go). `close()` closes
    the cache, and the client too with `close_client` (`ClusterExecutor.connect` sets it).
    A cluster with no worker at all for `no_worker_timeout` seconds (default: the scheduler
    timeout, `scheduler_timeout()`) while files wait ends the stream with a ClusterError.
    Paths are made absolute here before they are sent (a worker's working folder is its own);
    the results carry them as given.
    """

    def __init__(self, client: distributed.Client, model, *, vote: str = "soft", segments: int | None = None,
                 cache: ResultCache | None = None, fingerprints: bool = True, chunk: int = DEFAULT_CHUNK,
                 window: int | None = None, batch_segments: int | None = None, device: str = "auto",
                 close_client: bool = False, no_worker_timeout: float | None = None) -> None:
        if model.path is None:
            raise ModelError("a model without a card file cannot be sent to a cluster")
        self.client = client
        self.model = model
        self.vote, self.segments, self.cache = vote, segments, cache
        self.fingerprints = fingerprints or cache is not None
        self.chunk = max(1, int(chunk))
        self.window = window
        self.stats = CacheStats()
        early_exit = applied(DEFAULT_EARLY_EXIT, vote, segments)  # as Classifier's
        self._cached = (cache.for_model(model, vote=vote, segments=segments, early_exit=early_exit)
                        if cache is not None else None)
        self.plugin = ModelPlugin(model.path, device, model.precision)
        self.settings = _Settings(self.plugin.name, vote, segments, batch_segments, early_exit)
        self._registered = False
        self._owns_client = close_client
        self._threads = (0.0, 1)  # (when looked up, total worker threads)
        #: Seconds the cluster may have no worker at all while work is waiting (then ClusterError).
        self.no_worker_timeout = scheduler_timeout() if no_worker_timeout is None else no_worker_timeout

    def __enter__(self) -> ClusterExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def connect(cls, model, address: str | None = None, scheduler_file: str | os.PathLike | None = None,
                timeout: float | None = None, **kwargs) -> ClusterExecutor:
        """An executor on its own client of the scheduler at `address` (or in `scheduler_file`)."""
        return cls(connect(address, scheduler_file, timeout), model, close_client=True, **kwargs)

    def close(self) -> None:
        """Close the result cache, and the client if this executor opened it (`ClusterExecutor.connect`)."""
        if self.cache is not None:
            self.cache.close()
        if self._owns_client:
            self.client.close()

    def register(self) -> None:
        """Send the model to every worker (and to those that join later), once."""
        if not self._registered:
            try:
                self.client.register_plugin(self.plugin)
            except Exception as e:  # noqa: BLE001 - the scheduler went away, a worker refused it
                raise ClusterError(f"cannot send the model to the workers: {one_line(e)}") from None
            self._registered = True

    def worker_threads(self) -> int:
        """The cluster's worker threads (looked up at most every 5 s)."""
        when, n = self._threads
        if time.monotonic() - when > 5.0:
            n = max(1, sum(self.client.nthreads().values()))
            self._threads = (time.monotonic(), n)
        return n

    def _in_flight_limit(self) -> int:
        """The most chunks in flight at once."""
        return self.window or max(2, 2 * self.worker_threads())

    def classify(self, paths: Iterable[str]) -> Iterator[TrackResult]:
        """One result per path, in input order; stopping early (or Ctrl-C) cancels the work in flight."""
        self.register()
        yield from _Stream(self, paths).results()


class _Stream:
    """One `ClusterExecutor.classify` run: the paths read into chunks, their tasks in flight, the
    chunks' results given out in input order.

    With a cache a chunk goes in two phases, each a task: its fingerprints
    (`fingerprint_chunk`), then the files the cache cannot answer
    (`classify_chunk`); without one, straight to the second.
    """

    def __init__(self, ex: ClusterExecutor, paths: Iterable[str]) -> None:
        self.ex = ex
        self.it = iter(paths)
        self.ahead: deque[str] = deque()  # paths read, not yet in a chunk
        self.source_done = False  # the input is read to its end
        self.exhausted = False  # ... and every path is in a chunk
        self.next_index = 0  # the next chunk to read
        self.next_out = 0  # the next chunk to yield
        self.chunks: dict[int, _Chunk] = {}
        self.running: dict[distributed.Future, tuple[_Chunk, str, list[int]]] = {}
        self.ac = as_completed(loop=ex.client.loop)

    def results(self) -> Iterator[TrackResult]:
        try:
            while True:
                self._fill()
                while self.next_out in self.chunks and self.chunks[self.next_out].done:
                    c = self.chunks.pop(self.next_out)
                    self.next_out += 1
                    yield from c.results
                if self.running:
                    self._finished(self._next_done())
                elif self.exhausted and not self.chunks:
                    return
                elif self.chunks:  # the oldest chunk waits for nothing: never expected
                    raise ClusterError("internal error: a chunk has no task running")
        except GenretagError:
            raise
        except Exception as e:  # noqa: BLE001 - the scheduler lost, a comm closed: one line, not a traceback
            raise ClusterError(f"the cluster failed: {one_line(e)}") from None
        finally:
            self._cancel()

    def _fill(self) -> None:
        """Keep the window full; read at most a few windows ahead of the output (a straggler holds
        back the output, and then the reading too)."""
        limit = self.ex._in_flight_limit()
        while (not self.exhausted and len({c.index for c, _, _ in self.running.values()}) < limit
               and self.next_index - self.next_out < 4 * limit):
            c = self._read_chunk()
            if c is None:
                break
            self._submit(c, "fingerprint" if self.ex.cache is not None else "classify", list(range(len(c.paths))))

    def _read_chunk(self) -> _Chunk | None:
        """The next chunk: `chunk` files, smaller towards the end of the input, so that the last
        files spread over every worker thread instead of queueing behind one full chunk."""
        threads = self.ex.worker_threads()
        while not self.source_done and len(self.ahead) < 2 * threads * self.ex.chunk:
            p = next(self.it, None)
            if p is None:
                self.source_done = True
            else:
                self.ahead.append(os.fspath(p))
        size = self.ex.chunk if not self.source_done else min(self.ex.chunk,
                                                              max(1, -(-len(self.ahead) // (2 * threads))))
        paths = [self.ahead.popleft() for _ in range(min(size, len(self.ahead)))]
        self.exhausted = self.source_done and not self.ahead
        if not paths:
            return None
        c = _Chunk(self.next_index, paths, [os.path.abspath(p) for p in paths], [None] * len(paths))
        self.next_index += 1
        self.chunks[c.index] = c
        return c

    def _submit(self, c: _Chunk, phase: str, positions: list[int]) -> None:
        ex = self.ex
        ps = [c.sent[i] for i in positions]
        if phase == "fingerprint":
            fut = ex.client.submit(fingerprint_chunk, ps, pure=False)
        else:
            fps = None if c.fps is None else [c.fps[i] for i in positions]
            fut = ex.client.submit(classify_chunk, ps, fps, ex.settings, ex.fingerprints, pure=False)
        self.running[fut] = (c, phase, positions)
        self.ac.add(fut)

    def _finished(self, fut: distributed.Future) -> None:
        """A task's values into its chunk: the cache's answers (then the rest sent to be
        classified), or results."""
        c, phase, positions = self.running.pop(fut)
        try:
            value = fut.result()
        except KilledWorker as e:  # the chunk killed worker after worker: one file at a time, then give up
            if len(positions) > 1:
                for i in positions:
                    self._submit(c, phase, [i])
                return
            value = [None] if phase == "fingerprint" else [error_result(
                c.paths[positions[0]], f"cannot decode: the decoder crashed ({type(e).__name__})")]
        except GenretagError:
            raise
        except Exception as e:  # noqa: BLE001 - a task never raises for a file; this is the cluster
            raise ClusterError(f"a cluster task failed: {one_line(e)}") from None
        if phase == "fingerprint":
            self._answer_from_cache(c, positions, value)
            if c.todo:
                todo, c.todo = c.todo, []
                self._submit(c, "classify", todo)
            return
        for i, r in zip(positions, value):
            r.path = c.paths[i]
            c.results[i] = r
            self.ex.stats.classified += 1
        if self.ex._cached is not None:
            self.ex._cached.put_many(value)

    def _answer_from_cache(self, c: _Chunk, positions: list[int], fps: list[str | None]) -> None:
        if c.fps is None:
            c.fps = [None] * len(c.paths)
        for i, fp in zip(positions, fps):
            c.fps[i] = fp
            hit = self.ex._cached.get(c.paths[i], fp) if fp else None
            if hit is None:
                c.todo.append(i)
                continue
            c.results[i] = hit
            self.ex.stats.cached += 1

    def _next_done(self) -> distributed.Future:
        """The next finished task. A cluster left without a worker (every one died and none joined)
        for longer than the scheduler timeout is a ClusterError, not a wait that never ends."""
        ac, ex = self.ac, self.ex
        alone_since = None
        looked = time.monotonic()
        condition = getattr(ac, "thread_condition", None)
        while not ac.has_ready():
            if condition is not None:
                with condition:
                    condition.wait(timeout=0.1)
            else:
                time.sleep(0.1)
            if time.monotonic() - looked < 1.0:
                continue
            looked = time.monotonic()
            if sum(ex.client.nthreads().values()) > 0:
                alone_since = None
            elif alone_since is None:
                alone_since = looked
            elif looked - alone_since > ex.no_worker_timeout:
                raise ClusterError(f"the Dask cluster has had no worker for {ex.no_worker_timeout:g} s "
                                   f"({TIMEOUT_ENV}): the files not done yet have no result")
        return next(ac)

    def _cancel(self) -> None:
        """Stopped early, interrupted or failed: nothing more runs for this stream."""
        if self.running:
            try:
                self.ex.client.cancel(list(self.running))
            except Exception:  # noqa: BLE001 - the client is gone already: so is the work
                log.debug("cancelling the tasks in flight failed", exc_info=True)
            self.running.clear()
