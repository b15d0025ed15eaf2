"""Map database for visual place recognition: keyframes, descriptors, faiss index.

Public API: :class:`MapDatabase`, :class:`Keyframe`, :class:`SearchResult`,
:class:`IndexConfig`, the errors in :mod:`.errors` and ENU geodesy in :mod:`.geodesy`.
The on-disk format and the atomic save protocol are described in docs/mapdb.md.
"""

from .database import Keyframe, MapDatabase, SearchResult
from .errors import (
    MapCorruptError,
    MapError,
    MapModelMismatchError,
    MapNotFoundError,
    MapSchemaError,
    UnknownKeyframeError,
)
from .geodesy import EnuFrame, enu_to_geodetic, geodetic_to_enu
from .index import IndexConfig
from .storage import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "EnuFrame",
    "IndexConfig",
    "Keyframe",
    "MapCorruptError",
    "MapDatabase",
    "MapError",
    "MapModelMismatchError",
    "MapNotFoundError",
    "MapSchemaError",
    "SearchResult",
    "UnknownKeyframeError",
    "enu_to_geodetic",
    "geodetic_to_enu",
]
