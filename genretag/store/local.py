"""Finding a model card on this machine by name or path, without importing torch.

Names are looked up among the bundled models, then in the user cache.
Downloading what is not here is `genretag.store.resolve`'s decision; this
module knows nothing of the network.
"""

from __future__ import annotations

import os
from pathlib import Path

from genretag.errors import ModelError
from genretag.paths import bundled_models_dir, models_cache_dir


def default_model_name() -> str:
    """The bundled default, named by `models/DEFAULT`."""
    f = bundled_models_dir() / "DEFAULT"
    return f.read_text().strip() if f.exists() else "default"


def means_default(name_or_path: str | os.PathLike | None) -> bool:
    """Whether a --model value asks for the bundled default (none given, empty, or "default")."""
    return name_or_path in (None, "", "default")


def find_local(name_or_path: str | os.PathLike | None = None) -> Path | None:
    """The card a .json path, a folder holding one, or a bundled/cached model name points at; None if none."""
    if means_default(name_or_path):
        name_or_path = default_model_name()
    p = Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        return p
    if p.suffix == ".safetensors" and p.with_suffix(".json").exists():
        return p.with_suffix(".json")
    if p.is_dir():
        cards = sorted(p.glob("*.json"))
        if len(cards) == 1:
            return cards[0]
        raise ModelError(f"{p}: expected exactly one model card (*.json) in the folder", 2)
    for d in (bundled_models_dir(), models_cache_dir()):
        c = d / f"{name_or_path}.json"
        if c.exists():
            return c
    return None
