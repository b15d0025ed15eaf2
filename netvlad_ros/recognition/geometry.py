"""Geometric verification of a keyframe pair, and the relative pose it gives (OpenCV).

Global descriptors say two images *look* alike; a loop closure or a verified localization
also needs them to see the same 3-D structure. :meth:`GeometricVerifier.verify` takes the
stored local features of both keyframes (:class:`~netvlad_ros.mapdb.features.KeyframeFeatures`)
and:

1. matches descriptors with Lowe's ratio test **and** a mutual check (the match's best
   query feature must be the query feature that chose it): repeated windows, tiles and
   doors give ambiguous matches, which both tests drop;
2. fits the strongest model the data allow, with RANSAC:

   - ``"pnp"``: intrinsics on both sides and depth on one (the match keyframe preferred,
     else the query): the depth side's keypoints are back-projected to 3-D and
     ``cv2.solvePnPRansac`` + ``cv2.solvePnPRefineLM`` give the metric 6-DoF
     ``T_match_query_optical``; ``scale_known`` True;
   - ``"essential"``: intrinsics on both sides, no usable depth: ``cv2.findEssentialMat``
     + ``cv2.recoverPose`` give the rotation and a **unit** translation; ``scale_known``
     False;
   - ``"fundamental"``: no intrinsics: ``cv2.findFundamentalMat``, inliers only (no pose);

3. reports the inliers, the inlier ratio and the **spread** of the inliers, and passes the
   pair only when all three clear their thresholds (a repetitive facade fools inlier
   counts, not ratio and spread together; measured in docs/recognition.md).

Keypoints are undistorted (``sensors.camera.undistort_points``) before the essential
matrix and PnP; the fundamental matrix works on the raw pixels.

Conventions. ``T_match_query_optical`` is the pose of the query camera's optical frame in
the match camera's optical frame: ``p_match = T @ p_query``. The covariance (6x6) is in
ROS ``PoseWithCovariance`` order ``[x y z roll pitch yaw]``, perturbations in the match
optical frame's axes: the true pose is ``(Exp(dtheta) R, t + dt)`` (``posegraph/conventions.py``).

- PnP: Gauss-Newton on the inliers' reprojection residuals, ``sigma^2 (J^T J)^-1`` with
  ``sigma^2 = RSS / (2n - 6)`` (at least :data:`MIN_SIGMA_PX` squared, so a near-perfect
  fit does not claim millimetres); measured consistency in docs/recognition.md.
- Essential: the rotation block from the Sampson residuals of the inliers (5-DoF
  Gauss-Newton: rotation + translation direction, rotation marginal); the translation
  block is :data:`SCALE_FREE_TRANSLATION_VARIANCE` (unknown scale), no cross terms.
- Fundamental: no pose, no covariance.

Spread: the inliers' keypoints are binned into a 4x4 grid over each image; spread is the
share of the 16 cells holding at least one inlier, the smaller of the two images' shares
(``0 <= spread <= 1``). Cheap, independent of the image size, and low when the "inliers"
are one patch of repeated texture.

``min_inliers`` 0 means "auto": the caller resolves it from the map's calibration
(``dataclasses.replace(params, min_inliers=n)``); a verifier built with 0 uses
:data:`FALLBACK_MIN_INLIERS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import faiss
import numpy as np
from scipy.spatial.transform import Rotation

from netvlad_ros.config import check_fields, param
from netvlad_ros.mapdb.features import CameraIntrinsics, KeyframeFeatures
from netvlad_ros.mapdb.index import openmp_threads
from netvlad_ros.recognition.places import RecognitionParamError
from netvlad_ros.sensors.camera import undistort_points

__all__ = [
    "FALLBACK_MIN_INLIERS",
    "MIN_SIGMA_PX",
    "MODELS",
    "SCALE_FREE_TRANSLATION_VARIANCE",
    "VERIFICATION_REASONS",
    "GeometricVerifier",
    "GeometryParams",
    "Verification",
    "spread_of",
]

#: Models :attr:`Verification.model` can name.
MODELS: tuple[str, ...] = ("pnp", "essential", "fundamental")
#: ``min_inliers`` used when the params say 0 (auto) and no calibration resolved it.
FALLBACK_MIN_INLIERS = 25
#: Floor of the reprojection sigma behind a PnP covariance (pixels).
MIN_SIGMA_PX = 0.5
#: Translation variance (m^2 per axis) of a scale-free (essential-matrix) relative pose.
SCALE_FREE_TRANSLATION_VARIANCE = 1e6
#: Grid of the spread measure (cells per side).
SPREAD_GRID = 4
#: Every :attr:`Verification.reason` of a failed pair (stable names).
VERIFICATION_REASONS: tuple[str, ...] = (
    "feature_kind_mismatch",  # one side ORB, the other SIFT
    "too_few_matches",  # fewer ratio-test + mutual matches than a model needs or min_inliers
    "model_fit_failed",  # RANSAC found no model
    "too_few_inliers",  # inliers < min_inliers
    "low_inlier_ratio",  # inliers / fitted < min_inlier_ratio
    "low_spread",  # spread < min_spread
)
_MIN_POINTS = {"pnp": 6, "essential": 8, "fundamental": 8}
#: ``ransac_method`` -> OpenCV method flag (USAC: SPRT early exit, local optimisation,
#: degeneracy tests; measured faster and with more inliers than classic RANSAC).
_METHODS: dict[str, int] = {
    "usac_accurate": cv2.USAC_ACCURATE,
    "usac_default": cv2.USAC_DEFAULT,
    "usac_magsac": cv2.USAC_MAGSAC,
    "ransac": cv2.RANSAC,
}


@dataclass
class GeometryParams:
    """Matching, RANSAC and acceptance thresholds; defaults measured in docs/recognition.md."""

    ratio: float = param(0.8, "Lowe ratio test for feature matches", range=(1e-6, 1.0))
    mutual: bool = param(True, "keep only mutual best matches")
    ransac_threshold_px: float = param(
        1.0, "RANSAC inlier threshold of the two-view models (pixels)", range=(1e-6, 1e4)
    )
    pnp_threshold_px: float = param(3.0, "PnP RANSAC reprojection threshold (pixels)", range=(1e-6, 1e4))
    ransac_confidence: float = param(0.999, "RANSAC confidence", range=(1e-6, 1.0 - 1e-9))
    ransac_method: str = param(
        "usac_accurate", "robust estimator (OpenCV USAC variants or classic RANSAC)", choices=tuple(_METHODS)
    )
    max_iterations: int = param(1000, "RANSAC iterations at most", range=(10, 1_000_000))
    use_depth: bool = param(True, "PnP with keypoint depths when a side has them (metric pose)")
    min_inliers: int = param(
        0, "inliers needed; 0 = auto (map calibration, else the fallback)", range=(0, 100000)
    )
    min_inlier_ratio: float = param(0.0, "inliers / fitted matches needed", range=(0.0, 1.0))
    min_spread: float = param(0.0, "share of the 4x4 image grid the inliers must cover", range=(0.0, 1.0))

    def validate(self) -> None:
        """Raise RecognitionParamError naming the first invalid field."""
        check_fields(self, error=RecognitionParamError)

    @property
    def effective_min_inliers(self) -> int:
        """``min_inliers``, or :data:`FALLBACK_MIN_INLIERS` when it is 0 (auto, unresolved)."""
        return self.min_inliers if self.min_inliers > 0 else FALLBACK_MIN_INLIERS


@dataclass(frozen=True)
class Verification:
    """Outcome of verifying one pair (the raw numbers are filled whether or not it passed).

    ``matches``: ratio-test (+ mutual) matches; ``fitted``: those the model was fitted to
    (PnP: the matches with a known depth on the 3-D side; otherwise ``matches``);
    ``inlier_ratio`` = inliers / fitted; ``spread`` in [0, 1] (module docstring).
    ``model``: "pnp" | "essential" | "fundamental" | None (nothing fitted);
    ``reason``: None when ``success``, else one of :data:`VERIFICATION_REASONS`.
    ``T_match_query_optical``: 4x4 (PnP: metric; essential: unit translation) or None;
    ``covariance``: 6x6 ROS order in the match optical frame, or None;
    ``scale_known``: True only for PnP. ``rmse_px``: reprojection (PnP) or Sampson
    (essential, fundamental) RMS of the inliers, pixels. ``inlier_pairs``: (inliers, 2)
    int64 feature indices (query, match) of the inliers (for drawing and analysis), or None.
    """

    success: bool
    inliers: int
    matches: int
    inlier_ratio: float
    spread: float
    model: str | None
    reason: str | None
    T_match_query_optical: np.ndarray | None = field(default=None, repr=False)
    covariance: np.ndarray | None = field(default=None, repr=False)
    scale_known: bool = False
    fitted: int = 0
    rmse_px: float = math.nan
    inlier_pairs: np.ndarray | None = field(default=None, repr=False)


def spread_of(points: np.ndarray, image_size: tuple[int, int], grid: int = SPREAD_GRID) -> float:
    """Share of the ``grid`` x ``grid`` cells of a (width, height) image holding a point (N, 2)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        return 0.0
    w, h = image_size
    cx = np.clip((pts[:, 0] + 0.5) * grid // w, 0, grid - 1).astype(np.int64)
    cy = np.clip((pts[:, 1] + 0.5) * grid // h, 0, grid - 1).astype(np.int64)
    return float(len(np.unique(cy * grid + cx))) / (grid * grid)


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _exp(w: np.ndarray) -> np.ndarray:
    out: np.ndarray = Rotation.from_rotvec(w).as_matrix()
    return out


def _normalized(camera: CameraIntrinsics, pixels: np.ndarray) -> np.ndarray:
    """Undistorted pixels (N, 2) -> normalised image coordinates (N, 2)."""
    return np.column_stack([(pixels[:, 0] - camera.cx) / camera.fx, (pixels[:, 1] - camera.cy) / camera.fy])


def _hamming_knn(queries: np.ndarray, base: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest rows of ``base`` by Hamming distance for each row of ``queries``
    (uint8 binary descriptors): (distances, indices), each (Q, k), nearest first, ties to the
    lower index.

    faiss's binary flat index, on one thread: 1000 x 1000 ORB descriptors in 1.8 ms against
    8.7 ms for OpenCV's ``BFMatcher.knnMatch`` (which also builds a Python object per match;
    docs/recognition.md), the same matches. One thread, because the callers already run
    in parallel (the node's stages, the calibration's workers).
    """
    index = faiss.IndexBinaryFlat(base.shape[1] * 8)
    index.add(np.ascontiguousarray(base))
    with openmp_threads(1):
        dist, idx = index.search(np.ascontiguousarray(queries), k)
    return dist, idx


def _l2_knn(
    matcher: cv2.DescriptorMatcher, queries: np.ndarray, base: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_hamming_knn` for float descriptors (SIFT), with OpenCV's L2 brute-force matcher.

    A row OpenCV answers with fewer than ``k`` neighbours is padded with distance inf and
    index -1 (its ratio test then fails).
    """
    pairs = matcher.knnMatch(queries, base, k=k)
    dist = np.full((len(queries), k), np.inf, np.float32)
    idx = np.full((len(queries), k), -1, np.int64)
    for r, p in enumerate(pairs):
        for c, m in enumerate(p[:k]):
            dist[r, c], idx[r, c] = m.distance, m.trainIdx
    return dist, idx


class GeometricVerifier:
    """Verifies pairs of stored local features (see the module docstring)."""

    def __init__(self, params: GeometryParams | None = None) -> None:
        self.params = params or GeometryParams()
        self.params.validate()
        self._l2 = cv2.BFMatcher(cv2.NORM_L2)

    # ------------------------------------------------------------------ matching
    def match(self, query: KeyframeFeatures, match: KeyframeFeatures) -> tuple[np.ndarray, np.ndarray]:
        """Indices (M,) into ``query`` and into ``match`` of the ratio-test (+ mutual) matches."""
        empty = np.zeros(0, np.int64)
        if len(query) < 2 or len(match) < 2:
            return empty, empty
        dq, dm = query.descriptors, match.descriptors
        if query.kind == "orb":
            dist, idx = _hamming_knn(dq, dm, 2)
        else:
            dist, idx = _l2_knn(self._l2, dq.astype(np.float32), dm.astype(np.float32), 2)
        keep = (idx[:, 1] >= 0) & (dist[:, 0] < self.params.ratio * dist[:, 1])
        a, b = np.flatnonzero(keep).astype(np.int64), idx[keep, 0].astype(np.int64)
        if self.params.mutual and len(a):
            # best query feature of each match feature that was chosen (only those matter:
            # searching from the few hundred chosen ones costs a fraction of all of them)
            chosen = np.unique(b)
            picked = np.ascontiguousarray(dm[chosen])
            if query.kind == "orb":
                back = _hamming_knn(picked, dq, 1)[1]
            else:
                back = _l2_knn(self._l2, picked.astype(np.float32), dq.astype(np.float32), 1)[1]
            best_q = np.full(len(match), -1, np.int64)
            best_q[chosen] = back[:, 0]
            keep = best_q[b] == a
            a, b = a[keep], b[keep]
        return a, b

    # ------------------------------------------------------------------ verification
    def verify(self, query: KeyframeFeatures, match: KeyframeFeatures) -> Verification:
        """Verify ``query`` against ``match``; see the module docstring for models and conventions."""
        p = self.params
        if query.kind != match.kind:
            return Verification(False, 0, 0, 0.0, 0.0, None, "feature_kind_mismatch")
        iq, im = self.match(query, match)
        n = len(iq)
        min_inl = p.effective_min_inliers
        cq, cm = query.camera, match.camera
        model = "fundamental" if cq is None or cm is None else "essential"
        if n < min_inl:  # inliers <= matches: no model can pass, skip the RANSAC
            return Verification(False, 0, n, 0.0, 0.0, None, "too_few_matches", fitted=n)
        if model == "essential" and p.use_depth:
            side = self._depth_side(query, match, iq, im)
            if side is not None:
                res = self._pnp(query, match, iq, im, side)
                if res is not None:
                    return self._judge(res, query, match, min_inl)
        if n < max(_MIN_POINTS[model], min_inl):
            return Verification(False, 0, n, 0.0, 0.0, None, "too_few_matches", fitted=n)
        res = (
            self._essential(query, match, iq, im)
            if model == "essential"
            else self._fundamental(query, match, iq, im)
        )
        return self._judge(res, query, match, min_inl)

    def _judge(
        self, fit: _Fit, query: KeyframeFeatures, match: KeyframeFeatures, min_inl: int
    ) -> Verification:
        p = self.params
        if fit.inlier_q is None:
            return Verification(
                False, 0, fit.matches, 0.0, 0.0, fit.model, "model_fit_failed", fitted=fit.fitted
            )
        assert fit.inlier_m is not None  # set together with inlier_q
        inliers = len(fit.inlier_q)
        ratio = inliers / fit.fitted if fit.fitted else 0.0
        spread = min(
            spread_of(query.keypoints[fit.inlier_q], query.image_size),
            spread_of(match.keypoints[fit.inlier_m], match.image_size),
        )
        reason = None
        if inliers < min_inl:
            reason = "too_few_inliers"
        elif ratio < p.min_inlier_ratio:
            reason = "low_inlier_ratio"
        elif spread < p.min_spread:
            reason = "low_spread"
        return Verification(
            reason is None,
            inliers,
            fit.matches,
            ratio,
            spread,
            fit.model,
            reason,
            fit.T,
            fit.cov,
            fit.model == "pnp",
            fit.fitted,
            fit.rmse,
            np.column_stack([fit.inlier_q, fit.inlier_m]).astype(np.int64),
        )

    @staticmethod
    def _depth_side(
        query: KeyframeFeatures, match: KeyframeFeatures, iq: np.ndarray, im: np.ndarray
    ) -> str | None:
        """Which side's depths to back-project: the one with more matched known depths (ties: match)."""
        counts = {}
        for name, f, idx in (("match", match, im), ("query", query, iq)):
            if f.depths is None or len(idx) == 0:
                counts[name] = 0
            else:
                counts[name] = int(np.count_nonzero(np.isfinite(f.depths[idx])))
        side = max(("match", "query"), key=lambda s: counts[s])  # max keeps the first on ties
        return side if counts[side] >= _MIN_POINTS["pnp"] else None

    # ------------------------------------------------------------------ models
    def _fundamental(
        self, query: KeyframeFeatures, match: KeyframeFeatures, iq: np.ndarray, im: np.ndarray
    ) -> _Fit:
        p = self.params
        pq = query.keypoints[iq].astype(np.float64)
        pm = match.keypoints[im].astype(np.float64)
        n = len(iq)
        try:
            f, mask = cv2.findFundamentalMat(
                pq,
                pm,
                _METHODS[p.ransac_method],
                p.ransac_threshold_px,
                p.ransac_confidence,
                p.max_iterations,
            )
        except cv2.error:  # USAC asserts on some degenerate sets (OpenCV 5: "!model.empty()")
            return _Fit("fundamental", n, n)
        if f is None or mask is None or f.shape != (3, 3):
            return _Fit("fundamental", n, n)
        keep = mask.reshape(-1).astype(bool)
        r = _sampson(f, pq[keep], pm[keep])
        return _Fit("fundamental", n, n, iq[keep], im[keep], rmse=_rms(r))

    def _essential(
        self, query: KeyframeFeatures, match: KeyframeFeatures, iq: np.ndarray, im: np.ndarray
    ) -> _Fit:
        p = self.params
        cq, cm = query.camera, match.camera
        assert cq is not None and cm is not None
        xq = _normalized(cq, undistort_points(cq, query.keypoints[iq]))
        xm = _normalized(cm, undistort_points(cm, match.keypoints[im]))
        focal = 0.25 * (cq.fx + cq.fy + cm.fx + cm.fy)
        n = len(iq)
        eye = np.eye(3)
        try:
            e, mask = cv2.findEssentialMat(
                xq,
                xm,
                eye,
                method=_METHODS[p.ransac_method],
                prob=p.ransac_confidence,
                threshold=p.ransac_threshold_px / focal,
                maxIters=p.max_iterations,
            )
        except cv2.error:  # as for the fundamental matrix: a degenerate set is a failed fit
            return _Fit("essential", n, n)
        if e is None or mask is None or e.shape != (3, 3):  # several solutions stack as (3k, 3): refuse
            return _Fit("essential", n, n)
        _, r, t, pose_mask = cv2.recoverPose(e, xq, xm, eye, mask=mask.copy())
        keep = pose_mask.reshape(-1).astype(bool)  # RANSAC inliers in front of both cameras
        if keep.sum() < 5:
            return _Fit("essential", n, n, iq[keep], im[keep])
        t = t.reshape(3) / max(float(np.linalg.norm(t)), 1e-12)
        T = np.eye(4)  # noqa: N806
        T[:3, :3], T[:3, 3] = r, t
        rot_cov, rms = _essential_rotation_covariance(r, t, xq[keep], xm[keep], focal)
        cov = np.zeros((6, 6))
        cov[:3, :3] = np.eye(3) * SCALE_FREE_TRANSLATION_VARIANCE
        cov[3:, 3:] = rot_cov
        return _Fit("essential", n, n, iq[keep], im[keep], T, cov, rms)

    def _pnp(
        self, query: KeyframeFeatures, match: KeyframeFeatures, iq: np.ndarray, im: np.ndarray, side: str
    ) -> _Fit | None:
        """PnP with the ``side`` keyframe's depths; None when too few depths are usable."""
        p = self.params
        s_feat, o_feat, i_s, i_o = (match, query, im, iq) if side == "match" else (query, match, iq, im)
        cs, co = s_feat.camera, o_feat.camera
        assert cs is not None and co is not None and s_feat.depths is not None
        z = s_feat.depths[i_s].astype(np.float64)
        ok = np.isfinite(z) & (z > 0)
        fitted = int(ok.sum())
        n = len(iq)
        if fitted < max(_MIN_POINTS["pnp"], 1):
            return None
        i_s, i_o, z = i_s[ok], i_o[ok], z[ok]
        xs = _normalized(cs, undistort_points(cs, s_feat.keypoints[i_s]))
        obj = np.column_stack([xs * z[:, None], z])
        img = undistort_points(co, o_feat.keypoints[i_o])
        k = co.matrix
        try:
            found, rvec, tvec, inl = cv2.solvePnPRansac(
                obj,
                img,
                k,
                None,
                iterationsCount=1000,
                reprojectionError=p.pnp_threshold_px,
                confidence=p.ransac_confidence,
                flags=cv2.SOLVEPNP_AP3P,  # 4-point samples: a wrong pair costs ~1/3 of SQPNP
            )
        except cv2.error:
            found = False
        if not found or inl is None or len(inl) < 4:
            return _Fit("pnp", n, fitted)
        sel = inl.reshape(-1)
        rvec, tvec = cv2.solvePnPRefineLM(obj[sel], img[sel], k, None, rvec, tvec)
        # inliers of the refined pose, then one more refinement on them
        err = _reproject(obj, k, rvec, tvec) - img
        sel = np.flatnonzero(np.hypot(err[:, 0], err[:, 1]) <= p.pnp_threshold_px)
        if len(sel) < 4:
            return _Fit("pnp", n, fitted, i_q_of(side, i_s, i_o)[sel], i_m_of(side, i_s, i_o)[sel])
        rvec, tvec = cv2.solvePnPRefineLM(obj[sel], img[sel], k, None, rvec, tvec)
        t_os = np.eye(4)  # pose of the 3-D side in the other side's optical frame
        t_os[:3, :3] = cv2.Rodrigues(rvec)[0]
        t_os[:3, 3] = tvec.reshape(3)
        t_mq = _inverse(t_os) if side == "match" else t_os
        cov, rms = _pnp_covariance(t_mq, obj[sel], img[sel], k, invert=side == "match")
        return _Fit(
            "pnp", n, fitted, i_q_of(side, i_s, i_o)[sel], i_m_of(side, i_s, i_o)[sel], t_mq, cov, rms
        )


def i_q_of(side: str, i_s: np.ndarray, i_o: np.ndarray) -> np.ndarray:
    """Query-side feature indices of PnP correspondences (3-D side ``side``)."""
    return i_o if side == "match" else i_s


def i_m_of(side: str, i_s: np.ndarray, i_o: np.ndarray) -> np.ndarray:
    """Match-side feature indices of PnP correspondences (3-D side ``side``)."""
    return i_s if side == "match" else i_o


@dataclass
class _Fit:
    """A fitted model before the thresholds: inlier indices None = no model."""

    model: str
    matches: int
    fitted: int
    inlier_q: np.ndarray | None = None
    inlier_m: np.ndarray | None = None
    T: np.ndarray | None = None
    cov: np.ndarray | None = None
    rmse: float = math.nan


def _rms(r: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(r)))) if r.size else math.nan


