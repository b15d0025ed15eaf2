"""Drifting odometry for synthetic drives: what wheel odometry reports, with its covariance.

Why: loop closures only matter when odometry drifts; the demo's SLAM drive must drift
like a real robot's so that the pose graph has something to correct, and the absolute
trajectory error (ATE) of raw and optimised trajectories can be compared with the truth,
which the frames keep.

The noise model is the pose graph's (``posegraph.simulation.drifting_odometry``, one
implementation): each true step ``inv(T[i-1]) @ T[i]`` of length ``d`` gets a yaw error
``bias * d + N(0, heading_noise^2 * d)``, roll/pitch errors a tenth of that noise, and its
translation is scaled by ``1 + scale_error`` plus ``N(0, translation_noise^2 * d)`` per
axis, integrated along the trajectory so the error accumulates. What makes a drive's
drift its own: the heading bias (a wheel-radius mismatch; at constant speed also a
heading-rate bias of ``bias * speed``) and the scale error are drawn once per drive from
``N(0, sigma^2)`` with the seed.

The covariance attached to every odometry pose is the linearised propagation of exactly
this model (with the bias and the scale error as unknown constants of the stated
variance), in ROS ``PoseWithCovariance`` order (x, y, z, then rotations about the fixed
x, y, z axes of the odom frame): the expected spread of the odometry error over seeds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from .frames import Frame

__all__ = ["OdometryNoise", "drift_frames", "odometry_covariances"]


@dataclass(frozen=True)
class OdometryNoise:
    """Parameters of the drift (defaults: wheel odometry of a car-like robot).

    ``heading_bias_sigma_deg_per_m``: spread of the drive's heading bias (0.02 deg/m:
    2 deg per 100 m at one sigma; 0.1 deg/s at 5 m/s). ``heading_noise_deg_per_sqrt_m``:
    random walk of the heading (0.05 deg per sqrt(m): 1 deg after 400 m). ``translation_noise_m_per_sqrt_m``:
    random walk of each position axis (0.01 m per sqrt(m)). ``scale_error_sigma``: spread of
    the distance scale error (0.005: 0.5 %). ``seed``: the drive's draw of all of them.
    The resulting drift (docs/synthetic_world.md, "Drifting odometry"): on the demo's 384 m
    drive round a block, ATE (unaligned) median 2.9 m over 60 seeds (10-90 %: 0.7-5.8 m),
    end-point error median 4.0 m (1 % of the distance).
    """

    heading_bias_sigma_deg_per_m: float = 0.02
    heading_noise_deg_per_sqrt_m: float = 0.05
    translation_noise_m_per_sqrt_m: float = 0.01
    scale_error_sigma: float = 0.005
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first negative or non-finite parameter."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "seed" and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"OdometryNoise.{f.name} must be a finite number >= 0, got {v!r}")

    def draw(self) -> tuple[float, float]:
        """This drive's (heading bias in rad/m, scale error), drawn from the seed."""
        r = np.random.default_rng([self.seed, 4711])
        bias = float(r.normal(0.0, math.radians(self.heading_bias_sigma_deg_per_m)))
        scale = float(r.normal(0.0, self.scale_error_sigma))
        return bias, scale


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def odometry_covariances(truth: np.ndarray, noise: OdometryNoise) -> np.ndarray:
    """(n, 6, 6) covariance of the odometry error at each pose of ``truth`` (n, 4, 4), ROS order.

    Error state: position error (3) and small rotation error (3) in the odom frame's fixed
    axes, plus the heading bias and the scale error (constants). Per step of length ``d``
    taken from pose ``T[i-1]`` (rotation ``R``, step translation ``t``):
    ``dp += -[R t]x dtheta + R t ds + R eta`` and ``dtheta += R_i (nu + e_z d db)`` with
    ``eta ~ N(0, s_t^2 d I)``, ``nu ~ N(0, diag(0.01, 0.01, 1) s_h^2 d)``.
    """
    noise.validate()
    s_b = math.radians(noise.heading_bias_sigma_deg_per_m)
    s_h = math.radians(noise.heading_noise_deg_per_sqrt_m)
    s_t = noise.translation_noise_m_per_sqrt_m
    p = np.zeros((8, 8))
    p[6, 6], p[7, 7] = s_b**2, noise.scale_error_sigma**2
    out = np.zeros((len(truth), 6, 6))
    for i in range(1, len(truth)):
        r_prev, r_now = truth[i - 1][:3, :3], truth[i][:3, :3]
        t = (np.linalg.inv(truth[i - 1]) @ truth[i])[:3, 3]
        d = float(np.linalg.norm(t))
        rt = r_prev @ t
        f = np.eye(8)
        f[0:3, 3:6] = -_skew(rt)
        f[0:3, 7] = rt
        f[3:6, 6] = r_now[:, 2] * d
        q = np.zeros((8, 8))
        q[0:3, 0:3] = r_prev @ (np.eye(3) * s_t**2 * d) @ r_prev.T
        q[3:6, 3:6] = r_now @ np.diag([0.01, 0.01, 1.0]) @ r_now.T * s_h**2 * d
        p = f @ p @ f.T + q
        out[i] = p[:6, :6]
    return out


def drift_frames(frames: Sequence[Frame], noise: OdometryNoise | None = None) -> list[Frame]:
    """Copies of ``frames`` whose odometry (``odom_position``, ``odom_orientation``,
    ``odom_covariance``) drifts from their ground truth by ``noise`` (default
    :class:`OdometryNoise`); the first frame's odometry is its ground truth."""
    from ..posegraph.simulation import drifting_odometry

    noise = noise if noise is not None else OdometryNoise()
    noise.validate()
    if not frames:
        return []
    truth = np.stack([f.pose for f in frames])
    bias, scale = noise.draw()
    odom = drifting_odometry(
        truth,
        heading_bias_rad_per_m=bias,
        heading_noise_rad_per_sqrt_m=math.radians(noise.heading_noise_deg_per_sqrt_m),
        translation_noise_m_per_sqrt_m=noise.translation_noise_m_per_sqrt_m,
        scale_error=scale,
        seed=noise.seed,
    )
    covs = odometry_covariances(truth, noise)
    quats = Rotation.from_matrix(odom[:, :3, :3]).as_quat()  # (x, y, z, w)
    return [
        dataclasses.replace(
            f, odom_position=odom[i, :3, 3].copy(), odom_orientation=quats[i], odom_covariance=covs[i]
        )
        for i, f in enumerate(frames)
    ]
