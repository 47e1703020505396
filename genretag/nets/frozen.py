"""musicnn networks frozen for inference: dead filters dropped and batch norms folded, once.

The eval-mode blocks of `genretag.nets.musicnn` find a layer's live filters (weights not all
zero) and fold its batch norm on every call. `freeze` returns a copy of a network in which
every `MusicnnNet` trunk's front-end and mid-end blocks hold that work done: the live filters
(sign-flipped where the batch norm's scale is negative, see `_ConvBN2d.freq_max`), the folded
scale and shift, and the dead filters' constant outputs; and every trunk passes only its live
front-end channels on, the constants' share folded into the first mid-end layer and the pooled
vectors (`_FrozenTrunk`); and the three temporal blocks' live filters run packed into as few
convolutions as pay (`FrozenTemporal`). The copy computes the same outputs to float rounding, and
its graph has no data-dependent indexing left, so it traces and exports
(`genretag.nets.onnx_runtime`). Any network built on the trunk freezes: the taggers, the zero-shot
model and the transfer models, whatever their head; the original is untouched.
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genretag.nets.musicnn import MusicnnNet, _ConvBN1d, _ConvBN2d, _pad_same


def _folded(conv: nn.Conv1d | nn.Conv2d, bn: nn.BatchNorm1d | nn.BatchNorm2d
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(live filter indices, dead filter indices, scale, shift) of conv -> ReLU -> frozen BN."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    live = conv.weight.flatten(1).ne(0).any(dim=1)
    if not bool(live.any()):  # all dead: convolve one (it gives its bias), as _live_only does
        live[0] = True
    return live.nonzero().squeeze(1), (~live).nonzero().squeeze(1), scale, shift


class _FrozenBlock(nn.Module):
    """What the live-filter blocks share: the dead filters' constant outputs and the channel order."""

    def _set_channels(self, idx: Tensor, dead: Tensor, conv, scale: Tensor, shift: Tensor) -> None:
        self.out_channels = conv.out_channels
        self.n_dead = int(dead.numel())
        self.register_buffer("live_idx", idx.clone())
        self.register_buffer("dead_idx", dead.clone())
        # A dead filter's output is its bias everywhere: after ReLU and BN, a constant.
        self.register_buffer("const", F.relu(conv.bias[dead]) * scale[dead] + shift[dead])
        self.register_buffer("order", torch.argsort(torch.cat([idx, dead])))
        self.register_buffer("scale", scale[idx].clone())
        self.register_buffer("shift", shift[idx].clone())

    def _full(self, y: Tensor) -> Tensor:
        """(B, live, T) -> (B, out_channels, T) with the dead channels' constants, in the original order."""
        if not self.n_dead:
            return y
        const = self.const[None, :, None].expand(y.shape[0], -1, y.shape[2])
        return torch.cat([y, const], dim=1).index_select(1, self.order)


class FrozenConvBN2d(_FrozenBlock):
    """`_ConvBN2d.freq_max` with its live filters, signs and batch norm precomputed."""

    def __init__(self, blk: _ConvBN2d) -> None:
        super().__init__()
        conv = blk.conv
        idx, dead, scale, shift = _folded(conv, blk.bn)
        sign = torch.where(scale >= 0, 1.0, -1.0).to(scale.dtype)[idx]
        self.register_buffer("weight", (conv.weight[idx] * sign[:, None, None, None]).contiguous())
        self.register_buffer("bias", conv.bias[idx] * sign)
        self.register_buffer("sign", sign[:, None].clone())
        self._set_channels(idx, dead, conv, scale, shift)
        self.stride, self.padding = conv.stride, conv.padding

    def live(self, x: Tensor) -> Tensor:
        """The live filters' channels of `freq_max` only, (B, live, T), in `live_idx` order."""
        z = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        picked = z.amax(dim=3) * self.sign  # max z where the scale >= 0, min z where it is < 0
        return F.relu(picked) * self.scale[:, None] + self.shift[:, None]

    def freq_max(self, x: Tensor) -> Tensor:
        return self._full(self.live(x))

    forward = freq_max


