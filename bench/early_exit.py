#!/usr/bin/env python
"""Fit the early-exit rule (genretag.pipeline.early_exit) on valid lists; check it on test.

    python bench/early_exit.py --fit-model CARD [--fit-model CARD] [--model CARD] [--emotify DIR] [--json FILE]

Every sub-track of every listed recording goes through each model once, decoded and cut
exactly as `genretag classify` does (`prepare_file`); the probabilities are cached in
--workdir (keyed by model weights and track list), so refitting costs nothing.

The lists: GTZAN's fault-filtered valid and test tracks (--data) and Emotify's valid (21)
and test (32) recordings (--emotify, its manifest.csv's `subset` column). Emotify's labels
are not GTZAN genres, so on Emotify only the agreement with the full vote is measured,
accuracy only on GTZAN. The fit set is GTZAN valid + Emotify valid; both test lists are
only reported, as is every list on --model.

The fit needs a model that has not seen valid. The bundled models' GTZAN head was refitted
on train + valid (gtzan-musicnn's card says `valid_seen_in_training`: 100 % on valid), so
on valid two sub-tracks already agree with the full vote on every track and any margin
"fits". `--fit-model` is the same model with its head trained on train only, built by

    python scripts/heldout_models.py --out runs/heldout

(the ``genretag transfer`` run of gtzan-musicnn's selected configuration without --refit,
`gtzan-musicnn-heldout`, and `broad-musicnn-heldout`: broad-musicnn's card on that head;
see that script's help). One rule serves both bundled musicnn models, so both fit it:

    python bench/early_exit.py --fit-model runs/heldout/broad-musicnn-heldout.json \\
        --fit-model runs/heldout/gtzan-musicnn-heldout.json --model models/broad-musicnn.json

The rule is a margin on the soft vote, so it carries over to the refitted heads. For each
checkpoint set tried: the smallest margin at which every fit model's genres on its fit set
equal the full vote on at least --agreement of the recordings, both in the rule's own
order and averaged over 50 random orders of each recording's sub-tracks (a steadier
estimate on 100 recordings). The set with the fewest sub-tracks run per fit-set recording,
averaged over the fit models, wins. The shipped rule (DEFAULT_EARLY_EXIT) is measured on
every list of the first fit model and of --model.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import DEFAULT_DATA, DEFAULT_SOURCE  # bench/ is on sys.path when run as a script

CHECKPOINT_SETS = [(1,), (2,), (3,), (4,), (5,), (2, 4), (2, 5), (3, 5), (3, 6), (2, 4, 6), (3, 5, 7)]

MARGINS = np.round(np.arange(0.0, 1.0001, 0.01), 2)


def segment_probs(model, paths: list[str], workdir: Path) -> list[np.ndarray]:
    """(sub-tracks, labels) probabilities per path in classify's own order of sub-tracks (cached)."""
    from genretag.pipeline.inference import prepare_stream

    key = hashlib.sha256(json.dumps([model.card.name, model.card.weights_sha256, paths]).encode()).hexdigest()[:16]
    f = workdir / f"segprobs-{model.card.name}-{key}.npz"
    if f.exists():
        z = np.load(f)
        return [z[str(i)] for i in range(len(paths))]
    out = []
    for p in prepare_stream(paths, model.card.audio, segments=None, jobs=2):
        if p.waves is None:
            raise SystemExit(f"{p.path}: {p.error}")
        out.append(np.concatenate([model.predict(p.waves[i:i + 8]) for i in range(0, len(p.waves), 8)]))
    workdir.mkdir(parents=True, exist_ok=True)
    np.savez(f, **{str(i): x for i, x in enumerate(out)})
    return out


