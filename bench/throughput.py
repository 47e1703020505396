#!/usr/bin/env python
"""Throughput and memory benchmark for `genretag classify` (issue 5).

Builds a synthetic library from a folder of clips (GTZAN by default), then
measures, on the same files and in the same run, tracks/s and the peak RSS
of the whole process tree for:

  (a) decode only: `prepare_file` through the same worker pool and worker
      count that `classify` uses (genretag.pipeline.inference.prepare_stream), no model;
  (b) `genretag classify LIBRARY --format jsonl` as shipped, as a subprocess;
  (c) the naive pipeline a user would write: `librosa.load`, then per 3 s chunk
      `librosa.feature.melspectrogram`, its log, and one forward of the network per
      chunk (a musicnn written out as the original graph reads, every filter
      convolved), same weights, one process (on a subset: it is slow).

Each stage runs as its own subprocess; its RSS (and that of all its
descendants, e.g. the decoding workers) is sampled from /proc every 0.2 s.

    python bench/throughput.py [--source DIR] [--tracks N] [--json FILE]
    python bench/throughput.py --memory [--json FILE]     # (b) at 1,000 vs 10,000 tracks

bench/README.md describes the stages, options and JSON fields; docs/performance.md has the results.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

from common import DEFAULT_SOURCE, REPO, variant, write_report  # bench/ is on sys.path when run as a script

LIB_FORMAT_VERSION = 2  # bump when the library recipe changes (invalidates cached libraries)

# Share of 30 s clips per format. mp3 clips are hard links to the source files
# (22.05 kHz mono); the others are transcoded once, at 44.1 kHz stereo like a
# ripped CD, and then hard-linked many times.
CLIP_SHARES = {".mp3": 0.55, ".flac": 0.15, ".ogg": 0.15, ".m4a": 0.15}
LONG_FORMATS = (".mp3", ".flac", ".ogg", ".m4a")
TRANSCODE_SR = 44100
CLIPS_PER_FORMAT = 40  # distinct transcoded clips per format
LONG_PER_FORMAT = 3  # distinct full-length tracks per format


# --------------------------------------------------------------------------- library

def _source_clips(source: Path) -> list[Path]:
    clips = sorted(p for p in source.rglob("*.mp3") if p.is_file())
    if not clips:
        raise SystemExit(f"no .mp3 clips under {source}")
    return clips


def _decode(path: Path):
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


def _to_cd(x, sr):
    """Mono float32 at sr -> (n, 2) float32 at 44.1 kHz (a stereo rip)."""
    import numpy as np
    import soxr

    y = soxr.resample(x, sr, TRANSCODE_SR, quality="HQ").astype(np.float32)
    return np.stack([y, 0.9 * y], axis=1)


def _write(path: Path, x, sr: int) -> None:
    import soundfile as sf

    from genretag.audio.decode import write_m4a

    ext = path.suffix.lower()
    tmp = path.with_name(path.stem + ".part" + ext)
    if ext == ".m4a":
        write_m4a(tmp, x, sr)
    else:
        fmt = {".mp3": ("MP3", "MPEG_LAYER_III"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}[ext]
        channels = 1 if x.ndim == 1 else x.shape[1]
        # Written in blocks: libsndfile's Vorbis encoder segfaults on one multi-minute write.
        with sf.SoundFile(str(tmp), "w", sr, channels, subtype=fmt[1], format=fmt[0]) as f:
            for i in range(0, x.shape[0], 1 << 15):
                f.write(x[i:i + (1 << 15)])
    tmp.replace(path)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class Pools:
    """The distinct audio files a library is linked from: made once, cached in workdir."""

    def __init__(self, source: Path, workdir: Path, seed: int = 0) -> None:
        self.source = source
        self.dir = workdir / "pool"
        self.clips = _source_clips(source)
        self.rng = random.Random(seed)
        self._clip_pool: dict[str, list[Path]] = {}
        self._long_pool: dict[str, list[Path]] = {}
        self._five: dict[str, list[Path]] = {}

    def clip_pool(self, ext: str) -> list[Path]:
        if ext not in self._clip_pool:
            if ext == ".mp3":
                self._clip_pool[ext] = list(self.clips)
            else:
                picks = random.Random(f"clips{ext}").sample(self.clips, min(CLIPS_PER_FORMAT, len(self.clips)))
                out = []
                for src in picks:
                    dst = self.dir / "clips" / ext[1:] / (src.stem + ext)
                    if not dst.exists():
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        x, sr = _decode(src)
                        _write(dst, _to_cd(x, sr), TRANSCODE_SR)
                    out.append(dst)
                self._clip_pool[ext] = out
        return self._clip_pool[ext]

    def _joined(self, ext: str, name: str, minutes: float, seed: str) -> Path:
        import numpy as np

        dst = self.dir / "long" / ext[1:] / f"{name}{ext}"
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            rng = random.Random(seed)
            parts, have, sr = [], 0, 22050
            want = int(round(minutes * 60 * sr))
            while have < want:
                x, sr = _decode(rng.choice(self.clips))
                parts.append(x[: want - have].copy())
                have += parts[-1].shape[0]
            y = np.concatenate(parts)
            _write(dst, _to_cd(y, sr) if ext != ".mp3" else y, TRANSCODE_SR if ext != ".mp3" else sr)
        return dst

    def long_pool(self, ext: str) -> list[Path]:
        """Full-length tracks of 3-6 minutes, made by joining clips."""
        if ext not in self._long_pool:
            rng = random.Random(f"long{ext}")
            self._long_pool[ext] = [
                self._joined(ext, f"long{i}", rng.uniform(3.0, 6.0), f"long{ext}{i}")
                for i in range(LONG_PER_FORMAT)]
        return self._long_pool[ext]

    def five_minute_pool(self, ext: str) -> list[Path]:
        """Exactly 5-minute tracks, for the long-track vs 30 s clip cost check."""
        if ext not in self._five:
            self._five[ext] = [self._joined(ext, f"five{i}", 5.0, f"five{ext}{i}") for i in range(2)]
        return self._five[ext]


def _pick_ext(rng: random.Random) -> str:
    r, acc = rng.random(), 0.0
    for ext, share in CLIP_SHARES.items():
        acc += share
        if r < acc:
            return ext
    return ".mp3"


def build_library(pools: Pools, dest: Path, n: int, long_share: float, kind: str = "mixed",
                  seed: int = 1) -> Path:
    """Link n tracks into dest/<block>/<i>.<ext>; reuse dest when already complete."""
    stamp = dest / ".complete"
    key = json.dumps({"v": LIB_FORMAT_VERSION, "n": n, "long": long_share, "kind": kind, "seed": seed,
                      "source": str(pools.source)})
    if stamp.exists() and stamp.read_text() == key:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    rng = random.Random(seed)
    n_long = 0
    for i in range(n):
        if kind == "five":
            ext = LONG_FORMATS[i % len(LONG_FORMATS)]
            src = rng.choice(pools.five_minute_pool(ext))
        elif kind == "mixed" and rng.random() < long_share:
            ext = rng.choice(LONG_FORMATS)
            src = rng.choice(pools.long_pool(ext))
            n_long += 1
        elif kind.startswith("format:"):
            ext = kind.split(":", 1)[1]
            src = rng.choice(pools.clip_pool(ext))
        else:
            ext = _pick_ext(rng)
            src = rng.choice(pools.clip_pool(ext))
        _link(src, dest / f"{i // 1000:03d}" / f"{i:06d}{ext}")
    (dest / ".counts.json").write_text(json.dumps({"tracks": n, "full_length": n_long}))
    stamp.write_text(key)
    return dest


def library_files(lib: Path) -> list[str]:
    return sorted(str(p) for p in lib.rglob("*") if p.is_file() and not p.name.startswith("."))


# --------------------------------------------------------------------------- measuring

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(root: int) -> list[int]:
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _mem_kb(pid: int, pss: bool = True) -> tuple[int, int]:
    """(VmRSS, Pss) of one process in kB; (0, 0) when it is gone, Pss 0 unless asked for.

    Pss walks the process's page tables (smaps_rollup): sampled every 0.2 s on three
    processes it took ~6 % of (b)'s speed on 2 cores, so run_stage reads it once a second."""
    rss = pss_kb = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break
        if pss:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss_kb = int(line.split()[1])
                        break
    except OSError:
        pass
    return rss, pss_kb


