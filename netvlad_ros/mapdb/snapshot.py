"""``MapSnapshot``: an immutable copy of everything needed to write (or rebuild) a map.

This is the interface between the in-memory database and the on-disk format:
``MapDatabase.snapshot()`` makes one (quickly, under the database's lock),
``storage.save_snapshot`` writes one without any database lock held,
``storage.load`` returns one and ``MapDatabase.from_snapshot`` builds a database from
one. Storage therefore never sees a ``MapDatabase`` (no private field access, no
import cycle).

Copy-on-write: the arrays of a snapshot are read-only views that may share memory with
the database it came from. That is safe because the database never writes a row it has
already filled: ``add`` writes only rows past the current count (growing allocates new
arrays), and ``remove`` builds new arrays instead of compacting in place. The faiss
index of a snapshot, when present, is the snapshot's own copy (see ``index``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import faiss
import numpy as np

from .features import KeyframeFeatures
from .index import IndexConfig


class KeyframeMeta(NamedTuple):
    """Per-keyframe fields besides the pose arrays (immutable)."""

    frame_id: str
    latlonalt: tuple[float, float, float] | None
    source: str
    thumbnail: bytes | None


@dataclass(frozen=True, eq=False)
class MapSnapshot:
    """Immutable, self-contained state of a map.

    Row i of ``ids``, ``stamps`` (N,) float64, ``positions`` (N, 3) float64,
    ``orientations`` (N, 4) float64 (x, y, z, w) and ``descriptors`` (N, D) float32
    belongs to the same keyframe; rows are in the database's storage order (ascending
    ids after a load). Arrays are read-only. ``meta`` and ``features`` are keyed by id
    (``features`` holds only keyframes that have local features); both are read-only
    mappings.

    ``index``: a faiss index that belongs to this snapshot alone (nothing mutates it), or
    None when it is derived from the descriptors instead: always for a database's
    ``flat`` index (rebuilding it is cheaper than copying it), for an HNSW graph that is
    stale after a removal, and for an IVF-PQ index that is not trained yet.
    ``index_trained_on``: vectors the IVF-PQ index was trained on (0 otherwise).
    ``calibration_json``: the calibration blob as canonical JSON, or None.
    """

    descriptor_dim: int
    model_fingerprint: str
    index_config: IndexConfig
    created_utc: str
    next_id: int
    origin: tuple[float, float, float] | None
    ids: np.ndarray
    stamps: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray
    descriptors: np.ndarray
    meta: Mapping[int, KeyframeMeta]
    features: Mapping[int, KeyframeFeatures]
    index: faiss.Index | None
    index_trained_on: int
    calibration_json: str | None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The calibration blob (a fresh dict each call), or None."""
        return None if self.calibration_json is None else json.loads(self.calibration_json)

    def order_by_id(self) -> np.ndarray:
        """Row order that sorts the keyframes by ascending id."""
        return np.argsort(self.ids, kind="stable")


def read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (``a`` itself stays writable)."""
    v = a.view()
    v.flags.writeable = False
    return v


def canonical_calibration(calibration: Any) -> str | None:
    """Validate a calibration blob and return its canonical JSON (None stays None).

    It must be a dict that survives a JSON round trip unchanged (str keys, lists not
    tuples, finite numbers), so what ``load`` returns equals what was stored.
    """
    if calibration is None:
        return None
    if not isinstance(calibration, dict):
        raise ValueError(f"calibration must be a dict or None, got {type(calibration).__name__}")
    try:
        text = json.dumps(calibration, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"calibration must be JSON-serialisable (finite numbers, str keys): {exc}") from None
    if json.loads(text) != calibration:
        raise ValueError(
            "calibration must survive a JSON round trip unchanged (use str keys and lists, not tuples)"
        )
    return text
