"""The ranges a training setting may take, in one place for both ways a value arrives.

`genretag train` and `genretag tune` give these as their flags' typer bounds, and
:func:`genretag.training.common.config_from_dict` checks a ``--params`` file's values against
the same ranges (the dataclass fields carry them as ``metadata["range"]``), so an out-of-range
label smoothing or sub-track length is refused before any work, whichever way it came. Plain
numbers only: the CLI imports this module at start-up, before torch.
"""

from __future__ import annotations

import warnings
from dataclasses import field
from typing import Any

from genretag.pipeline import threads

#: AdamW's learning rate: below this nothing moves in a run of a few thousand steps.
MIN_LR = 1e-6
#: Label smoothing below 1: at 1 every target is the uniform distribution and nothing is learnt.
MAX_LABEL_SMOOTHING = 0.99
#: Sub-track length: the shortest a model card accepts (ModelCard.validate), and one GTZAN clip.
MIN_SEGMENT_SECONDS, MAX_SEGMENT_SECONDS = 0.05, 30.0

RANGES: dict[str, tuple[float | None, float | None]] = {
    "jobs": (1, threads.MAX_JOBS),  # decoding workers: the bound every command shares
    "lr": (MIN_LR, None),
    "weight_decay": (0.0, None),
    "dropout": (0.0, 1.0),
    "label_smoothing": (0.0, MAX_LABEL_SMOOTHING),
    "segment_seconds": (MIN_SEGMENT_SECONDS, MAX_SEGMENT_SECONDS),
}


def bounded(name: str, default: Any) -> Any:
    """A dataclass field with `default` that carries the range of setting `name` (see RANGES)."""
    return field(default=default, metadata={"range": RANGES[name]})


def out_of_range(name: str, value: float, lo: float | None, hi: float | None) -> str | None:
    """The one-line complaint about `value` for setting `name`, or None when it is in [lo, hi]."""
    if (lo is None or value >= lo) and (hi is None or value <= hi):
        return None
    want = f"{lo:g}-{hi:g}" if lo is not None and hi is not None else f">= {lo:g}" if lo is not None else f"<= {hi:g}"
    return f"{name}={value!r}: out of range (want {want})"


def __getattr__(name: str) -> Any:
    """`MAX_JOBS` moved to `genretag.pipeline.threads` (it bounds every command's decoding workers)."""
    if name == "MAX_JOBS":
        warnings.warn("genretag.training.limits.MAX_JOBS is deprecated and will be removed in genretag 0.4.0; "
                      "use genretag.pipeline.threads.MAX_JOBS", DeprecationWarning, stacklevel=2)
        return threads.MAX_JOBS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
