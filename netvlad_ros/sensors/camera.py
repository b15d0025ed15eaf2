"""The camera model: ``sensor_msgs/CameraInfo`` fields -> :class:`~netvlad_ros.mapdb.features.CameraIntrinsics`,
the fallback parameters when no camera_info arrives, keypoint undistortion and the
camera -> body extrinsic. Plain numpy + OpenCV; no ROS.

Why a module of its own: the live node (camera_info messages), the offline map builder
(camera_info in bags) and the verifier (undistortion of stored keypoints) must read a
camera the same way; ``ros/`` passes the message's fields as plain numbers
(:func:`intrinsics_from_camera_info`), so nothing here imports ROS.

Conventions:

- Pixel coordinates follow OpenCV and ``sensor_msgs/CameraInfo``: pixel centres at
  integers, ``u = fx X / Z + cx``.
- Distortion models are the ROS names: ``plumb_bob`` (k1 k2 p1 p2 k3),
  ``rational_polynomial`` (k1 k2 p1 p2 k3 k4 k5 k6), ``equidistant`` (fisheye k1 k2 k3 k4,
  OpenCV's ``cv2.fisheye``); ``none`` for an ideal pinhole. An empty ``D`` means no
  distortion whatever the model says (uncalibrated drivers publish that).
- A resized image (the node or the bag tool scaled it) keeps its distortion coefficients
  (they act on normalised coordinates) and scales K about the pixel-centre convention:
  ``fx' = fx * sx``, ``cx' = (cx + 0.5) * sx - 0.5`` (:func:`scale_intrinsics`).
- Extrinsic: ``body_from_optical`` is ``T_body_optical``, the pose of the camera optical
  frame (x right, y down, z forward) in the robot body frame (REP-103 x forward, y left,
  z up); the default is zero translation and :data:`OPTICAL_ROTATION`.

Bad camera data raises :class:`CameraInfoError` (a :class:`~netvlad_ros.sensors.errors.SensorError`)
whose message names the field and whose ``reason`` (one of :data:`CAMERA_ERROR_REASONS`)
a caller can count by; the node drops the message and falls back to its parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from ..config import check_fields, param
from ..mapdb.features import DISTORTION_COEFFICIENTS, CameraIntrinsics
from .errors import SensorError

__all__ = [
    "CAMERA_ERROR_REASONS",
    "DEFAULT_BODY_FROM_OPTICAL",
    "OPTICAL_ROTATION",
    "CameraInfoError",
    "CameraParams",
    "body_from_optical_matrix",
    "intrinsics_for_image",
    "intrinsics_from_camera_info",
    "scale_intrinsics",
    "undistort_points",
]

#: Rotation of the optical frame in the body frame (columns: optical x, y, z in body axes):
#: optical z (forward) = body x, optical x (right) = body -y, optical y (down) = body -z.
OPTICAL_ROTATION = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
#: ``camera.body_from_optical`` default: x y z qx qy qz qw of :data:`OPTICAL_ROTATION`, no translation.
DEFAULT_BODY_FROM_OPTICAL: tuple[float, ...] = (
    0.0,
    0.0,
    0.0,
    *Rotation.from_matrix(OPTICAL_ROTATION).as_quat(),
)

#: Every :attr:`CameraInfoError.reason` (stable names: the node's diagnostics count by them).
CAMERA_ERROR_REASONS: tuple[str, ...] = (
    "camera_zero_focal_length",  # fx or fy <= 0 (an uncalibrated camera publishes K = 0)
    "camera_not_finite",  # NaN or inf in K or D
    "camera_bad_matrix",  # K is not 9 numbers, or has skew / a wrong last row
    "camera_bad_size",  # width or height < 1, or the principal point far outside the image
    "camera_unsupported_model",  # a distortion model other than those of DISTORTION_COEFFICIENTS
    "camera_bad_distortion",  # D has the wrong number of coefficients for its model
    "camera_size_mismatch",  # the image's aspect ratio differs from camera_info's
)

#: Aspect ratios of camera_info and image may differ by this much and still be a resize.
ASPECT_TOLERANCE = 0.01


class CameraInfoError(SensorError):
    """Camera intrinsics cannot be used; the message names the field, ``reason`` says why
    (one of :data:`CAMERA_ERROR_REASONS`)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _numbers(values: Sequence[float] | np.ndarray, field: str) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CameraInfoError(
            f"camera_info {field} must be numbers, got {values!r}", "camera_bad_matrix"
        ) from None
    if not np.all(np.isfinite(a)):
        raise CameraInfoError(f"camera_info {field} contains NaN or inf: {a.tolist()}", "camera_not_finite")
    return a


