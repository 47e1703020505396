"""The torch networks a model card describes, rebuilt by `build_net` from the card's ``architecture``.

`ARCHITECTURES` maps each architecture name a card may give to the function that builds its
network (the weights are loaded separately); a new architecture is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from genretag.card import ModelCard
from genretag.nets import cnn, musicnn
from genretag.nets.cnn import GenreNet, count_parameters

__all__ = ["ARCHITECTURES", "GenreNet", "build_net", "count_parameters"]

#: architecture name -> the function that builds its network from a card
ARCHITECTURES: dict[str, Callable[[ModelCard], nn.Module]] = {
    "resnet": cnn.build_resnet,
    "cnn1d": cnn.build_cnn1d,
    **dict.fromkeys(("musicnn", "vgg", "musicnn-transfer", "musicnn-zeroshot", "musicnn-broad"), musicnn.build_net),
}


def build_net(card: ModelCard) -> nn.Module:
    """Rebuild the network a card describes (weights are loaded separately)."""
    arch: dict[str, Any] = card.architecture
    name = arch.get("name", "resnet")
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}")
    return ARCHITECTURES[name](card)
