"""Kept for scripts written against earlier releases: `genretag.pipeline.inference` is the module."""

from genretag.pipeline.inference import TrackResult, classify, run_model  # noqa: F401
