"""Map database for visual place recognition: keyframes, descriptors, faiss index.

Public API: :class:`MapDatabase`, :class:`Keyframe`, :class:`SearchResult`,
:class:`IndexConfig`, local features per keyframe (:class:`KeyframeFeatures`,
:class:`CameraIntrinsics`), the save/restore interface (:class:`MapSnapshot`,
:func:`save_snapshot`, :func:`load_snapshot`), schema migration (:func:`migrate`), the
errors in :mod:`.errors` and ENU geodesy in :mod:`.geodesy`. The on-disk format and the
atomic save protocol are described in docs/mapdb.md.
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
from .features import CameraIntrinsics, KeyframeFeatures
from .geodesy import EnuFrame, enu_to_geodetic, geodetic_to_enu
from .index import IndexConfig
from .migration import MigrationReport, migrate
from .snapshot import MapSnapshot
from .storage import SCHEMA_VERSION, save_snapshot
from .storage import load as load_snapshot

__all__ = [
    "SCHEMA_VERSION",
    "CameraIntrinsics",
    "EnuFrame",
    "IndexConfig",
    "Keyframe",
    "KeyframeFeatures",
    "MapCorruptError",
    "MapDatabase",
    "MapError",
    "MapModelMismatchError",
    "MapNotFoundError",
    "MapSchemaError",
    "MapSnapshot",
    "MigrationReport",
    "SearchResult",
    "UnknownKeyframeError",
    "enu_to_geodetic",
    "geodetic_to_enu",
    "load_snapshot",
    "migrate",
    "save_snapshot",
]
