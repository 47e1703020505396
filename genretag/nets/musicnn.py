"""PyTorch port of the pretrained musicnn taggers (Pons & Serra, 2019).

The `musicnn` package (PyPI 0.1.0, ISC) ships TensorFlow-1 checkpoints and needs
an old TensorFlow, so genretag re-implements the graph here in plain PyTorch and
loads weights converted by ``scripts/convert_musicnn.py``. Nothing in this module
needs TensorFlow, librosa or the musicnn package at run time.

Pipeline (everything the original ``musicnn.extractor`` does)::

    waveform 16 kHz --musicnn_frontend--> log-mel (B, T, 96)
                    --musicnn_patches--> (N, 187, 96) --MusicnnNet--> 50 logits
                    --sigmoid--> tag probabilities (multi-label, NOT a softmax)

Layouts: the original is NHWC with H = time and W = mel band; here tensors are
NCHW with the same H/W meaning, so TF kernels are permuted, never flipped.
TF batch norm (``tf.compat.v1.layers.batch_normalization``) uses eps = 1e-3,
which is why every BatchNorm below sets ``eps=BN_EPS``.

Verified against the original TF graph on ``tests/fixtures/musicnn`` (see
``tests/test_musicnn_port.py``).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

# the front end's constants and filterbank live with its numpy twin (no torch there)
from genretag.runtime.frontend import (  # noqa: F401 - re-exported: part of this module's interface
    FLOAT16_MAX,
    HOP_LENGTH,
    LOG_SCALE,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    _hz_to_mel_slaney,
    _mel_to_hz_slaney,
    mel_filterbank,
)

# ---------------------------------------------------------------------------
# constants (musicnn/configuration.py and the checkpoints' config.json)
# ---------------------------------------------------------------------------

PATCH_FRAMES = 187  # librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
# Fewest samples that give PATCH_FRAMES frames with center=True (1 + n // 256 frames):
# 186 * 256 = 47616 samples = 2.976 s. Any length in [47616, 47871] gives 187 frames.
SEGMENT_SAMPLES = (PATCH_FRAMES - 1) * HOP_LENGTH
# The original cuts non-overlapping patches from the whole-track spectrogram, so
# consecutive patches start 187 frames = 47872 samples apart.
PATCH_HOP_SAMPLES = PATCH_FRAMES * HOP_LENGTH
BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization default

MSD_TAGS: tuple[str, ...] = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s",
    "chill", "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock",
    "60s", "rnb", "indie pop", "sad", "House", "happy",
)

MTT_TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral",
)

# Sizes of the pooled embeddings returned by MusicnnNet (num_filt_midend=64, units=200).
MUSICNN_EMBEDDING_DIMS: dict[str, int] = {
    "timbral": 408, "temporal": 153, "cnn1": 64, "cnn2": 64, "cnn3": 64,
    "mean_pool": 753, "max_pool": 753, "penultimate": 200,
}
# ... and by VGGNet (128 filters): every pooled map, reduced over time and frequency.
VGG_EMBEDDING_DIMS: dict[str, int] = {f"pool{i}": 128 for i in range(1, 6)}

# ---------------------------------------------------------------------------
# front-end
# ---------------------------------------------------------------------------


def musicnn_frontend(waveform_16k: Tensor, *, pad_mode: str = "reflect",
                     fp16_quantize: bool = True) -> Tensor:
    """Log-mel input of musicnn: (B, N) or (N,) waveform at 16 kHz -> (B, T, 96) float32.

    Matches ``musicnn.extractor.batch_data``: ``librosa.feature.melspectrogram``
    (n_fft 512, hop 256, periodic Hann, center=True, power 2, slaney mel) then
    ``.astype(float16)`` then ``log10(10000 * x + 1)`` in float32, T = 1 + N // 256.

    * ``pad_mode="reflect"``: musicnn 0.1.0 ran on librosa 0.7/0.8, whose STFT
      reflect-pads the signal ends (librosa >= 0.9 zero-pads); the training
      features were made the same way. Needs N > 256 samples.
    * ``fp16_quantize=True``: the original rounds the mel power to float16 before
      the log (training features were stored as float16 too). The mel is clamped
      to the float16 maximum first, so a (never seen in practice) overflow
      saturates instead of producing inf.
    """
    with torch.autocast(waveform_16k.device.type, enabled=False):  # float32 under bf16 autocast too
        return _frontend(waveform_16k, pad_mode, fp16_quantize)


def _frontend(waveform_16k: Tensor, pad_mode: str, fp16_quantize: bool) -> Tensor:
    squeeze = waveform_16k.dim() == 1
    w = waveform_16k.unsqueeze(0) if squeeze else waveform_16k
    w = w.to(torch.float32)
    window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float32, device=w.device)
    spec = torch.stft(w, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=N_FFT, window=window,
                      center=True, pad_mode=pad_mode, return_complex=True)
    power = spec.abs().pow(2)  # (B, 257, T)
    fb = torch.from_numpy(mel_filterbank().copy()).to(w.device)
    mel = torch.matmul(fb, power)  # (B, 96, T)
    if fp16_quantize:
        mel = mel.clamp(max=FLOAT16_MAX).to(torch.float16).to(torch.float32)
    out = torch.log10(LOG_SCALE * mel + 1.0).transpose(1, 2).contiguous()
    return out[0] if squeeze else out


def musicnn_patches(logmel: Tensor, n_frames: int = PATCH_FRAMES, hop: int = PATCH_FRAMES) -> Tensor:
    """Cut a (T, 96) log-mel into (N, n_frames, 96) patches every ``hop`` frames.

    Same rule as ``musicnn.extractor.batch_data``: patches start at 0, hop, 2*hop ...
    while a full patch fits; a trailing partial patch is dropped. (The original's
    ``input_overlap=1`` second setting means hop = 61 frames.) Raises if T < n_frames,
    where the original would crash; pad the audio first if you need a prediction.
    """
    if logmel.dim() != 2:
        raise ValueError(f"expected (T, n_mels), got {tuple(logmel.shape)}")
    if logmel.shape[0] < n_frames:
        raise ValueError(f"need at least {n_frames} frames, got {logmel.shape[0]}")
    return logmel.unfold(0, n_frames, hop).transpose(1, 2).contiguous()


# ---------------------------------------------------------------------------
# musicnn network
# ---------------------------------------------------------------------------


def _pad_same(kernel: int) -> tuple[int, int]:
    """TF 'same' padding for stride 1: the extra pad of an even kernel goes AFTER."""
    total = kernel - 1
    return total // 2, total - total // 2


class _ConvBN2d(nn.Module):
    """conv -> ReLU -> batch norm (musicnn applies BN after the activation)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int]):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(F.relu(self.conv(x)))

    def freq_max(self, x: Tensor) -> Tensor:
        """``forward(x).amax(dim=3)`` (max over the mel axis), computed in eval mode on the
        pooled (B, C, T) map instead of the full (B, C, T, F) one.

        Frozen BN is a per-channel affine ``a * r + b`` and ReLU is monotonic, so the max of
        ``a * relu(z) + b`` over F is ``a * relu(max z) + b`` where ``a >= 0`` and
        ``a * relu(min z) + b`` where ``a < 0``. And ``min z = -max(-z)``, where ``-z`` is the
        conv with negated weights and bias, so the channels with ``a < 0`` are convolved with
        negated filters and a single ``amax`` pass over the conv output replaces the ReLU, BN
        and max passes (``amax`` is 3x faster than ``aminmax`` over 59 bands: 3.2 vs 9.7 ms for
        a batch of 4 x 204 channels x 187 frames on 2 threads).

        A filter whose weights are all exactly zero gives ``z = bias`` everywhere, so only the
        others are convolved. The MSD musicnn's training left most front-end filters dead
        (|w| < 1e-4: 370 of 408 timbral, 126 of 153 temporal), and they are exactly zero in
        genretag's float16-stored transfer models: skipping them cuts the front-end's
        arithmetic ~8x. The result differs from ``forward`` only by float rounding.
        """
        if self.training:
            return self(x).amax(dim=3)
        scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
        shift = self.bn.bias - self.bn.running_mean * scale
        sign = torch.where(scale >= 0, 1.0, -1.0).to(scale.dtype)
        conv = self.conv

        def conv_amax(idx: Tensor) -> Tensor:  # max z where a >= 0, min z where a < 0
            s = sign[idx]
            z = F.conv2d(x, conv.weight[idx] * s[:, None, None, None], conv.bias[idx] * s, conv.stride,
                         conv.padding, conv.dilation, conv.groups)
            return z.amax(dim=3) * s[:, None]

        picked = _live_only(conv, conv_amax)
        return F.relu(picked) * scale[:, None] + shift[:, None]


