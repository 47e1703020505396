#!/usr/bin/env python3
"""Convert a musicnn TF-1 checkpoint (PyPI musicnn 0.1.0 wheel) to safetensors + model card.

Needs TensorFlow only to read the checkpoint, so run it in a throwaway venv
(genretag itself never imports TensorFlow)::

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install "tensorflow-cpu==2.15.*" safetensors
    /tmp/tfenv/bin/python scripts/convert_musicnn.py \
        --wheel /tmp/mnn/musicnn-0.1.0-py3-none-any.whl --variant MSD_musicnn --out-dir models

Writes ``<out-dir>/<name>.safetensors`` (float32, tensor names = the state_dict of
``genretag.nets.musicnn.MusicnnNet`` / ``VGGNet``, variant in the metadata) and
``<out-dir>/<name>.json`` (a genretag ModelCard). Adam slots and step counters in
the checkpoint are dropped; every other variable must be mapped exactly once.

Layout rules (TF NHWC with H = time, W = mel band -> torch NCHW, same H/W):
conv2d kernel [kh, kw, in, out] -> [out, in, kh, kw]; mid-end convs that span all
channels (kw = in width, in = 1) -> Conv1d [out, width, kh]; dense [in, out] ->
[out, in]; batch norm gamma/beta/moving_mean/moving_variance ->
weight/bias/running_mean/running_var.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

MUSICNN_BN = {  # TF layer name -> torch module (creation order in musicnn/models.py)
    "batch_normalization": "bn_input",
    "batch_normalization_1": "timbral.0.bn", "batch_normalization_2": "timbral.1.bn",
    "batch_normalization_3": "temporal.0.bn", "batch_normalization_4": "temporal.1.bn",
    "batch_normalization_5": "temporal.2.bn",
    "batch_normalization_6": "midend.0.bn", "batch_normalization_7": "midend.1.bn",
    "batch_normalization_8": "midend.2.bn",
    "batch_normalization_9": "bn_pool", "batch_normalization_10": "bn_dense",
}
MUSICNN_CONV2D = {"conv2d": "timbral.0.conv", "conv2d_1": "timbral.1.conv",
                  "conv2d_2": "temporal.0.conv", "conv2d_3": "temporal.1.conv",
                  "conv2d_4": "temporal.2.conv"}
MUSICNN_CONV1D = {"conv2d_5": "midend.0.conv", "conv2d_6": "midend.1.conv", "conv2d_7": "midend.2.conv"}
MUSICNN_DENSE = {"dense": "dense", "dense_1": "out"}

VGG_BN = {"batch_normalization": "bn_input", **{f"batch_normalization_{i}": f"bns.{i - 1}" for i in range(1, 6)}}
VGG_CONV2D = {f"{i}CNN": f"convs.{i - 1}" for i in range(1, 6)}
VGG_DENSE = {"dense": "out"}

BN_FIELDS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
IGNORED = ("Adam", "beta1_power", "beta2_power", "global_step")


def load_card_module():
    """genretag/card/__init__.py loaded by path: the package __init__ may import torch, which
    the TF venv does not have."""
    spec = importlib.util.spec_from_file_location("genretag_card", REPO / "genretag" / "card" / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["genretag_card"] = mod  # dataclasses look the module up
    spec.loader.exec_module(mod)
    return mod


def read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if not any(s in k for s in IGNORED)}


def convert(tf_vars: dict[str, np.ndarray], variant: str) -> dict[str, np.ndarray]:
    """TF variable dict -> torch state_dict arrays (float32, C-contiguous)."""
    if variant.endswith("_musicnn"):
        bn, conv2d, conv1d, dense = MUSICNN_BN, MUSICNN_CONV2D, MUSICNN_CONV1D, MUSICNN_DENSE
    elif variant.endswith("_vgg"):
        bn, conv2d, conv1d, dense = VGG_BN, VGG_CONV2D, {}, VGG_DENSE
    else:
        raise ValueError(variant)
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        used.add(name)
        return tf_vars[name]

    for tf_name, pt in bn.items():
        for f_tf, f_pt in BN_FIELDS.items():
            out[f"{pt}.{f_pt}"] = take(f"{tf_name}/{f_tf}")
    for tf_name, pt in conv2d.items():
        out[f"{pt}.weight"] = take(f"{tf_name}/kernel").transpose(3, 2, 0, 1)
        out[f"{pt}.bias"] = take(f"{tf_name}/bias")
    for tf_name, pt in conv1d.items():
        k = take(f"{tf_name}/kernel")  # [7, width, 1, out]
        assert k.shape[2] == 1, k.shape
        out[f"{pt}.weight"] = k[:, :, 0, :].transpose(2, 1, 0)
        out[f"{pt}.bias"] = take(f"{tf_name}/bias")
    for tf_name, pt in dense.items():
        out[f"{pt}.weight"] = take(f"{tf_name}/kernel").T
        out[f"{pt}.bias"] = take(f"{tf_name}/bias")
    left = set(tf_vars) - used
    if left:
        raise ValueError(f"unmapped checkpoint variables: {sorted(left)}")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", required=True, help="musicnn-0.1.0-py3-none-any.whl or its unzipped folder")
    ap.add_argument("--variant", default="MSD_musicnn",
                    choices=["MSD_musicnn", "MSD_vgg", "MTT_musicnn", "MTT_vgg"])
    ap.add_argument("--out-dir", default=str(REPO / "models"))
    ap.add_argument("--name", default=None, help="default: variant lower-cased, '_' -> '-'")
    ap.add_argument("--half", action="store_true", help="store float16 weights (half the size; "
                    "tag probabilities within ~1e-3 of the float32 port)")
    args = ap.parse_args()

    wheel = Path(args.wheel)
    root = wheel if wheel.is_dir() else Path(tempfile.mkdtemp(prefix="musicnn_wheel_"))
    if not wheel.is_dir():
        zipfile.ZipFile(wheel).extractall(root)
    ckpt_dir = root / "musicnn" / args.variant
    # the checkpoint prefix is the folder itself: files are "<dir>/.index", "<dir>/.data-..."
    tf_vars = read_checkpoint(str(ckpt_dir) + "/")
    tensors = convert(tf_vars, args.variant)
    if args.half:
        tensors = {k: v.astype(np.float16) for k, v in tensors.items()}

    name = args.name or args.variant.lower().replace("_", "-")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{name}.safetensors"
    from safetensors.numpy import save_file

    # one metadata key only: safetensors writes metadata in hash-map order, so more
    # keys would make the file bytes (and the card's sha256) differ from run to run
    save_file(tensors, str(weights), metadata={"variant": args.variant})

    card_mod = load_card_module()
    msd = args.variant.startswith("MSD")
    conf = json.loads((ckpt_dir / "config.json").read_text())
    sys.path.insert(0, str(root))
    from musicnn import configuration as mconf  # plain constants, no TF import

    labels = list(mconf.MSD_LABELS if msd else mconf.MTT_LABELS)
    result = (ckpt_dir / "experiment.result").read_text()
    nums = [float(line.split(":")[1]) for line in result.splitlines() if "AUC" in line]
    n_params = int(sum(v.size for v in tensors.values()))
    card = card_mod.ModelCard(
        name=name,
        labels=labels,
        architecture={"name": "musicnn" if args.variant.endswith("musicnn") else "vgg",
                      "variant": args.variant},
        # 47616 samples = 186 * 256: the shortest segment giving 187 frames with center=True
        audio=card_mod.AudioParams(sample_rate=16000, segment_seconds=47616 / 16000, max_segments=10),
        mel=card_mod.MelParams(n_fft=512, hop_length=256, n_mels=96, fmin=0.0, fmax=None, power=2.0,
                               htk=False, norm="slaney", log="log10p", top_db=None, scale=10000.0,
                               center=True),
        weights=weights.name,
        weights_sha256=card_mod.sha256_file(weights),
        description=(f"musicnn {args.variant}: pretrained {'Million Song Dataset' if msd else 'MagnaTagATune'} "
                     "top-50 tagger, ported from TensorFlow to PyTorch (genretag.nets.musicnn). Multi-label: "
                     "apply a sigmoid per tag, not a softmax."),
        license="ISC",
        source=(("jordipons/musicnn 0.1.0 (PyPI), trained on the Million Song Dataset top-50 tags" if msd else
                 "jordipons/musicnn 0.1.0 (PyPI), trained on MagnaTagATune top-50 tags")
                + f"; checkpoint musicnn/{args.variant}"),
        training={"dataset": "MSD (last.fm tags)" if msd else "MagnaTagATune",
                  "patch_frames": conf.get("n_frames"),
                  "optimizer": conf.get("optimizer"), "batch_size": conf.get("batch_size")},
        metrics={"roc_auc": nums[0] if nums else None, "pr_auc": nums[1] if len(nums) > 1 else None,
                 "metrics_source": "experiment.result shipped in the musicnn wheel (original authors)"},
        extra={
            "output": "sigmoid",
            "frontend": "genretag.nets.musicnn.musicnn_frontend",
            "stft_pad_mode": "reflect",  # librosa 0.7/0.8 default that musicnn ran and trained with
            "fp16_quantize": True,  # mel power rounded to float16 before log10(1 + 10000 x)
            "input_layout": "(batch, frames, n_mels)",
            "patch_frames": 187,
            "patch_hop_samples": 187 * 256,
            "n_parameters": n_params,
            "weights_dtype": "float16" if args.half else "float32",
            "multilabel": True,  # genretag applies a sigmoid per tag
        },
    )
    card.training = {k: v for k, v in card.training.items() if v is not None}
    card_path = out_dir / f"{name}.json"
    card_mod.save_card(card, card_path)
    print(f"{len(tensors)} tensors, {n_params} parameters -> {weights} ({weights.stat().st_size} bytes)")
    print(f"card -> {card_path}")


if __name__ == "__main__":
    main()
