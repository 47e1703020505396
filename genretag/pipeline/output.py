"""Writing results: JSON lines and CSV stream line by line; the table is for people."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import IO

from rich.table import Table

from genretag.pipeline.inference import TrackResult

FORMATS = ("table", "jsonl", "csv")


class ResultWriter:
    """Streams results to a text stream; flushes each line so Ctrl-C keeps what was written."""

    def __init__(self, stream: IO[str], fmt: str, top_k: int = 1) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        self.stream, self.fmt, self.top_k = stream, fmt, top_k
        self.rows: list[TrackResult] = []
        self._csv = None
        if fmt == "csv":
            self._csv = csv.writer(stream, lineterminator="\n")
            self._csv.writerow(["path", "genre", "confidence", "error"])
            stream.flush()

    def write(self, r: TrackResult) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
            self.stream.flush()
        elif self.fmt == "csv":
            conf = "" if r.confidence is None else f"{r.confidence:.4f}"
            self._csv.writerow([r.path, r.genre or "", conf, r.error or ""])
            self.stream.flush()
        else:
            self.rows.append(r)

    def close(self, console=None) -> None:
        """For the table format, print the collected table (to `console`, or the stream)."""
        if self.fmt != "table":
            return
        table = results_table(self.rows, self.top_k)
        if console is not None:
            console.print(table)
        else:
            from rich.console import Console

            Console(file=self.stream, width=160, no_color=True).print(table)


def results_table(rows: Iterable[TrackResult], top_k: int = 1) -> Table:
    t = Table(show_header=True, header_style="bold")
    t.add_column("file", overflow="fold")
    t.add_column("genre")
    t.add_column("confidence", justify="right")
    if top_k > 1:
        t.add_column(f"top {top_k}")
    t.add_column("error", overflow="fold")
    for r in rows:
        cells = [r.path, r.genre or "-", "" if r.confidence is None else f"{r.confidence:.1%}"]
        if top_k > 1:
            cells.append(", ".join(f"{g} {p:.0%}" for g, p in r.top(top_k)) if r.ok else "")
        cells.append(r.error or "")
        t.add_row(*cells, style=None if r.ok else "red")
    return t
