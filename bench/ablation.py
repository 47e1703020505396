"""Augmentation ablation: train the same ResNet with each augmentation switched off (or on).

Every run is ``genretag train`` with one flag changed against the baseline, the same seed,
schedule and split, so the differences are the augmentation's (plus seed noise, which
on a test set of a few dozen clips is several points: read the table with that in mind).
Runs already finished in ``--out`` are reused, so an interrupted ablation resumes.

    python bench/ablation.py [--data ../shared/data/gtzan] [--epochs 10] [--out runs/ablation]
                             [--only NAME,...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

# name -> flags added to the baseline command. The baseline is the bundled ResNet's recipe
# (gain 6 dB, noise down to 30 dB SNR, SpecAugment, mixup 0.2, pitch +-2 semitones, random crops).
BASELINE = ["--pitch=-2,2"]
VARIANTS: dict[str, list[str]] = {
    "all (baseline)": [],
    "- pitch shift": ["--pitch="],
    "+ time stretch 0.9/1.1": ["--stretch=0.9,1.1"],
    "- gain": ["--gain-db", "0"],
    "- noise": ["--noise-snr-db", "0"],
    "- SpecAugment": ["--no-specaugment"],
    "- mixup": ["--mixup", "0"],
    "none": ["--pitch=", "--gain-db", "0", "--noise-snr-db", "0", "--no-specaugment", "--mixup", "0"],
    # the baseline again with another seed: how much of a difference is just the seed
    "all (baseline), seed 1": ["--seed", "1"],
}


def slug(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "-", name).strip("-") or "run"


def command(data: str, epochs: int, out: Path, flags: list[str]) -> list[str]:
    return ["genretag", "train", data, "--epochs", str(epochs), "--name", "ablation",
            "--out", str(out), "--jobs", "1", *BASELINE, *flags]


def run(data: str, epochs: int, out: Path, flags: list[str]) -> dict:
    card = out / "ablation.json"
    if not card.exists():
        cmd = command(data, epochs, out, flags)
        print("$", shlex.join(cmd), flush=True)
        resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
        subprocess.run(cmd + resume, check=True)
    return json.loads(card.read_text())["metrics"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/gtzan")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--only", default="", help="comma-separated variant slugs to run")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    only = {s for s in a.only.split(",") if s}
    rows = []
    for name, flags in VARIANTS.items():
        if only and slug(name) not in only:
            continue
        m = run(a.data, a.epochs, a.out / slug(name), flags)
        rows.append({"variant": name, "flags": shlex.join(BASELINE + flags),
                     **{f"{s}_{k}": m[s][k] for s in ("valid", "test")
                        for k in ("accuracy_soft", "accuracy_hard", "macro_f1")}})
    print("\n| variant | valid soft | test soft | test hard | test macro F1 |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['valid_accuracy_soft']:.1%} | {r['test_accuracy_soft']:.1%} "
              f"| {r['test_accuracy_hard']:.1%} | {r['test_macro_f1']:.3f} |")
    if a.json:
        a.json.write_text(json.dumps({"epochs": a.epochs, "baseline": BASELINE, "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