class BusyLoad:
    """`n` busy processes (a plain CPU loop each) for the duration of a `with` block.

    They stand in for whatever else a desktop or server is doing: each wants a whole core
    and never sleeps, so on 2 cores with n=2 genretag gets about a third of the machine."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Self:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        if self.n:
            time.sleep(0.5)  # let them get going before the clock starts
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []


def machine_load() -> dict:
    la = os.getloadavg()
    try:
        out = subprocess.run(["pgrep", "-f", "genretag train"], capture_output=True, text=True).stdout.split()
    except FileNotFoundError:
        out = []
    return {"loadavg_1m": round(la[0], 2), "loadavg": [round(x, 2) for x in la], "training_running": bool(out)}


def run_stage(name: str, cmd: list[str], n_expected: int, env: dict | None = None,
              interval: float = 0.2, load: int = 0) -> dict:
    """Run cmd (which prints one line per track on stdout) alongside `load` busy processes;
    time it and sample tree RSS."""
    with BusyLoad(load):
        res = _run_stage(name, cmd, n_expected, env, interval)
    res["load"] = load
    return res


def _run_stage(name: str, cmd: list[str], n_expected: int, env: dict | None, interval: float) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    load_before = machine_load()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(REPO))
    stamps: list[float] = []
    lines: list[str] = []
    err_tail: list[str] = []

    def read_out() -> None:
        for line in proc.stdout:
            stamps.append(time.perf_counter())
            lines.append(line.decode("utf-8", "replace"))

    def read_err() -> None:  # drained so that a chatty decoder cannot block the child
        for line in proc.stderr:
            err_tail.append(line.decode("utf-8", "replace"))
            del err_tail[:-50]

    threads = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for t in threads:
        t.start()
    peak_rss = peak_pss = 0
    peak_procs = 0
    cpu = 0.0
    samples = 0
    while True:
        pids = _tree(proc.pid)
        mem = [_mem_kb(p, pss=samples % 5 == 0) for p in pids]
        samples += 1
        peak_rss = max(peak_rss, sum(m[0] for m in mem))
        peak_pss = max(peak_pss, sum(m[1] for m in mem))
        peak_procs = max(peak_procs, len([m for m in mem if m[0]]))
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            cpu = ru.ru_utime + ru.ru_stime
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        time.sleep(interval)
    wall = time.perf_counter() - t0
    for t in threads:
        t.join(timeout=10)
    n = len(lines)
    ok_stamps = []  # a failed track (the naive loop cannot open m4a: no ffmpeg) is not a track done
    for line, stamp in zip(lines, stamps):
        try:
            failed = json.loads(line).get("error") is not None
        except (json.JSONDecodeError, AttributeError):
            failed = False
        if not failed:
            ok_stamps.append(stamp)
    errors, n_ok = n - len(ok_stamps), len(ok_stamps)
    steady = ((n_ok - 1) / (ok_stamps[-1] - ok_stamps[0])
              if n_ok > 1 and ok_stamps[-1] > ok_stamps[0] else None)
    res = {
        "tracks": n, "errors": errors, "returncode": proc.returncode,
        "wall_s": round(wall, 2),
        "tracks_per_s": round(n_ok / wall, 3) if wall else None,  # tracks classified, failures excluded
        "startup_s": round(stamps[0] - t0, 2) if stamps else None,
        "steady_tracks_per_s": round(steady, 3) if steady else None,
        "cpu_s": round(cpu, 1),
        "peak_rss_mb": round(peak_rss / 1024, 1), "peak_pss_mb": round(peak_pss / 1024, 1),
        "peak_processes": peak_procs,
        "load_before": load_before, "load_after": machine_load(),
    }
    if n != n_expected or proc.returncode not in (0, 1):
        res["stderr_tail"] = "".join(err_tail[-10:])
        print(f"  !! {name}: {n} results for {n_expected} tracks, exit {proc.returncode}\n"
              f"{res['stderr_tail']}", file=sys.stderr)
    res["_lines"] = lines
    return res


# --------------------------------------------------------------------------- stages (children)

def stage_decode(files: list[str], card: str | None, jobs: int | None) -> None:
    """(a): prepare_file over all files through classify's own pool, no model."""
    from genretag.card import load_card
    from genretag.pipeline.inference import default_jobs, prepare_stream
    from genretag.store.resolve import find_card

    params = load_card(find_card(card)).audio
    # the worker count classify itself uses; streaming (overlap=True): with no model to share
    # the cores with, decoding never waits, which is the fastest the decoders go
    for p in prepare_stream(files, params, segments=None, jobs=jobs or default_jobs()):
        print(json.dumps({"path": p.path, "segments": 0 if p.waves is None else int(p.waves.shape[0]),
                          "error": p.error}))


