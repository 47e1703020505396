"""Kept for scripts written against earlier releases: `genretag.pipeline.prepare` is the module."""

from genretag.pipeline.prepare import Prepared, prepare_file, prepare_waveform  # noqa: F401
