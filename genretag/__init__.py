"""genretag: listen to a music library and say which genre each track is.

    >>> import genretag
    >>> model = genretag.load_model()            # the bundled default
    >>> for r in model.classify(["song.mp3"]):
    ...     print(r.path, r.genre, r.confidence)

The API is imported lazily, so that `import genretag.tags` (or the CLI's
`--version` and shell completion) does not pay for importing torch.
"""

from __future__ import annotations

from genretag.version import __version__

__all__ = ["Model", "TrackResult", "__version__", "classify", "load_model"]


def __getattr__(name: str):
    if name in ("Model", "load_model", "classify"):
        from genretag import model

        return getattr(model, name)
    if name == "TrackResult":
        from genretag.pipeline import inference

        return inference.TrackResult
    raise AttributeError(f"module 'genretag' has no attribute {name!r}")
