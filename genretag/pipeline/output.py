"""Writing results: JSON lines and CSV stream line by line; the table is for people."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from typing import IO

from rich.table import Table

from genretag.fs import path_bytes, printable_path
from genretag.pipeline.inference import TrackResult

FORMATS = ("table", "jsonl", "csv")


class ResultWriter:
    """Streams results to a text stream; flushes each line so Ctrl-C keeps what was written."""

    def __init__(self, stream: IO[str], fmt: str, top_k: int = 1, threshold: float | None = None) -> None:
        """`threshold`: `tag`'s default --min-confidence for the model; each row then says whether
        `tag` would write its genre (`would_tag` in JSON lines and CSV, a column in the table)."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        self.stream, self.fmt, self.top_k, self.threshold = stream, fmt, top_k, threshold
        # JSON stays valid on a stream that cannot encode every character (LC_ALL=C): \uXXXX escapes
        self._ascii = (getattr(stream, "encoding", None) or "utf-8").lower().replace("-", "") not in ("utf8", "utf8sig")
        self.rows: list[TrackResult] = []
        self._csv = None
        if fmt == "csv":
            self._csv = csv.writer(stream, lineterminator="\n")
            self._csv.writerow(["path", "genre", "confidence", "error"] + (["would_tag"] if threshold is not None else []))
            stream.flush()

    def would_tag(self, r: TrackResult) -> bool:
        return r.ok and r.confidence is not None and self.threshold is not None and r.confidence >= self.threshold

    def write(self, r: TrackResult) -> None:
        if self.fmt == "jsonl":
            row = r.to_json()
            raw = path_bytes(r.path)
            if raw is not None:
                row["path"], row["path_bytes"] = printable_path(r.path), raw
            if self.threshold is not None:
                row["would_tag"] = self.would_tag(r)
            self.stream.write(json.dumps(row, ensure_ascii=self._ascii) + "\n")
            self.stream.flush()
        elif self.fmt == "csv":
            conf = "" if r.confidence is None else f"{r.confidence:.4f}"
            extra = [] if self.threshold is None else ["yes" if self.would_tag(r) else "no"]
            self._csv.writerow([printable_path(r.path), r.genre or "", conf, r.error or "", *extra])
            self.stream.flush()
        else:
            self.rows.append(r)

    def close(self, console=None) -> None:
        """For the table format, print the collected table (to `console`, or the stream)."""
        if self.fmt != "table":
            return
        table = results_table(self.rows, self.top_k, self.threshold)
        if console is not None:
            console.print(table)
        else:
            from rich.console import Console

            Console(file=self.stream, width=160, no_color=True).print(table)


def results_table(rows: Iterable[TrackResult], top_k: int = 1, threshold: float | None = None) -> Table:
    """The table `classify` prints; with `threshold`, a `tag` column: "write" where `tag` would write
    the genre, "-" where its confidence is below the threshold (`tag` leaves such files alone)."""
    t = Table(show_header=True, header_style="bold")
    t.add_column("file", overflow="fold")
    t.add_column("genre")
    t.add_column("confidence", justify="right")
    if top_k > 1:
        t.add_column(f"top {top_k}")
    if threshold is not None:
        t.add_column(f"tag (>= {threshold:.0%})")
    t.add_column("error", overflow="fold")
    for r in rows:
        cells = [printable_path(r.path), r.genre or "-", "" if r.confidence is None else f"{r.confidence:.1%}"]
        if top_k > 1:
            cells.append(", ".join(f"{g} {p:.0%}" for g, p in r.top(top_k)) if r.ok else "")
        if threshold is not None:
            cells.append(("write" if r.confidence is not None and r.confidence >= threshold else "-") if r.ok else "")
        cells.append(r.error or "")
        t.add_row(*cells, style=None if r.ok else "red")
    return t