def intrinsics_from_camera_info(
    k: Sequence[float] | np.ndarray,
    d: Sequence[float] | np.ndarray,
    distortion_model: str,
    width: int,
    height: int,
) -> CameraIntrinsics:
    """``sensor_msgs/CameraInfo`` fields (``k`` row-major 3x3, ``d``, ``distortion_model``,
    ``width``, ``height``) -> validated :class:`CameraIntrinsics`.

    Raises :class:`CameraInfoError` naming the field: zero/negative focal length
    (``camera_zero_focal_length``: an uncalibrated driver's K = 0), NaN/inf
    (``camera_not_finite``), K not a pinhole matrix (``camera_bad_matrix``: 9 numbers,
    zero skew, last row 0 0 1), a size < 1 or a principal point outside the image
    (``camera_bad_size``), an unknown model (``camera_unsupported_model``) or a ``d`` of
    the wrong length for its model (``camera_bad_distortion``). An empty ``d`` (or model
    "" with it) means no distortion.
    """
    kk = _numbers(k, "K")
    if kk.size != 9:
        raise CameraInfoError(f"camera_info K must have 9 numbers, got {kk.size}", "camera_bad_matrix")
    kk = kk.reshape(3, 3)
    fx, fy, cx, cy = float(kk[0, 0]), float(kk[1, 1]), float(kk[0, 2]), float(kk[1, 2])
    if not (fx > 0 and fy > 0):
        raise CameraInfoError(
            f"camera_info K has focal lengths fx={fx:g} fy={fy:g}; both must be > 0 (uncalibrated camera?)",
            "camera_zero_focal_length",
        )
    if abs(kk[0, 1]) > 1e-9 * fx or abs(kk[1, 0]) > 1e-9 or np.abs(kk[2] - (0.0, 0.0, 1.0)).max() > 1e-9:
        raise CameraInfoError(
            f"camera_info K must be [fx 0 cx; 0 fy cy; 0 0 1] (no skew), got {kk.reshape(-1).tolist()}",
            "camera_bad_matrix",
        )
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        raise CameraInfoError(
            f"camera_info width/height must be ints, got {width!r}x{height!r}", "camera_bad_size"
        ) from None
    if w < 1 or h < 1:
        raise CameraInfoError(f"camera_info width and height must be >= 1, got {w}x{h}", "camera_bad_size")
    if not (-0.5 <= cx <= w - 0.5 and -0.5 <= cy <= h - 0.5):
        raise CameraInfoError(
            f"camera_info principal point ({cx:g}, {cy:g}) is outside the {w}x{h} image", "camera_bad_size"
        )
    dd = _numbers(d, "D")
    model = str(distortion_model or "").strip().lower()
    if dd.size == 0:
        model = "none"  # nothing to apply, whatever the model name says
    if model not in DISTORTION_COEFFICIENTS:
        raise CameraInfoError(
            f"camera_info distortion_model {distortion_model!r} is not supported; "
            f"supported: {', '.join(sorted(DISTORTION_COEFFICIENTS))}",
            "camera_unsupported_model",
        )
    need = DISTORTION_COEFFICIENTS[model]
    if dd.size != need:
        raise CameraInfoError(
            f"camera_info D has {dd.size} coefficients; {model!r} takes {need}", "camera_bad_distortion"
        )
    cam = CameraIntrinsics(fx, fy, cx, cy, w, h, model, tuple(float(v) for v in dd))
    cam.validate()
    return cam


def scale_intrinsics(camera: CameraIntrinsics, width: int, height: int) -> CameraIntrinsics:
    """``camera`` for the same image resized to ``width`` x ``height`` (any scale per axis).

    Pixel centres stay at integers: ``fx' = fx sx``, ``cx' = (cx + 0.5) sx - 0.5``.
    Distortion coefficients act on normalised coordinates, so they are kept.
    """
    if int(width) < 1 or int(height) < 1:
        raise CameraInfoError(f"image size must be >= 1, got {width}x{height}", "camera_bad_size")
    sx, sy = int(width) / camera.width, int(height) / camera.height
    return CameraIntrinsics(
        camera.fx * sx,
        camera.fy * sy,
        (camera.cx + 0.5) * sx - 0.5,
        (camera.cy + 0.5) * sy - 0.5,
        int(width),
        int(height),
        camera.distortion_model,
        camera.distortion,
    )


def intrinsics_for_image(camera: CameraIntrinsics, width: int, height: int) -> CameraIntrinsics:
    """``camera`` as it applies to an image of ``width`` x ``height``: itself when the sizes
    agree, scaled when the image is a resize (aspect ratios within :data:`ASPECT_TOLERANCE`),
    else :class:`CameraInfoError` ``camera_size_mismatch`` (a camera_info of another stream?)."""
    if (camera.width, camera.height) == (int(width), int(height)):
        return camera
    a_cam, a_img = camera.width / camera.height, int(width) / max(int(height), 1)
    if abs(a_cam / a_img - 1.0) > ASPECT_TOLERANCE:
        raise CameraInfoError(
            f"camera_info is for {camera.width}x{camera.height} but the image is {width}x{height}: "
            "not a resize (aspect ratios differ); camera_info of another stream?",
            "camera_size_mismatch",
        )
    return scale_intrinsics(camera, width, height)


