"""The model stage: batched inference over prepared sub-tracks, and votes.

`classify` streams one `TrackResult` per input, in input order. Decoding runs
in worker processes (joblib/loky) and this process batches sub-tracks of many
files through the network, taking turns with the workers when the network
runs on the CPU (see `prepare_stream`). Memory stays flat however large the
library is: only a bounded number of decoded files is ever in flight.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from genretag.card import AudioParams, ModelCard
from genretag.deprecation import deprecated, no_attribute
from genretag.paths import numba_cache_dir
from genretag.pipeline.calibration import Calibration
from genretag.pipeline.early_exit import DEFAULT_EARLY_EXIT, EarlyExit, applied
from genretag.pipeline.prepare import Prepared, prepare_file, prepare_rest, prepare_waveform
from genretag.pipeline.segments import vote as combine
from genretag.pipeline.threads import blas_threads, network_threads, torch_threads


class Predictor(Protocol):
    """What the model stage needs of a model: `genretag.model.Model` is the one genretag loads.

    The model builds on this module (`Model.classify` is `classify`), so the stage names the
    interface it calls rather than the class, and the two import in one direction only.
    """

    @property
    def card(self) -> ModelCard: ...
    @property
    def device_type(self) -> str: ...
    @property
    def members(self) -> Sequence[Predictor]: ...
    @property
    def labels(self) -> list[str]: ...
    @property
    def calibration(self) -> Calibration | None: ...
    def predict(self, waves: np.ndarray) -> np.ndarray: ...
    def tune(self) -> None: ...


@dataclass
class TrackResult:
    """The answer for one input file (or waveform)."""

    path: str
    genre: str | None
    confidence: float | None
    probabilities: dict[str, float] = field(default_factory=dict)
    segments: int = 0
    error: str | None = None
    #: Audio-payload fingerprint of the file when it was read for classifying (not in the
    #: JSONL output): `genretag.tags.Tagger` writes only if the file still has it.
    fingerprint: str | None = field(default=None, repr=False, compare=False)
    #: Calibrated confidences of the best labels, for a model whose card is calibrated
    #: (`genretag.pipeline.calibration`); `confidence` is then the genre's entry here.
    confidences: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def top(self, k: int = 1) -> list[tuple[str, float]]:
        """The k most probable labels with their probabilities."""
        ranked = sorted(self.probabilities.items(), key=lambda kv: -kv[1])
        return ranked[:max(1, k)]

    def label_confidence(self, label: str) -> float:
        """How sure the model is of `label`: calibrated where the model is, else its probability."""
        if label in self.confidences:
            return self.confidences[label]
        if self.confidences:  # calibrated model, label outside its best few: below every bar
            return 0.0
        return self.probabilities.get(label, self.confidence if label == self.genre else 0.0) or 0.0

    def to_json(self) -> dict:
        """Exactly the keys of the JSONL output (`confidences` only for a calibrated model)."""
        out = {"path": self.path, "genre": self.genre, "confidence": self.confidence,
               "probabilities": self.probabilities, "segments": self.segments, "error": self.error}
        if self.confidences:
            out["confidences"] = self.confidences
        return out


def result_from_probs(path: str, labels: list[str], seg_probs: np.ndarray, vote: str,
                      calibration: Calibration | None = None) -> TrackResult:
    """Vote (segments, labels) probabilities into one TrackResult (calibrated with `calibration`)."""
    dist = combine(seg_probs, vote)
    i = int(np.argmax(dist))
    probs = {lab: round(float(p), 6) for lab, p in zip(labels, dist)}
    result = TrackResult(path, labels[i], round(float(dist[i]), 6), probs, int(seg_probs.shape[0]), None)
    if calibration is not None:
        result.confidences = calibration.top(probs)
        result.confidence = result.confidences[labels[i]]
    return result


def error_result(path: str, error: str) -> TrackResult:
    return TrackResult(path, None, None, {}, 0, error)


def run_model(prepared: Iterable[Prepared], model: Predictor, *, vote: str = "soft",
              batch_segments: int = 64, early_exit: EarlyExit | None = None,
              decoder: DecodeStream | None = None) -> Iterator[TrackResult]:
    """Run the sub-tracks of consecutive files through the network in batches of exactly
    `batch_segments` (a file may straddle two batches); yield results in input order as
    soon as a file's vote is done.

    With `early_exit` (soft vote only), a file's sub-tracks run in the rule's order and
    the rest are queued only while its vote is not yet decided; its result then votes
    over the sub-tracks that ran. A file prepared with only its first sub-tracks decoded
    (`Prepared.rows`) has the rest decoded when its vote needs them: by `decoder`'s pool
    while the network goes on with other files, or here when there is no `decoder`."""
    rule = early_exit if vote == "soft" else None
    waiting: deque[_Track] = deque()  # files read but not yet yielded, in order
    todo: deque[tuple[_Track, int]] = deque()  # (file, sub-track) not yet through the network
    asked: list[tuple[_Track, Future]] = []  # files whose other sub-tracks are being decoded

    def queue(t: _Track) -> None:
        new = t.advance(rule)
        if t.first is not None and any(i in t.missing for _, i in new):  # not decoded yet
            t.deferred = new
            asked.append((t, decoder.rest(t.first) if decoder is not None
                          else _done(prepare_rest(t.first, model.card.audio))))
        else:
            todo.extend(new)

    def take_rests(block: bool) -> None:
        ready = [a for a in asked if a[1].done()] or (asked[:1] if block else [])
        for t, fut in ready:
            asked.remove((t, fut))
            rest = decoder.rest_result(fut, t.first) if decoder is not None else fut.result()
            if t.take_rest(rest):
                todo.extend(t.deferred)
            else:  # another plan (a silent sub-track was replaced): the track starts over
                queue(t)
            t.deferred = []

    def compute(final: bool) -> None:
        while len(todo) >= batch_segments or (final and todo):
            items = [todo.popleft() for _ in range(min(batch_segments, len(todo)))]
            probs = model.predict(np.stack([t.waves[i] for t, i in items]))
            for (t, i), row in zip(items, probs):
                t.probs[i] = row
                t.pending -= 1
                if t.pending == 0:
                    queue(t)

    def emit() -> Iterator[TrackResult]:
        while waiting and waiting[0].finished:
            t = waiting.popleft()
            if t.waves is None:
                yield error_result(t.path, t.error or "cannot decode")
            else:
                yield result_from_probs(t.path, model.labels, t.probs[t.ran], vote, model.calibration)

    for p in prepared:
        t = _Track(p, len(model.labels), rule)
        waiting.append(t)
        queue(t)
        # files behind one whose rest is still decoding wait in memory: a bounded number of them
        take_rests(block=len(waiting) > _MAX_WAITING)
        compute(final=False)
        yield from emit()
    while todo or asked:
        take_rests(block=len(todo) < batch_segments)
        compute(final=not asked)
        yield from emit()
    yield from emit()


#: At most this many files wait for the one at the head of the output to be done (about 2 MB each).
_MAX_WAITING = 32


def _done(value: Prepared) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


class _Track:
    """One file in `run_model`: its sub-tracks, their probabilities so far, what is queued."""

    def __init__(self, p: Prepared, n_labels: int, rule: EarlyExit | None) -> None:
        self.path, self.n_labels, self.rule = p.path, n_labels, rule
        self.deferred: list[tuple[_Track, int]] = []  # queued once the rest is decoded
        self.load(p)

    def load(self, p: Prepared) -> None:
        """Start over with the sub-tracks of `p` (all of them, or its first ones: `p.rows`)."""
        self.waves, self.error = p.waves, p.error
        self.first = p if p.missing else None  # what decoding the rest starts from
        self.missing = set(p.missing)
        if p.waves is not None and p.rows is not None:
            self.waves = np.zeros((len(p.offsets), p.waves.shape[1]), dtype=np.float32)
            self.waves[list(p.rows)] = p.waves
        n = 0 if self.waves is None else int(self.waves.shape[0])
        self.n = n
        self.order = self.rule.order(n) if self.rule and n else list(range(n))
        self.probs = np.zeros((n, self.n_labels), dtype=np.float32)
        self.queued = 0  # sub-tracks (a prefix of `order`) queued or done
        self.pending = 0  # of those, not through the network yet
        self.finished = n == 0

    def take_rest(self, rest: Prepared) -> bool:
        """Add the rest of the sub-tracks (True), or start over from `rest` when it is another
        plan or an error (False)."""
        if rest.waves is not None and rest.rows is not None:
            self.waves[list(rest.rows)] = rest.waves
            self.first, self.missing = None, set()
            return True
        self.load(rest)
        return False

    @property
    def ran(self) -> list[int]:
        return self.order[:self.queued]

    def advance(self, rule: EarlyExit | None) -> list[tuple[_Track, int]]:
        """The next sub-tracks to queue once the queued ones are done ([] and `finished` when
        the vote is decided or everything has run)."""
        if self.finished:
            return []
        if self.queued and (self.queued >= self.n or (rule is not None and rule.decided(self.probs[self.ran]))):
            self.finished = True
            return []
        upto = rule.next_stop(self.queued, self.n) if rule is not None else self.n
        new = self.order[self.queued:upto]
        self.queued, self.pending = upto, len(new)
        return [(self, i) for i in new]


_END = object()


class WorkerStream(ABC):
    """A function over `paths` in a pool of `jobs` worker processes, results in input order,
    with at most `prefetch` files in flight. `task` names the function; `DecodeStream` (decoding)
    and `genretag.pipeline.worker_network.NetworkStream` (decoding, network and vote) are the two.

    The pool is joblib's reusable loky executor, so a second run reuses warm workers (with
    jobs <= 1 the task runs here, file by file). The window is bounded on purpose:
    `joblib.Parallel(..., return_as="generator")` dispatches a new task whenever a worker
    finishes, not when the consumer takes a result, so with a consumer slower than the
    workers it works through the whole library ahead and memory grows with the library. The
    window defaults to 4 files per worker, at least 16, i.e. several model batches.

    * ``overlap=True`` (the default): a new file is submitted whenever the consumer takes
      one, so the workers never stop.
    * ``overlap=False`` (``GENRETAG_SCHEDULE=rounds``): the workers go in rounds. A whole
      window is done while the consumer waits, then the consumer works on it while the pool
      waits, so the workers and the network's threads never run at the same time.

    A worker that dies (a decoder segfault, the OOM killer) takes the pool and the files in
    flight with it: the file at the head is then retried on a fresh pool, and becomes an
    error result (`crashed`) only if that fails too; the other files in flight are resubmitted.
    """

    def __init__(self, paths: Iterable[str], *, jobs: int, prefetch: int | None = None,
                 overlap: bool = True) -> None:
        self.paths, self.jobs = paths, jobs
        self.prefetch = max(prefetch or 4 * jobs, 16)
        self.overlap = overlap

    @abstractmethod
    def task(self) -> tuple[Callable, tuple]:
        """What a worker runs on each path: the function (top level, so that it pickles) and its
        arguments after the path. It must not raise: an exception from it counts as a dead worker."""

    @abstractmethod
    def crashed(self, path: str, e: BaseException):
        """The result for a file whose worker died under it twice."""

    def __iter__(self) -> Iterator:
        fn, args = self.task()
        if self.jobs <= 1:
            for p in self.paths:
                yield fn(p, *args)
            return
        jobs = self.jobs
        window: deque[tuple[str, Future]] = deque()
        it = iter(self.paths)
        executor = worker_pool(jobs)

        def submit() -> bool:
            nonlocal executor
            path = next(it, _END)
            if path is _END:  # not None: None is an input (whose result says it is not a path)
                return False
            try:
                fut = executor.submit(fn, path, *args)
            except Exception:  # the pool broke since the last submission: start a fresh one
                executor = worker_pool(jobs)
                fut = executor.submit(fn, path, *args)
            window.append((path, fut))
            return True

        def fill() -> None:
            while len(window) < self.prefetch and submit():
                pass
            if not self.overlap:  # the round decodes while the consumer waits
                watched(lambda t: _all_done([f for _, f in window], t), executor)

        try:
            while True:
                if not window:
                    fill()
                    if not window:
                        break
                path, fut = window.popleft()
                try:
                    result = watched(fut.result, executor)
                except Exception:  # the pool broke: the task itself never raises
                    result = _retry_alone(jobs, self.crashed, fn, path, *args)
                    executor = worker_pool(jobs)
                    window = deque((p, f) if f.done() and f.exception() is None
                                   else (p, executor.submit(fn, p, *args))
                                   for p, f in window)
                if self.overlap:
                    submit()  # keep the workers busy while the consumer runs the model
                yield result
        finally:
            for _, fut in window:  # consumer stopped early (or interrupted)
                fut.cancel()


class DecodeStream(WorkerStream):
    """`prepare_file` over `paths`, in input order (a `WorkerStream`); and, on request, the rest
    of a file prepared with only its first sub-tracks.

    Iterate it for the `Prepared` files. With `early_exit`, a file's sub-tracks the rule
    looks at first are decoded, the others only when `rest` is asked for (`run_model`
    asks for a track whose vote is not decided by its first ones): the same pool decodes
    them while the network goes on with other files.
    """

    def __init__(self, paths: Iterable[str], params: AudioParams, *, segments: int | None, jobs: int,
                 prefetch: int | None = None, overlap: bool = True, early_exit: EarlyExit | None = None) -> None:
        super().__init__(paths, jobs=jobs, prefetch=prefetch, overlap=overlap)
        self.params, self.segments, self.early_exit = params, segments, early_exit

    def task(self) -> tuple[Callable, tuple]:
        return prepare_file, (self.params, self.segments, self.early_exit)

    def crashed(self, path: str, e: BaseException) -> Prepared:
        return Prepared(path, None, [], 0.0, f"cannot decode: the decoder crashed ({type(e).__name__})")

    def rest(self, first: Prepared) -> Future:
        """Start decoding the sub-tracks `first` lacks (`prepare_rest`); `rest_result` takes them."""
        if self.jobs <= 1:
            return _done(prepare_rest(first, self.params))
        try:
            return worker_pool(self.jobs).submit(prepare_rest, first, self.params)
        except Exception:  # a broken pool: rest_result decodes it again on a fresh one
            fut: Future = Future()
            fut.set_exception(RuntimeError("the decoding pool broke"))
            return fut

    def rest_result(self, fut: Future, first: Prepared) -> Prepared:
        """What `rest` started; decoded again on a fresh pool if a worker died under it."""
        if self.jobs <= 1:
            return fut.result()
        try:
            return watched(fut.result, worker_pool(self.jobs))
        except Exception:  # the pool broke: prepare_rest itself never raises
            return _retry_alone(self.jobs, lambda path, e: self.crashed(first.path, e), prepare_rest, first,
                                self.params)


def prepare_stream(paths: Iterable[str], params: AudioParams, *, segments: int | None, jobs: int,
                   prefetch: int | None = None, overlap: bool = True,
                   early_exit: EarlyExit | None = None) -> DecodeStream:
    """The files of `paths` decoded in input order (see `DecodeStream`)."""
    return DecodeStream(paths, params, segments=segments, jobs=jobs, prefetch=prefetch, overlap=overlap,
                        early_exit=early_exit)


#: How often a wait on the decoding pool looks for a worker that died without the pool noticing.
WATCH_SECONDS = 1.0


def watched(call, executor):
    """``call(timeout)`` until it returns instead of raising TimeoutError, unwedging `executor`
    if a worker died under it.

    A worker killed while it writes its result (SIGKILL from the OOM killer) leaves half a
    message in the pool's result pipe, with the pipe's write lock held: loky's manager
    thread then waits for the rest of the message and the other workers for the lock, so
    the pool is never marked broken and a plain ``Future.result()`` waits forever. A dead
    worker in a pool that is still not broken one look later is that case: the remaining
    workers are killed and the parent's copy of the pipe's write end is closed, so the
    manager thread reads end-of-file, the pool breaks, and the futures raise
    (prepare_stream then decodes the files in flight again on a fresh pool).
    """
    from concurrent.futures import TimeoutError as FutureTimeout

    suspect = False
    while True:
        try:
            return call(WATCH_SECONDS)
        except FutureTimeout:
            pass
        dead = _died(executor)
        if dead and suspect:
            _unwedge(executor)
        suspect = dead


def _all_done(futures: list[Future], timeout: float) -> None:
    """Wait for every future, as Future.result does for one: TimeoutError when some are still running."""
    if wait(futures, timeout=timeout).not_done:
        raise TimeoutError


def _died(executor) -> bool:
    """A worker of `executor` ended abnormally (killed or crashed) and the pool is not marked broken."""
    if executor._flags.broken:
        return False
    return any(p.exitcode not in (None, 0) for p in list((executor._processes or {}).values()))


def _unwedge(executor) -> None:
    import contextlib
    import signal

    for p in list((executor._processes or {}).values()):
        with contextlib.suppress(OSError):
            os.kill(p.pid, signal.SIGKILL)
    with contextlib.suppress(OSError, AttributeError):
        executor._result_queue._writer.close()


def worker_pool(jobs: int):
    """joblib's reusable loky pool, with single-threaded math libraries in the workers."""
    from joblib.externals.loky import get_reusable_executor

    env = {"NUMBA_CACHE_DIR": str(numba_cache_dir()), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    return get_reusable_executor(max_workers=jobs, timeout=300, env=env)


def _retry_alone(jobs: int, crashed, fn, first, *args):
    """`fn(first, *args)` (a worker's step that never raises) on a fresh pool;
    ``crashed(first, error)`` if the worker dies again."""
    try:
        executor = worker_pool(jobs)
        return watched(executor.submit(fn, first, *args).result, executor)
    except Exception as e:
        return crashed(first, e)


#: How decoding and the network share the CPU (``$GENRETAG_SCHEDULE``), the default first.
SCHEDULES = ("workers", "stream", "rounds")


def schedule() -> str:
    """How decoding and the network share the CPU: ``$GENRETAG_SCHEDULE``, one of `SCHEDULES`.

    * ``workers`` (the default): each decoding worker also runs the network on the files it
      decoded, for a model ONNX Runtime runs on the CPU from its recorded export
      (`genretag.pipeline.worker_network`: the cores are never shared between two stages, and
      no audio crosses between processes); any other model as ``stream``.
    * ``stream``: the workers decode while this process runs the network on what they decoded.
      With passive OpenMP waiting this kept both busy and beat ``rounds`` on the CPU both quiet
      and beside busy processes (docs/performance.md).
    * ``rounds``: the workers decode a window of files, then this process runs the network on
      it while they wait, for machines where the two fight over few cores.
    """
    from genretag.pipeline.threads import warn_ignored

    chosen = os.environ.get("GENRETAG_SCHEDULE", "").strip().lower()
    if chosen and chosen not in SCHEDULES:
        warn_ignored("GENRETAG_SCHEDULE", chosen, " or ".join(repr(s) for s in SCHEDULES))
        chosen = ""
    return chosen or SCHEDULES[0]


def default_jobs() -> int:
    """Decoding worker processes: one per core this process may use (taskset, cgroup cpusets), at most 8."""
    from genretag.pipeline.threads import usable_cores

    return min(8, usable_cores())


def classify(
    inputs: Iterable[str | os.PathLike | np.ndarray] | str | os.PathLike | np.ndarray,
    model: Predictor,
    vote: str = "soft",
    segments: int | None = None,
    jobs: int = 1,
    batch_segments: int | None = None,
    early_exit: EarlyExit | None = DEFAULT_EARLY_EXIT,
) -> Iterator[TrackResult]:
    """Classify files (paths: str, bytes or os.PathLike) or waveforms (numpy arrays at the model's
    sample rate, in a list) with a loaded model.

    Yields one TrackResult per input, in input order; a bad file, or an input that is neither a path
    nor a waveform (None, a number, a 0-d or string array), yields a result with `error` set instead
    of raising. A waveform is mono (1-D) or several channels (2-D, either way round: the shorter
    axis is the channels, which are averaged); integer samples are scaled by their type's range. `batch_segments` (default:
    8-16 on CPU, 64 on a GPU) is how many sub-tracks go through the network at
    once. (`genretag.classify` also takes a model name.)
    `early_exit` stops a track's soft vote once it is decided (see
    `genretag.pipeline.early_exit`); with `segments` given, with the hard vote, or
    with ``early_exit=None``, every sub-track runs. On the CPU the network runs on
    `genretag.pipeline.threads.network_threads()` threads for the duration.
    """
    model.tune()
    rule = applied(early_exit, vote, segments)
    decoder: DecodeStream | None = None
    if batch_segments is None:
        batch_segments = default_batch_segments(model)
    if isinstance(inputs, (str, bytes, os.PathLike, np.ndarray)) or not isinstance(inputs, Iterable):
        inputs = [inputs]  # one path, one waveform, or one thing that is neither (its result says so)
    if isinstance(inputs, (list, tuple)) and any(isinstance(x, np.ndarray) for x in inputs):
        prepared: Iterable[Prepared] = (
            prepare_waveform(f"<waveform {i}>", x, model.card.audio, segments)
            if isinstance(x, np.ndarray) else prepare_file(x, model.card.audio, segments)
            for i, x in enumerate(inputs))
    else:  # prepare_file takes str, bytes and os.PathLike paths, and makes anything else an error result
        prepared = decoder = prepare_stream(inputs, model.card.audio, segments=segments, jobs=jobs,
                                            overlap=schedule() != "rounds", early_exit=rule)
    results = run_model(prepared, model, vote=vote, batch_segments=batch_segments, early_exit=rule, decoder=decoder)
    if model.device_type != "cpu":
        yield from results
        return
    with torch_threads(network_threads()), blas_threads(1):
        yield from results


def default_batch_segments(model: Predictor) -> int:
    """Sub-tracks per forward pass.

    On CPU, small batches are faster per sub-track as long as a layer's
    activations stay in the cache: 16 for a ResNet, 8 for musicnn (with only its
    live front-end filters convolved, ``musicnn._ConvBN2d.freq_max``); the timings
    are in docs/performance.md. A GPU wants large batches.
    """
    if model.device_type != "cpu":
        return 64
    lead = model.members[0] if model.members else model  # an ensemble batches as its first member
    return 8 if lead.card.architecture.get("name", "resnet").startswith("musicnn") else 16


def _tune_for_inference(model: Predictor) -> None:
    """genretag 0.1's `tune_for_inference(model)`: `model.tune()`."""
    model.tune()


def __getattr__(name: str):
    if name == "tune_for_inference":
        deprecated(f"{__name__}.tune_for_inference", "genretag.Model.tune()")
        return _tune_for_inference
    raise no_attribute(__name__, name)