def evaluate(rule, probs: list[np.ndarray], y: np.ndarray) -> dict:
    """Agreement with the full soft vote, accuracy, sub-tracks run and decoded, for one rule.

    `y` is each recording's label index, -1 for one without a label of the model (Emotify):
    accuracy counts the labelled ones only (None when there are none)."""
    runs, decoded, same, right, right_full = [], [], 0, 0, 0
    for p, t in zip(probs, y):
        ordered = p[rule.order(len(p))]
        k = rule.run_count(ordered)
        early = int(ordered[:k].mean(axis=0).argmax())
        full = int(p.mean(axis=0).argmax())
        runs.append(k)
        # a file libsndfile reads: the first look's sub-tracks, then all the rest at once (prepare_rest)
        decoded.append(k if k <= rule.next_stop(0, len(p)) else len(p))
        same += early == full
        right += early == t
        right_full += full == t
    n, labelled = len(probs), int(np.sum(np.asarray(y) >= 0))
    return {"tracks": n, "changed": int(n - same), "agreement": round(same / n, 4),
            "accuracy": round(right / labelled, 4) if labelled else None,
            "accuracy_full": round(right_full / labelled, 4) if labelled else None,
            "correct": int(right) if labelled else None, "correct_full": int(right_full) if labelled else None,
            "mean_segments_run": round(float(np.mean(runs)), 3),
            "mean_segments_decoded": round(float(np.mean(decoded)), 3)}


def random_order_agreement(rule, probs: list[np.ndarray], orders: int = 50, seed: int = 0) -> float:
    """Share of (track, random order of its sub-tracks) where the rule's genre is the full vote's."""
    rng = np.random.default_rng(seed)
    same = total = 0
    for p in probs:
        full = int(p.mean(axis=0).argmax())
        for _ in range(orders):
            q = p[rng.permutation(len(p))]
            k = rule.run_count(q)
            same += int(q[:k].mean(axis=0).argmax()) == full
            total += 1
    return same / total


def fit(fit_sets: dict[str, tuple[list[np.ndarray], np.ndarray]], agreement: float) -> list[dict]:
    """For every checkpoint set: the smallest margin that keeps `agreement` on the fit set of every
    fit model (name -> (probabilities, labels)); sorted by the sub-tracks run, averaged over them."""
    from genretag.pipeline.early_exit import EarlyExit

    rows = []
    for cps in CHECKPOINT_SETS:
        for m in MARGINS:
            rule = EarlyExit(cps, float(m))
            results = {}
            for name, (probs, y) in fit_sets.items():
                r = evaluate(rule, probs, y)
                if r["agreement"] < agreement:
                    break
                r["random_order_agreement"] = round(random_order_agreement(rule, probs), 4)
                if r["random_order_agreement"] < agreement:
                    break
                results[name] = r
            else:
                runs = np.mean([r["mean_segments_run"] for r in results.values()])
                rows.append({"checkpoints": list(cps), "margin": float(m), "fit": next(iter(results.values())),
                             "fit_models": results, "mean_segments_run": round(float(runs), 3)})
                break
    return sorted(rows, key=lambda r: r["mean_segments_run"])


#: The lists measured: JSON key suffix -> (source, subset). "valid" and "test" are GTZAN's.
LISTS = {"valid": ("gtzan", "valid"), "test": ("gtzan", "test"),
         "emotify_valid": ("emotify", "valid"), "emotify_test": ("emotify", "test")}

#: The fit set: these lists of the fit model, concatenated.
FIT_LISTS = ("valid", "emotify_valid")


def emotify_paths(folder: Path, subset: str) -> list[str]:
    """Emotify's recordings of `subset` (manifest.csv's `subset` column), in manifest order."""
    with open(folder / "manifest.csv", newline="") as f:
        return [str(folder / row["path"]) for row in csv.DictReader(f) if row["subset"] == subset]


