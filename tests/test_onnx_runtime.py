"""--precision auto: musicnn networks in ONNX Runtime give the PyTorch fp32 answers, or PyTorch runs.

Real networks (the bundled cards), real exports into a real cache folder, real audio files made
by tests/audio_factory.py; the reference is the same model loaded with precision="fp32".
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_factory import FORMATS, make_tone, write_audio

from genretag.model import load_net
from genretag.nets.frozen import FromLogMel, freeze

REPO = Path(__file__).resolve().parent.parent
MUSICNN_CARDS = ("gtzan-musicnn", "gtzan-musicnn-fast", "gtzan-musicnn-prior", "gtzan-musicnn-zeroshot",
                 "msd-musicnn", "mtt-musicnn")


def _library(folder: Path) -> list[str]:
    """Files in every format: tones, chords over noise, a beat, a short clip padded to one sub-track."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (ext, sr) in enumerate(sorted(FORMATS.items())):
        seconds = 2.0 if i == 0 else 12.0
        t = np.arange(int(sr * seconds)) / sr
        x = make_tone(sr, seconds, freq=110.0 * (i + 1), seed=i)
        x = x + 0.15 * np.sin(2 * np.pi * 1.5 * 110.0 * (i + 1) * t).astype(np.float32)
        x = x + 0.3 * (np.sin(2 * np.pi * (1 + i) * t) > 0.9).astype(np.float32) * make_tone(sr, seconds, 60.0, seed=9)
        x = x + 0.05 * i * np.random.default_rng(i).standard_normal(x.shape[0]).astype(np.float32)
        paths.append(str(write_audio(folder / f"item{i}{ext}", np.clip(x, -0.99, 0.99).astype(np.float32), sr)))
    return paths


def test_auto_gives_the_fp32_answers_on_generated_audio(tmp_path):
    ref = load_net(None, device="cpu", precision="fp32")
    auto = load_net(None, device="cpu")  # the default precision
    assert auto.precision == "auto" and auto.runtime == "onnxruntime fp32"
    assert ref.runtime == "pytorch fp32"
    paths = _library(tmp_path / "lib")
    a, b = ref.classify(paths, vote="soft"), auto.classify(paths, vote="soft")
    assert [r.error for r in a] == [None] * len(paths)
    assert [r.genre for r in b] == [r.genre for r in a]
    assert [r.segments for r in b] == [r.segments for r in a]
    diff = max(abs(x.probabilities[k] - y.probabilities[k]) for x, y in zip(a, b) for k in x.probabilities)
    assert diff < 1e-4  # float rounding; the target for real music is 0.02


@pytest.mark.slow
@pytest.mark.parametrize("card", MUSICNN_CARDS)
def test_every_bundled_musicnn_card_runs_in_onnx_runtime_with_the_same_outputs(card):
    ref = load_net(card, device="cpu", verify=False, precision="fp32")
    auto = load_net(card, device="cpu", verify=False, precision="auto")
    assert auto.runtime == "onnxruntime fp32"
    gen = np.random.default_rng(4)
    x = (0.1 * gen.standard_normal((3, ref.card.audio.segment_samples))).astype(np.float32)
    x[1] *= 0.01  # a quiet sub-track
    # float rounding: 1e-5 at most on every card but gtzan-musicnn-prior, whose prior (3 x the log of
    # small tag probabilities) magnifies it to about 1.5e-5; the target for real music is 0.02
    np.testing.assert_allclose(auto.predict(x), ref.predict(x), atol=3e-5, rtol=0)


