"""Which card a model name means: here, else downloaded, else (offline) the bundled default.

    find_card(name) = store.local (a path, a bundled or cached model)
                      -> store.index (download it on first use when the index has it)
                      -> the bundled default with a warning, when the network cannot be reached

The one place that combines the local lookup and the model index, so that
neither of those needs the other. Never imports torch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from genretag.errors import ModelError, OfflineError
from genretag.paths import bundled_models_dir
from genretag.store.index import ensure_model
from genretag.store.local import default_model_name, find_local, means_default

log = logging.getLogger(__name__)


def find_card(name_or_path: str | os.PathLike | None = None) -> Path:
    """Locate a model card: a .json path, a folder holding one, or a model name (downloaded on first use).

    Raises ModelError (exit code 2 for a name nobody knows) when there is no such model.
    """
    found = find_local(name_or_path)
    if found is not None:
        return found
    default = means_default(name_or_path)
    name = default_model_name() if default else str(name_or_path)
    try:
        downloaded = ensure_model(name)
    except OfflineError as e:
        return offline_fallback(name, e)
    if downloaded is not None:
        return downloaded
    if default:  # the bundled default is missing: a broken install, not a wrong name
        raise ModelError(f"the default model {name!r} is missing from {bundled_models_dir()} "
                         "(reinstall genretag, or pass --model)", 1)
    raise ModelError(f"model {name!r} not found (not a card path, not bundled, not in the cache)", 2)


def offline_fallback(name: str, err: Exception) -> Path:
    """The bundled default's card in place of `name`, which could not be downloaded (with a warning)."""
    default = default_model_name()
    card = bundled_models_dir() / f"{default}.json"
    if default == name or not card.exists():
        raise OfflineError(f"model {name!r} is not cached and cannot be downloaded ({err})")
    log.warning("model %r is not cached and cannot be downloaded (offline?); using the bundled default %r instead",
                name, default)
    log.debug("download error: %s", err)
    return card
