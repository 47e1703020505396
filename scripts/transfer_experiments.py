#!/usr/bin/env python3
"""Head experiments on frozen tagger embeddings, chosen on valid only (valid tracks + valid excerpts).

Extracts (once; cached like `genretag transfer`) the pooled embeddings of each bundled tagger
(msd-musicnn, mtt-musicnn, msd-vgg, mtt-vgg) for the train and valid tracks and excerpts, then
trains heads on single trunks and on concatenations of several, blends the MSD zero-shot tag
mapping into a head's logits, and averages heads (ensembles). Test tracks and test excerpts are
never touched here: the chosen recipe is trained with `genretag transfer` and measured once with
`genretag evaluate`.

    nice -n 10 python scripts/transfer_experiments.py ../shared/data/gtzan \\
        --extra ../shared/data/gtzan-excerpts --json reports/experiments-valid.json

Every row reports valid accuracy on the tracks (soft vote), on the excerpts (one sub-track each)
and pooled (each excerpt counts as one track: the selection figure of `transfer --extra`).

`--augment-copies N` trains on N library versions of every training item beside the clean audio
(as `transfer --augment-copies`); `--valid-library 1,2` scores every row on those library versions
of the valid items as well (training/augment.py: mastering, EQ tilt, MP3 round trip), so a recipe's
robustness to how a real library's files differ from GTZAN's shows beside its clean figure.
`--short-crops K` adds K excerpt-like crops of every training track and version to training: 2-3 s
from a random start, zero-padded at the end to one sub-track, as an excerpt or a short file is cut;
`--excerpt-fill tile` fills an excerpt shorter than a sub-track by repeating its audio instead of zero
padding, in training and in valid alike.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genretag.card import load_card  # noqa: E402
from genretag.nets import musicnn as M  # noqa: E402
from genretag.pipeline.segments import cut_at  # noqa: E402
from genretag.training import evaluate as ev  # noqa: E402
from genretag.training import transfer as T  # noqa: E402
from genretag.training.common import softmax, track_probs  # noqa: E402

POOLINGS = {"musicnn": list(M.DEFAULT_POOLING), "vgg": list(M.VGG_EMBEDDING_DIMS)}


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def short_crops(d: T.Data, subset: str, card, n: int, seed: int) -> list[np.ndarray]:
    """``n`` excerpt-like sub-tracks per track of ``subset``: 2-3 s of audio from a random start,
    zero-padded at the end to one sub-track (the excerpts are 2-3 s and cut that way)."""
    rng = np.random.default_rng(seed)
    seg, sr = card.audio.segment_samples, card.audio.sample_rate
    idx = d.cache.index_of()
    out = []
    for t in d.parts[subset]:
        wave = d.cache.wave(idx[t.id])
        lengths = np.minimum(seg, (rng.uniform(2.0, 3.0, n) * sr).astype(int))
        starts = [int(rng.integers(0, max(1, len(wave) - k))) for k in lengths]
        out.append(np.concatenate([cut_at(wave[s:s + k], [0], seg) for s, k in zip(starts, lengths)]))
    return out


def tiled_segments(d: T.Data, subset: str, card) -> list[np.ndarray]:
    """Each item's sub-tracks as ``evaluate`` cuts them, except that an item shorter than one sub-track
    is filled by repeating its audio instead of being zero-padded."""
    seg = card.audio.segment_samples
    idx = d.cache.index_of()
    out = []
    for t in d.parts[subset]:
        wave = d.cache.wave(idx[t.id])
        if len(wave) >= seg:
            out.append(ev.track_segments(d.cache, idx[t.id], seg, card.audio.max_segments))
        else:
            out.append(np.tile(wave, -(-seg // len(wave)))[None, :seg].astype(np.float32))
    return out


def trunk_embeddings(data: T.Data, spec: str, crops: int, copies: int = 0, valid_library: tuple[int, ...] = (),
                     short: int = 0, fill: str = "pad") -> dict[str, dict]:
    """A trunk's cached embeddings; ``NAME:tags`` takes only its 50 tag logits as the head's input,
    ``NAME:tags+all`` the tag logits beside the usual pooled embeddings.

    ``copies``: the training rows also hold that many library versions of every training item
    (``transfer.Embedder.augmented``, as ``transfer --augment-copies``); each training subset's
    labels, one per item and version, are under ``y_<subset>``.
    ``valid_library``: library versions K of the valid items, under ``valid@K`` and
    ``valid_excerpts@K``, scored beside the clean valid items and never trained on.
    ``short``: that many :func:`short_crops` of every training track and version join the training
    rows, each numbered as its track (the same draws for every trunk).
    ``fill="tile"``: every excerpt's rows, training and valid, clean and library versions, come from
    :func:`tiled_segments` instead.
    """
    name, _, what = spec.partition(":")
    card = load_card(REPO / "models" / f"{name}.json")
    net = T.as_stored(M.load_musicnn(REPO / "models" / card.weights), half=True)
    embedder = T.Embedder(net, card, "cpu", log)

    def padded(d: T.Data, subset: str) -> dict:
        return embedder.cached(d, subset)

    def versions(subset: str) -> list[T.Data]:
        """The clean audio and library versions 0..copies-1, in Embedder.augmented's order."""
        return [data] + [T.library_data(data, [subset], k, log) for k in range(max(0, copies))]

    def numbered(embs: list[dict], n: int) -> dict:
        """Version j's rows numbered as Embedder.augmented numbers its items (j * n + item)."""
        return {key: np.concatenate([e[key] + j * n if key == "track" else e[key] for j, e in enumerate(embs)])
                for key in embs[0]}

    def tiled(d: T.Data, subset: str) -> dict:
        return T.extract_embeddings(net, tiled_segments(d, subset, card), "cpu")

    tile = fill == "tile"
    out = {}
    for subset in ("train", "train_excerpts"):
        if tile and subset == "train_excerpts":  # tiled instead of the (cached) padded excerpts, never both
            out[subset] = numbered([tiled(d, subset) for d in versions(subset)], len(data.parts[subset]))
            out[f"y_{subset}"] = np.tile(data.y(subset), 1 + max(0, copies))
        else:
            out[subset], out[f"y_{subset}"] = embedder.augmented(data, [subset], copies, dense=crops)
    if short:
        extra = numbered([T.extract_embeddings(net, short_crops(d, "train", card, short, seed=j), "cpu")
                          for j, d in enumerate(versions("train"))], len(data.parts["train"]))
        out["train"] = {key: np.concatenate([out["train"][key], extra[key]]) for key in out["train"]}
        log(f"{spec}: {len(extra['track'])} short crops in training ({short} per training track and version)")
    for subset in ("valid", "valid_excerpts"):
        cut = tiled if tile and subset == "valid_excerpts" else padded
        out[subset] = cut(data, subset)
        for k in valid_library:
            out[f"{subset}@{k}"] = cut(T.library_data(data, [subset], k, log), subset)
    pooling = POOLINGS["vgg" if isinstance(net, M.VGGNet) else "musicnn"]
    out["pooling"] = {"": pooling, "tags": [], "tags+all": pooling}[what]
    out["tags"] = what.startswith("tags")
    return out


