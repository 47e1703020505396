"""Finding a model card by name or path, without importing torch.

Names are looked up among the bundled models, then in the user cache, then
in the model index (downloaded on first use; the bundled default when
offline). Kept free of torch so that `models list`, completions and the
hub stay fast.
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


def find_card(name_or_path: str | os.PathLike | None = None) -> Path:
    """Locate a model card: a .json path, a folder holding one, or a model name."""
    named = name_or_path not in (None, "", "default")
    if not named:
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
    name = str(name_or_path)
    for d in (bundled_models_dir(), models_cache_dir()):
        c = d / f"{name}.json"
        if c.exists():
            return c
    from genretag.store.index import ensure_model  # download on first use; bundled default when offline

    if (c := ensure_model(name)) is not None:
        return c
    # an unknown --model is a usage error; a missing bundled default is a broken installation
    raise ModelError(f"model {name!r} not found (not a card path, not bundled, not in the cache)", 2 if named else 1)
