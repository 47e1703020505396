#!/usr/bin/env python
"""The ONNX Runtime session alone: CPU time per sub-track of exported graphs, side by side, and
where one graph's time goes, operator by operator.

Each graph runs on the same log-mel batches (the first sub-tracks of real audio files, in batches
of the sizes `classify` runs: the early exit's first look and the rest), on one thread, with the
session options `classify` uses (`genretag.runtime.onnx.session`). The graphs take turns round
after round, so a machine whose load changes slows them alike; the figure per graph is the median
over the rounds. Then a session of the first graph of its own, untimed, is profiled by ONNX
Runtime, and its operators' shares are reported.

    python bench/session.py --model broad-musicnn                       # the current export
    python bench/session.py --model broad-musicnn --graph before:/path/to/other.onnx \\
        --json reports/throughput/session-packed.json

A graph of another checkout is the `.onnx` file its code exported into the user cache; run from
outside the repository with that checkout first on the path, `--print-graph` prints it:

    cd /tmp && PYTHONPATH=/tmp/before GENRETAG_BUNDLED_MODELS=/tmp/before/models \
        python /path/to/genretag/bench/session.py --model broad-musicnn --print-graph
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from common import DEFAULT_SOURCE, write_report  # bench/ is on sys.path when run as a script

AUDIO_EXT = {".mp3", ".flac", ".ogg", ".m4a", ".wav"}


def current_graph(model: str) -> tuple[Path, int]:
    """The current code's recorded export of `model` (made first if there is none), and the
    sub-track length it was made for, in samples."""
    from genretag.card import load_card
    from genretag.model import load_net
    from genretag.paths import onnx_cache_dir
    from genretag.runtime import ExportRecord
    from genretag.store.resolve import find_card

    card = load_card(find_card(model))
    if ExportRecord.for_card(card) is None:
        load_net(model, "cpu").predict(np.zeros((1, card.audio.segment_samples), np.float32))
    record = ExportRecord.for_card(card)
    if record is None:
        raise SystemExit(f"{model}: ONNX Runtime does not run this model here")
    return onnx_cache_dir() / record.graph, record.n_samples


def batches(source: Path, files: int, n_samples: int, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Log-mel batches of the given sizes, cut from the first sub-tracks of `files` audio files."""
    from genretag.audio.decode import load
    from genretag.runtime.frontend import SAMPLE_RATE, musicnn_logmel

    paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_EXT and p.is_file())[:files]
    if not paths:
        raise SystemExit(f"no audio files under {source}")
    waves = []
    for p in paths:
        y = load(p, SAMPLE_RATE)
        waves += [y[k:k + n_samples] for k in range(0, len(y) - n_samples + 1, 2 * n_samples)][:sizes[-1]]
    waves = np.stack(waves).astype(np.float32)
    out, i = [], 0
    while i + max(sizes) <= len(waves):
        for s in sizes:
            out.append(musicnn_logmel(waves[i:i + s]))
            i += s
    return out


def open_session(path: Path, profile_dir: str | None = None):
    """A session as `classify` opens one, on one thread; with ONNX Runtime's profiler on when
    `profile_dir` is given."""
    import onnxruntime as ort

    from genretag.runtime.onnx import session_options

    so = session_options(threads=1)
    if profile_dir is not None:
        so.enable_profiling, so.profile_file_prefix = True, os.path.join(profile_dir, "session")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_all(sess, data: list[np.ndarray]) -> float:
    """CPU seconds per sub-track for one pass over `data`."""
    name = sess.get_inputs()[0].name
    t = time.process_time()
    for x in data:
        sess.run(None, {name: x})
    return (time.process_time() - t) / sum(len(x) for x in data)


def operators(sess, n_sub: int) -> list[dict]:
    """The profiled session's operators: ms per sub-track and share, largest first."""
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    per = Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per[f'{e["args"].get("op_name")} {e["name"][:-len("_kernel_time")]}'] += e["dur"]
    total = sum(per.values())
    return [{"operator": k, "ms_per_subtrack": round(v / 1000 / n_sub, 3), "share": round(v / total, 3)}
            for k, v in per.most_common()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="broad-musicnn", help="model whose current export is the first graph")
    ap.add_argument("--graph", action="append", default=[], metavar="LABEL:PATH", help="another .onnx to compare")
    ap.add_argument("--print-graph", action="store_true", help="print the current export's path and stop")
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of audio files (recursive)")
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--sizes", default="3,7", help="batch sizes, comma-separated (default: 3,7 as the early exit)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    first, n_samples = current_graph(a.model)
    if a.print_graph:
        print(first)
        return 0
    graphs = {"current": first} | {g.partition(":")[0]: Path(g.partition(":")[2]) for g in a.graph}
    data = batches(a.source, a.files, n_samples, tuple(int(s) for s in a.sizes.split(",")))
    n_sub = sum(len(x) for x in data)
    sessions = {k: open_session(p) for k, p in graphs.items()}
    for s in sessions.values():
        run_all(s, data[:2])  # first runs allocate
    times = {k: [] for k in sessions}
    for _ in range(a.rounds):
        for k, s in sessions.items():
            times[k].append(run_all(s, data) * 1000)
    with tempfile.TemporaryDirectory() as tmp:  # the profiler slows a session: one of its own, untimed
        profiled = open_session(first, tmp)
        run_all(profiled, data[:2])
        run_all(profiled, data)
        ops = operators(profiled, n_sub + sum(len(x) for x in data[:2]))
    report = {"model": a.model, "graphs": {k: str(p) for k, p in graphs.items()}, "subtracks_per_round": n_sub,
              "batch_sizes": a.sizes, "rounds": a.rounds, "load_start": os.getloadavg(),
              "ms_per_subtrack": {k: {"median": round(statistics.median(v), 3), "all": [round(x, 3) for x in v]}
                                  for k, v in times.items()},
              "current_operators": ops}
    for k, v in report["ms_per_subtrack"].items():
        print(f"{k:<12} {v['median']:.3f} ms per sub-track (rounds: {', '.join(f'{x:.2f}' for x in v['all'])})")
    for o in ops[:12]:
        print(f"  {o['share'] * 100:5.1f} %  {o['ms_per_subtrack']:.3f} ms  {o['operator']}")
    if a.json:
        write_report(a.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
