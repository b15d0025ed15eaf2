"""Bad input to PoseGraph raises PoseGraphError naming the problem, before GTSAM sees it,
and leaves the graph as it was."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from netvlad_ros.posegraph import PoseGraph, PoseGraphError, PoseGraphParams, check_covariance

COV = np.diag([0.01] * 3 + [1e-4] * 3)


def step(x: float) -> np.ndarray:
    out = np.eye(4)
    out[0, 3] = x
    return out


@pytest.fixture
def graph() -> PoseGraph:
    g = PoseGraph()
    for k in range(3):
        g.add_keyframe(10 + k, float(k), step(float(k)))
    return g


def assert_unchanged(g: PoseGraph, before: dict[int, np.ndarray]) -> None:
    after = g.optimized_poses()
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    g.add_keyframe(max(before) + 1, 99.0, step(3.0))  # and it still takes good input
    assert len(g) == len(before) + 1


@pytest.mark.parametrize(
    ("key", "stamp", "pose", "message"),
    [
        (11, 5.0, step(5.0), "already in the graph"),
        (-1, 5.0, step(5.0), "[0, 2**62)"),
        (1.5, 5.0, step(5.0), "must be an integer"),
        ("20", 5.0, step(5.0), "must be an integer"),
        (True, 5.0, step(5.0), "must be an integer"),
        (20, float("nan"), step(5.0), "stamp must be a finite number"),
        (20, 1.5, step(5.0), "older than the previous keyframe"),
        (20, 5.0, np.full((4, 4), np.nan), "not finite"),
        (20, 5.0, np.eye(3), "shape (3, 3)"),
        (20, 5.0, np.diag([2.0, 2.0, 2.0, 1.0]), "not a rotation"),
        (20, 5.0, np.diag([1.0, 1.0, -1.0, 1.0]), "not a rotation"),  # a reflection
        (20, 5.0, np.vstack([step(0.0)[:3], [1.0, 0.0, 0.0, 1.0]]), "last row"),
        (20, 5.0, ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]), "norm 0"),
        (20, 5.0, ([0.0, 0.0], [0.0, 0.0, 0.0, 1.0]), "shapes (3,) and (4,)"),
        (20, 5.0, ([0.0, math.inf, 0.0], [0.0, 0.0, 0.0, 1.0]), "not finite"),
        (20, 5.0, "pose", "not a 4x4 matrix"),
    ],
)
def test_bad_keyframe(graph, key, stamp, pose, message):
    before = graph.optimized_poses()
    with pytest.raises(PoseGraphError) as err:
        graph.add_keyframe(key, stamp, pose)
    assert message in str(err.value)
    assert_unchanged(graph, before)


def _asymmetric() -> np.ndarray:
    c = COV.copy()
    c[0, 1] = 0.001
    return c


def _indefinite() -> np.ndarray:
    c = COV.copy()
    c[2, 2] = -0.01
    return c


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"match_key": 99}, "match keyframe 99 is not in the graph"),
        ({"query_key": 98}, "query keyframe 98 is not in the graph"),
        ({"match_key": 12, "query_key": 12}, "to itself"),
        ({"T_match_query": np.full((4, 4), np.inf)}, "T_match_query: matrix is not finite"),
        ({"covariance": _asymmetric()}, "not symmetric"),
        ({"covariance": _indefinite()}, "not positive definite"),
        ({"covariance": np.zeros((6, 6))}, "not positive definite"),
        ({"covariance": np.full((6, 6), np.nan)}, "covariance: not finite"),
        ({"covariance": np.eye(5)}, "expected 6x6"),
        ({"covariance": np.diag([1.0] * 5 + [1e-16])}, "numerically singular"),
        (
            {"covariance": np.diag([1e-4] * 3 + [1e-11] * 3), "scale_known": False},
            "with the scale-free translation",
        ),
        ({"scale_known": "yes"}, "scale_known must be a bool"),
    ],
)
def test_bad_loop_closure(graph, kwargs, message):
    args = {
        "match_key": 10,
        "query_key": 12,
        "T_match_query": step(2.0),
        "covariance": COV,
        "scale_known": True,
    } | kwargs
    before = graph.optimized_poses()
    with pytest.raises(PoseGraphError) as err:
        graph.add_loop_closure(**args)
    assert message in str(err.value)
    assert graph.counters["loop_closures"] == 0
    assert_unchanged(graph, before)


def test_ros_flat_covariance_is_accepted(graph):
    graph.add_loop_closure(10, 12, step(2.0), COV.ravel().tolist(), True)  # a message's 36 values
    assert graph.counters["loop_closures"] == 1


def test_covariance_symmetry_tolerance_is_relative():
    c = COV * 1e6
    c[0, 1] = c[1, 0] + 1e-6  # 1e-10 of the largest entry: rounding, accepted and symmetrised
    out = check_covariance(c)
    np.testing.assert_array_equal(out, out.T)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("loop_kernel", "tls", "is not one of"),
        ("loop_kernel_param", 0.0, "must be > 0"),
        ("closure_iterations", 0, "integer >= 1"),
        ("relinearize_skip", 1.5, "integer >= 1"),
        ("odom_translation_sigma_per_m", -0.1, "must be >= 0"),
        ("prior_rotation_sigma", float("nan"), "finite number"),
        ("scale_free_translation_sigma", True, "finite number"),
    ],
)
def test_bad_params(field, value, message):
    with pytest.raises(PoseGraphError) as err:
        PoseGraph(PoseGraphParams(**{field: value}))
    assert field in str(err.value) and message in str(err.value)


def test_unknown_keys_in_queries(graph):
    for call in (graph.optimized_pose, graph.odometry_pose, graph.pose_covariance):
        with pytest.raises(PoseGraphError, match="keyframe 7 is not in the graph"):
            call(7)


def test_pending_keyframe_has_no_marginal_yet(graph):
    graph.add_keyframe(20, 9.0, step(9.0), update=False)
    np.testing.assert_allclose(graph.optimized_pose(20)[:3, 3], [9.0, 0.0, 0.0])  # the initial guess
    with pytest.raises(PoseGraphError, match="pending"):
        graph.pose_covariance(20)
    graph.update()
    assert graph.pose_covariance(20).shape == (6, 6)


def test_an_ill_conditioned_system_switches_to_qr_and_goes_on():
    # Every step covariance is positive definite (variances 1e-8 m^2 to 1 rad^2), yet iSAM2's
    # Cholesky calls the chain indeterminate at the fifth keyframe (measured); the graph
    # rebuilds itself with QR factorisation and carries on, losing nothing.
    cov = np.diag(np.geomspace(1e-8, 1.0, 6))
    graph = PoseGraph()
    for k in range(8):
        graph.add_keyframe(k, float(k), step(float(k)), cov)
    assert graph.counters["isam2_rebuilt_with_qr"] == 1
    poses = graph.optimized_poses()
    for k in range(8):  # no closure: the optimum is the odometry itself
        np.testing.assert_allclose(poses[k], step(float(k)), atol=1e-6)  # measured 0
    # Closures still work: odometry leaves yaw loose (1 rad^2), a closure saying keyframe 7 is
    # turned 1 deg sets it.
    turned = step(7.0)
    turned[:3, :3] = Rotation.from_euler("z", 1.0, degrees=True).as_matrix()
    graph.add_loop_closure(0, 7, turned, COV, True)
    yaw = Rotation.from_matrix(graph.optimized_pose(7)[:3, :3]).as_euler("xyz", degrees=True)[2]
    assert abs(yaw - 1.0) < 0.1  # measured 0.99993 deg
    assert graph.pose_covariance(7).shape == (6, 6)
