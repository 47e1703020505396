"""Deprecated: genretag 0.1's home of the model card. `genretag.card` is the module.

Every name this module had still works, with a DeprecationWarning naming its new home
(`sha256_file` is `genretag.store.weights.sha256_file`); the module goes in genretag 0.4.0.
"""

from __future__ import annotations

from genretag.deprecation import moved_module


def __getattr__(name: str):
    from genretag import card
    from genretag.store import weights

    return moved_module(__name__, name, (card, weights))
