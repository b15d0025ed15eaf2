"""Map directory save/load: round trip, corruption detection, atomic save under SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from netvlad_ros.mapdb import (
    IndexConfig,
    Keyframe,
    MapCorruptError,
    MapDatabase,
    MapModelMismatchError,
    MapNotFoundError,
    MapSchemaError,
)
from netvlad_ros.synthetic.descriptors import clustered_descriptors

REPO = Path(__file__).resolve().parents[2]


def build(n: int, d: int, seed: int, cfg: IndexConfig | None = None) -> MapDatabase:
    rng = np.random.default_rng(seed)
    x = clustered_descriptors(n, d, seed=seed)
    db = MapDatabase.create(d, "netvlad-vgg16-pitts30k-4096@abc123", cfg)
    db.set_origin(48.1, 11.5, 520.0)
    kfs = []
    for i in range(n):
        q = rng.standard_normal(4)
        kfs.append(
            Keyframe(
                stamp=float(rng.uniform(0, 1e9)),
                frame_id="map",
                position=rng.uniform(-1e3, 1e3, 3),
                orientation=q / np.linalg.norm(q),
                latlonalt=(48.1 + i * 1e-5, 11.5, 520.0 + i) if i % 3 else None,
                source=f"run{seed}.mcap:/cam/image/compressed",
                thumbnail=(b"\xff\xd8\xff" + rng.bytes(20)) if i % 2 else None,
            )
        )
    db.add(kfs, x)
    return db


def assert_same(a: MapDatabase, b: MapDatabase) -> None:
    assert len(a) == len(b) and a.descriptor_dim == b.descriptor_dim
    assert a.model_fingerprint == b.model_fingerprint and a.origin == b.origin
    assert a.index_config == b.index_config and a.next_id == b.next_id
    ids = np.sort(a.ids)
    np.testing.assert_array_equal(ids, np.sort(b.ids))
    for i in ids[:: max(1, len(ids) // 50)]:
        assert a.keyframe(int(i)) == b.keyframe(int(i))
    np.testing.assert_array_equal(a.descriptors(ids), b.descriptors(ids))
    np.testing.assert_array_equal(a.positions(ids), b.positions(ids))
    np.testing.assert_array_equal(a.orientations(ids), b.orientations(ids))
    np.testing.assert_array_equal(a.stamps(ids), b.stamps(ids))
    q = a.descriptors(ids[:10])
    ra, rb = a.search(q, 5), b.search(q, 5)
    np.testing.assert_array_equal(ra.ids, rb.ids)
    np.testing.assert_array_equal(ra.scores, rb.scores)


@pytest.mark.parametrize(
    ("kind", "n"), [("flat", 300), ("hnsw", 300), ("ivfpq", 200), ("ivfpq", 10000)], ids=str
)
def test_round_trip(tmp_path, kind, n):
    db = build(n, 32, seed=1, cfg=IndexConfig(kind=kind))
    db.remove(db.ids[:5])
    db.save(tmp_path / "map")
    back = MapDatabase.load(tmp_path / "map", expected_model_fingerprint=db.model_fingerprint)
    assert_same(db, back)
    manifest = json.loads((tmp_path / "map" / "manifest.json").read_text())
    assert manifest["counts"]["keyframes"] == n - 5
    assert manifest["origin"] == {"lat": 48.1, "lon": 11.5, "alt": 520.0}
    assert manifest["index"]["trained"] == (kind != "ivfpq" or n >= 9984)
    # descriptors.npy rows follow ascending ids
    x = np.load(tmp_path / "map" / "descriptors.npy", allow_pickle=False)
    np.testing.assert_array_equal(x, db.descriptors(np.sort(db.ids)))
    # save over an existing map replaces it
    back.add([Keyframe(stamp=1.0)], x[:1])
    back.save(tmp_path / "map")
    assert len(MapDatabase.load(tmp_path / "map")) == n - 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [".map.lock", "map"]


@pytest.fixture
def saved(tmp_path) -> Path:
    build(200, 16, seed=3).save(tmp_path / "m")
    return tmp_path / "m"


@pytest.mark.parametrize("name", ["keyframes.sqlite", "descriptors.npy", "index.faiss"])
def test_flipped_byte_is_refused(saved, name):
    p = saved / name
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x40
    p.write_bytes(bytes(data))
    with pytest.raises(MapCorruptError, match=name):
        MapDatabase.load(saved)


@pytest.mark.parametrize("name", ["keyframes.sqlite", "descriptors.npy", "index.faiss", "manifest.json"])
def test_truncated_file_is_refused(saved, name):
    p = saved / name
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(MapCorruptError, match=name):
        MapDatabase.load(saved)


@pytest.mark.parametrize("name", ["keyframes.sqlite", "descriptors.npy", "index.faiss"])
def test_missing_file_is_refused(saved, name):
    (saved / name).unlink()
    with pytest.raises(MapCorruptError, match=name):
        MapDatabase.load(saved)


def test_garbled_manifest_value_is_refused(saved):
    p = saved / "manifest.json"
    m = json.loads(p.read_text())
    m["counts"]["keyframes"] = 199  # valid JSON, wrong content
    p.write_text(json.dumps(m))
    with pytest.raises(MapCorruptError, match=r"manifest\.json"):
        MapDatabase.load(saved)


def test_wrong_schema_is_refused(saved):
    p = saved / "manifest.json"
    m = json.loads(p.read_text())
    m["schema_version"] = 99
    p.write_text(json.dumps(m))
    with pytest.raises(MapSchemaError, match=r"manifest.json.*99"):
        MapDatabase.load(saved)


def test_wrong_model_is_refused(saved):
    with pytest.raises(MapModelMismatchError, match=r"netvlad-vgg16-pitts30k-4096@abc123.*other-model"):
        MapDatabase.load(saved, expected_model_fingerprint="other-model")


def test_not_found(tmp_path):
    with pytest.raises(MapNotFoundError, match="nope"):
        MapDatabase.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MapNotFoundError, match=r"manifest\.json"):
        MapDatabase.load(tmp_path / "empty")


def test_refuses_to_overwrite_non_map_dir(tmp_path):
    d = tmp_path / "precious"
    d.mkdir()
    (d / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="not a map directory"):
        build(10, 8, seed=0).save(d)
    assert (d / "thesis.tex").exists()


# ------------------------------------------------------------------ crash safety
CHILD = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{repo!r}, {here!r}]
    from test_mapdb_storage import build
    db = build({n}, 128, seed=7)
    print("ready", flush=True)
    sys.stdin.readline()
    db.save({path!r})
    print("saved", flush=True)
    """
)


