"""`genretag report`: the review page for a results file (JSON lines of `classify` or `tag`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genretag.cli.app import app, fail, info
from genretag.cli.common import genre_names_option


@app.command("report")
def report_cmd(
    results: Annotated[Path, typer.Argument(metavar="RESULTS.jsonl", help="JSON lines of `classify --format jsonl` or `tag --format jsonl`.",
                                            show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE.html", help="The page to write.")],
    min_confidence: Annotated[float | None, typer.Option("--min-confidence", min=0.0, max=1.0, show_default=False,
                                                         help="The threshold drawn on the page, and (for classify results) the one planned with, as in tag (default: the model's, as in tag).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="For classify results: plan up to K genres, as in tag.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="For classify results: plan as tag --overwrite.")] = False,
    append: Annotated[bool, typer.Option("--append", help="For classify results: plan as tag --append.")] = False,
    genre_names: Annotated[Path | None, typer.Option("--genre-names", help="Label -> name overrides: a JSON object or label=Name lines.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="The model that classified (its sub-track length places the play buttons; default: the bundled default).")] = None,
) -> None:
    """Write a review page for a results file: totals, genre charts, confidences and every file.

    For classify results each file's tags are read and planned as a
    `tag` dry run would (use the same options as tag); tag results are
    shown as they are. The page is one HTML file that needs no network.

    Example: genretag classify ~/Music -f jsonl -o genres.jsonl && genretag report genres.jsonl -o review.html

    Exit code 0 when the page was written, 2 when the results file is not
    genretag JSON lines or the page cannot be written.
    """
    from genretag.card import load_card
    from genretag.report import ReportSettings, check_writable, read_results, rows_from_results, write_report
    from genretag.store.local import find_local
    from genretag.tags.plan import DEFAULT_MIN_CONFIDENCE
    from genretag.tags.tagger import Tagger

    if overwrite and append:
        fail("use only one of --overwrite, --append", 2)
    check_writable(output)
    names = genre_names_option(genre_names)
    card_path = find_local(model)
    if card_path is None:
        fail(f"model {model!r} not found (not a card path, not bundled, not in the cache)", 2)
    card = load_card(card_path)
    if min_confidence is None:  # tag's default for this model: its card's threshold, else 0.5
        value = card.extra.get("min_confidence")
        min_confidence = float(value) if isinstance(value, (int, float)) else DEFAULT_MIN_CONFIDENCE
    items = read_results(results)
    policy = "overwrite" if overwrite else "append" if append else "keep-existing"
    tagger = Tagger(policy=policy, min_confidence=min_confidence, top_k=top_k, names=names)
    rows = list(rows_from_results(items, tagger, names))
    settings = ReportSettings(threshold=min_confidence, source=str(results), model=card.name, policy=policy,
                              segment_seconds=card.audio.segment_seconds, max_segments=card.audio.max_segments)
    write_report(rows, output, settings)
    info(f"review page: {output} ({len(rows)} file{'s' * (len(rows) != 1)})")
