"""`genretag evaluate` on labelled music other than a GTZAN layout: a folder per label, a CSV manifest,
or a library's own genre tags (`--against-tags`). The command itself is in `genretag.cli.train`."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from genretag.cli.app import err_console, fail, info, out_console
from genretag.labels import LabelMap, load_map_file, parse_map

#: The thresholds the printed curve shows (the JSON report has every 0.01, and the model's own).
SHOWN_THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


class Layout(str, Enum):
    auto = "auto"
    gtzan = "gtzan"
    folders = "folders"


def user_map(items: list[str] | None, map_file: Path | None) -> dict[str, str]:
    """The synonyms given on the command line: the --map-file's lines, then each --map (which wins)."""
    out = load_map_file(map_file) if map_file is not None else {}
    out.update(parse_map(items or []))
    return out


def check_plot_backend() -> None:
    """A usage error before any work when --plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        fail("--plot needs matplotlib: pip install 'genretag[train]'", 2)


def relabel(tracks: list, lmap: LabelMap, where: str) -> list:
    """GTZAN-layout tracks with each genre replaced by the model label it names (``hiphop`` is ``Hip-Hop``
    for the broad model); a genre the model does not have is an error naming it."""
    from collections import Counter
    from dataclasses import replace

    from genretag.labels import OUTSIDE

    out, unknown = [], Counter()
    for t in tracks:
        to = lmap.resolve(t.genre)
        if to is None or to == OUTSIDE:
            unknown[t.genre] += 1
        else:
            out.append(replace(t, genre=to))
    if unknown:
        names = ", ".join(f"{g!r} ({n})" for g, n in sorted(unknown.items()))
        fail(f"{where}: genre{'s' * (len(unknown) != 1)} {names} not among the genres of {lmap.describe()} "
             "(a GTZAN layout is scored on the model's genres only: use --layout folders to count them as outside)", 2)
    return out


def read_labelled(lmap: LabelMap, data_dir: Path | None, manifest: Path | None, against_tags: bool,
                  subset: str | None, unreadable: list[str]) -> tuple[str, str, list]:
    """(layout, source, Labelled files): every label matched before any audio is decoded."""
    from genretag.training import labelled

    if manifest is not None:
        return "manifest", str(manifest), labelled.from_manifest(manifest, lmap, subset)
    if against_tags:
        def on_error(path: str, reason: str) -> None:
            err_console().print(f"genretag: error: cannot read folder {path}: {reason}", markup=False)
            unreadable.append(path)

        return "tags", str(data_dir), list(labelled.from_tags([str(data_dir)], lmap, on_error=on_error))
    return "folders", str(data_dir), labelled.from_folders(data_dir, lmap)


def evaluate_labelled(model, lmap: LabelMap, *, data_dir: Path | None, manifest: Path | None, against_tags: bool,
                      subset: str | None, segments: int | None, jobs: int | None, no_cache: bool,
                      json_out: Path | None, plot: Path | None) -> None:
    """Classify labelled files as `genretag tag` would (same confidence, same result cache) and report."""
    from genretag.cli.common import open_result_cache, with_progress
    from genretag.pipeline.classifier import Classifier
    from genretag.pipeline.inference import default_jobs
    from genretag.training import evaluate as ev

    unreadable: list[str] = []
    layout, source, items = read_labelled(lmap, data_dir, manifest, against_tags, subset, unreadable)
    if not items:
        fail("no audio files found", 1)
    threshold, threshold_source = ev.tag_threshold(model.card)
    kinds = {k: sum(it.kind == k for it in items) for k in ("label", "outside", "no label")}
    info(f"evaluating {model.card.name} on {len(items)} files of {source} ({kinds['label']} with one of its genres, "
         f"{kinds['outside']} outside them" + (f", {kinds['no label']} without a genre" if against_tags else "") + ")")
    cache = None if no_cache else open_result_cache()
    clf = Classifier(model, vote="soft", segments=segments, jobs=jobs or default_jobs(), cache=cache)
    results = []
    try:
        for r in with_progress(clf.classify(it.path for it in items)):
            if not r.ok:
                err_console().print(f"genretag: error: {r.path}: {r.error}", markup=False)
            results.append(r)
    finally:
        clf.close()  # and its result cache
    rep = {"layout": layout, "source": source, "subset": subset or "", "models": [model.card.name],
           **ev.labelled_report(items, results, labels=model.labels, threshold=threshold, source=threshold_source)}
    print_labelled(rep)
    write_outputs(rep, json_out, plot, f"{model.card.name} on {source}" + (f" ({subset})" if subset else ""))
    if rep["n_errors"] or unreadable:
        raise typer.Exit(1)


def write_outputs(rep: dict, json_out: Path | None, plot: Path | None, title: str) -> None:
    """The JSON report and the PNG, after the printed report (a failed write: exit 1)."""
    from genretag.training import evaluate as ev

    writes = [(json_out, lambda: json_out.write_text(json.dumps(rep, indent=2))),
              (plot, lambda: ev.plot_report(rep, str(plot), title))]
    for path, write in writes:
        if path is None:
            continue
        try:
            write()
        except OSError as e:
            fail(f"cannot write {path}: {e.strerror or e}", 1)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def print_labelled(rep: dict) -> None:
    """The report of `evaluate_labelled` on stdout: counts, top-1, the confusion table, the curve."""
    con = out_console()
    where = f"{rep['layout']} {rep['source']}" + (f" ({rep['subset']})" if rep["subset"] else "")
    con.print(f"{where}: {rep['n_tracks']} files with one of the model's genres, {rep['n_outside']} outside them"
              + (f", {rep['n_no_label']} without a genre" if rep["layout"] == "tags" else "")
              + f", {rep['n_errors']} failed", markup=False)
    con.print(f"top-1 {rep['accuracy']['top1']:.1%}  macro F1 {rep['macro_f1']:.3f}  ECE {rep['ece']:.3f}",
              markup=False)
    labels = rep["labels"]
    at_t = f"right/written at {rep['threshold']['value']:.2f}"
    t = Table("true \\ predicted", *[lab[:5] for lab in labels], "recall", "precision", "F1", "n", at_t)
    for i, (lab, row) in enumerate(zip(labels, rep["confusion"])):
        pc = rep["per_class"][lab]
        at = pc["at_threshold"]
        if pc["support"] or any(r[i] for r in rep["confusion"]) or rep["confusion_outside"][i]:  # true or predicted
            t.add_row(lab, *[str(v) if v else "." for v in row], f"{pc['recall']:.2f}", f"{pc['precision']:.2f}",
                      f"{pc['f1']:.2f}", str(pc["support"]), f"{at['right']}/{at['written']}")
    if rep["n_outside"]:
        t.add_row("(outside)", *[str(v) if v else "." for v in rep["confusion_outside"]], "", "", "",
                  str(rep["n_outside"]), "")
    con.print(t)
    print_curve(rep)
    at, ab = rep["at_threshold"], rep["abstentions"]
    con.print(f"abstentions at {at['threshold']:.2f}: {ab['files']} files ({ab['in_labels']} with one of the "
              f"model's genres, {ab['outside']} outside them)", markup=False)
    if rep["outside"]["labels"]:
        top = ", ".join(f"{lab} {n}" for lab, n in list(rep["outside"]["labels"].items())[:8])
        con.print(f"outside the model's genres: {top}", markup=False)
    if rep["layout"] == "tags":
        nl = rep["no_label"]
        con.print(f"without a genre in the tags: {nl['files']} files, {nl['written_at_threshold']} of them would "
                  f"get one at {at['threshold']:.2f}", markup=False)


def print_curve(rep: dict) -> None:
    """The precision/coverage curve at a few thresholds and at the model's own."""
    own = rep["threshold"]["value"]
    shown = sorted({*SHOWN_THRESHOLDS, own})
    t = Table("confidence >=", "written", "coverage", "precision", "of the model's genres written",
              "outside given a genre")
    for p in rep["curve"]:
        if not any(abs(p["threshold"] - s) < 1e-9 for s in shown):
            continue
        mark = f" ({rep['threshold']['source']})" if abs(p["threshold"] - own) < 1e-9 else ""
        t.add_row(f"{p['threshold']:.2f}{mark}", f"{p['written']}", _pct(p["coverage"]), _pct(p["precision"]),
                  _pct(p["coverage_in_labels"]), str(p["outside_written"]))
    out_console().print(t)


def threshold_line(rep: dict, noun: str = "tracks") -> str:
    """One line: what `tag` would write at the model's own threshold (for the GTZAN report)."""
    at = rep["at_threshold"]
    return (f"  at the tag threshold {at['threshold']:.2f} ({rep['threshold']['source']}): "
            f"{at['written']} of {at['written'] + at['abstained']} {noun} written ({_pct(at['coverage'])}), "
            f"precision {_pct(at['precision'])}")
