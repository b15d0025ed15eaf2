"""Exceptions raised by the map database.

Every error is a :class:`MapError`, itself a :class:`ValueError`, so callers that only
care about "this map cannot be used" catch one class, while tests and tools can tell a
missing map from a corrupt one, an old schema, or a map built with another model.
"""

from __future__ import annotations


class MapError(ValueError):
    """Base class of every map database error."""


class MapNotFoundError(MapError):
    """The map directory (or its manifest) does not exist."""


class MapCorruptError(MapError):
    """A map file is missing, truncated, garbled or inconsistent; the message names the file."""


class MapSchemaError(MapError):
    """The manifest declares a schema version this code does not read."""


class MapModelMismatchError(MapError):
    """The map's descriptors come from a different model (fingerprint or dimension differ)."""


class UnknownKeyframeError(MapError, KeyError):
    """A keyframe id that the map does not hold (also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""
