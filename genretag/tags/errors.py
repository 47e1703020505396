"""The tag stack's errors (under `genretag.errors.TagError`): each one line for the user."""

from __future__ import annotations

from genretag.errors import TagError

__all__ = ["ChangedSinceClassified", "DamagedTagError", "TagError"]


class DamagedTagError(TagError):
    """A tag that cannot be read completely: writing it back could lose what was not read."""


class ChangedSinceClassified(TagError):
    """The audio at write time is not the audio that was classified."""
