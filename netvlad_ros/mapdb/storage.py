"""Map directory format (schema 2), atomic save and verified load of a :class:`MapSnapshot`.

Storage knows only the snapshot type (``snapshot.py``), never the database: the
database takes a snapshot under its lock and this module writes it without any lock of
the database held. A map is a directory holding (see docs/mapdb.md for every field):

* ``keyframes.sqlite``: tables ``keyframes`` and ``metadata`` (key/value);
* ``descriptors.npy``: float32 (N, D); row i belongs to the i-th smallest keyframe id;
* ``index.faiss``: the faiss index (faiss.write_index), ids = keyframe ids;
* ``features_index.npy``: int64 (K, 9) table, one row per keyframe with local features
  (columns in ``FEATURE_COLUMNS``); ``feature_keypoints.npy`` float32 (M, 2),
  ``feature_descriptors.npy`` uint8 (B,), ``feature_depths.npy`` float32 (M,): the
  keyframes' features concatenated in table order (schema 2);
* ``manifest.json``: schema version, model fingerprint, dims, index configuration,
  counts, times, GPS origin, cameras, calibration, SHA-256 and size of every file, and
  a SHA-256 of the manifest itself (``manifest_sha256``, over the canonical JSON
  without that key).

Atomic save protocol (``save_snapshot``), for a target ``<parent>/<name>``:

1. take an exclusive ``flock`` on ``<parent>/.<name>.lock``; run recovery (below);
2. write every file into a fresh ``<parent>/.<name>.tmp-<pid>-<random>`` directory,
   ``manifest.json`` last; fsync each file and the directory;
3. if the target exists, ``rename(target, <parent>/.<name>.old)``; fsync parent;
4. ``rename(tmp, target)``; fsync parent;
5. delete ``.<name>.old``.

Each rename is atomic, so a crash leaves one of: target = old map (before 3);
target missing and ``.old`` = old map (between 3 and 4); target = new map (after 4),
maybe with a partial ``.old``. Recovery (run by both load and save, under the lock):
target missing and ``.old`` present -> rename ``.old`` back to the target (the old map);
both present -> delete ``.old``. Left-over ``.tmp-*`` directories are never read; save
deletes those whose writer process is gone. A map in a read-only location is loaded
without the lock or recovery (``.old`` is read in place when the target is missing).

Schema 1 maps (no feature files) are refused by :func:`load` with a
:class:`MapSchemaError` naming ``netvlad-ros migrate-map``; :func:`upgrade` rewrites
them as schema 2 with the same protocol.

The environment variable ``NETVLAD_MAPDB_CRASH_AT`` (testing only) makes the saving
process SIGKILL itself at a named step: ``sqlite_written``, ``files_written``,
``old_moved_aside``, ``new_in_place``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import faiss
import numpy as np

from . import index as ix
from .errors import MapCorruptError, MapError, MapModelMismatchError, MapNotFoundError, MapSchemaError
from .features import DESCRIPTOR_WIDTH, FEATURE_KINDS, CameraIntrinsics, KeyframeFeatures
from .snapshot import KeyframeMeta, MapSnapshot, canonical_calibration, read_only

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 2
#: Older schemas that :func:`upgrade` (``netvlad-ros migrate-map``) converts.
MIGRATABLE_SCHEMAS = (1,)
MIGRATE_COMMAND = "netvlad-ros migrate-map"
FORMAT_NAME = "netvlad_ros.mapdb"
KEYFRAMES_FILE = "keyframes.sqlite"
DESCRIPTORS_FILE = "descriptors.npy"
INDEX_FILE = "index.faiss"
FEATURE_INDEX_FILE = "features_index.npy"
FEATURE_KEYPOINTS_FILE = "feature_keypoints.npy"
FEATURE_DESCRIPTORS_FILE = "feature_descriptors.npy"
FEATURE_DEPTHS_FILE = "feature_depths.npy"
MANIFEST_FILE = "manifest.json"
FEATURE_FILES = (FEATURE_INDEX_FILE, FEATURE_KEYPOINTS_FILE, FEATURE_DESCRIPTORS_FILE, FEATURE_DEPTHS_FILE)
DATA_FILES_V1 = (KEYFRAMES_FILE, DESCRIPTORS_FILE, INDEX_FILE)
DATA_FILES = DATA_FILES_V1 + FEATURE_FILES
CRASH_ENV = "NETVLAD_MAPDB_CRASH_AT"

#: Columns of ``features_index.npy`` (int64): keyframe id, kind code (index into
#: FEATURE_KINDS), first row in keypoints/depths, feature count, first byte in the
#: descriptor blob, image width, image height, camera index (-1: none), has depth (0/1).
FEATURE_COLUMNS = ("id", "kind", "offset", "count", "desc_offset", "width", "height", "camera", "has_depth")
(_F_ID, _F_KIND, _F_OFF, _F_COUNT, _F_DOFF, _F_W, _F_H, _F_CAM, _F_DEPTH) = range(len(FEATURE_COLUMNS))

_SQL_SCHEMA = """
CREATE TABLE keyframes (
    id INTEGER PRIMARY KEY,
    stamp REAL NOT NULL,
    frame_id TEXT NOT NULL,
    x REAL NOT NULL, y REAL NOT NULL, z REAL NOT NULL,
    qx REAL NOT NULL, qy REAL NOT NULL, qz REAL NOT NULL, qw REAL NOT NULL,
    lat REAL, lon REAL, alt REAL,
    source TEXT NOT NULL,
    thumbnail BLOB
);
CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _manifest_digest(manifest: dict[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _old_path(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


@contextlib.contextmanager
def _map_lock(path: Path, exclusive: bool, required: bool) -> Iterator[bool]:
    """flock on ``.<name>.lock`` beside the map; yields whether the lock is held."""
    lock_path = path.parent / f".{path.name}.lock"
    if fcntl is None:  # pragma: no cover
        yield False
        return
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if required:
            raise
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def recover(path: Path) -> None:
    """Finish or roll back an interrupted save of ``path`` (caller holds the lock)."""
    old = _old_path(path)
    if not old.exists():
        return
    if path.exists():
        shutil.rmtree(old)
    else:
        os.rename(old, path)
    _fsync_path(path.parent)


def _remove_stale_tmp(path: Path) -> None:
    pat = re.compile(rf"^\.{re.escape(path.name)}\.tmp-(\d+)-")
    for entry in path.parent.iterdir():
        m = pat.match(entry.name)
        if not m or not entry.is_dir():
            continue
        pid = int(m.group(1))
        alive = True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive or pid == os.getpid():
            shutil.rmtree(entry, ignore_errors=True)


# ---------------------------------------------------------------------------- save
def _write_npy(p: Path, a: np.ndarray) -> None:
    with open(p, "wb") as f:
        np.save(f, np.ascontiguousarray(a), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _write_sqlite(p: Path, snap: MapSnapshot, order: np.ndarray | None, metadata: dict[str, str]) -> None:
    con = sqlite3.connect(p)
    try:
        con.executescript(_SQL_SCHEMA)
        n = len(snap)
        sel = slice(None) if order is None else order
        ids, stamps = snap.ids[sel], snap.stamps[sel]
        pos, ori = snap.positions[sel], snap.orientations[sel]

        def rows() -> Iterator[tuple[Any, ...]]:
            for i in range(n):
                kid = int(ids[i])
                frame_id, lla, source, thumb = snap.meta[kid]
                lat, lon, alt = lla if lla is not None else (None, None, None)
                yield (kid, float(stamps[i]), frame_id, *map(float, pos[i]), *map(float, ori[i]),
                       lat, lon, alt, source, thumb)  # fmt: skip

        con.executemany("INSERT INTO keyframes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows())
        con.executemany("INSERT INTO metadata VALUES (?, ?)", sorted(metadata.items()))
        con.commit()
    finally:
        con.close()


def _pack_features(
    snap: MapSnapshot, ids_sorted: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """The four feature arrays (table, keypoints, descriptor bytes, depths) and the cameras."""
    feats = snap.features
    chosen = [(kid, feats[kid]) for kid in ids_sorted.tolist() if kid in feats]
    cameras: dict[CameraIntrinsics, int] = {}
    table = np.zeros((len(chosen), len(FEATURE_COLUMNS)), np.int64)
    off = doff = 0
    for row, (kid, f) in enumerate(chosen):
        count = len(f)
        cam = -1
        if f.camera is not None:
            cam = cameras.setdefault(f.camera, len(cameras))
        table[row] = (kid, FEATURE_KINDS.index(f.kind), off, count, doff, f.image_size[0], f.image_size[1],
                      cam, int(f.depths is not None))  # fmt: skip
        off += count
        doff += count * DESCRIPTOR_WIDTH[f.kind]
    if chosen:
        kp = np.concatenate([f.keypoints for _, f in chosen])
        desc = np.concatenate([f.descriptors.reshape(-1) for _, f in chosen])
        depths = np.concatenate(
            [f.depths if f.depths is not None else np.full(len(f), np.nan, np.float32) for _, f in chosen]
        )
    else:
        kp, desc, depths = np.zeros((0, 2), np.float32), np.zeros(0, np.uint8), np.zeros(0, np.float32)
    return table, kp, desc, depths, [c.to_dict() for c in cameras]


def _index_to_write(snap: MapSnapshot, desc: np.ndarray, ids: np.ndarray) -> tuple[faiss.Index, bool]:
    """The index to write and whether it is trained: the snapshot's own, or built from
    the descriptors (flat, stale HNSW), or an empty untrained IVF-PQ placeholder."""
    cfg, dim = snap.index_config, snap.descriptor_dim
    if snap.index is not None:
        return snap.index, True
    if cfg.kind == "ivfpq":
        placeholder = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, 1, ix.auto_m(dim, cfg.m), cfg.nbits,
                                       faiss.METRIC_INNER_PRODUCT)  # fmt: skip
        return placeholder, False
    index = ix.new_flat(dim) if cfg.kind == "flat" else ix.new_hnsw(dim, cfg)
    if len(ids):
        index.add_with_ids(desc, ids)
    return index, True


def _write_files(snap: MapSnapshot, d: Path) -> None:
    n, dim = len(snap), snap.descriptor_dim
    order: np.ndarray | None = snap.order_by_id()
    if n < 2 or np.all(np.diff(snap.ids) > 0):
        order = None  # already ascending: write the shared arrays without copying them
    ids_sorted = snap.ids if order is None else snap.ids[order]
    desc_sorted = snap.descriptors if order is None else snap.descriptors[order]
    origin = snap.origin
    metadata = {
        "schema_version": str(SCHEMA_VERSION),
        "model_fingerprint": snap.model_fingerprint,
        "descriptor_dim": str(dim),
        "next_id": str(snap.next_id),
        "created_utc": snap.created_utc,
        "origin": json.dumps(list(origin) if origin is not None else None),
    }
    _write_sqlite(d / KEYFRAMES_FILE, snap, order, metadata)
    _fsync_path(d / KEYFRAMES_FILE)
    _crash_point("sqlite_written")
    _write_npy(d / DESCRIPTORS_FILE, desc_sorted)
    table, kp, fdesc, depths, cameras = _pack_features(snap, ids_sorted)
    for name, arr in zip(FEATURE_FILES, (table, kp, fdesc, depths), strict=True):
        _write_npy(d / name, arr)
    cfg = snap.index_config
    index, trained = _index_to_write(snap, desc_sorted, ids_sorted)
    faiss.write_index(index, str(d / INDEX_FILE))
    _fsync_path(d / INDEX_FILE)
    index_info: dict[str, Any] = {
        "kind": cfg.kind,
        "config": cfg.to_dict(),
        "trained": trained,
        "trained_on": int(snap.index_trained_on) if cfg.kind == "ivfpq" else None,
        "ntotal": int(index.ntotal),
        "faiss_type": type(index).__name__,
    }
    if isinstance(index, faiss.IndexIVFPQ) and trained:
        index_info.update(nlist=int(index.nlist), m=int(index.pq.M), nbits=int(index.pq.nbits))
    kinds = table[:, _F_KIND]
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "model_fingerprint": snap.model_fingerprint,
        "descriptor_dim": dim,
        "descriptor_dtype": "float32",
        "metric": "inner_product (descriptors L2-normalised: cosine)",
        "index": index_info,
        "counts": {"keyframes": n, "descriptors": n, "index_vectors": int(index.ntotal)},
        "features": {
            "keyframes": int(table.shape[0]),
            "keypoints": int(kp.shape[0]),
            "descriptor_bytes": int(fdesc.shape[0]),
            "by_kind": {k: int(np.sum(kinds == i)) for i, k in enumerate(FEATURE_KINDS)},
            "with_depth": int(table[:, _F_DEPTH].sum()),
            "cameras": cameras,
        },
        "calibration": snap.calibration,
        "next_id": int(snap.next_id),
        "created_utc": snap.created_utc,
        "saved_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "origin": {"lat": origin[0], "lon": origin[1], "alt": origin[2]} if origin is not None else None,
        "files": {
            name: {"sha256": _sha256(d / name), "bytes": (d / name).stat().st_size} for name in DATA_FILES
        },
    }
    manifest["manifest_sha256"] = _manifest_digest(manifest)
    with open(d / MANIFEST_FILE, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync_path(d)


def _check_target(path: Path) -> None:
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / MANIFEST_FILE).exists())):
        raise MapError(f"refusing to replace {path}: it exists and is not a map directory")


def _swap_in(snap: MapSnapshot, path: Path) -> None:
    """Steps 2-5 of the protocol; the caller holds the lock and has run recovery."""
    _remove_stale_tmp(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
    old = _old_path(path)
    try:
        _write_files(snap, tmp)
        _crash_point("files_written")
        if path.exists():
            os.rename(path, old)
            _fsync_path(path.parent)
            _crash_point("old_moved_aside")
        os.rename(tmp, path)
        _fsync_path(path.parent)
        _crash_point("new_in_place")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        recover(path)  # puts the old map back if it was moved aside
        raise
    if old.exists():
        shutil.rmtree(old)
        _fsync_path(path.parent)


def save_snapshot(snapshot: MapSnapshot, path: str | Path) -> None:
    """Write ``snapshot`` to the directory ``path`` atomically (protocol in the module docstring).

    Holds no lock of any database: only the map directory's file lock.
    """
    if not isinstance(snapshot, MapSnapshot):
        raise ValueError(f"save_snapshot() needs a MapSnapshot, got {type(snapshot).__name__}")
    target = Path(path).absolute()
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _map_lock(target, exclusive=True, required=True):
        recover(target)
        _swap_in(snapshot, target)


# ---------------------------------------------------------------------------- load
def _corrupt(p: Path, why: str) -> MapCorruptError:
    return MapCorruptError(f"{p}: {why}")


def _schema_error(mp: Path, map_dir: Path, version: object) -> MapSchemaError:
    if version in MIGRATABLE_SCHEMAS:
        return MapSchemaError(
            f"{mp}: map schema version {version}, this code reads schema version {SCHEMA_VERSION}; "
            f"upgrade it with `{MIGRATE_COMMAND} {map_dir}` (keeps descriptors, poses and thumbnails; "
            "keyframes have no local features until the map is rebuilt with build-map)"
        )
    return MapSchemaError(
        f"{mp}: schema_version {version!r} is not supported (this code reads version {SCHEMA_VERSION} "
        f"and migrates {', '.join(map(str, MIGRATABLE_SCHEMAS))} with `{MIGRATE_COMMAND}`)"
    )


def _read_manifest(path: Path, accept: tuple[int, ...]) -> dict[str, Any]:
    mp = path / MANIFEST_FILE
    if not mp.exists():
        raise MapNotFoundError(f"{mp}: missing; {path} is not a map directory")
    try:
        manifest = json.loads(mp.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(mp, f"not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise _corrupt(mp, "not a JSON object")
    version = manifest.get("schema_version")
    # before the self-checksum, so that a map of another schema gets the schema error
    if isinstance(version, bool) or version not in accept:
        raise _schema_error(mp, path, version)
    if manifest.get("manifest_sha256") != _manifest_digest(manifest):
        raise _corrupt(mp, "manifest_sha256 does not match its content (edited or garbled)")
    if manifest.get("format") != FORMAT_NAME:
        raise _corrupt(mp, f"format is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    return manifest


def _field(manifest: dict[str, Any], mp: Path, *keys: str, typ: type | tuple[type, ...]) -> Any:
    cur: Any = manifest
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            raise _corrupt(mp, f"missing field {'.'.join(keys)}")
        cur = cur[k]
    if not isinstance(cur, typ) or (isinstance(cur, bool) and typ is int):
        raise _corrupt(mp, f"field {'.'.join(keys)} has the wrong type ({type(cur).__name__})")
    return cur


def _resolve_dir(path: Path, writable: bool) -> Path:
    if not path.exists():
        old = _old_path(path)
        if not writable and old.is_dir():
            return old
        raise MapNotFoundError(f"{path}: map directory does not exist")
    if not path.is_dir():
        raise MapNotFoundError(f"{path}: not a directory")
    return path


def load(path: str | Path, expected_model_fingerprint: str | None = None) -> MapSnapshot:
    """Load the schema-2 map directory ``path``, verifying everything (docs/mapdb.md).

    Raises a MapError subclass: MapNotFoundError, MapCorruptError (names the file),
    MapSchemaError (another schema; for schema 1 it names ``netvlad-ros migrate-map``),
    MapModelMismatchError.
    """
    target = Path(path).absolute()
    with _map_lock(target, exclusive=True, required=False) as locked:
        if locked:
            recover(target)
        snap, _ = _load_verified(_resolve_dir(target, locked), expected_model_fingerprint, (SCHEMA_VERSION,))
        return snap


def upgrade(path: str | Path, output: str | Path | None = None) -> tuple[int, MapSnapshot]:
    """Rewrite a schema-1 (or current) map as schema 2; returns (found schema, snapshot written).

    ``output`` None or equal to ``path``: replaced in place with the atomic protocol under
    the map's lock (an interrupted upgrade leaves the old map); otherwise the source is
    only read. A map already at schema 2 is left as it is when written in place.
    """
    src = Path(path).absolute()
    dst = src if output is None else Path(output).absolute()
    accept = (*MIGRATABLE_SCHEMAS, SCHEMA_VERSION)
    if dst == src:
        with _map_lock(src, exclusive=True, required=True):
            recover(src)
            snap, version = _load_verified(_resolve_dir(src, True), None, accept)
            if version != SCHEMA_VERSION:
                _swap_in(snap, src)
        return version, snap
    with _map_lock(src, exclusive=True, required=False) as locked:
        if locked:
            recover(src)
        snap, version = _load_verified(_resolve_dir(src, locked), None, accept)
    save_snapshot(snap, dst)
    return version, snap


def _verify_files(path: Path, manifest: dict[str, Any], names: tuple[str, ...]) -> None:
    mp = path / MANIFEST_FILE
    files = _field(manifest, mp, "files", typ=dict)
    for name in names:
        fp = path / name
        info = files.get(name)
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise _corrupt(mp, f"no checksum for {name}")
        if not fp.is_file():
            raise _corrupt(fp, "missing (listed in the manifest)")
        size = fp.stat().st_size
        if size != info.get("bytes"):
            raise _corrupt(fp, f"size {size} bytes, manifest says {info.get('bytes')} (truncated?)")
        if _sha256(fp) != info["sha256"]:
            raise _corrupt(fp, "SHA-256 does not match the manifest (garbled)")


def _read_npy(p: Path, dtype: type, ndim: int) -> np.ndarray:
    try:
        a: np.ndarray = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _corrupt(p, f"cannot be read as .npy ({exc})") from None
    if a.dtype != dtype or a.ndim != ndim:
        raise _corrupt(p, f"expected {np.dtype(dtype)} with {ndim} dimensions, got {a.dtype} {a.shape}")
    a.flags.writeable = False
    return a


def _load_verified(path: Path, expected_fp: str | None, accept: tuple[int, ...]) -> tuple[MapSnapshot, int]:
    mp = path / MANIFEST_FILE
    manifest = _read_manifest(path, accept)
    version = int(manifest["schema_version"])
    _verify_files(path, manifest, DATA_FILES if version >= 2 else DATA_FILES_V1)
    fingerprint = _field(manifest, mp, "model_fingerprint", typ=str)
    if expected_fp is not None and fingerprint != expected_fp:
        raise MapModelMismatchError(
            f"{mp}: map was built with model fingerprint {fingerprint!r}, expected {expected_fp!r}"
        )
    dim = _field(manifest, mp, "descriptor_dim", typ=int)
    n = _field(manifest, mp, "counts", "keyframes", typ=int)
    next_id = _field(manifest, mp, "next_id", typ=int)
    created = _field(manifest, mp, "created_utc", typ=str)
    try:
        cfg = ix.IndexConfig.from_dict(_field(manifest, mp, "index", "config", typ=dict))
    except (TypeError, ValueError) as exc:
        raise _corrupt(mp, f"bad index config: {exc}") from None
    trained = _field(manifest, mp, "index", "trained", typ=bool)
    origin_d = manifest.get("origin")
    origin = None
    if origin_d is not None:
        try:
            origin = (float(origin_d["lat"]), float(origin_d["lon"]), float(origin_d["alt"]))
        except (TypeError, KeyError, ValueError):
            raise _corrupt(mp, "bad origin") from None
    calibration_json = None
    if version >= 2:
        try:
            calibration_json = canonical_calibration(manifest.get("calibration"))
        except ValueError as exc:
            raise _corrupt(mp, f"bad calibration: {exc}") from None

    # descriptors
    dp = path / DESCRIPTORS_FILE
    desc = _read_npy(dp, np.float32, 2)
    if desc.shape != (n, dim):
        raise _corrupt(dp, f"expected float32 ({n}, {dim}), got {desc.dtype} {desc.shape}")
    if n and (not np.all(np.isfinite(desc)) or np.abs(np.linalg.norm(desc, axis=1) - 1).max() > 1e-3):
        raise _corrupt(dp, "descriptors are not finite unit vectors")

    ids, stamps, pos, ori, meta = _read_keyframes(
        path / KEYFRAMES_FILE, n, dim, fingerprint, next_id, version
    )
    index = _read_index(path / INDEX_FILE, cfg, dim, n, ids, trained)
    features = _read_features(path, manifest, ids) if version >= 2 else {}
    trained_on = 0
    if cfg.kind == "ivfpq" and index is not None:
        trained_on = int(manifest["index"].get("trained_on") or 0)
    snap = MapSnapshot(
        descriptor_dim=dim,
        model_fingerprint=fingerprint,
        index_config=cfg,
        created_utc=created,
        next_id=next_id,
        origin=origin,
        ids=ids,
        stamps=stamps,
        positions=pos,
        orientations=ori,
        descriptors=desc,
        meta=MappingProxyType(meta),
        features=MappingProxyType(features),
        index=index,
        index_trained_on=trained_on,
        calibration_json=calibration_json,
    )
    return snap, version


def _read_keyframes(
    kp: Path, n: int, dim: int, fingerprint: str, next_id: int, version: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[int, KeyframeMeta]]:
    try:
        con = sqlite3.connect(f"{kp.as_uri()}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT id, stamp, frame_id, x, y, z, qx, qy, qz, qw, lat, lon, alt, source, thumbnail "
                "FROM keyframes ORDER BY id"
            ).fetchall()
            meta = dict(con.execute("SELECT key, value FROM metadata").fetchall())
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise _corrupt(kp, f"cannot be read as SQLite ({exc})") from None
    if len(rows) != n:
        raise _corrupt(kp, f"{len(rows)} keyframes, manifest says {n}")
    if meta.get("model_fingerprint") != fingerprint or meta.get("descriptor_dim") != str(dim):
        raise _corrupt(kp, "metadata (fingerprint/descriptor_dim) disagrees with the manifest")
    if meta.get("schema_version") != str(version):
        raise _corrupt(kp, f"metadata schema_version {meta.get('schema_version')!r}, manifest says {version}")
    try:
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        stamps = np.array([r[1] for r in rows], dtype=np.float64)
        pos = np.array([r[3:6] for r in rows], dtype=np.float64).reshape(n, 3)
        ori = np.array([r[6:10] for r in rows], dtype=np.float64).reshape(n, 4)
    except (TypeError, ValueError) as exc:
        raise _corrupt(kp, f"bad keyframe values ({exc})") from None
    if n and (ids.min() < 0 or next_id <= ids.max()):
        raise _corrupt(kp, f"keyframe ids out of range (next_id {next_id})")
    if not (np.all(np.isfinite(stamps)) and np.all(np.isfinite(pos)) and np.all(np.isfinite(ori))):
        raise _corrupt(kp, "non-finite stamps or poses")
    meta_by_id: dict[int, KeyframeMeta] = {}
    for r in rows:
        if (
            not isinstance(r[2], str)
            or not isinstance(r[13], str)
            or not (r[14] is None or isinstance(r[14], bytes))
        ):
            raise _corrupt(kp, f"keyframe {r[0]}: bad frame_id/source/thumbnail types")
        lla = None if r[10] is None else (float(r[10]), float(r[11]), float(r[12]))
        meta_by_id[int(r[0])] = KeyframeMeta(r[2], lla, r[13], r[14])
    return read_only(ids), read_only(stamps), read_only(pos), read_only(ori), meta_by_id


def _read_index(
    ip: Path, cfg: ix.IndexConfig, dim: int, n: int, ids: np.ndarray, trained: bool
) -> faiss.Index | None:
    try:
        index = faiss.read_index(str(ip))
    except RuntimeError as exc:
        raise _corrupt(
            ip, f"faiss cannot read it ({str(exc).splitlines()[0] if str(exc) else exc})"
        ) from None
    kind = ix.index_kind(index)  # read_index returns the most derived type
    if kind != cfg.kind:
        raise _corrupt(ip, f"index is {type(index).__name__}, manifest says kind {cfg.kind!r}")
    if index.d != dim or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise _corrupt(ip, f"index dim {index.d} / metric {index.metric_type} != {dim} / inner product")
    if not trained:
        if kind != "ivfpq" or index.ntotal != 0 or index.is_trained:
            raise _corrupt(ip, "manifest says untrained, but the index is not an empty untrained IVF-PQ")
        return None
    if index.ntotal != n or not index.is_trained:
        raise _corrupt(ip, f"index holds {index.ntotal} vectors, the map has {n}")
    if not np.array_equal(np.sort(ix.index_ids(index)), ids):
        raise _corrupt(ip, "index ids differ from the keyframe ids")
    if isinstance(index, faiss.IndexIVFPQ):
        index.nprobe = cfg.nprobe
    return index


def _read_features(path: Path, manifest: dict[str, Any], ids: np.ndarray) -> dict[int, KeyframeFeatures]:
    """Verified features of a schema-2 map, as views into four whole arrays."""
    mp = path / MANIFEST_FILE
    tp, kpp, dp, zp = (path / name for name in FEATURE_FILES)
    info = _field(manifest, mp, "features", typ=dict)
    cam_dicts = _field(manifest, mp, "features", "cameras", typ=list)
    try:
        cameras = [CameraIntrinsics.from_dict(c) for c in cam_dicts]
    except (TypeError, ValueError, KeyError) as exc:
        raise _corrupt(mp, f"bad camera in features.cameras: {exc}") from None
    table = _read_npy(tp, np.int64, 2)
    kp = _read_npy(kpp, np.float32, 2)
    desc = _read_npy(dp, np.uint8, 1)
    depths = _read_npy(zp, np.float32, 1)
    k = table.shape[0]
    if table.shape[1] != len(FEATURE_COLUMNS):
        raise _corrupt(tp, f"expected {len(FEATURE_COLUMNS)} columns, got shape {table.shape}")
    if k != info.get("keyframes"):
        raise _corrupt(tp, f"{k} rows, manifest says {info.get('keyframes')} keyframes with features")
    if kp.shape[1] != 2:
        raise _corrupt(kpp, f"expected (M, 2), got {kp.shape}")
    m = kp.shape[0]
    if m != info.get("keypoints"):
        raise _corrupt(kpp, f"{m} keypoints, manifest says {info.get('keypoints')}")
    if depths.shape != (m,):
        raise _corrupt(zp, f"expected ({m},) depths (one per keypoint), got {depths.shape}")
    if desc.shape[0] != info.get("descriptor_bytes"):
        raise _corrupt(dp, f"{desc.shape[0]} bytes, manifest says {info.get('descriptor_bytes')}")
    fid, kind, off, count, doff = (table[:, c] for c in (_F_ID, _F_KIND, _F_OFF, _F_COUNT, _F_DOFF))
    width, height, cam, has_depth = (table[:, c] for c in (_F_W, _F_H, _F_CAM, _F_DEPTH))
    if k and (np.any(np.diff(fid) <= 0) or not np.all(np.isin(fid, ids))):
        raise _corrupt(tp, "keyframe ids are not ascending ids of this map")
    if np.any((kind < 0) | (kind >= len(FEATURE_KINDS))):
        raise _corrupt(tp, f"unknown feature kind code (known: {dict(enumerate(FEATURE_KINDS))})")
    if (
        np.any(count < 0)
        or np.any(width < 1)
        or np.any(height < 1)
        or np.any((has_depth != 0) & (has_depth != 1))
    ):
        raise _corrupt(tp, "negative counts, image sizes < 1 or a has_depth flag other than 0/1")
    if np.any((cam < -1) | (cam >= len(cameras))):
        raise _corrupt(tp, f"camera index out of range (the manifest lists {len(cameras)} cameras)")
    dwidth = np.array([DESCRIPTOR_WIDTH[name] for name in FEATURE_KINDS], np.int64)[kind]
    start = np.concatenate([[0], np.cumsum(count)[:-1]]) if k else count
    dstart = np.concatenate([[0], np.cumsum(count * dwidth)[:-1]]) if k else count
    if not (np.array_equal(off, start) and int(count.sum()) == m):
        raise _corrupt(tp, f"keypoint offsets out of range or not contiguous ({m} keypoints in {kpp.name})")
    if not (np.array_equal(doff, dstart) and int((count * dwidth).sum()) == desc.shape[0]):
        raise _corrupt(
            tp, f"descriptor offsets out of range or not contiguous ({desc.shape[0]} bytes in {dp.name})"
        )
    for c in np.unique(cam[cam >= 0]).tolist():
        rows = cam == c
        if np.any(width[rows] != cameras[c].width) or np.any(height[rows] != cameras[c].height):
            raise _corrupt(
                tp, f"camera {c} is {cameras[c].width}x{cameras[c].height}, its features' images differ"
            )
    if m:
        # per-keyframe extremes (one pass over the keypoints) against each image's size
        nz = np.flatnonzero(count > 0)
        lo = np.minimum.reduceat(kp, off[nz], axis=0)
        hi = np.maximum.reduceat(kp, off[nz], axis=0)
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise _corrupt(kpp, "keypoints contain NaN or inf")
        bad = (lo < -0.5).any(axis=1) | (hi[:, 0] > width[nz] - 0.5) | (hi[:, 1] > height[nz] - 0.5)
        if bad.any():
            raise _corrupt(kpp, f"keypoints outside the image of keyframe {int(fid[nz[np.argmax(bad)]])}")
        known = ~np.isnan(depths)
        if np.any(np.add.reduceat(known, off[nz])[has_depth[nz] == 0]):
            raise _corrupt(zp, "depth values for keyframes recorded without depth")
        z = depths[known]
        if z.size and (not np.all(np.isfinite(z)) or z.min() <= 0):
            raise _corrupt(zp, "depths must be finite metres > 0 (NaN where unknown)")
    out: dict[int, KeyframeFeatures] = {}
    rows_t = table.tolist()
    for kid, kc, o, c, do, w, h, ci, hd in rows_t:
        name = FEATURE_KINDS[kc]
        out[kid] = KeyframeFeatures(
            name,
            kp[o : o + c],
            desc[do : do + c * DESCRIPTOR_WIDTH[name]].reshape(c, DESCRIPTOR_WIDTH[name]),
            depths[o : o + c] if hd else None,
            (w, h),
            cameras[ci] if ci >= 0 else None,
        )
    return out
