"""The record of one synthetic camera frame with its ground truth (:class:`Frame`), the
frame conventions, and projection helpers for the renderer's camera (intrinsics are
``mapdb.features.CameraIntrinsics``, the map's type, so frames and maps agree).

Why a module of its own: the world renderer (:mod:`.world`) makes frames and the bag
writer (:mod:`.bags`) writes them; both import the record from here, so neither
imports the other (no import cycle).

Conventions (docs/synthetic_world.md, "Frames and conventions"):

- World: ENU metres (x east, y north, z up) about the world's geodetic origin ("map").
- Body (``base_link``, REP-103): x forward, y left, z up. Its origin is the camera
  centre (``WorldConfig.camera_height_m`` above the ground); the synthetic camera has
  zero pitch and roll, so a body pose is a position and a yaw.
- Camera optical frame (REP-103 ``*_optical_frame``): x right, y down, z forward, at
  the body origin (zero translation) and rotated by :data:`T_BODY_OPTICAL`.
- ``T_a_b`` is the pose of frame b expressed in frame a: ``p_a = T_a_b @ p_b``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from ..mapdb.features import CameraIntrinsics
from .conditions import Condition

__all__ = [
    "T_BODY_OPTICAL",
    "Frame",
    "back_project",
    "pose_matrix",
    "project",
    "relative_pose",
]

#: Optical frame (x right, y down, z forward) in the body frame (x forward, y left, z up):
#: the columns are the optical axes in body coordinates; no translation.
T_BODY_OPTICAL = np.array(
    [[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def project(camera: CameraIntrinsics, points_optical: np.ndarray) -> np.ndarray:
    """Pixel coordinates (N, 2) of points (N, 3) in the optical frame (Z > 0), no distortion.

    OpenCV convention (pixel centres at integer coordinates), which is the renderer's:
    ``u = fx * X / Z + cx``, ``v = fy * Y / Z + cy``.
    """
    p = np.asarray(points_optical, dtype=np.float64).reshape(-1, 3)
    return np.stack(
        [camera.fx * p[:, 0] / p[:, 2] + camera.cx, camera.fy * p[:, 1] / p[:, 2] + camera.cy], axis=1
    )


def back_project(camera: CameraIntrinsics, depth: np.ndarray) -> np.ndarray:
    """Optical-frame points (H, W, 3) of a depth image (Z along the optical axis, metres; inf stays inf)."""
    h, w = depth.shape
    u = (np.arange(w, dtype=np.float64) - camera.cx) / camera.fx
    v = (np.arange(h, dtype=np.float64) - camera.cy) / camera.fy
    z = depth.astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.stack([u[None, :] * z, v[:, None] * z, z], axis=-1)


def pose_matrix(
    position: Sequence[float] | np.ndarray, orientation: Sequence[float] | np.ndarray
) -> np.ndarray:
    """4x4 ``T_world_body`` from a position (3,) and a quaternion (x, y, z, w)."""
    out = np.eye(4)
    out[:3, :3] = Rotation.from_quat(np.asarray(orientation, dtype=np.float64)).as_matrix()
    out[:3, 3] = np.asarray(position, dtype=np.float64)
    return out


@dataclass
class Frame:
    """One rendered camera frame with its ground truth.

    ``position``: body origin (the camera centre), ENU metres (3,). ``orientation``:
    base_link quaternion (x, y, z, w) in ENU. ``latlonalt``: WGS84 of ``position``.
    ``depth``: aligned depth (float32 metres along the optical axis, HxW; +inf where a
    pixel sees the sky) when rendered with depth, else None. ``camera``: the intrinsics.
    ``odom_position`` / ``odom_orientation`` / ``odom_covariance``: the (drifting)
    odometry of this frame in the "odom" frame (equal to "map" at the first frame) with
    its 6x6 covariance (ROS order x, y, z, roll, pitch, yaw; rotations about the fixed
    axes); None means the odometry is the ground truth. ``condition``: what the frame
    was rendered under, when it came from a :class:`.conditions.Condition`; ``scene``:
    the world's scene (``"street"`` or ``"corridor"``).
    """

    index: int
    stamp: float
    image: np.ndarray
    position: np.ndarray
    orientation: np.ndarray
    latlonalt: tuple[float, float, float]
    depth: np.ndarray | None = None
    camera: CameraIntrinsics | None = None
    odom_position: np.ndarray | None = None
    odom_orientation: np.ndarray | None = None
    odom_covariance: np.ndarray | None = field(default=None, repr=False)
    condition: Condition | None = None
    scene: str | None = None

    @property
    def yaw(self) -> float:
        """Heading in radians, from east counter-clockwise."""
        x, y, z, w = self.orientation
        return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))

    @property
    def pose(self) -> np.ndarray:
        """Ground truth ``T_map_body`` (4x4)."""
        return pose_matrix(self.position, self.orientation)

    @property
    def odom_pose(self) -> np.ndarray:
        """Odometry ``T_odom_body`` (4x4); the ground truth when the frame has no odometry of its own."""
        if self.odom_position is None or self.odom_orientation is None:
            return self.pose
        return pose_matrix(self.odom_position, self.odom_orientation)


def relative_pose(a: Frame, b: Frame, optical: bool = False) -> np.ndarray:
    """Ground-truth ``T_a_b`` (4x4): the body frame of ``b`` expressed in the body frame of ``a``.

    With ``optical=True`` both ends are the camera optical frames instead
    (``T_opt_a_opt_b = inv(T_BODY_OPTICAL) @ T_a_b @ T_BODY_OPTICAL``), which is what PnP
    between the two images recovers: a point ``p_b`` in b's optical frame is
    ``T @ p_b`` in a's optical frame.
    """
    t = np.linalg.inv(a.pose) @ b.pose
    if optical:
        t = np.linalg.inv(T_BODY_OPTICAL) @ t @ T_BODY_OPTICAL
    return t
