"""Deprecated: genretag 0.1's address of the model stage. `genretag.pipeline.inference` is the module.

`TrackResult`, `classify` and `run_model` still work here, with a DeprecationWarning; the module
goes in genretag 0.4.0.
"""

from __future__ import annotations

from genretag.deprecation import moved_module


def __getattr__(name: str):
    from genretag.pipeline import inference

    return moved_module(__name__, name, (inference,) if name in ("TrackResult", "classify", "run_model") else ())