def _literal_musicnn(net):
    """logits(log-mel (1, T, 96)) for a musicnn-transfer model, written the way the original
    graph reads (musicnn/models.py): every filter convolved, ReLU, batch norm, max over
    frequency. No genretag shortcut (live filters only, pooled BN): what a user porting the
    published network would run."""
    import torch
    import torch.nn.functional as F

    from genretag.nets.musicnn import _pad_same, pool_embeddings

    tr, head, pooling = net.trunk, net.head, net.pooling

    def midend(blk, x):
        return blk.bn(F.relu(blk.conv(F.pad(x, blk.pad))))

    def forward(logmel):
        h = tr.bn_input(logmel.unsqueeze(1))
        front = torch.cat([blk(F.pad(h, (0, 0, 3, 3))).amax(dim=3) for blk in tr.timbral]
                          + [blk(F.pad(h, (0, 0, *_pad_same(k)))).amax(dim=3)
                             for k, blk in zip(tr.temporal_kernels, tr.temporal)], dim=1)
        c1 = midend(tr.midend[0], front)
        c2 = midend(tr.midend[1], c1) + c1
        c3 = midend(tr.midend[2], c2) + c2
        n_timbral = sum(blk.conv.out_channels for blk in tr.timbral)
        maps = {"timbral": front[:, :n_timbral], "temporal": front[:, n_timbral:], "cnn1": c1,
                "cnn2": c2, "cnn3": c3, "midend": torch.cat([front, c1, c2, c3], dim=1)}
        _, emb = tr.forward_maps(maps, return_embeddings=True)
        return head(pool_embeddings(emb, pooling))

    return forward


