"""Cache the musicnn MSD trunk's outputs on every labelled clip the project has, for the broad model.

For each clip (GTZAN tracks, GTZAN excerpts, Emotify recordings), and optionally for K "library
versions" of it (genretag.training.augment), the sub-tracks `classify` would cut are run through the
bundled `gtzan-musicnn` network once, and per sub-track it stores:

- ``tags``: the MSD tagger's 50 tag logits (the trunk's own output layer),
- ``gtzan``: the GTZAN head's 10 logits (prior added, divided by the card's temperature),

in ``OUT/<source>-<version>.npz`` with the clip's path, label, subset and sub-track count.
``scripts/broad_model.py`` fits and measures the broad model from these files.

    python scripts/broad_features.py --out .cache/broad [--library 1]
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from genretag.model import load_model
from genretag.nets.musicnn import MusicnnNet
from genretag.pipeline.prepare import prepare_file, prepare_waveform
from genretag.training import augment
from genretag.training.dataset import fault_filtered_lists

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def clips(data: Path) -> dict[str, list[tuple[str, str, str]]]:
    """{source: [(path, label, subset)]} for every labelled clip under `data`."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    ff = {name: subset for subset, names in fault_filtered_lists().items() for name in names}
    rows = list(csv.DictReader(open(data / "gtzan" / "manifest.csv")))
    out["gtzan"] = [(str(data / "gtzan" / r["path"]), r["genre"],
                     ff.get(str(Path(r["path"]).with_suffix("")), "excluded")) for r in rows]
    rows = list(csv.DictReader(open(data / "gtzan-excerpts" / "manifest.csv")))
    out["excerpts"] = [(str(data / "gtzan-excerpts" / r["path"]), r["genre"], r["ff_subset"]) for r in rows]
    rows = list(csv.DictReader(open(data / "emotify" / "manifest.csv")))
    out["emotify"] = [(str(data / "emotify" / r["path"]), r["label"], r["subset"]) for r in rows]
    return out


@torch.inference_mode()
def trunk_outputs(model, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    net = model.net
    x = net.features(torch.as_tensor(waves, dtype=torch.float32))
    tag_logits, emb = MusicnnNet.forward(net.trunk, x, return_embeddings=True)
    gtzan = net.logits_from(tag_logits, emb) / float(model.card.temperature or 1.0)
    return tag_logits.numpy(), gtzan.numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(".cache/broad"))
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--library", type=int, default=0, help="library versions per clip (0: clean only)")
    ap.add_argument("--sources", default="gtzan,excerpts,emotify")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(2)
    model = load_model("gtzan-musicnn")
    params = model.card.audio
    args.out.mkdir(parents=True, exist_ok=True)
    all_clips = clips(args.data)
    for source in args.sources.split(","):
        items = all_clips[source]
        for version in range(args.library + 1):
            dest = args.out / f"{source}-{version}.npz"
            if dest.exists():
                continue
            tags, gtzan, counts, keep = [], [], [], []
            for i, (path, label, subset) in enumerate(items):
                if version == 0:
                    p = prepare_file(path, params)
                else:
                    import librosa

                    y, _ = librosa.load(path, sr=params.sample_rate, mono=True)
                    y, _ = augment.library_version(y, params.sample_rate, Path(path).name, version - 1)
                    p = prepare_waveform(path, y, params)
                if p.waves is None:
                    logging.warning("%s: %s", path, p.error)
                    continue
                t, g = trunk_outputs(model, p.waves)
                tags.append(t)
                gtzan.append(g)
                counts.append(len(t))
                keep.append((path, label, subset))
                if i % 50 == 0:
                    logging.info("%s v%d: %d/%d", source, version, i, len(items))
            np.savez_compressed(dest, tags=np.concatenate(tags), gtzan=np.concatenate(gtzan),
                                counts=np.array(counts), path=np.array([k[0] for k in keep]),
                                label=np.array([k[1] for k in keep]), subset=np.array([k[2] for k in keep]))
            logging.info("wrote %s (%d clips)", dest, len(keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
