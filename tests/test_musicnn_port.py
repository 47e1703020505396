"""The PyTorch musicnn port reproduces the original TensorFlow model.

Reference numbers in tests/fixtures/musicnn/reference.npz come from the wheel's
own code and checkpoint (scripts/make_musicnn_fixture.py, run once in a TF venv);
these tests need neither TensorFlow nor the network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from genretag.card import load_card
from genretag.nets import musicnn as M
from genretag.store.weights import sha256_file

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "musicnn"
CARD = ROOT / "models" / "msd-musicnn.json"
WEIGHTS = ROOT / "models" / "msd-musicnn.safetensors"
TOL = 1e-4  # absolute, on tag probabilities


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIX / "reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def wave() -> torch.Tensor:
    y, sr = sf.read(FIX / "clip.wav", dtype="float32")  # int16 / 32768, as librosa.load
    assert sr == M.SAMPLE_RATE and y.ndim == 1
    return torch.from_numpy(y)


@pytest.fixture(scope="module")
def net() -> M.MusicnnNet:
    model = M.load_musicnn(WEIGHTS)
    assert isinstance(model, M.MusicnnNet) and not model.training
    return model


@pytest.fixture(scope="module")
def logmel(wave: torch.Tensor) -> torch.Tensor:
    return M.musicnn_frontend(wave)


def test_mel_filterbank_is_librosas() -> None:
    librosa = pytest.importorskip("librosa")
    ours = M.mel_filterbank(sr=16000, n_fft=512, n_mels=96)
    assert np.array_equal(ours, librosa.filters.mel(sr=16000, n_fft=512, n_mels=96))


def test_frontend_matches_original(logmel: torch.Tensor, ref: dict[str, np.ndarray]) -> None:
    assert tuple(logmel.shape) == ref["logmel"].shape == (376, 96)
    diff = np.abs(logmel.numpy() - ref["logmel"])
    # The mel is rounded to float16 before the log, so a last-bit STFT difference can
    # flip one float16 step (<= ~2.2e-4 after the log) on a handful of bins.
    assert diff.max() < 5e-4
    assert (diff > 1e-5).mean() < 1e-3


def test_frontend_is_batched(wave: torch.Tensor, logmel: torch.Tensor) -> None:
    both = M.musicnn_frontend(torch.stack([wave, wave.flip(0)]))
    assert both.shape == (2, *logmel.shape)
    assert torch.allclose(both[0], logmel, atol=1e-6)


def test_segment_gives_one_patch() -> None:
    card = load_card(CARD)
    assert card.audio.segment_samples == M.SEGMENT_SAMPLES == 47616
    for n in (M.SEGMENT_SAMPLES, M.PATCH_HOP_SAMPLES - 1):
        assert M.musicnn_frontend(torch.zeros(n)).shape == (M.PATCH_FRAMES, M.N_MELS)


def test_network_matches_original_on_reference_input(net: M.MusicnnNet, ref: dict[str, np.ndarray]) -> None:
    patches = M.musicnn_patches(torch.from_numpy(ref["logmel"]))
    with torch.no_grad():
        logits, emb = net(patches, return_embeddings=True)
    assert np.abs(torch.sigmoid(logits).numpy() - ref["taggram"]).max() < TOL
    assert np.allclose(logits.numpy(), ref["logits"], atol=1e-4)
    for key, dim in M.MUSICNN_EMBEDDING_DIMS.items():
        names = [key] if key in ("mean_pool", "max_pool", "penultimate") else [f"{key}_mean", f"{key}_max"]
        for name in names:
            assert emb[name].shape == (2, dim), name
            np.testing.assert_allclose(emb[name].numpy(), ref[name], rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("hop,key", [(M.PATCH_FRAMES, "taggram"), (61, "taggram_overlap1")])
def test_end_to_end_tag_probabilities(net: M.MusicnnNet, logmel: torch.Tensor,
                                      ref: dict[str, np.ndarray], hop: int, key: str) -> None:
    with torch.no_grad():
        probs = torch.sigmoid(net(M.musicnn_patches(logmel, hop=hop))).numpy()
    assert probs.shape == ref[key].shape == (ref[key].shape[0], 50)
    assert np.abs(probs - ref[key]).max() < TOL


def test_card(ref: dict[str, np.ndarray]) -> None:
    card = load_card(CARD)
    assert card.name == "msd-musicnn"
    assert tuple(card.labels) == M.MSD_TAGS and len(M.MSD_TAGS) == 50
    assert card.architecture == {"name": "musicnn", "variant": "MSD_musicnn"}
    assert card.weights == WEIGHTS.name and card.weights_sha256 == sha256_file(WEIGHTS)
    assert (card.audio.sample_rate, card.mel.n_fft, card.mel.hop_length, card.mel.n_mels) == (16000, 512, 256, 96)
    assert card.mel.log == "log10p" and card.mel.scale == M.LOG_SCALE and card.mel.center
    assert int(ref["n_frames"]) == M.PATCH_FRAMES


def test_pooled_front_end_equals_relu_bn_then_max():
    """The eval-mode shortcut (max/min of the conv output, then ReLU and BN on the pooled
    map) equals BN(ReLU(conv)) max-pooled over frequency, also for negative BN scales."""
    torch.manual_seed(0)
    blk = M._ConvBN2d(1, 12, (7, 9))
    with torch.no_grad():
        blk.bn.weight.copy_(torch.randn(12))  # about half negative
        blk.bn.bias.copy_(torch.randn(12))
        blk.bn.running_mean.copy_(torch.randn(12))
        blk.bn.running_var.copy_(torch.rand(12) + 0.1)
    x = torch.randn(3, 1, 40, 30)
    assert (blk.bn.weight < 0).any() and (blk.bn.weight > 0).any()
    blk.eval()
    with torch.no_grad():
        want = blk(x).amax(dim=3)
        got = blk.freq_max(x)
    assert got.shape == want.shape == (3, 12, 34)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    blk.train()  # training keeps the literal graph (batch statistics)
    with torch.no_grad():
        torch.testing.assert_close(blk.freq_max(x), blk(x).amax(dim=3))


def _random_bn(bn: torch.nn.Module, n: int) -> None:
    with torch.no_grad():
        bn.weight.copy_(torch.randn(n))  # about half negative
        bn.bias.copy_(torch.randn(n))
        bn.running_mean.copy_(torch.randn(n))
        bn.running_var.copy_(torch.rand(n) + 0.1)


@pytest.mark.parametrize("dead", [[1, 4, 5, 11], list(range(12))])
def test_dead_filters_are_not_convolved_but_give_the_same_maps(dead: list[int]) -> None:
    """Filters whose weights are all exactly zero output their bias: the eval-mode paths
    fill those channels in as constants, and the maps equal the literal graph's, also when
    every filter is dead, with negative BN scales and with a frequency stride."""
    torch.manual_seed(1)
    blk = M._ConvBN2d(1, 12, (7, 9))
    _random_bn(blk.bn, 12)
    with torch.no_grad():
        blk.conv.weight[dead] = 0.0
    blk.eval()
    x = torch.randn(3, 1, 40, 30)
    with torch.no_grad():
        for stride in (1, 2):
            blk.conv.stride = (1, stride)
            want = blk(x).amax(dim=3)
            got = blk.freq_max(x)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            if len(dead) == 12:  # all constant: relu(bias) through the BN
                assert torch.equal(got.amin(dim=2), got.amax(dim=2))

    mid = M._ConvBN1d(10, 12)
    _random_bn(mid.bn, 12)
    with torch.no_grad():
        mid.conv.weight[dead] = 0.0
    mid.eval()
    z = torch.randn(3, 10, 25)
    with torch.no_grad():
        want = mid.bn(torch.relu(mid.conv(torch.nn.functional.pad(z, mid.pad))))
        torch.testing.assert_close(mid(z), want, atol=1e-5, rtol=1e-5)
        mid.train()
        torch.testing.assert_close(mid(z), mid.bn(torch.relu(mid.conv(torch.nn.functional.pad(z, mid.pad)))))


def test_bundled_default_trunk_is_mostly_dead_filters_and_skipping_them_is_exact() -> None:
    """The fact the default model's speed rests on: most of the MSD musicnn's front-end
    filters are exactly zero in the bundled (float16-stored) transfer weights. Its
    front-end maps, computed on the live filters only, equal the literal graph's."""
    from genretag.model import load_net

    tr = load_net("gtzan-musicnn", "cpu", verify=False).net.trunk
    convs = [blk.conv for blk in (*tr.timbral, *tr.temporal)]
    dead = sum(int(c.weight.flatten(1).ne(0).any(dim=1).logical_not().sum()) for c in convs)
    total = sum(c.out_channels for c in convs)
    assert dead / total > 0.8, (dead, total)
    torch.manual_seed(2)
    x = M.musicnn_frontend(torch.randn(2, M.SEGMENT_SAMPLES) * 0.1)
    with torch.no_grad():
        h = tr.bn_input(x.unsqueeze(1))
        hp = torch.nn.functional.pad(h, (0, 0, 3, 3))
        literal = torch.cat([blk(hp).amax(dim=3) for blk in tr.timbral]
                            + [blk(torch.nn.functional.pad(h, (0, 0, *M._pad_same(k)))).amax(dim=3)
                               for k, blk in zip(tr.temporal_kernels, tr.temporal)], dim=1)
        torch.testing.assert_close(tr.front_maps(x), literal, atol=1e-5, rtol=1e-5)