def stage_naive(files: list[str], card: str | None) -> None:
    """(c): what a user would write with librosa + the same weights, one chunk at a time."""
    import librosa
    import numpy as np
    import torch

    from genretag.model import load_net

    model = load_net(card, "cpu")
    a, m = model.card.audio, model.card.mel
    sr, hop = a.sample_rate, a.segment_samples
    # ResNet: librosa's log-mel (power_to_db, as LogMel makes it) fed to the network's body.
    # musicnn-transfer: librosa's mel, log10(1 + 10000 x) as musicnn's extractor does, into the
    # network written out literally (_literal_musicnn). Anything else: the whole genretag
    # network on each waveform chunk.
    body = getattr(model.net, "body", None)
    kind = ("resnet" if body is not None and type(getattr(model.net, "frontend", None)).__name__ == "LogMel"
            else "musicnn" if model.card.architecture.get("name") == "musicnn-transfer" else "net")
    literal = _literal_musicnn(model.net) if kind == "musicnn" else None
    print(json.dumps({"naive_forward": {"resnet": "librosa mel + power_to_db -> net.body",
                                        "musicnn": "librosa mel + log10(1 + 10000 x) -> literal musicnn graph",
                                        "net": "net(waveform chunk)"}[kind]}), file=sys.stderr)
    for path in files:
        try:
            y, _ = librosa.load(path, sr=sr, mono=True)
            chunks = [y[i:i + hop] for i in range(0, max(1, len(y) - hop + 1), hop)]
            probs = []
            for ch in chunks:
                if len(ch) < hop:
                    ch = np.pad(ch, (0, hop - len(ch)))
                with torch.no_grad():
                    if kind == "net":
                        logits = model.net(torch.from_numpy(np.ascontiguousarray(ch, dtype=np.float32))[None])
                    else:
                        mel = librosa.feature.melspectrogram(
                            y=ch, sr=sr, n_fft=m.n_fft, hop_length=m.hop_length, n_mels=m.n_mels,
                            fmin=m.fmin, fmax=m.fmax, htk=m.htk, norm=m.norm, power=m.power)
                        if kind == "resnet":
                            db = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=m.top_db)
                            logits = body(torch.from_numpy(db.astype(np.float32))[None, None])
                        else:
                            x = np.log10(1.0 + m.scale * mel.T.astype(np.float32))
                            logits = literal(torch.from_numpy(x)[None])
                    probs.append(torch.softmax(logits / float(model.card.temperature or 1.0), -1)[0].numpy())
            dist = np.mean(probs, axis=0)
            print(json.dumps({"path": path, "genre": model.labels[int(np.argmax(dist))],
                              "segments": len(chunks), "error": None}))
        except Exception as e:  # a user's loop would crash; count it instead
            print(json.dumps({"path": path, "genre": None, "error": str(e)[:200]}))


