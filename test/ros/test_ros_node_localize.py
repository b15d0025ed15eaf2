"""netvlad_localizer in localization mode, in its own process, over real DDS.

The map (``node_map``) holds twelve generated scenes at known positions, described by
the real DescriptorExtractor on a small real model. The test publishes shifted,
brightened views of some of those places and checks, from the messages alone: the
right keyframe at rank 0 of ``~/hypotheses``, the image stamp carried over, the pose
of that keyframe on ``~/pose`` with a covariance, the best-match marker, and the
counts in ``/diagnostics``; an image older than the previous one is counted and
still answered.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

BASE_STAMP = 1_700_000_000.25


def view_of(scene: np.ndarray, shift: int = 4, gain: float = 1.05) -> np.ndarray:
    """Another view of a place: shifted by a few pixels and a little brighter."""
    m = np.float32([[1, 0, shift], [0, 1, -shift]])
    out = cv2.warpAffine(scene, m, (scene.shape[1], scene.shape[0]), borderMode=cv2.BORDER_REFLECT)
    return np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def test_localizes_known_places(start_node, node_client, node_map, scenes):
    from netvlad_ros.ros.conversions import sec_to_stamp, stamp_to_ns, stamp_to_sec
    from netvlad_ros.ros.tables import HYPOTHESIS_DTYPE

    child = start_node(
        {
            "map_path": str(node_map["path"]),
            "model_path": str(node_map["model"]),
            "device": "cpu",
            "diagnostics_period_s": 0.5,
            "localizer.top_k": 5,
            # the small test model scores other views of a place ~0.85, other places <= 0.4
            "localizer.min_score": 0.5,
            "localizer.min_confidence": 0.05,
        },
        namespace="/loc",
    )
    client = node_client(namespace="/loc")
    client.wait_ready(child)
    first = client.diagnostics[-1]
    assert first["map_size"] == "12" and first["mode"] == "localization" and first["device"] == "cpu"

    queries = [3, 7, 10]
    stamps = []
    for k, i in enumerate(queries):
        stamp = BASE_STAMP + k * 0.5
        stamps.append(stamp)
        client.send_image(view_of(scenes[i], shift=3 + k), stamp)
        msg, rows = client.hypotheses_for(stamp_to_ns(sec_to_stamp(stamp)))
        assert rows.dtype == HYPOTHESIS_DTYPE and len(rows) == 5
        assert msg.header.frame_id == "map"
        assert list(rows["rank"]) == [0, 1, 2, 3, 4]
        assert np.all(np.diff(rows["score"]) <= 1e-6), "hypotheses must be sorted best first"
        best = rows[0]
        assert best["keyframe_id"] == i, f"query of place {i} matched keyframe {best['keyframe_id']}"
        assert best["keyframe_stamp"] == pytest.approx(1000.0 + i)
        np.testing.assert_allclose([best["x"], best["y"], best["z"]], node_map["positions"][i], atol=1e-4)
        assert 0.6 < best["score"] <= 1.0 + 1e-5
        assert best["score"] - rows[1]["score"] > 0.2

    # one accepted pose per query, on the matched keyframe, with the image stamp
    assert client.ros.spin_until(lambda: len(client.poses) >= len(queries), 10.0), len(client.poses)
    for pose, i, stamp in zip(client.poses, queries, stamps, strict=True):
        assert stamp_to_sec(pose.header.stamp) == pytest.approx(stamp, abs=1e-6)
        assert pose.header.frame_id == "map"
        p = pose.pose.pose.position
        np.testing.assert_allclose([p.x, p.y, p.z], node_map["positions"][i], atol=1e-6)
        cov = np.array(pose.pose.covariance).reshape(6, 6)
        assert np.all(np.diag(cov) > 0) and np.count_nonzero(cov - np.diag(np.diag(cov))) == 0
        # confidence <= 1, so the position sigma is at least pose_sigma_m = 1 m
        assert cov[0, 0] >= 1.0 - 1e-9

    def last_sphere():
        spheres = [m for arr in client.markers for m in arr.markers if m.ns == "best_match"]
        return spheres[-1] if spheres and stamp_to_sec(spheres[-1].header.stamp) == stamps[-1] else None

    assert client.ros.spin_until(lambda: last_sphere() is not None, 10.0), "no best-match marker"
    assert last_sphere().pose.position.x == pytest.approx(node_map["positions"][queries[-1]][0])

    # an image older than the previous one: counted as time_backwards, still localized
    old = BASE_STAMP - 100.0
    client.send_image(view_of(scenes[5]), old)
    _, rows = client.hypotheses_for(stamp_to_ns(sec_to_stamp(old)))
    assert rows[0]["keyframe_id"] == 5

    n0 = len(client.diagnostics)
    d = client.diag(fresh_after=n0)
    assert int(d["frames_received"]) == 4
    assert int(d["frames_processed"]) == 4
    assert int(d["places_accepted"]) == 4
    assert int(d["frames_skipped"]) == 0
    assert int(d["rejected.time_backwards"]) == 1
    assert int(d["rejected_total"]) == 1
    assert 0 < float(d["latency_p50_ms"]) <= float(d["latency_p95_ms"]) < 60_000
    # a 12-keyframe map is too small to calibrate: the fallback is used, and diagnostics say why
    assert d["calibration"].startswith("not calibrated: ") and "fallback" in d["calibration"]
    assert d["localizer.min_inliers"] == "25 (fallback)"
    assert "localizer thresholds: not calibrated" in child.stderr_tail(100_000)
    assert child.proc.poll() is None


def test_map_without_local_features_publishes_no_pose(start_node, node_client, node_map, scenes, tmp_path):
    """A map whose keyframes hold no local features (e.g. migrated from schema 1) cannot verify
    anything: with the default parameters the node answers hypotheses but publishes no pose."""
    from netvlad_ros.mapdb import MapDatabase
    from netvlad_ros.ros.conversions import sec_to_stamp, stamp_to_ns

    db = MapDatabase.load(node_map["path"])
    for kid in db.ids:
        db.set_features(int(kid), None)
    bare = tmp_path / "bare_map"
    db.save(bare)
    child = start_node(
        {
            "map_path": str(bare),
            "model_path": str(node_map["model"]),
            "device": "cpu",
            "diagnostics_period_s": 0.5,
        },
        namespace="/bare",
    )
    client = node_client(namespace="/bare")
    client.wait_ready(child)
    for k, i in enumerate((3, 7)):
        stamp = BASE_STAMP + k
        client.send_image(view_of(scenes[i]), stamp)
        _, rows = client.hypotheses_for(stamp_to_ns(sec_to_stamp(stamp)))
        assert rows[0]["keyframe_id"] == i  # retrieval still finds the place ...
    n0 = len(client.diagnostics)
    d = client.diag(fresh_after=n0)
    assert int(d["frames_processed"]) == 2 and int(d["places_accepted"]) == 0  # ... but nothing verifies
    assert client.poses == []
    assert child.proc.poll() is None
