"""The importable API, kept at its 0.1 address: the loaded `Model` is `genretag.store.load.Model`."""

from genretag.store.load import Model, load_model

__all__ = ["Model", "load_model"]
