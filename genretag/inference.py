"""The model stage: batched inference over prepared sub-tracks, and votes.

`classify` streams one `TrackResult` per input, in input order. Decoding runs
in worker processes (joblib/loky) while this process batches sub-tracks of
many files through the network, so memory stays flat however large the
library is: only a bounded number of decoded files is ever in flight.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from genretag.card import AudioParams
from genretag.model import LoadedNet, load_net
from genretag.prepare import Prepared, prepare_file, prepare_waveform
from genretag.segments import vote as combine


@dataclass
class TrackResult:
    """The answer for one input file (or waveform)."""

    path: str
    genre: str | None
    confidence: float | None
    probabilities: dict[str, float] = field(default_factory=dict)
    segments: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def top(self, k: int = 1) -> list[tuple[str, float]]:
        """The k most probable labels with their probabilities."""
        ranked = sorted(self.probabilities.items(), key=lambda kv: -kv[1])
        return ranked[:max(1, k)]

    def to_json(self) -> dict:
        """Exactly the keys of the JSONL output."""
        return {"path": self.path, "genre": self.genre, "confidence": self.confidence,
                "probabilities": self.probabilities, "segments": self.segments, "error": self.error}


def result_from_probs(path: str, labels: list[str], seg_probs: np.ndarray, vote: str) -> TrackResult:
    """Vote (segments, labels) probabilities into one TrackResult."""
    dist = combine(seg_probs, vote)
    i = int(np.argmax(dist))
    probs = {lab: round(float(p), 6) for lab, p in zip(labels, dist)}
    return TrackResult(path, labels[i], round(float(dist[i]), 6), probs, int(seg_probs.shape[0]), None)


def error_result(path: str, error: str) -> TrackResult:
    return TrackResult(path, None, None, {}, 0, error)


def run_model(prepared: Iterable[Prepared], net: LoadedNet, vote: str = "soft",
              batch_segments: int = 64) -> Iterator[TrackResult]:
    """Batch the sub-tracks of consecutive files through the network; yield in order."""
    pending: list[Prepared] = []
    n_pending = 0

    def flush() -> Iterator[TrackResult]:
        nonlocal pending, n_pending
        good = [p for p in pending if p.waves is not None]
        probs = net.predict(np.concatenate([p.waves for p in good])) if good else None
        pos = 0
        for p in pending:
            if p.waves is None:
                yield error_result(p.path, p.error or "cannot decode")
                continue
            n = p.waves.shape[0]
            yield result_from_probs(p.path, net.labels, probs[pos:pos + n], vote)
            pos += n
        pending, n_pending = [], 0

    for p in prepared:
        pending.append(p)
        n_pending += 0 if p.waves is None else p.waves.shape[0]
        if n_pending >= batch_segments:
            yield from flush()
    if pending:
        yield from flush()


def prepare_stream(paths: Iterable[str], params: AudioParams, segments: int | None, jobs: int,
                   prefetch: int | None = None) -> Iterator[Prepared]:
    """`prepare_file` over `paths`, in input order, with at most `prefetch` files in flight.

    With jobs > 1 the files are decoded by a pool of `jobs` loky worker
    processes (joblib's reusable executor, so a second call reuses warm
    workers). The window is bounded on purpose: `joblib.Parallel(...,
    return_as="generator")` dispatches a new task whenever a worker finishes,
    not when the consumer takes a result, so with a model slower than
    decoding it decodes the whole library ahead and memory grows with the
    library (measured: +417 MB after 200 clips with a 0.1 s/file consumer;
    2.6 MB per decoded clip). Here a new file is submitted only when the
    consumer takes one, so memory is flat; the window (default: 4 files per
    worker, at least 16, i.e. several model batches) keeps the workers busy
    while the model runs.

    A worker that dies (a decoder segfault, the OOM killer) takes the pool
    and the files in flight with it: the file at the head is then retried on
    a fresh pool, and becomes an error result only if that fails too; the
    other files in flight are resubmitted.
    """
    if jobs <= 1:
        for p in paths:
            yield prepare_file(p, params, segments)
        return
    prefetch = max(prefetch or 4 * jobs, 16)
    window: deque[tuple[str, Future]] = deque()
    it = iter(paths)
    executor = _executor(jobs)

    def submit() -> bool:
        nonlocal executor
        path = next(it, None)
        if path is None:
            return False
        try:
            fut = executor.submit(prepare_file, path, params, segments)
        except Exception:  # the pool broke since the last submission: start a fresh one
            executor = _executor(jobs)
            fut = executor.submit(prepare_file, path, params, segments)
        window.append((path, fut))
        return True

    try:
        while len(window) < prefetch and submit():
            pass
        while window:
            path, fut = window.popleft()
            try:
                result = fut.result()
            except Exception:  # the pool broke: prepare_file itself never raises
                result = _retry_alone(path, params, segments, jobs)
                executor = _executor(jobs)
                window = deque((p, f) if f.done() and f.exception() is None
                               else (p, executor.submit(prepare_file, p, params, segments))
                               for p, f in window)
            submit()  # keep the workers busy while the consumer runs the model
            yield result
    finally:
        for _, fut in window:  # consumer stopped early (or interrupted)
            fut.cancel()


def _executor(jobs: int):
    """joblib's reusable loky pool, with single-threaded math libraries in the workers."""
    from joblib.externals.loky import get_reusable_executor

    cache = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "genretag-numba")
    env = {"NUMBA_CACHE_DIR": cache, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    return get_reusable_executor(max_workers=jobs, timeout=300, env=env)


def _retry_alone(path: str, params: AudioParams, segments: int | None, jobs: int) -> Prepared:
    try:
        return _executor(jobs).submit(prepare_file, path, params, segments).result()
    except Exception as e:
        return Prepared(path, None, [], 0.0, f"cannot decode: the decoder crashed ({type(e).__name__})")


def default_jobs() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def classify(
    inputs: Iterable[str | os.PathLike | np.ndarray] | str | os.PathLike | np.ndarray,
    model: LoadedNet | str | None = None,
    vote: str = "soft",
    segments: int | None = None,
    jobs: int = 1,
    device: str = "auto",
    batch_segments: int | None = None,
) -> Iterator[TrackResult]:
    """Classify files (paths) or waveforms (mono arrays at the model's sample rate).

    Yields one TrackResult per input, in input order; a bad file yields a
    result with `error` set instead of raising. `batch_segments` (default:
    16 on CPU, 64 on a GPU) is how many sub-tracks go through the network at once.
    """
    net = model if isinstance(model, LoadedNet) else load_net(model, device)
    tune_for_inference(net)
    if batch_segments is None:
        batch_segments = default_batch_segments(net)
    if isinstance(inputs, (str, os.PathLike, np.ndarray)):
        inputs = [inputs]
    if isinstance(inputs, (list, tuple)) and any(isinstance(x, np.ndarray) for x in inputs):
        prepared: Iterable[Prepared] = (
            prepare_waveform(f"<waveform {i}>", x, net.card.audio, segments)
            if isinstance(x, np.ndarray) else prepare_file(x, net.card.audio, segments)
            for i, x in enumerate(inputs))
    else:
        prepared = prepare_stream((os.fspath(x) for x in inputs), net.card.audio, segments, jobs)
    yield from run_model(prepared, net, vote, batch_segments)


def default_batch_segments(net: LoadedNet) -> int:
    """Sub-tracks per forward pass.

    On CPU, small batches are faster per sub-track: at 64 sub-tracks the
    first stage's activations (64 x 32 x 64 x 65 floats, 34 MB) no longer fit
    in the cache, and the ResNet ran ~1.5x slower per sub-track than at 10-20
    (see bench/README.md). A GPU wants large batches.
    """
    return 16 if net.device.type == "cpu" else 64


def tune_for_inference(net: LoadedNet) -> None:
    """Store a CPU ResNet's conv weights channels-last (NHWC), once.

    For the ResNet, oneDNN's convolutions run ~1.2-1.5x faster on NHWC than
    on NCHW here (musicnn's are ~4% slower, so it is left alone), and the
    output does not change beyond float rounding (max |diff| ~1e-7 in the
    probabilities): only the memory layout of the weights changes, so the
    state dict, the card and the weights' sha256 are untouched.
    """
    import torch

    for m in (net, *net.members):
        if (m.device.type == "cpu" and m.card.architecture.get("name", "resnet") == "resnet"
                and not getattr(m, "_channels_last", False)):
            m.net.to(memory_format=torch.channels_last)
            m._channels_last = True
