"""Build the held-out twins of the bundled musicnn models, the fit models of ``bench/early_exit.py``.

The bundled `gtzan-musicnn` head was refitted on GTZAN train + valid, so valid cannot choose
anything for it (or for `broad-musicnn`, which carries its weights). Fitting a rule on valid needs
the same configuration trained on train only:

1. ``gtzan-musicnn-heldout``: the configuration `models/gtzan-musicnn.json` selected
   (`training.selected`), trained by ``genretag transfer`` without ``--refit`` (about 4 minutes
   on a CPU). ``--print`` shows the command instead of running it.
2. ``broad-musicnn-heldout``: `models/broad-musicnn.json` with that head's weights, and its
   `architecture.gtzan_temperature` set to the held-out card's own `temperature` (each head with
   the temperature calibrated on its own valid, as the bundled card takes gtzan-musicnn's).

    python scripts/heldout_models.py --out runs/heldout
    python bench/early_exit.py --fit-model runs/heldout/broad-musicnn-heldout.json \\
        --fit-model runs/heldout/gtzan-musicnn-heldout.json --model models/broad-musicnn.json

Both cards and the safetensors file land in ``--out``; an existing held-out gtzan card there is
reused (``--retrain`` trains it again).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = next((d / "shared" / "data" for d in (REPO.parent, REPO.parent.parent)
             if (d / "shared" / "data" / "gtzan").is_dir()), REPO.parent / "shared" / "data")

GTZAN_NAME = "gtzan-musicnn-heldout"
BROAD_NAME = "broad-musicnn-heldout"

#: `models/gtzan-musicnn.json`'s `training.selected`, as options of ``genretag transfer`` (no --refit).
SELECTED = ["--mode", "head", "--prior-weight", "0.25", "--pooling", "all", "--hidden", "256",
            "--weight-decay", "10", "--extra-repeat", "5", "--augment-copies", "1", "--heads", "3"]


def transfer_command(data: Path, out: Path) -> list[str]:
    """The ``genretag transfer`` run that makes ``gtzan-musicnn-heldout`` in `out`."""
    return [sys.executable, "-m", "genretag", "transfer", str(data / "gtzan"),
            "--extra", str(data / "gtzan-excerpts"), *SELECTED, "--device", "cpu",
            "--out", str(out), "--name", GTZAN_NAME]


def broad_heldout_card(broad: dict, heldout: dict) -> dict:
    """`broad` (the bundled broad-musicnn card) on the held-out head: `heldout`'s card, whose weights
    file (and its checksum) the broad card names."""
    card = json.loads(json.dumps(broad))
    card["name"] = BROAD_NAME
    card["weights"] = heldout["weights"]
    card["weights_sha256"] = heldout["weights_sha256"]
    card["architecture"]["gtzan_temperature"] = heldout["temperature"]
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/heldout"), help="folder of the held-out models")
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding gtzan/ and gtzan-excerpts/")
    ap.add_argument("--print", dest="dry", action="store_true", help="show the transfer command, run nothing")
    ap.add_argument("--retrain", action="store_true", help="train gtzan-musicnn-heldout even if --out has it")
    args = ap.parse_args(argv)

    cmd = transfer_command(args.data.resolve(), args.out.resolve())
    gtzan_card = args.out / f"{GTZAN_NAME}.json"
    if args.dry:
        print(shlex.join(cmd))
        return 0
    if args.retrain or not gtzan_card.exists():
        print(shlex.join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO, check=True)
    heldout = json.loads(gtzan_card.read_text())
    broad = json.loads((REPO / "models" / "broad-musicnn.json").read_text())
    card = broad_heldout_card(broad, heldout)
    out = args.out / f"{BROAD_NAME}.json"
    out.write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {out} (gtzan_temperature {card['architecture']['gtzan_temperature']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
