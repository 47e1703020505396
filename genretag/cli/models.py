"""`genretag models`: list, inspect, download and remove models (bundled and cached)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from genretag.card.metrics import CardMetrics
from genretag.cli.app import app, debug, fail, info, out_console, state
from genretag.store import index as hub

models_app = typer.Typer(
    name="models",
    help="List, inspect, download and remove models.\n\nExample: genretag models list",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
IndexOpt = Annotated[str | None, typer.Option(
    "--index", metavar="URL|FILE",
    help=f"Model index to use (default: ${hub.INDEX_ENV}, else the one shipped with genretag).")]


# --------------------------------------------------------------------------- helpers

def _accuracy(metrics: dict[str, Any]) -> float | None:
    """The headline accuracy of a card's metrics (see `CardMetrics.headline_accuracy`); None when it has none
    or its metrics are malformed."""
    try:
        return CardMetrics.from_dict(metrics).headline_accuracy()
    except ValueError:
        return None


def _fmt_acc(a: float | None) -> str:
    if a is None:
        return "-"
    return f"{a * 100:.1f}%" if a <= 1.0 else f"{a:.1f}%"


def _headline(metrics: dict[str, Any]) -> str:
    """Accuracy, or for a tagger without one its ROC-AUC / F1 (named)."""
    try:
        head = CardMetrics.from_dict(metrics).headline()
    except ValueError:
        return "-"
    if head is None:
        return "-"
    what, value = head
    return _fmt_acc(value) if what == "accuracy" else f"{what} {value:.3f}"


def _weights_size(card_path: Path, card: dict[str, Any]) -> int | None:
    if card.get("members"):
        sizes = []
        for m in card["members"]:
            mp = card_path.parent / m
            try:
                sizes.append(_weights_size(mp, json.loads(mp.read_text(encoding="utf-8"))))
            except (OSError, ValueError):
                return None
        return None if None in sizes else sum(sizes)
    w = card_path.parent / (card.get("weights") or card_path.with_suffix(".safetensors").name)
    return w.stat().st_size if w.exists() else None


def _installed() -> list[dict[str, Any]]:
    """Bundled then cached models as rows (a cached copy of a bundled name is shadowed)."""
    from genretag.paths import bundled_models_dir, models_cache_dir
    from genretag.store.local import default_model_name

    default = default_model_name()
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for where, d in (("bundled", bundled_models_dir()), ("cache", models_cache_dir())):
        if not d.is_dir():
            continue
        for cpath in sorted(d.glob("*.json")):
            name = cpath.stem
            row: dict[str, Any] = {"name": name, "where": where, "path": str(cpath),
                                   "default": where == "bundled" and name == default,
                                   "shadowed": name in seen}
            try:
                card = json.loads(cpath.read_text(encoding="utf-8"))
                if not isinstance(card, dict) or "labels" not in card:
                    raise ValueError("not a model card")
            except (OSError, ValueError) as e:
                row.update(error=str(e), labels=[], size=None, accuracy=None, metrics={}, description="")
            else:
                metrics = card.get("metrics") or {}
                row.update(labels=list(card.get("labels", [])), size=_weights_size(cpath, card),
                           accuracy=_accuracy(metrics), metrics=metrics,
                           description=str(card.get("description") or ""))
            seen.add(name)
            rows.append(row)
    return rows


def _local_card(name: str) -> Path | None:
    p = Path(name)
    if p.suffix == ".json" and p.is_file():
        return p
    return hub.installed_card(name)


# --------------------------------------------------------------------------- commands

@models_app.command("list")
def list_cmd(
    as_json: JsonOpt = False,
    available: Annotated[bool, typer.Option("--available", "-a",
                                            help="Also list models the index offers that are not installed.")] = False,
    index: IndexOpt = None,
) -> None:
    """List the bundled and cached models: labels, size, accuracy, and the default.

    Example: genretag models list --available
    """
    rows = _installed()
    if available:
        entries = hub.load_index(index)
        have = {r["name"] for r in rows}
        for e in entries.values():
            if e.name not in have and e.url:
                labels = list((e.card or {}).get("labels", []))
                metrics = (e.card or {}).get("metrics") or {}
                rows.append({"name": e.name, "where": "available", "path": e.url, "default": False,
                             "shadowed": False, "labels": labels, "size": e.size,
                             "accuracy": _accuracy(metrics), "metrics": metrics,
                             "description": e.description})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        info("no models installed (genretag models list --available shows what can be downloaded)")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("name", "where", "labels", "size", "accuracy", "default"):
        table.add_column(col, justify="right" if col in ("labels", "size", "accuracy") else "left")
    for r in rows:
        labels = str(len(r["labels"])) if r["labels"] else "?"
        if state.verbose and r["labels"]:
            labels = ", ".join(r["labels"])
        where = r["where"] + (" (shadowed)" if r["shadowed"] else "") + (" (unreadable)" if r.get("error") else "")
        table.add_row(r["name"], where, labels, hub.human_size(r["size"]) if r["size"] else "-",
                      _headline(r["metrics"]), "*" if r["default"] else "")
    out_console().print(table)


def _kv_table(pairs: list[tuple[str, str]]) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    for k, v in pairs:
        t.add_row(k, Text(v))  # plain text: "[a, b]" in a card value is not rich markup
    return t


def _fmt_value(v: Any, nested: bool = False) -> str:
    if isinstance(v, dict):
        s = ", ".join(f"{k}={_fmt_value(x, True)}" for k, x in v.items())
        return f"{{{s}}}" if nested else (s or "-")
    if isinstance(v, list):
        s = ", ".join(_fmt_value(x, True) for x in v)
        return f"[{s}]" if nested else (s or "-")
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v in (None, "") else str(v)


@models_app.command("info")
def info_cmd(
    name: Annotated[str, typer.Argument(help="Model name (bundled, cached or in the index) or card path.",
                                        show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the card's raw JSON.")] = False,
    index: IndexOpt = None,
) -> None:
    """Show a model's card: labels, audio and mel settings, architecture, metrics.

    Example: genretag models info msd-musicnn --json
    """
    cpath = _local_card(name)
    if cpath is None:
        entry = hub.load_index(index).get(name) if hub.valid_name(name) else None
        if entry is None:
            fail(f"model {name!r} not found (not bundled, not cached, not in the model index)", 2)
        if as_json:
            print(json.dumps(entry.to_dict(), indent=2))
            return
        pairs = [("name", entry.name), ("where", "index (not downloaded)"),
                 ("description", entry.description or "-"), ("url", entry.url or "- (bundled only)"),
                 ("size", hub.human_size(entry.size) if entry.size else "-"), ("sha256", entry.sha256 or "-")]
        out_console().print(_kv_table(pairs))
        if entry.url:
            info(f"download it with: genretag models download {entry.name}")
        return
    raw = cpath.read_text(encoding="utf-8")
    if as_json:
        sys.stdout.write(raw if raw.endswith("\n") else raw + "\n")
        return
    try:
        card = json.loads(raw)
        if not isinstance(card, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        fail(f"{cpath}: not a valid model card ({e})", 1)
    from genretag.paths import bundled_models_dir

    where = "bundled" if cpath.parent.resolve() == bundled_models_dir().resolve() else (
        "cache" if hub.installed_card(cpath.stem) == cpath else "file")
    labels = card.get("labels") or []
    metrics = card.get("metrics") or {}
    pairs = [
        ("name", str(card.get("name", cpath.stem))),
        ("where", f"{where} ({cpath})"),
        ("description", card.get("description") or "-"),
        ("labels", f"{len(labels)}: {', '.join(labels)}"),
        ("accuracy", _headline(metrics)),
        ("architecture", _fmt_value(card.get("architecture") or {})),
        ("audio", _fmt_value(card.get("audio") or {})),
        ("mel", _fmt_value(card.get("mel") or {})),
        ("temperature", _fmt_value(card.get("temperature", 1.0))),
    ]
    if card.get("members"):
        pairs.append(("members", _fmt_value(card["members"])))
    else:
        pairs.append(("weights", f"{card.get('weights') or '-'} ({hub.human_size(_weights_size(cpath, card))})"))
        pairs.append(("sha256", card.get("weights_sha256") or "-"))
    for key in ("metrics", "training"):
        if card.get(key):
            pairs.append((key, _fmt_value(card[key])))
    for key in ("license", "source"):
        if card.get(key):
            pairs.append((key, str(card[key])))
    out_console().print(_kv_table(pairs))


@models_app.command("download")
def download_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME|URL", show_default=False,
                                        help="A model name from the index, or the URL of a .safetensors "
                                             "(card beside it) or .json card.")],
    sha256: Annotated[str | None, typer.Option("--sha256", metavar="HEX",
                                               help="Expected sha256 of the weights.")] = None,
    index: IndexOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even when cached.")] = False,
) -> None:
    """Download a model into the cache (resumable, sha256-verified).

    Example: genretag models download my-model --index my_index.json

    Exit code 1 when the download fails or does not verify (the file is deleted), 2 on a usage error.
    """
    path = hub.download(name, sha256=sha256, index=index, force=force)
    debug(f"card: {path}")


@models_app.command("remove")
def remove_cmd(
    name: Annotated[str, typer.Argument(help="Name of a cached model.", show_default=False)],
) -> None:
    """Delete a downloaded model from the cache (bundled models cannot be removed).

    Example: genretag models remove my-model
    """
    files = hub.remove(name)
    for f in files:
        debug(f"deleted {f}")
    info(f"removed model {name!r} from the cache")
    if hub.installed_card(name) is not None:
        info(f"note: a bundled model called {name!r} remains")

