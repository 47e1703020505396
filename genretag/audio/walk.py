"""Finding audio files under the paths a user gives.

Folders are walked lazily (a 100,000-file library is never listed in
memory), symlink loops are cut by remembering each real folder visited, and
unreadable folders are reported through a callback and skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from genretag.audio.decode import AUDIO_EXTENSIONS

# Magic numbers of audio containers, for files with no or an odd extension.
_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"FORM", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2", b".snd")
_IGNORED = frozenset({".txt", ".csv", ".json", ".jpg", ".jpeg", ".png", ".gif", ".pdf", ".md",
                      ".nfo", ".cue", ".log", ".m3u", ".m3u8", ".pls", ".db", ".ini", ".py"})


def looks_like_audio(path: str | os.PathLike) -> bool:
    """Known audio extension, or (for unknown extensions) an audio container's magic bytes."""
    suffix = Path(path).suffix.lower()
    if suffix in AUDIO_EXTENSIONS:
        return True
    if suffix in _IGNORED or Path(path).name.startswith("."):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith(_MAGIC) or head[4:8] == b"ftyp"


def iter_audio_files(
    paths: Iterable[str | os.PathLike],
    recursive: bool = True,
    on_error: Callable[[str, str], None] | None = None,
) -> Iterator[str]:
    """Yield audio files under `paths` in a stable (sorted) order.

    A path given explicitly is always yielded if it is a file (even if it is
    not audio: the user asked for it, and gets an error for it). Missing
    paths are yielded too, so that they are reported like any bad file.
    """
    seen: set[tuple[int, int]] = set()
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            yield from _walk(p, recursive, seen, on_error)
        else:
            yield p


def _walk(top: str, recursive: bool, seen: set[tuple[int, int]],
          on_error: Callable[[str, str], None] | None) -> Iterator[str]:
    try:
        st = os.stat(top)
    except OSError as e:
        if on_error:
            on_error(top, e.strerror or str(e))
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return
    seen.add(key)
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        if on_error:
            on_error(top, e.strerror or str(e))
        return
    subdirs = []
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=True):
                subdirs.append(e.path)
            elif e.is_file(follow_symlinks=True) and looks_like_audio(e.path):
                yield e.path
        except OSError:
            continue
    if recursive:
        for d in subdirs:
            yield from _walk(d, recursive, seen, on_error)
