"""Geometric verification: real RTAB-Map sample images (fundamental matrix) and a
constructed two-view scene with known intrinsics and pose (essential matrix)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from netvlad_ros.recognition import GeometricVerifier, GeometryParams, ImageFeatures, RecognitionParamError

# test/recognition/<this file> -> parents[2] is the repository root; shared/ sits beside it.
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "rtabmap_samples"
needs_data = pytest.mark.skipif(
    not (DATA / "images" / "1.jpg").is_file(),
    reason=f"RTAB-Map sample data not found at {DATA} (only on the project's machines)",
)


def load(i: int) -> np.ndarray:
    img = cv2.imread(str(DATA / "images" / f"{i}.jpg"))
    assert img is not None, f"could not read image {i}"
    return img


@needs_data
def test_true_loop_pair_passes_and_unrelated_pair_fails() -> None:
    gt = np.load(DATA / "gt_matrix_84x84.npy")
    v = GeometricVerifier()  # defaults: ORB, no intrinsics -> fundamental matrix
    # image 50 revisits image 10 (gt row 49, column 9); image 20 is from elsewhere
    assert gt[49, 9] and not gt[49, 19]
    f50, f10, f20 = v.extract(load(50)), v.extract(load(10)), v.extract(load(20))
    assert len(f50) > 200 and f50.descriptors.dtype == np.uint8
    good = v.verify(f50, f10)
    assert good.success and good.model == "fundamental" and good.inliers >= v.params.min_inliers
    assert good.rotation is None  # no intrinsics, no pose
    bad = v.verify(f50, f20)
    assert not bad.success and bad.inliers < v.params.min_inliers
    assert bad.reason is not None and bad.reason.startswith(("geometric_verification_failed", "too_few"))


@needs_data
def test_sift_features_also_work() -> None:
    v = GeometricVerifier(GeometryParams(feature="sift", min_inliers=15))
    f = v.extract(load(50))
    assert f.descriptors.dtype == np.float32 and f.descriptors.shape[1] == 128
    assert v.verify(f, v.extract(load(10))).inliers > v.verify(f, v.extract(load(20))).inliers


def rot_y(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def test_essential_matrix_recovers_known_rotation_and_translation_direction() -> None:
    rng = np.random.default_rng(3)
    k = np.array([[400.0, 0, 320], [0, 400.0, 240], [0, 0, 1]])
    pts = np.column_stack([rng.uniform(-3, 3, 300), rng.uniform(-2, 2, 300), rng.uniform(4, 10, 300)])
    r_true = rot_y(10.0)
    t_true = np.array([1.0, 0.0, 0.2]) / np.linalg.norm([1.0, 0.0, 0.2])

    def project(x_cam: np.ndarray) -> np.ndarray:
        uv = (k @ x_cam.T).T
        return (uv[:, :2] / uv[:, 2:]).astype(np.float32)

    uv_a = project(pts)
    uv_b = project((r_true @ pts.T).T + 0.5 * t_true)
    desc = rng.integers(0, 256, (300, 32), dtype=np.uint8)  # distinct binary descriptors, same in both
    a = ImageFeatures(uv_a, desc, (640, 480))
    b = ImageFeatures(uv_b, desc.copy(), (640, 480))
    v = GeometricVerifier(GeometryParams(camera_matrix=tuple(k.ravel()), min_inliers=50))
    res = v.verify(a, b)
    assert res.success and res.model == "essential" and res.inliers > 250
    assert np.allclose(res.rotation, r_true, atol=1e-3)
    assert float(res.translation_direction @ t_true) > 0.999


def test_bad_inputs_raise() -> None:
    with pytest.raises(RecognitionParamError, match="feature"):
        GeometricVerifier(GeometryParams(feature="surf"))
    with pytest.raises(RecognitionParamError, match="camera_matrix"):
        GeometricVerifier(GeometryParams(camera_matrix=(1.0, 2.0)))
    with pytest.raises(RecognitionParamError, match="uint8"):
        GeometricVerifier().extract(np.zeros((10, 10), np.float32))
    blank = GeometricVerifier().extract(np.zeros((64, 64), np.uint8))
    assert len(blank) == 0
    res = GeometricVerifier().verify(blank, blank)
    assert not res.success and res.reason.startswith("too_few_matches")
