"""Where genretag keeps things: bundled models, the user cache, the user data dir.

Every location can be overridden by an environment variable, which the tests
use to keep the user's real cache and journal out of reach.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

APP = "genretag"


def bundled_models_dir() -> Path:
    """The models shipped with genretag (repo checkout, or installed data files)."""
    env = os.environ.get("GENRETAG_BUNDLED_MODELS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "models", Path(sys.prefix) / "share" / APP / "models"):
        if (cand / "DEFAULT").exists():
            return cand
    return here.parent / "models"


def cache_dir() -> Path:
    """User cache dir (downloaded models, result cache); GENRETAG_CACHE_DIR overrides."""
    env = os.environ.get("GENRETAG_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir(APP))


def models_cache_dir() -> Path:
    return cache_dir() / "models"


def data_dir() -> Path:
    """User data dir (the tag-write journal); GENRETAG_DATA_DIR overrides."""
    env = os.environ.get("GENRETAG_DATA_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir(APP))
