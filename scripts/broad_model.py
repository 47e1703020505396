"""Fit, calibrate and measure the broad genre model (`broad-musicnn`) from cached trunk outputs.

Reads the files ``scripts/broad_features.py`` writes (the MSD tagger's 50 tag logits and the GTZAN
head's 10 logits for every sub-track of every labelled clip) and:

1. fits the parameters of :class:`genretag.nets.musicnn.MusicnnBroad` (the tag-evidence ``scale``, one
   bias shared by the evidence genres, one bias per GTZAN genre pulled toward 0) by maximum likelihood
   on training clips only: GTZAN fault-filtered `train` tracks and excerpts, Emotify `train`; each
   source weighs the same in total;
2. calibrates the confidence (a logistic regression of "the top genre is right" on the top genre's
   log-odds and whether it is a tag-evidence genre) on a proxy of a real library, half of the weight
   each: Emotify `train` + `valid` (real recordings the GTZAN head never saw, plus their library
   versions where the features hold them; `world` clips are outside every genre of the model, so any genre for them is wrong) and
   GTZAN's `valid` tracks and excerpts (which the head was refitted on: the easy half);
3. picks `tag`'s default threshold: the lowest confidence at which the proxy's written genres are at
   least 90% right (weighted; measured and by the calibrated estimate). Calibration, threshold and
   every figure use the vote `classify` gives by default (its early exit: genretag.pipeline.early_exit);
4. writes the card ``models/broad-musicnn.json`` (weights: the default model's file, unchanged) and a
   JSON report of every figure, on the training/calibration clips and, once, on the test subsets
   (GTZAN fault-filtered `test`, GTZAN test excerpts, Emotify `test`), which choose nothing.

    python scripts/broad_features.py --out .cache/broad
    python scripts/broad_model.py --features .cache/broad --report reports/broad-musicnn.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from genretag.card import load_card, save_card
from genretag.card.metrics import CardMetrics, SubsetMetrics
from genretag.nets.musicnn import MSD_TAGS
from genretag.pipeline.early_exit import DEFAULT_EARLY_EXIT, EarlyExit

REPO = Path(__file__).resolve().parent.parent

#: The broad labels: GTZAN's ten under the names people tag with, then genres the MSD tags name.
FROM_GTZAN = {"Blues": "blues", "Classical": "classical", "Country": "country", "Disco": "disco",
              "Hip-Hop": "hiphop", "Jazz": "jazz", "Metal": "metal", "Pop": "pop", "Reggae": "reggae",
              "Rock": "rock"}
EVIDENCE = {"Electronic": ["electronic", "electronica", "electro", "House"],
            "Folk": ["folk"],
            "R&B": ["rnb", "soul"],
            "Punk": ["punk"],
            "Ambient": ["ambient"],
            "Easy Listening": ["easy listening"]}
LABELS = [*FROM_GTZAN, *EVIDENCE]
#: A dataset's label -> the broad label (None: outside every broad genre).
DATASET_LABELS = {**{v: k for k, v in FROM_GTZAN.items()}, "electronic": "Electronic",
                  "ambient_newage": "Ambient", "world": None}


@dataclass
class Clips:
    """Per-clip sub-track outputs of one features file."""

    tags: list[np.ndarray]
    gtzan: list[np.ndarray]
    label: np.ndarray  # broad label index, -1 outside every genre
    subset: np.ndarray
    source: str
    version: int

    def take(self, mask: np.ndarray) -> Clips:
        idx = np.flatnonzero(mask)
        return Clips([self.tags[i] for i in idx], [self.gtzan[i] for i in idx], self.label[idx],
                     self.subset[idx], self.source, self.version)

    def __len__(self) -> int:
        return len(self.label)


def load(features: Path, source: str, version: int) -> Clips:
    z = np.load(features / f"{source}-{version}.npz")
    bounds = np.cumsum([0, *z["counts"]])
    cut = lambda a: [a[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]  # noqa: E731
    labels = np.array([-1 if DATASET_LABELS[str(lab)] is None else LABELS.index(DATASET_LABELS[str(lab)])
                       for lab in z["label"]])
    return Clips(cut(z["tags"]), cut(z["gtzan"]), labels, z["subset"].astype(str), source, version)


def join(parts: list[Clips]) -> Clips:
    return Clips([t for p in parts for t in p.tags], [g for p in parts for g in p.gtzan],
                 np.concatenate([p.label for p in parts]), np.concatenate([p.subset for p in parts]),
                 "+".join(sorted({p.source for p in parts})), 0)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


class Broad:
    """The numpy twin of MusicnnBroad.broad_logits (the tests check the two agree)."""

    def __init__(self, gtzan_labels: list[str], gtzan_temperature: float = 1.0) -> None:
        self.gtzan_index = np.array([gtzan_labels.index(FROM_GTZAN[lab]) if lab in FROM_GTZAN else 0
                                     for lab in LABELS])
        self.is_evidence = np.array([lab in EVIDENCE for lab in LABELS])
        self.map = np.zeros((len(LABELS), len(MSD_TAGS)))
        for i, lab in enumerate(LABELS):
            for t in EVIDENCE.get(lab, []):
                self.map[i, MSD_TAGS.index(t)] = 1.0
        self.t = gtzan_temperature

    def parts(self, tags: np.ndarray, gtzan: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per sub-track: the GTZAN side's log-probabilities and the evidence side's tag log-odds."""
        ten = _log_softmax(gtzan / self.t)[:, self.gtzan_index]
        p = 1 / (1 + np.exp(-tags))
        score = np.clip((p[:, None, :] * self.map[None]).max(axis=2), 1e-6, 1 - 1e-6)
        return ten, np.log(score / (1 - score))

    def logits(self, ten: np.ndarray, odds: np.ndarray, scale: float, bias) -> np.ndarray:
        return np.where(self.is_evidence, scale * odds, ten) + np.broadcast_to(bias, (len(LABELS),))

    def track_probs(self, tags: np.ndarray, gtzan: np.ndarray, scale: float, bias) -> np.ndarray:
        """Soft vote (mean of the sub-tracks' softmax) over the broad labels, as `classify` does."""
        return np.exp(_log_softmax(self.logits(*self.parts(tags, gtzan), scale, bias))).mean(axis=0)

    def probs(self, clips: Clips, scale: float, bias) -> np.ndarray:
        return Packed(self, clips).probs(scale, bias)

    def classify_probs(self, clips: Clips, scale: float, bias, rule: EarlyExit | None = DEFAULT_EARLY_EXIT
                       ) -> np.ndarray:
        """The soft vote `genretag classify` gives: with its default early exit, over the sub-tracks the
        rule runs (in its order) rather than all of them."""
        out = []
        for tags, gtzan in zip(clips.tags, clips.gtzan):
            p = np.exp(_log_softmax(self.logits(*self.parts(tags, gtzan), scale, bias)))
            if rule is not None:
                p = p[rule.order(len(p))]
                p = p[:rule.run_count(p)]
            out.append(p.mean(axis=0))
        return np.stack(out)


