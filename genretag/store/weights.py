"""A model's weights file: where a card's weights are, their sha256 check, reading and writing them.

Only safetensors files are read, never a pickle, and a card's sha256 is checked
before the weights are used. Reading and writing import torch (through
safetensors) when called, not with the module: the model index verifies
downloads with `sha256_file` and stays torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from genretag import fs
from genretag.card import ModelCard, save_card
from genretag.errors import ModelError, one_line

if TYPE_CHECKING:
    import torch


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (`genretag.fs.sha256_file`, under the name importers use)."""
    return fs.sha256_file(path, chunk)


def weights_path(card_path: Path, card: ModelCard) -> Path:
    """The weights file a card names (beside it; `<card>.safetensors` when it names none), which must exist."""
    wpath = card_path.parent / (card.weights or card_path.with_suffix(".safetensors").name)
    if not wpath.exists():
        raise ModelError(f"{card_path.name}: weights file {wpath.name} is missing")
    return wpath


def check_sha256(wpath: Path, expected: str) -> None:
    """ModelError unless the file's sha256 is `expected` (a card's ``weights_sha256``)."""
    if sha256_file(wpath) != expected:
        raise ModelError(f"{wpath}: sha256 does not match the model card (corrupt or tampered)")


def read_weights(wpath: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; ModelError (one line) for anything else, which is never unpickled."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(wpath))
    except (SafetensorError, OSError) as e:  # a pickle renamed .safetensors, a bad header length
        raise ModelError(f"{wpath}: not a readable safetensors file ({one_line(e)})") from None


def save_model(net: torch.nn.Module, card: ModelCard, out_dir: str | os.PathLike,
               half: bool = False) -> Path:
    """Write `<name>.safetensors` and `<name>.json` (with its sha256) into out_dir."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in net.state_dict().items()}
    wpath = out / f"{card.name}.safetensors"
    save_file(state, str(wpath))
    card.weights = wpath.name
    card.weights_sha256 = sha256_file(wpath)
    cpath = out / f"{card.name}.json"
    save_card(card, cpath)
    return cpath
