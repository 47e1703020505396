"""Extra training and test data: short excerpts of GTZAN clips that the main folder lacks.

A folder of excerpts (for example ``../shared/data/gtzan-excerpts``) holds
``<genre>/<genre>.NNNNN.<ext>`` files and a ``manifest.csv`` whose ``ff_subset``
column puts each excerpt in the fault-filtered subset of its whole clip
(``train``, ``valid``, ``test`` or ``excluded``). The rules this module enforces:

- an excerpt belongs to its clip's subset; ``excluded`` excerpts are never used;
- the manifest must agree with the shipped fault-filtered lists, so a test clip
  can never reach training through a mislabelled manifest;
- an excerpt of a clip the main folder holds whole is dropped (the clip itself
  is already there, in the same subset).

Excerpts are measured apart from the tracks: one excerpt is one sub-track, so
its accuracy compares with segment accuracy, never with track accuracy, and the
two are never pooled into one figure. Training and model selection may pool
them (``valid`` tracks plus ``valid`` excerpts).

An excerpt shorter than a model's sub-track is zero-padded at the end, exactly
as ``genretag classify`` pads any short file (:func:`genretag.pipeline.segments.plan_segments`).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from genretag.errors import DatasetError
from genretag.training.dataset import SUBSETS, Track, fault_filtered_lists

MANIFEST = "manifest.csv"
PADDING = "zero-padded at the end to one sub-track (as classify pads a short file)"
_COLUMNS = {"path", "genre", "ff_subset"}
_KNOWN_SUBSETS = (*SUBSETS, "excluded")


@dataclass
class Excerpts:
    """The usable excerpts of a folder, by fault-filtered subset."""

    root: Path
    parts: dict[str, list[Track]] = field(default_factory=dict)
    n_excluded: int = 0  # manifest rows in no fault-filtered list
    n_dropped: int = 0  # excerpts of clips present whole in the main folder

    def tracks(self, *subsets: str) -> list[Track]:
        return [t for s in subsets for t in self.parts.get(s, [])]

    def counts(self) -> dict[str, int]:
        return {s: len(self.parts.get(s, [])) for s in SUBSETS}

    def describe(self, used_for_training: tuple[str, ...]) -> dict:
        """What a model card records about the excerpts it saw."""
        return {"path": str(self.root), "manifest": MANIFEST, **{f"n_{s}": n for s, n in self.counts().items()},
                "n_excluded_unused": self.n_excluded, "n_dropped_clip_present_whole": self.n_dropped,
                "trained_on": list(used_for_training), "test": "held out; measured apart (excerpt level)",
                "padding": PADDING}


def load_excerpts(root: str | os.PathLike, main_tracks: list[Track] = (), split: str = "fault-filtered") -> Excerpts:
    """Read ``<root>/manifest.csv`` and check it against the shipped fault-filtered lists.

    ``main_tracks``: the tracks of the main data folder; excerpts of those clips are dropped.
    Raises :class:`DatasetError` (one line) on a missing or malformed manifest, a missing
    file, or a subset that disagrees with the fault-filtered lists.
    """
    root = Path(root)
    if split != "fault-filtered":
        raise DatasetError("excerpts follow the fault-filtered lists: use them with --split fault-filtered")
    mf = root / MANIFEST
    if not mf.is_file():
        raise DatasetError(f"{root}: no {MANIFEST} (an excerpts folder lists its files and their subsets there)")
    with mf.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = _COLUMNS - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{mf}: missing column(s) {', '.join(sorted(missing))}")
        rows = list(reader)
    lists = {tid: s for s, ids in fault_filtered_lists().items() for tid in ids}
    present = {t.id for t in main_tracks}
    out = Excerpts(root, {s: [] for s in SUBSETS})
    seen: set[str] = set()
    for n, row in enumerate(rows, start=2):
        rel, genre, subset = row["path"].strip(), row["genre"].strip(), row["ff_subset"].strip()
        if subset not in _KNOWN_SUBSETS:
            raise DatasetError(f"{mf}:{n}: unknown ff_subset {subset!r} ({', '.join(_KNOWN_SUBSETS)})")
        path = root / rel
        tid = rel.rsplit(".", 1)[0]
        if tid.split("/", 1)[0] != genre:
            raise DatasetError(f"{mf}:{n}: {rel} is not in the folder of its genre {genre!r}")
        if tid in seen:
            raise DatasetError(f"{mf}:{n}: {tid} listed twice")
        seen.add(tid)
        listed = lists.get(tid, "excluded")
        if listed != subset:
            raise DatasetError(f"{mf}:{n}: {tid} is in the fault-filtered {listed} list, the manifest says {subset}")
        if subset == "excluded":
            out.n_excluded += 1
            continue
        if tid in present:
            out.n_dropped += 1
            continue
        if not path.is_file():
            raise DatasetError(f"{mf}:{n}: {path} does not exist")
        out.parts[subset].append(Track(tid, genre, path))
    return out
