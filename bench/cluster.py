#!/usr/bin/env python
"""Overhead and scaling of classifying on a Dask cluster, against the local pipeline (issue 15).

The same library (N GTZAN clips, read in place) is classified three ways, in this process, with the
model already loaded:

  local      `genretag.pipeline.inference.classify(paths, jobs=default_jobs())`: what
             `genretag classify` runs (decoding worker processes, the network on every core);
  1 worker   `ClusterExecutor` on a `LocalCluster` of 1 single-thread worker process;
  2 workers  the same with 2 single-thread worker processes.

Each is timed twice: cold (the first run: the local decoding pool starts; the workers import torch and
load the model) and warm (the same again, as every later run on a long-lived pool or cluster). The
cluster's start-up (spawning the worker processes) is in neither. Every way must give the same genres.
`cpu_s_per_track` is the CPU time of this process and all its descendants (decoding processes,
worker processes, the scheduler) per track: what the cluster machinery costs, whatever else the
machine is running; tracks/s depends on that too.

    python bench/cluster.py [--source DIR] [--tracks N] [--repeat K] [--model NAME] [--chunk N] [--heap]
                            [--json FILE]

Prints tracks/s and the ratios (targets: 2 workers >= 0.8x local, 2 workers >= 1.6x 1 worker) and
writes them, with the load average before and after each run, to reports/cluster/ (or --json).
`--heap` also times (on the first 200 tracks) one warm worker with glibc's heap as Dask's
MALLOC_TRIM_THRESHOLD_ leaves it, against the setting genretag's model plugin makes (user and system
CPU seconds).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from common import DEFAULT_SOURCE, REPO, write_report  # bench/ is on sys.path when run as a script


def pick_clips(source: Path, n: int) -> list[str]:
    """n clips spread evenly over the sorted list (every genre represented)."""
    clips = sorted(str(p) for p in source.rglob("*.mp3") if p.is_file())
    if not clips:
        raise SystemExit(f"no .mp3 clips under {source}")
    if n >= len(clips):
        return clips
    step = len(clips) / n
    return [clips[int(i * step)] for i in range(n)]


def timed(results, n: int) -> tuple[list, dict]:
    """Drain `results`; wall time to the last result and between the first and the last one."""
    t0 = time.perf_counter()
    first = None
    out = []
    for r in results:
        if first is None:
            first = time.perf_counter()
        out.append(r)
    end = time.perf_counter()
    wall = end - t0
    steady = (n - 1) / (end - first) if first is not None and end > first and n > 1 else None
    return out, {"seconds": round(wall, 3), "tracks_per_s": round(n / wall, 2),
                 "steady_tracks_per_s": round(steady, 2) if steady else None}


def tree_cpu() -> float:
    """CPU seconds (user + system) of this process and all its descendants (decoding and worker processes)."""
    user, system = tree_cpu_split()
    return user + system


def tree_cpu_split() -> tuple[float, float]:
    import psutil

    user = system = 0.0
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            user, system = user + t.user, system + t.system
        except psutil.Error:
            pass
    return user, system


def dask_heap(dask_worker=None) -> bool:
    """Put a worker's glibc back where Dask's MALLOC_TRIM_THRESHOLD_ leaves it: a fixed 128 kB mmap
    threshold (the variable disables glibc's dynamic one) and a 64 kB trim threshold."""
    import ctypes

    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(-3, 128 * 1024) == 1 and mallopt(-1, 65536) == 1


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--tracks", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=1, help="classify the clips this many times over (one stream)")
    ap.add_argument("--model", default=None, help="model name or card (default: the bundled default)")
    ap.add_argument("--chunk", type=int, default=None, help="files per task (default: ClusterExecutor's)")
    ap.add_argument("--heap", action="store_true",
                    help="also time 1 worker with glibc as Dask leaves it, against genretag's heap setting")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from genretag.pipeline.threads import prefer_passive_openmp

    prefer_passive_openmp()  # as the CLI does, before torch starts
    import distributed

    from genretag.model import load_net
    from genretag.pipeline.cluster import DEFAULT_CHUNK, ClusterExecutor
    from genretag.pipeline.inference import classify, default_jobs

    paths = pick_clips(args.source, args.tracks) * max(1, args.repeat)
    n = len(paths)
    model = load_net(args.model, "cpu")
    chunk = args.chunk or DEFAULT_CHUNK
    report = {"tracks": n, "distinct_clips": len(set(paths)), "source": str(args.source), "model": model.card.name,
              "chunk": chunk, "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "distributed": distributed.__version__, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "runs": {}}
    print(f"{n} tracks ({len(set(paths))} clips) from {args.source}, model {model.card.name}, chunk {chunk}; "
          f"load {load()}")

    genres: dict[str, list] = {}

    def record(name: str, run, **extra) -> None:
        """Time `run()` (a stream of results) and keep its figures and genres under `name`."""
        before, cpu = load(), tree_cpu()
        results, fig = timed(run(), n)
        fig.update(cpu_s_per_track=round((tree_cpu() - cpu) / n, 4), load_before=before, load_after=load(), **extra)
        report["runs"][name] = fig
        genres[name] = [r.genre for r in results]
        print(f"{name:16s} {fig['tracks_per_s']:6.2f} tracks/s (steady {fig['steady_tracks_per_s']}), "
              f"{fig['cpu_s_per_track']:.3f} CPU s/track ({fig['seconds']} s; load {before} -> {fig['load_after']})")

    # cold: the first run (local: the decoding pool starts; cluster: workers import torch and load the model);
    # warm: the same again, as every later run on a long-lived pool or cluster
    for phase in ("cold", "warm"):
        record(f"local_{phase}", lambda: classify(paths, model, jobs=default_jobs()), jobs=default_jobs())
    for workers in (1, 2):
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None, silence_logs=40) as lc, \
                distributed.Client(lc, set_as_default=False) as client:
            client.wait_for_workers(workers)
            ex = ClusterExecutor(client, model, chunk=chunk, fingerprints=False)
            for phase in ("cold", "warm"):
                record(f"{workers}_worker{'s' if workers > 1 else ''}_{phase}", lambda: ex.classify(paths))

    if args.heap:  # what keep_freed_memory() in the worker is worth (docs/cluster.md)
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                      dashboard_address=None, silence_logs=40) as lc, \
                distributed.Client(lc, set_as_default=False) as client:
            ex = ClusterExecutor(client, model, chunk=chunk, fingerprints=False)
            list(ex.classify(paths[:2]))  # the model is loaded (and the heap set) before the timed runs
            sample = paths[:200]
            for name, setup in (("1_worker_genretag_heap", None), ("1_worker_dask_heap", dask_heap)):
                if setup is not None:
                    client.run(setup)
                user, system = tree_cpu_split()
                _, fig = timed(ex.classify(sample), len(sample))
                u2, s2 = tree_cpu_split()
                fig.update(tracks=len(sample), user_s=round(u2 - user, 2), system_s=round(s2 - system, 2),
                           load_after=load())
                report["runs"][name] = fig
                print(f"{name:24s} {fig['tracks_per_s']:6.2f} tracks/s, user {fig['user_s']} s, "
                      f"system {fig['system_s']} s")

    runs = report["runs"]
    rate = {k: v["tracks_per_s"] for k, v in runs.items()}
    report["ratios"] = {f"{k}_{phase}": round(rate[f"{a}_{phase}"] / rate[f"{b}_{phase}"], 3)
                        for phase in ("cold", "warm")
                        for k, a, b in (("2_workers_vs_local", "2_workers", "local"),
                                        ("2_workers_vs_1_worker", "2_workers", "1_worker"))}
    report["same_genres_as_local"] = {k: sum(a == b for a, b in zip(v, genres["local_cold"]))
                                      for k, v in genres.items() if k != "local_cold"}
    r = report["ratios"]
    for phase in ("cold", "warm"):
        print(f"{phase}: 2 workers / local {r[f'2_workers_vs_local_{phase}']:.2f}x (target >= 0.8), "
              f"2 workers / 1 worker {r[f'2_workers_vs_1_worker_{phase}']:.2f}x (target >= 1.6)")
    print(f"same genres as local: {report['same_genres_as_local']} of {n}")
    out = args.json or REPO / "reports" / "cluster" / f"{model.card.name}-{n}.json"
    write_report(out, report)


if __name__ == "__main__":
    main()