def load_lists(model, gtzan: dict, emotify: Path, workdir: Path) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """(sub-track probabilities, label index or -1) of every list in LISTS, for `model`."""
    from genretag.labels import LabelMap

    # GTZAN's folder names ("hiphop") placed among a model's labels ("hiphop", or "Hip-Hop" for broad-musicnn)
    lmap, idx = LabelMap(model.labels), {lab: i for i, lab in enumerate(model.labels)}
    out = {}
    for key, (source, subset) in LISTS.items():
        if source == "gtzan":
            tracks = gtzan[subset]
            paths = [str(t.path) for t in tracks]
            y = np.array([idx[lmap.resolve(t.genre)] for t in tracks])
        else:
            paths = emotify_paths(emotify, subset)
            y = np.full(len(paths), -1)
        out[key] = (segment_probs(model, paths, workdir), y)
    out["fit"] = (sum((out[k][0] for k in FIT_LISTS), []), np.concatenate([out[k][1] for k in FIT_LISTS]))
    return out


def measure(rule, data: dict, check: dict | None = None, random_orders: bool = False) -> dict:
    """`rule` on every list of a fit model (`data`, with its fit set) and of the checked one (`check`, keys check_*)."""
    out = {}
    for prefix, lists in (("", data), ("check_", check)):
        for key in (("fit", *LISTS) if not prefix else LISTS) if lists is not None else ():
            out[prefix + key] = evaluate(rule, *lists[key])
            if random_orders:
                out[prefix + key]["random_order_agreement"] = round(random_order_agreement(rule, lists[key][0]), 4)
    return out


def _runs_agree(r: dict) -> str:
    return f"{r['mean_segments_run']:>8.2f} {r['agreement']:>8.1%}"