class Packed:
    """Every sub-track of some clips in one array, for fast repeated evaluation while fitting."""

    def __init__(self, broad: Broad, clips: Clips) -> None:
        self.broad, self.label = broad, clips.label
        ten, odds = zip(*(broad.parts(t, g) for t, g in zip(clips.tags, clips.gtzan)))
        self.ten, self.odds = np.concatenate(ten), np.concatenate(odds)
        self.starts = np.cumsum([0, *[len(t) for t in clips.tags]])[:-1]
        self.counts = np.array([len(t) for t in clips.tags])

    def probs(self, scale: float, bias) -> np.ndarray:
        p = np.exp(_log_softmax(self.broad.logits(self.ten, self.odds, scale, bias)))
        return np.add.reduceat(p, self.starts, axis=0) / self.counts[:, None]


#: Evidence genres with labelled recordings (Emotify) get a bias of their own; the others share one.
OWN_BIAS = ("Electronic", "Ambient")
N_GTZAN = len(FROM_GTZAN)


def bias_vector(theta: np.ndarray) -> np.ndarray:
    """theta = [scale, shared evidence bias, one bias per GTZAN-side label, an offset per OWN_BIAS
    genre from the shared one] -> a bias per label."""
    evidence = np.full(len(EVIDENCE), theta[1])
    for k, lab in enumerate(OWN_BIAS):
        evidence[list(EVIDENCE).index(lab)] += theta[2 + N_GTZAN + k]
    return np.concatenate([theta[2:2 + N_GTZAN], evidence])


