#!/usr/bin/env python
"""Long fuzzing runs of the decoders and the tag reader/writer, with a JSON report.

The same seeds, mutations and contract as `tests/faults/test_fuzz.py` (see
`tests/faults/fuzzing.py`), driven by a seeded `random.Random` instead of
hypothesis, so a run of any length is reproducible from `--seed` and each
failure is reported with the exact operations that produce it:

    python bench/fuzz.py --iterations 2000 --json reports/fuzz.json
    python bench/fuzz.py --iterations 200 --formats song.flac,song.m4a

Files are written in a temporary folder (`--workdir`, default under $TMPDIR),
never in the repository. The report has, per seed, the iterations run, the
outcomes counted (decoded / a one-line decode error, written / refused), the
failures (contract violations: another exception, a hang, a changed file or
field) and the time taken, plus the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "faults")]

import fuzzing as fz  # noqa: E402  (tests/faults/fuzzing.py)


def outcome_kind(outcome: str) -> str:
    """'decode: AudioError: cannot decode: ...' -> 'decode: AudioError: cannot decode' (counted together)."""
    parts = outcome.split(": ")
    return ": ".join(parts[:3])


def fuzz_seed(name: str, iterations: int, rng: random.Random, folder: Path, max_failures: int) -> dict:
    seed = fz.make_seed(name, folder / "seed")
    work = folder / "work"
    work.mkdir(exist_ok=True)
    counts: Counter[str] = Counter()
    failures = []
    start = time.perf_counter()
    for i in range(iterations):
        ops = fz.random_ops(rng, len(seed))
        try:
            decoded, tagged = fz.run_case(seed, ops, work, name)
            counts["decode " + outcome_kind(decoded)] += 1
            counts["tag " + outcome_kind(tagged)] += 1
        except (AssertionError, Exception, fz.Hang) as e:  # a contract violation
            counts["FAILURE"] += 1
            if len(failures) < max_failures:
                failures.append({"iteration": i, "ops": [list(o[:2]) + [o[2].hex() if isinstance(o[2], bytes) else o[2]]
                                                         + list(o[3:]) if len(o) > 2 else list(o) for o in ops],
                                 "error": f"{type(e).__name__}: {e}"[:500],
                                 "where": traceback.format_exc(limit=-3)[-1500:]})
    return {"seed_bytes": len(seed), "iterations": iterations, "seconds": round(time.perf_counter() - start, 1),
            "failures": counts.pop("FAILURE", 0), "outcomes": dict(sorted(counts.items())),
            "failure_examples": failures}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=500, help="mutated files per seed (default 500)")
    ap.add_argument("--formats", default=",".join(fz.SEEDS), help=f"seeds to fuzz (default all: {','.join(fz.SEEDS)})")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--workdir", type=Path, default=None, help="temporary folder (default: a new one under $TMPDIR)")
    ap.add_argument("--json", type=Path, default=None, help="write the report here (default: stdout only)")
    ap.add_argument("--max-failures", type=int, default=20, help="failure examples kept per seed")
    args = ap.parse_args()
    names = [n for n in args.formats.split(",") if n]
    unknown = set(names) - set(fz.SEEDS)
    if unknown:
        ap.error(f"unknown seeds {sorted(unknown)}; choose from {', '.join(fz.SEEDS)}")
    base = Path(tempfile.mkdtemp(prefix="genretag-fuzz-", dir=args.workdir))
    load_before = os.getloadavg()
    report = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "random_seed": args.seed,
              "iterations_per_seed": args.iterations, "load_before": [round(x, 2) for x in load_before],
              "cpus": os.cpu_count(), "seeds": {}}
    started = time.perf_counter()
    for k, name in enumerate(names):
        folder = base / f"s{k}"
        (folder / "seed").mkdir(parents=True)
        r = fuzz_seed(name, args.iterations, random.Random(f"{args.seed}:{name}"), folder, args.max_failures)
        report["seeds"][name] = r
        print(f"{name}: {r['iterations']} files, {r['failures']} failures, {r['seconds']} s", file=sys.stderr)
    report["total_iterations"] = sum(r["iterations"] for r in report["seeds"].values())
    report["total_failures"] = sum(r["failures"] for r in report["seeds"].values())
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text if not args.json else f"report: {args.json}")
    sys.exit(1 if report["total_failures"] else 0)


if __name__ == "__main__":
    main()
