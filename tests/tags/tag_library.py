"""What the tag tests share: the formats, a library of one file per format, the CLI runner, JSON-line rows."""

from __future__ import annotations

import json
from pathlib import Path

import audio_factory as af
from typer.testing import CliRunner

from genretag.cli import app

EXTS = list(af.FORMATS)  # mp3 flac ogg opus m4a wav aiff
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def rows(result) -> dict[str, dict]:
    return {Path(d["path"]).name: d for d in map(json.loads, result.stdout.splitlines())}


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


result = af.track_result


def library(folder: Path, genre: str | list[str] | None = "Rock", exts=EXTS, seconds: float = 1.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, ext in enumerate(exts):
        af.make_file(folder / f"song{ext}", seconds=seconds, freq=300 + 50 * i, genre=genre)
    return folder
