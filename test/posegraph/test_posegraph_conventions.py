"""Frames and covariance order: ROS [x, y, z, roll, pitch, yaw] in the parent frame's axes
against GTSAM's body-frame [rx, ry, rz, tx, ty, tz], checked by sampling and in graphs
where a closure constrains one rotation axis only."""

from __future__ import annotations

import math

import gtsam
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from netvlad_ros.posegraph import (
    PoseGraph,
    PoseGraphParams,
    as_matrix,
    invert,
    position_quaternion,
    ros_to_tangent_covariance,
    tangent_to_ros_covariance,
)


def pose(yaw_deg: float = 0.0, t: tuple[float, float, float] = (0.0, 0.0, 0.0), rotvec=None) -> np.ndarray:
    out = np.eye(4)
    rot = Rotation.from_euler("z", yaw_deg, degrees=True)
    if rotvec is not None:
        rot = Rotation.from_rotvec(rotvec) * rot
    out[:3, :3] = rot.as_matrix()
    out[:3, 3] = t
    return out


def sampled_tangent_covariance(cov_ros: np.ndarray, base: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Empirical GTSAM tangent covariance of poses perturbed as the ROS convention says."""
    rng = np.random.default_rng(seed)
    deltas = rng.multivariate_normal(np.zeros(6), cov_ros, size=n)
    xi = np.empty((n, 6))
    for i, d in enumerate(deltas):
        perturbed = np.eye(4)
        perturbed[:3, :3] = (
            Rotation.from_rotvec(d[3:]).as_matrix() @ base[:3, :3]
        )  # about the parent's fixed axes
        perturbed[:3, 3] = base[:3, 3] + d[:3]  # in the parent's axes
        xi[i] = gtsam.Pose3.Logmap(gtsam.Pose3(invert(base) @ perturbed))
    return np.cov(xi.T)


def test_covariance_conversion_matches_sampled_perturbations():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 6))
    cov_ros = 1e-4 * (a @ a.T + 0.5 * np.eye(6))  # correlated, anisotropic
    base = pose(rotvec=Rotation.random(random_state=4).as_rotvec(), t=(3.0, -2.0, 1.0))
    empirical = sampled_tangent_covariance(cov_ros, base, n=20000, seed=5)
    scale = np.max(np.abs(empirical))
    predicted = ros_to_tangent_covariance(cov_ros, base[:3, :3])
    # measured 0.008 (sampling error of 20000 draws)
    assert np.max(np.abs(predicted - empirical)) / scale < 0.03
    # Both halves of the conversion matter: a bare reordering (no frame rotation) is far off.
    reordered = cov_ros[np.ix_([3, 4, 5, 0, 1, 2], [3, 4, 5, 0, 1, 2])]
    assert np.max(np.abs(reordered - empirical)) / scale > 0.3  # measured 0.77
    np.testing.assert_allclose(tangent_to_ros_covariance(predicted, base[:3, :3]), cov_ros, atol=1e-15)


def two_keyframes_with_closure(
    match_pose: np.ndarray, z_true: np.ndarray, z_odom: np.ndarray, closure_ros_var: list[float], odom_ros_var
) -> np.ndarray:
    """Keyframe 0 at ``match_pose``, keyframe 1 by odometry ``z_odom``, a closure saying ``z_true``;
    returns the optimised relative pose inv(x0) @ x1."""
    graph = PoseGraph(PoseGraphParams(loop_kernel="none"))
    graph.add_keyframe(0, 0.0, match_pose)
    graph.add_keyframe(1, 1.0, match_pose @ z_odom, np.diag(odom_ros_var))
    graph.add_loop_closure(0, 1, z_true, np.diag(closure_ros_var), True)
    graph.update(5)
    poses = graph.optimized_poses()
    return invert(poses[0]) @ poses[1]


def test_a_yaw_only_closure_fixes_yaw_and_nothing_else():
    z_true = pose(40.0, (2.0, 1.0, 0.0))
    z_odom = pose(45.0, (2.3, 0.8, 0.1))
    tight, loose = 1e-8, 1e4
    rel = two_keyframes_with_closure(
        pose(30.0, (5.0, 5.0, 0.0)),
        z_true,
        z_odom,
        closure_ros_var=[loose] * 5 + [tight],  # only yaw is known
        odom_ros_var=[tight] * 5 + [1.0],  # odometry knows everything but yaw
    )
    yaw = math.degrees(math.atan2(rel[1, 0], rel[0, 0]))
    assert abs(yaw - 40.0) < 0.01  # measured 5e-8 deg: the closure's yaw
    np.testing.assert_allclose(
        rel[:3, 3], z_odom[:3, 3], atol=1e-3
    )  # measured 3e-13 m: odometry's translation
    # A reading in GTSAM order would have taken index 5 as tz and left yaw at odometry's 45 deg.


def test_closure_rotation_axes_are_the_match_frames():
    # The relative pose turns 90 deg, so the match frame's X axis is the query's -Y axis.
    z_true = pose(90.0, (1.0, 0.5, 0.0))
    a, b = math.radians(3.0), math.radians(2.0)
    z_odom = pose(90.0, (1.0, 0.5, 0.0), rotvec=[a, b, 0.0])  # rotated about match X by a, match Y by b
    tight, loose = 1e-8, 1e4
    rel = two_keyframes_with_closure(
        pose(0.0),
        z_true,
        z_odom,
        closure_ros_var=[loose, loose, loose, tight, loose, loose],  # only roll about match X
        odom_ros_var=[tight] * 3 + [1.0] * 3,
    )
    err = Rotation.from_matrix(rel[:3, :3] @ z_true[:3, :3].T).as_rotvec()  # in match-frame axes
    np.testing.assert_allclose(err, [0.0, b, 0.0], atol=1e-4)  # measured |dev| 3.5e-6 rad
    # Without the frame rotation the tight axis would be the query's X (= match Y): err [a, 0, 0].


def test_pose_covariance_reports_ros_order_in_map_axes():
    # The odometry covariance (odometry-frame axes) of a keyframe turned 90 deg comes back
    # unchanged as its marginal: x and y would swap if either conversion ignored the rotation.
    cov = np.diag([0.04, 0.01, 0.0025, 1e-4, 4e-4, 9e-4])
    cov[0, 5] = cov[5, 0] = 0.004  # x correlated with yaw
    graph = PoseGraph()
    graph.add_keyframe(0, 0.0, np.eye(4))
    graph.add_keyframe(1, 1.0, pose(90.0, (1.0, 0.0, 0.0)), cov)
    # measured max deviation 2e-8 (the first keyframe's 1e-4 prior sigma)
    np.testing.assert_allclose(graph.pose_covariance(1), cov, atol=1e-6)
    assert graph.counters["odom_covariance_missing"] == 0


@pytest.mark.parametrize(
    ("given", "reason"),
    [(None, "missing"), (np.zeros(36), "zero"), (np.diag([0.04, 0.01, 0, 0, 0, 1e-3]), "invalid")],
)
def test_unusable_odometry_covariance_falls_back_to_distance_and_angle(given, reason):
    p = PoseGraphParams()
    graph = PoseGraph(p)
    graph.add_keyframe(0, 0.0, np.eye(4))
    graph.add_keyframe(1, 1.0, pose(90.0, (3.0, 0.0, 0.0)), given)  # 3 m, pi/2 rad
    assert graph.counters[f"odom_covariance_{reason}"] == 1
    sigma_t = p.odom_translation_sigma_per_m * 3.0
    sigma_r = p.odom_rotation_sigma_per_m * 3.0 + p.odom_rotation_sigma_per_rad * math.pi / 2
    expected = np.diag([sigma_t**2] * 3 + [sigma_r**2] * 3)  # ROS order
    # measured 1e-7: the first keyframe's 1e-4 rad prior sigma times the 3 m lever arm
    np.testing.assert_allclose(graph.pose_covariance(1), expected, atol=1e-6)
    if reason == "invalid":
        assert "positive definite" in (graph.last_odom_covariance_problem or "")


def test_position_quaternion_pairs_use_ros_order():
    q = np.array([0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)])  # (x, y, z, w): yaw 90 deg
    mat = as_matrix((np.array([1.0, 2.0, 3.0]), q))
    np.testing.assert_allclose(mat, pose(90.0, (1.0, 2.0, 3.0)), atol=1e-12)
    p, q2 = position_quaternion(mat)
    np.testing.assert_allclose(p, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(abs(q2 @ q), 1.0, atol=1e-12)
    # Slightly off-unit quaternions (float32 messages) are normalised, not rejected.
    np.testing.assert_allclose(as_matrix(([0, 0, 0], q * 1.0005))[:3, :3], mat[:3, :3], atol=1e-12)