# --------------------------------------------------------------------------- driver

def resolve_model(workdir: Path) -> tuple[str | None, str]:
    """(card path or None for the bundled default, description)."""
    models = REPO / "models"
    default = models / "DEFAULT"
    if default.exists() and (models / f"{default.read_text().strip()}.json").exists():
        return None, f"bundled default ({default.read_text().strip()})"
    run_cards = sorted((REPO / "runs").glob("**/gtzan-resnet.json"), key=lambda p: p.stat().st_mtime)
    if run_cards:
        return str(run_cards[-1]), f"{run_cards[-1].relative_to(REPO)} (newest training run)"
    card = workdir / "random-model" / "gtzan-resnet.json"
    if not card.exists():
        code = ("import sys, torch\n"
                "from genretag.training.train import make_card, TrainConfig\n"
                "from genretag.card import GTZAN_GENRES\n"
                "from genretag.nets import build_net\n"
                "from genretag.store.weights import save_model\n"
                "card = make_card(TrainConfig(), list(GTZAN_GENRES)); torch.manual_seed(0)\n"
                "save_model(build_net(card), card, sys.argv[1])\n")
        subprocess.run([sys.executable, "-c", code, str(card.parent)], check=True, cwd=str(REPO))
    return str(card), "random weights, same architecture as TrainConfig() (no trained model yet)"


def _self_cmd(stage: str, listfile: Path, card: str | None, jobs: int | None) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--list", str(listfile)]
    if card:
        cmd += ["--model", card]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    return cmd


def _classify_cmd(target: str, card: str | None, jobs: int | None, precision: str = "auto") -> list[str]:
    cmd = [sys.executable, "-m", "genretag", "classify", target, "--format", "jsonl", "--precision", precision]
    if card:
        cmd += ["--model", card]
    if jobs:
        cmd += ["--jobs", str(jobs)]
    return cmd


def _show(label: str, r: dict) -> None:
    steady = r.get("steady_tracks_per_s")
    failed = f"  ({r['errors']} failed, not counted in tracks/s)" if r.get("errors") else ""
    print(f"  {label:<34} {r['tracks']:>6} tracks {r['wall_s']:>8.1f} s  "
          f"{r['tracks_per_s']:>8.2f} tracks/s (steady {steady if steady else '-'})  "
          f"peak RSS {r['peak_rss_mb']:>7.0f} MB (PSS {r['peak_pss_mb']:.0f})  cpu {r['cpu_s']} s  "
          f"load {r['load_before']['loadavg_1m']}->{r['load_after']['loadavg_1m']}"
          f"{'  TRAINING RUNNING' if r['load_before']['training_running'] or r['load_after']['training_running'] else ''}"
          f"{failed}",
          flush=True)


def _public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def mean_segments(lines: list[str]) -> float | None:
    """Mean sub-tracks through the network per classified track (JSONL `segments`)."""
    segs = []
    for line in lines:
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        if d.get("error") is None and d.get("segments"):
            segs.append(d["segments"])
    return round(sum(segs) / len(segs), 3) if segs else None


