"""In-memory map database: keyframes, their descriptors, a faiss index and a KD-tree.

A ``MapDatabase`` holds, per keyframe, its pose in the map frame, optional GPS fix,
source, thumbnail and its L2-normalised global descriptor. It answers

* ``search``: top-k keyframes by cosine similarity, optionally only keyframes whose
  stamp is <= a time and not in an id list (loop-closure detection);
* ``radius_search``: keyframes within a metric radius (scipy cKDTree).

Per keyframe it may also hold local features (:class:`~.features.KeyframeFeatures`,
stored for the recognition layer's geometric verification), and per map a calibration
blob (a JSON dict the recognition layer defines).

On disk a map is a directory; see :mod:`netvlad_ros.mapdb.storage` and docs/mapdb.md.
Saving goes through an immutable :class:`~.snapshot.MapSnapshot` (taken under the lock,
written without it). All public methods take an internal lock, so one database can be
shared by threads.

Copy-on-write invariant (what lets a snapshot share the arrays instead of copying
them): rows ``[0, n)`` of the id/stamp/pose/descriptor arrays are never written once
filled. ``add`` writes only rows ``>= n`` (growing copies into new arrays), ``remove``
builds new arrays; stored features are read-only copies and are replaced, never edited.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import faiss
import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from . import index as ix
from . import storage
from .errors import MapModelMismatchError, UnknownKeyframeError
from .features import KeyframeFeatures, frozen_features
from .geodesy import EnuFrame
from .index import IndexConfig
from .snapshot import KeyframeMeta, MapSnapshot, canonical_calibration, read_only

#: Descriptors (and queries) must have an L2 norm within this of 1.
UNIT_NORM_TOL = 1e-3
#: Filtered searches on an approximate index switch to exact search over the eligible
#: keyframes when fewer than this fraction of the map is eligible.
EXACT_FILTER_FRACTION = 0.2


def _identity_quat() -> np.ndarray:
    return np.array([0.0, 0.0, 0.0, 1.0])


def _zeros3() -> np.ndarray:
    return np.zeros(3)


@dataclass(eq=False)
class Keyframe:
    """One map keyframe. ``id`` -1 means "assign one" (done by :meth:`MapDatabase.add`).

    position: (3,) metres in the map frame; orientation: (4,) unit quaternion x, y, z, w;
    latlonalt: optional WGS84 fix (deg, deg, m ellipsoidal); thumbnail: JPEG bytes.
    """

    id: int = -1
    stamp: float = 0.0
    frame_id: str = "map"
    position: np.ndarray = field(default_factory=_zeros3)
    orientation: np.ndarray = field(default_factory=_identity_quat)
    latlonalt: tuple[float, float, float] | None = None
    source: str = ""
    thumbnail: bytes | None = None

    def __post_init__(self) -> None:
        self.position = np.asarray(self.position, dtype=np.float64).reshape(-1)
        self.orientation = np.asarray(self.orientation, dtype=np.float64).reshape(-1)
        if self.latlonalt is not None:
            self.latlonalt = tuple(float(v) for v in self.latlonalt)  # type: ignore[assignment]

    def validate(self) -> None:
        """Raise ValueError naming the bad field."""
        if isinstance(self.id, bool) or not isinstance(self.id, (int, np.integer)) or self.id < -1:
            raise ValueError(f"Keyframe.id must be an int >= 0 (or -1 to assign), got {self.id!r}")
        if not math.isfinite(float(self.stamp)):
            raise ValueError(f"Keyframe.stamp must be finite seconds, got {self.stamp!r}")
        if not isinstance(self.frame_id, str):
            raise ValueError(f"Keyframe.frame_id must be a str, got {type(self.frame_id).__name__}")
        if self.position.shape != (3,) or not np.all(np.isfinite(self.position)):
            raise ValueError(f"Keyframe.position must be 3 finite metres, got {self.position!r}")
        q = self.orientation
        if q.shape != (4,) or not np.all(np.isfinite(q)) or abs(np.linalg.norm(q) - 1.0) > UNIT_NORM_TOL:
            raise ValueError(f"Keyframe.orientation must be a unit quaternion (x, y, z, w), got {q!r}")
        if self.latlonalt is not None:
            if len(self.latlonalt) != 3 or not all(math.isfinite(v) for v in self.latlonalt):
                raise ValueError(f"Keyframe.latlonalt must be 3 finite floats, got {self.latlonalt!r}")
            if abs(self.latlonalt[0]) > 90 or abs(self.latlonalt[1]) > 360:
                raise ValueError(f"Keyframe.latlonalt out of range (lat, lon deg): {self.latlonalt!r}")
        if not isinstance(self.source, str):
            raise ValueError(f"Keyframe.source must be a str, got {type(self.source).__name__}")
        if self.thumbnail is not None and (
            not isinstance(self.thumbnail, (bytes, bytearray)) or bytes(self.thumbnail[:2]) != b"\xff\xd8"
        ):
            raise ValueError("Keyframe.thumbnail must be JPEG bytes (starting with FF D8) or None")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Keyframe):
            return NotImplemented
        return (
            self.id == other.id
            and self.stamp == other.stamp
            and self.frame_id == other.frame_id
            and np.array_equal(self.position, other.position)
            and np.array_equal(self.orientation, other.orientation)
            and self.latlonalt == other.latlonalt
            and self.source == other.source
            and self.thumbnail == other.thumbnail
        )


@dataclass
class SearchResult:
    """Top-k results per query: ids (Q, k) int64 padded with -1, scores (Q, k) float32
    cosine similarities in descending order, padded with -inf."""

    ids: np.ndarray
    scores: np.ndarray


def _validate_descriptors(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    """(n, dim) float32 C-contiguous unit-norm rows, or ValueError naming ``what``."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(f"{what} must be floating point, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}) or ({dim},), got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contain NaN or inf")
    if x.shape[0]:
        norms = np.linalg.norm(x, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > UNIT_NORM_TOL)
        if bad.size:
            raise ValueError(
                f"{what} must be L2-normalised (|norm - 1| <= {UNIT_NORM_TOL}); row {bad[0]} has norm "
                f"{norms[bad[0]]:.6f} ({bad.size} bad rows)"
            )
    return x


