"""Schema 1 maps: refused with the migrate command named, migrated atomically, content kept.

The fixtures under data/ were written by the schema-1 code (commit 7df6a2d) from
``v1_content`` below; see data/README.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from netvlad_ros import cli
from netvlad_ros.mapdb import (
    SCHEMA_VERSION,
    Keyframe,
    MapCorruptError,
    MapDatabase,
    MapSchemaError,
    migrate,
)

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]


def v1_content() -> tuple[list[Keyframe], np.ndarray]:
    """The keyframes and descriptors the fixtures hold (the generator's recipe; keyframe 3
    was removed before saving)."""
    rng = np.random.default_rng(11)
    n, d = 12, 16
    x = rng.standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    kfs = []
    for i in range(n):
        q = rng.standard_normal(4)
        kfs.append(
            Keyframe(
                id=i,
                stamp=1000.0 + 0.5 * i,
                frame_id="map",
                position=rng.uniform(-50, 50, 3),
                orientation=q / np.linalg.norm(q),
                latlonalt=(47.3769 + i * 1e-5, 8.5417, 408.0 + i) if i % 3 else None,
                source=f"fixture.mcap:/cam/image#{i}",
                thumbnail=(b"\xff\xd8\xff" + rng.bytes(16)) if i % 2 else None,
            )
        )
    keep = [i for i in range(n) if i != 3]
    return [kfs[i] for i in keep], x[keep]


@pytest.fixture(params=["v1_flat", "v1_ivfpq"])
def v1_map(request, tmp_path) -> Path:
    dst = tmp_path / "map"
    shutil.copytree(DATA / request.param, dst)  # never touch the committed fixture
    return dst


def tree_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_v1_map_is_refused_naming_the_command(v1_map):
    with pytest.raises(MapSchemaError) as err:
        MapDatabase.load(v1_map)
    msg = str(err.value)
    assert "schema version 1" in msg and f"schema version {SCHEMA_VERSION}" in msg
    assert f"netvlad-ros migrate-map {v1_map}" in msg


def test_migrate_in_place_keeps_everything(v1_map):
    before = tree_bytes(v1_map)
    report = migrate(v1_map)
    assert (report.from_schema, report.to_schema, report.keyframes, report.keyframes_with_features) == (
        1,
        2,
        11,
        0,
    )
    assert report.migrated and "11 of 11 keyframes have no local features" in str(report)
    assert "netvlad-ros build-map" in str(report)
    db = MapDatabase.load(v1_map, expected_model_fingerprint="v1-fixture-model@0123abcd")
    assert db.count_with_features() == 0 and db.calibration is None
    kfs, x = v1_content()
    assert len(db) == 11 and db.next_id == 12 and db.origin == (47.3769, 8.5417, 408.0)
    for kf in kfs:
        got = db.keyframe(kf.id)
        assert (got.stamp, got.frame_id, got.latlonalt, got.source, got.thumbnail) == (
            kf.stamp, kf.frame_id, kf.latlonalt, kf.source, kf.thumbnail,
        )  # fmt: skip
        np.testing.assert_array_equal(got.position, kf.position)
        np.testing.assert_allclose(got.orientation, kf.orientation, atol=1e-15)
        assert not db.has_features(kf.id) and db.features(kf.id) is None
    ids = np.array([kf.id for kf in kfs])
    np.testing.assert_array_equal(db.descriptors(ids), x)
    np.testing.assert_array_equal(db.search(x, 1).ids[:, 0], ids)
    manifest = json.loads((v1_map / "manifest.json").read_text())
    assert manifest["schema_version"] == 2 and manifest["features"]["keyframes"] == 0
    # the old map is gone (replaced), its index bytes kept as they were
    assert tree_bytes(v1_map)["index.faiss"] == before["index.faiss"]
    assert sorted(p.name for p in v1_map.parent.iterdir()) == [".map.lock", "map"]
    again = migrate(v1_map)
    assert not again.migrated and "already schema 2" in str(again)


def test_migrate_to_output_leaves_the_source(v1_map, tmp_path):
    before = tree_bytes(v1_map)
    report = migrate(v1_map, tmp_path / "new")
    assert report.output == tmp_path / "new" and report.from_schema == 1
    assert tree_bytes(v1_map) == before
    assert len(MapDatabase.load(tmp_path / "new")) == 11
    with pytest.raises(MapSchemaError):
        MapDatabase.load(v1_map)


@pytest.mark.parametrize("step", ["sqlite_written", "files_written", "old_moved_aside"])
def test_interrupted_migration_keeps_the_old_map(v1_map, step):
    before = tree_bytes(v1_map)
    env = {**os.environ, "NETVLAD_MAPDB_CRASH_AT": step}
    code = f"from netvlad_ros.mapdb import migrate; migrate({str(v1_map)!r})"
    p = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, timeout=120, capture_output=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    with pytest.raises(MapSchemaError, match="migrate-map"):
        MapDatabase.load(v1_map)  # recovery puts the old map back; it is still schema 1
    assert tree_bytes(v1_map) == before
    assert migrate(v1_map).from_schema == 1
    assert len(MapDatabase.load(v1_map)) == 11


def test_migrate_refuses_corrupt_and_unknown_maps(v1_map, tmp_path):
    data = bytearray((v1_map / "descriptors.npy").read_bytes())
    data[-5] ^= 0x01
    (v1_map / "descriptors.npy").write_bytes(bytes(data))
    with pytest.raises(MapCorruptError, match=r"descriptors\.npy"):
        migrate(v1_map)
    future = tmp_path / "future"
    shutil.copytree(DATA / "v1_flat", future)
    m = json.loads((future / "manifest.json").read_text())
    m["schema_version"] = 99
    (future / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(MapSchemaError, match="99"):
        migrate(future)


def test_cli_migrate_map(v1_map, tmp_path, capsys):
    assert cli.main(["migrate-map", str(v1_map), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "schema 1" in out and "build-map" in out
    assert MapDatabase.load(tmp_path / "out").count_with_features() == 0
    assert cli.main(["migrate-map", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
