"""genretag: listen to a music library and say which genre each track is.

    >>> import genretag
    >>> model = genretag.load_model()            # the bundled default
    >>> for r in model.classify(["song.mp3"]):
    ...     print(r.path, r.genre, r.confidence)
"""

from __future__ import annotations

__version__ = "0.1.0"

from genretag.api import Model, load_model  # noqa: E402
from genretag.inference import TrackResult, classify  # noqa: E402

__all__ = ["Model", "load_model", "classify", "TrackResult", "__version__"]
