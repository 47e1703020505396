"""The result cache: a track already classified is not classified again.

Keyed by (audio-payload fingerprint, model id, vote, segments), so renaming
or re-tagging a file keeps its entry, while a different model or setting
does not reuse it. SQLite in WAL mode with a busy timeout, so two runs can
share one cache; entries are committed per chunk, so an interrupted run
keeps what it finished and the next one resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from genretag.audio.containers import FingerprintError, fingerprint
from genretag.paths import cache_dir
from genretag.pipeline.inference import TrackResult, classify

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
    """Card name + weights sha256: a retrained model under the same name is a new model."""
    card = net.card
    sha = card.weights_sha256 or ",".join(getattr(m.card, "weights_sha256", "") for m in net.members)
    return f"{card.name}@{sha}"


class ResultCache:
    """SQLite (fingerprint, model id, vote, segments) -> TrackResult JSON."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        self.db.execute("PRAGMA busy_timeout = 30000")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute(_SCHEMA)

    def get(self, fp: str, model: str, vote: str, segments: int) -> TrackResult | None:
        row = self.db.execute(
            "SELECT result FROM results WHERE fingerprint=? AND model_id=? AND vote=? AND segments=?",
            (fp, model, vote, segments)).fetchone()
        if row is None:
            return None
        try:
            d = json.loads(row[0])
            return TrackResult("", d["genre"], d["confidence"], d.get("probabilities", {}),
                               d.get("segments", 0), None)
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
        if not rows:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?)", rows)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self.db.close()


@dataclass
class CacheStats:
    """How a run got its results: from the cache, or from the model."""

    cached: int = 0
    classified: int = 0


def classify_cached(paths: Iterable[str], net, vote: str = "soft", segments: int | None = None,
                    jobs: int = 1, cache: ResultCache | None = None, stats: CacheStats | None = None,
                    chunk: int = 128) -> Iterator[TrackResult]:
    """Like `genretag.pipeline.inference.classify`, but only files not in the cache reach the model.

    Streams in input order, a chunk of inputs at a time, so memory stays flat
    on huge libraries. With `cache=None` everything is classified.
    """
    stats = stats if stats is not None else CacheStats()
    n_seg = int(segments or net.card.audio.max_segments)
    mid = model_id(net)
    batch: list[str] = []
    for p in paths:
        batch.append(p)
        if len(batch) >= chunk:
            yield from _chunk(batch, net, vote, segments, n_seg, jobs, cache, stats, mid)
            batch = []
    if batch:
        yield from _chunk(batch, net, vote, segments, n_seg, jobs, cache, stats, mid)


def _chunk(batch: list[str], net, vote: str, segments: int | None, n_seg: int, jobs: int,
           cache: ResultCache | None, stats: CacheStats, mid: str) -> Iterator[TrackResult]:
    items: list[tuple[str, str | None, TrackResult | None]] = []
    for p in batch:
        fp = hit = None
        if cache is not None:
            try:
                fp = fingerprint(p)
            except (FingerprintError, OSError):
                fp = None
            hit = cache.get(fp, mid, vote, n_seg) if fp else None
            if hit is not None:
                hit.path = p
        items.append((p, fp, hit))
    misses = [p for p, _, hit in items if hit is None]
    fresh = classify(misses, net, vote=vote, segments=segments, jobs=jobs) if misses else iter(())
    to_store = []
    try:
        for p, fp, hit in items:
            if hit is not None:
                stats.cached += 1
                yield hit
                continue
            r = next(fresh)
            stats.classified += 1
            if fp and cache is not None:
                to_store.append((fp, mid, vote, n_seg, r))
                if len(to_store) >= 16:
                    cache.put_many(to_store)
                    to_store = []
            yield r
    finally:
        if cache is not None and to_store:
            cache.put_many(to_store)
