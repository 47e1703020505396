#!/usr/bin/env python
"""Fit the early-exit rule (genretag.pipeline.early_exit) on GTZAN valid; check it on test.

    python bench/early_exit.py [--data ../shared/data/gtzan] [--model CARD] [--json FILE]

Every sub-track of every fault-filtered valid and test track goes through the model
once, decoded and cut exactly as `genretag classify` does (`prepare_file`); the
probabilities are cached in --workdir (keyed by model weights and track list), so
refitting costs nothing. Then, for each checkpoint set tried, the smallest margin at
which at most --max-valid-changes valid tracks' genre differs from the full vote; the
set with the fewest sub-tracks run per valid track wins. Test is only reported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT_SETS = [(1,), (2,), (3,), (4,), (5,), (2, 4), (2, 5), (3, 5), (3, 6), (2, 4, 6), (3, 5, 7)]
from throughput import DEFAULT_SOURCE  # bench/ is on sys.path when run as a script

MARGINS = np.round(np.arange(0.0, 1.0001, 0.01), 2)


def segment_probs(net, paths: list[str], workdir: Path) -> list[np.ndarray]:
    """(sub-tracks, labels) probabilities per path in classify's own order of sub-tracks (cached)."""
    from genretag.pipeline.inference import prepare_stream

    key = hashlib.sha256(json.dumps([net.card.name, net.card.weights_sha256, paths]).encode()).hexdigest()[:16]
    f = workdir / f"segprobs-{net.card.name}-{key}.npz"
    if f.exists():
        z = np.load(f)
        return [z[str(i)] for i in range(len(paths))]
    out = []
    for p in prepare_stream(paths, net.card.audio, None, 2):
        if p.waves is None:
            raise SystemExit(f"{p.path}: {p.error}")
        out.append(np.concatenate([net.predict(p.waves[i:i + 8]) for i in range(0, len(p.waves), 8)]))
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


def fit(probs: list[np.ndarray], y: np.ndarray, max_changes: int) -> list[dict]:
    """For every checkpoint set: the smallest margin that changes at most max_changes genres."""
    from genretag.pipeline.early_exit import EarlyExit

    rows = []
    for cps in CHECKPOINT_SETS:
        for m in MARGINS:
            r = evaluate(EarlyExit(cps, float(m)), probs, y)
            if r["changed"] <= max_changes:
                rows.append({"checkpoints": list(cps), "margin": float(m), "valid": r})
                break
    return sorted(rows, key=lambda r: r["valid"]["mean_segments_run"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_SOURCE, help="GTZAN-layout folder")
    ap.add_argument("--model", help="model card (default: the bundled default model)")
    ap.add_argument("--max-valid-changes", type=int, default=1,
                    help="valid tracks whose genre may differ from the full vote (default 1 of 197: 99.5%%)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "genretag-bench")
    ap.add_argument("--json", type=Path, help="write the fit and its check here")
    args = ap.parse_args(argv)

    import torch

    from genretag.pipeline.early_exit import DEFAULT_EARLY_EXIT, EarlyExit
    from genretag.store.load import load_net
    from genretag.training.dataset import scan, split

    torch.set_num_threads(2)
    net = load_net(args.model, "cpu")
    subsets = split(scan(args.data), "fault-filtered")
    data = {}
    for name in ("valid", "test"):
        tracks = subsets[name]
        idx = {lab: i for i, lab in enumerate(net.labels)}
        data[name] = (segment_probs(net, [str(t.path) for t in tracks], args.workdir),
                      np.array([idx[t.genre] for t in tracks]))
    rows = fit(*data["valid"], args.max_valid_changes)
    for r in rows:
        r["test"] = evaluate(EarlyExit(tuple(r["checkpoints"]), r["margin"]), *data["test"])
    best = rows[0]
    print(f"model {net.card.name}; valid {len(data['valid'][1])} tracks, test {len(data['test'][1])}")
    print(f"{'checkpoints':<12} {'margin':>6}  {'valid: runs agree':>18}  {'test: runs agree acc (full)':>28}")
    for r in rows:
        v, t = r["valid"], r["test"]
        print(f"{','.join(map(str, r['checkpoints'])):<12} {r['margin']:>6.2f}  {v['mean_segments_run']:>7.2f} "
              f"{v['agreement']:>9.1%}  {t['mean_segments_run']:>7.2f} {t['agreement']:>7.1%} "
              f"{t['accuracy']:>6.1%} ({t['accuracy_full']:.1%})")
    shipped = {"checkpoints": list(DEFAULT_EARLY_EXIT.checkpoints), "margin": DEFAULT_EARLY_EXIT.margin,
               "valid": evaluate(DEFAULT_EARLY_EXIT, *data["valid"]),
               "test": evaluate(DEFAULT_EARLY_EXIT, *data["test"])}
    print(f"fitted: checkpoints {best['checkpoints']} margin {best['margin']}; "
          f"shipped DEFAULT_EARLY_EXIT: {shipped['checkpoints']} margin {shipped['margin']} "
          f"(valid {shipped['valid']['agreement']:.1%}, test {shipped['test']['agreement']:.1%}, "
          f"test accuracy {shipped['test']['correct']} vs {shipped['test']['correct_full']} tracks, "
          f"{shipped['test']['mean_segments_run']} sub-tracks per test track)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": net.card.name, "weights_sha256": net.card.weights_sha256,
                                         "max_valid_changes": args.max_valid_changes, "fitted": best,
                                         "shipped": shipped, "candidates": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
