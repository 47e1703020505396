#!/usr/bin/env python
"""Where a track's CPU time goes in `genretag classify`, stage by stage, for one model.

Runs every stage of the pipeline on the same files in this one process, on one thread (torch
and ONNX Runtime), and times each with the CPU clock of the process, so other work on the
machine slows the stages without inflating their figures:

  container read    `audio.info` (header, an mp3's frame scan) and opening the container
  decode            seeking and decoding the sub-tracks' stretches at the file's own rate
  resample          downmix to mono and resampling to the model's rate (soxr)
  transfer          pickling a file's sub-tracks in a worker and unpickling them in the main
                    process (what the process pool adds, the pipe's copy aside)
  mel               the log-mel of the sub-tracks that run (the network's own `features`)
  trunk, heads      PyTorch fp32 (the reference): trunk (front-end to tag logits and pooled
                    embeddings), then the genre heads; with ONNX Runtime (the default, auto)
                    both run in one session, reported as one figure
  vote              probabilities of a file's sub-tracks into its answer
  overhead          the rest of an in-process `classify` of the same files: batching, the early
                    exit's bookkeeping, results (its CPU time minus the stages above)

Network stages are timed on all sub-tracks in batches of the pipeline's size, and counted per
track at the mean number of sub-tracks the early exit runs (from the same `classify`).

    python bench/profile.py --tracks 60 --json reports/throughput/profile-default.json
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path

from common import DEFAULT_SOURCE, write_report  # bench/ is on sys.path when run as a script

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI (before torch is imported)
os.environ.setdefault("GENRETAG_THREADS", "1")  # one thread: stage figures are CPU time

AUDIO_EXT = {".mp3", ".flac", ".ogg", ".m4a", ".wav", ".opus", ".aiff"}


class Clock:
    """Accumulated process CPU time per stage."""

    def __init__(self) -> None:
        self.s: dict[str, float] = {}

    def __call__(self, stage: str, fn, *a, **k):
        t = time.process_time()
        out = fn(*a, **k)
        self.s[stage] = self.s.get(stage, 0.0) + time.process_time() - t
        return out


def pick_files(source: Path, n: int) -> list[str]:
    files = sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in AUDIO_EXT and p.is_file())
    if not files:
        raise SystemExit(f"no audio files under {source}")
    step = max(1, len(files) // n)
    return files[::step][:n]


def decode_stages(files: list[str], params, clock: Clock, reads: dict[str, list[list[int]]] | None = None) -> list:
    """The worker's side, split into stages; returns the Prepared items (as prepare_file makes them).

    `reads`: per file, the groups of sub-tracks (indices into its plan) decoded in one read each, as
    `classify` decoded them (the first look's, then the rest only for an undecided track); default:
    all of them in one read."""
    import soundfile as sf

    from genretag.audio import decode as audio
    from genretag.pipeline.prepare import Prepared
    from genretag.pipeline.segments import plan_segments

    out = []
    for p in files:
        ai = clock("container read", audio.info, p)
        offsets = plan_segments(ai.duration, params.segment_seconds, params.max_segments)

        def open_close():
            if ai.backend == "soundfile":
                with audio._quiet_stderr(), sf.SoundFile(os.fsencode(p)):
                    pass
            else:
                with audio._av_open(Path(p)):
                    pass

        t = time.process_time()
        open_close()
        open_cost = time.process_time() - t
        clock.s["container read"] += open_cost
        groups = (reads or {}).get(p) or [list(range(len(offsets)))]
        chunks = []
        for k, rows in enumerate(groups):
            t = time.process_time()
            chunks += (audio._sf_read if ai.backend == "soundfile" else audio._pyav_read)(
                Path(p), [offsets[i] for i in rows], params.segment_seconds, ai)
            # the first read opens the container again: that part is counted once, above
            clock.s["decode"] = clock.s.get("decode", 0.0) + max(0.0, time.process_time() - t - (open_cost if k == 0 else 0))
            if k:
                clock.s["container read"] += open_cost
        n_out = params.segment_samples
        waves = []
        for c in chunks:
            y = clock("resample", lambda c=c: audio._resample(audio._to_mono(c), ai.sample_rate, params.sample_rate))
            w = y[:n_out]
            if w.shape[0] < n_out:
                import numpy as np

                w = np.pad(w, (0, n_out - w.shape[0]))
            waves.append(w)
        import numpy as np

        prep = Prepared(p, np.stack(waves).astype(np.float32), offsets, ai.duration)
        blob = clock("transfer", pickle.dumps, prep, pickle.HIGHEST_PROTOCOL)
        out.append(clock("transfer", pickle.loads, blob))
    return out


def decoded_reads(files: list[str], params, results) -> dict[str, list[list[int]]]:
    """Per file, the reads `classify` made: the first look's sub-tracks alone, and the others in a
    second read only for a track that ran more (`prepare_file(early_exit=...)`, `prepare_rest`)."""
    from genretag.pipeline.early_exit import DEFAULT_EARLY_EXIT
    from genretag.pipeline.prepare import prepare_file

    reads = {}
    for p, r in zip(files, results):
        first = prepare_file(p, params, early_exit=DEFAULT_EARLY_EXIT)
        if first.rows is not None:
            reads[p] = [list(first.rows)] + ([list(first.missing)] if r.segments > len(first.rows) else [])
    return reads


def network_stages(model, prepared: list, batch: int, clock: Clock) -> int:
    """Time mel, trunk and heads (or the ONNX Runtime session) on every sub-track; returns their number."""
    import numpy as np
    import torch

    from genretag.nets.musicnn import MusicnnNet
    from genretag.runtime import OnnxNet

    waves = np.concatenate([p.waves for p in prepared])
    runner = model._runner
    if isinstance(runner, OnnxNet):  # the numpy log-mel, then the session: no torch
        for i in range(0, len(waves), batch):
            mel = clock("mel", runner.features, waves[i:i + batch])
            clock("trunk + heads", runner.session.run, None, {runner.input_name: mel})
        return len(waves)
    net = model.net
    with torch.inference_mode():
        for i in range(0, len(waves), batch):
            x = torch.from_numpy(waves[i:i + batch])
            mel = clock("mel", net.features, x)
            if hasattr(net, "trunk") and hasattr(net, "logits_from"):
                out = clock("trunk", MusicnnNet.forward, net.trunk, mel, return_embeddings=True)
                clock("heads", net.logits_from, *out)
            else:
                clock("trunk", net, x)
    return len(waves)


def profile(files: list[str], precision: str, batch: int | None) -> dict:
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from genretag.model import load_model
    from genretag.pipeline import inference

    torch.set_num_threads(1)
    threadpool_limits(1)  # numpy's BLAS too (the numpy log-mel's mel product), as classify runs it
    model = load_model(None, device="cpu", precision=precision)
    runtime = model.runtime  # builds the runner (and the export, the first time) outside the clock
    batch = batch or inference.default_batch_segments(model)
    params = model.card.audio
    prepare_file = inference.prepare_file
    prepare_file(files[0], params)  # warm the decoders
    model.predict(np.zeros((batch, params.segment_samples), dtype=np.float32))

    # The whole pipeline in this process: the sub-tracks the early exit runs and decodes, the overhead.
    t = time.process_time()
    results = list(inference.classify(files, model, jobs=1, batch_segments=batch))
    whole = time.process_time() - t
    ran = float(np.mean([r.segments for r in results]))

    clock = Clock()
    prepared = decode_stages(files, params, clock, decoded_reads(files, params, results))
    n_sub = network_stages(model, prepared, batch, clock)
    per_sub = {k: clock.s[k] / n_sub for k in ("mel", "trunk", "heads", "trunk + heads") if k in clock.s}
    for p, r in zip(prepared, results):
        probs = np.full((r.segments, len(model.labels)), 1.0 / len(model.labels), dtype=np.float32)
        clock("vote", inference.result_from_probs, p.path, model.labels, probs, "soft")

    n = len(files)
    per_track = {k: clock.s[k] / n for k in ("container read", "decode", "resample", "transfer")}
    per_track.update({k: v * ran for k, v in per_sub.items()})
    per_track["vote"] = clock.s["vote"] / n
    accounted = sum(v for k, v in per_track.items() if k != "transfer")  # classify(jobs=1) pickles nothing
    per_track["overhead"] = max(0.0, whole / n - accounted)
    return {"precision": precision, "runtime": runtime, "tracks": n, "batch": batch,
            "sub_tracks_decoded_per_track": round(n_sub / n, 2), "sub_tracks_run_per_track": round(ran, 2),
            "ms_per_track": {k: round(1000 * v, 2) for k, v in per_track.items()},
            "ms_per_sub_track": {k: round(1000 * v, 3) for k, v in per_sub.items()},
            "classify_in_process_ms_per_track": round(1000 * whole / n, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of audio files (recursive)")
    ap.add_argument("--tracks", type=int, default=60, help="files, evenly picked from the sorted list")
    ap.add_argument("--precision", action="append", help="precisions to profile (default: fp32 and auto)")
    ap.add_argument("--batch", type=int, help="sub-tracks per network batch (default: the pipeline's)")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    files = pick_files(args.source, args.tracks)
    report = {"source": str(args.source), "load_start": os.getloadavg(), "rows": []}
    for precision in args.precision or ["fp32", "auto"]:
        row = profile(files, precision, args.batch)
        report["rows"].append(row)
        total = sum(row["ms_per_track"].values())
        print(f"{precision} ({row['runtime']}), {row['tracks']} tracks, {row['sub_tracks_run_per_track']} of "
              f"{row['sub_tracks_decoded_per_track']} sub-tracks run per track; CPU ms per track:")
        for k, v in row["ms_per_track"].items():
            print(f"  {k:<16} {v:8.2f}  {100 * v / total:5.1f} %")
        print(f"  {'total':<16} {total:8.2f}", flush=True)
    report["load_end"] = os.getloadavg()
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
