"""Files a command writes beside the audio (`classify -o`, `tag --journal`): never an input, never audio.

`genretag classify song.mp3 -o song.mp3` would replace the song with a table row. An output path
is refused (a usage error, before anything is opened for writing) when it is the same file as one
of the paths named on the command line, or when it is an existing regular file that looks like
audio, by its extension or by its first bytes. A path that does not exist yet, a device
(`/dev/null`, `/dev/stdout`) and any other existing file are accepted.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from genretag.errors import GenretagError


def refuse_unsafe_output(option: str, target: str | os.PathLike, inputs: Iterable[str]) -> None:
    """Raise a usage error (exit 2) when writing `target` could destroy an input or an audio file."""
    target = os.fspath(target)
    try:
        st = os.stat(target)
    except OSError:
        return  # nothing there (yet): opening it reports its own error
    if not stat.S_ISREG(st.st_mode):
        return
    for p in inputs:
        try:
            same = os.path.samefile(p, target)
        except (OSError, ValueError):
            continue
        if same:
            raise GenretagError(f"{option} {target} is one of the input files: refusing to overwrite it", 2)
    kind = _audio_kind(target)
    if kind is not None:
        raise GenretagError(f"{option} {target} looks like an audio file ({kind}): refusing to overwrite it", 2)


def _audio_kind(path: str) -> str | None:
    """What makes `path` look like audio: its container (sniffed) or its extension; None otherwise."""
    from genretag.audio.containers import sniff
    from genretag.audio.decode import is_audio_path

    try:
        with open(path, "rb") as f:
            kind = sniff(f.read(64))
    except OSError:
        kind = None
    if kind is not None:
        return f"{kind} content"
    if is_audio_path(path):
        return f"the extension {os.path.splitext(path)[1]}"
    return None
