"""Seeded pose-graph test data: a loop with ground truth, drifting odometry, loop closures.

Used by the tests and benchmarks/bench_posegraph.py (no ROS, no images). The drift model
(``drifting_odometry``) is the one wheel odometry shows: a heading bias per metre
(a wheel-radius mismatch) plus random-walk noise, applied to the true per-step motion.

    truth = square_loop()                                   # (n, 4, 4), 1 m steps
    odom = drifting_odometry(truth, seed=0)                 # (n, 4, 4), starts at truth[0]
    closures = closures_from_truth(truth, seed=0)           # revisits of the first side
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.spatial.transform import Rotation

from netvlad_ros.posegraph.conventions import invert

Poses = NDArray[np.float64]  # (n, 4, 4)


@dataclass(frozen=True)
class SimulatedClosure:
    """A loop closure as a front end would report it (see ``PoseGraph.add_loop_closure``)."""

    match_key: int
    query_key: int
    T_match_query: NDArray[np.float64]  # 4x4
    covariance: NDArray[np.float64]  # 6x6, ROS order, match-frame axes
    scale_known: bool


def square_loop(
    side_m: float = 40.0,
    step_m: float = 1.0,
    overlap_m: float = 40.0,
    lane_change_m: float = 0.7,
    wobble_rad: float = 0.05,
) -> Poses:
    """Ground truth: once round a square (counter-clockwise from the origin along +x), then
    ``overlap_m`` along the first side again, one pose per ``step_m``.

    The second pass runs ``lane_change_m`` to the left (a ramp over the last 10 m of the
    lap) and the heading wobbles by ``wobble_rad`` (sinusoid), so revisits have non-trivial
    relative poses. Defaults: 200 poses.
    """
    perimeter = 4.0 * side_m
    n = round((perimeter + overlap_m) / step_m)
    out = np.zeros((n, 4, 4))
    for i in range(n):
        s = i * step_m
        side, along = divmod(s % perimeter, side_m)
        heading = side * math.pi / 2.0
        corners = [(0.0, 0.0), (side_m, 0.0), (side_m, side_m), (0.0, side_m)]
        base = np.array(corners[int(side)]) + along * np.array([math.cos(heading), math.sin(heading)])
        lane = lane_change_m * min(max((s - (perimeter - 10.0)) / 10.0, 0.0), 1.0)
        left = np.array([-math.sin(heading), math.cos(heading)])
        yaw = heading + wobble_rad * math.sin(s / 7.0)
        out[i] = np.eye(4)
        out[i, :3, :3] = Rotation.from_euler("z", yaw).as_matrix()
        out[i, :2, 3] = base + lane * left
    return out


def drifting_odometry(
    truth: Poses,
    heading_bias_rad_per_m: float = math.radians(0.1),
    heading_noise_rad_per_sqrt_m: float = math.radians(0.1),
    translation_noise_m_per_sqrt_m: float = 0.01,
    scale_error: float = 0.01,
    seed: int = 0,
) -> Poses:
    """Odometry poses that drift from ``truth``: each true step ``inv(T[i-1]) @ T[i]`` of length
    ``d`` gets a yaw error ``bias * d + N(0, noise^2 * d)``, roll/pitch errors a tenth of that
    noise, its translation scaled by ``1 + scale_error`` plus ``N(0, t_noise^2 * d)`` per axis.
    The first pose is ``truth[0]``.
    """
    rng = np.random.default_rng(seed)
    out = np.empty_like(truth)
    out[0] = truth[0]
    for i in range(1, len(truth)):
        step = invert(truth[i - 1]) @ truth[i]
        d = float(np.linalg.norm(step[:3, 3]))
        sq = math.sqrt(max(d, 1e-9))
        yaw = heading_bias_rad_per_m * d + rng.normal(0.0, heading_noise_rad_per_sqrt_m * sq)
        tilt = rng.normal(0.0, 0.1 * heading_noise_rad_per_sqrt_m * sq, 2)
        noisy = np.eye(4)
        noisy[:3, :3] = step[:3, :3] @ Rotation.from_rotvec([tilt[0], tilt[1], yaw]).as_matrix()
        noisy[:3, 3] = step[:3, 3] * (1.0 + scale_error) + rng.normal(
            0.0, translation_noise_m_per_sqrt_m * sq, 3
        )
        out[i] = out[i - 1] @ noisy
    return out


def closures_from_truth(
    truth: Poses,
    radius_m: float = 3.0,
    min_gap: int = 50,
    every: int = 2,
    translation_sigma_m: float = 0.05,
    rotation_sigma_rad: float = math.radians(0.5),
    scale_known: bool = True,
    seed: int = 0,
) -> list[SimulatedClosure]:
    """Loop closures of every ``every``-th revisit: each keyframe whose nearest keyframe at
    least ``min_gap`` older lies within ``radius_m`` is a query, that keyframe its match.

    The measured ``T_match_query`` is the truth perturbed on the right by
    ``N(0, sigma^2)`` (the stated covariance: diagonal, ROS order). With
    ``scale_known=False`` the translation is scaled to unit length, as a monocular
    essential-matrix decomposition reports it.
    """
    rng = np.random.default_rng(seed)
    cov = np.diag([translation_sigma_m**2] * 3 + [rotation_sigma_rad**2] * 3)
    positions = truth[:, :3, 3]
    out: list[SimulatedClosure] = []
    found = 0
    for q in range(min_gap, len(truth)):
        dist = np.linalg.norm(positions[: q - min_gap + 1] - positions[q], axis=1)
        m = int(np.argmin(dist))
        if dist[m] > radius_m:
            continue
        found += 1
        if (found - 1) % every:
            continue
        rel = invert(truth[m]) @ truth[q]
        noise = np.eye(4)
        noise[:3, :3] = Rotation.from_rotvec(rng.normal(0.0, rotation_sigma_rad, 3)).as_matrix()
        noise[:3, 3] = rng.normal(0.0, translation_sigma_m, 3)
        rel = rel @ noise
        if not scale_known:
            norm = float(np.linalg.norm(rel[:3, 3]))
            rel[:3, 3] = rel[:3, 3] / norm if norm > 0 else np.array([1.0, 0.0, 0.0])
        out.append(SimulatedClosure(m, q, rel, cov.copy(), scale_known))
    return out
