"""Pose and covariance conventions shared by the pose graph and whoever feeds it.

Poses
    A pose is a 4x4 homogeneous float64 matrix ``T_a_b`` (the pose of frame ``b`` expressed
    in frame ``a``: ``p_a = T_a_b @ p_b``) or a pair ``(position (3,), quaternion (4,))``
    with the quaternion in ROS order ``(x, y, z, w)``. :func:`as_matrix` accepts both and
    checks them (finite, rotation orthonormal with determinant +1, unit quaternion).

Covariances
    A 6x6 covariance is given in ROS ``PoseWithCovariance`` order
    ``[x, y, z, roll, pitch, yaw]``: translation first, then small rotations about the
    *fixed* axes of the parent frame ``a``. Precisely, the true pose is
    ``(Exp(dtheta) @ R, p + dp)`` with ``[dp, dtheta] ~ N(0, cov)``, both vectors in frame
    ``a``'s axes. (This is the small-angle reading of "rotation about the X, Y, Z axis"; for
    rotations that are not small, Euler-angle rates are a different quantity and are not
    what this module expects.)

    GTSAM's ``Pose3`` tangent is ``[rx, ry, rz, tx, ty, tz]`` in the *body* frame ``b``:
    ``T.retract(xi) = T @ Exp(xi)``, to first order ``(R @ Exp(w), p + R @ v)``. Matching
    the two to first order gives ``w = R.T @ dtheta`` and ``v = R.T @ dp``, so

        cov_gtsam = J @ cov_ros @ J.T,   J = blockdiag(R.T, R.T) @ P,

    where ``P`` moves the rotation block in front of the translation block and ``R`` is
    the rotation of the pose the covariance belongs to. :func:`ros_to_tangent_covariance`
    and :func:`tangent_to_ros_covariance` are that map and its inverse.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

from netvlad_ros.posegraph.errors import PoseGraphError

Matrix = NDArray[np.float64]
PoseLike = ArrayLike | tuple[ArrayLike, ArrayLike]
"""A 4x4 homogeneous matrix or a ``(position (3,), quaternion (x, y, z, w))`` pair."""


ROTATION_TOLERANCE = 1e-6
"""Largest ``|R.T @ R - I|`` entry accepted in a pose matrix (float32 round trips stay below)."""
QUATERNION_NORM_TOLERANCE = 1e-3
"""Largest ``|norm(q) - 1|`` accepted; within it the quaternion is normalised."""
MAX_CONDITION = 1e15
"""Largest eigenvalue ratio accepted in a covariance: beyond it the smallest eigenvalues are
rounding noise of the largest (float64 carries ~16 digits), so "positive definite" means nothing."""
SYMMETRY_TOLERANCE = 1e-9
"""Largest ``|C - C.T|`` entry accepted in a covariance, relative to its largest entry."""


def as_matrix(pose: PoseLike, what: str = "pose") -> Matrix:
    """Return ``pose`` as a checked 4x4 float64 rigid transform (a new array).

    Raises PoseGraphError naming ``what`` when the pose is not finite, not a rigid
    transform (shape, last row, orthonormal rotation with determinant +1) or its
    quaternion is not of unit norm.
    """
    if isinstance(pose, tuple | list) and len(pose) == 2:
        position = np.asarray(pose[0], dtype=np.float64)
        quat = np.asarray(pose[1], dtype=np.float64)
        if position.shape != (3,) or quat.shape != (4,):
            raise PoseGraphError(
                f"{what}: a (position, quaternion) pair needs shapes (3,) and (4,), "
                f"got {position.shape} and {quat.shape}"
            )
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quat))):
            raise PoseGraphError(f"{what}: position or quaternion is not finite: {position}, {quat}")
        norm = float(np.linalg.norm(quat))
        if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
            raise PoseGraphError(f"{what}: quaternion (x, y, z, w) {quat} has norm {norm:.6g}, not 1")
        out = np.eye(4)
        out[:3, :3] = Rotation.from_quat(quat / norm).as_matrix()
        out[:3, 3] = position
        return out
    try:
        mat = np.array(pose, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PoseGraphError(f"{what}: not a 4x4 matrix or a (position, quaternion) pair ({exc})") from None
    if mat.shape != (4, 4):
        raise PoseGraphError(
            f"{what}: expected a 4x4 matrix or (position, quaternion), got shape {mat.shape}"
        )
    if not np.all(np.isfinite(mat)):
        raise PoseGraphError(f"{what}: matrix is not finite")
    if not np.allclose(mat[3], [0.0, 0.0, 0.0, 1.0], rtol=0.0, atol=ROTATION_TOLERANCE):
        raise PoseGraphError(f"{what}: last row must be [0, 0, 0, 1], got {mat[3]}")
    rot = mat[:3, :3]
    ortho = float(np.max(np.abs(rot.T @ rot - np.eye(3))))
    if ortho > ROTATION_TOLERANCE or np.linalg.det(rot) <= 0.0:
        raise PoseGraphError(
            f"{what}: upper-left 3x3 is not a rotation (|R^T R - I| = {ortho:.3g}, det = {np.linalg.det(rot):.6g})"
        )
    mat[3] = [0.0, 0.0, 0.0, 1.0]
    mat[:3, :3] = Rotation.from_matrix(rot).as_matrix()  # re-orthonormalised
    return mat


def position_quaternion(matrix: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Split a 4x4 rigid transform into ``(position (3,), quaternion (x, y, z, w))``.

    A stack ``(n, 4, 4)`` gives ``(n, 3)`` and ``(n, 4)`` (one vectorised conversion).
    """
    mat = np.asarray(matrix, dtype=np.float64)
    return mat[..., :3, 3].copy(), np.asarray(
        Rotation.from_matrix(mat[..., :3, :3]).as_quat(), dtype=np.float64
    )


