#!/usr/bin/env python
"""Fit the early-exit rule (genretag.pipeline.early_exit) on GTZAN valid; check it on test.

    python bench/early_exit.py --fit-model CARD [--model CARD] [--data DIR] [--json FILE]

Every sub-track of every fault-filtered valid and test track goes through each model
once, decoded and cut exactly as `genretag classify` does (`prepare_file`); the
probabilities are cached in --workdir (keyed by model weights and track list), so
refitting costs nothing.

The fit needs a model that has not seen valid. The bundled default's head was refitted
on train + valid (its card says `valid_seen_in_training`: 100 % on valid), so on valid
two sub-tracks already agree with the full vote on every track and any margin "fits".
`--fit-model` is the same network with its head trained on train only:

    genretag transfer ../shared/data/gtzan --mode head --pooling all --hidden 256 \
        --weight-decay 0.1 --out runs/heldout --name gtzan-musicnn-heldout

The rule is a margin on the soft vote, so it carries over to the refitted head. For
each checkpoint set tried: the smallest margin at which the fit model's valid genres
equal the full vote on at least --agreement of the tracks, both in the rule's own order
and averaged over 50 random orders of each track's sub-tracks (a steadier estimate on
79 tracks). The set with the fewest sub-tracks run per valid track wins. Test (both
models) and the default's valid are only reported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import DEFAULT_SOURCE  # bench/ is on sys.path when run as a script

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
    """Agreement with the full soft vote, accuracy and sub-tracks run, for one rule."""
    runs, same, right, right_full = [], 0, 0, 0
    for p, t in zip(probs, y):
        ordered = p[rule.order(len(p))]
        k = rule.run_count(ordered)
        early = int(ordered[:k].mean(axis=0).argmax())
        full = int(p.mean(axis=0).argmax())
        runs.append(k)
        same += early == full
        right += early == t
        right_full += full == t
    n = len(probs)
    return {"tracks": n, "changed": int(n - same), "agreement": round(same / n, 4),
            "accuracy": round(right / n, 4), "accuracy_full": round(right_full / n, 4),
            "correct": int(right), "correct_full": int(right_full),
            "mean_segments_run": round(float(np.mean(runs)), 3)}


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


def fit(probs: list[np.ndarray], y: np.ndarray, agreement: float) -> list[dict]:
    """For every checkpoint set: the smallest margin that keeps `agreement` (see the module doc)."""
    from genretag.pipeline.early_exit import EarlyExit

    rows = []
    for cps in CHECKPOINT_SETS:
        for m in MARGINS:
            rule = EarlyExit(cps, float(m))
            r = evaluate(rule, probs, y)
            if r["agreement"] < agreement:
                continue
            r["random_order_agreement"] = round(random_order_agreement(rule, probs), 4)
            if r["random_order_agreement"] >= agreement:
                rows.append({"checkpoints": list(cps), "margin": float(m), "valid": r})
                break
    return sorted(rows, key=lambda r: r["valid"]["mean_segments_run"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_SOURCE, help="GTZAN-layout folder")
    ap.add_argument("--fit-model", help="model card whose valid probabilities fit the rule (see above)")
    ap.add_argument("--model", help="model the rule is checked on (default: the bundled default)")
    ap.add_argument("--agreement", type=float, default=0.99,
                    help="share of valid tracks whose genre must equal the full vote's")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "genretag-bench")
    ap.add_argument("--json", type=Path, help="write the fit and its check here")
    args = ap.parse_args(argv)

    import torch

    from genretag.labels import broad_genre, label_key
    from genretag.model import load_net
    from genretag.pipeline.early_exit import DEFAULT_EARLY_EXIT, EarlyExit
    from genretag.training.dataset import scan, split

    torch.set_num_threads(2)
    subsets = split(scan(args.data), "fault-filtered")
    models = {"fit": load_net(args.fit_model or args.model, "cpu"), "check": load_net(args.model, "cpu")}
    data: dict = {}
    for role, model in models.items():
        # GTZAN's folder names ("hiphop") against a model's labels ("hiphop", or "Hip-Hop" for broad-musicnn)
        idx = {label_key(broad_genre(lab) or lab): i for i, lab in enumerate(model.labels)}
        for name in ("valid", "test"):
            tracks = subsets[name]
            data[role, name] = (segment_probs(model, [str(t.path) for t in tracks], args.workdir),
                                np.array([idx[label_key(broad_genre(t.genre) or t.genre)] for t in tracks]))
    if "valid_seen_in_training" in (models["fit"].card.metrics or {}):
        print(f"warning: {models['fit'].card.name}'s head was trained on valid too, so valid cannot choose "
              "the margin; give --fit-model a head trained on train only (see --help)", file=sys.stderr)
    rows = fit(*data["fit", "valid"], args.agreement)
    for r in rows:
        rule = EarlyExit(tuple(r["checkpoints"]), r["margin"])
        r["test"] = evaluate(rule, *data["fit", "test"])
        r["check_valid"] = evaluate(rule, *data["check", "valid"])
        r["check_test"] = evaluate(rule, *data["check", "test"])
    print(f"fit on {models['fit'].card.name} valid ({len(data['fit', 'valid'][1])} tracks), "
          f"checked on {models['check'].card.name}; agreement = same genre as the full 10-sub-track vote")
    print(f"{'checkpoints':<12} {'margin':>6} | {'fit valid: runs agree random':>29} | {'fit test: runs agree':>20} | "
          f"{'check valid: agree':>18} | {'check test: runs agree correct (full)':>37}")
    for r in rows:
        v, t, cv, ct = r["valid"], r["test"], r["check_valid"], r["check_test"]
        print(f"{','.join(map(str, r['checkpoints'])):<12} {r['margin']:>6.2f} | {v['mean_segments_run']:>8.2f} "
              f"{v['agreement']:>9.1%} {v['random_order_agreement']:>9.1%} | {t['mean_segments_run']:>8.2f} "
              f"{t['agreement']:>10.1%} | {cv['agreement']:>18.1%} | {ct['mean_segments_run']:>8.2f} "
              f"{ct['agreement']:>8.1%} {ct['correct']:>8} ({ct['correct_full']})")
    best = rows[0]
    shipped = {"checkpoints": list(DEFAULT_EARLY_EXIT.checkpoints), "margin": DEFAULT_EARLY_EXIT.margin}
    for key, role, name in (("valid", "fit", "valid"), ("test", "fit", "test"),
                            ("check_valid", "check", "valid"), ("check_test", "check", "test")):
        shipped[key] = evaluate(DEFAULT_EARLY_EXIT, *data[role, name])
        shipped[key]["random_order_agreement"] = round(random_order_agreement(DEFAULT_EARLY_EXIT,
                                                                              data[role, name][0]), 4)
    print(f"fitted: checkpoints {best['checkpoints']} margin {best['margin']}; shipped DEFAULT_EARLY_EXIT: "
          f"{shipped['checkpoints']} margin {shipped['margin']}: on {models['check'].card.name} valid "
          f"{shipped['check_valid']['agreement']:.1%} and test {shipped['check_test']['agreement']:.1%} "
          f"the same genre as the full vote, test correct {shipped['check_test']['correct']} vs "
          f"{shipped['check_test']['correct_full']} tracks, {shipped['check_test']['mean_segments_run']} "
          f"sub-tracks per test track; over random sub-track orders "
          f"{shipped['check_test']['random_order_agreement']:.1%} of test")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "fit_model": models["fit"].card.name, "fit_weights_sha256": models["fit"].card.weights_sha256,
            "model": models["check"].card.name, "weights_sha256": models["check"].card.weights_sha256,
            "agreement": args.agreement, "fitted": best, "shipped": shipped, "candidates": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