def _live_only(conv: nn.Conv1d | nn.Conv2d, run) -> Tensor:
    """``run(idx)``: a layer's (B, C, T) output computed for output channels ``idx`` only,
    with the dead filters (weights all exactly zero, so their output is the bias
    everywhere) filled in as constants instead of convolved. Eval mode only."""
    live = conv.weight.flatten(1).ne(0).any(dim=1)
    idx = live.nonzero().squeeze(1)
    if idx.numel() == live.numel():
        return run(idx)
    if idx.numel() == 0:  # all dead: convolve one (it gives its bias) for the output's shape
        idx = idx.new_zeros(1)
    some = run(idx)  # bfloat16 under autocast: the constants follow its dtype
    out = conv.bias[None, :, None].to(some.dtype).expand(some.shape[0], -1, some.shape[2]).clone()
    out[:, idx] = some
    return out


class _ConvBN1d(nn.Module):
    """Mid-end layer: a TF conv spanning all channels == Conv1d over time, pad 3+3."""

    def __init__(self, cin: int, cout: int, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel)
        self.bn = nn.BatchNorm1d(cout, eps=BN_EPS)
        self.pad = (kernel // 2, kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, self.pad)
        if self.training:
            return self.bn(F.relu(self.conv(x)))
        conv = self.conv
        return self.bn(F.relu(_live_only(conv, lambda idx: F.conv1d(x, conv.weight[idx], conv.bias[idx]))))


#: The frame-level maps of a musicnn trunk, in the order the back-end concatenates them ("midend").
FRAME_MAPS = ("timbral", "temporal", "cnn1", "cnn2", "cnn3")


class MusicnnNet(nn.Module):
    """The 'musicnn' tagger (``build_musicnn`` in musicnn/models.py).

    Input: log-mel patches (B, T, 96) from :func:`musicnn_frontend` (trained on T=187;
    any T works since the back-end pools over time). Output: (B, num_classes) logits;
    apply ``torch.sigmoid`` for tag probabilities (the tags are independent).

    * front-end: input BN; timbral convs 7x38 and 7x67 (204 filters each, time
      zero-padded 3+3, 'valid' in frequency) and temporal convs 128x1, 64x1, 32x1
      (51 filters each, TF 'same'), each max-pooled over the whole frequency axis;
      concatenated -> 561 channels per frame.
    * mid-end: three 7-frame convs with 64 filters, the 2nd and 3rd residual;
      dense connection concatenates front-end + the three -> 753 channels.
    * back-end: per-channel max and mean over time, interleaved [max0, mean0,
      max1, mean1, ...] (TF concat on a trailing axis then flatten) -> 1506; BN;
      dense 200 + ReLU; BN (= 'penultimate'); dense -> logits. Dropout is a no-op
      at inference and omitted.
    """

    def __init__(self, num_classes: int = 50, n_mels: int = N_MELS, num_filt_frontend: float = 1.6,
                 num_filt_midend: int = 64, num_units_backend: int = 200, freq_stride: int = 1):
        super().__init__()
        timbral_f, temporal_f = int(num_filt_frontend * 128), int(num_filt_frontend * 32)
        self.bn_input = nn.BatchNorm2d(1, eps=BN_EPS)
        self.timbral = nn.ModuleList(
            [_ConvBN2d(1, timbral_f, (7, int(r * n_mels))) for r in (0.4, 0.7)])
        self.temporal_kernels = (128, 64, 32)
        self.temporal = nn.ModuleList([_ConvBN2d(1, temporal_f, (k, 1)) for k in self.temporal_kernels])
        front = 2 * timbral_f + 3 * temporal_f
        self.midend = nn.ModuleList([_ConvBN1d(front, num_filt_midend),
                                     _ConvBN1d(num_filt_midend, num_filt_midend),
                                     _ConvBN1d(num_filt_midend, num_filt_midend)])
        pooled = front + 3 * num_filt_midend
        self.bn_pool = nn.BatchNorm1d(2 * pooled, eps=BN_EPS)
        self.dense = nn.Linear(2 * pooled, num_units_backend)
        self.bn_dense = nn.BatchNorm1d(num_units_backend, eps=BN_EPS)
        self.out = nn.Linear(num_units_backend, num_classes)
        self.set_freq_stride(freq_stride)

    def set_freq_stride(self, stride: int) -> None:
        """Evaluate the front-end convolutions at every ``stride``-th mel position only.

        Each front-end map is max-pooled over the whole mel axis, so a stride keeps the
        network's shape and weights and approximates that max from fewer positions:
        the front-end costs about 1/stride (timings in docs/performance.md). The
        embeddings change, so a head must be trained on the same stride (the model
        card's ``architecture.freq_stride``); 1 is the original network.
        """
        if int(stride) != stride or stride < 1:
            raise ValueError(f"freq_stride must be a positive integer, got {stride!r}")
        self.freq_stride = int(stride)
        for blk in [*self.timbral, *self.temporal]:
            blk.conv.stride = (1, self.freq_stride)

    def front_maps(self, x: Tensor) -> Tensor:
        """The front-end alone: (B, T, n_mels) log-mel -> (B, 561, T), timbral channels first.

        This is most of the network's arithmetic; transfer learning that keeps the
        front-end frozen computes it once per crop without gradients.
        """
        if x.dim() != 3:
            raise ValueError(f"expected (B, T, n_mels) log-mel, got {tuple(x.shape)}")
        h = self.bn_input(x.unsqueeze(1))  # (B, 1, T, F)
        hp = F.pad(h, (0, 0, 3, 3))
        timbral = [blk.freq_max(hp) for blk in self.timbral]  # (B, C, T)
        temporal = [blk.freq_max(F.pad(h, (0, 0, *_pad_same(k))))
                    for k, blk in zip(self.temporal_kernels, self.temporal)]
        return torch.cat(timbral + temporal, dim=1)

    def maps_from_front(self, front: Tensor) -> dict[str, Tensor]:
        """Mid-end on a :meth:`front_maps` output -> the maps of :meth:`feature_maps`."""
        n_timbral = sum(blk.out_channels for blk in self.timbral)
        c1 = self.midend[0](front)
        c2 = self.midend[1](c1) + c1
        c3 = self.midend[2](c2) + c2
        return {"timbral": front[:, :n_timbral], "temporal": front[:, n_timbral:],
                "cnn1": c1, "cnn2": c2, "cnn3": c3, "midend": torch.cat([front, c1, c2, c3], dim=1)}

    def feature_maps(self, x: Tensor) -> dict[str, Tensor]:
        """Frame-level maps, each (B, C, T): timbral, temporal, cnn1, cnn2, cnn3, midend."""
        return self.maps_from_front(self.front_maps(x))

    def forward(self, x: Tensor, return_embeddings: bool = False
                ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Logits (B, classes); with ``return_embeddings`` also a dict of (B, D) embeddings.

        Embedding keys (D in MUSICNN_EMBEDDING_DIMS): ``{timbral,temporal,cnn1,cnn2,cnn3}_{mean,max}``
        (each frame-level map pooled over time), ``mean_pool`` / ``max_pool`` (753, the
        original's names; = concatenation of all the above means / maxes) and
        ``penultimate`` (200, after the last BN) -- the same features as musicnn's
        extractor, time-pooled so they can feed a small classifier directly.
        """
        return self.forward_maps(self.feature_maps(x), return_embeddings)

    def forward_maps(self, maps: dict[str, Tensor], return_embeddings: bool = False
                     ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Back-end of :meth:`forward` on :meth:`feature_maps` output (same results)."""
        return self.forward_pooled({k: (maps[k].amax(dim=2), maps[k].mean(dim=2)) for k in FRAME_MAPS},
                                   return_embeddings)

    def forward_pooled(self, pooled: dict[str, tuple[Tensor, Tensor]], return_embeddings: bool = False
                       ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Back-end of :meth:`forward` on each frame-level map pooled over time: ``{name: (max, mean)}``
        for the names in `FRAME_MAPS`, each (B, C). A map's channels are pooled one by one, so the
        maps' pools side by side are the pools of the concatenated ``midend`` map."""
        max_pool = torch.cat([pooled[k][0] for k in FRAME_MAPS], dim=1)
        mean_pool = torch.cat([pooled[k][1] for k in FRAME_MAPS], dim=1)
        flat = torch.stack([max_pool, mean_pool], dim=2).flatten(1)
        pen = self.bn_dense(F.relu(self.dense(self.bn_pool(flat))))
        logits = self.out(pen)
        if not return_embeddings:
            return logits
        emb: dict[str, Tensor] = {}
        for k in FRAME_MAPS:
            emb[f"{k}_mean"], emb[f"{k}_max"] = pooled[k][1], pooled[k][0]
        emb["mean_pool"], emb["max_pool"], emb["penultimate"] = mean_pool, max_pool, pen
        return logits, emb

    def embed(self, x: Tensor) -> dict[str, Tensor]:
        """Only the pooled embeddings of :meth:`forward` (for transfer learning)."""
        return self.forward(x, return_embeddings=True)[1]


# ---------------------------------------------------------------------------
# VGG baseline (``vgg`` in musicnn/models.py)
# ---------------------------------------------------------------------------


class VGGNet(nn.Module):
    """musicnn's VGG-like baseline: 5 x (3x3 conv 'same' -> ReLU -> BN -> max-pool).

    Pools (time x freq, stride): 4x1 s2x2, 2x2 s2, 2x2 s2, 2x2 s2, 4x4 s4 (TF 'valid'),
    so only T = 187 (3 s) patches give the 2 x 1 x 128 map the final dense expects.
    The flatten is in TF's (time, freq, channel) order. Returns logits (B, 50).
    """

    POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))

    def __init__(self, num_classes: int = 50, num_filters: int = 128):
        super().__init__()
        self.bn_input = nn.BatchNorm2d(1, eps=BN_EPS)
        self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else num_filters, num_filters, 3, padding=1)
                                    for i in range(5)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(num_filters, eps=BN_EPS) for _ in range(5)])
        self.out = nn.Linear(2 * 1 * num_filters, num_classes)

    def forward(self, x: Tensor, return_embeddings: bool = False
                ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """Logits; with ``return_embeddings`` also ``pool{1..5}_{mean,max}`` (B, 128):
        each pooled map reduced over time and frequency. Trained on (and the flatten
        needs) T = 187 frames."""
        h = self.bn_input(x.unsqueeze(1))
        emb: dict[str, Tensor] = {}
        for i, (conv, bn, (k, s)) in enumerate(zip(self.convs, self.bns, self.POOLS), start=1):
            h = F.max_pool2d(bn(F.relu(conv(h))), kernel_size=k, stride=s)
            emb[f"pool{i}_mean"], emb[f"pool{i}_max"] = h.mean(dim=(2, 3)), h.amax(dim=(2, 3))
        logits = self.out(h.permute(0, 2, 3, 1).flatten(1))
        return (logits, emb) if return_embeddings else logits


# ---------------------------------------------------------------------------
# loading converted weights
# ---------------------------------------------------------------------------


def build_model(variant: str) -> nn.Module:
    """An untrained network for a checkpoint variant ('MSD_musicnn', 'MTT_vgg', ...)."""
    num_classes = len(MSD_TAGS if variant.startswith("MSD") else MTT_TAGS)
    if variant.endswith("_musicnn"):
        return MusicnnNet(num_classes)
    if variant.endswith("_vgg"):
        return VGGNet(num_classes)
    raise ValueError(f"unknown musicnn variant {variant!r}")


def load_musicnn(path: str | Path, variant: str | None = None, device: str | torch.device = "cpu"
                 ) -> nn.Module:
    """Load weights written by scripts/convert_musicnn.py into an eval-mode network.

    The variant is read from the safetensors metadata unless given. Strict: every
    tensor must be used and every parameter/buffer filled, except BatchNorm's
    ``num_batches_tracked`` counters (training-only).
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if variant is None:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        variant = meta.get("variant") or json.loads(meta.get("card", "{}")).get("variant")
        if not variant:
            raise ValueError(f"{path}: no 'variant' in metadata; pass variant=")
    model = build_model(variant)
    state = load_file(str(path), device=str(device))
    res = model.load_state_dict(state, strict=False)
    missing = [k for k in res.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or res.unexpected_keys:
        raise ValueError(f"{path}: weights do not fit {variant}: missing {missing}, "
                         f"unexpected {res.unexpected_keys}")
    return model.to(device).eval()


# ---------------------------------------------------------------------------
# genretag architectures: waveform in, logits out (genretag.nets.build_net)
# ---------------------------------------------------------------------------

# Pooled embeddings a transfer head can use: each map is pooled over time by mean
# and max; "penultimate" (the tagger's 200-unit layer) is already pooled.
POOLABLE: tuple[str, ...] = (*FRAME_MAPS, "penultimate")
DEFAULT_POOLING: tuple[str, ...] = ("timbral", "temporal", "cnn1", "cnn2", "cnn3", "penultimate")


def pooled_dim(pooling) -> int:
    """Width of the concatenated pooled embedding for a list of POOLABLE (or VGG pool) names."""
    dims = {**MUSICNN_EMBEDDING_DIMS, **VGG_EMBEDDING_DIMS}
    bad = [p for p in pooling if p not in POOLABLE and p not in VGG_EMBEDDING_DIMS]
    if bad or not pooling:
        raise ValueError(f"unknown pooling {bad or pooling!r} (choose from {', '.join(POOLABLE)})")
    return sum(dims[p] * (1 if p == "penultimate" else 2) for p in pooling)


def trunk_outputs(net: nn.Module, logmel: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Tag logits and pooled embeddings of a tagger network (MusicnnNet or VGGNet) on log-mel patches."""
    if isinstance(net, VGGNet):
        return VGGNet.forward(net, logmel, return_embeddings=True)
    return MusicnnNet.forward(net, logmel, return_embeddings=True)


def pool_embeddings(emb: dict, pooling) -> Tensor | np.ndarray:
    """Concatenate ``{name}_mean, {name}_max`` (or ``penultimate``) of an embedding dict.

    Works on the torch dict of :meth:`MusicnnNet.embed` and on a dict of numpy arrays
    (cached embeddings), in the same order, so a head trained on cached embeddings
    sees exactly what the end-to-end network gives it.
    """
    parts = []
    for p in pooling:
        parts += [emb["penultimate"]] if p == "penultimate" else [emb[f"{p}_mean"], emb[f"{p}_max"]]
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts, axis=-1)
    return torch.cat(parts, dim=-1)


