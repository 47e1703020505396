"""The review page: one self-contained HTML file (inline CSS, JavaScript and SVG; nothing fetched).

The figures are SVG made here; the table of files is drawn by the page's script from the rows,
which travel as JSON inside `<script type="application/json">` (with `<`, `>`, `&` and U+2028/9
escaped, so no file name can end the script) and are put on the page with `textContent` only.
The table draws only the rows in view, so 50,000 files scroll and filter at once.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from genretag.errors import GenretagError
from genretag.fs import atomic_write, path_bytes, printable_path
from genretag.report import charts
from genretag.report.rows import UNSURE_MARGIN, ReviewRow
from genretag.tags.plan import DEFAULT_MIN_CONFIDENCE, ERROR, SKIP_BELOW, SKIP_HAS_GENRE, SKIP_UNCHANGED, WRITE, WRITTEN
from genretag.version import __version__

log = logging.getLogger(__name__)

NO_GENRE = "(no genre)"
NO_TOP = "(none)"
#: Row flags in the page's data.
UNSURE, DISAGREES, TICKABLE = 1, 2, 4


class ReportError(GenretagError):
    """The page cannot be written where asked (a usage error: checked before any classification)."""

    exit_code = 2


@dataclass
class ReportSettings:
    """What the page says about the run, and how it finds the files and a stretch to play."""

    threshold: float = DEFAULT_MIN_CONFIDENCE
    written: bool = False  # a `tag --write` run: "written" rather than "would write"
    source: str = ""  # what the rows came from, for the header
    model: str = ""
    policy: str = "keep-existing"
    segment_seconds: float = 3.0  # the model's sub-track length and count, to place the play start
    max_segments: int = 10
    base: str = field(default_factory=os.getcwd)  # relative paths in the rows are relative to this


def check_writable(path: str | os.PathLike) -> Path:
    """Fail now (ReportError, exit 2) when the page could not be written at `path`: called before any work."""
    p = Path(path)
    if p.is_dir():
        raise ReportError(f"cannot write the report {p}: it is a folder")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ReportError(f"cannot write the report {p}: no folder {parent}")
    existed = p.exists()
    try:
        with open(p, "ab"):
            pass
    except OSError as e:
        raise ReportError(f"cannot write the report {p}: {e.strerror or e}") from None
    if not existed:
        p.unlink(missing_ok=True)
    return p


def listen_start(path: str, segments: int, settings: ReportSettings) -> float | None:
    """Where to start playing: the middle one of the sub-tracks the model placed (None: unreadable)."""
    from genretag.audio.decode import info
    from genretag.pipeline.segments import plan_segments

    try:
        duration = info(path).duration
    except (GenretagError, OSError, ValueError):
        return None
    offsets = plan_segments(duration, settings.segment_seconds, segments or settings.max_segments)
    return round(offsets[len(offsets) // 2], 2)


def _href(abs_path: str, page_dir: str) -> str:
    """A relative URL from the page's folder to `abs_path` (each byte of the name percent-encoded)."""
    rel = os.path.relpath(abs_path, page_dir)
    return "/".join(quote(os.fsencode(part), safe="") for part in rel.split(os.sep))


def _tally(rows: list[ReviewRow], settings: ReportSettings) -> dict:
    totals = {"files": len(rows), "write": 0, "kept": 0, "silent": 0, "failed": 0, "other": 0}
    now: dict[str, int] = {}
    after: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}
    confidences: list[float] = []
    for r in rows:
        a = r.action
        key = ("write" if a in (WRITE, WRITTEN) else "kept" if a in (SKIP_HAS_GENRE, SKIP_UNCHANGED)
               else "silent" if a == SKIP_BELOW else "failed" if a == ERROR else "other")
        totals[key] += 1
        if a == ERROR:
            continue
        if r.confidence is not None:
            confidences.append(r.confidence)
        for g in r.current or [NO_GENRE]:
            now[g] = now.get(g, 0) + 1
        for g in (r.new if a in (WRITE, WRITTEN) and r.new else r.current) or [NO_GENRE]:
            after[g] = after.get(g, 0) + 1
        if r.current:
            pair = (r.current[0], r.top_genre or NO_TOP)
            pairs[pair] = pairs.get(pair, 0) + 1
    return {"totals": totals, "now": now, "after": after, "pairs": pairs, "confidences": confidences}