def fit_evidence(broad: Broad, groups: list[Clips], l2: float = 0.5,
                 group_weights: list[float] | None = None) -> tuple[float, np.ndarray]:
    """(scale, bias per label) maximising the weighted mean log-likelihood of the labelled clips
    (each group's mean times its weight); the GTZAN-side biases and the evidence genres' own offsets
    are pulled toward 0 (weight `l2`)."""
    packs = [Packed(broad, g.take(g.label >= 0)) for g in groups]
    w = np.asarray(group_weights or [1.0] * len(groups), dtype=float)
    w = w / w.sum()

    def loss(theta: np.ndarray) -> float:
        total = 0.0
        bias = bias_vector(theta)
        for pk, wk in zip(packs, w):
            p = pk.probs(float(theta[0]), bias)
            total -= wk * np.mean(np.log(p[np.arange(len(pk.label)), pk.label] + 1e-9))
        return total + 1e-3 * float(theta[0] - 1) ** 2 + l2 * float(np.mean(theta[2:] ** 2))

    theta0 = np.zeros(2 + N_GTZAN + len(OWN_BIAS))
    theta0[0] = 1.0
    res = minimize(loss, theta0, method="L-BFGS-B")
    return float(res.x[0]), bias_vector(res.x)


def nll(broad: Broad, clips: Clips, scale: float, bias: np.ndarray) -> float:
    """Mean negative log-likelihood of the labelled clips' labels."""
    clips = clips.take(clips.label >= 0)
    p = broad.probs(clips, scale, bias)
    return float(-np.mean(np.log(p[np.arange(len(clips)), clips.label] + 1e-9)))


def calibration_features(probs: np.ndarray) -> np.ndarray:
    """Per clip: the top genre's log-odds, and 1 where the top genre is a tag-evidence genre."""
    top = probs.argmax(axis=1)
    p = np.clip(probs.max(axis=1), 1e-6, 1 - 1e-6)
    return np.stack([np.log(p / (1 - p)), np.isin(top, [LABELS.index(e) for e in EVIDENCE]).astype(float)], 1)


def fit_calibration(probs: np.ndarray, right: np.ndarray, weight: np.ndarray, l2: float = 0.1) -> dict:
    """Weighted logistic regression of `right` on `calibration_features` (weights w, intercept c)."""
    x = calibration_features(probs)
    weight = weight / weight.sum()

    def loss(theta):
        z = x @ theta[:2] + theta[2]
        return float(np.sum(weight * (np.logaddexp(0, z) - right * z)) + l2 * np.sum(theta[:2] ** 2) / len(x))

    res = minimize(loss, np.array([1.0, 0.0, 0.0]), method="BFGS")
    return {"kind": "logistic", "features": ["top_logodds", "top_is_evidence"],
            "weights": [float(res.x[0]), float(res.x[1])], "intercept": float(res.x[2])}


def confidence(probs: np.ndarray, cal: dict) -> np.ndarray:
    z = calibration_features(probs) @ np.array(cal["weights"]) + cal["intercept"]
    return 1 / (1 + np.exp(-z))


