"""What the reader-side check of a tag write costs: demuxing every audio packet against decoding the PCM.

Builds one tagged file per format (stereo, 44.1 kHz; 48 kHz for opus) under $TMPDIR and times, best of
--repeat: PyAV demux of every audio packet (what `genretag.tags.verify.audio_packets` does, twice per
write), PyAV decode of the whole file (the alternative), mutagen's reading of the tags, and a whole
`write_genres_safely` (copy, write, every check, rename) with and without the reader-side check.
Run from the repository root:

    python3 bench/verify_cost.py --seconds 240 --json reports/verify-cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import audio_factory as af  # noqa: E402

from genretag.tags import safe_write, write_genres_safely  # noqa: E402
from genretag.tags.fields import read_tags  # noqa: E402
from genretag.tags.verify import audio_packets, reader_fields  # noqa: E402

FORMATS = {".mp3": 44100, ".flac": 44100, ".m4a": 44100, ".opus": 48000, ".wav": 44100}


def decode_all(path: str) -> int:
    import av

    with av.open(path, metadata_errors="replace") as c:
        return sum(f.samples for f in c.decode(c.streams.audio[0]))


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=240.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ext, sr in FORMATS.items():
            p = Path(tmp) / f"song{ext}"
            af.write_audio(p, af.make_tone(sr, args.seconds, channels=2), sr)
            af.add_tags(p)
            fmt = read_tags(p).format
            q = Path(tmp) / f"write{ext}"
            shutil.copy(p, q)
            genres = iter(["Rock", "Jazz"] * 2 * args.repeat)
            row = {
                "format": ext[1:], "seconds": args.seconds, "mb": round(os.path.getsize(p) / 1e6, 2),
                "demux_ms": round(1000 * best(lambda: audio_packets(str(p), fmt), args.repeat)),
                "decode_ms": round(1000 * best(lambda: decode_all(str(p)), args.repeat)),
                "tags_ms": round(1000 * best(lambda: reader_fields(str(p), fmt), args.repeat), 2),
                "write_ms": round(1000 * best(lambda: write_genres_safely(q, [next(genres)]), args.repeat)),
            }
            checks = safe_write.audio_packets, safe_write.reader_fields, safe_write._verify_as_read
            safe_write.audio_packets = safe_write.reader_fields = safe_write._verify_as_read = lambda *a: ""
            try:
                row["write_without_reader_check_ms"] = round(
                    1000 * best(lambda: write_genres_safely(q, [next(genres)]), args.repeat))
            finally:
                safe_write.audio_packets, safe_write.reader_fields, safe_write._verify_as_read = checks
            rows.append(row)
            print(json.dumps(row))
    load = os.getloadavg()[0]
    print(f"load average (1 min): {load:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load_1min": round(load, 2), "repeat": args.repeat},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