def undistort_points(camera: CameraIntrinsics, points: np.ndarray) -> np.ndarray:
    """Pixel coordinates (N, 2) -> the pixels an ideal pinhole camera with the same K would see.

    ``none`` returns a float64 copy; ``plumb_bob`` / ``rational_polynomial`` use
    ``cv2.undistortPoints``, ``equidistant`` ``cv2.fisheye.undistortPoints`` (both with
    ``P = K``, iterative inversion of the distortion).
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if camera.distortion_model == "none" or not any(camera.distortion) or len(pts) == 0:
        return pts.copy()
    k = camera.matrix
    d = np.asarray(camera.distortion, dtype=np.float64)
    src = pts.reshape(-1, 1, 2)
    if camera.distortion_model == "equidistant":
        out = cv2.fisheye.undistortPoints(src, k, d, P=k)
    else:
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-6)
        out = cv2.undistortPoints(src, k, d, R=None, P=k, criteria=crit)
    res: np.ndarray = out.reshape(-1, 2).astype(np.float64)
    return res


def body_from_optical_matrix(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """``camera.body_from_optical`` (x y z qx qy qz qw) -> 4x4 ``T_body_optical``.

    Raises :class:`~netvlad_ros.sensors.errors.SensorError` for a wrong length, NaN or a
    zero quaternion (it is normalised otherwise).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size != 7 or not np.all(np.isfinite(v)):
        raise SensorError(
            f"camera.body_from_optical must be 7 finite numbers (x y z qx qy qz qw), got {v.tolist()}"
        )
    q = v[3:]
    n = float(np.linalg.norm(q))
    if n < 1e-9:
        raise SensorError("camera.body_from_optical: the quaternion (qx qy qz qw) is zero")
    out = np.eye(4)
    out[:3, :3] = Rotation.from_quat(q / n).as_matrix()
    out[:3, 3] = v[:3]
    return out


_BIG = 1e9


@dataclass
class CameraParams:
    """The camera as the node and build-map see it: fallback intrinsics and the extrinsic.

    ``camera_info`` messages win; these fields are used while none has arrived (or when
    the stream has none). ``fx`` 0 = no fallback intrinsics (verification then fits a
    fundamental matrix until camera_info arrives). ``cx``/``cy`` 0 = the image centre
    (``(w - 1) / 2``); ``fy`` 0 = ``fx``. ``width``/``height`` 0 = the intrinsics are for
    the image as it arrives; otherwise for that size and scaled to the image's.
    """

    fx: float = param(
        0.0, "fallback focal length x (px) when no camera_info arrives; 0 = none", range=(0.0, _BIG)
    )
    fy: float = param(0.0, "fallback focal length y (px); 0 = fx", range=(0.0, _BIG))
    cx: float = param(0.0, "fallback principal point x (px); 0 = image centre", range=(0.0, _BIG))
    cy: float = param(0.0, "fallback principal point y (px); 0 = image centre", range=(0.0, _BIG))
    width: int = param(
        0, "image width the fallback intrinsics are for; 0 = as the image arrives", range=(0, 1 << 15)
    )
    height: int = param(
        0, "image height the fallback intrinsics are for; 0 = as the image arrives", range=(0, 1 << 15)
    )
    distortion_model: str = param(
        "none", "fallback distortion model", choices=tuple(sorted(DISTORTION_COEFFICIENTS))
    )
    distortion: tuple[float, ...] = param((), "fallback distortion coefficients (ROS order)")
    body_from_optical: tuple[float, ...] = param(
        DEFAULT_BODY_FROM_OPTICAL,
        "pose of the camera optical frame in the body frame: x y z qx qy qz qw",
        read_only=True,
    )

    def validate(self) -> None:
        """Raise SensorError naming the first invalid field."""
        check_fields(self, error=SensorError)
        body_from_optical_matrix(self.body_from_optical)
        need = DISTORTION_COEFFICIENTS[self.distortion_model]
        if len(self.distortion) not in (0, need):
            raise SensorError(
                f"CameraParams.distortion: {self.distortion_model!r} takes {need} coefficients, "
                f"got {len(self.distortion)}"
            )
        if (self.width == 0) != (self.height == 0):
            raise SensorError("CameraParams.width and height must both be 0 or both be set")
        if not all(math.isfinite(float(v)) for v in self.distortion):
            raise SensorError(f"CameraParams.distortion must be finite, got {self.distortion!r}")

    @property
    def T_body_optical(self) -> np.ndarray:  # noqa: N802 - the frame convention's name
        """4x4 ``T_body_optical`` of :attr:`body_from_optical`."""
        return body_from_optical_matrix(self.body_from_optical)

    def intrinsics(self, width: int, height: int) -> CameraIntrinsics | None:
        """The fallback intrinsics for an image of ``width`` x ``height``, or None without ``fx``."""
        if self.fx <= 0:
            return None
        w0, h0 = (self.width, self.height) if self.width else (int(width), int(height))
        d = tuple(float(v) for v in self.distortion)
        cam = intrinsics_from_camera_info(
            [
                self.fx,
                0.0,
                self.cx or (w0 - 1) / 2.0,
                0.0,
                self.fy or self.fx,
                self.cy or (h0 - 1) / 2.0,
                0.0,
                0.0,
                1.0,
            ],
            d,
            self.distortion_model if d else "none",
            w0,
            h0,
        )
        return intrinsics_for_image(cam, width, height)
