"""Absolute trajectory error (ATE) of a trajectory against ground truth.

``ate_rmse`` is the root mean square of the position differences of corresponding poses
(Sturm et al., "A Benchmark for the Evaluation of RGB-D SLAM Systems", IROS 2012), with
optional rigid SE(3) alignment (rotation + translation, no scale) of the estimate onto
the truth first. The alignment is Horn's closed form: the centred point sets are matched
by the rotation that minimises the summed squared distances (Kabsch/Wahba, solved by
``scipy.spatial.transform.Rotation.align_vectors``), then the centroids are matched.

Which to report: with alignment (``align=True``). The pose graph's map frame is the
odometry frame at its first keyframe, so the raw odometry and the optimised trajectory
share a frame, but a frame fixed by one pose puts all of that pose's error into every later
position. Aligning each trajectory separately to the truth (as the TUM benchmark and
``evo_ape --align`` do) removes only what no loop closure can observe (where the map
frame sits), and it can only lower the odometry baseline too, so "optimised <= 25 % of
odometry" measured aligned is the harder claim.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

from netvlad_ros.posegraph.errors import PoseGraphError


def _positions(poses: ArrayLike, what: str) -> NDArray[np.float64]:
    arr = np.asarray(poses, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[1:] == (4, 4):
        arr = arr[:, :3, 3]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise PoseGraphError(f"{what}: expected (n, 3) positions or (n, 4, 4) poses, got shape {arr.shape}")
    if len(arr) == 0:
        raise PoseGraphError(f"{what}: empty trajectory")
    if not np.all(np.isfinite(arr)):
        raise PoseGraphError(f"{what}: positions are not finite")
    return arr


def rigid_alignment(source: ArrayLike, target: ArrayLike) -> NDArray[np.float64]:
    """4x4 rigid transform ``T`` (no scale) minimising ``sum |target_i - T @ source_i|^2``.

    Horn's closed form via ``Rotation.align_vectors`` on the centred points. Fewer than
    three non-collinear points leave a rotation undetermined; scipy then picks one.
    """
    src = _positions(source, "source")
    dst = _positions(target, "target")
    if src.shape != dst.shape:
        raise PoseGraphError(f"source {src.shape} and target {dst.shape} differ in length")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    out = np.eye(4)
    if len(src) > 1:
        with warnings.catch_warnings():  # degenerate (collinear) sets: any rotation about the line
            warnings.simplefilter("ignore", UserWarning)
            rot, _ = Rotation.align_vectors(dst - mu_d, src - mu_s)
        out[:3, :3] = rot.as_matrix()
    out[:3, 3] = mu_d - out[:3, :3] @ mu_s
    return out


def ate_rmse(estimate: ArrayLike, truth: ArrayLike, *, align: bool) -> float:
    """RMSE (metres) of the position error of ``estimate`` against ``truth``.

    Both are (n, 3) positions or (n, 4, 4) poses in corresponding order. ``align``: first
    move the estimate by :func:`rigid_alignment` onto the truth (see the module docstring
    for which to report).
    """
    est = _positions(estimate, "estimate")
    ref = _positions(truth, "truth")
    if est.shape != ref.shape:
        raise PoseGraphError(f"estimate {est.shape} and truth {ref.shape} differ in length")
    if align:
        t = rigid_alignment(est, ref)
        est = est @ t[:3, :3].T + t[:3, 3]
    return math.sqrt(float(np.mean(np.sum((est - ref) ** 2, axis=1))))