def page_data(rows: list[ReviewRow], settings: ReportSettings, page_dir: str, *, matrix_rows: list[str],
              matrix_cols: list[str]) -> dict:
    """What the page's script gets: the rows (as arrays, folders and actions numbered) and the settings."""
    folders: list[list[str]] = []
    folder_of: dict[str, int] = {}
    actions: list[str] = []
    action_of: dict[str, int] = {}
    genres: set[str] = set()
    out_rows = []
    listened = 0
    root = common_folder(rows)
    for r in rows:
        full = os.path.normpath(os.path.join(settings.base, r.path))
        shown_dir, name = os.path.split(r.path)
        abs_dir = os.path.dirname(full)
        fi = folder_of.get(shown_dir)
        if fi is None:
            fi = folder_of[shown_dir] = len(folders)
            below = os.path.relpath(shown_dir, root) if root else shown_dir
            folders.append([printable_path(below) or ".", printable_path(abs_dir), _href(abs_dir, page_dir) + "/"])
        ai = action_of.get(r.action)
        if ai is None:
            ai = action_of[r.action] = len(actions)
            actions.append(r.action)
        flags = 0
        if r.unsure(settings.threshold):
            flags |= UNSURE
        if r.disagrees():
            flags |= DISAGREES
        if r.action != ERROR and r.proposed:
            flags |= TICKABLE
        start = href = None
        if flags & (UNSURE | DISAGREES):
            start = listen_start(full, r.segments, settings)
            if start is not None:
                href = quote(os.fsencode(name), safe="")
                listened += 1
        genres.update(r.current)
        genres.update(r.proposed)
        out_rows.append([fi, printable_path(name), [printable_path(g) for g in r.current],
                         [printable_path(g) for g in r.proposed], r.confidence,
                         [[printable_path(g), p] for g, p in r.top], ai, r.error, flags, start, href,
                         path_bytes(full), r.fingerprint])
    log.debug("review page: %d rows, %d with a stretch to play", len(rows), listened)
    return {
        "version": __version__, "threshold": settings.threshold, "margin": UNSURE_MARGIN,
        "written": settings.written, "folders": folders, "actions": actions,
        "genres": sorted((printable_path(g) for g in genres), key=str.lower),
        "matrix": {"rows": [printable_path(g) for g in matrix_rows], "cols": [printable_path(g) for g in matrix_cols],
                   "none": NO_TOP},
        "rows": out_rows,
    }


def common_folder(rows: list[ReviewRow]) -> str:
    """The folder every row's file is under ("" when there is none, as for relative and absolute paths mixed);
    the table shows folders below it."""
    dirs = {os.path.dirname(r.path) for r in rows}
    try:
        return os.path.commonpath(list(dirs)) if dirs else ""
    except ValueError:
        return ""


def script_json(data) -> str:
    """JSON safe inside a <script> element: no `<`, `>`, `&` or line separators survive as such."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    # lone surrogates (undecodable names are printable by now, but never trust it) would not encode
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _asset(name: str) -> str:
    return resources.files("genretag.report").joinpath(name).read_text(encoding="utf-8")


def render(rows: list[ReviewRow], settings: ReportSettings, page_dir: str) -> str:
    """The whole page as text."""
    t = _tally(rows, settings)
    totals = t["totals"]
    written = settings.written
    now_label, after_label = ("before", "after") if written else ("now", "after tag --write")
    bars = charts.genre_bars(t["now"], t["after"], now_label, after_label)
    hist = charts.confidence_histogram(t["confidences"], settings.threshold)
    if t["pairs"]:
        matrix_html, mrows, mcols = charts.matrix(t["pairs"])
    else:
        matrix_html, mrows, mcols = '<p class="muted">No file has a genre yet.</p>', [], []
    data = page_data(rows, settings, page_dir, matrix_rows=mrows, matrix_cols=mcols)
    e = lambda s: escape(printable_path(str(s)), quote=True)  # noqa: E731
    cards = [("files", totals["files"], ""), ("written" if written else "would write", totals["write"], "write"),
             ("kept (already tagged)", totals["kept"], "kept"),
             (f"silent (below {settings.threshold:g})", totals["silent"], "silent"),
             ("failed", totals["failed"], "failed")]
    if totals["other"]:
        cards.append(("other skips", totals["other"], "other"))
    cards_html = "".join(f'<div class="card {cls}" data-total="{cls or "files"}"><div class="n">{n:,}</div>'
                         f'<div class="what">{e(label)}</div></div>' for label, n, cls in cards)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    root = common_folder(rows)
    facts = [f"{totals['files']:,} files under {root}" if root else "", f"model {settings.model}" if settings.model else "",
             f"policy {settings.policy}",
             f"--min-confidence {settings.threshold:g}", f"from {settings.source}" if settings.source else "", when]
    subtitle = " \u00b7 ".join(e(f) for f in facts if f)
    return _asset("review.html").format(
        title=("genretag: what was written" if written else "genretag: what tag would do"),
        subtitle=subtitle, css=_asset("review.css"), js=_asset("review.js"), cards=cards_html, bars=bars,
        histogram=hist, matrix=matrix_html, data=script_json(data), version=e(__version__),
        unsure=f"{settings.threshold + UNSURE_MARGIN:g}")


def write_report(rows: list[ReviewRow], path: str | os.PathLike, settings: ReportSettings) -> Path:
    """Write the review page for `rows` to `path` (through a temporary file and a rename)."""
    p = Path(path)
    page_dir = os.path.dirname(os.path.abspath(p))
    text = render(rows, settings, page_dir)
    try:
        atomic_write(p, text.encode("utf-8"))
    except OSError as err:
        raise ReportError(f"cannot write the report {p}: {err.strerror or err}", 1) from None
    return p
