"""The live pose buffer and keyframe selector the node uses (sensors/poses.py, no ROS).

Reference values are worked out by hand or computed independently with scipy's Slerp
and numpy's interp, not with the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from netvlad_ros.sensors.poses import KeyframeSelector, PoseBuffer, PoseError, PoseOrderError, PoseTrack


def yaw_q(deg: float) -> np.ndarray:
    """Quaternion (x, y, z, w) of a rotation by ``deg`` degrees about z (written out by hand)."""
    h = math.radians(deg) / 2
    return np.array([0.0, 0.0, math.sin(h), math.cos(h)])


def _same_rotation(q: np.ndarray, want: np.ndarray) -> bool:
    return bool(np.isclose(abs(float(np.dot(q, want))), 1.0, atol=1e-9))


def test_lookup_interpolates_position_and_slerps_orientation() -> None:
    buf = PoseBuffer()
    buf.add(10.0, np.zeros(3), yaw_q(0))
    buf.add(11.0, np.array([2.0, 0.0, 0.0]), yaw_q(90))
    pos, quat = buf.lookup(10.25, max_age=1.0)
    assert pos == pytest.approx([0.5, 0.0, 0.0])
    assert _same_rotation(quat, yaw_q(22.5))
    pos, quat = buf.lookup(11.0, max_age=0.0)  # exactly on a sample
    assert pos == pytest.approx([2.0, 0.0, 0.0]) and _same_rotation(quat, yaw_q(90))


def test_lookup_holds_the_nearest_sample_within_max_age_else_none() -> None:
    buf = PoseBuffer()
    assert buf.lookup(0.0, 1.0) is None  # empty
    buf.add(0.0, np.zeros(3), yaw_q(0))
    buf.add(10.0, np.array([5.0, 0.0, 0.0]), yaw_q(30))
    # after the newest sample (the usual case live: the image is newer than the last odom)
    pos, quat = buf.lookup(10.2, max_age=0.5)
    assert pos == pytest.approx([5.0, 0.0, 0.0]) and _same_rotation(quat, yaw_q(30))
    assert buf.lookup(10.6, max_age=0.5) is None
    assert buf.lookup(-0.6, max_age=0.5) is None
    # inside a gap too long to interpolate over, the node holds the nearest sample ...
    pos, _ = buf.lookup(9.7, max_age=0.5)
    assert pos == pytest.approx([5.0, 0.0, 0.0])
    assert buf.lookup(5.0, max_age=0.5) is None
    # ... while a whole-track lookup (the offline map builder) gives no pose there
    track = PoseTrack(
        np.array([0.0, 10.0]), np.array([[0, 0, 0], [5, 0, 0]], float), np.stack([yaw_q(0), yaw_q(30)])
    )
    _, _, ok = track.interpolate(9.7, max_gap_s=0.5)
    assert not ok[0]


def test_buffer_and_track_agree_with_scipy_slerp_on_a_random_track() -> None:
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.uniform(0.05, 0.2, 60))
    positions = rng.normal(size=(60, 3)).cumsum(axis=0)
    rots = Rotation.from_rotvec(rng.normal(scale=0.3, size=(60, 3)))
    buf = PoseBuffer()
    for t, p, q in zip(times, positions, rots.as_quat(), strict=True):
        buf.add(t, p, q)
    track = PoseTrack(times, positions, rots.as_quat())
    query = rng.uniform(times[0], times[-1], 40)
    want_pos = np.stack([np.interp(query, times, positions[:, k]) for k in range(3)], axis=1)
    want_rot = Slerp(times, rots)(query)
    got_pos, got_quat, ok = track.interpolate(query, max_gap_s=1.0)
    assert ok.all()
    np.testing.assert_allclose(got_pos, want_pos, atol=1e-9)
    assert np.all((want_rot.inv() * Rotation.from_quat(got_quat)).magnitude() < 1e-9)
    for i, t in enumerate(query):
        pos, quat = buf.lookup(t, max_age=1.0)
        np.testing.assert_allclose(pos, want_pos[i], atol=1e-9)
        assert (want_rot[i].inv() * Rotation.from_quat(quat)).magnitude() < 1e-9


def test_bad_samples_raise_and_time_going_backwards_is_its_own_error() -> None:
    buf = PoseBuffer()
    buf.add(5.0, np.zeros(3), yaw_q(0))
    for stamp, pos, quat in (
        (6.0, [math.nan, 0.0, 0.0], yaw_q(0)),
        (6.0, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]),  # zero quaternion
        (6.0, [0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]),  # far from unit norm
        (math.inf, [0.0, 0.0, 0.0], yaw_q(0)),
        (6.0, [0.0, 0.0], yaw_q(0)),
    ):
        with pytest.raises(PoseError) as info:
            buf.add(stamp, np.array(pos), np.array(quat))
        assert not isinstance(info.value, PoseOrderError)
    with pytest.raises(PoseOrderError, match="older"):
        buf.add(4.0, np.zeros(3), yaw_q(0))
    assert issubclass(PoseOrderError, PoseError) and issubclass(PoseError, ValueError)
    assert len(buf) == 1
    # a sample at the newest stamp replaces it (a re-published pose: the last one wins)
    buf.add(5.0, np.ones(3), yaw_q(0))
    assert len(buf) == 1 and buf.lookup(5.0, 0.0)[0] == pytest.approx([1.0, 1.0, 1.0])


def test_memory_is_bounded_and_keeps_the_newest_samples() -> None:
    buf = PoseBuffer(maxlen=5)
    for k in range(23):
        buf.add(float(k), np.array([float(k), 0.0, 0.0]), yaw_q(0))
        assert len(buf) == min(k + 1, 5)
    assert buf.lookup(17.0, max_age=0.0) is None  # dropped
    for k in range(18, 23):
        assert buf.lookup(float(k), max_age=0.0)[0] == pytest.approx([k, 0.0, 0.0])
    assert buf.lookup(20.5, max_age=1.0)[0] == pytest.approx([20.5, 0.0, 0.0])
    buf.clear()
    assert len(buf) == 0 and buf.lookup(22.0, 1.0) is None


def test_keyframe_selector_frame_by_frame_with_reconfigure_and_reset() -> None:
    sel = KeyframeSelector(distance_m=1.0, angle_deg=15.0, interval_s=None)
    assert sel.is_due(0.0, np.zeros(3), yaw_q(0))  # the first frame always is
    sel.take(0.0, np.zeros(3), yaw_q(0))
    assert not sel.is_due(100.0, np.array([0.9, 0.0, 0.0]), yaw_q(14))  # no interval: time alone never
    assert sel.is_due(1.0, np.array([0.0, 1.0, 0.0]), yaw_q(0))
    assert sel.is_due(1.0, np.zeros(3), yaw_q(-16))
    sel.configure(2.0, 30.0, 5.0)  # thresholds change, the last keyframe stays
    assert not sel.is_due(1.0, np.array([1.5, 0.0, 0.0]), yaw_q(20))
    assert sel.is_due(5.0, np.zeros(3), yaw_q(0))
    with pytest.raises(ValueError, match="distance_m"):
        sel.configure(-1.0, 30.0, None)
    sel.reset()
    assert sel.is_due(1.0, np.zeros(3), yaw_q(0))
