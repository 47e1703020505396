"""The list of accepted files a review page downloads, and what `tag --only` checks against it.

One JSON line per ticked file: `path` (absolute; `path_bytes` holds the exact bytes of a name that
is not UTF-8), `proposed` (the genres the reader saw) and, when the page knew it, `fingerprint` (the
audio that was classified). Any genretag result line (`classify` or `tag` JSON lines) names a file
too, so a filtered results file is a list as well.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from genretag.report.rows import ResultsError, exact_path, read_json_lines
from genretag.tags.plan import SKIP_CHANGED, SKIP_NOT_AS_REVIEWED, WRITE, TagPlan


@dataclass
class AcceptedFile:
    path: str
    proposed: list[str] | None = None  # None: the line did not say; any proposal is accepted
    fingerprint: str | None = None


class AcceptedList:
    """The files of an accepted list, in the list's order (each once), and the checks on their plans."""

    def __init__(self, files: list[AcceptedFile]) -> None:
        self.files: dict[str, AcceptedFile] = {}
        for f in files:
            self.files.setdefault(f.path, f)

    @property
    def paths(self) -> list[str]:
        return list(self.files)

    def check(self, plan: TagPlan) -> TagPlan:
        """A planned write that is not what was reviewed becomes a skip: the file's audio changed since the
        page's classification, or the genres to write are not the ones the reader accepted."""
        entry = self.files.get(plan.path)
        if plan.action != WRITE or entry is None:
            return plan
        if entry.fingerprint and plan.fingerprint and entry.fingerprint != plan.fingerprint:
            plan.action = SKIP_CHANGED
        elif entry.proposed is not None and [p.lower() for p in plan.proposed] != [p.lower() for p in entry.proposed]:
            plan.action = SKIP_NOT_AS_REVIEWED
        if plan.action != WRITE:
            plan.new_values = []
        return plan


def _entry(text: str) -> AcceptedFile:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("path"), str) or not obj["path"]:
        raise ValueError("not an object with a path")
    proposed = obj.get("proposed")
    if proposed is not None and not (isinstance(proposed, list) and all(isinstance(p, str) for p in proposed)):
        raise ValueError("proposed is not a list of strings")
    fp = obj.get("fingerprint")
    if fp is not None and not isinstance(fp, str):
        raise ValueError("fingerprint is not a string")
    return AcceptedFile(exact_path(obj), proposed, fp)


def read_accepted(path: str | os.PathLike) -> AcceptedList:
    """Read an accepted list; ResultsError (exit 2) names the first line that is not one, or an empty list."""
    files = read_json_lines(path, _entry, "an accepted-file")
    if not files:
        raise ResultsError(f"{os.fsdecode(path)}: no files in the list")
    return AcceptedList(files)
