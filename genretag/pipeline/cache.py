"""The result cache: a track already classified is not classified again.

Keyed by (audio-payload fingerprint, model id, vote, segments; 0 for the
default early-exit vote), so renaming
or re-tagging a file keeps its entry, while a different model or setting
does not reuse it. SQLite in WAL mode with a busy timeout, so two runs can
share one cache; entries are committed per chunk, so an interrupted run
keeps what it finished and the next one resumes where it stopped.

A cache file SQLite reports as corrupt (not a database, a damaged or
truncated page) is moved aside as `<name>.corrupt-<UTC time>` (with its
`-wal`/`-shm` files) and an empty cache is started in its place, with one
warning: the run classifies as if the cache were new. A cache that cannot be
used otherwise (a table of another layout, made by another version; a file
another writer keeps locked for longer than the busy timeout; a read-only
file) is not touched: opening it raises `UnusableCache`, and an error in use
gives one warning, after which the run goes on without the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from genretag.audio.containers import fingerprint
from genretag.deprecation import deprecated, no_attribute
from genretag.errors import FingerprintError, GenretagError, one_line
from genretag.paths import cache_dir
from genretag.pipeline.early_exit import DEFAULT_EARLY_EXIT
from genretag.pipeline.inference import TrackResult, classify, default_batch_segments, run_model
from genretag.pipeline.prepare import Prepared, prepare_file

log = logging.getLogger(__name__)

#: SQLite result codes that mean the file itself is damaged (SQLITE_CORRUPT, SQLITE_NOTADB).
_CORRUPT_CODES = frozenset({11, 26})

class UnusableCache(GenretagError):
    """A result cache that is not corrupt but cannot be used: another layout, locked, read-only."""


#: The columns of `results`, in order: a table with others is another version's cache.
_COLUMNS = ("fingerprint", "model_id", "vote", "segments", "result", "created")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    fingerprint TEXT NOT NULL,
    model_id TEXT NOT NULL,
    vote TEXT NOT NULL,
    segments INTEGER NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (fingerprint, model_id, vote, segments)
)
"""


def default_cache_path() -> Path:
    return cache_dir() / "results.sqlite"


def model_id(model) -> str:
    """Card name + weights sha256 (+ a digest of the calibration, for a calibrated card): a retrained
    or recalibrated model under the same name is a new model."""
    card = model.card
    sha = card.weights_sha256 or ",".join(getattr(m.card, "weights_sha256", "") for m in model.members)
    calibration = card.extra.get("calibration")
    if calibration:
        arch = json.dumps([card.architecture, calibration], sort_keys=True).encode()
        sha += "+" + hashlib.sha256(arch).hexdigest()[:12]
    return f"{card.name}@{sha}"


class ResultCache:
    """SQLite (fingerprint, model id, vote, segments) -> TrackResult JSON."""

    def __init__(self, path: str | os.PathLike | None = None, busy_timeout: float = 30.0) -> None:
        """Open (or create) the cache at `path`; `busy_timeout`: seconds to wait for another writer.

        Raises `UnusableCache` for a cache that is there but cannot be used (see the module)."""
        self.path = Path(path) if path else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout = busy_timeout
        self.moved_aside: Path | None = None  # where a corrupt cache file went, when one was found
        self.db: sqlite3.Connection | None = None  # None once the cache turned out unusable in use
        try:
            self.db = self._connect()
        except sqlite3.DatabaseError as e:
            if not _is_corrupt(e):
                raise UnusableCache(f"result cache {self.path}: {one_line(e)}") from None
            self.db = self._rebuild(e)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), timeout=self.busy_timeout, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            # looked at before anything is written: another version's cache is left as it is
            columns = tuple(row[1] for row in db.execute("PRAGMA table_info(results)"))
            if columns and columns != _COLUMNS:
                raise UnusableCache(f"result cache {self.path} has another layout (columns {', '.join(columns)}),"
                                    " made by another version of genretag")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _rebuild(self, err: sqlite3.DatabaseError, db: sqlite3.Connection | None = None) -> sqlite3.Connection:
        """Move the corrupt file (and its WAL) aside, warn once, and start an empty cache."""
        if db is not None:
            db.close()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):  # a stale WAL must not be replayed into the new file
            src = self.path.with_name(self.path.name + suffix)
            try:
                os.replace(src, aside.with_name(aside.name + suffix))
            except FileNotFoundError:
                pass
        self.moved_aside = aside
        log.warning("result cache %s is corrupt (%s): moved aside to %s; starting an empty cache",
                    self.path, err, aside.name)
        return self._connect()

    def _recover(self, err: sqlite3.DatabaseError) -> bool:
        """After an error in use: rebuild once when the file is corrupt (True), else False."""
        if not _is_corrupt(err) or self.moved_aside is not None:
            return False
        self.db = self._rebuild(err, self.db)
        return True

    def _give_up(self, err: sqlite3.DatabaseError) -> None:
        """An error in use that rebuilding does not cure (locked, read-only): one warning, then no cache."""
        log.warning("result cache %s cannot be used (%s): going on without it", self.path, one_line(err))
        self.close()

    def get(self, fp: str, model: str, vote: str, segments: int) -> TrackResult | None:
        if self.db is None:
            return None
        try:
            row = self.db.execute(
                "SELECT result FROM results WHERE fingerprint=? AND model_id=? AND vote=? AND segments=?",
                (fp, model, vote, segments)).fetchone()
        except sqlite3.DatabaseError as e:
            if not self._recover(e):
                self._give_up(e)
            return None  # the new cache is empty, or there is none
        if row is None:
            return None
        try:
            d = json.loads(row[0])
            return TrackResult("", d["genre"], d["confidence"], d.get("probabilities", {}),
                               d.get("segments", 0), None, confidences=d.get("confidences", {}))
        except (ValueError, KeyError, TypeError):
            return None

    def put_many(self, items: Iterable[tuple[str, str, str, int, TrackResult]]) -> None:
        """Store successful results (errors are not cached: the next run retries them)."""
        rows = []
        for fp, model, vote, segments, r in items:
            if r.ok:
                d = r.to_json()
                d.pop("path", None)
                rows.append((fp, model, vote, segments, json.dumps(d), time.time()))
        if not rows or self.db is None:
            return
        try:
            self._insert(rows)
        except sqlite3.DatabaseError as e:
            if not self._recover(e):
                self._give_up(e)
                return
            try:
                self._insert(rows)
            except sqlite3.DatabaseError as e2:
                self._give_up(e2)

    def _insert(self, rows: list[tuple]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)", rows)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        return 0 if self.db is None else self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