def _check_rigid(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if t.shape != (4, 4) or not np.all(np.isfinite(t)):
        raise ValueError(f"transform must be a finite 4x4 matrix, got shape {t.shape}")
    r = t[:3, :3]
    if (
        not np.allclose(r @ r.T, np.eye(3), atol=1e-6)
        or np.linalg.det(r) < 0
        or not np.allclose(t[3], [0, 0, 0, 1])
    ):
        raise ValueError("transform must be rigid: orthonormal rotation with det +1 and last row [0 0 0 1]")
    return t


class MapDatabase:
    """Keyframes + descriptors + faiss index. Build with :meth:`create` or :meth:`load`."""

    def __init__(
        self,
        descriptor_dim: int,
        model_fingerprint: str,
        index_config: IndexConfig | None = None,
        *,
        _created_utc: str | None = None,
    ) -> None:
        if isinstance(descriptor_dim, bool) or not isinstance(descriptor_dim, (int, np.integer)):
            raise ValueError(f"descriptor_dim must be an int, got {descriptor_dim!r}")
        if descriptor_dim < 1:
            raise ValueError(f"descriptor_dim must be >= 1, got {descriptor_dim}")
        if not isinstance(model_fingerprint, str) or not model_fingerprint:
            raise ValueError("model_fingerprint must be a non-empty str")
        cfg = index_config if index_config is not None else IndexConfig()
        if not isinstance(cfg, IndexConfig):
            raise ValueError(f"index_config must be an IndexConfig, got {type(cfg).__name__}")
        if cfg.kind == "ivfpq":
            ix.auto_m(int(descriptor_dim), cfg.m)  # validates m divides D now, not at training
        self._dim = int(descriptor_dim)
        self._fingerprint = model_fingerprint
        self._cfg = cfg
        self._created = _created_utc or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._lock = threading.RLock()
        self._n = 0
        self._cap = 0
        self._ids = np.zeros(0, np.int64)
        self._stamps = np.zeros(0, np.float64)
        self._pos = np.zeros((0, 3), np.float64)
        self._ori = np.zeros((0, 4), np.float64)
        self._desc = np.zeros((0, self._dim), np.float32)
        self._meta: dict[int, KeyframeMeta] = {}
        self._feat: dict[int, KeyframeFeatures] = {}
        self._calibration: str | None = None  # canonical JSON
        self._next_id = 0
        self._origin: tuple[float, float, float] | None = None
        # Derived state (rebuilt lazily)
        self._index: faiss.Index | None = None
        self._trained_on = 0  # vectors the IVF-PQ index was trained on (0: untrained)
        self._index_stale = False  # HNSW after removal
        self._gpu_index: faiss.Index | None = None
        self._gpu_tried = False
        self._kdtree: cKDTree | None = None
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None
        if cfg.kind == "flat":
            self._index = ix.new_flat(self._dim)
        elif cfg.kind == "hnsw":
            self._index = ix.new_hnsw(self._dim, cfg)

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls, descriptor_dim: int, model_fingerprint: str, index_config: IndexConfig | None = None
    ) -> MapDatabase:
        """A new empty in-memory map (nothing is written until :meth:`save`)."""
        return cls(descriptor_dim, model_fingerprint, index_config)

    @classmethod
    def load(cls, path: str | Path, expected_model_fingerprint: str | None = None) -> MapDatabase:
        """Load and fully verify a map directory (see :func:`storage.load`).

        A schema-1 map raises MapSchemaError naming ``netvlad-ros migrate-map PATH``.
        """
        return cls._from_snapshot(storage.load(path, expected_model_fingerprint), own_index=True)

    def save(self, path: str | Path) -> None:
        """Atomically write the map directory ``path`` (see :func:`storage.save_snapshot`).

        Applies the index training rule (:meth:`prepare_index_for_save`) and takes a
        snapshot under the lock, then writes without it: other threads can search and
        add while the files are written; keyframes added meanwhile are not in this save.
        """
        with self._lock:
            self._prepare_index_for_save()
            snap = self.snapshot()
        storage.save_snapshot(snap, path)

    def snapshot(self) -> MapSnapshot:
        """An immutable copy of the map's state for :func:`storage.save_snapshot`.

        Cheap: the arrays are shared read-only views (copy-on-write invariant in the
        module docstring), per-keyframe dicts are shallow copies; only an IVF-PQ or HNSW
        index is copied (``faiss.clone_index``); a flat index is rebuilt from the
        descriptors by storage instead. Costs are measured in docs/mapdb.md. Does not
        apply the IVF-PQ training rule (call :meth:`prepare_index_for_save` first).
        """
        with self._lock:
            n = self._n
            index: faiss.Index | None = None
            kind = self._cfg.kind
            if self._index is not None and (kind == "ivfpq" or (kind == "hnsw" and not self._index_stale)):
                index = faiss.clone_index(self._index)
            return MapSnapshot(
                descriptor_dim=self._dim,
                model_fingerprint=self._fingerprint,
                index_config=self._cfg,
                created_utc=self._created,
                next_id=self._next_id,
                origin=self._origin,
                ids=read_only(self._ids[:n]),
                stamps=read_only(self._stamps[:n]),
                positions=read_only(self._pos[:n]),
                orientations=read_only(self._ori[:n]),
                descriptors=read_only(self._desc[:n]),
                meta=MappingProxyType(dict(self._meta)),
                features=MappingProxyType(dict(self._feat)),
                index=index,
                index_trained_on=self._trained_on if index is not None else 0,
                calibration_json=self._calibration,
            )

    @classmethod
    def from_snapshot(cls, snapshot: MapSnapshot) -> MapDatabase:
        """A database holding ``snapshot``'s content (shares its arrays, copies its index)."""
        return cls._from_snapshot(snapshot, own_index=False)

    @classmethod
    def _from_snapshot(cls, snap: MapSnapshot, own_index: bool) -> MapDatabase:
        """``own_index``: the snapshot is private to the caller (load), so its index is
        adopted rather than copied."""
        if not isinstance(snap, MapSnapshot):
            raise ValueError(f"from_snapshot() needs a MapSnapshot, got {type(snap).__name__}")
        n = len(snap)
        shapes = {
            "stamps": (snap.stamps.shape, (n,)),
            "positions": (snap.positions.shape, (n, 3)),
            "orientations": (snap.orientations.shape, (n, 4)),
            "descriptors": (snap.descriptors.shape, (n, snap.descriptor_dim)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise ValueError(f"snapshot {name} has shape {got}, expected {want}")
        if len(snap.meta) != n:
            raise ValueError(f"snapshot has {n} keyframes but metadata for {len(snap.meta)}")
        db = cls(
            snap.descriptor_dim, snap.model_fingerprint, snap.index_config, _created_utc=snap.created_utc
        )
        # read-only arrays: any in-place write would raise, which guards the invariant
        db._ids, db._stamps, db._pos = read_only(snap.ids), read_only(snap.stamps), read_only(snap.positions)
        db._ori, db._desc = read_only(snap.orientations), read_only(snap.descriptors)
        db._n = db._cap = n
        db._meta = dict(snap.meta)
        db._feat = dict(snap.features)
        db._calibration = snap.calibration_json
        db._next_id = snap.next_id
        db._origin = snap.origin
        kind = snap.index_config.kind
        if snap.index is not None:
            index = snap.index if own_index else faiss.clone_index(snap.index)
            if isinstance(index, faiss.IndexIVFPQ):
                index.nprobe = snap.index_config.nprobe
                db._trained_on = snap.index_trained_on
            db._index = index
        elif kind == "flat":
            db._index = ix.new_flat(db._dim)
            if n:
                db._index.add_with_ids(db._desc, db._ids)
        elif kind == "hnsw":
            db._index_stale = True  # rebuilt from the descriptors before the next search
        else:
            db._index, db._trained_on = None, 0  # untrained IVF-PQ: exact search until trained
        return db

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return self._n

    @property
    def descriptor_dim(self) -> int:
        """Descriptor dimension D."""
        return self._dim

    @property
    def model_fingerprint(self) -> str:
        """Opaque string identifying the model whose descriptors the map holds."""
        return self._fingerprint

    @property
    def index_config(self) -> IndexConfig:
        """The index configuration."""
        return self._cfg

    @property
    def created_utc(self) -> str:
        """Creation time of the map (ISO 8601, UTC)."""
        return self._created

    @property
    def next_id(self) -> int:
        """The id the next auto-numbered keyframe gets (ids are never reused)."""
        return self._next_id

    @property
    def ids(self) -> np.ndarray:
        """All keyframe ids (int64 copy), in storage order."""
        with self._lock:
            return self._ids[: self._n].copy()

    @property
    def origin(self) -> tuple[float, float, float] | None:
        """WGS84 origin (lat, lon, alt) of the map's ENU frame, or None without GPS."""
        return self._origin

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The calibration blob (a fresh dict each call), or None when not calibrated.

        The recognition layer defines its content. The map only stores it: adding,
        removing or merging keyframes does not invalidate it; callers recompute it.
        """
        with self._lock:
            return None if self._calibration is None else json.loads(self._calibration)

    def set_calibration(self, calibration: dict[str, Any] | None) -> None:
        """Store (or with None clear) the calibration blob: a dict that survives a JSON
        round trip unchanged (ValueError otherwise). Stored as a copy."""
        text = canonical_calibration(calibration)
        with self._lock:
            self._calibration = text

    def set_origin(self, lat: float, lon: float, alt: float) -> None:
        """Declare that the map frame is ENU (x east, y north, z up) about this WGS84 point.

        Existing keyframe positions are not moved.
        """
        frame = EnuFrame(float(lat), float(lon), float(alt))  # validates
        with self._lock:
            self._origin = (frame.lat, frame.lon, frame.alt)

    def geo_to_local(self, lat: float, lon: float, alt: float) -> np.ndarray:
        """WGS84 fix -> (3,) metres in the map frame (ENU about :attr:`origin`)."""
        if self._origin is None:
            raise ValueError("map has no GPS origin; call set_origin(lat, lon, alt) first")
        return np.asarray(EnuFrame(*self._origin).to_local(lat, lon, alt), dtype=np.float64).reshape(3)

    # ------------------------------------------------------------------ row helpers
    def _rows(self, ids: Iterable[int] | np.ndarray | int) -> np.ndarray:
        """Storage rows of ``ids``; UnknownKeyframeError for an unknown id."""
        arr = np.asarray(ids)
        if arr.dtype.kind not in "iu" and not (arr.dtype == object and arr.size == 0) and arr.size:
            raise ValueError(f"keyframe ids must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64).reshape(-1)
        if self._sorted is None:
            order = np.argsort(self._ids[: self._n], kind="stable")
            self._sorted = (self._ids[: self._n][order], order)
        sid, order = self._sorted
        pos = np.searchsorted(sid, arr)
        pos_c = np.minimum(pos, max(len(sid) - 1, 0))
        ok = (pos < len(sid)) & (sid[pos_c] == arr) if len(sid) else np.zeros(arr.shape, bool)
        if not np.all(ok):
            missing = arr[~ok]
            raise UnknownKeyframeError(
                f"unknown keyframe id(s) {missing[:10].tolist()}{' ...' if missing.size > 10 else ''}"
            )
        return order[pos_c]

    def _ensure_capacity(self, extra: int) -> None:
        need = self._n + extra
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap, 64)

        def grow(a: np.ndarray) -> np.ndarray:
            b = np.empty((cap, *a.shape[1:]), a.dtype)
            b[: self._n] = a[: self._n]
            return b

        self._ids, self._stamps = grow(self._ids), grow(self._stamps)
        self._pos, self._ori, self._desc = grow(self._pos), grow(self._ori), grow(self._desc)
        self._cap = cap

    def _changed(self) -> None:
        self._kdtree = None
        self._sorted = None
        self._gpu_index = None
        self._gpu_tried = False

    # ------------------------------------------------------------------ mutation
    def add(
        self,
        keyframes: Sequence[Keyframe],
        descriptors: np.ndarray,
        features: Sequence[KeyframeFeatures | None] | None = None,
    ) -> np.ndarray:
        """Add keyframes with their unit-norm descriptors (n, D); returns their int64 ids.

        Keyframes with id -1 get fresh ids; explicit ids must be new. The input objects are
        not modified. Descriptors must already be L2-normalised (the extractor does it).
        ``features``: local features aligned with ``keyframes`` (entries may be None);
        validated, and stored as read-only copies. Nothing is added when any input is bad.
        """
        kfs = list(keyframes)
        feats = self._check_features(features, len(kfs))
        for i, kf in enumerate(kfs):
            if not isinstance(kf, Keyframe):
                raise ValueError(f"keyframes[{i}] must be a Keyframe, got {type(kf).__name__}")
            try:
                kf.validate()
            except ValueError as exc:
                raise ValueError(f"keyframes[{i}]: {exc}") from None
        desc = _validate_descriptors(descriptors, self._dim, "descriptors")
        if desc.shape[0] != len(kfs):
            raise ValueError(f"got {len(kfs)} keyframes but {desc.shape[0]} descriptor rows")
        if not kfs:
            return np.zeros(0, np.int64)
        with self._lock:
            given = np.array([kf.id for kf in kfs if kf.id != -1], dtype=np.int64)
            if given.size:
                if np.unique(given).size != given.size:
                    raise ValueError("duplicate keyframe ids in one add() call")
                existing = np.isin(given, self._ids[: self._n])
                if existing.any():
                    raise ValueError(f"keyframe ids already in the map: {given[existing][:10].tolist()}")
            next_id = max(self._next_id, int(given.max()) + 1 if given.size else 0)
            new_ids = np.empty(len(kfs), np.int64)
            for i, kf in enumerate(kfs):
                if kf.id == -1:
                    new_ids[i] = next_id
                    next_id += 1
                else:
                    new_ids[i] = int(kf.id)
            n0, n1 = self._n, self._n + len(kfs)
            self._ensure_capacity(len(kfs))
            self._ids[n0:n1] = new_ids
            self._stamps[n0:n1] = [float(kf.stamp) for kf in kfs]
            self._pos[n0:n1] = [kf.position for kf in kfs]
            ori = np.array([kf.orientation for kf in kfs]).reshape(-1, 4)
            self._ori[n0:n1] = ori / np.linalg.norm(ori, axis=1, keepdims=True)
            self._desc[n0:n1] = desc
            for i, kf in enumerate(kfs):
                thumb = bytes(kf.thumbnail) if kf.thumbnail is not None else None
                self._meta[int(new_ids[i])] = KeyframeMeta(kf.frame_id, kf.latlonalt, kf.source, thumb)
                f = feats[i]
                if f is not None:
                    self._feat[int(new_ids[i])] = f
            self._n = n1
            self._next_id = next_id
            self._changed()
            self._index_add(desc, new_ids)
            return new_ids.copy()

    @staticmethod
    def _check_features(
        features: Sequence[KeyframeFeatures | None] | None, n: int
    ) -> list[KeyframeFeatures | None]:
        if features is None:
            return [None] * n
        feats = list(features)
        if len(feats) != n:
            raise ValueError(f"got {n} keyframes but {len(feats)} feature entries")
        out: list[KeyframeFeatures | None] = []
        for i, f in enumerate(feats):
            if f is None:
                out.append(None)
                continue
            if not isinstance(f, KeyframeFeatures):
                raise ValueError(f"features[{i}] must be KeyframeFeatures or None, got {type(f).__name__}")
            try:
                out.append(frozen_features(f))
            except ValueError as exc:
                raise ValueError(f"features[{i}]: {exc}") from None
        return out

    def _index_add(self, desc: np.ndarray, ids: np.ndarray) -> None:
        if not len(ids):
            return
        if self._cfg.kind == "ivfpq":
            if self._index is None:
                if self._n >= ix.ivfpq_min_train(self._cfg):
                    self._train_ivfpq()
                return
            self._index.add_with_ids(desc, ids)
        elif self._cfg.kind == "hnsw" and self._index_stale:
            return  # rebuilt from the stored descriptors before the next search
        else:
            assert self._index is not None  # flat and HNSW always have one
            self._index.add_with_ids(desc, ids)

    def _train_ivfpq(self) -> None:
        """(Re)train IVF-PQ on every stored descriptor and add them all."""
        desc = self._desc[: self._n]
        index = ix.train_ivfpq(desc, self._cfg)
        index.add_with_ids(desc, self._ids[: self._n])
        self._index = index
        self._trained_on = self._n
        self._gpu_index = None
        self._gpu_tried = False

    def _rebuild_hnsw(self) -> None:
        index = ix.new_hnsw(self._dim, self._cfg)
        if self._n:
            index.add_with_ids(self._desc[: self._n], self._ids[: self._n])
        self._index = index
        self._index_stale = False

    def prepare_index_for_save(self) -> None:
        """The training rule at save time: IVF-PQ is (re)trained when it is untrained but
        has enough vectors, or when the map has doubled since it was trained (seconds at
        10^4 x 4096-D, under the lock). :meth:`save` calls it; callers that save a
        :meth:`snapshot` themselves call it first when they want the rule. Other index
        kinds: nothing to do (a stale HNSW graph is rebuilt by storage from the snapshot)."""
        with self._lock:
            self._prepare_index_for_save()

    def _prepare_index_for_save(self) -> None:
        if self._cfg.kind == "ivfpq":
            untrained_ready = self._index is None and self._n >= ix.ivfpq_min_train(self._cfg)
            doubled = self._index is not None and self._n >= 2 * self._trained_on
            if untrained_ready or doubled:
                self._train_ivfpq()

    def rebuild_index(self) -> None:
        """Rebuild (and retrain when approximate) the index from the stored descriptors."""
        with self._lock:
            if self._cfg.kind == "ivfpq":
                if self._n >= ix.ivfpq_min_train(self._cfg):
                    self._train_ivfpq()
                else:
                    self._index, self._trained_on = None, 0
            elif self._cfg.kind == "hnsw":
                self._rebuild_hnsw()
            else:
                self._index = ix.new_flat(self._dim)
                if self._n:
                    self._index.add_with_ids(self._desc[: self._n], self._ids[: self._n])
            self._changed()

    def remove(self, ids: Iterable[int] | np.ndarray) -> None:
        """Remove keyframes by id (unknown ids raise UnknownKeyframeError, nothing removed)."""
        with self._lock:
            arr = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, np.int64))
            if not arr.size:
                return
            rows = self._rows(arr)
            keep = np.ones(self._n, bool)
            keep[rows] = False
            m = int(keep.sum())
            # new arrays, never compaction in place: snapshots may share the old ones
            n = self._n
            self._ids, self._stamps = self._ids[:n][keep], self._stamps[:n][keep]
            self._pos, self._ori, self._desc = self._pos[:n][keep], self._ori[:n][keep], self._desc[:n][keep]
            self._n = self._cap = m
            for i in arr.tolist():
                del self._meta[i]
                self._feat.pop(i, None)
            if self._index is not None:
                if self._cfg.kind == "hnsw":
                    self._index_stale = True
                else:
                    removed = self._index.remove_ids(faiss.IDSelectorBatch(arr))
                    if removed != arr.size:  # pragma: no cover - would be a bug
                        raise RuntimeError(f"index removed {removed} of {arr.size} vectors")
            self._changed()

    def merge(self, other: MapDatabase, transform: np.ndarray | None = None) -> dict[int, int]:
        """Append another session's map; returns {other_id: new_id}.

        Requires the same model fingerprint and descriptor dimension
        (MapModelMismatchError otherwise). Every keyframe gets a new id. Poses are mapped
        into this map's frame by ``transform`` (4x4 rigid, other frame -> this frame) when
        given; otherwise, when both maps have GPS origins, by the exact ENU-to-ENU transform
        between the origins; otherwise they are taken as already in this frame. When this
        map is empty and has no origin it adopts the other's origin.
        """
        if not isinstance(other, MapDatabase):
            raise ValueError(f"merge() needs a MapDatabase, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge a map into itself")
        if other.model_fingerprint != self._fingerprint or other.descriptor_dim != self._dim:
            raise MapModelMismatchError(
                f"cannot merge maps from different models: this map has fingerprint "
                f"{self._fingerprint!r} (dim {self._dim}), the other {other.model_fingerprint!r} "
                f"(dim {other.descriptor_dim})"
            )
        t = _check_rigid(transform) if transform is not None else None
        with self._lock, other._lock:
            if t is None and self._origin is not None and other.origin is not None:
                t = EnuFrame(*other.origin).transform_to(EnuFrame(*self._origin))
            n = len(other)
            src_ids = other._ids[:n].copy()
            pos = other._pos[:n].copy()
            ori = other._ori[:n].copy()
            if t is not None and n:
                pos = pos @ t[:3, :3].T + t[:3, 3]
                ori = (Rotation.from_matrix(t[:3, :3]) * Rotation.from_quat(ori)).as_quat()
            kfs = []
            for i, oid in enumerate(src_ids.tolist()):
                frame_id, lla, source, thumb = other._meta[oid]
                kfs.append(
                    Keyframe(-1, float(other._stamps[i]), frame_id, pos[i], ori[i], lla, source, thumb)
                )
            feats = [other._feat.get(oid) for oid in src_ids.tolist()]
            if self._origin is None and self._n == 0 and other.origin is not None:
                self._origin = other.origin
            new_ids = self.add(kfs, other._desc[:n], feats) if n else np.zeros(0, np.int64)
            return dict(zip(src_ids.tolist(), new_ids.tolist(), strict=True))

    # ------------------------------------------------------------------ accessors
    def keyframe(self, id: int) -> Keyframe:
        """The keyframe with this id (a copy)."""
        with self._lock:
            r = int(self._rows([id])[0])
            kid = int(self._ids[r])
            frame_id, lla, source, thumb = self._meta[kid]
            return Keyframe(
                kid,
                float(self._stamps[r]),
                frame_id,
                self._pos[r].copy(),
                self._ori[r].copy(),
                lla,
                source,
                thumb,
            )

    def features(self, id: int) -> KeyframeFeatures | None:
        """The keyframe's local features (read-only arrays), or None when it has none
        (e.g. a map migrated from schema 1, or built without features)."""
        with self._lock:
            kid = int(self._ids[int(self._rows([id])[0])])
            return self._feat.get(kid)

    def has_features(self, id: int) -> bool:
        """Whether the keyframe has local features (UnknownKeyframeError for an unknown id)."""
        return self.features(id) is not None

    def set_features(self, id: int, features: KeyframeFeatures | None) -> None:
        """Attach (replace, or with None remove) a keyframe's local features."""
        feats = self._check_features([features], 1)[0]
        with self._lock:
            kid = int(self._ids[int(self._rows([id])[0])])
            if feats is None:
                self._feat.pop(kid, None)
            else:
                self._feat[kid] = feats

    def count_with_features(self) -> int:
        """How many keyframes have local features (0 for a migrated schema-1 map)."""
        with self._lock:
            return len(self._feat)

    def positions(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """(n, 3) float64 positions of ``ids`` in the map frame."""
        with self._lock:
            out: np.ndarray = self._pos[self._rows(ids)]
            return out

    def orientations(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """(n, 4) float64 unit quaternions (x, y, z, w) of ``ids``."""
        with self._lock:
            out: np.ndarray = self._ori[self._rows(ids)]
            return out

    def stamps(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """(n,) float64 stamps (seconds) of ``ids``."""
        with self._lock:
            out: np.ndarray = self._stamps[self._rows(ids)]
            return out

    def descriptors(self, ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """(n, D) float32 descriptors of ``ids``."""
        with self._lock:
            out: np.ndarray = self._desc[self._rows(ids)]
            return out

    # ------------------------------------------------------------------ search
    def radius_search(self, position: np.ndarray, radius_m: float) -> np.ndarray:
        """Ids (int64, ascending) of keyframes within ``radius_m`` metres (inclusive)."""
        p = np.asarray(position, np.float64).reshape(-1)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise ValueError(f"position must be 3 finite metres, got {position!r}")
        if not math.isfinite(radius_m) or radius_m < 0:
            raise ValueError(f"radius_m must be a finite non-negative number, got {radius_m!r}")
        with self._lock:
            if self._n == 0:
                return np.zeros(0, np.int64)
            if self._kdtree is None:
                self._kdtree = cKDTree(self._pos[: self._n].copy())
            rows = self._kdtree.query_ball_point(p, r=float(radius_m))
            return np.sort(self._ids[np.asarray(rows, dtype=np.int64)])

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude_newer_than: float | None = None,
        exclude_ids: Iterable[int] | np.ndarray | None = None,
    ) -> SearchResult:
        """Top-k keyframes by cosine similarity for unit-norm queries (Q, D) or (D,).

        ``exclude_newer_than``: only keyframes with stamp <= this time are candidates.
        ``exclude_ids``: keyframe ids that are never returned (unknown ids are ignored).
        Fewer than k candidates -> rows padded with id -1 and score -inf.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        k = int(k)
        q = _validate_descriptors(queries, self._dim, "queries")
        if exclude_newer_than is not None and math.isnan(float(exclude_newer_than)):
            raise ValueError("exclude_newer_than must not be NaN")
        nq = q.shape[0]
        out_ids = np.full((nq, k), -1, np.int64)
        out_sc = np.full((nq, k), -np.inf, np.float32)
        with self._lock:
            n = self._n
            mask = None
            if exclude_newer_than is not None:
                mask = self._stamps[:n] <= float(exclude_newer_than)
            if exclude_ids is not None:
                ex = np.asarray(list(exclude_ids) if not isinstance(exclude_ids, np.ndarray) else exclude_ids)
                if ex.size:
                    m2 = ~np.isin(self._ids[:n], ex.astype(np.int64))
                    mask = m2 if mask is None else mask & m2
            n_elig = n if mask is None else int(mask.sum())
            if n_elig == 0 or nq == 0:
                return SearchResult(out_ids, out_sc)
            kk = min(k, n_elig)
            index = self._search_index()
            with ix.threads_for_queries(nq):
                if index is None or (
                    mask is not None and self._cfg.approximate and n_elig < EXACT_FILTER_FRACTION * n
                ):
                    ids, sc = self._exact(q, kk, mask)
                else:
                    ids, sc = self._index_search(index, q, kk, mask)
                    short = np.flatnonzero((ids[:, :kk] < 0).any(axis=1))
                    if short.size:  # approximate index found too few eligible: exact for those rows
                        ids[short], sc[short] = self._exact(q[short], kk, mask)
            out_ids[:, :kk] = ids[:, :kk]
            out_sc[:, :kk] = sc[:, :kk]
            return SearchResult(out_ids, out_sc)

    def _search_index(self) -> faiss.Index | None:
        """The faiss index to search, or None when exact search over rows must be used."""
        if self._cfg.kind == "hnsw" and self._index_stale:
            self._rebuild_hnsw()
        return self._index

    def _exact(self, q: np.ndarray, kk: int, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-kk over the eligible rows (faiss brute force, blocked)."""
        n = self._n
        if mask is None:
            base, rows = self._desc[:n], None
        else:
            rows = np.flatnonzero(mask)
            base = self._desc[rows]
        sc, idx = faiss.knn(q, base, kk, metric=faiss.METRIC_INNER_PRODUCT)
        if rows is not None:
            idx = rows[idx]
        return self._ids[idx], sc.astype(np.float32)

    def _selector(self, mask: np.ndarray) -> tuple[faiss.IDSelector, object]:
        """faiss selector accepting the eligible ids (plus the buffer it points to)."""
        ids = self._ids[: self._n][mask]
        max_id = int(self._ids[: self._n].max())
        if max_id < 64 * self._n + 1_000_000:  # dense ids: bitmap over the id space
            bits = np.zeros(max_id + 1, bool)
            bits[ids] = True
            packed = np.packbits(bits, bitorder="little")
            return faiss.IDSelectorBitmap(max_id + 1, faiss.swig_ptr(packed)), packed
        return faiss.IDSelectorBatch(ids), ids

    def _index_search(
        self, index: faiss.Index, q: np.ndarray, kk: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        cfg = self._cfg
        fetch = max(kk, cfg.rerank) if cfg.approximate else kk
        fetch = min(fetch, self._n)
        keep_alive = None
        params: Any
        if cfg.kind == "ivfpq":
            params = faiss.SearchParametersIVF()
            params.nprobe = cfg.nprobe
        elif cfg.kind == "hnsw":
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from faiss's stubs
            params.efSearch = max(cfg.ef_search, fetch)
        else:
            params = faiss.SearchParameters()
        if mask is not None:
            sel, keep_alive = self._selector(mask)
            params.sel = sel
        target = index
        if mask is None and cfg.kind != "hnsw" and cfg.use_gpu:
            target = self._gpu() or index
        if target is index:
            sc, ids = index.search(q, fetch, params=params)
        else:  # GPU clones take no CPU search parameters; nprobe is set on the clone
            sc, ids = target.search(q, fetch)
        del keep_alive
        if cfg.approximate and cfg.rerank:
            sc, ids = self._rerank(q, ids)
        return ids[:, :kk], sc[:, :kk].astype(np.float32)

    def _rerank(self, q: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Re-score candidate ids exactly with the stored descriptors; sort descending."""
        valid = cand >= 0
        safe = np.where(valid, cand, self._ids[0])
        rows = self._rows(safe.reshape(-1)).reshape(cand.shape)
        sc = np.einsum("qd,qcd->qc", q, self._desc[rows], optimize=True).astype(np.float32)
        sc[~valid] = -np.inf
        order = np.argsort(-sc, axis=1, kind="stable")
        ids = np.take_along_axis(np.where(valid, cand, -1), order, axis=1)
        return np.take_along_axis(sc, order, axis=1), ids

    def _gpu(self) -> faiss.Index | None:
        if not self._gpu_tried:
            self._gpu_tried = True
            if ix.gpu_available() and self._index is not None:
                self._gpu_index = ix.to_gpu(self._index)
                if self._gpu_index is not None and self._cfg.kind == "ivfpq":
                    faiss.GpuParameterSpace().set_index_parameter(self._gpu_index, "nprobe", self._cfg.nprobe)
        return self._gpu_index
