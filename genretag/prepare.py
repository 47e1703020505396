"""Deprecated: genretag 0.1's address of decoding. `genretag.pipeline.prepare` is the module.

`Prepared`, `prepare_file` and `prepare_waveform` still work here, with a DeprecationWarning; the
module goes in genretag 0.4.0.
"""

from __future__ import annotations

from genretag.deprecation import moved_module


def __getattr__(name: str):
    from genretag.pipeline import prepare

    names = ("Prepared", "prepare_file", "prepare_waveform")
    return moved_module(__name__, name, (prepare,) if name in names else ())
