#!/usr/bin/env python
"""What one `genretag classify FILE` costs from start to exit: wall and CPU time, peak RSS, and
whether torch was imported, for each setting, the runs interleaved.

    python bench/startup.py [--file AUDIO] [--repeat N] [--variant LABEL:[ENV=VALUE ...] [ARGS ...]] [--json FILE]

The default file is the first GTZAN clip; the default variants are the default settings and
`--precision fp32`. A variant's words of the form NAME=VALUE set the environment, the others are
extra `classify` arguments (as in bench/throughput.py). One run of each setting is made first and
not counted, so that the model's ONNX export is in the cache, as it is after a first use.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import DEFAULT_SOURCE, REPO, variant, write_report  # bench/ is on sys.path when run as a script


def run_once(file: str, env: dict, args: list[str]) -> dict:
    """One classify run as a child process: its wall time, CPU time, peak RSS and torch import."""
    full_env = {**os.environ, **env}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "genretag", "classify", file, "--format",
                             "jsonl", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=full_env, cwd=REPO)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this run's own usage (its reaped workers' CPU included)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    if r.returncode != 0:
        tail = [ln for ln in r.stderr.splitlines() if not ln.startswith("import time:")][-3:]
        raise SystemExit(f"classify failed ({r.returncode}): {tail}")
    torch = any(ln.startswith("import time:") and ln.rsplit("|", 1)[-1].strip() == "torch"
                for ln in r.stderr.splitlines())
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024,
            "torch_imported": torch}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", type=Path, help="audio file to classify (default: the first GTZAN clip)")
    ap.add_argument("--repeat", type=int, default=5, help="counted runs of each setting (default 5)")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL:SPEC")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    file = args.file or next(iter(sorted(DEFAULT_SOURCE.rglob("*.mp3"))), None)
    if file is None:
        raise SystemExit(f"no --file given and no .mp3 under {DEFAULT_SOURCE}")
    variants = [variant(v) for v in (args.variant or ["default:", "fp32:--precision fp32"])]
    for _, env, extra in variants:  # the first use exports the model: not counted
        run_once(str(file), env, extra)
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
    load = os.getloadavg()[0]
    for _ in range(args.repeat):
        for label, env, extra in variants:
            runs[label].append(run_once(str(file), env, extra))
    print(f"{file}, {args.repeat} runs each, load average {load:.2f} -> {os.getloadavg()[0]:.2f}")
    report = {"file": str(file), "repeat": args.repeat, "load": [round(load, 2), round(os.getloadavg()[0], 2)],
              "variants": {}}
    for label, rows in runs.items():
        summary = {key: round(statistics.median(r[key] for r in rows), 3) for key in ("wall_s", "cpu_s")}
        summary["peak_rss_mb"] = round(max(r["peak_rss_mb"] for r in rows), 1)
        summary["torch_imported"] = all(r["torch_imported"] for r in rows)
        report["variants"][label] = summary
        print(f"  {label:<20} wall {summary['wall_s']:6.2f} s  cpu {summary['cpu_s']:6.2f} s  "
              f"peak RSS {summary['peak_rss_mb']:7.1f} MB  torch imported: {summary['torch_imported']}")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
