"""Deprecated: genretag 0.1's home of the loaded model. `genretag.model` is the module.

Every name this module had still works, with a DeprecationWarning naming its new home; the
module goes in genretag 0.4.0 (`genretag.deprecation`).
"""

from __future__ import annotations

from genretag.deprecation import moved_module


def __getattr__(name: str):
    from genretag import card, errors, model
    from genretag.store import resolve, weights

    return moved_module(__name__, name, (model, weights, resolve, card, errors), renamed={"LoadedNet": "Model"})