def _inverse(t: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = t[:3, :3].T
    out[:3, 3] = -t[:3, :3].T @ t[:3, 3]
    return out


def _reproject(obj: np.ndarray, k: np.ndarray, rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    pts, _ = cv2.projectPoints(obj, rvec, tvec, k, None)
    out: np.ndarray = pts.reshape(-1, 2)
    return out


def _perturbed(t: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``(Exp(dtheta) R, p + dp)`` for ``delta`` = [dp, dtheta] (ROS order, parent axes)."""
    out = np.eye(4)
    out[:3, :3] = _exp(delta[3:]) @ t[:3, :3]
    out[:3, 3] = t[:3, 3] + delta[:3]
    return out


def _project_h(obj: np.ndarray, k: np.ndarray, t_os: np.ndarray) -> np.ndarray:
    x = obj @ t_os[:3, :3].T + t_os[:3, 3]
    uv = x[:, :2] / x[:, 2:3]
    return np.column_stack([k[0, 0] * uv[:, 0] + k[0, 2], k[1, 1] * uv[:, 1] + k[1, 2]])


def _pnp_covariance(
    t_mq: np.ndarray, obj: np.ndarray, img: np.ndarray, k: np.ndarray, invert: bool
) -> tuple[np.ndarray, float]:
    """Gauss-Newton covariance of ``T_match_query`` (ROS order) from reprojection residuals."""

    def residual(delta: np.ndarray) -> np.ndarray:
        t = _perturbed(t_mq, delta)
        return (_project_h(obj, k, _inverse(t) if invert else t) - img).reshape(-1)

    cov, r0 = _gauss_newton_covariance(residual, 6)
    return cov, _rms(r0)


def _gauss_newton_covariance(
    residual: Callable[[np.ndarray], np.ndarray], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``sigma^2 (J^T J)^-1`` (symmetric, n x n) of the parameters a residual function (pixels)
    is perturbed by at 0, with a central-difference Jacobian and ``sigma^2 = RSS / (m - n)``
    floored at :data:`MIN_SIGMA_PX` squared; also the residuals at 0."""
    r0 = residual(np.zeros(n))
    jac = np.empty((r0.size, n))
    eps = 1e-6
    for j in range(n):
        d = np.zeros(n)
        d[j] = eps
        jac[:, j] = (residual(d) - residual(-d)) / (2 * eps)
    sigma2 = max(float(r0 @ r0) / max(r0.size - n, 1), MIN_SIGMA_PX**2)
    cov = sigma2 * np.linalg.pinv(jac.T @ jac)
    return 0.5 * (cov + cov.T), r0


def _sampson(f: np.ndarray, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Signed Sampson distances of points x1 (N, 2) -> x2 (N, 2) under x2^T F x1 = 0."""
    h1 = np.column_stack([x1, np.ones(len(x1))])
    h2 = np.column_stack([x2, np.ones(len(x2))])
    fx1 = h1 @ f.T
    ftx2 = h2 @ f
    num = np.sum(h2 * fx1, axis=1)
    den = np.sqrt(fx1[:, 0] ** 2 + fx1[:, 1] ** 2 + ftx2[:, 0] ** 2 + ftx2[:, 1] ** 2)
    out: np.ndarray = num / np.maximum(den, 1e-300)
    return out


def _essential_rotation_covariance(
    r: np.ndarray, t: np.ndarray, xq: np.ndarray, xm: np.ndarray, focal: float
) -> tuple[np.ndarray, float]:
    """Rotation covariance (3x3, match axes) of an essential-matrix pose from the inliers'
    Sampson residuals (pixels): 5-DoF Gauss-Newton (rotation + the translation direction's
    2 tangent angles), rotation marginal. Also the Sampson RMS in pixels."""
    b1 = np.cross(t, [1.0, 0.0, 0.0] if abs(t[0]) < 0.9 else [0.0, 1.0, 0.0])
    b1 /= np.linalg.norm(b1)
    b2 = np.cross(t, b1)

    def residual(delta: np.ndarray) -> np.ndarray:
        rr = _exp(delta[:3]) @ r
        tt = t + delta[3] * b1 + delta[4] * b2
        tt = tt / np.linalg.norm(tt)
        return focal * _sampson(_skew(tt) @ rr, xq, xm)

    cov5, r0 = _gauss_newton_covariance(residual, 5)
    return cov5[:3, :3], _rms(r0)
