"""What the commands need of an executor: paths in, one `TrackResult` each out, in input order.

`genretag.pipeline.classifier.Classifier` runs on this machine and
`genretag.pipeline.cluster.ClusterExecutor` on a Dask cluster; both satisfy
`Executor`, so `genretag classify`, `genretag tag` and a plugin have one code
path whichever runs the work (`genretag.cli.common.open_executor` picks it).
This module imports neither, nor torch: naming the interface costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from genretag.pipeline.inference import TrackResult


@dataclass
class CacheStats:
    """How a run got its results: from the cache, or from the model."""

    cached: int = 0
    classified: int = 0


@runtime_checkable
class Executor(Protocol):
    """A model and its settings, held once, and somewhere to run them.

    `classify(paths)` yields one result per path, in input order, reading the
    paths lazily; closing the stream early (or Ctrl-C) stops the work in
    flight. `stats` counts the results that came from the result cache and
    those the model computed. `close()` stores what is not stored yet and lets
    go of what the executor holds (its result cache, a client it opened).
    """

    stats: CacheStats

    def classify(self, paths: Iterable[str]) -> Iterator[TrackResult]: ...

    def close(self) -> None: ...
