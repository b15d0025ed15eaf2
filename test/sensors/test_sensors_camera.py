"""The camera model: camera_info fields -> intrinsics (every bad case names its reason),
resizes, undistortion against OpenCV's own forward model, the fallback parameters and the
body <- optical extrinsic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from netvlad_ros.sensors.camera import (
    CAMERA_ERROR_REASONS,
    DEFAULT_BODY_FROM_OPTICAL,
    OPTICAL_ROTATION,
    CameraInfoError,
    CameraParams,
    body_from_optical_matrix,
    intrinsics_for_image,
    intrinsics_from_camera_info,
    scale_intrinsics,
    undistort_points,
)
from netvlad_ros.sensors.errors import SensorError

K = [500.0, 0.0, 319.5, 0.0, 505.0, 239.5, 0.0, 0.0, 1.0]
PLUMB = [-0.28, 0.07, 0.001, -0.0005, 0.0]


def test_camera_info_fields_become_intrinsics() -> None:
    cam = intrinsics_from_camera_info(K, PLUMB, "plumb_bob", 640, 480)
    assert (cam.fx, cam.fy, cam.cx, cam.cy, cam.width, cam.height) == (500.0, 505.0, 319.5, 239.5, 640, 480)
    assert cam.distortion_model == "plumb_bob" and cam.distortion == tuple(PLUMB)
    # an uncalibrated driver's empty D means no distortion whatever the model says
    assert intrinsics_from_camera_info(K, [], "plumb_bob", 640, 480).distortion_model == "none"


@pytest.mark.parametrize(
    ("k", "d", "model", "size", "reason"),
    [
        ([0.0] * 9, [], "", (640, 480), "camera_zero_focal_length"),
        ([500, 0, 320, 0, -1, 240, 0, 0, 1], [], "", (640, 480), "camera_zero_focal_length"),
        ([500, 0, 320, 0, np.nan, 240, 0, 0, 1], [], "", (640, 480), "camera_not_finite"),
        ([500, 0, 320, 0, 500, 240], [], "", (640, 480), "camera_bad_matrix"),
        ([500, 3, 320, 0, 500, 240, 0, 0, 1], [], "", (640, 480), "camera_bad_matrix"),
        (K, [], "", (0, 480), "camera_bad_size"),
        ([500, 0, 900, 0, 500, 240, 0, 0, 1], [], "", (640, 480), "camera_bad_size"),
        (K, [0.1, 0.2], "kannala", (640, 480), "camera_unsupported_model"),
        (K, [0.1, 0.2], "plumb_bob", (640, 480), "camera_bad_distortion"),
        (K, [0.1, np.inf, 0, 0, 0], "plumb_bob", (640, 480), "camera_not_finite"),
    ],
)
def test_bad_camera_info_is_refused_with_its_reason(k, d, model, size, reason) -> None:
    with pytest.raises(CameraInfoError) as err:
        intrinsics_from_camera_info(k, d, model, *size)
    assert err.value.reason == reason and reason in CAMERA_ERROR_REASONS
    assert isinstance(err.value, SensorError) and "camera_info" in str(err.value)


def test_resize_keeps_pixel_centres_and_refuses_another_aspect_ratio() -> None:
    cam = intrinsics_from_camera_info(K, PLUMB, "plumb_bob", 640, 480)
    half = intrinsics_for_image(cam, 320, 240)
    assert half == scale_intrinsics(cam, 320, 240)
    # pixel centre convention: cx' = (cx + 0.5) * s - 0.5; the image centre stays the centre
    assert (half.fx, half.cx, half.cy) == (250.0, 159.5, 119.5) and half.distortion == cam.distortion
    assert intrinsics_for_image(cam, 640, 480) is cam
    with pytest.raises(CameraInfoError) as err:
        intrinsics_for_image(cam, 640, 360)
    assert err.value.reason == "camera_size_mismatch"


@pytest.mark.parametrize("model", ["plumb_bob", "rational_polynomial", "equidistant"])
def test_undistortion_inverts_opencvs_distortion(model) -> None:
    d = {
        "plumb_bob": PLUMB,
        "rational_polynomial": [0.1, -0.05, 0.001, 0.0005, 0.0, 0.02, -0.01, 0.003],
        "equidistant": [0.05, -0.01, 0.002, -0.0005],
    }[model]
    cam = intrinsics_from_camera_info(K, d, model, 640, 480)
    rng = np.random.default_rng(1)
    ideal = np.column_stack([rng.uniform(80, 560, 200), rng.uniform(60, 420, 200)])
    # distort the ideal pixels with OpenCV's forward model, then undistort them back
    xn = np.column_stack([(ideal[:, 0] - cam.cx) / cam.fx, (ideal[:, 1] - cam.cy) / cam.fy, np.ones(200)])
    if model == "equidistant":
        dist = cv2.fisheye.distortPoints(xn[:, None, :2], cam.matrix, np.asarray(d)).reshape(-1, 2)
    else:
        dist, _ = cv2.projectPoints(xn, np.zeros(3), np.zeros(3), cam.matrix, np.asarray(d))
        dist = dist.reshape(-1, 2)
    assert np.abs(dist - ideal).max() > 2.0  # the distortion is not negligible
    back = undistort_points(cam, dist)
    assert np.abs(back - ideal).max() < 0.01  # measured <= 1.1e-6 px (distortion up to 20 px)
    none = intrinsics_from_camera_info(K, [], "", 640, 480)
    assert np.array_equal(undistort_points(none, dist), dist)


def test_fallback_parameters() -> None:
    assert CameraParams().intrinsics(640, 480) is None  # fx 0: no intrinsics
    cam = CameraParams(fx=400.0).intrinsics(640, 480)
    assert cam is not None and (cam.fy, cam.cx, cam.cy) == (400.0, 319.5, 239.5)
    # intrinsics stated for 1280x960, applied to a 640x480 stream: scaled
    big = CameraParams(fx=800.0, width=1280, height=960).intrinsics(640, 480)
    assert big is not None and big.fx == 400.0 and big.cx == pytest.approx(319.5)
    with pytest.raises(SensorError, match="width and height"):
        CameraParams(fx=1.0, width=640).validate()
    with pytest.raises(SensorError, match="coefficients"):
        CameraParams(distortion_model="plumb_bob", distortion=(0.1,)).validate()


def test_body_from_optical() -> None:
    t = body_from_optical_matrix(DEFAULT_BODY_FROM_OPTICAL)
    assert np.allclose(t[:3, :3], OPTICAL_ROTATION) and np.allclose(t[:3, 3], 0.0)
    # optical z (forward) is body x; optical x (right) is body -y; optical y (down) is body -z
    assert np.allclose(t[:3, :3] @ [0, 0, 1], [1, 0, 0]) and np.allclose(t[:3, :3] @ [1, 0, 0], [0, -1, 0])
    t2 = body_from_optical_matrix([0.1, 0.2, 0.3, 0, 0, 0, 2.0])  # quaternion normalised
    assert np.allclose(t2[:3, :3], np.eye(3)) and np.allclose(t2[:3, 3], [0.1, 0.2, 0.3])
    for bad in ([0.0] * 6, [0, 0, 0, 0, 0, 0, 0], [0, 0, np.nan, 0, 0, 0, 1]):
        with pytest.raises(SensorError, match="body_from_optical"):
            body_from_optical_matrix(bad)
