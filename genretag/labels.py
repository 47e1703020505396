"""Genre labels as people write them, matched to a model's labels.

A label from a folder name, a manifest or a file's genre tag is matched to one
of a model's labels in three steps:

1. the user's own map (``--map 'hip hop=Hip-Hop'``, ``--map-file``), where a
   target of ``-`` means "outside the model's genres";
2. the model's labels themselves;
3. the built-in synonyms (`SYNONYMS`), which name a broad genre (`BROAD_GENRES`).

Every comparison is on `label_key`: case, spaces, punctuation and accents do
not count, and ``&`` or ``+`` read as "and" (``R&B``, ``r and b`` and
``R & B`` are one label; ``rnb`` is a synonym of it). So ``Hip-Hop`` is the
GTZAN models' ``hiphop`` and ``hiphop`` the broad model's ``Hip-Hop``. A label
none of the steps places is unknown (`LabelMap.resolve` returns None).

Never imports torch.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path

from genretag.errors import DatasetError

#: A map target meaning "outside the model's genres": the right answer for such music is no genre.
OUTSIDE = "-"

#: The genres of the broad model, as they are written into tags.
BROAD_GENRES: tuple[str, ...] = (
    "Blues", "Classical", "Country", "Disco", "Hip-Hop", "Jazz", "Metal", "Pop", "Reggae", "Rock",
    "Electronic", "Folk", "R&B", "Punk", "Ambient", "Easy Listening",
)

#: Broad genre -> the other ways tags, folders and data sets name it. A genre a name is merely
#: close to is left out (funk, soundtrack, world, indie, singer-songwriter, chillout, trip-hop,
#: blues rock, folk rock): such files count as outside unless mapped with --map.
_SYNONYM_LISTS: dict[str, tuple[str, ...]] = {
    "Blues": ("delta blues", "chicago blues", "electric blues", "country blues"),
    "Classical": ("classical music", "opera", "baroque", "orchestral", "symphony", "chamber music", "choral",
                  "early music", "contemporary classical", "modern classical"),
    "Country": ("country and western", "bluegrass", "country music", "contemporary country"),
    "Disco": ("disco music", "euro disco"),
    "Hip-Hop": ("hip hop", "hip hop/rap", "rap/hip hop", "rap", "gangsta rap", "hip hop music"),
    "Jazz": ("smooth jazz", "bebop", "swing", "big band", "vocal jazz", "jazz fusion", "cool jazz", "free jazz",
             "acid jazz", "jazz+funk"),
    "Metal": ("heavy metal", "death metal", "black metal", "thrash metal", "power metal", "doom metal",
              "metalcore", "nu metal", "progressive metal"),
    "Pop": ("pop music", "dance pop", "synthpop", "electropop", "indie pop", "k-pop", "j-pop", "teen pop",
            "top 40", "europop"),
    "Reggae": ("roots reggae", "dancehall", "reggae music"),
    "Rock": ("classic rock", "alternative rock", "alternative", "alt. rock", "hard rock", "indie rock",
             "rock and roll", "rock 'n' roll", "progressive rock", "prog rock", "psychedelic rock", "soft rock",
             "southern rock", "garage rock", "grunge", "rock music"),
    "Electronic": ("electronica", "electro", "techno", "house", "edm", "electronic dance music", "dance", "trance",
                   "drum and bass", "drum n bass", "dnb", "dubstep", "idm", "electronic music", "deep house",
                   "tech house", "euro-techno", "eurodance"),
    "Folk": ("folk music", "contemporary folk", "indie folk", "traditional folk"),
    "R&B": ("rnb", "rhythm and blues", "soul", "r&b/soul", "rnb/soul", "contemporary r&b", "neo soul",
            "soul music"),
    "Punk": ("punk rock", "pop punk", "hardcore punk", "post-punk", "acid punk"),
    "Ambient": ("new age", "ambient_newage", "ambient music", "dark ambient", "meditative"),
    "Easy Listening": ("vocal", "lounge", "easy listening music", "middle of the road"),
}


def label_key(label: str) -> str:
    """The form labels are compared in: accents dropped, case folded, ``&``/``+`` as "and", only letters and digits.

    >>> label_key("R & B") == label_key("r and b") == label_key("R&B")
    True
    """
    text = unicodedata.normalize("NFKD", label)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = re.sub(r"[&+]", " and ", text)
    return "".join(c for c in text if c.isalnum())


#: label_key(synonym) -> broad genre; every broad genre is its own synonym.
SYNONYMS: dict[str, str] = {
    **{label_key(s): genre for genre, names in _SYNONYM_LISTS.items() for s in names},
    **{label_key(g): g for g in BROAD_GENRES},
}


#: Genre values that say no genre (ID3v1's "Other", a tagger's "Unknown"): a file holding only these has no label.
PLACEHOLDERS: frozenset[str] = frozenset(label_key(x) for x in (
    "other", "unknown", "unknown genre", "misc", "miscellaneous", "none", "n/a", "genre", "undefined",
    "unclassified", "no genre", "various"))


def is_placeholder(label: str) -> bool:
    """True for a genre value that names no genre (see `PLACEHOLDERS`)."""
    return label_key(label) in PLACEHOLDERS or not label_key(label)


def broad_genre(label: str) -> str | None:
    """The broad genre a label names (`BROAD_GENRES`), or None."""
    return SYNONYMS.get(label_key(label))


class LabelMap:
    """Raw labels -> a model's labels, with the user's synonyms first (see the module docstring).

    ``user`` maps a synonym to a model label (in any spelling `label_key` equates, or a
    built-in synonym of one) or to `OUTSIDE`. A target that is neither is a `DatasetError`
    (exit 2) naming it.
    """

    def __init__(self, labels: Iterable[str], user: Mapping[str, str] | None = None, model: str = "the model") -> None:
        self.labels = list(labels)
        self.model = model
        self._by_key = {label_key(lab): lab for lab in self.labels}
        self._user: dict[str, str] = {}
        bad = []
        for raw, target in (user or {}).items():
            to = OUTSIDE if target.strip() == OUTSIDE else self._builtin(target)
            if to is None:
                bad.append(f"{raw}={target}")
            else:
                self._user[label_key(raw)] = to
        if bad:
            raise DatasetError(f"--map {', '.join(bad)}: not a genre of {self.describe()}; "
                               f"use {OUTSIDE} for music outside the model's genres")

    def describe(self) -> str:
        """The model and its labels, for messages."""
        return f"{self.model} ({', '.join(self.labels)})"

    def _builtin(self, raw: str) -> str | None:
        key = label_key(raw)
        if key in self._by_key:
            return self._by_key[key]
        genre = SYNONYMS.get(key)
        return self._by_key.get(label_key(genre)) if genre else None

    def resolve(self, raw: str) -> str | None:
        """The model label `raw` names, `OUTSIDE`, or None when nothing places it."""
        key = label_key(raw)
        if key in self._user:
            return self._user[key]
        return self._builtin(raw)


def parse_map(items: Iterable[str], source: str = "--map") -> dict[str, str]:
    """``synonym=Label`` strings to a dict; a `DatasetError` (exit 2) for one without ``=`` or with an empty side."""
    out: dict[str, str] = {}
    for item in items:
        raw, sep, target = item.partition("=")
        if not sep or not raw.strip() or not target.strip():
            raise DatasetError(f"{source} {item!r}: expected synonym=Label (Label {OUTSIDE} for outside the model's genres)")
        out[raw.strip()] = target.strip()
    return out


def load_map_file(path: str | os.PathLike) -> dict[str, str]:
    """``synonym=Label`` lines (blank lines and ``#`` comments skipped) to a dict; `DatasetError` on a bad line."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"--map-file {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.update(parse_map([line], f"{path}:{n}:"))
    return out
