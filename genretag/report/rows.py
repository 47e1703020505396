"""The rows of a review page: one per file, from a `tag` run in this process or from JSON lines.

A row holds what the page shows (current and proposed genres, confidence, top 3, action, error)
and what the round trip needs (the exact path, the audio fingerprint when known). JSON lines come
from `genretag classify --format jsonl` (then the action is what `tag` would do: the file's tags are
read and planned as a dry run does) or from `genretag tag --format jsonl` (taken as they are).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from genretag.errors import GenretagError
from genretag.tags.plan import ERROR, genre_name

#: A file whose top genre is below the threshold, or less than this above it, is "unsure": worth a listen.
UNSURE_MARGIN = 0.1


class ResultsError(GenretagError):
    """A results file that is not genretag JSON lines (a usage error: nothing was made)."""

    exit_code = 2


@dataclass
class ReviewRow:
    """One file on the review page."""

    path: str  # exact (undecodable bytes as surrogates), as classified
    action: str
    current: list[str] = field(default_factory=list)
    proposed: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    confidence: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)  # readable names, best first
    error: str | None = None
    segments: int = 0  # sub-tracks that voted (0: unknown)
    fingerprint: str | None = None

    @property
    def top_genre(self) -> str | None:
        """The readable genre the model ranks first (whether or not it passes the threshold)."""
        if self.proposed:
            return self.proposed[0]
        return self.top[0][0] if self.top else None

    def unsure(self, threshold: float) -> bool:
        return self.action != ERROR and self.confidence is not None and self.confidence < threshold + UNSURE_MARGIN

    def disagrees(self) -> bool:
        """It has a genre, and the model's first genre is none of them."""
        top = self.top_genre
        return bool(self.current) and top is not None and top.lower() not in {c.lower() for c in self.current}


def row_from_plan(plan, result=None, names: dict[str, str] | None = None) -> ReviewRow:
    """The row for a `TagPlan` (and the `TrackResult` it was planned from, for the top 3 and the fingerprint)."""
    top: list[tuple[str, float]] = []
    segments = 0
    fp = plan.fingerprint
    if result is not None:
        top = [(genre_name(g, names), round(float(p), 4)) for g, p in result.top(3)] if result.probabilities else []
        segments = result.segments
        fp = fp or getattr(result, "fingerprint", None)
    return ReviewRow(path=plan.path, action=plan.action, current=list(plan.current), proposed=list(plan.proposed),
                     new=list(plan.new_values), confidence=plan.confidence, top=top, error=plan.error,
                     segments=segments, fingerprint=fp)


# --- JSON lines -------------------------------------------------------------------

CLASSIFY_KEYS = frozenset({"path", "genre", "confidence", "probabilities", "error"})
TAG_KEYS = frozenset({"path", "current", "proposed", "new", "confidence", "action", "error"})


def exact_path(obj: dict) -> str:
    """The file's exact name: `path_bytes` (base64) when there is one, else `path`."""
    raw = obj.get("path_bytes")
    if raw is None:
        return obj["path"]
    if not isinstance(raw, str):
        raise ValueError("path_bytes is not a string")
    try:
        return os.fsdecode(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("path_bytes is not base64") from None


def _strings(obj: dict, key: str) -> list[str]:
    v = obj[key]
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ValueError(f"{key} is not a list of strings")
    return list(v)


def _confidence(obj: dict) -> float | None:
    c = obj["confidence"]
    if c is None:
        return None
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or not 0 <= c <= 1:
        raise ValueError("confidence is not a number from 0 to 1 (or null)")
    return float(c)


def _optional_str(obj: dict, key: str) -> str | None:
    v = obj.get(key)
    if v is not None and not isinstance(v, str):
        raise ValueError(f"{key} is not a string (or null)")
    return v


def _tag_row(obj: dict) -> ReviewRow:
    if not isinstance(obj["action"], str) or not obj["action"]:
        raise ValueError("action is not a string")
    top = []
    if "top" in obj:
        t = obj["top"]
        if not isinstance(t, list) or not all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], str)
                                              and isinstance(x[1], (int, float)) for x in t):
            raise ValueError("top is not a list of [genre, probability]")
        top = [(g, float(p)) for g, p in t]
    segments = obj.get("segments", 0)
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 0:
        raise ValueError("segments is not a whole number")
    return ReviewRow(path=exact_path(obj), action=obj["action"], current=_strings(obj, "current"),
                     proposed=_strings(obj, "proposed"), new=_strings(obj, "new"), confidence=_confidence(obj),
                     top=top, error=_optional_str(obj, "error"), segments=segments)


def _classify_result(obj: dict):
    from genretag.pipeline.inference import TrackResult

    probs = obj["probabilities"]
    if not isinstance(probs, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in probs.items()):
        raise ValueError("probabilities is not an object of genre -> number")
    genre = _optional_str(obj, "genre")
    segments = obj.get("segments", 0)
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 0:
        raise ValueError("segments is not a whole number")
    confidences = obj.get("confidences", {})  # a calibrated model's: what tag compares with its threshold
    if not isinstance(confidences, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
            for k, v in confidences.items()):
        raise ValueError("confidences is not an object of genre -> number from 0 to 1")
    return TrackResult(exact_path(obj), genre, _confidence(obj), {k: float(v) for k, v in probs.items()},
                       segments, _optional_str(obj, "error"),
                       confidences={k: float(v) for k, v in confidences.items()})


def parse_line(text: str):
    """One JSON line: a `ReviewRow` (a `tag` line) or a `TrackResult` (a `classify` line), or ValueError."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if not isinstance(obj.get("path"), str) or not obj["path"]:
        raise ValueError("no path")
    if TAG_KEYS <= obj.keys():
        return _tag_row(obj)
    if CLASSIFY_KEYS <= obj.keys():
        return _classify_result(obj)
    raise ValueError("neither a classify nor a tag result (keys: " + ", ".join(sorted(map(str, obj))[:8]) + ")")


def read_json_lines(path: str | os.PathLike, parse: Callable[[str], Any], what: str) -> list:
    """`parse` of every non-blank line of a UTF-8 file. ResultsError (exit 2) names the first line
    `parse` refuses (ValueError) as "not a `what` line", or says the file cannot be read."""
    shown = os.fsdecode(path)
    out = []
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ResultsError(f"{shown}:{n}: not {what} line (not UTF-8)") from None
                if not text.strip():
                    continue
                try:
                    out.append(parse(text))
                except ValueError as e:
                    raise ResultsError(f"{shown}:{n}: not {what} line ({e})") from None
    except OSError as e:
        raise ResultsError(f"cannot read {shown}: {e.strerror or e}") from None
    return out


def read_results(path: str | os.PathLike) -> list:
    """Every line of a results file, parsed (see `parse_line`); blank lines are passed over.

    Raises ResultsError (exit 2) naming the first line that is not a genretag result, or when the file
    cannot be read or holds no result.
    """
    out = read_json_lines(path, parse_line, "a genretag result")
    if not out:
        raise ResultsError(f"{os.fsdecode(path)}: no results in the file")
    return out


def rows_from_results(items: Iterable, tagger, names: dict[str, str] | None = None) -> Iterator[ReviewRow]:
    """Rows for parsed lines: a `tag` line as it is, a `classify` result planned by `tagger` (a dry run)."""
    from genretag.pipeline.inference import TrackResult

    for item in items:
        if isinstance(item, TrackResult):
            yield row_from_plan(tagger.plan(item), item, names)
        else:  # a tag line's top 3 holds the model's labels
            item.top = [(genre_name(g, names), p) for g, p in item.top]
            yield item