def compare_variants(lib: Path, card: str | None, args) -> dict:
    """(a), then (b) under every --variant, `--repeat` rounds, all under the same --load.

    Interleaved, so that whatever else the machine is doing falls on every variant alike;
    each (b) is compared with the (a) of its own round."""
    files = library_files(lib)
    listf = args.workdir.resolve() / "variants.txt"
    listf.write_text("\n".join(files) + "\n")
    variants = [variant(v) for v in args.variant]
    rounds = []
    for i in range(args.repeat):
        a = run_stage("decode", _self_cmd("decode", listf, card, args.jobs), len(files), load=args.load)
        _show(f"[{i}] (a) decode only", a)
        row = {"decode_only": _public(a), "variants": {}}
        for label, env, opts in variants:
            cmd = _classify_cmd(str(lib), card, args.jobs, args.precision) + opts
            b = run_stage(label, cmd, len(files), env=env, load=args.load)
            _show(f"[{i}] (b) {label}", b)
            b = {**_public(b), "env": env, "options": opts, "mean_segments_run": mean_segments(b["_lines"]),
                 "time_vs_decode": round(a["tracks_per_s"] / b["tracks_per_s"], 2) if b["tracks_per_s"] else None}
            row["variants"][label] = b
        rounds.append(row)
    summary = {}
    for label, _, _ in variants:
        ratios = [r["variants"][label]["time_vs_decode"] for r in rounds]
        summary[label] = {"time_vs_decode": ratios,
                          "median_time_vs_decode": sorted(ratios)[len(ratios) // 2],
                          "tracks_per_s": [r["variants"][label]["tracks_per_s"] for r in rounds],
                          "mean_segments_run": rounds[0]["variants"][label]["mean_segments_run"]}
        print(f"  {label:<24} (b)/(a) time: {ratios}  median {summary[label]['median_time_vs_decode']}")
    return {"tracks": len(files), "rounds": rounds, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="folder of source clips (*.mp3)")
    ap.add_argument("--tracks", type=int, default=2000, help="library size for (a) and (b)")
    ap.add_argument("--naive-tracks", type=int, default=100, help="subset of the library for (c)")
    ap.add_argument("--long-share", type=float, default=0.05, help="share of 3-6 minute tracks")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "genretag-bench",
                    help="where the library is built (never inside the repository); reused across runs")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    ap.add_argument("--jobs", type=int, help="decoding workers for (a) and (b) (default: genretag's default)")
    ap.add_argument("--model", help="model card for all stages (default: the bundled default model)")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="genretag classify --precision for (b) (the naive loop stays fp32); a --variant's "
                         "own --precision overrides it")
    ap.add_argument("--memory", action="store_true", help="only (b): peak RSS at 1,000 vs 10,000 tracks")
    ap.add_argument("--memory-tracks", default="1000,10000")
    ap.add_argument("--no-extras", action="store_true", help="skip per-format and 5-minute-track runs")
    ap.add_argument("--load", type=int, default=0,
                    help="busy processes (a CPU loop each) running alongside every stage")
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL:SETTINGS",
                    help="compare (b) under other settings instead of the full run: SETTINGS are "
                         "space-separated NAME=VALUE environment variables and classify options, "
                         "e.g. 'passive:OMP_WAIT_POLICY=PASSIVE' or 'j1:--jobs 1' (repeatable; "
                         "'default:' is the CLI as shipped)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="with --variant: rounds of (a) then every variant, interleaved")
    ap.add_argument("--stage", choices=["decode", "naive"], help=argparse.SUPPRESS)
    ap.add_argument("--list", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.stage:
        files = args.list.read_text().splitlines()
        if args.stage == "decode":
            stage_decode(files, args.model, args.jobs)
        else:
            stage_naive(files, args.model)
        return 0

    workdir = args.workdir.resolve()
    if workdir == REPO or REPO in workdir.parents:
        raise SystemExit(f"--workdir {workdir} is inside the repository; pick a folder outside it")
    workdir.mkdir(parents=True, exist_ok=True)
    if args.model:
        card, model_desc = args.model, args.model
    else:
        card, model_desc = resolve_model(workdir)
    print(f"model: {model_desc}\nworkdir: {workdir}\nmachine: {os.cpu_count()} CPUs, load {machine_load()}",
          flush=True)
    pools = Pools(args.source.resolve(), workdir)
    report: dict = {"model": model_desc, "cpus": os.cpu_count(), "jobs": args.jobs or "default", "precision": args.precision,
                    "source": str(args.source), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "load": args.load, "machine_load_start": machine_load()}

    def listfile(name: str, files: list[str]) -> Path:
        p = workdir / f"{name}.txt"
        p.write_text("\n".join(files) + "\n")
        return p

    if args.memory:
        mem = {}
        for n in [int(x) for x in args.memory_tracks.split(",")]:
            t = time.perf_counter()
            lib = build_library(pools, workdir / f"library-{n}", n, args.long_share)
            print(f"library {lib} ({n} tracks) ready in {time.perf_counter() - t:.0f} s", flush=True)
            r = run_stage(f"genretag {n}", _classify_cmd(str(lib), card, args.jobs, args.precision), n,
                          load=args.load)
            _show(f"(b) genretag classify, {n} tracks", r)
            mem[str(n)] = _public(r)
        ns = sorted(mem, key=int)
        report["memory"] = mem
        report["rss_growth_mb"] = round(mem[ns[-1]]["peak_rss_mb"] - mem[ns[0]]["peak_rss_mb"], 1)
        print(f"peak RSS {ns[0]} -> {ns[-1]} tracks: {mem[ns[0]]['peak_rss_mb']:.0f} -> "
              f"{mem[ns[-1]]['peak_rss_mb']:.0f} MB ({report['rss_growth_mb']:+.0f} MB)")
    elif args.variant:
        lib = build_library(pools, workdir / f"library-{args.tracks}", args.tracks, args.long_share)
        report.update(compare_variants(lib, card, args))
    else:
        t = time.perf_counter()
        lib = build_library(pools, workdir / f"library-{args.tracks}", args.tracks, args.long_share)
        files = library_files(lib)
        n_long = json.loads((lib / ".counts.json").read_text())["full_length"]
        report["full_length_tracks"] = n_long
        print(f"library {lib}: {len(files)} tracks (~{n_long} full-length), ready in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        report["tracks"] = len(files)
        fmt_counts: dict[str, int] = {}
        for f in files:
            fmt_counts[Path(f).suffix] = fmt_counts.get(Path(f).suffix, 0) + 1
        report["formats"] = fmt_counts

        a = run_stage("decode", _self_cmd("decode", listfile("all", files), card, args.jobs), len(files),
                      load=args.load)
        _show("(a) decode only", a)
        b = run_stage("genretag", _classify_cmd(str(lib), card, args.jobs, args.precision), len(files),
                      load=args.load)
        _show("(b) genretag classify --format jsonl", b)
        sub = files[:: max(1, len(files) // args.naive_tracks)][: args.naive_tracks]
        c = run_stage("naive", _self_cmd("naive", listfile("naive", sub), card, None), len(sub),
                      load=args.load)
        _show(f"(c) naive librosa loop ({len(sub)} tracks)", c)
        # The same loop with numpy's BLAS single-threaded: as written, OpenBLAS's idle threads
        # spin after every librosa mel product and slow torch's threads down (~3.5x per chunk
        # measured); this variant shows how much of (b)'s lead is that pitfall alone.
        c1 = run_stage("naive BLAS 1", _self_cmd("naive", listfile("naive", sub), card, None), len(sub),
                       env={"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, load=args.load)
        _show("(c') the same, BLAS 1 thread", c1)

        # Do (b) and (c) agree on the genre? (same weights; different decoding / chunking)
        got = {json.loads(x)["path"]: json.loads(x).get("genre") for x in b["_lines"]}
        agree = [got.get(json.loads(x)["path"]) == json.loads(x).get("genre") for x in c["_lines"]]
        report.update({"decode_only": _public(a), "genretag": _public(b), "naive": _public(c),
                       "naive_blas1": _public(c1)})
        report["naive_agreement"] = round(sum(agree) / max(1, len(agree)), 3)
        report["mean_segments_run"] = mean_segments(b["_lines"])
        report["speedup_vs_naive"] = round(b["tracks_per_s"] / c["tracks_per_s"], 2) if c["tracks_per_s"] else None
        report["speedup_vs_naive_blas1"] = (round(b["tracks_per_s"] / c1["tracks_per_s"], 2)
                                            if c1["tracks_per_s"] else None)
        report["time_vs_decode"] = round(a["tracks_per_s"] / b["tracks_per_s"], 2) if b["tracks_per_s"] else None
        if a.get("steady_tracks_per_s") and b.get("steady_tracks_per_s") and c.get("steady_tracks_per_s"):
            report["steady_speedup_vs_naive"] = round(b["steady_tracks_per_s"] / c["steady_tracks_per_s"], 2)
            if c1.get("steady_tracks_per_s"):
                report["steady_speedup_vs_naive_blas1"] = round(
                    b["steady_tracks_per_s"] / c1["steady_tracks_per_s"], 2)
            report["steady_time_vs_decode"] = round(a["steady_tracks_per_s"] / b["steady_tracks_per_s"], 2)

        if not args.no_extras:
            extras: dict = {"decode_per_format": {}}
            for ext in CLIP_SHARES:
                sl = build_library(pools, workdir / f"sub-{ext[1:]}", 200, 0.0, kind=f"format:{ext}")
                r = run_stage(f"decode {ext}", _self_cmd("decode", listfile(f"fmt{ext}", library_files(sl)),
                                                         card, args.jobs), 200, load=args.load)
                _show(f"(a) decode only, 30 s {ext}", r)
                extras["decode_per_format"][ext] = _public(r)
            clips = build_library(pools, workdir / "sub-clips", 300, 0.0, kind="clips")
            five = build_library(pools, workdir / "sub-five", 60, 0.0, kind="five")
            for label, sl, n in (("30s_clips", clips, 300), ("5min_tracks", five, 60)):
                ra = run_stage(f"decode {label}", _self_cmd("decode", listfile(label, library_files(sl)),
                                                            card, args.jobs), n, load=args.load)
                _show(f"(a) decode only, {label}", ra)
                rb = run_stage(f"genretag {label}", _classify_cmd(str(sl), card, args.jobs, args.precision), n,
                               load=args.load)
                _show(f"(b) genretag, {label}", rb)
                extras[label] = {"decode_only": _public(ra), "genretag": _public(rb)}
            for k in ("decode_only", "genretag"):
                s, f = extras["30s_clips"][k], extras["5min_tracks"][k]
                extras[f"5min_vs_clip_cost_{k}"] = round(s["steady_tracks_per_s"] / f["steady_tracks_per_s"], 2)
            cs = extras["30s_clips"]
            extras["time_vs_decode_30s_clips"] = round(
                cs["decode_only"]["steady_tracks_per_s"] / cs["genretag"]["steady_tracks_per_s"], 2)
            report["extras"] = extras

        print(f"\n(b) genretag is {report['speedup_vs_naive']}x faster than (c) naive "
              f"(steady: {report.get('steady_speedup_vs_naive')}x); "
              f"{report['speedup_vs_naive_blas1']}x than (c') with BLAS on 1 thread "
              f"(steady: {report.get('steady_speedup_vs_naive_blas1')}x)")
        print(f"(b) takes {report['time_vs_decode']}x the time of (a) decode only "
              f"(steady: {report.get('steady_time_vs_decode')}x), "
              f"{report['mean_segments_run']} sub-tracks through the network per track, load {args.load}")
        if "extras" in report:
            e = report["extras"]
            print(f"30 s clips only: (b) takes {e['time_vs_decode_30s_clips']}x the time of (a) (steady rates)")
            print(f"a 5-minute track costs {e['5min_vs_clip_cost_genretag']}x a 30 s clip in (b), "
                  f"{e['5min_vs_clip_cost_decode_only']}x in (a)")
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    report["machine_load_end"] = machine_load()
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
