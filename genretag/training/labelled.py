"""Labelled music for `genretag evaluate`: a folder per label, a CSV manifest, or the genres already in the files' tags.

Each source gives a list of `Labelled` files, every label matched to the model's
labels through a `genretag.labels.LabelMap`, before any audio is decoded. In a
folder layout or a manifest a label that matches nothing is an error naming it
(a typo must not pass as "outside"); in a library's own tags it counts as
outside the model's genres, and a file whose tags hold no genre has no label.

Never imports torch.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from genretag.audio.walk import iter_audio_files
from genretag.errors import DatasetError, TagError
from genretag.labels import OUTSIDE, LabelMap, is_placeholder

#: What a labelled file is for scoring.
IN_MODEL, OUTSIDE_MODEL, NO_LABEL = "label", "outside", "no label"

#: The columns a manifest must have.
MANIFEST_COLUMNS = ("path", "label")
#: How many unknown labels an error names before it says "and N more".
_NAMED = 12


@dataclass
class Labelled:
    """One file and what it is labelled: `truth` holds the model labels it counts as right (any of them)."""

    path: str
    raw: list[str] = field(default_factory=list)  # the labels as given (folder, manifest cell, tag values)
    truth: list[str] = field(default_factory=list)  # model labels; empty: outside, or no label
    note: str | None = None  # why there is no label (a tag that cannot be read)

    @property
    def kind(self) -> str:
        return IN_MODEL if self.truth else OUTSIDE_MODEL if self.raw else NO_LABEL


def _unknown_error(unknown: Counter, lmap: LabelMap, where: str) -> DatasetError:
    names = [f"{lab!r} ({n} file{'s' * (n != 1)})" for lab, n in sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))]
    more = f" and {len(names) - _NAMED} more" if len(names) > _NAMED else ""
    return DatasetError(
        f"{where}: label{'s' * (len(names) != 1)} {', '.join(names[:_NAMED])}{more} not among the genres of "
        f"{lmap.describe()}; map each with --map 'LABEL=Genre', or --map 'LABEL={OUTSIDE}' for music outside them")


def _truth(raw: str, lmap: LabelMap) -> list[str] | None:
    """[model label], [] for outside, None for unknown."""
    to = lmap.resolve(raw)
    return None if to is None else [] if to == OUTSIDE else [to]


# --- a folder per label -------------------------------------------------------------------------------------

def label_folders(root: str | os.PathLike) -> dict[str, list[str]]:
    """Subfolder name -> the audio files under it (walked recursively, sorted); folders without audio left out."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    out: dict[str, list[str]] = {}
    try:
        subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DatasetError(f"{root}: cannot read it ({e.strerror or e})") from None
    for sub in subs:
        files = list(iter_audio_files([str(sub)]))
        if files:
            out[sub.name] = files
    return out


def unknown_folders(folders: dict[str, list[str]], lmap: LabelMap) -> Counter:
    """Folder names (with their file counts) that match no model label and are not mapped outside."""
    return Counter({name: len(files) for name, files in folders.items() if lmap.resolve(name) is None})


def from_folders(root: str | os.PathLike, lmap: LabelMap) -> list[Labelled]:
    """A folder per label: every audio file under ``root/<label>/`` (at any depth) has that label."""
    folders = label_folders(root)
    if not folders:
        raise DatasetError(f"{root}: no subfolder holds audio files (a folder per label: <label>/<files>)")
    unknown = unknown_folders(folders, lmap)
    if unknown:
        raise _unknown_error(unknown, lmap, str(root))
    return [Labelled(f, [name], _truth(name, lmap) or []) for name, files in folders.items() for f in files]


# --- a CSV manifest -------------------------------------------------------------------------------------------

def from_manifest(manifest: str | os.PathLike, lmap: LabelMap, subset: str | None = None) -> list[Labelled]:
    """The rows of a CSV with ``path`` and ``label`` columns (paths relative to the CSV's folder).

    With `subset`, only the rows whose ``subset`` column holds it. Extra columns are ignored.
    """
    mf = Path(manifest)
    try:
        with mf.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            need = (*MANIFEST_COLUMNS, *(("subset",) if subset is not None else ()))
            missing = [c for c in need if c not in columns]
            if missing:
                raise DatasetError(f"{mf}: missing column{'s' * (len(missing) != 1)} {', '.join(missing)} "
                                   f"(has: {', '.join(columns) or 'nothing'})")
            reader.fieldnames = columns
            rows = list(reader)
    except OSError as e:
        raise DatasetError(f"--manifest {mf}: cannot read it ({e.strerror or e})") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"--manifest {mf}: not a UTF-8 CSV file ({e})") from None
    base = mf.parent
    items: list[Labelled] = []
    unknown: Counter = Counter()
    subsets: Counter = Counter()
    for n, row in enumerate(rows, start=2):
        rel, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if subset is not None:
            subsets[(row.get("subset") or "").strip()] += 1
            if (row.get("subset") or "").strip() != subset:
                continue
        if not rel or not label:
            raise DatasetError(f"{mf}:{n}: empty {'path' if not rel else 'label'}")
        truth = _truth(label, lmap)
        if truth is None:
            unknown[label] += 1
            continue
        items.append(Labelled(str(base / rel), [label], truth))
    if unknown:
        raise _unknown_error(unknown, lmap, str(mf))
    if subset is not None and not items:
        raise DatasetError(f"{mf}: no rows of subset {subset!r} (subsets: {', '.join(sorted(subsets)) or 'none'})")
    if not items:
        raise DatasetError(f"{mf}: no rows")
    return items


# --- a library's own tags --------------------------------------------------------------------------------------

def from_tags(paths: Iterable[str], lmap: LabelMap, recursive: bool = True,
              on_error: Callable[[str, str], None] | None = None) -> Iterator[Labelled]:
    """Every audio file under `paths`, labelled by the genres in its tags (read as `genretag tag` reads them).

    A genre matching no model label counts as outside; no genre, only values that name none
    (`genretag.labels.PLACEHOLDERS`: "Other", "Unknown", ...), or tags that cannot be read
    (noted in `note`) as no label. A file whose genres name several model labels is right on any.
    """
    from genretag.tags.fields import read_genres

    for path in iter_audio_files(paths, recursive=recursive, on_error=on_error):
        try:
            raw = [g for g in read_genres(path) if not is_placeholder(g)]
        except TagError as e:
            yield Labelled(path, note=f"tags not read: {e}")
            continue
        truth: list[str] = []
        for g in raw:
            to = lmap.resolve(g)
            if to not in (None, OUTSIDE) and to not in truth:
                truth.append(to)
        yield Labelled(path, raw, truth)
