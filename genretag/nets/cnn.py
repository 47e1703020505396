"""The ResNet and 1-D CNN architectures, built from a model card by `genretag.nets.build_net`.

Every network takes mono waveforms (batch, samples) at the card's sample rate
and returns logits (batch, labels): the front-end is part of the network, so
the same batch gives the same numbers on any device.

- "resnet": torchvision's ResNet family adapted to one input channel, with
  dropout before the classifier. `variant` picks a stock depth (resnet18/34,
  full width: 11-21 M parameters) or, with `widths`, a narrower network built
  from torchvision's own BasicBlock, sized for CPU training and a small file.
- "cnn1d": a raw-waveform 1D CNN (sample-level, SampleCNN-like).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from genretag.card import ModelCard
from genretag.nets.features import LogMel

_STOCK = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}


class ResNetBody(nn.Module):
    """torchvision ResNet (BasicBlock) on one-channel log-mel input, configurable widths."""

    def __init__(self, layers: list[int], widths: list[int], n_classes: int,
                 dropout: float = 0.3, stem_stride: int = 1) -> None:
        # Imported here, not with the module: torchvision takes ~1.1 s to import, which
        # every `genretag classify` with a musicnn model would pay for nothing.
        from torchvision.models import resnet as tv_resnet

        super().__init__()
        if len(widths) < len(layers):
            raise ValueError("a ResNet needs one width per stage")
        widths = widths[:len(layers)]
        self.inplanes = widths[0]
        self.dilation = 1
        self.groups, self.base_width = 1, 64
        self._norm_layer = nn.BatchNorm2d
        # Log-mel inputs are ~128x130: a 7x7 stride-2 stem + maxpool (ImageNet's)
        # throws away too much resolution, so the stem is a 3x3 conv.
        self.input_norm = nn.BatchNorm2d(1)
        self.conv1 = nn.Conv2d(1, widths[0], 3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []  # torchvision's own layer builder: same blocks, same downsampling
        for i, (n, w) in enumerate(zip(layers, widths)):
            stages.append(tv_resnet.ResNet._make_layer(self, tv_resnet.BasicBlock, w, n, stride=1 if i == 0 else 2))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(widths[-1], n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init last BN of each block (torchvision's zero_init_residual)
            if isinstance(m, tv_resnet.BasicBlock):
                nn.init.zeros_(m.bn2.weight)


    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self.input_norm(x))))
        return torch.flatten(self.pool(self.stages(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.embed(x)))


class WaveCNN1D(nn.Module):
    """Sample-level 1D CNN on raw audio: strided stem then conv/BN/ReLU/maxpool(3) blocks."""

    def __init__(self, n_classes: int, widths: list[int] | None = None, dropout: float = 0.3) -> None:
        super().__init__()
        widths = widths or [32, 32, 64, 64, 64, 128, 128, 128, 256]
        layers: list[nn.Module] = [
            nn.Conv1d(1, widths[0], 3, stride=3, bias=False), nn.BatchNorm1d(widths[0]), nn.ReLU(inplace=True)]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv1d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm1d(cout),
                       nn.ReLU(inplace=True), nn.MaxPool1d(3)]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(widths[-1] * 2, n_classes)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        # Per-example standardisation: loudness is not genre.
        x = wave.unsqueeze(1)
        x = (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-5)
        h = self.features(x)
        h = torch.cat([h.mean(-1), h.amax(-1)], dim=1)
        return self.fc(self.dropout(h))


class GenreNet(nn.Module):
    """Front-end + body: waveforms (batch, samples) -> logits (batch, labels)."""

    def __init__(self, frontend: nn.Module | None, body: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.body = body

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        return self.frontend(wave) if self.frontend is not None else wave

    def forward(self, wave: torch.Tensor, spec_transform=None) -> torch.Tensor:
        x = self.features(wave)
        if spec_transform is not None:
            x = spec_transform(x)
        return self.body(x)


def build_resnet(card: ModelCard) -> GenreNet:
    """The "resnet" a card describes: log-mel front-end, then a stock (`variant`) or narrow (`widths`) ResNet."""
    arch: dict[str, Any] = card.architecture
    variant = arch.get("variant", "resnet18")
    layers = arch.get("layers") or _STOCK.get(variant)
    if layers is None:
        raise ValueError(f"unknown resnet variant {variant!r}")
    widths = arch.get("widths") or [64, 128, 256, 512]
    body = ResNetBody(list(layers), list(widths), len(card.labels), float(arch.get("dropout", 0.3)),
                      int(arch.get("stem_stride", 1)))
    return GenreNet(LogMel(card.mel, card.audio.sample_rate), body)


def build_cnn1d(card: ModelCard) -> GenreNet:
    """The "cnn1d" a card describes: the raw-waveform CNN, no front-end."""
    arch: dict[str, Any] = card.architecture
    return GenreNet(None, WaveCNN1D(len(card.labels), arch.get("widths"), float(arch.get("dropout", 0.3))))


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