def _is_corrupt(e: sqlite3.DatabaseError) -> bool:
    """A damaged file (rebuild it), not a busy or read-only one (report it)."""
    return getattr(e, "sqlite_errorcode", None) in _CORRUPT_CODES or (
        type(e) is sqlite3.DatabaseError and ("malformed" in str(e) or "not a database" in str(e)))


@dataclass
class CacheStats:
    """How a run got its results: from the cache, or from the model."""

    cached: int = 0
    classified: int = 0


class Classifier:
    """A model and how to classify with it, held once: paths in, one TrackResult each out, in input order.

        clf = Classifier(genretag.load_model(), vote="soft", jobs=4, cache=ResultCache())
        for r in clf.classify(paths):          # a stream: any number of paths, memory stays flat
            print(r.path, r.genre)

    With a `cache`, a file whose audio was classified before with the same
    model and settings is answered from it, and new results are stored (in
    small transactions, so an interrupted run keeps what it finished). All the
    files that are not in the cache go through one `classify` stream, so the
    decoding window never drains between them.

    For an executor that runs files one at a time elsewhere (a Dask worker):
    `classify_file(path)` does it all for one file, or split it as
    `prepare(path)` (decoding only: no torch, cheap to run anywhere) then
    `finish(prepared)` (the network and the vote). A `ResultCache` holds a
    SQLite connection, so give each process its own.
    """

    #: Results stored per transaction.
    STORE_EVERY = 16

    def __init__(self, model, *, vote: str = "soft", segments: int | None = None, jobs: int = 1,
                 cache: ResultCache | None = None, batch_segments: int | None = None) -> None:
        self.model = model
        self.vote = vote
        self.segments = segments
        self.jobs = jobs
        self.cache = cache
        self.batch_segments = batch_segments
        self.stats = CacheStats()
        self.model_id = model_id(model)
        # the cache key's segment count: 0 for the default, early-exit vote (not the same as --segments N)
        self.n_segments = int(segments or 0)
        self.early_exit = DEFAULT_EARLY_EXIT if segments is None else None
        self._unstored: list[tuple[str, str, str, int, TrackResult]] = []

    # ----------------------------------------------------------------- one file

    def lookup(self, path: str) -> tuple[str | None, TrackResult | None]:
        """(audio fingerprint, cached result) for `path`; (None, None) for an unreadable file.

        The fingerprint is taken without a cache too: results carry it, so the
        tagger writes only a file that still has the audio that was classified.
        """
        try:
            fp = fingerprint(path)
        except (FingerprintError, OSError):
            return None, None
        hit = self.cache.get(fp, self.model_id, self.vote, self.n_segments) if self.cache is not None else None
        if hit is not None:
            hit.path = path
            hit.fingerprint = fp
        return fp, hit

    def prepare(self, path: str) -> Prepared:
        """Decode `path` into the model's sub-tracks (never raises; never imports torch)."""
        return prepare_file(path, self.model.card.audio, self.segments)

    def finish(self, prepared: Prepared, fp: str | None = None) -> TrackResult:
        """The network and the vote over one decoded file; stored in the cache under `fp` when given."""
        self.model.tune()
        (r,) = run_model([prepared], self.model, self.vote, self.batch_segments or default_batch_segments(self.model),
                         self.early_exit)
        r.fingerprint = fp
        self._record(fp, r)
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

        fresh = classify(misses(), self.model, vote=self.vote, segments=self.segments, jobs=self.jobs,
                         batch_segments=self.batch_segments)
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
                self._record(fp, r)
                yield r
        finally:
            fresh.close()  # stopped early: cancel the decoding in flight
            self.flush()

    # ----------------------------------------------------------------- the cache

    def _record(self, fp: str | None, r: TrackResult) -> None:
        if fp and self.cache is not None:
            self._unstored.append((fp, self.model_id, self.vote, self.n_segments, r))
            if len(self._unstored) >= self.STORE_EVERY:
                self.flush()

    def flush(self) -> None:
        """Write the results not yet stored to the cache."""
        if self.cache is not None and self._unstored:
            rows, self._unstored = self._unstored, []
            self.cache.put_many(rows)


def _classify_cached(paths: Iterable[str], model, vote: str = "soft", segments: int | None = None,
                     jobs: int = 1, cache: ResultCache | None = None, stats: CacheStats | None = None,
                     ) -> Iterator[TrackResult]:
    """genretag 0.1's `classify_cached`: `Classifier(model, ...).classify(paths)`, counting into `stats`."""
    clf = Classifier(model, vote=vote, segments=segments, jobs=jobs, cache=cache)
    if stats is not None:
        clf.stats = stats
    return clf.classify(paths)


def __getattr__(name: str):
    if name == "classify_cached":
        deprecated(f"{__name__}.classify_cached", "genretag.pipeline.cache.Classifier(model, ...).classify(paths)")
        return _classify_cached
    raise no_attribute(__name__, name)
