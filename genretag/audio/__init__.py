"""Decoding, containers and walking folders: numpy, soundfile and PyAV only, never torch."""
