"""Deprecated: genretag 0.1's API module. `genretag` itself (``genretag.load_model``, ``genretag.Model``)
is the API; both names live in `genretag.model`.

`Model` and `load_model` still work here, with a DeprecationWarning; the module goes in genretag 0.4.0.
"""

from __future__ import annotations

from genretag.deprecation import moved_module


def __getattr__(name: str):
    from genretag import model

    return moved_module(__name__, name, (model,) if name in ("Model", "load_model") else ())