def print_tables(rows: list[dict], fit_names: list[str], check_name: str) -> None:
    """The candidates' figures: one table per fit model, one for the checked model."""
    head = f"{'checkpoints':<12} {'margin':>6}"
    for name in fit_names:
        print(f"{name} (fit model); agreement = same genre as the full 10-sub-track vote")
        print(f"{head} | {'fit set: runs agree random':>26} | {'GTZAN valid: runs agree':>23} | "
              f"{'Emotify valid: runs agree':>25} | {'GTZAN test: runs agree':>22} | {'Emotify test: runs agree':>24}")
        for r in rows:
            f, lists = r["fit_models"][name], r["fit_model_lists"][name]
            print(f"{','.join(map(str, r['checkpoints'])):<12} {r['margin']:>6.2f} | {_runs_agree(f)} "
                  f"{f['random_order_agreement']:>8.1%} | {_runs_agree(lists['valid']):>23} | "
                  f"{_runs_agree(lists['emotify_valid']):>25} | {_runs_agree(lists['test']):>22} | "
                  f"{_runs_agree(lists['emotify_test']):>24}")
    print(f"{check_name} (checked)")
    print(f"{head} | {'GTZAN valid: runs agree':>23} | {'GTZAN test: runs agree correct (full)':>37} | "
          f"{'Emotify valid: runs agree':>25} | {'Emotify test: runs agree':>24}")
    for r in rows:
        ct = r["check_test"]
        print(f"{','.join(map(str, r['checkpoints'])):<12} {r['margin']:>6.2f} | {_runs_agree(r['check_valid']):>23} | "
              f"{_runs_agree(ct)} {ct['correct']:>8} ({ct['correct_full']}) | "
              f"{_runs_agree(r['check_emotify_valid']):>25} | {_runs_agree(r['check_emotify_test']):>24}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_SOURCE, help="GTZAN-layout folder")
    ap.add_argument("--emotify", type=Path, default=DEFAULT_DATA / "emotify",
                    help="Emotify folder with its manifest.csv")
    ap.add_argument("--fit-model", action="append", default=[],
                    help="model card whose fit-set probabilities fit the rule (see above); repeat it and the "
                         "rule must keep --agreement on each one's fit set")
    ap.add_argument("--model", help="model the rule is checked on (default: the bundled default)")
    ap.add_argument("--agreement", type=float, default=0.99,
                    help="share of fit-set recordings whose genre must equal the full vote's")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "genretag-bench")
    ap.add_argument("--json", type=Path, help="write the fit and its check here")
    args = ap.parse_args(argv)

    import torch

    from genretag.model import load_net
    from genretag.pipeline.early_exit import DEFAULT_EARLY_EXIT, EarlyExit
    from genretag.training.dataset import scan, split

    torch.set_num_threads(2)
    if not (args.emotify / "manifest.csv").is_file():
        raise SystemExit(f"{args.emotify}: no manifest.csv (give --emotify the Emotify folder)")
    gtzan = split(scan(args.data), "fault-filtered")
    fit_models = [load_net(card, "cpu") for card in args.fit_model or [args.model]]
    check_model = load_net(args.model, "cpu")
    fit_names = [m.card.name for m in fit_models]
    data = {m.card.name: load_lists(m, gtzan, args.emotify, args.workdir) for m in fit_models}
    check = load_lists(check_model, gtzan, args.emotify, args.workdir)
    first = data[fit_names[0]]
    for m in fit_models:
        if "valid_seen_in_training" in (m.card.metrics or {}):
            print(f"warning: {m.card.name}'s head was trained on valid too, so valid cannot choose "
                  "the margin; give --fit-model a head trained on train only (see --help)", file=sys.stderr)
    rows = fit({name: data[name]["fit"] for name in fit_names}, args.agreement)
    for r in rows:
        rule = EarlyExit(tuple(r["checkpoints"]), r["margin"])
        r["fit_model_lists"] = {name: measure(rule, data[name]) for name in fit_names}
        r.update({k: v for k, v in measure(rule, first, check).items() if k != "fit"})
        r["valid"]["random_order_agreement"] = round(random_order_agreement(rule, first["valid"][0]), 4)
    print(f"fit set: GTZAN valid ({len(first['valid'][1])} tracks) + Emotify valid "
          f"({len(first['emotify_valid'][1])} recordings) of {', '.join(fit_names)}; "
          f"checked on {check_model.card.name}")
    print_tables(rows, fit_names, check_model.card.name)
    best = rows[0]
    shipped = {"checkpoints": list(DEFAULT_EARLY_EXIT.checkpoints), "margin": DEFAULT_EARLY_EXIT.margin,
               **measure(DEFAULT_EARLY_EXIT, first, check, random_orders=True),
               "fit_models": {name: measure(DEFAULT_EARLY_EXIT, data[name], random_orders=True)
                              for name in fit_names}}
    ct, ce = shipped["check_test"], shipped["check_emotify_test"]
    print(f"fitted: checkpoints {best['checkpoints']} margin {best['margin']}; shipped DEFAULT_EARLY_EXIT: "
          f"{shipped['checkpoints']} margin {shipped['margin']}: on {check_model.card.name} GTZAN valid "
          f"{shipped['check_valid']['agreement']:.1%} and test {ct['agreement']:.1%} "
          f"the same genre as the full vote, test correct {ct['correct']} vs "
          f"{ct['correct_full']} tracks, {ct['mean_segments_run']} "
          f"sub-tracks per test track; over random sub-track orders "
          f"{ct['random_order_agreement']:.1%} of test; Emotify test {ce['agreement']:.1%} "
          f"({ce['random_order_agreement']:.1%} over random orders), {ce['mean_segments_run']} sub-tracks per recording")
    for name in fit_names:
        f = shipped["fit_models"][name]["fit"]
        print(f"  shipped on {name}'s fit set: {f['agreement']:.1%} in order, {f['random_order_agreement']:.1%} "
              f"over random orders, {f['mean_segments_run']} sub-tracks per recording")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "fit_model": fit_names[0], "fit_weights_sha256": fit_models[0].card.weights_sha256,
            "fit_models": {m.card.name: m.card.weights_sha256 for m in fit_models},
            "model": check_model.card.name, "weights_sha256": check_model.card.weights_sha256,
            "fit_set": [f"{LISTS[k][0]} {LISTS[k][1]}" for k in FIT_LISTS],
            "agreement": args.agreement, "fitted": best, "shipped": shipped, "candidates": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
