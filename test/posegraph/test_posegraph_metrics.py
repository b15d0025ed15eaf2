"""Absolute trajectory error: alignment removes exactly a rigid motion, known offsets give
known errors, bad input is refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from netvlad_ros.posegraph import PoseGraphError, ate_rmse, rigid_alignment
from netvlad_ros.posegraph.simulation import square_loop

TRUTH = square_loop()
RIGID = np.eye(4)
RIGID[:3, :3] = Rotation.from_euler("zyx", [35.0, 4.0, -3.0], degrees=True).as_matrix()
RIGID[:3, 3] = [12.0, -7.0, 1.5]


def moved(poses: np.ndarray, transform: np.ndarray) -> np.ndarray:
    return np.einsum("ij,njk->nik", transform, poses)


def test_a_rigidly_moved_copy_has_zero_aligned_error():
    copy = moved(TRUTH, RIGID)
    assert ate_rmse(copy, TRUTH, align=True) < 1e-9  # measured 4e-14
    np.testing.assert_allclose(rigid_alignment(copy, TRUTH) @ RIGID, np.eye(4), atol=1e-9)


def test_without_alignment_the_error_is_the_displacement():
    copy = moved(TRUTH, RIGID)
    displacement = np.linalg.norm(copy[:, :3, 3] - TRUTH[:, :3, 3], axis=1)
    expected = math.sqrt(float(np.mean(displacement**2)))
    assert expected > 10.0  # the test means something
    assert ate_rmse(copy, TRUTH, align=False) == pytest.approx(expected, rel=1e-12)


def test_a_known_offset_gives_the_known_rmse():
    shifted = TRUTH[:, :3, 3] + np.array([3.0, 4.0, 0.0])
    assert ate_rmse(shifted, TRUTH, align=False) == pytest.approx(5.0, rel=1e-12)
    assert ate_rmse(shifted, TRUTH, align=True) < 1e-9  # a translation is rigid


def test_alternating_vertical_error_is_not_aligned_away():
    # +-0.5 m in z on alternate poses: no rigid motion removes it (the truth is planar and
    # symmetric under it), so the aligned RMSE stays 0.5 m.
    noisy = TRUTH[:, :3, 3].copy()
    noisy[:, 2] += 0.5 * (-1.0) ** np.arange(len(noisy))
    assert ate_rmse(noisy, TRUTH, align=False) == pytest.approx(0.5, rel=1e-12)
    assert ate_rmse(noisy, TRUTH, align=True) == pytest.approx(0.5, rel=1e-3)  # measured 0.49999


def test_positions_and_poses_are_the_same_input():
    copy = moved(TRUTH, RIGID)
    assert ate_rmse(copy, TRUTH, align=False) == ate_rmse(copy[:, :3, 3], TRUTH[:, :3, 3], align=False)


@pytest.mark.parametrize(
    ("estimate", "truth", "message"),
    [
        (TRUTH[:10], TRUTH[:11], "differ in length"),
        (np.zeros((0, 3)), np.zeros((0, 3)), "empty"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), "not finite"),
        (np.zeros((5, 2)), np.zeros((5, 2)), "expected (n, 3) positions"),
    ],
)
def test_bad_trajectories(estimate, truth, message):
    for align in (True, False):
        with pytest.raises(PoseGraphError, match=message.replace("(", r"\(").replace(")", r"\)")):
            ate_rmse(estimate, truth, align=align)
