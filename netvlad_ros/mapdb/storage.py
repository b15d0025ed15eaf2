"""Map directory format, atomic save and verified load.

A map is a directory holding (see docs/mapdb.md for every field):

* ``keyframes.sqlite``: tables ``keyframes`` and ``metadata`` (key/value);
* ``descriptors.npy``: float32 (N, D); row i belongs to the i-th smallest keyframe id;
* ``index.faiss``: the faiss index (faiss.write_index), ids = keyframe ids;
* ``manifest.json``: schema version, model fingerprint, dims, index configuration,
  counts, times, GPS origin, SHA-256 and size of every file, and a SHA-256 of the
  manifest itself (``manifest_sha256``, over the canonical JSON without that key).

Atomic save protocol (``save_map``), for a target ``<parent>/<name>``:

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
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from . import index as ix
from .errors import MapCorruptError, MapError, MapModelMismatchError, MapNotFoundError, MapSchemaError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from .database import MapDatabase

SCHEMA_VERSION = 1
FORMAT_NAME = "netvlad_ros.mapdb"
KEYFRAMES_FILE = "keyframes.sqlite"
DESCRIPTORS_FILE = "descriptors.npy"
INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
DATA_FILES = (KEYFRAMES_FILE, DESCRIPTORS_FILE, INDEX_FILE)
CRASH_ENV = "NETVLAD_MAPDB_CRASH_AT"

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
def _write_sqlite(db: MapDatabase, p: Path, order: np.ndarray, meta: dict[str, str]) -> None:
    con = sqlite3.connect(p)
    try:
        con.executescript(_SQL_SCHEMA)
        n = len(db)
        ids, stamps = db._ids[:n][order], db._stamps[:n][order]
        pos, ori = db._pos[:n][order], db._ori[:n][order]

        def rows() -> Iterator[tuple]:
            for i in range(n):
                kid = int(ids[i])
                frame_id, lla, source, thumb = db._meta[kid]
                lat, lon, alt = lla if lla is not None else (None, None, None)
                yield (kid, float(stamps[i]), frame_id, *map(float, pos[i]), *map(float, ori[i]),
                       lat, lon, alt, source, thumb)  # fmt: skip

        con.executemany("INSERT INTO keyframes VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows())
        con.executemany("INSERT INTO metadata VALUES (?, ?)", sorted(meta.items()))
        con.commit()
    finally:
        con.close()


def _write_files(db: MapDatabase, d: Path) -> None:
    n, dim = len(db), db.descriptor_dim
    order = np.argsort(db._ids[:n], kind="stable")
    origin = db.origin
    meta = {
        "schema_version": str(SCHEMA_VERSION),
        "model_fingerprint": db.model_fingerprint,
        "descriptor_dim": str(dim),
        "next_id": str(db.next_id),
        "created_utc": db.created_utc,
        "origin": json.dumps(list(origin) if origin is not None else None),
    }
    _write_sqlite(db, d / KEYFRAMES_FILE, order, meta)
    _fsync_path(d / KEYFRAMES_FILE)
    _crash_point("sqlite_written")
    with open(d / DESCRIPTORS_FILE, "wb") as f:
        np.save(f, np.ascontiguousarray(db._desc[:n][order]), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    cfg = db.index_config
    index = db._index
    trained = index is not None
    if index is None:  # untrained IVF-PQ: an empty, untrained placeholder of the right type
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, 1, ix.auto_m(dim, cfg.m), cfg.nbits,
                                 faiss.METRIC_INNER_PRODUCT)  # fmt: skip
    faiss.write_index(index, str(d / INDEX_FILE))
    _fsync_path(d / INDEX_FILE)
    index_info: dict[str, Any] = {
        "kind": cfg.kind,
        "config": cfg.to_dict(),
        "trained": trained,
        "trained_on": int(db._trained_on) if cfg.kind == "ivfpq" else None,
        "ntotal": int(index.ntotal),
        "faiss_type": type(index).__name__,
    }
    if cfg.kind == "ivfpq" and trained:
        index_info.update(nlist=int(index.nlist), m=int(index.pq.M), nbits=int(index.pq.nbits))
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "model_fingerprint": db.model_fingerprint,
        "descriptor_dim": dim,
        "descriptor_dtype": "float32",
        "metric": "inner_product (descriptors L2-normalised: cosine)",
        "index": index_info,
        "counts": {"keyframes": n, "descriptors": n, "index_vectors": int(index.ntotal)},
        "next_id": int(db.next_id),
        "created_utc": db.created_utc,
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


def save_map(db: MapDatabase, path: str | Path) -> None:
    """Write ``db`` to the directory ``path`` atomically (protocol in the module docstring)."""
    path = Path(path).absolute()
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / MANIFEST_FILE).exists())):
        raise MapError(f"refusing to replace {path}: it exists and is not a map directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _map_lock(path, exclusive=True, required=True):
        recover(path)
        _remove_stale_tmp(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
        old = _old_path(path)
        try:
            _write_files(db, tmp)
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


# ---------------------------------------------------------------------------- load
def _corrupt(p: Path, why: str) -> MapCorruptError:
    return MapCorruptError(f"{p}: {why}")


def _read_manifest(path: Path) -> dict[str, Any]:
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
    if version != SCHEMA_VERSION:
        raise MapSchemaError(
            f"{mp}: schema_version {version!r} is not supported (this code reads version {SCHEMA_VERSION})"
        )
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


def load_map(path: str | Path, expected_model_fingerprint: str | None = None) -> MapDatabase:
    """Load the map directory ``path``, verifying everything; raises a MapError subclass."""
    path = Path(path).absolute()
    with _map_lock(path, exclusive=True, required=False) as locked:
        if locked:
            recover(path)
        return _load_verified(_resolve_dir(path, locked), expected_model_fingerprint)


def _load_verified(path: Path, expected_fp: str | None) -> MapDatabase:
    from .database import MapDatabase

    mp = path / MANIFEST_FILE
    manifest = _read_manifest(path)
    files = _field(manifest, mp, "files", typ=dict)
    for name in DATA_FILES:
        fp = path / name
        info = files.get(name)
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            raise _corrupt(mp, f"no checksum for {name}")
        if not fp.is_file():
            raise _corrupt(fp, "missing")
        size = fp.stat().st_size
        if size != info.get("bytes"):
            raise _corrupt(fp, f"size {size} bytes, manifest says {info.get('bytes')} (truncated?)")
        if _sha256(fp) != info["sha256"]:
            raise _corrupt(fp, "SHA-256 does not match the manifest (garbled)")
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

    # descriptors
    dp = path / DESCRIPTORS_FILE
    try:
        desc = np.load(dp, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _corrupt(dp, f"cannot be read as .npy ({exc})") from None
    if desc.dtype != np.float32 or desc.shape != (n, dim):
        raise _corrupt(dp, f"expected float32 ({n}, {dim}), got {desc.dtype} {desc.shape}")
    if n and (not np.all(np.isfinite(desc)) or np.abs(np.linalg.norm(desc, axis=1) - 1).max() > 1e-3):
        raise _corrupt(dp, "descriptors are not finite unit vectors")

    # keyframes
    kp = path / KEYFRAMES_FILE
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
    if meta.get("schema_version") != str(SCHEMA_VERSION):
        raise MapSchemaError(f"{kp}: metadata schema_version {meta.get('schema_version')!r} is not supported")
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
    meta_by_id: dict[int, tuple] = {}
    for r in rows:
        lla = None if r[10] is None else (float(r[10]), float(r[11]), float(r[12]))
        if (
            not isinstance(r[2], str)
            or not isinstance(r[13], str)
            or not (r[14] is None or isinstance(r[14], bytes))
        ):
            raise _corrupt(kp, f"keyframe {r[0]}: bad frame_id/source/thumbnail types")
        meta_by_id[int(r[0])] = (r[2], lla, r[13], r[14])

    # index
    ip = path / INDEX_FILE
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
    if trained:
        if index.ntotal != n or not index.is_trained:
            raise _corrupt(ip, f"index holds {index.ntotal} vectors, the map has {n}")
        if not np.array_equal(np.sort(ix.index_ids(index)), ids):
            raise _corrupt(ip, "index ids differ from the keyframe ids")
    else:
        if kind != "ivfpq" or index.ntotal != 0 or index.is_trained:
            raise _corrupt(ip, "manifest says untrained, but the index is not an empty untrained IVF-PQ")
        index = None

    db = MapDatabase(dim, fingerprint, cfg, _created_utc=created)
    db._ids, db._stamps, db._pos, db._ori, db._desc = ids, stamps, pos, ori, desc
    db._n = db._cap = n
    db._meta = meta_by_id
    db._next_id = next_id
    db._origin = origin
    if kind == "ivfpq":
        db._index = index
        db._trained_on = int(manifest["index"].get("trained_on") or 0) if index is not None else 0
        if index is not None:
            index.nprobe = cfg.nprobe
    else:
        db._index = index
    return db
