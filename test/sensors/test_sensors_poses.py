"""The live pose buffer and keyframe selector the node uses (sensors/poses.py, no ROS).

Reference values are worked out by hand or computed independently with scipy's Slerp
and numpy's interp, not with the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from netvlad_ros.sensors.errors import SensorError
from netvlad_ros.sensors.poses import (
    KeyframeParams,
    KeyframeSelector,
    PoseBuffer,
    PoseError,
    PoseOrderError,
    PoseTrack,
    select_keyframes,
)


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
    sel = KeyframeSelector(KeyframeParams(distance_m=1.0, angle_deg=15.0, period_s=0.0))
    assert sel.is_due(0.0, np.zeros(3), yaw_q(0))  # the first frame always is
    sel.take(0.0, np.zeros(3), yaw_q(0))
    assert not sel.is_due(100.0, np.array([0.9, 0.0, 0.0]), yaw_q(14))  # no interval: time alone never
    assert sel.is_due(1.0, np.array([0.0, 1.0, 0.0]), yaw_q(0))
    assert sel.is_due(1.0, np.zeros(3), yaw_q(-16))
    sel.configure(KeyframeParams(2.0, 30.0, 5.0))  # thresholds change, the last keyframe stays
    assert not sel.is_due(1.0, np.array([1.5, 0.0, 0.0]), yaw_q(20))
    assert sel.is_due(5.0, np.zeros(3), yaw_q(0))
    with pytest.raises(SensorError, match=r"KeyframeParams.distance_m must be in \[0, 1e\+09\], got -1.0"):
        sel.configure(KeyframeParams(-1.0, 30.0, 0.0))
    with pytest.raises(SensorError, match=r"KeyframeParams\.period_s must be finite"):
        sel.configure(KeyframeParams(1.0, 30.0, float("nan")))
    sel.reset()
    assert sel.is_due(1.0, np.zeros(3), yaw_q(0))


# ----------------------------------------------------------------------------- interpolation


def test_pose_track_interpolation_by_hand() -> None:
    # samples: t=0 at origin facing 0 deg; t=1 at (2,0,0) facing 90 deg; t=3 at (2,4,0) facing 90 deg
    track = PoseTrack(
        np.array([0.0, 1.0, 3.0]),
        np.array([[0, 0, 0], [2, 0, 0], [2, 4, 0]], float),
        np.array([yaw_q(0), yaw_q(90), yaw_q(90)]),
    )
    p, q, ok = track.interpolate(np.array([0.5, 2.0, 3.0, -0.5, 4.5, 0.25]), max_gap_s=1.0)
    assert ok.tolist() == [True, True, True, True, False, True]
    assert p[0] == pytest.approx([1.0, 0.0, 0.0])
    assert np.allclose(np.abs(q[0] @ np.array(yaw_q(45))), 1.0)  # slerp halfway: 45 deg
    assert p[5] == pytest.approx([0.5, 0.0, 0.0])
    assert np.allclose(np.abs(q[5] @ np.array(yaw_q(22.5))), 1.0)
    assert p[1] == pytest.approx([2.0, 2.0, 0.0])
    assert p[2] == pytest.approx([2.0, 4.0, 0.0])
    assert p[3] == pytest.approx([0.0, 0.0, 0.0])  # before the first sample: hold, no extrapolation
    assert np.isnan(p[4]).all()
    # t=2 is 1 s from both neighbours: a 0.9 s gap is too short
    _, _, ok = track.interpolate(2.0, max_gap_s=0.9)
    assert not ok[0]
    # exactly on a sample is always fine
    _, _, ok = track.interpolate(1.0, max_gap_s=0.0)
    assert ok[0]


def test_keyframe_selection_by_hand() -> None:
    ident = np.tile(yaw_q(0), (6, 1))
    x = np.array([0.0, 0.4, 0.9, 1.0, 1.5, 2.1])
    pos = np.stack([x, np.zeros(6), np.zeros(6)], axis=1)
    t = np.zeros(6)
    # every 1 m: 0 (first), 1.0 (1.0 from 0), 2.1 (1.1 from 1.0)
    assert select_keyframes(t, pos, ident, KeyframeParams(1.0, 0.0, 0.0)).tolist() == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]
    # every 15 deg: 0 (first), 20 (20 from 0), 40 (20 from 20); 10 and 30 are 10 away
    q = np.array([yaw_q(a) for a in (0, 10, 20, 30, 40)])
    z = np.zeros((5, 3))
    assert select_keyframes(np.zeros(5), z, q, KeyframeParams(0.0, 15.0, 0.0)).tolist() == [
        True,
        False,
        True,
        False,
        True,
    ]
    # every 2 s: 0, 2, 4.5
    st = np.array([0.0, 1.0, 2.0, 3.0, 4.5])
    assert select_keyframes(st, z, np.tile(yaw_q(0), (5, 1)), KeyframeParams(0.0, 0.0, 2.0)).tolist() == [
        True, False, True, False, True,
    ]  # fmt: skip
    # ANY threshold: distance 5 m never, angle 15 deg at frame 2, time 2 s at frame 3 (2 s after frame... 0?)
    # frames: t 0,1,2,3 ; yaw 0,0,20,20 -> 0 first, 2 by angle, then frame 3 is 1 s and 0 deg from frame 2
    q4 = np.array([yaw_q(a) for a in (0, 0, 20, 20)])
    mask = select_keyframes(
        np.array([0.0, 1.0, 2.0, 3.0]), np.zeros((4, 3)), q4, KeyframeParams(5.0, 15.0, 2.0)
    )
    assert mask.tolist() == [True, False, True, False]
    # every threshold off (0): every frame
    assert select_keyframes(
        np.zeros(3), np.zeros((3, 3)), np.tile(yaw_q(0), (3, 1)), KeyframeParams(0.0, 0.0, 0.0)
    ).all()
