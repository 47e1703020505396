"""beets plugin: genres from the audio itself, with genretag's local model.

`beet genretag [QUERY]` classifies the matched items and sets their `genres`
by policy; with `genretag: {auto: yes}` imported items are classified as
well. The plugin decides *what* the genres are; beets decides whether and
how they reach the files (`import.write`, `-w`/`-W`, its own write path), so
the plugin never opens a file for writing. torch is imported only when
something is classified: with the plugin enabled, other beets commands start
as fast as before.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from beets import ui
from beets.dbcore import types
from beets.plugins import BeetsPlugin
from beets.util import displayable_path

from genretag.errors import GenretagError
from genretag.tags.plan import (
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_NAMES,
    ERROR,
    POLICIES,
    SKIP_BELOW,
    SKIP_HAS_GENRE,
    SKIP_UNCHANGED,
    WRITE,
    genre_name,
    name_problem,
    plan_tag,
)

#: The flexible attributes stored on every classified item, whatever the policy.
GENRE, CONFIDENCE, MODEL = "genretag_genre", "genretag_confidence", "genretag_model"

#: Defaults of the `genretag:` configuration section (docs/beets.md).
DEFAULTS = {
    "auto": False,  # classify on import
    "model": None,  # genretag's bundled default
    "top_k": 1,
    "min_confidence": DEFAULT_MIN_CONFIDENCE,
    "policy": "keep-existing",
    "names": dict(DEFAULT_NAMES),
    "device": "auto",
    "jobs": None,  # genretag's default: one decoding process per core, at most 8
}


@dataclass(frozen=True)
class Settings:
    """The plugin configuration, read and checked once per run."""

    model: str | None
    top_k: int
    min_confidence: float
    policy: str
    names: dict[str, str]
    device: str
    jobs: int | None

    @classmethod
    def from_config(cls, config) -> Settings:
        """Typed values from the `genretag:` view; a bad value is one `UserError` line."""
        top_k = config["top_k"].get(int)
        min_confidence = float(config["min_confidence"].as_number())
        jobs = config["jobs"].get()
        if top_k < 1:
            raise ui.UserError(f"genretag: top_k must be at least 1, not {top_k}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ui.UserError(f"genretag: min_confidence must be between 0 and 1, not {min_confidence}")
        if jobs is not None and (not isinstance(jobs, int) or jobs < 1):
            raise ui.UserError(f"genretag: jobs must be a whole number of at least 1, not {jobs!r}")
        names = {str(k): "" if v is None else str(v) for k, v in config["names"].get(dict).items()}
        for label, name in names.items():  # an empty name would erase the genre under --force
            why = name_problem(name)
            if why:
                raise ui.UserError(f"genretag: names: {label}: {why}")
        model = config["model"].get()
        return cls(model=None if model is None else str(model), top_k=top_k, min_confidence=min_confidence,
                   policy=config["policy"].as_choice(POLICIES), names=names,
                   device=config["device"].as_str(), jobs=jobs)


class GenretagPlugin(BeetsPlugin):
    """`beet genretag` and the import hook; settings in the `genretag:` section."""

    #: The confidence shows with 3 decimals (`0.593`), as precise as the `..0.6` queries it is meant for.
    item_types = {GENRE: types.STRING, CONFIDENCE: types.Float(3), MODEL: types.STRING}

    def __init__(self) -> None:
        super().__init__()
        self.config.add(DEFAULTS)
        self._model = None  # loaded once per (model, device), kept across import tasks
        self._model_key: tuple[str | None, str] | None = None
        if self.config["auto"].get(bool):
            self.import_stages = [self.imported]

    # --- classifying ---------------------------------------------------------------

    def _load(self, s: Settings):
        """The model the settings name, loaded once per (model, device)."""
        if self._model is None or self._model_key != (s.model, s.device):
            from genretag.model import load_model

            try:
                self._model = load_model(s.model, s.device)
            except GenretagError as e:
                raise ui.UserError(f"genretag: {e}") from None
            self._model_key = (s.model, s.device)
            self._log.debug("model: {} ({})", self._model.card.name, self._model.device_type)
        return self._model

    def classify(self, items: Sequence, s: Settings) -> Iterator[tuple[object, object]]:
        """(item, TrackResult) for each item, in order: batched, and through genretag's result cache."""
        from genretag.pipeline.classifier import Classifier
        from genretag.pipeline.inference import default_jobs
        from genretag.pipeline.result_cache import ResultCache

        model = self._load(s)
        try:
            cache = ResultCache()
        except Exception as e:  # a broken cache must not stop tagging
            self._log.warning("result cache unavailable ({}); classifying everything", e)
            cache = None
        classifier = Classifier(model, jobs=s.jobs or default_jobs(), cache=cache)
        try:
            yield from zip(items, classifier.classify(os.fsdecode(item.path) for item in items))
        finally:
            classifier.close()  # and its result cache
            self._log.debug("{0.classified} classified, {0.cached} from the result cache", classifier.stats)

    def apply(self, item, result, s: Settings):
        """Set the flexible attributes and, by policy, `genres` on the item (in memory); return the plan.

        The attributes record the top genre even when it is below
        `min_confidence`, so `beet ls genretag_confidence:..0.6` finds the
        doubtful ones. A failed result changes nothing.
        """
        plan = plan_tag(result, list(item.genres or []), policy=s.policy, min_confidence=s.min_confidence,
                        top_k=s.top_k, names=s.names)
        if plan.action == ERROR:
            return plan
        item[GENRE] = genre_name(result.genre, s.names)
        item[CONFIDENCE] = float(result.confidence)
        item[MODEL] = self._model.card.name
        if plan.action == WRITE:
            item.genres = plan.new_values
        return plan

    # --- beet genretag ----------------------------------------------------------------

    def commands(self) -> list[ui.Subcommand]:
        cmd = ui.Subcommand("genretag", help="set genres from the audio with a local model")
        add = cmd.parser.add_option
        add("-p", "--pretend", action="store_true", default=False, help="show what would change; change nothing")
        add("-f", "--force", dest="policy", action="store_const", const="overwrite",
            help="replace existing genres")
        add("--append", dest="policy", action="store_const", const="append",
            help="add to existing genres (no duplicates)")
        add("--keep-existing", dest="policy", action="store_const", const="keep-existing",
            help="only fill items without a genre (the default)")
        add("--top-k", dest="top_k", type="int", metavar="K", help="set up to K genres (default 1)")
        add("--min-confidence", dest="min_confidence", type="float", metavar="P",
            help="set no genre below this probability (default 0.5)")
        add("-m", "--model", dest="model", help="model name or card path (default: the bundled default)")
        add("-w", "--write", dest="write", action="store_true", default=None,
            help="write new tags to files (default: import.write)")
        add("-W", "--nowrite", dest="write", action="store_false", help="don't write tags to files")
        cmd.func = self._command
        return [cmd]

    def _command(self, lib, opts, args: list[str]) -> None:
        self.config.set_args({k: v for k, v in vars(opts).items() if k in DEFAULTS})
        s = Settings.from_config(self.config)
        write = ui.should_write(opts.write)
        items = list(lib.items(args))
        if not items:
            self._log.info("no items match")
            return
        counts: Counter[str] = Counter()
        with _Progress(len(items), "pretend" if opts.pretend else "genretag") as out:
            for item, result in self.classify(items, s):
                before = list(item.genres or [])
                plan = self.apply(item, result, s)
                counts[plan.action] += 1
                out.advance()
                if plan.action == ERROR:
                    out.error(self._log, f"{displayable_path(item.path)}: {plan.error}")
                    continue
                if plan.action == WRITE:
                    out.line(f"{item}: {'; '.join(before) or '(none)'} -> {'; '.join(plan.new_values)}")
                if not opts.pretend:
                    # only an item whose genres change has anything to write to its file; beets logs why a
                    # write failed, the item counts as failed (its database entry is still updated)
                    if write and plan.action == WRITE and not item.try_write():
                        counts[WRITE] -= 1
                        counts[ERROR] += 1
                    item.store()
        self._log.info("{} items: {} {}, {} kept (have genres), {} below min_confidence, {} unchanged, {} failed{}",
                       len(items), counts[WRITE], "would be set" if opts.pretend else "set",
                       counts[SKIP_HAS_GENRE], counts[SKIP_BELOW], counts[SKIP_UNCHANGED], counts[ERROR],
                       " (pretend: nothing changed)" if opts.pretend else "")

    # --- import hook -------------------------------------------------------------------

    def imported(self, session, task) -> None:
        """Classify the task's items and store the result in the database only.

        A late import stage: beets copies or moves the files afterwards and
        writes their tags with its normal write (`import.write`), so the
        user's source files are never rewritten by the plugin.
        """
        try:
            s = Settings.from_config(self.config)
            for item, result in self.classify(task.imported_items(), s):
                plan = self.apply(item, result, s)
                if plan.action == ERROR:
                    self._log.error("{}: {}", displayable_path(item.path), plan.error)
                else:
                    item.store()
        except ui.UserError as e:  # e.g. a model that cannot be loaded: report it, let the import go on
            self._log.error("{}", e)


class _Progress:
    """A progress bar on the terminal, and the per-item lines printed above it.

    Shown only when stdout and stderr are both a terminal; otherwise lines go
    to stdout and errors to beets' log, undisturbed.
    """

    def __init__(self, total: int, label: str) -> None:
        self.bar = self.task = None
        if sys.stdout.isatty() and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(label, total=total)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1)

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            ui.print_(text)

    def error(self, log, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(f"genretag: {text}", markup=False, highlight=False, soft_wrap=True)
        else:
            log.error("{}", text)
