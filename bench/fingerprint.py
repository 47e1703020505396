#!/usr/bin/env python
"""What the audio fingerprint costs: the whole payload hashed, against the ends only and against decoding.

    python bench/fingerprint.py [--minutes 4] [--repeat 3] [--workdir $TMPDIR/genretag-bench-fp] [--json FILE]

Makes one full-length track per format (wav, aiff, flac, mp3, ogg vorbis, m4a; CD-like 44.1 kHz
stereo noise-shaped tones, so the codecs cannot squeeze it to nothing) in --workdir, then times on each:

- `fingerprint` (genretag.audio.containers): every byte of the audio payload, sha256;
- `ends only`: the scheme genretag used before (the first and last MiB of the payload), re-created
  here for comparison;
- `file_fingerprint`: sha256 of every byte (what the journal records);
- `decode`: `prepare_file` with the bundled default model's audio settings, the decoding `classify`
  does for a file the result cache does not know.

Each is timed warm (the file in the page cache: the hashing cost alone) and cold (the file's pages
dropped with posix_fadvise first: a read from the disk). The best of --repeat runs is kept. A network
share is not measured: its cost is the payload's size over the share's read rate, given in the
report for 1 Gbit/s (110 MB/s) and 100 Mbit/s (11 MB/s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

FORMATS = (".wav", ".aiff", ".flac", ".mp3", ".ogg", ".m4a")
SHARE_RATES = {"1 Gbit/s": 110e6, "100 Mbit/s": 11e6}


def make_track(path: Path, minutes: float, sr: int = 44100) -> Path:
    """A stereo track of `minutes`: tones with noise that changes every second."""
    import audio_factory as af

    if path.exists():
        return path
    rng = np.random.default_rng(len(path.name))
    n = int(sr * minutes * 60)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * (220 + 40 * np.floor(t)) * t) + 0.05 * rng.standard_normal(n)
    x = np.stack([x, 0.9 * x], axis=1).astype(np.float32)
    tmp = path.with_name("part-" + path.name)
    if path.suffix == ".ogg":  # libsndfile's Vorbis encoder overflows its stack on one long write: a second at a time
        import soundfile as sf

        with sf.SoundFile(str(tmp), "w", sr, 2, format="OGG", subtype="VORBIS") as f:
            for i in range(0, n, sr):
                f.write(x[i:i + sr])
    else:
        af.write_audio(tmp, x, sr)
    af.add_tags(tmp, genre="Rock")
    os.replace(tmp, path)
    return path


def ends_only(path: Path) -> str:
    """The old scheme: the payload's first and last MiB plus its length (regions as genretag finds them)."""
    from genretag.audio import containers as c

    window = 1 << 20
    with c.open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        kind = c._container_of_file(f) or "raw"
        regions, mask = c._payload(f, kind, size)
        total = sum(e - s for s, e in regions)
        h = hashlib.blake2b(digest_size=20)
        spans = [(0, total)] if total <= 2 * window else [(0, window), (total - window, total)]
        for lo, hi in spans:
            for start, data in c._read_virtual(f, regions, lo, hi):
                buf = bytearray(data)
                if mask is not None:
                    mask(f, start, start + len(buf), buf)
                h.update(buf)
    return h.hexdigest()


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def best_time(fn, path: Path, repeat: int, cold: bool) -> float:
    times = []
    for _ in range(repeat):
        if cold:
            drop_cache(path)
        else:
            fn(path)  # warm the page cache
        t0 = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "genretag-bench-fp")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if REPO in args.workdir.resolve().parents:
        raise SystemExit("--workdir must be outside the repository")
    args.workdir.mkdir(parents=True, exist_ok=True)

    from genretag.audio.containers import file_fingerprint, fingerprint
    from genretag.card import load_card
    from genretag.pipeline.prepare import prepare_file
    from genretag.store.local import find_local

    card = load_card(find_local(None))
    stages = {"fingerprint": fingerprint, "ends only": ends_only, "file_fingerprint": file_fingerprint,
              "decode": lambda p: prepare_file(p, card.audio)}
    block = os.urandom(1 << 20)
    hashes = {}
    for name in ("sha256", "blake2b", "sha1", "md5"):  # the hash alone, on memory: which is fastest here
        best = float("inf")
        for _ in range(args.repeat):
            h, t0 = hashlib.new(name), time.perf_counter()
            for _ in range(256):
                h.update(block)
            best = min(best, time.perf_counter() - t0)
        hashes[name] = round(256 * len(block) / best / 1e6, 1)
    print(json.dumps({"hash MB/s": hashes}), flush=True)
    rows = []
    for ext in FORMATS:
        p = make_track(args.workdir / f"track-{args.minutes:g}min{ext}", args.minutes)
        size = p.stat().st_size
        payload = int(fingerprint(p).split(":")[2])
        row = {"format": ext[1:], "bytes": size, "payload_bytes": payload}
        for name, fn in stages.items():
            for cold in (False, True):
                s = best_time(fn, p, args.repeat, cold)
                row[f"{name} {'cold' if cold else 'warm'} s"] = round(s, 4)
        row["fingerprint warm MB/s"] = round(payload / row["fingerprint warm s"] / 1e6, 1)
        row["fingerprint cold MB/s"] = round(payload / row["fingerprint cold s"] / 1e6, 1)
        for label, rate in SHARE_RATES.items():
            row[f"read over {label} s (estimate)"] = round(size / rate, 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
              "load_average": os.getloadavg(), "minutes": args.minutes, "repeat": args.repeat,
              "hash_mb_per_s": hashes, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
