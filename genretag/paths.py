"""Where genretag keeps things: bundled models, the user cache, the user data dir.

Every location can be overridden by an environment variable, which the tests
use to keep the user's real cache and journal out of reach.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "genretag"


def bundled_models_dir() -> Path:
    """The models shipped with genretag; GENRETAG_BUNDLED_MODELS overrides.

    The repository keeps them in the top-level `models/` folder, and the wheel
    installs that folder as `genretag/_models/` (setup.py maps one onto the
    other). A checkout (editable install or PYTHONPATH) has only the first, an
    installed wheel only the second.
    """
    env = os.environ.get("GENRETAG_BUNDLED_MODELS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    installed, checkout = here / "_models", here.parent / "models"
    if (installed / "DEFAULT").exists() or not (checkout / "DEFAULT").exists():
        return installed
    return checkout


def cache_dir() -> Path:
    """User cache dir (downloaded models, result cache); GENRETAG_CACHE_DIR overrides."""
    env = os.environ.get("GENRETAG_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir(APP))


def numba_cache_dir() -> Path:
    """Where numba keeps compiled functions (librosa's resampling and effects, in decoding workers):
    $NUMBA_CACHE_DIR when set, else `numba` in the cache dir (so it follows GENRETAG_CACHE_DIR)."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    return Path(env) if env else cache_dir() / "numba"


def models_cache_dir() -> Path:
    return cache_dir() / "models"


def onnx_cache_dir() -> Path:
    """Where networks exported for ONNX Runtime are kept (``onnx`` in the cache dir);
    GENRETAG_ONNX_DIR overrides. Files are named by a checksum of what they were made from."""
    env = os.environ.get("GENRETAG_ONNX_DIR")
    return Path(env) if env else cache_dir() / "onnx"


def data_dir() -> Path:
    """User data dir (the tag-write journal); GENRETAG_DATA_DIR overrides."""
    env = os.environ.get("GENRETAG_DATA_DIR")
    return Path(env) if env else Path(platformdirs.user_data_dir(APP))
