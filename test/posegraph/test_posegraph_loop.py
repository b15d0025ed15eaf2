"""PoseGraph on a simulated loop: drift is corrected, one wrong closure changes nothing,
scale-free closures fix rotation without imposing a scale.

The world (netvlad_ros.posegraph.simulation, seeded): 200 keyframes 1 m apart, once
round a 40 m square and 40 m along its first side again; odometry with a 0.1 deg/m
heading bias, 0.1 deg/sqrt(m) heading noise, 1 % scale error and 1 cm/sqrt(m) noise;
21 loop closures from the revisits, truth perturbed by 5 cm / 0.5 deg (their stated sigma).
Margins beside the asserts were measured with the default PoseGraphParams.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from netvlad_ros.posegraph import PoseGraph, PoseGraphParams, ate_rmse
from netvlad_ros.posegraph.simulation import closures_from_truth, drifting_odometry, square_loop

TRUTH = square_loop()
SEEDS = (0, 1, 2)
CONFIDENT = np.diag([0.05**2] * 3 + [math.radians(0.5) ** 2] * 3)
# Wrong closures (match, query): claimed "same place" (identity) between keyframes 30-75 m
# apart; the first arrives before any correct closure, the others after some.
WRONG = ((40, 150), (80, 165), (80, 190), (120, 199))


def run(
    seed: int,
    wrong: tuple[int, int] | None = None,
    scale_known: bool = True,
    translation_factor: float = 1.0,
    params: PoseGraphParams | None = None,
) -> tuple[np.ndarray, np.ndarray, PoseGraph]:
    """Feed the graph keyframe by keyframe (incremental updates); return (odometry, optimised, graph)."""
    odom = drifting_odometry(TRUTH, seed=seed)
    closures = {c.query_key: c for c in closures_from_truth(TRUTH, seed=seed, scale_known=scale_known)}
    graph = PoseGraph(params)
    for k in range(len(TRUTH)):
        graph.add_keyframe(k, 100.0 + k, odom[k])
        if k in closures:
            c = closures[k]
            rel = c.T_match_query.copy()
            rel[:3, 3] *= translation_factor
            graph.add_loop_closure(c.match_key, c.query_key, rel, c.covariance, c.scale_known)
        if wrong is not None and k == wrong[1]:
            graph.add_loop_closure(wrong[0], wrong[1], np.eye(4), CONFIDENT, True)
    poses = graph.optimized_poses()
    return odom, np.array([poses[k] for k in range(len(TRUTH))]), graph


@pytest.fixture(scope="module")
def clean_runs() -> dict[int, tuple[np.ndarray, np.ndarray, PoseGraph]]:
    return {seed: run(seed) for seed in SEEDS}


def test_simulation_drifts_and_closes_loops(clean_runs):
    for seed, (odom, _, graph) in clean_runs.items():
        # measured: aligned odometry ATE 2.21 / 2.02 / 2.38 m, 21 closures each
        assert ate_rmse(odom, TRUTH, align=True) > 1.5, seed
        assert graph.counters["loop_closures"] >= 15, seed


def test_loop_closures_cut_the_trajectory_error(clean_runs):
    for seed, (odom, est, _) in clean_runs.items():
        for align in (True, False):
            ate_odom = ate_rmse(odom, TRUTH, align=align)
            ate_opt = ate_rmse(est, TRUTH, align=align)
            # issue 11's demo target: <= 25 % of odometry and < 1 m. Measured aligned:
            # 0.233/2.21, 0.302/2.02, 0.283/2.38 m (ratio <= 0.150); unaligned: 0.38/4.56,
            # 0.61/4.10, 0.62/4.39 m (ratio <= 0.148).
            assert ate_opt <= 0.20 * ate_odom, (seed, align, ate_opt, ate_odom)
            assert ate_opt < 0.8, (seed, align, ate_opt)


def test_correct_closures_are_used(clean_runs):
    for seed, (_, _, graph) in clean_runs.items():
        weights = [s.weight for s in graph.loop_closures()]
        # measured: smallest Cauchy weight 0.51 / 0.55 / 0.29 (1 = fully used)
        assert min(weights) > 0.2, seed
        assert np.median(weights) > 0.7, seed  # measured 0.82-0.84


def test_latest_correction_maps_odometry_onto_the_truth(clean_runs):
    for seed, (odom, est, graph) in clean_runs.items():
        correction = graph.latest_correction()  # T_map_odom
        corrected = correction @ odom[-1]
        err_corrected = np.linalg.norm(corrected[:3, 3] - TRUTH[-1, :3, 3])
        err_odom = np.linalg.norm(odom[-1, :3, 3] - TRUTH[-1, :3, 3])
        # measured: 0.39 / 0.76 / 0.65 m corrected against 6.95 / 7.59 / 8.62 m raw
        assert err_corrected < 0.2 * err_odom, (seed, err_corrected, err_odom)
        assert err_corrected < 1.0, (seed, err_corrected)
        np.testing.assert_allclose(corrected, est[-1], atol=1e-9)


def test_no_closures_no_correction():
    odom = drifting_odometry(TRUTH[:50], seed=0)
    graph = PoseGraph()
    for k in range(50):
        graph.add_keyframe(k, float(k), odom[k])
    # Odometry alone is already the optimum: the map frame stays the odometry frame.
    np.testing.assert_allclose(graph.latest_correction(), np.eye(4), atol=1e-6)  # measured 4e-14


@pytest.mark.parametrize("wrong", WRONG)
def test_one_wrong_closure_does_not_bend_the_graph(clean_runs, wrong):
    for seed in SEEDS:
        _, est_wrong, graph = run(seed, wrong=wrong)
        ate_clean = ate_rmse(clean_runs[seed][1], TRUTH, align=True)
        ate_wrong = ate_rmse(est_wrong, TRUTH, align=True)
        # issue 11 "done when": within 20 % of the clean run. Measured ratios 0.984-1.008
        # over these 4 x 3 cases (seed 0 without a kernel: 13-19 m; Huber 1.345: 0.9-5.4 m).
        assert ate_wrong <= 1.05 * ate_clean, (seed, wrong, ate_wrong, ate_clean)
        state = next(s for s in graph.loop_closures() if (s.match_key, s.query_key) == wrong)
        assert state.weight < 1e-3, (seed, wrong, state)  # measured 2e-6 to 4e-6: ignored


def test_without_a_kernel_the_wrong_closure_does_bend_it(clean_runs):
    # The test above could pass for a reason other than the kernel; this shows it cannot.
    _, est, _ = run(0, wrong=(80, 190), params=PoseGraphParams(loop_kernel="none"))
    ate_clean = ate_rmse(clean_runs[0][1], TRUTH, align=True)
    assert ate_rmse(est, TRUTH, align=True) > 5 * ate_clean  # measured 13.4 m against 0.23 m


def heading_rms_deg(poses: np.ndarray) -> float:
    yaw = [math.atan2(p[1, 0], p[0, 0]) for p in poses]
    yaw_true = [math.atan2(p[1, 0], p[0, 0]) for p in TRUTH]
    diff = (np.array(yaw) - np.array(yaw_true) + math.pi) % (2 * math.pi) - math.pi
    return math.degrees(float(np.sqrt(np.mean(diff**2))))


def test_scale_free_closures_fix_rotation_drift():
    for seed in SEEDS:
        odom, est, graph = run(seed, scale_known=False)
        assert graph.counters["loop_closures_scale_free"] >= 15
        # measured heading RMS: 10.5-11.0 deg raw, 0.9-1.5 deg optimised (ratio <= 0.14)
        assert heading_rms_deg(est) < 0.3 * heading_rms_deg(odom), seed
        # measured aligned ATE: 0.46/2.21, 0.72/2.02, 0.40/2.38 m (ratio <= 0.36)
        assert ate_rmse(est, TRUTH, align=True) < 0.5 * ate_rmse(odom, TRUTH, align=True), seed


def test_scale_free_closures_impose_no_scale():
    odom, est, _ = run(0, scale_known=False)
    # Unit translations claim the revisits lie 1 m apart (truly 0.6-2.0 m): that must not
    # pull on distances. Step lengths keep odometry's scale (measured max deviation 4e-4).
    steps = np.linalg.norm(np.diff(est[:, :3, 3], axis=0), axis=1)
    odom_steps = np.linalg.norm(np.diff(odom[:, :3, 3], axis=0), axis=1)
    assert np.max(np.abs(steps / odom_steps - 1.0)) < 2e-3
    # ... and the answer does not depend on the (meaningless) translation length at all.
    for factor in (5.0, 0.01):
        _, est_scaled, _ = run(0, scale_known=False, translation_factor=factor)
        # measured max position difference 3e-4 m (x5) and 8e-5 m (x0.01)
        assert np.max(np.abs(est_scaled[:, :3, 3] - est[:, :3, 3])) < 5e-3, factor


def test_scale_known_closures_with_wrong_scale_would_pull(clean_runs):
    # Counter-check for the test above: the same x5 translations given as metric do change the result.
    _, est, _ = run(0, translation_factor=5.0)
    assert np.max(np.abs(est[:, :3, 3] - clean_runs[0][1][:, :3, 3])) > 0.5  # measured 3.2 m


def test_batched_update_matches_incremental(clean_runs):
    odom = drifting_odometry(TRUTH, seed=0)
    graph = PoseGraph()
    for k in range(len(TRUTH)):
        graph.add_keyframe(k, float(k), odom[k], update=False)
    for c in closures_from_truth(TRUTH, seed=0):
        graph.add_loop_closure(c.match_key, c.query_key, c.T_match_query, c.covariance, True, update=False)
    assert graph.pending
    graph.update(10)
    assert not graph.pending
    est = graph.optimized_poses()
    inc = clean_runs[0][1]
    diff = max(np.linalg.norm(est[k][:3, 3] - inc[k][:3, 3]) for k in range(len(TRUTH)))
    assert diff < 0.1  # measured 0.013 m (ATE 0.23 m): both reach the same optimum


def test_trajectory_and_reset(clean_runs):
    _, est, graph = clean_runs[0]
    traj = graph.trajectory()
    assert len(traj) == len(TRUTH)
    np.testing.assert_array_equal(traj.keys, np.arange(len(TRUTH)))
    np.testing.assert_allclose(traj.stamps, 100.0 + np.arange(len(TRUTH)))
    np.testing.assert_allclose(traj.positions, est[:, :3, 3], atol=1e-9)
    for k in (0, 57, 199):  # the bulk read agrees with the one-key read
        np.testing.assert_allclose(graph.optimized_pose(k), est[k], atol=1e-12)
    # quaternions (x, y, z, w) of the same rotations
    np.testing.assert_allclose(Rotation.from_quat(traj.orientations).as_matrix(), est[:, :3, :3], atol=1e-9)


def test_reset_forgets_everything():
    graph = PoseGraph()
    graph.add_keyframe(1, 0.0, np.eye(4))
    graph.add_keyframe(2, 1.0, (np.array([1.0, 0, 0]), np.array([0, 0, 0, 1.0])))
    graph.reset()
    assert len(graph) == 0 and 1 not in graph
    np.testing.assert_array_equal(graph.latest_correction(), np.eye(4))
    assert len(graph.trajectory()) == 0
    graph.add_keyframe(1, 0.0, np.eye(4))  # the same key is new again
    assert graph.keys == [1]
