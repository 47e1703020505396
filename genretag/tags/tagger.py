"""The Tagger: classification results in, genre writes (or a dry run) out.

It holds the tagging options once (policy, confidence, names, separator,
journal, ...) so each file is one `plan(result)` and one `apply(plan)`:

    from genretag.tags import Tagger
    tagger = Tagger(policy="overwrite", top_k=2, min_confidence=0.3, write=True)
    for plan in tagger.run(results):        # TrackResults, e.g. from classify()
        print(plan.path, plan.action, plan.error or "")

Nothing a bad file does stops the others: every problem becomes the plan's
`error` (action "error") or a skip with its reason.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from genretag.audio.containers import fingerprint
from genretag.errors import FingerprintError
from genretag.tags.errors import ChangedSinceClassified, TagError
from genretag.tags.fields import read_tags, readable_values
from genretag.tags.journal import JournalWriter
from genretag.tags.plan import (
    DEFAULT_MIN_CONFIDENCE,
    ERROR,
    POLICIES,
    SKIP_CHANGED,
    SKIP_HARD_LINK,
    WRITE,
    WRITTEN,
    TagPlan,
    plan_tag,
)
from genretag.tags.safe_write import cleanup_stray_temps, write_genres_safely, write_problem


@dataclass(kw_only=True)  # nine settings, three of them flags in a row: by name only, never by position
class Tagger:
    """Plans and applies genre writes for classified files.

    `write=False` is a dry run: `apply` says what `write=True` would do,
    including the errors it would run into, and changes nothing. A hard
    link (a file with several names) is skipped unless `split_hard_links`:
    the write replaces this name's file, and the other names keep the old one.
    """

    policy: str = "keep-existing"
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    top_k: int = 1
    names: dict[str, str] = field(default_factory=dict)
    separator: str | None = None
    keep_mtime: bool = False
    journal: JournalWriter | str | os.PathLike | None = None
    write: bool = False
    split_hard_links: bool = False
    _times: dict[str, tuple[int, int]] = field(default_factory=dict, init=False, repr=False)
    _cleaned: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r} (one of {', '.join(POLICIES)})")
        if self.separator == "":
            raise ValueError("the separator must not be empty")
        if self.write and not isinstance(self.journal, JournalWriter):
            self.journal = JournalWriter(self.journal)

    def note_times_and_clean(self, path: str) -> list[Path]:
        """Call before `path` is read or classified: notes its times (keep_mtime) and,
        once per folder, removes temporary files killed runs left there. Returns those removed.

        A dry run does neither. The times are taken before anything reads the file, so that
        --keep-mtime gives back the access time the user's file had."""
        if not self.write:
            return []
        if self.keep_mtime:
            try:
                st = os.stat(path)
                self._times[path] = (st.st_atime_ns, st.st_mtime_ns)
            except OSError:
                pass
        folder = os.path.dirname(os.path.abspath(path))
        if folder in self._cleaned:
            return []
        self._cleaned.add(folder)
        return cleanup_stray_temps(folder)

    def prepare(self, path: str) -> list[Path]:
        """Deprecated name of `note_times_and_clean` (it is not a `Classifier.prepare`)."""
        warnings.warn("genretag.tags.Tagger.prepare is deprecated and will be removed in genretag 0.4.0; "
                      "use Tagger.note_times_and_clean", DeprecationWarning, stacklevel=2)
        return self.note_times_and_clean(path)

    def plan(self, result) -> TagPlan:
        """What to do with one classified file (reads its tags; changes nothing)."""
        path = result.path
        if not result.ok:
            return TagPlan(ERROR, path=path, error=result.error, confidence=result.confidence)
        try:
            current = read_tags(path)
        except TagError as e:
            return TagPlan(ERROR, path=path, error=str(e), confidence=result.confidence)
        plan = plan_tag(result, readable_values(current, self.separator), policy=self.policy,
                        min_confidence=self.min_confidence, top_k=self.top_k, names=self.names)
        plan.path = path
        plan.fingerprint = getattr(result, "fingerprint", None)
        if plan.action != WRITE:
            plan.new_values = []
            return plan
        try:
            st = os.stat(path)
        except OSError as e:
            return plan.failed(e.strerror or str(e))
        if st.st_nlink > 1 and not self.split_hard_links:
            plan.action = SKIP_HARD_LINK  # a write replaces this name's file: the other names would keep the old
            return plan
        problem = write_problem(path, st)
        if problem:
            return plan.failed(problem)
        if plan.fingerprint is not None:
            try:
                if fingerprint(path) != plan.fingerprint:
                    plan.action = SKIP_CHANGED
            except FingerprintError as e:
                return plan.failed(str(e))
        return plan

    def apply(self, plan: TagPlan) -> TagPlan:
        """Do a planned write (a dry run returns the plan as it is). Never raises for a bad file."""
        if plan.action != WRITE or not self.write:
            return plan
        try:
            write_genres_safely(plan.path, plan.new_values, separator=self.separator, keep_mtime=self.keep_mtime,
                                before_replace=self.journal, times=self._times.pop(plan.path, None),
                                expect_audio=plan.fingerprint)
        except ChangedSinceClassified:
            plan.action = SKIP_CHANGED
            return plan
        except TagError as e:
            return plan.failed(str(e))
        plan.action = WRITTEN
        return plan

    def run(self, results: Iterable) -> Iterator[TagPlan]:
        """`apply(plan(r))` for each result, in order."""
        for r in results:
            yield self.apply(self.plan(r))