def invert(matrix: ArrayLike) -> Matrix:
    """Inverse of a 4x4 rigid transform (closed form, exact for rotations)."""
    mat = np.asarray(matrix, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = mat[:3, :3].T
    out[:3, 3] = -mat[:3, :3].T @ mat[:3, 3]
    return out


def check_covariance(cov: ArrayLike, what: str = "covariance") -> Matrix:
    """Return a 6x6 symmetric positive-definite float64 covariance or raise PoseGraphError.

    Accepts a 6x6 array or the 36 row-major values of a ROS ``covariance`` field.
    The returned matrix is exactly symmetric (the mean of ``C`` and ``C.T``).
    """
    try:
        mat = np.array(cov, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PoseGraphError(f"{what}: not a numeric 6x6 matrix ({exc})") from None
    if mat.shape == (36,):
        mat = mat.reshape(6, 6)
    if mat.shape != (6, 6):
        raise PoseGraphError(f"{what}: expected 6x6 (or 36 values), got shape {mat.shape}")
    if not np.all(np.isfinite(mat)):
        raise PoseGraphError(f"{what}: not finite")
    scale = max(float(np.max(np.abs(mat))), np.finfo(np.float64).tiny)
    asym = float(np.max(np.abs(mat - mat.T)))
    if asym > SYMMETRY_TOLERANCE * scale:
        raise PoseGraphError(f"{what}: not symmetric (largest |C - C^T| = {asym:.3g})")
    mat = 0.5 * (mat + mat.T)
    eig = np.linalg.eigvalsh(mat)
    if eig[0] <= 0.0:
        raise PoseGraphError(f"{what}: not positive definite (smallest eigenvalue {eig[0]:.3g})")
    if eig[0] < eig[-1] / MAX_CONDITION:
        raise PoseGraphError(
            f"{what}: numerically singular (eigenvalues {eig[0]:.3g} to {eig[-1]:.3g}, "
            f"condition number above {MAX_CONDITION:.0e})"
        )
    return mat


def _frame_jacobian(rotation: ArrayLike) -> Matrix:
    """``J = blockdiag(R.T, R.T) @ P``: ROS parent-frame order -> GTSAM body tangent."""
    rot_t = np.asarray(rotation, dtype=np.float64).T
    jac = np.zeros((6, 6))
    jac[:3, 3:] = rot_t  # tangent rotation  <- ROS roll, pitch, yaw
    jac[3:, :3] = rot_t  # tangent translation <- ROS x, y, z
    return jac


def ros_to_tangent_covariance(cov_ros: ArrayLike, rotation: ArrayLike) -> Matrix:
    """Covariance in ROS order and parent-frame axes -> GTSAM ``Pose3`` tangent (body frame).

    ``rotation`` is the 3x3 rotation of the pose the covariance belongs to (parent <- body).
    """
    jac = _frame_jacobian(rotation)
    out = jac @ np.asarray(cov_ros, dtype=np.float64) @ jac.T
    return 0.5 * (out + out.T)


def tangent_to_ros_covariance(cov_tangent: ArrayLike, rotation: ArrayLike) -> Matrix:
    """Inverse of :func:`ros_to_tangent_covariance` (e.g. a GTSAM marginal -> a ROS message)."""
    jac = _frame_jacobian(rotation)
    out = jac.T @ np.asarray(cov_tangent, dtype=np.float64) @ jac  # J is orthogonal: J^-1 = J^T
    return 0.5 * (out + out.T)
