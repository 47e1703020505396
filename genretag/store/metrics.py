"""Deprecated: genretag 0.1's home of a card's figures. `genretag.card.metrics` is the module.

Every name this module had still works, with a DeprecationWarning naming its new home; the
module goes in genretag 0.4.0.
"""

from __future__ import annotations

from genretag.deprecation import moved_module


def __getattr__(name: str):
    from genretag.card import metrics

    return moved_module(__name__, name, (metrics,))