# The other three checkpoints of the musicnn wheel, stored as float16 (half the size): their
# tag probabilities stay within FP16_TOL of the original; a wrong layout or mapping gives errors
# of 0.1 and more. In float32 the same conversion matches to ~1e-6 (tests/fixtures/musicnn/README.md).
FP16_TOL = 3e-3
PORTS = {"MTT_musicnn": "mtt-musicnn", "MSD_vgg": "msd-vgg", "MTT_vgg": "mtt-vgg"}


@pytest.mark.parametrize("variant", sorted(PORTS))
def test_other_checkpoints_match_the_original(variant: str, ref: dict[str, np.ndarray]) -> None:
    name = PORTS[variant]
    card = load_card(ROOT / "models" / f"{name}.json")
    weights = ROOT / "models" / card.weights
    assert card.architecture["variant"] == variant and card.weights_sha256 == sha256_file(weights)
    assert tuple(card.labels) == (M.MSD_TAGS if variant.startswith("MSD") else M.MTT_TAGS)
    assert card.extra["weights_dtype"] == "float16"
    net = M.load_musicnn(weights)
    assert isinstance(net, M.VGGNet if variant.endswith("vgg") else M.MusicnnNet)
    patches = M.musicnn_patches(torch.from_numpy(ref["logmel"]))
    with torch.no_grad():
        logits, emb = M.trunk_outputs(net, patches)
    probs = torch.sigmoid(logits).numpy()
    assert np.abs(probs - ref[f"{variant}_taggram"]).max() < FP16_TOL
    if variant == "MSD_vgg":  # the public extractor() agrees with the batched graph
        assert np.abs(probs - ref["taggram_vgg"]).max() < FP16_TOL
    keys = [k[len(variant) + 1:] for k in ref if k.startswith(variant + "_") and k.endswith(("_mean", "_max"))]
    assert len(keys) == 10
    for k in keys + ([] if variant.endswith("vgg") else ["penultimate"]):
        want = ref[f"{variant}_{k}"]
        scale = np.abs(want).max()
        assert np.abs(emb[k].numpy() - want).max() < 0.02 * scale, k  # 2% of the map's range


@pytest.mark.parametrize("name", ["mtt-musicnn", "msd-vgg"])
def test_ported_taggers_load_as_genretag_models(name: str, wave: torch.Tensor, ref: dict[str, np.ndarray]) -> None:
    """The tagger cards load through genretag's own loader (waveform in, sigmoid tag probabilities out)."""
    from genretag.model import load_net

    ln = load_net(name, "cpu")
    variant = ln.card.architecture["variant"]
    seg = wave[:M.SEGMENT_SAMPLES].numpy()[None]
    probs = ln.predict(seg)
    assert probs.shape == (1, 50) and ln.card.extra["multilabel"]
    # the fixture's first patch; a sub-track cut from the clip differs from it in its last frame
    # (the STFT reflect-pads the cut's end), which moves tag probabilities by up to ~4e-3
    assert np.abs(probs[0] - ref[f"{variant}_taggram"][0]).max() < 1e-2
