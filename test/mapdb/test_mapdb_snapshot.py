"""Snapshot/restore: a snapshot is what gets saved, it is immune to later changes (copy-on-write),
and saving it needs no database lock, even while other threads keep adding keyframes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from netvlad_ros.mapdb import (
    IndexConfig,
    Keyframe,
    KeyframeFeatures,
    MapDatabase,
    MapSnapshot,
    load_snapshot,
    save_snapshot,
)
from netvlad_ros.synthetic.descriptors import clustered_descriptors

D = 32


def features(seed: int, n: int = 40) -> KeyframeFeatures:
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 5.0, n).astype(np.float32)
    depth[::4] = np.nan
    return KeyframeFeatures.create(
        "orb", rng.uniform(0, 99, (n, 2)), rng.integers(0, 256, (n, 32), dtype=np.uint8), (100, 100), depth
    )


def grow(db: MapDatabase, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = clustered_descriptors(n, D, seed=seed)
    kfs = [
        Keyframe(
            stamp=float(rng.uniform(0, 1e6)),
            position=rng.uniform(-100, 100, 3),
            latlonalt=(48.0, 11.0, 500.0) if i % 2 else None,
            source=f"s{seed}",
            thumbnail=b"\xff\xd8" + rng.bytes(8) if i % 3 else None,
        )
        for i in range(n)
    ]
    return db.add(kfs, x, [features(seed * 1000 + i) if i % 2 == 0 else None for i in range(n)])


def content(s: MapSnapshot) -> dict:
    """Everything a snapshot holds, in id order, as plain copies (for comparisons)."""
    o = s.order_by_id()
    return {
        "header": (s.descriptor_dim, s.model_fingerprint, s.index_config, s.created_utc, s.next_id, s.origin),
        "ids": s.ids[o].copy(),
        "stamps": s.stamps[o].copy(),
        "positions": s.positions[o].copy(),
        "orientations": s.orientations[o].copy(),
        "descriptors": s.descriptors[o].copy(),
        "meta": dict(s.meta),
        "features": dict(s.features),
        "calibration": s.calibration,
        "index_ntotal": None if s.index is None else s.index.ntotal,
    }


def assert_same_content(a: dict, b: dict, index: bool = True) -> None:
    assert a["header"] == b["header"]
    for k in ("ids", "stamps", "positions", "orientations", "descriptors"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert a["meta"] == b["meta"]
    assert a["features"].keys() == b["features"].keys()
    assert all(a["features"][k] == b["features"][k] for k in a["features"])
    assert a["calibration"] == b["calibration"]
    if index:
        assert a["index_ntotal"] in (None, b["index_ntotal"])


def make(kind: str, n: int) -> MapDatabase:
    db = MapDatabase.create(D, "model-S", IndexConfig(kind=kind, nbits=4))  # IVF-PQ trains at 39*16 = 624
    db.set_origin(48.0, 11.0, 500.0)
    db.set_calibration({"score_threshold": 0.8})
    grow(db, n, seed=1)
    return db


@pytest.mark.parametrize(
    ("kind", "n"), [("flat", 300), ("hnsw", 300), ("ivfpq", 200), ("ivfpq", 700)], ids=str
)
def test_snapshot_equals_the_saved_and_loaded_map(tmp_path, kind, n):
    db = make(kind, n)
    db.remove(db.ids[3:9])  # removal: new arrays; HNSW becomes stale (rebuilt by storage)
    snap = db.snapshot()
    save_snapshot(snap, tmp_path / "m")
    loaded = load_snapshot(tmp_path / "m", expected_model_fingerprint="model-S")
    assert_same_content(content(snap), content(loaded))
    assert loaded.index is not None or (kind == "ivfpq" and n < 624)
    # and the database built from it answers like the original
    back = MapDatabase.from_snapshot(loaded)
    q = db.descriptors(db.ids[:20])
    np.testing.assert_array_equal(back.search(q, 5).ids, db.search(q, 5).ids)


def test_snapshot_arrays_are_read_only():
    snap = make("flat", 50).snapshot()
    for a in (snap.ids, snap.stamps, snap.positions, snap.orientations, snap.descriptors):
        with pytest.raises(ValueError, match="read-only"):
            a[0] = 0


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_changes_after_a_snapshot_do_not_reach_it(tmp_path, kind):
    db = make(kind, 700)
    grow(db, 10, seed=4)  # capacity is now 1400 rows: the next adds write into the same arrays
    snap = db.snapshot()
    before = content(snap)
    # everything that mutates a database, after the snapshot
    grow(db, 20, seed=5)  # rows past the snapshot's, in the arrays it shares
    db.remove(db.ids[::3])  # would compact those shared arrays if done in place
    grow(db, 900, seed=2)  # past the capacity: new arrays; IVF-PQ keeps adding
    db.set_features(int(db.ids[0]), features(77))
    db.set_features(int(db.ids[1]), None)
    db.set_calibration({"score_threshold": 0.5})
    db.set_origin(1.0, 2.0, 3.0)
    db.rebuild_index()
    assert len(db) != len(snap)
    assert_same_content(before, content(snap))
    save_snapshot(snap, tmp_path / "m")
    assert_same_content(before, content(load_snapshot(tmp_path / "m")))


def test_from_snapshot_is_independent():
    db = make("hnsw", 100)
    snap = db.snapshot()
    before = content(snap)
    a = MapDatabase.from_snapshot(snap)
    b = MapDatabase.from_snapshot(snap)
    grow(a, 50, seed=3)
    a.remove(a.ids[:10])
    assert len(a) == 140 and len(b) == len(db) == 100
    assert_same_content(before, content(snap))
    assert_same_content(content(db.snapshot()), content(b.snapshot()))


def test_save_snapshot_needs_no_database_lock(tmp_path):
    """storage writes the snapshot while another thread holds the database's lock."""
    db = make("flat", 200)
    snap = db.snapshot()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db._lock:  # the lock every public method takes
            held.set()
            release.wait(60)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert held.wait(10)
        done = threading.Event()
        saver = threading.Thread(target=lambda: (save_snapshot(snap, tmp_path / "m"), done.set()))
        saver.start()
        saver.join(60)  # would hang until `release` if storage needed the lock
        assert done.is_set()
    finally:
        release.set()
        t.join()
    assert len(load_snapshot(tmp_path / "m")) == 200


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_saving_while_another_thread_adds(tmp_path, kind):
    """Snapshots saved while a writer thread keeps adding (and removing) keyframes: every
    saved map equals its snapshot, and the live database stays consistent."""
    db = make(kind, 300)
    stop = threading.Event()
    errors: list[BaseException] = []
    added = [0]

    def writer() -> None:
        seed = 10
        try:
            while not stop.is_set():
                grow(db, 7, seed)
                if seed % 5 == 0:
                    db.remove(db.ids[:2])
                db.search(db.descriptors(db.ids[-3:]), 3)
                added[0] += 7
                seed += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    try:
        sizes = []
        for i in range(6):
            snap = db.snapshot()
            expected = content(snap)
            save_snapshot(snap, tmp_path / "m")
            got = load_snapshot(tmp_path / "m")
            assert_same_content(expected, content(got))
            sizes.append(len(got))
            if i == 2:
                db.save(tmp_path / "m2")  # the database's own save, same rule
                assert len(MapDatabase.load(tmp_path / "m2")) >= sizes[-1]
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    # the writer really ran alongside the saves (else this test would prove nothing)
    assert added[0] > 0 and len(set(sizes)) > 1, (added, sizes)
    final = db.snapshot()
    save_snapshot(final, tmp_path / "m")
    assert_same_content(content(final), content(load_snapshot(tmp_path / "m")))
    back = MapDatabase.load(tmp_path / "m")
    q = db.descriptors(db.ids[-10:])
    np.testing.assert_array_equal(back.search(q, 1).ids[:, 0], db.ids[-10:])  # each finds itself
