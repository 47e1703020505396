#!/usr/bin/env python3
"""Make the musicnn port fixture: a synthetic clip + the ORIGINAL model's outputs.

Runs in a throwaway TensorFlow venv, never in genretag's own environment::

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install "tensorflow-cpu==2.15.*" "librosa==0.8.1" \
        "numpy==1.23.5" "numba<0.59" "scipy<1.12" "scikit-learn<1.4" soundfile
    TF_ENABLE_ONEDNN_OPTS=0 /tmp/tfenv/bin/python scripts/make_musicnn_fixture.py \
        --wheel /tmp/mnn/musicnn-0.1.0-py3-none-any.whl --out tests/fixtures/musicnn

Why those pins: musicnn 0.1.0 (2019) ran with librosa 0.7/0.8, whose STFT pads
with ``pad_mode='reflect'`` (librosa >= 0.9 switched to zero padding), and with
numpy < 2, where ``10000 * float16_array`` is promoted to float32 (under numpy 2
it stays float16 and overflows).  librosa 0.8.1 is the newest release with the
old padding default; it needs numpy < 1.24 (``np.complex``).

The script imports the wheel's own ``musicnn.extractor`` / ``musicnn.models``
unmodified (they already use ``tf.compat.v1``) and writes:

* ``clip.wav``         6 s synthetic chord + drum pattern, 16 kHz mono PCM16.
* ``reference.npz``    everything the original pipeline computed (see README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

SR = 16000
SECONDS = 6.0


def synth_clip(seed: int = 7) -> np.ndarray:
    """A deterministic music-like signal: a chord progression, bass, kick, snare, hats."""
    rng = np.random.default_rng(seed)
    n = int(SR * SECONDS)
    t = np.arange(n) / SR
    y = np.zeros(n)
    bpm = 120.0
    beat = 60.0 / bpm
    # I - vi - IV - V in C major, one chord per bar (2 s), triads with a few harmonics
    chords = [(261.63, 329.63, 392.00), (220.00, 261.63, 329.63),
              (174.61, 220.00, 261.63), (196.00, 246.94, 293.66)]
    bar = 4 * beat
    for i, chord in enumerate(chords):
        s, e = int(i * bar * SR), min(n, int((i + 1) * bar * SR))
        if s >= n:
            break
        tt = t[s:e] - t[s]
        env = np.minimum(1.0, tt / 0.02) * np.exp(-tt * 0.8)
        for f in chord:
            for h, a in ((1, 1.0), (2, 0.5), (3, 0.25), (4, 0.12)):
                y[s:e] += 0.06 * a * env * np.sin(2 * np.pi * f * h * tt)
        bass = chord[0] / 4
        y[s:e] += 0.15 * env * np.sign(np.sin(2 * np.pi * bass * tt)) * 0.5
    # drums on a 16th-note grid
    step = beat / 4
    for k in range(int(SECONDS / step)):
        s = int(k * step * SR)
        if k % 8 == 0:  # kick on beats 1 and 3
            m = min(n - s, int(0.25 * SR))
            tt = np.arange(m) / SR
            freq = 50 + 100 * np.exp(-tt * 30)
            y[s:s + m] += 0.6 * np.exp(-tt * 12) * np.sin(2 * np.pi * np.cumsum(freq) / SR)
        if k % 8 == 4:  # snare on beats 2 and 4
            m = min(n - s, int(0.2 * SR))
            tt = np.arange(m) / SR
            y[s:s + m] += 0.3 * np.exp(-tt * 20) * (rng.standard_normal(m) + np.sin(2 * np.pi * 190 * tt))
        if k % 2 == 0:  # closed hats on 8ths
            m = min(n - s, int(0.05 * SR))
            tt = np.arange(m) / SR
            hat = np.diff(rng.standard_normal(m + 1))  # crude high-pass
            y[s:s + m] += 0.08 * np.exp(-tt * 80) * hat
    return (0.9 * y / np.max(np.abs(y))).astype(np.float32)


def _other_checkpoint(tf, config, models, pkg_root: Path, variant: str, batch: np.ndarray,
                      n_frames: int) -> dict[str, np.ndarray]:
    """Reference outputs of one more checkpoint on the same patch batch, keys prefixed by its name."""
    labels = config.MSD_LABELS if variant.startswith("MSD") else config.MTT_LABELS
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, n_frames, config.N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        y, *maps = models.define_model(x, is_training, variant, len(labels))
        prob = tf.nn.sigmoid(y)
    if variant.endswith("vgg"):
        names = [f"pool{i}" for i in range(1, 6)]
    else:
        names = ["timbral", "temporal", "cnn1", "cnn2", "cnn3"]
        maps = maps[:5] + [maps[7]]  # ..., mean_pool, max_pool, penultimate
    with tf.compat.v1.Session() as sess:
        tf.compat.v1.train.Saver().restore(sess, str(pkg_root / "musicnn" / variant) + "/")
        outs = sess.run([prob, y, *maps], feed_dict={x: batch, is_training: False})
    p, logits = outs[:2]
    ref = {f"{variant}_taggram": p.astype(np.float32), f"{variant}_logits": logits.astype(np.float32)}
    if not variant.endswith("vgg"):
        ref[f"{variant}_penultimate"] = outs[-1].astype(np.float32)
    for name, v in zip(names, outs[2:]):
        v = np.squeeze(v, axis=-1) if v.ndim == 4 and v.shape[-1] == 1 else v
        axes = (1, 2) if v.ndim == 4 else 1  # vgg maps: (B, T, F, C)
        ref[f"{variant}_{name}_mean"] = v.mean(axis=axes).astype(np.float32)
        ref[f"{variant}_{name}_max"] = v.max(axis=axes).astype(np.float32)
    return ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", required=True, help="musicnn-0.1.0-py3-none-any.whl (or its unzipped folder)")
    ap.add_argument("--out", default="tests/fixtures/musicnn")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wheel = Path(args.wheel)
    if wheel.is_dir():
        pkg_root = wheel
    else:
        pkg_root = Path(tempfile.mkdtemp(prefix="musicnn_wheel_"))
        zipfile.ZipFile(wheel).extractall(pkg_root)

    import soundfile as sf

    wav = out / "clip.wav"
    sf.write(str(wav), synth_clip(), SR, subtype="PCM_16")

    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    sys.path.insert(0, str(pkg_root))
    import librosa
    import tensorflow as tf
    from musicnn import configuration as config
    from musicnn import extractor as ex  # disables eager execution on import
    from musicnn import models

    ref: dict[str, np.ndarray] = {}
    # 1) the public API, unmodified: non-overlapping 3 s patches, as `musicnn` tags a file
    tg, labels, feats = ex.extractor(str(wav), model="MSD_musicnn", input_length=3,
                                     input_overlap=False, extract_features=True)
    assert list(labels) == list(config.MSD_LABELS)
    ref["taggram"] = tg.astype(np.float32)
    # (feats["penultimate"] is NOT used: extractor() re-appends the first patch's
    #  penultimate for every later patch, a bug in musicnn 0.1.0; step 5 recomputes it)
    # 2) overlapping patches (1 s overlap setting => hop of 61 frames)
    tg1, _ = ex.extractor(str(wav), model="MSD_musicnn", input_length=3, input_overlap=1,
                          extract_features=False)
    ref["taggram_overlap1"] = tg1.astype(np.float32)
    # 3) the original VGG baseline through the public API too
    tgv, _ = ex.extractor(str(wav), model="MSD_vgg", input_length=3, input_overlap=False,
                          extract_features=False)
    ref["taggram_vgg"] = tgv.astype(np.float32)

    # 4) the network input exactly as the original computes it (float32, after the
    #    float16 cast and the log compression), plus the patch batch fed to the graph
    n_frames = librosa.time_to_frames(3, sr=config.SR, n_fft=config.FFT_SIZE, hop_length=config.FFT_HOP) + 1
    batch, audio_rep = ex.batch_data(str(wav), n_frames, n_frames)
    ref["logmel"] = audio_rep.astype(np.float32)  # (frames, 96)
    ref["n_frames"] = np.array(n_frames)

    # 5) frame-level feature maps of the original graph, pooled over time (mean and max)
    #    for every patch; extractor() only keeps the first patch's maps correctly.
    tf.compat.v1.reset_default_graph()
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, n_frames, config.N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        y, timbral, temporal, cnn1, cnn2, cnn3, mean_pool, max_pool, penultimate = models.define_model(
            x, is_training, "MSD_musicnn", len(config.MSD_LABELS))
        prob = tf.nn.sigmoid(y)
    with tf.compat.v1.Session() as sess:
        tf.compat.v1.train.Saver().restore(sess, str(pkg_root / "musicnn" / "MSD_musicnn") + "/")
        outs = sess.run([prob, y, mean_pool, max_pool, penultimate, timbral, temporal, cnn1, cnn2, cnn3],
                        feed_dict={x: batch, is_training: False})
    p, logits, mp, xp, pen = outs[:5]
    maps = dict(zip(("timbral", "temporal", "cnn1", "cnn2", "cnn3"), outs[5:]))
    assert np.allclose(p, ref["taggram"], atol=1e-6), "batched run disagrees with extractor()"
    assert np.allclose(mp, feats["mean_pool"], atol=1e-5) and np.allclose(xp, feats["max_pool"], atol=1e-5)
    ref["logits"] = logits.astype(np.float32)
    ref["mean_pool"], ref["max_pool"], ref["penultimate"] = (a.astype(np.float32) for a in (mp, xp, pen))
    for k, v in maps.items():
        v = np.squeeze(v, axis=-1) if v.ndim == 4 else v  # cnn* are (B, T, 64, 1)
        ref[f"{k}_mean"] = v.mean(axis=1).astype(np.float32)
        ref[f"{k}_max"] = v.max(axis=1).astype(np.float32)

    # 6) the other three checkpoints of the wheel, same patches: tag probabilities, logits and
    #    the pooled embeddings a transfer head reads (musicnn: per-layer mean/max over time;
    #    vgg: every pooled map's mean/max over time and frequency)
    for variant in ("MTT_musicnn", "MSD_vgg", "MTT_vgg"):
        ref.update(_other_checkpoint(tf, config, models, pkg_root, variant, batch, n_frames))
    assert np.allclose(ref["MSD_vgg_taggram"], ref["taggram_vgg"], atol=1e-6), "batched vgg != extractor()"

    np.savez_compressed(out / "reference.npz", **ref)
    versions = f"tensorflow {tf.__version__}, librosa {librosa.__version__}, numpy {np.__version__}"
    (out / "versions.txt").write_text(versions + "\n")
    for k, v in ref.items():
        print(f"{k:18s} {v.shape} {v.dtype}")
    print(versions)


if __name__ == "__main__":
    main()