def curve(conf: np.ndarray, right: np.ndarray, thresholds=np.round(np.arange(0, 1.0001, 0.05), 2)) -> list[dict]:
    out = []
    for t in thresholds:
        m = conf >= t
        out.append({"threshold": float(t), "coverage": float(m.mean()) if len(m) else 0.0,
                    "written": int(m.sum()), "precision": float(right[m].mean()) if m.any() else None,
                    "estimated_precision": float(conf[m].mean()) if m.any() else None})
    return out


def choose_threshold(conf: np.ndarray, right: np.ndarray, weight: np.ndarray, target: float = 0.9) -> float:
    """The lowest threshold (0.01 steps) whose writes are >= target right (weighted), measured and
    estimated."""
    for t in np.round(np.arange(0.3, 1.0, 0.01), 2):
        m = conf >= t
        if m.sum() >= 5 and np.average(right[m], weights=weight[m]) >= target \
                and np.average(conf[m], weights=weight[m]) >= target:
            return float(t)
    return 0.95


def summary(name: str, clips: Clips, probs: np.ndarray, conf: np.ndarray, threshold: float) -> dict:
    pred = probs.argmax(axis=1)
    right = pred == clips.label
    labelled = clips.label >= 0
    written = conf >= threshold
    per_label = {}
    for i, lab in enumerate(LABELS):
        m = clips.label == i
        if m.any():
            per_label[lab] = {"n": int(m.sum()), "top1": float(right[m].mean()),
                              "written": int((written & m).sum()), "written_right": int((written & m & right).sum())}
    outside = ~labelled
    if outside.any():
        per_label["(outside)"] = {"n": int(outside.sum()), "written": int((written & outside).sum()),
                                  "written_right": 0}
    for i, lab in enumerate(LABELS):
        w = written & (pred == i)
        if w.any() and lab in per_label:
            per_label[lab]["precision_of_writes_as_it"] = float(right[w].mean())
    return {"name": name, "clips": int(len(clips)),
            "top1_labelled": float(right[labelled].mean()) if labelled.any() else None,
            "written": int(written.sum()), "written_right": int((written & right).sum()),
            "precision": float(right[written].mean()) if written.any() else None,
            "coverage": float(written.mean()), "per_label": per_label, "curve": curve(conf, right)}


