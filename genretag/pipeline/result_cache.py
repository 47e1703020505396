"""The result cache: a track already classified is not classified again.

Keyed by (audio-payload fingerprint, model id, vote, segments; 0 for the
default early-exit vote), so renaming
or re-tagging a file keeps its entry, while a different model or setting
does not reuse it. An early-exit vote's `vote` names its rule as well
(`vote_key`): another rule can stop at another genre. An executor holds the part of the key its run fixes
once, in `ResultCache.for_model`, and looks results up by fingerprint. SQLite in WAL mode with a busy timeout, so two runs can
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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from genretag.errors import GenretagError, one_line
from genretag.paths import cache_dir
from genretag.pipeline.early_exit import EarlyExit
from genretag.pipeline.inference import TrackResult

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


def model_id(net) -> str:
    """Card name + weights sha256 (+ a digest of the calibration, for a calibrated card): a retrained
    or recalibrated model under the same name is a new model."""
    card = net.card
    sha = card.weights_sha256 or ",".join(getattr(m.card, "weights_sha256", "") for m in net.members)
    calibration = card.extra.get("calibration")
    if calibration:
        arch = json.dumps([card.architecture, calibration], sort_keys=True).encode()
        sha += "+" + hashlib.sha256(arch).hexdigest()[:12]
    return f"{card.name}@{sha}"


def vote_key(vote: str, early_exit: EarlyExit | None) -> str:
    """The `vote` column: the vote, with the early-exit rule it stops by (``soft/early-exit 2,4,6@0.39``).

    The rule lives in the vote's text rather than in columns of its own, so a cache of the same
    layout stays usable: its results of another rule are simply not looked up."""
    if early_exit is None:
        return vote
    return f"{vote}/early-exit {','.join(map(str, early_exit.checkpoints))}@{early_exit.margin!r}"


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

    def for_model(self, model, *, vote: str, segments: int | None, early_exit: EarlyExit | None) -> ModelCache:
        """This cache as a run of `model` with `vote`, `segments` and the `early_exit` rule it runs (None:
        every sub-track) sees it: the key besides the fingerprint, held once (`segments` None, the
        early-exit vote, is stored as 0; the rule goes into the vote, `vote_key`)."""
        return ModelCache(self, model_id(model), vote_key(vote, early_exit), int(segments or 0))

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


@dataclass(frozen=True)
class ModelCache:
    """A `ResultCache` under one model, vote and sub-track count (`ResultCache.for_model`): the
    results of one run's settings, by audio fingerprint."""

    cache: ResultCache
    model_id: str
    vote: str  # with the early-exit rule, when there is one (`vote_key`)
    segments: int  # 0 for the default, early-exit vote (not the same as --segments N)

    def get(self, path: str, fp: str) -> TrackResult | None:
        """The result stored for the audio `fp`, as the result of `path` (carrying `fp`); None without one."""
        hit = self.cache.get(fp, self.model_id, self.vote, self.segments)
        if hit is not None:
            hit.path, hit.fingerprint = path, fp
        return hit

    def put_many(self, results: Iterable[TrackResult]) -> None:
        """Store `results` under their fingerprints (a result without one cannot be looked up: not stored)."""
        self.cache.put_many((r.fingerprint, self.model_id, self.vote, self.segments, r)
                            for r in results if r.fingerprint)