class FrozenConvBN1d(_FrozenBlock):
    """`_ConvBN1d` (mid-end: zero-padded conv over time -> ReLU -> BN) with its live filters and
    batch norm precomputed."""

    def __init__(self, blk: _ConvBN1d) -> None:
        super().__init__()
        conv = blk.conv
        idx, dead, scale, shift = _folded(conv, blk.bn)
        self.register_buffer("weight", conv.weight[idx].contiguous())
        self.register_buffer("bias", conv.bias[idx].clone())
        self._set_channels(idx, dead, conv, scale, shift)
        self.pad = blk.pad

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(F.conv1d(F.pad(x, self.pad), self.weight, self.bias))
        return self._full(y * self.scale[:, None] + self.shift[:, None])

    def fold_inputs(self, live: Tensor, dead: Tensor, const: Tensor) -> None:
        """Prepare `from_live`: of this layer's input channels, `live` vary and `dead` hold the
        constants `const` at every frame (a front-end's dead filters)."""
        self.register_buffer("weight_live", self.weight[:, live].contiguous())
        # what the constant channels add: a_j = sum_i const_i * w[:, i, j], one kernel per output
        self.register_buffer("const_kernel", (self.weight[:, dead] * const[None, :, None]).sum(1, keepdim=True))

    def from_live(self, x: Tensor) -> Tensor:
        """`forward` on the full input, given only its live channels (B, live, T) (`fold_inputs`).

        The constant channels contribute the same amount at every frame, except within half a
        kernel of either end, where the zero padding replaces some of them: that is the
        constant kernel convolved with a zero-padded row of ones, (1, out, T)."""
        ones = F.pad(torch.ones_like(x[:1, :1]), self.pad)
        y = F.conv1d(F.pad(x, self.pad), self.weight_live, self.bias) + F.conv1d(ones, self.const_kernel)
        return self._full(F.relu(y) * self.scale[:, None] + self.shift[:, None])


def nchwc_block() -> int:
    """The channel block ONNX Runtime's CPU convolutions compute in on this machine: 16 output
    channels at a time with AVX-512, 8 with AVX2 (its NCHWc layout), 1 where it has no blocked
    layout. A convolution with fewer live filters than a multiple of it costs as much as the
    next multiple."""
    capability = torch.backends.cpu.get_cpu_capability()
    return 16 if "AVX512" in capability else 8 if "AVX2" in capability else 1


