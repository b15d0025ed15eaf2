"""Geometric verification of an image pair with OpenCV.

Global descriptors say two images *look* alike; a loop closure also needs them to
see the same 3-D structure. Local features (ORB or SIFT) are matched with Lowe's
ratio test, then a two-view model is fitted with RANSAC: the essential matrix
(``cv2.findEssentialMat`` + ``cv2.recoverPose``) when the camera matrix is known,
which also yields the relative rotation and the translation direction (scale is
unobservable from two views), or the fundamental matrix otherwise (inliers only).
The pair passes when at least ``min_inliers`` matches agree with the model.

Only keypoints and descriptors are stored per keyframe (``ImageFeatures``), never
images: about 500 ORB features take ~20 KB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from netvlad_ros.config import check_fields, param
from netvlad_ros.recognition.places import RecognitionParamError


@dataclass
class GeometryParams:
    """Feature and RANSAC settings; defaults measured in docs/recognition.md.

    ``camera_matrix``: 3x3 intrinsics (row-major, 9 numbers or nested) of the
    images as given to ``extract``; None fits a fundamental matrix instead.
    """

    feature: str = param("orb", "local features for verification: orb or sift", choices=("orb", "sift"))
    max_features: int = param(1000, "local features extracted per image", range=(8, 100000))
    ratio: float = param(0.8, "Lowe ratio test for feature matches", range=(1e-6, 1.0))
    ransac_threshold_px: float = param(1.0, "RANSAC inlier threshold (pixels)", range=(1e-6, 1e4))
    ransac_confidence: float = param(0.999, "RANSAC confidence", range=(1e-6, 1.0 - 1e-9))
    min_inliers: int = param(25, "RANSAC inliers needed", range=(5, 100000))
    camera_matrix: tuple[float, ...] | None = None

    def validate(self) -> None:
        """Raise RecognitionParamError naming the first invalid field."""
        check_fields(self, error=RecognitionParamError)
        if self.camera_matrix is not None:
            k = np.asarray(self.camera_matrix, dtype=np.float64)
            if k.size != 9 or not np.isfinite(k).all() or abs(np.linalg.det(k.reshape(3, 3))) < 1e-12:
                raise RecognitionParamError(
                    f"GeometryParams.camera_matrix must be an invertible 3x3 matrix, got {self.camera_matrix}"
                )


@dataclass(frozen=True)
class ImageFeatures:
    """Keypoint pixel coordinates (N, 2) float32 and their descriptors (N, B)."""

    keypoints: np.ndarray = field(repr=False)
    descriptors: np.ndarray = field(repr=False)
    image_size: tuple[int, int]  # (width, height)

    def __len__(self) -> int:
        return len(self.keypoints)

    @property
    def nbytes(self) -> int:
        return int(self.keypoints.nbytes + self.descriptors.nbytes)


@dataclass(frozen=True)
class GeometricResult:
    """Outcome of verifying one pair.

    ``model`` is "essential" or "fundamental" (None when too few matches to fit).
    ``rotation`` (3x3) and ``translation_direction`` (unit 3-vector) are set only
    for a verified essential-matrix fit; their convention is in
    ``GeometricVerifier.verify``.
    """

    success: bool
    inliers: int
    matches: int
    model: str | None
    rotation: np.ndarray | None = field(default=None, repr=False)
    translation_direction: np.ndarray | None = None
    reason: str | None = None


class GeometricVerifier:
    """Extracts local features from images and verifies pairs of them."""

    def __init__(self, params: GeometryParams | None = None) -> None:
        self.params = params or GeometryParams()
        self.params.validate()
        p = self.params
        if p.feature == "orb":
            self._detector = cv2.ORB_create(nfeatures=p.max_features)
            self._norm = cv2.NORM_HAMMING
        else:
            self._detector = cv2.SIFT_create(nfeatures=p.max_features)
            self._norm = cv2.NORM_L2
        self._matcher = cv2.BFMatcher(self._norm)
        self._k = None if p.camera_matrix is None else np.asarray(p.camera_matrix, np.float64).reshape(3, 3)

    def extract(self, image: np.ndarray) -> ImageFeatures:
        """Detect and describe features of an HxW (gray) or HxWx3 (BGR) uint8 image."""
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
            raise RecognitionParamError(
                f"image must be HxW or HxWx3 uint8, got shape {img.shape} dtype {img.dtype}"
            )
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 and img.shape[2] == 3 else img
        gray = np.ascontiguousarray(gray.reshape(gray.shape[0], gray.shape[1]))
        kps, desc = self._detector.detectAndCompute(gray, None)
        width = 32 if self._norm == cv2.NORM_HAMMING else 128
        if desc is None or not kps:
            pts = np.zeros((0, 2), np.float32)
            desc = np.zeros((0, width), np.uint8 if self._norm == cv2.NORM_HAMMING else np.float32)
        else:
            pts = np.array([kp.pt for kp in kps], dtype=np.float32)
        return ImageFeatures(pts, desc, (int(gray.shape[1]), int(gray.shape[0])))

    def match(self, a: ImageFeatures, b: ImageFeatures) -> tuple[np.ndarray, np.ndarray]:
        """Ratio-test matches: returns matched pixel coordinates (M, 2) in a and in b."""
        if len(a) < 2 or len(b) < 2:
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
        pairs = self._matcher.knnMatch(a.descriptors, b.descriptors, k=2)
        ia, ib = [], []
        for pair in pairs:
            if len(pair) == 2 and pair[0].distance < self.params.ratio * pair[1].distance:
                ia.append(pair[0].queryIdx)
                ib.append(pair[0].trainIdx)
        return a.keypoints[ia].reshape(-1, 2), b.keypoints[ib].reshape(-1, 2)

    def verify(self, query: ImageFeatures, match: ImageFeatures) -> GeometricResult:
        """Fit a two-view model to the matches of ``query`` against ``match``.

        With intrinsics, ``rotation`` R and ``translation_direction`` t are those of
        ``cv2.recoverPose`` with the query as first view: a point X in the query
        camera frame is R @ X + s * t in the match camera frame (unknown s > 0).
        """
        p = self.params
        pa, pb = self.match(query, match)
        n = len(pa)
        if n < max(8, p.min_inliers):
            return GeometricResult(False, 0, n, None, reason=f"too_few_matches(matches={n})")
        if self._k is not None:
            e, mask = cv2.findEssentialMat(
                pa, pb, self._k, method=cv2.RANSAC, prob=p.ransac_confidence, threshold=p.ransac_threshold_px
            )
            if e is None or e.shape != (3, 3) or mask is None:
                return GeometricResult(False, 0, n, "essential", reason="model_fit_failed")
            n_good, r, t, _ = cv2.recoverPose(e, pa, pb, self._k, mask=mask.copy())
            inliers = int(n_good)  # RANSAC inliers that also pass the cheirality check
            tvec = t.reshape(3)
            tvec = tvec / max(np.linalg.norm(tvec), 1e-12)
            ok = inliers >= p.min_inliers
            return GeometricResult(
                ok,
                inliers,
                n,
                "essential",
                r if ok else None,
                tvec if ok else None,
                None if ok else f"geometric_verification_failed(inliers={inliers})",
            )
        f, mask = cv2.findFundamentalMat(pa, pb, cv2.FM_RANSAC, p.ransac_threshold_px, p.ransac_confidence)
        if f is None or mask is None:
            return GeometricResult(False, 0, n, "fundamental", reason="model_fit_failed")
        inliers = int(np.count_nonzero(mask))
        ok = inliers >= p.min_inliers
        return GeometricResult(
            ok,
            inliers,
            n,
            "fundamental",
            reason=None if ok else f"geometric_verification_failed(inliers={inliers})",
        )
