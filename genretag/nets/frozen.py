"""musicnn networks frozen for inference: dead filters dropped and batch norms folded, once.

The eval-mode blocks of `genretag.nets.musicnn` find a layer's live filters (weights not all
zero) and fold its batch norm on every call. `freeze` returns a copy of a network in which
every `MusicnnNet` trunk's front-end and mid-end blocks hold that work done: the live filters
(sign-flipped where the batch norm's scale is negative, see `_ConvBN2d.freq_max`), the folded
scale and shift, and the dead filters' constant outputs. The copy computes the same outputs to
float rounding, and its graph has no data-dependent indexing left, so it traces and exports
(`genretag.nets.onnx_runtime`). Any network built on the trunk freezes: the taggers, the
zero-shot model and the transfer models, whatever their head; the original is untouched.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genretag.nets.musicnn import MusicnnNet, _ConvBN1d, _ConvBN2d


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

    def freq_max(self, x: Tensor) -> Tensor:
        z = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        picked = z.amax(dim=3) * self.sign  # max z where the scale >= 0, min z where it is < 0
        return self._full(F.relu(picked) * self.scale[:, None] + self.shift[:, None])

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


def freezable(net: nn.Module) -> bool:
    """Whether `net` has a musicnn trunk to freeze (and a `features` front-end to split off)."""
    return callable(getattr(net, "features", None)) and any(isinstance(m, MusicnnNet) for m in net.modules())


@torch.no_grad()
def freeze(net: nn.Module) -> nn.Module:
    """An eval-mode copy of `net` with every musicnn trunk's blocks frozen (`net` is untouched)."""
    frozen = copy.deepcopy(net).eval()
    for m in frozen.modules():
        if isinstance(m, MusicnnNet):
            m.timbral = nn.ModuleList([FrozenConvBN2d(b) for b in m.timbral])
            m.temporal = nn.ModuleList([FrozenConvBN2d(b) for b in m.temporal])
            m.midend = nn.ModuleList([FrozenConvBN1d(b) for b in m.midend])
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
