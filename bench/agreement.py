#!/usr/bin/env python
"""Do two runtimes/precisions of a model give the same answers? (default: auto against fp32)

Classifies the same files with the model loaded at each precision, as `genretag classify` does
(soft vote, early exit, the card's sub-tracks, the same executor and worker processes), and reports per set of files: how many get the
same genre, the largest difference in any probability, the sub-tracks run, and the accuracy of
each where the files have GTZAN labels. Sets (under --data, the folder holding the data sets):

  gtzan-test       the GTZAN tracks of the fault-filtered test list present in gtzan/
  excerpts-test    the test excerpts of gtzan-excerpts/ (manifest.csv, ff_subset == test)
  emotify          every clip of emotify/ (manifest.csv; its labels are not GTZAN genres)

    python bench/agreement.py --json reports/throughput/agreement-auto-fp32.json
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

from common import DEFAULT_DATA, write_report  # bench/ is on sys.path when run as a script


def file_sets(data: Path) -> dict[str, list[tuple[str, str | None]]]:
    """{set name: [(path, GTZAN genre or None)]} for the sets that exist under `data`."""
    sets: dict[str, list[tuple[str, str | None]]] = {}
    gtzan = data / "gtzan"
    ids = gtzan / "splits" / "test_filtered.txt"
    if ids.is_file():
        items = []
        for tid in ids.read_text().split():
            p = gtzan / f"{tid}.mp3"
            if p.is_file():
                items.append((str(p), tid.split("/")[0]))
        sets["gtzan-test"] = items
    for name, folder, subset_col, label_col, labelled in (
            ("excerpts-test", data / "gtzan-excerpts", "ff_subset", "genre", True),
            ("emotify", data / "emotify", None, "label", False)):
        mf = folder / "manifest.csv"
        if not mf.is_file():
            continue
        with mf.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        sets[name] = [(str(folder / r["path"]), r[label_col] if labelled else None) for r in rows
                      if subset_col is None or r[subset_col] == "test"]
    return sets


def run(model_name: str | None, precision: str, paths: list[str], jobs: int) -> tuple[list, float, str, list[str]]:
    """(results, seconds, runtime, the model's labels) of classifying `paths` at `precision`, through
    the executor `genretag classify` uses (so the network runs where it runs there: in the decoding
    workers for a model ONNX Runtime runs, else in this process; the runtime names which)."""
    from genretag.model import load_model
    from genretag.pipeline.classifier import Classifier

    model = load_model(model_name, device="cpu", precision=precision)
    t = time.perf_counter()
    with Classifier(model, jobs=jobs, fingerprints=False) as clf:
        runtime = model.runtime + (", in the workers" if clf.worker_model is not None else "")
        results = list(clf.classify(paths))
    return results, time.perf_counter() - t, runtime, model.labels


def compare(items, ref, new, lmap) -> dict:
    """Agreement of two runs over `items` ((path, label or None)); `lmap` (a `genretag.labels.LabelMap`)
    places a label ("hiphop") among the model's genres ("Hip-Hop") for the accuracy."""
    same = diff_max = 0.0
    n = len(items)
    worst = None
    segs_same = 0
    correct = {"reference": 0, "candidate": 0}
    labelled = 0
    for (path, label), a, b in zip(items, ref, new):
        same += a.genre == b.genre
        segs_same += a.segments == b.segments
        d = max((abs(a.probabilities[k] - b.probabilities.get(k, 0.0)) for k in a.probabilities), default=0.0)
        if d >= diff_max:
            diff_max, worst = d, path
        if label is not None:
            labelled += 1
            truth = lmap.resolve(label)
            correct["reference"] += a.genre == truth
            correct["candidate"] += b.genre == truth
    out = {"items": n, "same_genre": int(same), "same_genre_share": round(same / max(1, n), 4),
           "same_segments_share": round(segs_same / max(1, n), 4),
           "max_probability_difference": round(diff_max, 6), "worst_item": worst}
    if labelled:
        out["accuracy"] = {k: round(v / labelled, 4) for k, v in correct.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding gtzan/, gtzan-excerpts/, emotify/")
    ap.add_argument("--model", help="model name or card (default: the bundled default)")
    ap.add_argument("--reference", default="fp32", help="precision of the reference (default fp32: PyTorch)")
    ap.add_argument("--candidate", default="auto", help="precision compared with it (default auto)")
    ap.add_argument("--jobs", type=int, default=2, help="decoding worker processes")
    ap.add_argument("--json", type=Path, help="write the report as JSON here")
    args = ap.parse_args(argv)
    from genretag.labels import LabelMap

    sets = file_sets(args.data.resolve())
    if not sets:
        raise SystemExit(f"no data sets under {args.data}")
    report: dict = {"model": args.model or "bundled default", "reference": args.reference,
                    "candidate": args.candidate, "load_start": os.getloadavg(), "sets": {}}
    for name, items in sets.items():
        paths = [p for p, _ in items]
        ref, t_ref, rt_ref, labels = run(args.model, args.reference, paths, args.jobs)
        new, t_new, rt_new, _ = run(args.model, args.candidate, paths, args.jobs)
        row = compare(items, ref, new, LabelMap(labels))
        row.update({"reference_runtime": rt_ref, "candidate_runtime": rt_new,
                    "wall_s": {"reference": round(t_ref, 1), "candidate": round(t_new, 1)}})
        report["sets"][name] = row
        acc = row.get("accuracy")
        print(f"{name:<14} {row['items']:>4} items  same genre {row['same_genre']}/{row['items']} "
              f"({100 * row['same_genre_share']:.1f} %)  max |dp| {row['max_probability_difference']:.6f}"
              + (f"  accuracy {args.reference} {100 * acc['reference']:.1f} % / {args.candidate} "
                 f"{100 * acc['candidate']:.1f} %" if acc else "")
              + f"  ({rt_ref} / {rt_new})", flush=True)
    all_items = sum(r["items"] for r in report["sets"].values())
    all_same = sum(r["same_genre"] for r in report["sets"].values())
    report["same_genre_share"] = round(all_same / max(1, all_items), 4)
    report["max_probability_difference"] = max(r["max_probability_difference"] for r in report["sets"].values())
    report["load_end"] = os.getloadavg()
    print(f"all sets: same genre on {all_same}/{all_items} ({100 * report['same_genre_share']:.2f} %), "
          f"largest probability difference {report['max_probability_difference']:.6f}")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