def _fill_bn_counters(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Load-state-dict pre-hook: the converted TF weights have no BatchNorm
    ``num_batches_tracked`` counters (training-only); fill them so strict loading works."""
    for name, buf in module.named_buffers():
        if name.endswith("num_batches_tracked") and prefix + name not in state_dict:
            state_dict[prefix + name] = torch.zeros_like(buf)


def _apply_spec_transform(x: Tensor, spec_transform) -> Tensor:
    """genretag's spectrogram transforms (e.g. train.spec_augment) take (B, 1, mels, frames)."""
    if spec_transform is None:
        return x
    return spec_transform(x.transpose(1, 2).unsqueeze(1)).squeeze(1).transpose(1, 2).contiguous()


class MusicnnTagger(MusicnnNet):
    """Architecture "musicnn": 16 kHz waveforms (B, N) -> the 50 MSD tag logits.

    Same parameters (and state-dict keys) as :class:`MusicnnNet`, so the converted
    ``msd-musicnn.safetensors`` loads as is. Multi-label: the card sets
    ``extra.multilabel`` so genretag applies a sigmoid, not a softmax.
    """

    def __init__(self, num_classes: int = 50) -> None:
        super().__init__(num_classes)
        self._register_load_state_dict_pre_hook(functools.partial(_fill_bn_counters, self))

    def features(self, wave: Tensor) -> Tensor:
        return musicnn_frontend(wave)

    def tag_logits(self, x: Tensor) -> Tensor:
        return MusicnnNet.forward(self, x)

    def embed(self, x: Tensor) -> dict[str, Tensor]:
        return MusicnnNet.forward(self, x, return_embeddings=True)[1]

    def forward(self, wave: Tensor, spec_transform=None) -> Tensor:  # type: ignore[override]
        return self.tag_logits(_apply_spec_transform(self.features(wave), spec_transform))


class VGGTagger(VGGNet):
    """Architecture "vgg": 16 kHz waveforms (B, 47616) -> the 50 tag logits of a musicnn VGG checkpoint.

    Same state-dict keys as :class:`VGGNet`; multi-label like :class:`MusicnnTagger`. The
    sub-track must be one 187-frame patch (the card's segment), which the flatten needs.
    """

    def __init__(self, num_classes: int = 50) -> None:
        super().__init__(num_classes)
        self._register_load_state_dict_pre_hook(functools.partial(_fill_bn_counters, self))

    def forward(self, wave: Tensor, spec_transform=None) -> Tensor:  # type: ignore[override]
        return VGGNet.forward(self, _apply_spec_transform(musicnn_frontend(wave), spec_transform))


class MusicnnZeroShot(MusicnnTagger):
    """Architecture "musicnn-zeroshot": the MSD tagger with a fixed tag -> genre map.

    No trained parameter beyond the tagger's: a genre's score is the max (or mean)
    of the sigmoid probabilities of the tags mapped to it, and its logit is
    ``log(score + eps)`` (a genre with no tag gets ``log(eps)``: never chosen).
    Weights = the tagger's, so the card can point at ``msd-musicnn.safetensors``.
    """

    EPS = 1e-4

    def __init__(self, genres: list[str], mapping: dict[str, list[str]], agg: str = "max",
                 tags: tuple[str, ...] = MSD_TAGS) -> None:
        super().__init__(len(tags))
        if agg not in ("max", "mean"):
            raise ValueError(f"unknown zero-shot aggregation {agg!r} (max or mean)")
        self.agg = agg
        self.register_buffer("mapping", zeroshot_matrix(genres, mapping, tags), persistent=False)

    def forward(self, wave: Tensor, spec_transform=None) -> Tensor:  # type: ignore[override]
        return zeroshot_logits(super().forward(wave, spec_transform), self.mapping, self.agg, self.EPS)


def zeroshot_matrix(genres: list[str], mapping: dict[str, list[str]], tags: tuple[str, ...]) -> Tensor:
    """(genres, tags) 0/1 matrix of a genre -> tags mapping."""
    unknown = sorted({t for ts in mapping.values() for t in ts} - set(tags))
    if unknown:
        raise ValueError(f"zero-shot mapping uses unknown tags {unknown}")
    m = torch.zeros(len(genres), len(tags))
    for i, g in enumerate(genres):
        for t in mapping.get(g, []):
            m[i, tags.index(t)] = 1.0
    return m


def zeroshot_logits(tag_logits: Tensor, mapping: Tensor, agg: str = "max", eps: float = 1e-4) -> Tensor:
    """Genre logits ``log(score + eps)`` from tag logits: a genre's score is the max (or mean) of
    the sigmoid probabilities of its tags."""
    p = torch.sigmoid(tag_logits)  # (B, tags)
    if agg == "max":
        score = (p[:, None, :] * mapping[None]).amax(dim=2)
    else:
        score = (p @ mapping.T) / mapping.sum(dim=1).clamp(min=1)
    return torch.log(score + eps)


def zeroshot_prior(tag_logits: Tensor, mapping: Tensor, agg: str = "max", eps: float = 1e-4) -> Tensor:
    """:func:`zeroshot_logits` as a prior to add to a head's logits: a genre with no tag (reggae has
    none among the MSD tags) gets the mean of the mapped genres' values, so the prior neither
    favours nor rules it out."""
    z = zeroshot_logits(tag_logits, mapping, agg, eps)
    mapped = mapping.sum(dim=1) > 0
    if bool(mapped.all()) or not bool(mapped.any()):
        return z
    return torch.where(mapped, z, z[:, mapped].mean(dim=1, keepdim=True))


class GenreHead(nn.Module):
    """Standardise a pooled embedding, then logistic regression (hidden=0) or a 1-hidden-layer MLP."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 0, dropout: float = 0.5) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        if hidden:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden), nn.ReLU(inplace=True),
                                     nn.Dropout(dropout), nn.Linear(hidden, n_classes))
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, n_classes))

    def set_standardisation(self, mean, std) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp(min=1e-4))

    def forward(self, z: Tensor) -> Tensor:
        return self.net((z - self.mean) / self.std)


class GenreHeadBag(nn.Module):
    """``n`` :class:`GenreHead` of the same shape (trained from different seeds); logits = their mean.

    A head trained on a few hundred tracks moves by several points with its seed; the mean of a
    few such heads is steadier. Costs ``n`` head evaluations, nothing in the trunk.
    """

    def __init__(self, dim: int, n_classes: int, hidden: int = 0, dropout: float = 0.5, n: int = 3) -> None:
        super().__init__()
        if n < 2:
            raise ValueError("a head bag needs at least two heads")
        self.heads = nn.ModuleList([GenreHead(dim, n_classes, hidden, dropout) for _ in range(n)])

    def forward(self, z: Tensor) -> Tensor:
        return torch.stack([h(z) for h in self.heads]).mean(dim=0)


class MusicnnTransfer(nn.Module):
    """Architecture "musicnn-transfer": the musicnn trunk + a genre head on pooled embeddings.

    ``architecture = {"name": "musicnn-transfer", "pooling": [...], "head": {"hidden": H,
    "dropout": p}, "finetune": bool}``. The state dict holds the whole trunk
    (``trunk.*``, incl. its tag layer, whose 200-unit input is the "penultimate"
    embedding) and the head (``head.*``), so a model loads from its own file alone.
    """

    def __init__(self, n_classes: int, pooling=DEFAULT_POOLING, hidden: int = 0,
                 dropout: float = 0.5, trunk_classes: int = len(MSD_TAGS), freq_stride: int = 1,
                 prior: dict | None = None, labels: list[str] | None = None, n_heads: int = 1) -> None:
        super().__init__()
        self.pooling = tuple(pooling)
        self.trunk = MusicnnNet(trunk_classes, freq_stride=freq_stride)
        dim = pooled_dim(self.pooling)
        self.head = (GenreHead(dim, n_classes, hidden, dropout) if n_heads == 1
                     else GenreHeadBag(dim, n_classes, hidden, dropout, n_heads))
        self._register_load_state_dict_pre_hook(functools.partial(_fill_bn_counters, self))
        self.prior_weight, self.prior_agg = 0.0, "max"
        if prior:
            if labels is None or len(labels) != n_classes:
                raise ValueError("a zero-shot prior needs the model's labels")
            self.set_prior(prior, labels)

    def set_prior(self, prior: dict, labels: list[str]) -> None:
        """``prior = {"mapping": {genre: [MSD tags]}, "agg": "max", "weight": w}`` (the card's)."""
        self.prior_weight, self.prior_agg = float(prior["weight"]), prior.get("agg", "max")
        self.register_buffer("prior_mapping", zeroshot_matrix(list(labels), prior["mapping"], MSD_TAGS),
                             persistent=False)

    def features(self, wave: Tensor) -> Tensor:
        return musicnn_frontend(wave)

    def embedding(self, x: Tensor) -> Tensor:
        """(B, T, 96) log-mel -> (B, D) pooled embedding the head reads."""
        return pool_embeddings(self.trunk.embed(x), self.pooling)

    def logits_from(self, tag_logits: Tensor, emb: dict[str, Tensor]) -> Tensor:
        """Genre logits from the trunk's outputs: the head's, plus ``weight *`` :func:`zeroshot_prior`
        of the trunk's own tags when the card has a prior (the MSD tags mapped to genres)."""
        out = self.head(pool_embeddings(emb, self.pooling))
        if self.prior_weight:
            out = out + self.prior_weight * zeroshot_prior(tag_logits, self.prior_mapping, self.prior_agg)
        return out

    def forward_front(self, front: Tensor) -> Tensor:
        """Logits from :meth:`MusicnnNet.front_maps` output (fine-tuning with a frozen front-end)."""
        return self.logits_from(*self.trunk.forward_maps(self.trunk.maps_from_front(front), return_embeddings=True))

    def forward(self, wave: Tensor, spec_transform=None) -> Tensor:
        x = _apply_spec_transform(self.features(wave), spec_transform)
        return self.logits_from(*MusicnnNet.forward(self.trunk, x, return_embeddings=True))


class MusicnnBroad(MusicnnTransfer):
    """Architecture "musicnn-broad": a GTZAN transfer model widened with genres the MSD tags name.

    GTZAN teaches ten genres; the MSD tagger underneath its head was trained on tags that also name
    electronic, folk, soul/R&B, punk, ambient and easy-listening music. This model keeps both and puts
    them on one scale, with a handful of parameters fitted on labelled recordings
    (``scripts/broad_model.py``):

    - a label from GTZAN genre ``g``: ``log softmax(gtzan logits / gtzan_temperature)[g] + bias[label]``;
    - an "evidence" label ``E`` with MSD tags ``S``: ``scale * logit(max_{t in S} sigmoid(tag_t)) + bias[E]``.

    The biases move the GTZAN head's genres toward how often each is right on recordings unlike
    GTZAN's (its classical, say, is often called jazz on modern recordings of early music).

    The output is the logits over the card's labels (a softmax of them is the genre distribution).
    ``architecture = {"name": "musicnn-broad", <the musicnn-transfer keys>, "gtzan_labels": [...],
    "gtzan_temperature": T, "from_gtzan": {label: gtzan genre}, "evidence": {label: [MSD tags]},
    "scale": a, "bias": {label: b}}``. The state dict is a musicnn-transfer model's.
    """

    def __init__(self, labels: list[str], gtzan_labels: list[str], from_gtzan: dict[str, str],
                 evidence: dict[str, list[str]], scale: float, bias: dict[str, float],
                 gtzan_temperature: float = 1.0, **transfer) -> None:
        super().__init__(len(gtzan_labels), labels=list(gtzan_labels), **transfer)
        if set(from_gtzan) & set(evidence) or set(from_gtzan) | set(evidence) != set(labels):
            raise ValueError("every label comes from exactly one of from_gtzan and evidence")
        unknown = sorted({g for g in from_gtzan.values()} - set(gtzan_labels))
        if unknown:
            raise ValueError(f"from_gtzan names genres the GTZAN head lacks: {unknown}")
        self.gtzan_temperature, self.scale = float(gtzan_temperature), float(scale)
        self.register_buffer("gtzan_index", torch.tensor(
            [gtzan_labels.index(from_gtzan[lab]) if lab in from_gtzan else 0 for lab in labels]), persistent=False)
        self.register_buffer("is_evidence", torch.tensor([lab in evidence for lab in labels]), persistent=False)
        self.register_buffer("evidence_map", zeroshot_matrix(list(labels), evidence, MSD_TAGS), persistent=False)
        self.register_buffer("bias", torch.tensor([float(bias.get(lab, 0.0)) for lab in labels]), persistent=False)

    def broad_logits(self, tag_logits: Tensor, gtzan_logits: Tensor) -> Tensor:
        """Logits over the broad labels from the trunk's tag logits and the GTZAN head's logits."""
        ten = F.log_softmax(gtzan_logits / self.gtzan_temperature, dim=-1)[:, self.gtzan_index]
        p = torch.sigmoid(tag_logits)
        score = (p[:, None, :] * self.evidence_map[None]).amax(dim=2).clamp(1e-6, 1 - 1e-6)
        return torch.where(self.is_evidence, self.scale * torch.logit(score), ten) + self.bias

    def forward(self, wave: Tensor, spec_transform=None) -> Tensor:
        x = _apply_spec_transform(self.features(wave), spec_transform)
        tag_logits, emb = MusicnnNet.forward(self.trunk, x, return_embeddings=True)
        return self.broad_logits(tag_logits, self.logits_from(tag_logits, emb))


def build_net(card) -> nn.Module:
    """The network a genretag card describes (weights loaded separately): waveform -> logits.

    - ``{"name": "musicnn"}`` / ``{"name": "vgg"}``: a tagger, labels = its 50 tags (multi-label).
    - ``{"name": "musicnn-transfer", "pooling", "head", "finetune", "freq_stride", "prior"}``: trunk +
      genre head (``head = {"hidden", "dropout", "n"}``, ``n`` > 1: a :class:`GenreHeadBag`;
      ``freq_stride``, default 1: see :meth:`MusicnnNet.set_freq_stride`; ``prior``,
      optional: ``{"mapping", "agg", "weight"}``, the zero-shot tag mapping blended into the logits).
    - ``{"name": "musicnn-zeroshot", "mapping": {genre: [tags]}, "agg": "max"}``.
    - ``{"name": "musicnn-broad", ...}``: a musicnn-transfer model widened with tag-evidence genres
      (:class:`MusicnnBroad`).
    """
    arch = card.architecture
    name = arch.get("name")
    if card.audio.sample_rate != SAMPLE_RATE:
        raise ValueError(f"musicnn models need audio.sample_rate {SAMPLE_RATE}, card says {card.audio.sample_rate}")
    if name == "musicnn":
        variant = arch.get("variant", "MSD_musicnn")
        if not variant.endswith("_musicnn"):
            raise ValueError(f"architecture 'musicnn' supports *_musicnn variants, not {variant!r}")
        return MusicnnTagger(len(card.labels))
    if name == "vgg":
        return VGGTagger(len(card.labels))
    if name == "musicnn-transfer":
        head = arch.get("head", {})
        return MusicnnTransfer(len(card.labels), arch.get("pooling", DEFAULT_POOLING),
                               int(head.get("hidden", 0)), float(head.get("dropout", 0.5)),
                               int(arch.get("trunk_classes", len(MSD_TAGS))),
                               int(arch.get("freq_stride", 1)), arch.get("prior"), list(card.labels),
                               int(head.get("n", 1)))
    if name == "musicnn-broad":
        head = arch.get("head", {})
        return MusicnnBroad(list(card.labels), list(arch["gtzan_labels"]), dict(arch["from_gtzan"]),
                            dict(arch["evidence"]), float(arch["scale"]), dict(arch.get("bias", {})),
                            float(arch.get("gtzan_temperature", 1.0)),
                            pooling=arch.get("pooling", DEFAULT_POOLING), hidden=int(head.get("hidden", 0)),
                            dropout=float(head.get("dropout", 0.5)),
                            trunk_classes=int(arch.get("trunk_classes", len(MSD_TAGS))),
                            freq_stride=int(arch.get("freq_stride", 1)), prior=arch.get("prior"),
                            n_heads=int(head.get("n", 1)))
    if name == "musicnn-zeroshot":
        return MusicnnZeroShot(list(card.labels), dict(arch.get("mapping", {})), arch.get("agg", "max"))
    raise ValueError(f"unknown musicnn architecture {name!r}")
