"""Local feature extraction for geometric verification: ORB (default) or SIFT keypoints and
descriptors of the full-resolution image, with the depth of each keypoint when an aligned
depth image is given. The result is the map's own type
(:class:`~netvlad_ros.mapdb.features.KeyframeFeatures`), stored per keyframe.

Why here and not in the map: the map only stores and checks features; what a feature is
(detector, parameters, depth sampling) is recognition's choice, shared by build-map, the
live session and the verifier so that a map built offline verifies against live frames.

Depth at a keypoint (``depth_window_px``): 0 = the nearest pixel; r > 0 = the median of the
valid depths in the (2r+1)^2 window around it (at least half of the window valid, else
unknown). Measured on the synthetic RGB-D world (docs/recognition.md, "Depth at keypoints").
Unknown depth (NaN, inf, 0, negative in the image) is NaN.

Size per keyframe: 1000 ORB features = 8 KB keypoints + 32 KB descriptors + 4 KB depths
= 44 KB (docs/recognition.md has the measured distribution).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from netvlad_ros.config import check_fields, param
from netvlad_ros.mapdb.features import CameraIntrinsics, KeyframeFeatures
from netvlad_ros.recognition.places import RecognitionParamError

__all__ = ["FeatureExtractor", "FeatureParams", "sample_depth"]


@dataclass
class FeatureParams:
    """What local features a keyframe stores (the ``features.*`` parameters)."""

    kind: str = param(
        "orb", "local features for verification: orb or sift", choices=("orb", "sift"), read_only=True
    )
    max_features: int = param(
        1000, "local features extracted per keyframe image", range=(8, 100000), read_only=True
    )
    depth_window_px: int = param(
        0,
        "keypoint depth: 0 = nearest pixel, r = median of the valid depths in a (2r+1)^2 window",
        range=(0, 10),
        read_only=True,
    )

    def validate(self) -> None:
        """Raise RecognitionParamError naming the first invalid field."""
        check_fields(self, error=RecognitionParamError)


def sample_depth(depth: np.ndarray, points: np.ndarray, window_px: int = 0) -> np.ndarray:
    """Depth (metres, float32) at pixel coordinates ``points`` (N, 2) of a depth image.

    Invalid depth (NaN, inf, <= 0) is NaN in the result. ``window_px`` 0: the nearest
    pixel; r > 0: the median of the valid values in the (2r+1)^2 window, NaN when fewer
    than half of the window is valid (an edge between surfaces or no return).
    """
    d = np.asarray(depth, dtype=np.float32)
    h, w = d.shape
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return np.zeros(0, np.float32)
    valid = np.isfinite(d) & (d > 0)
    clean = np.where(valid, d, np.nan).astype(np.float32)
    u = np.clip(np.rint(pts[:, 0]).astype(np.int64), 0, w - 1)
    v = np.clip(np.rint(pts[:, 1]).astype(np.int64), 0, h - 1)
    if window_px <= 0:
        out: np.ndarray = clean[v, u]
        return out
    r = int(window_px)
    offs = np.arange(-r, r + 1)
    uu = np.clip(u[:, None, None] + offs[None, None, :], 0, w - 1)
    vv = np.clip(v[:, None, None] + offs[None, :, None], 0, h - 1)
    win = clean[vv, uu].reshape(len(pts), -1)
    n_valid = np.isfinite(win).sum(axis=1)
    with warnings.catch_warnings():  # all-NaN windows: NaN is the answer, the warning is noise
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(win, axis=1)
    med[n_valid * 2 < win.shape[1]] = np.nan
    res: np.ndarray = med.astype(np.float32)
    return res


class FeatureExtractor:
    """Detects and describes local features of keyframe images (one detector, reused)."""

    def __init__(self, params: FeatureParams | None = None) -> None:
        self.params = params or FeatureParams()
        self.params.validate()
        p = self.params
        self._detector = (
            cv2.ORB.create(nfeatures=p.max_features)
            if p.kind == "orb"
            else cv2.SIFT.create(nfeatures=p.max_features)
        )

    def extract(
        self,
        image_bgr: np.ndarray,
        depth: np.ndarray | None = None,
        camera: CameraIntrinsics | None = None,
    ) -> KeyframeFeatures:
        """Features of an HxW (gray) or HxWx3 (BGR) uint8 image at full resolution.

        ``depth``: aligned float metres (HxW, the image's size; NaN/inf/0 = no return),
        sampled at each keypoint (``depths`` NaN where unknown); None stores no depths.
        ``camera``: the image's intrinsics, stored with the features (its size must be the
        image's: scale it first, ``sensors.camera.intrinsics_for_image``).
        Raises RecognitionParamError for a bad image, depth or camera.
        """
        img = np.asarray(image_bgr)
        if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
            raise RecognitionParamError(
                f"image must be HxW or HxWx3 uint8, got shape {img.shape} dtype {img.dtype}"
            )
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 and img.shape[2] == 3 else img
        gray = np.ascontiguousarray(gray.reshape(gray.shape[0], gray.shape[1]))
        h, w = gray.shape
        if depth is not None:
            dep = np.asarray(depth)
            if dep.shape != (h, w) or dep.dtype.kind != "f":
                raise RecognitionParamError(
                    f"depth must be float metres of the image's size {w}x{h}, got {dep.dtype} {dep.shape}"
                )
        if camera is not None and (camera.width, camera.height) != (w, h):
            raise RecognitionParamError(
                f"camera intrinsics are for {camera.width}x{camera.height}, the image is {w}x{h}"
            )
        kps, desc = self._detector.detectAndCompute(gray, None)
        if desc is None or not kps:
            pts = np.zeros((0, 2), np.float32)
            desc = np.zeros((0, 32 if self.params.kind == "orb" else 128), np.uint8)
        else:
            pts = np.array([kp.pt for kp in kps], dtype=np.float32)
            # pyramid levels can round a point a hair past the border; the map refuses those
            pts[:, 0] = np.clip(pts[:, 0], 0.0, w - 1.0)
            pts[:, 1] = np.clip(pts[:, 1], 0.0, h - 1.0)
        depths = None if depth is None else sample_depth(depth, pts, self.params.depth_window_px)
        try:
            return KeyframeFeatures.create(self.params.kind, pts, desc, (w, h), depths=depths, camera=camera)
        except ValueError as exc:  # a camera that does not validate
            raise RecognitionParamError(str(exc)) from None
