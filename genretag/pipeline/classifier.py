"""The local executor: a model and its settings held once, the result cache in front of one model stream.

`Classifier.classify(paths)` answers a file from the result cache
(`genretag.pipeline.result_cache`) when its audio was classified before with
the same model and settings, and sends every other file through one model
stream (`genretag.pipeline.inference.classify`, or the decoding workers'
`genretag.pipeline.worker_network.NetworkStream` when they run the network),
so the decoding window never drains between cache hits. It satisfies `genretag.pipeline.executor.Executor`,
as the Dask executor does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from genretag.audio.containers import fingerprint
from genretag.errors import FingerprintError
from genretag.pipeline.early_exit import DEFAULT_EARLY_EXIT, applied
from genretag.pipeline.executor import CacheStats
from genretag.pipeline.inference import TrackResult, classify, default_batch_segments, run_model, schedule
from genretag.pipeline.prepare import Prepared, prepare_file
from genretag.pipeline.result_cache import ResultCache
from genretag.pipeline.worker_network import NetworkStream, WorkerModel


class Classifier:
    """A model and how to classify with it, held once: paths in, one TrackResult each out, in input order.

        with Classifier(genretag.load_model(), vote="soft", jobs=4, cache=ResultCache()) as clf:
            for r in clf.classify(paths):      # a stream: any number of paths, memory stays flat
                print(r.path, r.genre)

    With a `cache`, a file whose audio was classified before with the same
    model and settings is answered from it, and new results are stored (in
    small transactions, so an interrupted run keeps what it finished). All the
    files that are not in the cache go through one model stream, so the
    decoding window never drains between them; with more than one job and a
    model ONNX Runtime runs from its export, the decoding workers run the
    network too (`worker_model`). `fingerprints` (default on)
    puts each file's audio fingerprint on its result, which
    `genretag.tags.Tagger` needs; with a cache it is always on. `close()`
    stores what is not stored yet and closes the cache.

    For an executor that runs files one at a time elsewhere (a Dask worker):
    `classify_file(path)` does it all for one file, or split it as
    `prepare(path)` (decoding only: no torch, cheap to run anywhere) then
    `finish(prepared)` (the network and the vote). A `ResultCache` holds a
    SQLite connection, so give each process its own.
    """

    #: Results stored per transaction.
    STORE_EVERY = 16

    def __init__(self, model, *, vote: str = "soft", segments: int | None = None, jobs: int = 1,
                 cache: ResultCache | None = None, batch_segments: int | None = None,
                 fingerprints: bool = True) -> None:
        self.model = model
        self.vote = vote
        self.segments = segments
        self.jobs = jobs
        self.cache = cache
        self.batch_segments = batch_segments
        self.fingerprints = fingerprints or cache is not None
        self.stats = CacheStats()
        # the soft vote without a sub-track count stops early; the rule is part of the cache key
        self.early_exit = applied(DEFAULT_EARLY_EXIT, vote, segments)
        self._cached = (cache.for_model(model, vote=vote, segments=segments, early_exit=self.early_exit)
                        if cache is not None else None)
        self._unstored: list[TrackResult] = []

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Store the results not stored yet, then close the result cache."""
        self.flush()
        if self.cache is not None:
            self.cache.close()

    # ----------------------------------------------------------------- one file

    def lookup(self, path: str) -> tuple[str | None, TrackResult | None]:
        """(audio fingerprint, cached result) for `path`; (None, None) for an unreadable file, or
        without fingerprints.

        The fingerprint is taken without a cache too: results carry it, so the
        tagger writes only a file that still has the audio that was classified.
        """
        if not self.fingerprints:
            return None, None
        try:
            fp = fingerprint(path)
        except (FingerprintError, OSError):
            return None, None
        return fp, self._cached.get(path, fp) if self._cached is not None else None

    def prepare(self, path: str) -> Prepared:
        """Decode `path` into the model's sub-tracks (never raises; never imports torch)."""
        return prepare_file(path, self.model.card.audio, self.segments)

    def finish(self, prepared: Prepared, fp: str | None = None) -> TrackResult:
        """The network and the vote over one decoded file; stored in the cache under `fp` when given."""
        self.model.tune()
        (r,) = run_model([prepared], self.model, vote=self.vote,
                         batch_segments=self.batch_segments or default_batch_segments(self.model),
                         early_exit=self.early_exit)
        r.fingerprint = fp
        self._record(r)
        self.flush()
        return r

    def classify_file(self, path: str) -> TrackResult:
        """One file, start to end: the cache, else decoding, the network and the vote."""
        fp, hit = self.lookup(path)
        if hit is not None:
            self.stats.cached += 1
            return hit
        self.stats.classified += 1
        return self.finish(self.prepare(path), fp)

    # ----------------------------------------------------------------- a stream

    def classify(self, paths: Iterable[str]) -> Iterator[TrackResult]:
        """One result per path, in input order, as soon as it and every earlier one is known.

        Paths are read lazily. Cached answers wait only for the files before
        them that the model is still working on.
        """
        it = iter(paths)
        pending: deque[tuple[str, str | None, TrackResult | None]] = deque()  # read, not yet yielded
        queued: deque[str] = deque()  # misses read by this loop, not yet handed to the model

        def read_one() -> bool:
            p = next(it, None)
            if p is None:
                return False
            fp, hit = self.lookup(p)
            pending.append((p, fp, hit))
            if hit is None:
                queued.append(p)
            return True

        def misses() -> Iterator[str]:  # what the model stream pulls: reads ahead as far as it wants
            while queued or read_one():
                if queued:
                    yield queued.popleft()

        fresh = self._fresh(misses())
        try:
            while pending or read_one():
                _, fp, hit = pending[0]
                if hit is not None:
                    pending.popleft()
                    self.stats.cached += 1
                    yield hit
                    continue
                r = next(fresh)  # the oldest miss's result: the model keeps input order
                r.fingerprint = fp
                pending.popleft()
                self.stats.classified += 1
                self._record(r)
                yield r
        finally:
            fresh.close()  # stopped early: cancel the decoding in flight
            self.flush()

    @property
    def worker_model(self) -> WorkerModel | None:
        """The model as the decoding workers open it when they run the network themselves
        (`genretag.pipeline.worker_network`: more than one job, a model ONNX Runtime runs from its
        export, ``GENRETAG_SCHEDULE`` unset or ``workers``, no `batch_segments`); None when the
        network runs in this process."""
        if self.jobs > 1 and self.batch_segments is None and schedule() == "workers":
            return WorkerModel.of(self.model)
        return None

    def _fresh(self, paths: Iterable[str]) -> Iterator[TrackResult]:
        """The model's results for `paths`, in order, from the workers or from this process."""
        ref = self.worker_model
        if ref is not None:
            return iter(NetworkStream(paths, ref, vote=self.vote, segments=self.segments, jobs=self.jobs,
                                      early_exit=self.early_exit))
        return classify(paths, self.model, vote=self.vote, segments=self.segments, jobs=self.jobs,
                        batch_segments=self.batch_segments, early_exit=self.early_exit)

    # ----------------------------------------------------------------- the cache

    def _record(self, r: TrackResult) -> None:
        if r.fingerprint and self._cached is not None:
            self._unstored.append(r)
            if len(self._unstored) >= self.STORE_EVERY:
                self.flush()

    def flush(self) -> None:
        """Write the results not yet stored to the cache."""
        if self._cached is not None and self._unstored:
            results, self._unstored = self._unstored, []
            self._cached.put_many(results)


def _classify_cached(paths: Iterable[str], model, vote: str = "soft", segments: int | None = None,
                     jobs: int = 1, cache: ResultCache | None = None, stats: CacheStats | None = None,
                     ) -> Iterator[TrackResult]:
    """`Classifier(model, ...).classify(paths)`, counting into `stats`: genretag 0.1's function form,
    served as `genretag.pipeline.cache.classify_cached` with a DeprecationWarning."""
    clf = Classifier(model, vote=vote, segments=segments, jobs=jobs, cache=cache)
    if stats is not None:
        clf.stats = stats
    return clf.classify(paths)