def pack_kernels(lengths: list[int], block: int) -> list[list[int]]:
    """Filters of the given kernel lengths (longest first) grouped into convolutions, as runs of
    consecutive filters, each run zero-padded to its first (longest) kernel.

    A convolution of n filters of K taps costs about ``ceil(n / block) * block * K`` plus one
    ``block`` of 32 taps for the call, its layout conversion and its max (ONNX Runtime,
    measured from 16 to 32 filters of 32 to 128 taps: docs/performance.md); the grouping that
    costs least is found by dynamic programming over the runs."""
    if any(a < b for a, b in zip(lengths, lengths[1:])):
        raise ValueError("kernel lengths must come longest first")
    n, per_call = len(lengths), block * 32
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + -(-(j - i) // block) * block * lengths[i] + per_call
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j:
        groups.append(list(range(cut[j], j)))
        j = cut[j]
    return groups[::-1]


class FrozenTemporal(nn.Module):
    """The temporal blocks' `FrozenConvBN2d.live` outputs side by side, (B, live, T), with their
    filters packed into fewer convolutions (`pack_kernels`).

    The temporal blocks have 128-, 64- and 32-frame kernels over time, each padded TF-'same', so
    a shorter kernel placed in the middle of a longer one's taps (zeros elsewhere) computes the
    same output. With a handful of live filters per block (3, 7 and 17 in the GTZAN models), each
    block alone would pay for a whole channel block of ONNX Runtime's blocked layout; packed, the
    three take two convolutions with few empty channels."""

    def __init__(self, blocks: list[FrozenConvBN2d], kernels: tuple[int, ...], block: int) -> None:
        super().__init__()
        filters = [(k, blk.weight[i, 0, :, 0], blk.bias[i]) for k, blk in zip(kernels, blocks)
                   for i in range(blk.weight.shape[0])]
        self.stride = blocks[0].stride
        self.kernels: list[int] = []
        for g, group in enumerate(pack_kernels([k for k, _, _ in filters], block)):  # checks the order
            longest = filters[group[0]][0]
            weight = torch.zeros(len(group), 1, longest, 1, dtype=blocks[0].weight.dtype)
            for row, f in enumerate(group):
                k, w, _ = filters[f]
                start = _pad_same(longest)[0] - _pad_same(k)[0]  # the same frames either side
                weight[row, 0, start:start + k, 0] = w
            self.register_buffer(f"weight{g}", weight)
            self.register_buffer(f"bias{g}", torch.stack([filters[f][2] for f in group]))
            self.kernels.append(longest)
        self.register_buffer("sign", torch.cat([blk.sign for blk in blocks]))
        self.register_buffer("scale", torch.cat([blk.scale for blk in blocks]))
        self.register_buffer("shift", torch.cat([blk.shift for blk in blocks]))

    def forward(self, h: Tensor) -> Tensor:
        """(B, 1, T, F) normalised log-mel -> (B, live, T), the blocks' live channels in block order."""
        z = [F.conv2d(F.pad(h, (0, 0, *_pad_same(k))), getattr(self, f"weight{g}"), getattr(self, f"bias{g}"),
                      self.stride).amax(dim=3) for g, k in enumerate(self.kernels)]
        picked = torch.cat(z, dim=1) * self.sign  # max z where the scale >= 0, min z where it is < 0
        return F.relu(picked) * self.scale[:, None] + self.shift[:, None]


class _FrozenTrunk:
    """A frozen `MusicnnNet` (`freeze` gives its copy this class first): the same outputs, from the
    live front-end channels only.

    Most front-end filters are dead, so most of the 561 front-end channels are constants. The
    network's own forward concatenates them into a (B, 561, T) map, convolves the mid-end's first
    layer over all of them and pools every channel over time. Here the front-end yields its live
    channels only; the first mid-end layer adds the constants' share as a precomputed kernel
    (`FrozenConvBN1d.from_live`), and the pooled constants are put back in the (B, 561) vectors
    after pooling. The outputs equal the network's to float rounding.
    """

    def feature_maps(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 3:
            raise ValueError(f"expected (B, T, n_mels) log-mel, got {tuple(x.shape)}")
        h = self.bn_input(x.unsqueeze(1))
        hp = F.pad(h, (0, 0, 3, 3))
        front = torch.cat([*(blk.live(hp) for blk in self.timbral), self.temporal_live(h)], dim=1)
        c1 = self.midend[0].from_live(front)
        c2 = self.midend[1](c1) + c1
        c3 = self.midend[2](c2) + c2
        return {"front_live": front, "cnn1": c1, "cnn2": c2, "cnn3": c3}

    def _front(self, pooled_live: Tensor) -> Tensor:
        """(B, live) pooled live channels -> (B, 561) with the constants, in the front-end's order."""
        const = self.front_const[None, :].expand(pooled_live.shape[0], -1)
        return torch.cat([pooled_live, const], dim=1).index_select(1, self.front_order)

    def forward_maps(self, maps: dict[str, Tensor], return_embeddings: bool = False
                     ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        front = maps["front_live"]
        front_max, front_mean = self._front(front.amax(dim=2)), self._front(front.mean(dim=2))
        n = sum(blk.out_channels for blk in self.timbral)
        pooled = {"timbral": (front_max[:, :n], front_mean[:, :n]), "temporal": (front_max[:, n:], front_mean[:, n:])}
        pooled.update({k: (maps[k].amax(dim=2), maps[k].mean(dim=2)) for k in ("cnn1", "cnn2", "cnn3")})
        return self.forward_pooled(pooled, return_embeddings)


@functools.cache
def _frozen_class(cls: type) -> type:
    """`cls` (a MusicnnNet, or a tagger built on it) with `_FrozenTrunk`'s forward steps first."""
    return type(f"Frozen{cls.__name__}", (_FrozenTrunk, cls), {"__module__": __name__})


def _freeze_trunk(m: MusicnnNet) -> None:
    """Freeze `m`'s blocks in place and make it a `_FrozenTrunk`."""
    m.timbral = nn.ModuleList([FrozenConvBN2d(b) for b in m.timbral])
    m.temporal = nn.ModuleList([FrozenConvBN2d(b) for b in m.temporal])
    m.midend = nn.ModuleList([FrozenConvBN1d(b) for b in m.midend])
    m.temporal_live = FrozenTemporal(list(m.temporal), m.temporal_kernels, nchwc_block())
    live, dead, const, offset = [], [], [], 0
    for blk in (*m.timbral, *m.temporal):  # the front-end's channels, block after block
        live.append(blk.live_idx + offset)
        dead.append(blk.dead_idx + offset)
        const.append(blk.const)
        offset += blk.out_channels
    live, dead, const = torch.cat(live), torch.cat(dead), torch.cat(const)
    m.midend[0].fold_inputs(live, dead, const)
    m.register_buffer("front_const", const.clone())
    m.register_buffer("front_order", torch.argsort(torch.cat([live, dead])))
    m.__class__ = _frozen_class(type(m))


def freezable(net: nn.Module) -> bool:
    """Whether `net` has a musicnn trunk to freeze (and a `features` front-end to split off)."""
    return callable(getattr(net, "features", None)) and any(isinstance(m, MusicnnNet) for m in net.modules())


@torch.no_grad()
def freeze(net: nn.Module) -> nn.Module:
    """An eval-mode copy of `net` with every musicnn trunk's blocks frozen (`net` is untouched)."""
    frozen = copy.deepcopy(net).eval()
    for m in [m for m in frozen.modules() if isinstance(m, MusicnnNet)]:
        _freeze_trunk(m)
    return frozen.requires_grad_(False)


def _identity(x: Tensor) -> Tensor:
    return x


class FromLogMel(nn.Module):
    """A frozen network from its log-mel on: ``FromLogMel(f)(f.features(wave)) == f(wave)``.

    The network's own `forward` runs with its `features` step replaced by the identity, so
    whatever the network does after the front-end (any head, a prior on the tags) is kept."""

    def __init__(self, frozen: nn.Module) -> None:
        super().__init__()
        self.net = frozen
        self.net.features = _identity  # this copy's own attribute; the class is untouched

    def forward(self, logmel: Tensor) -> Tensor:
        return self.net(logmel)