def test_frozen_network_equals_the_network_and_leaves_it_untouched():
    net = load_net("gtzan-musicnn-prior", device="cpu", verify=False, precision="fp32").net
    before = {k: v.clone() for k, v in net.state_dict().items()}
    frozen = FromLogMel(freeze(net))
    x = 0.1 * torch.randn(4, 47616, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(frozen(net.features(x)), net(x), atol=1e-5, rtol=0)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert callable(net.features) and net.features(x).shape == (4, 187, 96)


def test_the_frozen_trunk_gives_every_embedding_from_its_live_channels_alone():
    """The frozen trunk never builds the dead filters' constant maps: the front-end it passes on
    holds the live channels only, and every pooled embedding (the constants put back) and the
    logits equal the network's."""
    from genretag.nets.musicnn import MusicnnNet

    net = load_net("broad-musicnn", device="cpu", verify=False, precision="fp32").net
    frozen = freeze(net).trunk
    assert isinstance(frozen, MusicnnNet) and type(frozen).__name__ == "FrozenMusicnnNet"
    x = 0.1 * torch.randn(3, 47616, generator=torch.Generator().manual_seed(2))
    x[1] *= 0.01  # a quiet sub-track
    with torch.inference_mode():
        logmel = net.features(x)
        maps = frozen.feature_maps(logmel)
        live = sum(int(blk.live_idx.numel()) for blk in (*frozen.timbral, *frozen.temporal))
        assert maps["front_live"].shape == (3, live, 187) and live < 561 // 4
        want_logits, want = MusicnnNet.forward(net.trunk, logmel, return_embeddings=True)
        got_logits, got = MusicnnNet.forward(frozen, logmel, return_embeddings=True)
    assert sorted(got) == sorted(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=2e-5, rtol=1e-5, msg=k)
    torch.testing.assert_close(got_logits, want_logits, atol=2e-5, rtol=0)


def test_the_export_is_cached_by_checksum_and_a_damaged_one_is_made_again(onnx_dir):
    first = load_net(None, device="cpu")
    assert first.runtime == "onnxruntime fp32"
    path = first._runner.path
    assert path.parent == onnx_dir and path.suffix == ".onnx"
    stamp = path.stat().st_mtime_ns
    m = load_net(None, device="cpu")
    assert m.runtime == "onnxruntime fp32" and path.stat().st_mtime_ns == stamp  # reused, not exported again
    path.write_bytes(b"not an onnx file")
    m = load_net(None, device="cpu")
    assert m.runtime == "onnxruntime fp32"
    assert path.stat().st_size > 1_000_000


def test_without_onnxruntime_pytorch_runs_with_one_warning(monkeypatch, caplog):
    import genretag.model as load_mod

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # "import onnxruntime" raises ImportError
    monkeypatch.setattr(load_mod, "_onnx_warned", set())
    # the logger's own level: an earlier in-process CLI run with -q leaves `genretag` at ERROR
    with caplog.at_level(logging.WARNING, logger="genretag.model"):
        a = load_net(None, device="cpu")
        b = load_net(None, device="cpu")
        assert a.runtime == b.runtime == "pytorch fp32"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "onnxruntime cannot be imported" in warnings[0].getMessage()
    x = (0.1 * np.random.default_rng(0).standard_normal((2, 47616))).astype(np.float32)
    ref = load_net(None, device="cpu", precision="fp32")
    np.testing.assert_array_equal(a.predict(x), ref.predict(x))


@pytest.mark.slow
def test_cli_with_a_broken_onnxruntime_warns_once_and_answers_as_fp32(tmp_path):
    """A runtime that cannot load on the user's machine (here: an install whose import fails as a
    missing CPU instruction set would) gives one warning line and the PyTorch fp32 answers."""
    broken = tmp_path / "site" / "onnxruntime"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise ImportError("onnxruntime needs AVX2, which this CPU lacks")\n')
    paths = _library(tmp_path / "lib")[:3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(REPO)]),
           "GENRETAG_BUNDLED_MODELS": str(REPO / "models")}

    def run(*extra):
        return subprocess.run([sys.executable, "-m", "genretag", "classify", *paths, "--format", "jsonl",
                               "--jobs", "1", *extra], capture_output=True, text=True, env=env, timeout=300)

    auto, ref = run(), run("--precision", "fp32")
    assert auto.returncode == 0 and ref.returncode == 0, auto.stderr + ref.stderr
    warn = [ln for ln in auto.stderr.splitlines() if "ONNX Runtime" in ln]
    assert len(warn) == 1 and "AVX2" in warn[0] and "PyTorch" in warn[0]
    assert "Traceback" not in auto.stderr
    assert [json.loads(ln) for ln in auto.stdout.splitlines()] == [json.loads(ln) for ln in ref.stdout.splitlines()]


@pytest.mark.parametrize("card,stride", [("broad-musicnn", 1), ("msd-musicnn", 2)])
def test_the_temporal_filters_packed_give_each_blocks_own_outputs(card, stride):
    """The temporal blocks' live filters, packed into fewer convolutions (shorter kernels placed in
    the middle of longer ones' taps), give each block's own output, whatever the channel block:
    broad-musicnn has 3, 7 and 17 live filters, msd-musicnn 51 in each (here with a frequency stride)."""
    from genretag.nets.frozen import FrozenTemporal
    from genretag.nets.musicnn import MusicnnNet, _pad_same

    net = load_net(card, device="cpu", verify=False, precision="fp32").net
    next(m for m in net.modules() if isinstance(m, MusicnnNet)).set_freq_stride(stride)
    trunk = next(m for m in freeze(net).modules() if isinstance(m, MusicnnNet))
    x = 0.1 * torch.randn(2, 47616, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        h = trunk.bn_input(net.features(x).unsqueeze(1))
        want = torch.cat([blk.live(torch.nn.functional.pad(h, (0, 0, *_pad_same(k))))
                          for k, blk in zip(trunk.temporal_kernels, trunk.temporal)], dim=1)
        calls = {}
        for block in (1, 8, 16):
            packed = FrozenTemporal(list(trunk.temporal), trunk.temporal_kernels, block)
            torch.testing.assert_close(packed(h), want, atol=1e-5, rtol=1e-5, msg=f"block {block}")
            calls[block] = packed.kernels
    live = [int(blk.live_idx.numel()) for blk in trunk.temporal]
    if card == "broad-musicnn":
        assert live == [3, 7, 17]
        assert calls == {1: [128, 64, 32], 8: [128, 64, 32], 16: [128, 32]}  # 3 + 7 + 1 at 128 taps, 16 at 32
    else:
        assert live == [51, 51, 51] and calls[16] == [128, 64, 32]


def test_packing_groups_filters_where_it_saves_channel_blocks():
    from genretag.nets.frozen import pack_kernels

    sizes = lambda groups: [len(g) for g in groups]  # noqa: E731
    assert sizes(pack_kernels([128] * 3 + [64] * 7 + [32] * 17, 16)) == [11, 16]
    assert sizes(pack_kernels([128] * 3 + [64] * 7 + [32] * 17, 1)) == [3, 7, 17]
    assert sizes(pack_kernels([128] * 51 + [64] * 51 + [32] * 51, 16)) == [57, 48, 48]
    assert pack_kernels([], 16) == []
    with pytest.raises(ValueError, match="longest first"):
        pack_kernels([32, 64], 16)
