"""What to write: readable genre names, the proposed genres of a result, and the plan under a policy."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_NAMES: dict[str, str] = {
    "blues": "Blues", "classical": "Classical", "country": "Country", "disco": "Disco",
    "hiphop": "Hip-Hop", "jazz": "Jazz", "metal": "Metal", "pop": "Pop", "reggae": "Reggae",
    "rock": "Rock",
}
#: Below this top-1 probability nothing is written: with 10 genres a random
#: guess scores 0.1, and a coin flip between two genres 0.5.
DEFAULT_MIN_CONFIDENCE = 0.5
POLICIES = ("keep-existing", "overwrite", "append")

# Actions of a TagPlan (and rows of `genretag tag`).
WRITE = "write"  # planned (a dry run stops here)
WRITTEN = "written"
SKIP_HAS_GENRE = "skip: has genre"
SKIP_BELOW = "skip: below confidence"
SKIP_UNCHANGED = "skip: unchanged"
SKIP_CHANGED = "skip: changed since classified"  # the audio is not the audio that was classified
SKIP_HARD_LINK = "skip: hard link"  # several names share the file; a write would split them
SKIP_NOT_AS_REVIEWED = "skip: not as reviewed"  # tag --only: the genres differ from those the reader accepted
ERROR = "error"


# --- genre names ----------------------------------------------------------------

def genre_name(label: str, names: dict[str, str] | None = None) -> str:
    """The readable name for a model label (overrides, then defaults, then Title Case; a label that
    already has capitals, such as the broad model's "R&B", is kept as it is)."""
    if names and label in names:
        return names[label]
    if label in DEFAULT_NAMES:
        return DEFAULT_NAMES[label]
    return label if label != label.lower() else label.replace("_", " ").title()


def load_genre_names(path: str | os.PathLike) -> dict[str, str]:
    """Read label -> name overrides: a JSON object, or `label=Name` lines (# comments)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if text.lstrip().startswith("["):
        raise ValueError(f"{path}: expected a JSON object of label -> name (or label=Name lines), not a list")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
        if not all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in data.items()):
            raise ValueError(f"{path}: expected an object of label -> non-empty name strings")
        names = {k.strip(): v.strip() for k, v in data.items()}
        _check_names(path, names)
        return names
    names = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        label, sep, name = line.partition("=")
        if not sep or not label.strip() or not name.strip():
            raise ValueError(f"{path}:{n}: expected label=Name, got {line!r}")
        names[label.strip()] = name.strip()
    _check_names(path, names)
    return names


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a genre (no tag format stores an empty one or a NUL), or None."""
    if not name.strip():
        return "genre name is empty"
    if "\0" in name:
        return f"genre name {name!r} holds a NUL character, which a tag cannot store"
    return None


def _check_names(path, names: dict[str, str]) -> None:
    for label, name in names.items():
        why = name_problem(name)
        if why:
            raise ValueError(f"{path}: {label}: {why}")


# --- planning ------------------------------------------------------------------

@dataclass
class TagPlan:
    """What to do with one file, and why (after `Tagger.apply`: what was done)."""

    action: str  # WRITE, WRITTEN, SKIP_*, ERROR
    new_values: list[str] = field(default_factory=list)
    proposed: list[str] = field(default_factory=list)
    confidence: float | None = None
    error: str | None = None
    path: str = ""
    current: list[str] = field(default_factory=list)  # readable genres now
    fingerprint: str | None = None  # audio fingerprint of what was classified (None: not checked)

    def failed(self, error: str) -> TagPlan:
        self.action, self.error = ERROR, error
        return self

    def to_json(self) -> dict:
        """One row of `genretag tag --format jsonl`."""
        return {"path": self.path, "current": self.current, "proposed": self.proposed, "new": self.new_values,
                "confidence": self.confidence, "action": self.action, "error": self.error}


def proposed_genres(result, top_k: int = 1, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                    names: dict[str, str] | None = None) -> list[str]:
    """Readable names of the top-k labels whose confidence is at or above `min_confidence` (best
    first): the calibrated confidence for a calibrated model, else the probability."""
    ranked = ([(label, result.label_confidence(label)) for label, _ in result.top(top_k)] if result.probabilities
              else [(result.genre, result.confidence or 0.0)])
    out: list[str] = []
    for label, p in ranked:
        if label is None or p < min_confidence:
            continue
        name = genre_name(label, names)
        if name.lower() not in (o.lower() for o in out):
            out.append(name)
    return out


def plan_tag(result, current: list[str], *, policy: str = "keep-existing",
             min_confidence: float = DEFAULT_MIN_CONFIDENCE, top_k: int = 1,
             names: dict[str, str] | None = None) -> TagPlan:
    """Decide what to write for one classified file, given its current (readable) genres."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r} (one of {', '.join(POLICIES)})")
    if result.error:
        return TagPlan(ERROR, error=result.error, current=list(current))
    proposed = proposed_genres(result, top_k, min_confidence, names)
    conf = result.confidence
    bad = next((why for why in map(name_problem, proposed) if why), None)
    if bad:  # refused here, so the dry run says what the write would
        return TagPlan(ERROR, proposed=proposed, confidence=conf, error=bad, current=list(current))
    if not proposed:
        return TagPlan(SKIP_BELOW, proposed=[], confidence=conf, current=list(current))
    if policy == "keep-existing" and current:
        return TagPlan(SKIP_HAS_GENRE, proposed=proposed, confidence=conf, current=list(current))
    if policy == "append":
        have = {c.lower() for c in current}
        new = list(current) + [p for p in proposed if p.lower() not in have]
    else:
        new = proposed
    if new == list(current):
        return TagPlan(SKIP_UNCHANGED, new_values=new, proposed=proposed, confidence=conf, current=list(current))
    return TagPlan(WRITE, new_values=new, proposed=proposed, confidence=conf, current=list(current))