def features(embs: dict[str, dict], trunks: tuple[str, ...], subset: str) -> np.ndarray:
    parts = []
    for t in trunks:
        e = embs[t]
        if e["pooling"]:
            parts.append(M.pool_embeddings(e[subset], e["pooling"]))
        if e["tags"]:
            parts.append(e[subset]["tag_logits"])
    return np.concatenate(parts, axis=1).astype(np.float32)


def scores(seg_logits: list[np.ndarray], y: np.ndarray, n_tracks: int) -> dict:
    """Valid accuracy: tracks (soft vote), excerpts (one row each), pooled."""
    pred = track_probs(seg_logits).argmax(1)
    ok = pred == y
    return {"valid_tracks": float(ok[:n_tracks].mean()), "valid_excerpts": float(ok[n_tracks:].mean()),
            "valid_pooled": float(ok.mean()), "n": [int(n_tracks), int(len(y) - n_tracks)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--extra", required=True)
    ap.add_argument("--trunks", default="msd-musicnn,mtt-musicnn,msd-vgg,mtt-vgg")
    ap.add_argument("--hidden", default="0,256")
    ap.add_argument("--weight-decay", default="0.1,1,10")
    ap.add_argument("--extra-repeat", default="1,5")
    ap.add_argument("--train-crops", type=int, default=T.TransferConfig.train_crops,
                    help="overlapping crops per training track (as transfer)")
    ap.add_argument("--trained-prior", default="",
                    help="zero-shot prior weights to train the head on top of (the prior inside the loss), e.g. '0.5,1,2'")
    ap.add_argument("--skip-grid", action="store_true", help="only the --trained-prior rows")
    ap.add_argument("--augment-copies", type=int, default=0,
                    help="library versions of every training item added to training (as transfer --augment-copies)")
    ap.add_argument("--valid-library", default="",
                    help="library versions K of the valid items to score every row on as well, e.g. '1,2' "
                         "(robustness to mastering, EQ and codec; never trained on)")
    ap.add_argument("--short-crops", type=int, default=0,
                    help="excerpt-like crops (2-3 s, zero-padded) of every training track and version added to training")
    ap.add_argument("--excerpt-fill", choices=("pad", "tile"), default="pad",
                    help="how an excerpt shorter than a sub-track is filled: zero padding (as classify) or "
                         "repeating its audio, in training and valid alike")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)

    cfg = T.TransferConfig(data_dir=args.data, extra=args.extra, device="cpu", train_crops=args.train_crops)
    data = T.load_data(cfg)
    trunks = args.trunks.split(",")
    libs = tuple(int(k) for k in args.valid_library.split(",") if k)
    embs = {t: trunk_embeddings(data, t, cfg.train_crops, args.augment_copies, libs, args.short_crops, args.excerpt_fill)
            for t in trunks}
    e0 = embs[trunks[0]]
    n_tr, n_va = len(e0["y_train"]), len(data.parts["valid"])  # n_tr: training items x (1 + library versions)
    y_tr_tracks = np.concatenate([e0["y_train"], e0["y_train_excerpts"]])
    va_track = np.concatenate([e0["valid"]["track"], e0["valid_excerpts"]["track"] + n_va])
    y_va = data.y_of(["valid", "valid_excerpts"])
    rows: list[dict] = []
    results = Path(args.json)
    best_logits: dict[tuple, list[np.ndarray]] = {}
    best_heads: dict[tuple, torch.nn.Module] = {}  # the head behind each best_logits entry

    def valid_rows(trunk_set):
        tr_track = np.concatenate([e0["train"]["track"], e0["train_excerpts"]["track"] + n_tr])
        xtr = np.concatenate([features(embs, trunk_set, "train"), features(embs, trunk_set, "train_excerpts")])
        is_ex = np.concatenate([np.zeros(len(e0["train"]["track"]), bool), np.ones(len(e0["train_excerpts"]["track"]), bool)])
        return xtr, tr_track, is_ex, valid_x(trunk_set)

    @functools.cache
    def valid_x(trunk_set, lib: int | None = None) -> np.ndarray:
        at = "" if lib is None else f"@{lib}"
        return np.concatenate([features(embs, trunk_set, "valid" + at), features(embs, trunk_set, "valid_excerpts" + at)])

    @functools.cache
    def valid_tags(trunk: str, lib: int | None = None) -> dict:
        at = "" if lib is None else f"@{lib}"
        e = embs[trunk]
        return {"tag_logits": np.concatenate([e["valid" + at]["tag_logits"], e["valid_excerpts" + at]["tag_logits"]])}

    def on_library(predict, trunk_set) -> dict:
        """``predict(features, lib)`` -> per-row logits, scored on each library version of valid."""
        out = {}
        for k in libs:
            x = valid_x(trunk_set, k)
            if len(x) != len(va_track):  # a library version keeps its item's length and sub-track count
                raise SystemExit(f"library version {k} of valid has {len(x)} sub-tracks, not {len(va_track)}")
            out[str(k)] = scores(T.split_rows(predict(x, k), va_track, len(y_va)), y_va, n_va)
        return {"library": out} if out else {}

    def lib_text(row: dict) -> str:
        return "".join(f" | lib{k} {v['valid_pooled']:.1%}" for k, v in row.get("library", {}).items())

    combos = [(t,) for t in trunks] + [c for k in (2, 4) for c in itertools.combinations(trunks, k)]
    for combo in [] if args.skip_grid else combos:
        xtr, tr_track, is_ex, xva = valid_rows(combo)
        best = None
        for rep in [int(r) for r in args.extra_repeat.split(",")]:
            idx = np.concatenate([np.flatnonzero(~is_ex), np.repeat(np.flatnonzero(is_ex), rep)])
            for hidden in [int(h) for h in args.hidden.split(",")]:
                for wd in [float(w) for w in args.weight_decay.split(",")]:
                    t0 = time.time()
                    head, _, nll, ep = T.train_head(xtr[idx], y_tr_tracks[tr_track[idx]],
                                                    spec=T.HeadSpec(len(data.labels), hidden, wd), cfg=cfg,
                                                    valid=T.ValidRows(xva, va_track, y_va))
                    with torch.no_grad():
                        lv = head(torch.from_numpy(xva)).numpy()
                    seg = T.split_rows(lv, va_track, len(y_va))
                    with torch.no_grad():
                        on_lib = on_library(lambda x, _k, h=head: h(torch.from_numpy(x)).numpy(), combo)
                    row = {"trunks": list(combo), "extra_repeat": rep, "hidden": hidden, "weight_decay": wd,
                           "epoch": ep, "valid_nll": nll, **scores(seg, y_va, n_va), **on_lib,
                           "seconds": round(time.time() - t0, 1)}
                    rows.append(row)
                    log(f"{'+'.join(combo):<45} rep {rep} h {hidden:<3} wd {wd:<4g} ep {ep:<2} "
                        f"tracks {row['valid_tracks']:.1%} excerpts {row['valid_excerpts']:.1%} "
                        f"pooled {row['valid_pooled']:.1%}{lib_text(row)}")
                    if best is None or (row["valid_pooled"], -nll) > (best[0]["valid_pooled"], -best[0]["valid_nll"]):
                        best = (row, seg, head)
        best_logits[combo] = best[1]
        best_heads[combo] = best[2]
        results.write_text(json.dumps({"rows": rows}, indent=1))

    # zero-shot blend: head logits + w * log(zero-shot score) of the MSD tags, per sub-track
    msd = next((t for t in trunks if t.partition(":")[0] == "msd-musicnn"), None)
    if msd:
        va_tags = valid_tags(msd)
        for mname in ("proxy", "strict"):
            # what `transfer --prior-weight` adds to the head's logits (training.transfer.choose_prior)
            zlog = T.prior_offset(va_tags, data.labels, mname, 1.0)
            for combo, seg in best_logits.items():
                head_lg = np.concatenate(seg)
                for w in (0.25, 0.5, 1.0, 2.0):
                    blend = T.split_rows(head_lg + w * zlog, va_track, len(y_va))

                    def blended(x, k, h=best_heads[combo], m=mname, w=w):
                        with torch.no_grad():
                            return h(torch.from_numpy(x)).numpy() + T.prior_offset(valid_tags(msd, k), data.labels, m, w)
                    row = {"trunks": list(combo), "blend": f"zeroshot-{mname}", "weight": w,
                           **scores(blend, y_va, n_va), **on_library(blended, combo)}
                    rows.append(row)
                    log(f"{'+'.join(combo):<45} + zero-shot {mname} x{w:<4g} tracks {row['valid_tracks']:.1%} "
                        f"excerpts {row['valid_excerpts']:.1%} pooled {row['valid_pooled']:.1%}{lib_text(row)}")
    # the prior inside training: the head learns a residual over w * zero-shot log scores
    trained_weights = [float(x) for x in args.trained_prior.split(",") if x]
    if trained_weights:
        e = embs[msd]
        xtr, tr_track, is_ex, xva = valid_rows((msd,))
        tr_tags = {"tag_logits": np.concatenate([e["train"]["tag_logits"], e["train_excerpts"]["tag_logits"]])}
    for w in trained_weights:
        for mname in ("strict", "proxy"):
            ztr, zva = (T.prior_offset(t, data.labels, mname, w) for t in (tr_tags, va_tags))
            for rep in [int(r) for r in args.extra_repeat.split(",")]:
                idx = np.concatenate([np.flatnonzero(~is_ex), np.repeat(np.flatnonzero(is_ex), rep)])
                for hidden in [int(h) for h in args.hidden.split(",")]:
                    for wd in [float(x) for x in args.weight_decay.split(",")]:
                        head, _, nll, ep = T.train_head(xtr[idx], y_tr_tracks[tr_track[idx]],
                                                        spec=T.HeadSpec(len(data.labels), hidden, wd), cfg=cfg,
                                                        valid=T.ValidRows(xva, va_track, y_va, zva),
                                                        offset=ztr[idx])
                        with torch.no_grad():
                            lv = head(torch.from_numpy(xva)).numpy() + zva
                            on_lib = on_library(lambda x, k, h=head, m=mname, w=w: h(torch.from_numpy(x)).numpy()
                                                + T.prior_offset(valid_tags(msd, k), data.labels, m, w), (msd,))
                        row = {"trunks": [msd], "trained_prior": mname, "weight": w, "extra_repeat": rep,
                               "hidden": hidden, "weight_decay": wd, "epoch": ep, "valid_nll": nll,
                               **scores(T.split_rows(lv, va_track, len(y_va)), y_va, n_va), **on_lib}
                        rows.append(row)
                        log(f"trained prior {mname:<6} x{w:<4g} rep {rep} h {hidden:<3} wd {wd:<4g} ep {ep:<2} "
                            f"tracks {row['valid_tracks']:.1%} excerpts {row['valid_excerpts']:.1%} "
                            f"pooled {row['valid_pooled']:.1%} nll {nll:.3f}{lib_text(row)}")
                        results.write_text(json.dumps({"rows": rows}, indent=1))
    # ensembles of the single-trunk heads: mean of probabilities
    singles = [c for c in best_logits if len(c) == 1]
    for k in (2, 3, 4):
        for combo in itertools.combinations(singles, k):
            probs = [np.mean([softmax(best_logits[c][i]) for c in combo], axis=0) for i in range(len(y_va))]
            row = {"ensemble": [c[0] for c in combo], **scores([np.log(p) for p in probs], y_va, n_va)}
            rows.append(row)
            log(f"ensemble {'+'.join(c[0] for c in combo):<36} tracks {row['valid_tracks']:.1%} "
                f"excerpts {row['valid_excerpts']:.1%} pooled {row['valid_pooled']:.1%}")
    results.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