def _child(path: Path, n: int, crash_at: str | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("NETVLAD_MAPDB_CRASH_AT", None)
    if crash_at:
        env["NETVLAD_MAPDB_CRASH_AT"] = crash_at
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD.format(repo=str(REPO), here=str(Path(__file__).parent), n=n, path=str(path)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert p.stdout.readline().strip() == "ready"
    return p


@pytest.fixture(scope="module")
def old_and_new(tmp_path_factory):
    d = tmp_path_factory.mktemp("crash")
    old = build(300, 128, seed=5)
    new = build(6000, 128, seed=7)  # what the child saves (same seed)
    return d, old, new


@pytest.mark.parametrize(
    ("step", "expect"),
    [
        ("sqlite_written", "old"),
        ("files_written", "old"),
        ("old_moved_aside", "old"),
        ("new_in_place", "new"),
    ],
)
def test_kill_between_swap_steps(old_and_new, step, expect):
    d, old, new = old_and_new
    path = d / f"map_{step}"
    old.save(path)
    p = _child(path, 6000, crash_at=step)
    p.communicate("go\n", timeout=120)
    assert p.returncode == -signal.SIGKILL
    loaded = MapDatabase.load(path)
    assert_same(loaded, old if expect == "old" else new)
    # the next save cleans the leftovers and works
    loaded.save(path)
    assert sorted(x.name for x in d.iterdir() if x.name.startswith(f".map_{step}.")) == [f".map_{step}.lock"]


def test_kill_at_random_moments(old_and_new):
    d, old, new = old_and_new
    rng = np.random.default_rng(0)
    path = d / "map_random"
    old.save(path)
    seen = {"old": 0, "new": 0}
    # measure a full save to spread the kills over it
    p = _child(path, 6000)
    t0 = time.monotonic()
    p.communicate("go\n", timeout=120)
    full = time.monotonic() - t0
    old.save(path)
    for delay in rng.uniform(0, full * 1.1, 8):
        p = _child(path, 6000)
        p.stdin.write("go\n")
        p.stdin.flush()
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
        loaded = MapDatabase.load(path)
        if len(loaded) == len(old):
            assert_same(loaded, old)
            seen["old"] += 1
        else:
            assert_same(loaded, new)
            seen["new"] += 1
            old.save(path)
    assert seen["old"] >= 1, seen