def subset_metrics(broad: Broad, clips: Clips, scale: float, bias: np.ndarray, cal: dict) -> SubsetMetrics:
    """A card's figures for labelled clips: soft (every sub-track), hard and per-sub-track accuracy,
    macro F1 over the labels present, and the ECE of the calibrated confidence."""
    clips = clips.take(clips.label >= 0)
    pack = Packed(broad, clips)
    soft = pack.probs(scale, bias)
    seg = np.exp(_log_softmax(broad.logits(pack.ten, pack.odds, scale, bias))).argmax(axis=1)
    seg_label = np.repeat(clips.label, pack.counts)
    hard = np.array([np.bincount(seg[a:a + n], minlength=len(LABELS)).argmax()
                     for a, n in zip(pack.starts, pack.counts)])
    pred, y = soft.argmax(axis=1), clips.label
    f1 = []
    for c in np.unique(y):
        tp, fp, fn = np.sum((pred == c) & (y == c)), np.sum((pred == c) & (y != c)), np.sum((pred != c) & (y == c))
        f1.append(2 * tp / max(2 * tp + fp + fn, 1))
    conf, right = confidence(soft, cal), (pred == y).astype(float)
    bins = np.minimum((conf * 10).astype(int), 9)
    ece = sum(abs(right[bins == b].mean() - conf[bins == b].mean()) * np.mean(bins == b)
              for b in range(10) if np.any(bins == b))
    return SubsetMetrics(n_tracks=len(y), accuracy_soft=float(np.mean(right)), accuracy_hard=float(np.mean(hard == y)),
                         accuracy_segment=float(np.mean(seg == seg_label)), macro_f1=float(np.mean(f1)),
                         ece=float(ece))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=Path, default=REPO / ".cache" / "broad")
    ap.add_argument("--report", type=Path, default=REPO / "reports" / "broad-musicnn.json")
    ap.add_argument("--card", type=Path, default=REPO / "models" / "broad-musicnn.json")
    ap.add_argument("--base", type=Path, default=REPO / "models" / "gtzan-musicnn.json")
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--l2", type=float, default=0.5, help="pull of the GTZAN-side biases toward 0")
    ap.add_argument("--emotify-weight", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                    help="weights of Emotify train in the fit to choose from on valid (GTZAN tracks and "
                         "excerpts: 1 each)")
    ap.add_argument("--real-share", type=float, default=0.5,
                    help="weight of the Emotify clips in the calibration (the rest: GTZAN valid)")
    args = ap.parse_args(argv)

    base = load_card(args.base)
    # the cached GTZAN logits are already divided by the card's temperature (as the network divides them)
    broad = Broad(list(base.labels), 1.0)
    gtzan, excerpts, emotify = (load(args.features, s, 0) for s in ("gtzan", "excerpts", "emotify"))
    emotify_lib = load(args.features, "emotify", 1) if (args.features / "emotify-1.npz").exists() else None

    train = [gtzan.take(gtzan.subset == "train"), excerpts.take(excerpts.subset == "train"),
             emotify.take(emotify.subset == "train")]
    valid = [gtzan.take(gtzan.subset == "valid"), excerpts.take(excerpts.subset == "valid"),
             emotify.take(emotify.subset == "valid")]
    grid = []
    for w in args.emotify_weight:
        scale, bias = fit_evidence(broad, train, args.l2, [1.0, 1.0, w])
        grid.append({"emotify_weight": w, "scale": scale, "bias": bias,
                     "valid_nll": float(np.mean([nll(broad, v, scale, bias) for v in valid]))})
        print(f"emotify weight {w}: valid NLL (mean of GTZAN tracks, excerpts, Emotify) {grid[-1]['valid_nll']:.4f}")
    best = min(grid, key=lambda row: row["valid_nll"])
    scale, bias = best["scale"], best["bias"]
    print(f"evidence: scale {scale:.3f}, bias {dict(zip(LABELS, bias.round(3)))}")

    # The proxy of a real library: Emotify (real recordings the GTZAN head never saw, in and outside
    # its genres; harder than most libraries: early music, indie rock) and GTZAN's valid tracks and
    # excerpts (familiar to the head, which was refitted on them: easier than a real library),
    # each half of the weight.
    real = [emotify.take(np.isin(emotify.subset, ["train", "valid"]))]
    if emotify_lib is not None:  # library versions, when scripts/broad_features.py --library made them
        real.append(emotify_lib.take(np.isin(emotify_lib.subset, ["train", "valid"])))
    real_clips = join(real)
    familiar = join([gtzan.take(gtzan.subset == "valid"), excerpts.take(excerpts.subset == "valid")])
    cal_clips = join([real_clips, familiar])
    cal_weight = np.concatenate([np.full(len(real_clips), args.real_share / len(real_clips)),
                                 np.full(len(familiar), (1 - args.real_share) / len(familiar))])
    cal_probs = broad.classify_probs(cal_clips, scale, bias)
    cal_right = (cal_probs.argmax(axis=1) == cal_clips.label).astype(float)
    cal = fit_calibration(cal_probs, cal_right, cal_weight)
    cal_conf = confidence(cal_probs, cal)
    threshold = choose_threshold(cal_conf, cal_right, cal_weight, args.target)
    print(f"calibration {cal}; threshold {threshold}")

    sets = {
        "calibration, real half: Emotify train+valid": real_clips,
        "calibration, familiar half: GTZAN valid tracks + valid excerpts (seen by the GTZAN head)": familiar,
        "TEST GTZAN fault-filtered test tracks": gtzan.take(gtzan.subset == "test"),
        "TEST GTZAN test excerpts": excerpts.take(excerpts.subset == "test"),
        "TEST Emotify test": emotify.take(emotify.subset == "test"),
    }
    results, baseline = [], []
    for name, clips in sets.items():
        probs = broad.classify_probs(clips, scale, bias)
        r = summary(name, clips, probs, confidence(probs, cal), threshold)
        results.append(r)
        print(f"{name}: top1 {r['top1_labelled']}, written {r['written']}/{r['clips']}, "
              f"precision {r['precision']}")
        # gtzan-musicnn as it is (softmax confidence, tag's 0.5), on the same clips, in broad names
        ten = np.zeros((len(clips), len(LABELS)))
        for i, g in enumerate(clips.gtzan):
            p = np.exp(_log_softmax(g)).mean(axis=0)  # the logits are already divided by the temperature
            ten[i, :len(FROM_GTZAN)] = p[broad.gtzan_index[:len(FROM_GTZAN)]]
        b = summary(name, clips, ten, ten.max(axis=1), 0.5)
        baseline.append(b)
        print(f"   gtzan-musicnn: top1 {b['top1_labelled']}, written {b['written']}/{b['clips']}, "
              f"precision {b['precision']}")

    arch = dict(base.architecture)
    arch.update({"name": "musicnn-broad", "gtzan_labels": list(base.labels),
                 "gtzan_temperature": float(base.temperature or 1.0), "from_gtzan": FROM_GTZAN,
                 "evidence": EVIDENCE, "scale": round(scale, 6),
                 "bias": {lab: round(float(b), 6) for lab, b in zip(LABELS, bias)}})
    card = load_card(args.base)
    card.name = "broad-musicnn"
    card.labels = list(LABELS)
    card.architecture = arch
    card.temperature = 1.0
    card.description = (
        "Broad genre model: the ten GTZAN genres of gtzan-musicnn (same weights) plus Electronic, Folk, R&B, "
        "Punk, Ambient and Easy Listening from the MSD tagger's own tags, on one scale (two parameters fitted on "
        "GTZAN train and Emotify train). Its confidence is calibrated on Emotify recordings: about that share "
        "of the genres written at a confidence are right.")
    card.license = "ISC (weights); calibration fitted on Emotify (Magnatune, CC BY-NC-SA): non-commercial use"
    card.extra = {**card.extra, "calibration": cal, "min_confidence": threshold,
                  "calibration_data": f"Emotify train+valid ({len(real_clips)} Magnatune recordings; CC BY-NC-SA, "
                                      "non-commercial) and GTZAN fault-filtered valid tracks and excerpts "
                                      f"({len(familiar)}), half of the weight each",
                  "evidence_fit_data": "GTZAN fault-filtered train tracks and excerpts, Emotify train"}
    card.metrics = CardMetrics.from_dict({
        "test": subset_metrics(broad, gtzan.take(gtzan.subset == "test"), scale, bias, cal).to_dict(),
        "test_excerpts": subset_metrics(broad, excerpts.take(excerpts.subset == "test"), scale, bias, cal).to_dict(),
        "emotify_test": subset_metrics(broad, emotify.take(emotify.subset == "test"), scale, bias, cal).to_dict()})
    card.training = {**(card.training or {}), "broad": {"script": "scripts/broad_model.py", "l2": args.l2,
                                                        "emotify_weight": best["emotify_weight"],
                                                        "threshold_target": args.target}}
    save_card(card, args.card)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps({"scale": scale, "bias": dict(zip(LABELS, bias.tolist())), "calibration": cal, "threshold": threshold,
                                       "selection": [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()} for row in grid],
                                       "sets": results, "gtzan_musicnn_at_0.5": baseline}, indent=1) + "\n")
    print(f"wrote {args.card} and {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
