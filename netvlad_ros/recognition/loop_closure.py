"""Loop-closure detection over a growing map (DBoW2 / DLoopDetector scheme on NetVLAD),
verified geometrically and against odometry, with the relative pose a SLAM back end needs.

Contract: the caller adds the keyframe (pose, descriptor, **local features**) to the
``MapDatabase`` first (``db.add([kf], desc, features=[...])``), then calls
``LoopClosureDetector.process`` with the id ``db.add`` returned and the same stamp and
descriptor. Keyframes must be processed in stamp order. In slam mode the keyframes' stored
poses are the odometry (``T_odom_body``).

Per keyframe:
1. Retrieve the ``top_k`` most similar *older* keyframes, leaving out the last
   ``exclusion_seconds`` (in the search itself) and the last
   ``exclusion_keyframes`` keyframes (the recent past always looks alike).
2. Drop candidates scoring below ``min_score``. Its default ``0`` means auto: the median
   cosine between consecutive keyframes of the map (stamp order, pairs at most
   ``AUTO_PAIR_MAX_M`` apart), i.e. a revisit must look at least as alike as a typical step
   along the path. Cosines depend on the model and the environment (one head's same-place
   median on the RTAB-Map walk is 0.85, another's 0.76); this one number follows both. Until
   the map has ``AUTO_MIN_PAIRS`` such pairs no candidate passes.
3. Group the rest into islands: runs of keyframes adjacent in stamp order (gaps
   up to ``island_max_gap`` keyframes). An island's score is the sum of its
   members' scores, so a place matched by several neighbouring keyframes beats an
   isolated look-alike. Only the best island goes on.
4. Temporal consistency: the best islands of the last ``temporal_consistency``
   consecutive keyframes must overlap (after widening by
   ``consistency_max_gap`` keyframes), as a real revisit keeps matching the same
   stretch of the map while a false match rarely persists.
5. Geometric verification (``geometry.GeometricVerifier``) of the island's best members,
   best score first, up to ``max_verified_candidates``, with the features stored in the
   map (``db.features``): inliers, inlier ratio and spread must all pass.
6. Odometry agreement (``odometry_check``): the verified relative pose must agree with
   the odometry between the two keyframes (their stored poses) within
   ``translation_m + translation_per_m * d`` and ``rotation_deg + rotation_deg_per_m * d``,
   ``d`` the distance travelled from the match to the query along this detector's
   keyframes. Scale-free poses (essential matrix) are checked on rotation and translation
   direction. A match this detector has not seen being added (a keyframe of a loaded map:
   another session, another odometry frame) cannot be checked and is accepted on geometry
   alone (``LoopClosure.odometry_checked`` False). A pair without a relative pose
   (fundamental matrix: no intrinsics) is not checked either.
   The first candidate that passes is the loop closure.

Relative pose: ``LoopClosure.T_match_query`` = pose of the query keyframe's body in the
match keyframe's body (``between(x_match, x_query)``), from the verifier's optical-frame
pose through the camera extrinsic ``T_body_optical``:
``T_match_query = T_body_optical @ T_match_query_optical @ inv(T_body_optical)``; its
covariance is moved with the same transform (ROS order, the match body frame's axes).

Every candidate that is not accepted is returned with the reason, for tuning.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from scipy.spatial.transform import Rotation

from netvlad_ros.config import check_fields, param
from netvlad_ros.mapdb import MapDatabase
from netvlad_ros.mapdb.features import KeyframeFeatures
from netvlad_ros.recognition.geometry import GeometricVerifier, GeometryParams, Verification
from netvlad_ros.recognition.places import KeyframeOrder, RecognitionParamError
from netvlad_ros.sensors.camera import DEFAULT_BODY_FROM_OPTICAL, body_from_optical_matrix


class RejectReason(str, Enum):
    """Why a loop-closure candidate was not accepted."""

    INSIDE_EXCLUSION_WINDOW = "inside_exclusion_window"
    BELOW_MIN_SCORE = "below_min_score"
    NOT_IN_BEST_ISLAND = "not_in_best_island"
    NOT_TEMPORALLY_CONSISTENT = "not_temporally_consistent"
    # no stored features (detail no_features / no_query_features) or features that cannot
    # be compared (detail feature_kind_mismatch)
    GEOMETRY_UNAVAILABLE = "geometry_unavailable"
    GEOMETRIC_VERIFICATION_FAILED = "geometric_verification_failed"  # too few matches / inliers, no model
    LOW_INLIER_RATIO = "low_inlier_ratio"
    LOW_SPREAD = "low_spread"
    ODOMETRY_DISAGREES = "odometry_disagrees"
    NOT_SELECTED = "not_selected"  # another member of the island was accepted or the budget ran out


_BIG = 1e9  # "no upper bound" for a declared range
_VERIFICATION_REJECTS = {
    "low_inlier_ratio": RejectReason.LOW_INLIER_RATIO,
    "low_spread": RejectReason.LOW_SPREAD,
    "feature_kind_mismatch": RejectReason.GEOMETRY_UNAVAILABLE,
}


@dataclass
class OdometryCheckParams:
    """How far a loop closure's relative pose may disagree with odometry (``loop_closure.odometry_check.*``).

    Bounds grow with the distance ``d`` travelled from the match to the query:
    translation ``translation_m + translation_per_m * d`` (metres), rotation
    ``rotation_deg + rotation_deg_per_m * d``. Defaults: docs/recognition.md ("Odometry check").
    """

    enabled: bool = param(True, "reject loop closures whose relative pose disagrees with odometry")
    translation_m: float = param(
        1.0, "translation disagreement allowed at zero distance (m)", range=(0.0, _BIG)
    )
    translation_per_m: float = param(
        0.1, "translation disagreement allowed per metre travelled since the match", range=(0.0, 10.0)
    )
    rotation_deg: float = param(
        5.0, "rotation disagreement allowed at zero distance (deg)", range=(0.0, 180.0)
    )
    rotation_deg_per_m: float = param(
        0.1, "rotation disagreement allowed per metre travelled since the match (deg/m)", range=(0.0, 180.0)
    )

    def bounds(self, travelled_m: float) -> tuple[float, float]:
        """(translation m, rotation deg) allowed after ``travelled_m`` metres."""
        return (
            self.translation_m + self.translation_per_m * travelled_m,
            self.rotation_deg + self.rotation_deg_per_m * travelled_m,
        )


@dataclass
class LoopClosureParams:
    """Loop-closure thresholds; defaults and the measurements behind them: docs/recognition.md.

    ``temporal_consistency`` 1 disables the consistency check; ``geometric_verification``
    False accepts the best member of a consistent island without local features (no
    relative pose, no odometry check).
    """

    top_k: int = param(20, "older keyframes retrieved per keyframe", range=(1, 1000))
    min_score: float = param(
        0.0,
        "minimum cosine of a candidate; 0 = auto (median cosine of consecutive keyframes)",
        range=(-1.0, 1.0),
    )
    exclusion_seconds: float = param(20.0, "keyframes younger than this are never matched", range=(0.0, _BIG))
    exclusion_keyframes: int = param(0, "the last N keyframes are never matched", range=(0, 1_000_000))
    island_max_gap: int = param(
        2, "gap (keyframes) that still joins candidates into an island", range=(0, 100000)
    )
    temporal_consistency: int = param(
        1, "consecutive keyframes whose islands must overlap (1 = off)", range=(1, 1000)
    )
    consistency_max_gap: int = param(3, "widening (keyframes) when comparing islands", range=(0, 100000))
    geometric_verification: bool = param(True, "verify with the map's local features + RANSAC")
    max_verified_candidates: int = param(3, "island members verified at most", range=(1, 1000))
    geometry: GeometryParams = field(default_factory=GeometryParams)
    odometry_check: OdometryCheckParams = field(default_factory=OdometryCheckParams)

    def validate(self) -> None:
        """Raise RecognitionParamError naming the first invalid field."""
        check_fields(self, error=RecognitionParamError)
        self.geometry.validate()


@dataclass(frozen=True)
class RejectedCandidate:
    """A retrieved keyframe that did not become a loop closure, and why."""

    match_id: int
    match_stamp: float
    score: float
    reason: RejectReason
    inliers: int | None = None
    detail: str | None = None

    def __str__(self) -> str:
        extra = self.detail or (f"inliers={self.inliers}" if self.inliers is not None else "")
        return f"{self.reason.value}({extra})" if extra else self.reason.value


@dataclass(frozen=True)
class LoopClosure:
    """An accepted loop closure between the query keyframe and an older one.

    From geometric verification (None / NaN when it is off): ``inliers``, ``inlier_ratio``,
    ``spread``, ``model`` ("pnp" | "essential" | "fundamental"), ``T_match_query`` (4x4,
    body frames: the query keyframe's body in the match keyframe's body; translation a unit
    direction when ``scale_known`` is False; None for a fundamental matrix), ``covariance``
    (6x6, ROS order [x y z roll pitch yaw], the match body frame's axes; the translation
    block of a scale-free pose is a large constant). ``odometry_checked``: the pose was
    compared with odometry (``odometry_error`` = (translation m or translation-direction
    deg for scale-free, rotation deg), ``travelled_m`` the distance since the match).
    ``island`` is the (first, last) match id of the winning island in stamp order.
    """

    query_id: int
    match_id: int
    query_stamp: float
    match_stamp: float
    score: float
    inliers: int | None = None
    island: tuple[int, int] | None = None
    T_match_query: np.ndarray | None = field(default=None, repr=False)
    covariance: np.ndarray | None = field(default=None, repr=False)
    scale_known: bool = False
    inlier_ratio: float | None = None
    spread: float | None = None
    model: str | None = None
    odometry_checked: bool = False
    odometry_error: tuple[float, float] | None = None
    travelled_m: float | None = None


@dataclass(frozen=True)
class LoopClosureResult:
    """Accepted loop closures (at most one per keyframe) and rejected candidates."""

    query_id: int
    query_stamp: float
    accepted: tuple[LoopClosure, ...]
    rejected: tuple[RejectedCandidate, ...]
    consistent_keyframes: int = 0

    @property
    def loop_closure(self) -> LoopClosure | None:
        return self.accepted[0] if self.accepted else None


def optical_to_body(
    t_opt: np.ndarray, cov_opt: np.ndarray | None, t_body_optical: np.ndarray, scale_known: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """``T_match_query`` between optical frames -> between body frames, with its covariance.

    ``T_b = E T_o E^-1`` (``E = T_body_optical``). A perturbation ``(Exp(dr) R, t + dt)`` of
    ``T_o`` (ROS order, match optical axes) is ``(R_E dr, R_E dt - R_E [w]x dr)`` of ``T_b``
    with ``w = R_o (-R_E^T t_E)``, so ``cov_b = J cov_o J^T``. Scale-free poses (unit
    translation) only rotate the direction: the extrinsic's translation has no scale to
    combine with, so it is left out (exact for the default zero translation).
    """
    e = np.asarray(t_body_optical, dtype=np.float64)
    r_e, t_e = e[:3, :3], e[:3, 3]
    if scale_known:
        t_b = e @ t_opt @ np.linalg.inv(e)
        w = t_opt[:3, :3] @ (-r_e.T @ t_e)
    else:
        t_b = np.eye(4)
        t_b[:3, :3] = r_e @ t_opt[:3, :3] @ r_e.T
        t_b[:3, 3] = r_e @ t_opt[:3, 3]
        w = np.zeros(3)
    if cov_opt is None:
        return t_b, None
    jac = np.zeros((6, 6))
    jac[:3, :3] = r_e
    jac[3:, 3:] = r_e
    jac[:3, 3:] = -r_e @ np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
    cov_b = jac @ np.asarray(cov_opt, dtype=np.float64) @ jac.T
    return t_b, 0.5 * (cov_b + cov_b.T)


def _pose(position: np.ndarray, quat: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = Rotation.from_quat(np.asarray(quat, dtype=np.float64)).as_matrix()
    out[:3, 3] = np.asarray(position, dtype=np.float64)
    return out


def _angle_deg(r: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(r).magnitude()))


def odometry_disagreement(t_odom: np.ndarray, t_vis: np.ndarray, scale_known: bool) -> tuple[float, float]:
    """(translation error, rotation error deg) of a visual ``T_match_query`` against odometry's.

    Metric: ``|t_vis - t_odom|`` in metres. Scale-free: the angle in degrees between the
    translation directions (NaN when the odometry translation is zero). Rotation: the angle
    of ``R_odom^T R_vis``.
    """
    rot = _angle_deg(t_odom[:3, :3].T @ t_vis[:3, :3])
    if scale_known:
        return float(np.linalg.norm(t_vis[:3, 3] - t_odom[:3, 3])), rot
    a, b = t_odom[:3, 3], t_vis[:3, 3]
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-9 or nb < 1e-9:
        return math.nan, rot
    return float(np.degrees(np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0)))), rot


#: Consecutive keyframes at most this far apart (metres, their stored positions) are one step
#: along the path for the auto ``min_score`` (the calibration's same-place radius).
AUTO_PAIR_MAX_M = 10.0
#: Consecutive pairs the auto ``min_score`` needs; below it no candidate passes.
AUTO_MIN_PAIRS = 5


class StepSimilarity:
    """Cosines of consecutive keyframes (stamp order) of a map, kept up to date as it grows.

    Appending a keyframe after the newest costs one dot product; any other change (a loaded
    map, a keyframe inserted in the past, a removal) recomputes every pair in chunks.
    """

    _CHUNK = 1024

    def __init__(self, db: MapDatabase, order: KeyframeOrder) -> None:
        self._db, self._order = db, order
        self._ids: np.ndarray = np.zeros(0, np.int64)
        self._scores: list[float] = []

    def _pair_scores(self, a: np.ndarray, b: np.ndarray) -> list[float]:
        out: list[float] = []
        for k in range(0, len(a), self._CHUNK):
            ia, ib = a[k : k + self._CHUNK], b[k : k + self._CHUNK]
            cos = np.einsum("ij,ij->i", self._db.descriptors(ia), self._db.descriptors(ib))
            dist = np.linalg.norm(self._db.positions(ia) - self._db.positions(ib), axis=1)
            out += [float(c) for c, d in zip(cos, dist, strict=True) if not d > AUTO_PAIR_MAX_M]
        return out

    def update(self) -> None:
        """Bring the pairs in line with the map (call after ``order.refresh()``)."""
        ids = np.asarray(self._order.ids, dtype=np.int64)
        n = len(self._ids)
        if len(ids) == n and np.array_equal(ids, self._ids):
            return
        if len(ids) == n + 1 and n > 0 and np.array_equal(ids[:n], self._ids):
            self._scores += self._pair_scores(ids[n - 1 : n], ids[n:])
        else:
            self._scores = self._pair_scores(ids[:-1], ids[1:]) if len(ids) > 1 else []
        self._ids = ids.copy()

    @property
    def pairs(self) -> int:
        return len(self._scores)

    def median(self) -> float:
        """Median step cosine; +inf (nothing passes) with fewer than ``AUTO_MIN_PAIRS`` pairs."""
        return float(np.median(self._scores)) if len(self._scores) >= AUTO_MIN_PAIRS else math.inf


class LoopClosureDetector:
    """Stateful loop-closure detector over a growing ``MapDatabase``.

    ``body_from_optical``: the camera extrinsic ``T_body_optical`` (4x4, or the 7 numbers
    x y z qx qy qz qw of ``camera.body_from_optical``); default: the standard optical rotation.
    """

    def __init__(
        self,
        db: MapDatabase,
        params: LoopClosureParams | None = None,
        body_from_optical: np.ndarray | tuple[float, ...] | None = None,
    ) -> None:
        self.params = params or LoopClosureParams()
        self.params.validate()
        self._db = db
        self._order = KeyframeOrder(db)
        self._steps = StepSimilarity(db, self._order)
        #: The candidate threshold the last ``process`` used (None before the first): diagnostics.
        self.last_min_score: float | None = None
        #: ms of the last ``process``: ``search``, and ``verification`` when a candidate was
        #: verified (the verifier's time; the node's /diagnostics)
        self.last_timings_ms: dict[str, float] = {}
        e = np.asarray(
            DEFAULT_BODY_FROM_OPTICAL if body_from_optical is None else body_from_optical, np.float64
        )
        self.T_body_optical = e if e.shape == (4, 4) else body_from_optical_matrix(e)
        self._verifier = (
            GeometricVerifier(self.params.geometry) if self.params.geometric_verification else None
        )
        self._prev_island: tuple[int, int] | None = None  # stamp-order positions of last best island
        self._prev_query_pos: int | None = None
        self._streak = 0
        # distance travelled up to each keyframe this detector processed (one odometry chain)
        self._travelled: dict[int, float] = {}
        self._last_chain: tuple[int, np.ndarray] | None = None

    def reset(self) -> None:
        """Forget the temporal-consistency state (the odometry chain is kept)."""
        self._prev_island = None
        self._prev_query_pos = None
        self._streak = 0

    def break_odometry_chain(self) -> None:
        """Odometry restarted (a new odom frame): keyframes so far cannot be checked against later ones."""
        self._travelled.clear()
        self._last_chain = None

    def set_params(self, params: LoopClosureParams) -> None:
        """New thresholds from the next keyframe on (the odometry chain and streak are kept)."""
        params.validate()
        self.params = params
        self._verifier = GeometricVerifier(params.geometry) if params.geometric_verification else None

    def effective_min_score(self) -> float:
        """The candidate score threshold in force: ``params.min_score``, or for 0 (auto) the
        median step cosine of the map as it is now (+inf while it has too few pairs)."""
        if self.params.min_score != 0:
            return self.params.min_score
        self._order.refresh()
        self._steps.update()
        return self._steps.median()

    def _chain_add(self, keyframe_id: int) -> None:
        pos = self._db.positions([keyframe_id])[0]
        if self._last_chain is None:
            d = 0.0
        else:
            prev_id, prev_pos = self._last_chain
            d = self._travelled[prev_id] + float(np.linalg.norm(pos - prev_pos))
        self._travelled[keyframe_id] = d
        self._last_chain = (keyframe_id, pos)

    def process(self, keyframe_id: int, stamp: float, descriptor: np.ndarray) -> LoopClosureResult:
        """Look for a loop closure of keyframe ``keyframe_id`` (already in the map with its
        features: see the module docstring's contract)."""
        p = self.params
        keyframe_id = int(keyframe_id)
        stamp = float(stamp)
        d = np.asarray(descriptor, dtype=np.float32).reshape(-1)
        if not np.isfinite(d).all():
            raise RecognitionParamError("descriptor contains NaN or Inf")
        self._order.refresh()
        if keyframe_id not in self._order:
            raise RecognitionParamError(
                f"keyframe_id {keyframe_id} is not in the map: add it to the MapDatabase before process()"
            )
        qpos = self._order.position(keyframe_id)
        self._chain_add(keyframe_id)
        min_score = self.last_min_score = self.effective_min_score()

        started = time.perf_counter()
        res = self._db.search(
            d[None, :], p.top_k + p.exclusion_keyframes + 1, exclude_newer_than=stamp - p.exclusion_seconds
        )
        self.last_timings_ms = {"search": (time.perf_counter() - started) * 1e3}
        ids = np.asarray(res.ids)[0]
        scores = np.asarray(res.scores, dtype=np.float64)[0]
        keep = (ids >= 0) & (ids != keyframe_id)
        ids, scores = ids[keep], scores[keep]
        rejected: list[RejectedCandidate] = []
        cands: list[tuple[int, float, int, float]] = []  # (id, score, order position, stamp)
        considered = 0
        if len(ids):
            cpos = self._order.positions(ids)
            cstamps = self._order.stamps[cpos]
            for i, s, pos, st in zip(ids, scores, cpos, cstamps, strict=True):
                i, s, pos, st = int(i), float(s), int(pos), float(st)
                if st > stamp - p.exclusion_seconds or st >= stamp or pos > qpos - 1 - p.exclusion_keyframes:
                    rejected.append(RejectedCandidate(i, st, s, RejectReason.INSIDE_EXCLUSION_WINDOW))
                elif considered >= p.top_k:
                    continue  # surplus fetched only to make up for excluded ones
                elif s < min_score:
                    considered += 1
                    rejected.append(RejectedCandidate(i, st, s, RejectReason.BELOW_MIN_SCORE))
                else:
                    considered += 1
                    cands.append((i, s, pos, st))

        island = self._best_island(cands, rejected)
        consistent = self._update_streak(qpos, island)
        if island is None:
            return self._result(keyframe_id, stamp, [], rejected)
        members = sorted(island, key=lambda c: -c[1])
        first = min(island, key=lambda c: c[2])[0]
        last = max(island, key=lambda c: c[2])[0]
        if not consistent:
            rejected += [
                RejectedCandidate(
                    i,
                    st,
                    s,
                    RejectReason.NOT_TEMPORALLY_CONSISTENT,
                    detail=f"consistent_keyframes={self._streak}",
                )
                for i, s, _, st in members
            ]
            return self._result(keyframe_id, stamp, [], rejected)

        if self._verifier is None:
            i, s, _, st = members[0]
            rejected += [RejectedCandidate(c[0], c[3], c[1], RejectReason.NOT_SELECTED) for c in members[1:]]
            lc = LoopClosure(keyframe_id, i, stamp, st, s, island=(first, last))
            return self._result(keyframe_id, stamp, [lc], rejected)

        accepted: list[LoopClosure] = []
        qfeat = self._db.features(keyframe_id)
        for n, (i, s, _, st) in enumerate(members):
            if accepted or n >= p.max_verified_candidates:
                rejected.append(RejectedCandidate(i, st, s, RejectReason.NOT_SELECTED))
                continue
            mfeat = self._db.features(i)
            if qfeat is None or mfeat is None:
                detail = "no_query_features" if qfeat is None else "no_features"
                rejected.append(RejectedCandidate(i, st, s, RejectReason.GEOMETRY_UNAVAILABLE, detail=detail))
                continue
            found, rej = self._check(keyframe_id, i, stamp, st, s, (first, last), qfeat, mfeat)
            if found is not None:
                accepted.append(found)
            else:
                assert rej is not None
                rejected.append(rej)
        return self._result(keyframe_id, stamp, accepted, rejected)

    def _check(
        self,
        qid: int,
        mid: int,
        stamp: float,
        mstamp: float,
        score: float,
        island: tuple[int, int],
        qfeat: KeyframeFeatures,
        mfeat: KeyframeFeatures,
    ) -> tuple[LoopClosure | None, RejectedCandidate | None]:
        """Verify one candidate, then check it against odometry."""
        assert self._verifier is not None
        started = time.perf_counter()
        g: Verification = self._verifier.verify(qfeat, mfeat)
        spent = (time.perf_counter() - started) * 1e3
        self.last_timings_ms["verification"] = self.last_timings_ms.get("verification", 0.0) + spent
        numbers = f"inliers={g.inliers} ratio={g.inlier_ratio:.2f} spread={g.spread:.2f} model={g.model}"
        if not g.success:
            reason = _VERIFICATION_REJECTS.get(g.reason or "", RejectReason.GEOMETRIC_VERIFICATION_FAILED)
            return None, RejectedCandidate(mid, mstamp, score, reason, g.inliers, f"{g.reason}({numbers})")
        t_mq = cov = None
        if g.T_match_query_optical is not None:
            t_mq, cov = optical_to_body(
                g.T_match_query_optical, g.covariance, self.T_body_optical, g.scale_known
            )
        checked, err, travelled = False, None, None
        oc = self.params.odometry_check
        if oc.enabled and t_mq is not None and mid in self._travelled and qid in self._travelled:
            travelled = self._travelled[qid] - self._travelled[mid]
            kq, km = self._db.keyframe(qid), self._db.keyframe(mid)
            t_odom = np.linalg.inv(_pose(km.position, km.orientation)) @ _pose(kq.position, kq.orientation)
            err = odometry_disagreement(t_odom, t_mq, g.scale_known)
            max_t, max_r = oc.bounds(travelled)
            checked = True
            problem = None
            if err[1] > max_r:
                problem = f"rotation {err[1]:.1f} deg > {max_r:.1f} deg"
            elif g.scale_known and err[0] > max_t:
                problem = f"translation {err[0]:.2f} m > {max_t:.2f} m"
            elif not g.scale_known and math.isfinite(err[0]):
                dist = float(np.linalg.norm(t_odom[:3, 3]))
                if dist > max_t:  # the direction means something only beyond the translation bound
                    max_dir = math.degrees(math.asin(min(1.0, max_t / dist))) + max_r
                    if err[0] > max_dir:
                        problem = f"translation direction {err[0]:.1f} deg > {max_dir:.1f} deg"
            if problem is not None:
                detail = f"{problem} after {travelled:.1f} m ({numbers})"
                return None, RejectedCandidate(
                    mid, mstamp, score, RejectReason.ODOMETRY_DISAGREES, g.inliers, detail
                )
        lc = LoopClosure(
            qid,
            mid,
            stamp,
            mstamp,
            score,
            g.inliers,
            island,
            t_mq,
            cov,
            g.scale_known,
            g.inlier_ratio,
            g.spread,
            g.model,
            checked,
            err,
            travelled,
        )
        return lc, None

    def _result(
        self, qid: int, stamp: float, accepted: list[LoopClosure], rejected: list[RejectedCandidate]
    ) -> LoopClosureResult:
        rejected.sort(key=lambda r: -r.score)
        return LoopClosureResult(qid, stamp, tuple(accepted), tuple(rejected), self._streak)

    def _best_island(
        self, cands: list[tuple[int, float, int, float]], rejected: list[RejectedCandidate]
    ) -> list[tuple[int, float, int, float]] | None:
        """Split candidates into runs adjacent in stamp order; keep the best by summed score."""
        if not cands:
            return None
        by_pos = sorted(cands, key=lambda c: c[2])
        islands: list[list[tuple[int, float, int, float]]] = [[by_pos[0]]]
        for c in by_pos[1:]:
            if c[2] - islands[-1][-1][2] <= self.params.island_max_gap + 1:
                islands[-1].append(c)
            else:
                islands.append([c])
        best = max(islands, key=lambda isl: (sum(c[1] for c in isl), max(c[1] for c in isl)))
        for isl in islands:
            if isl is not best:
                rejected += [
                    RejectedCandidate(i, st, s, RejectReason.NOT_IN_BEST_ISLAND) for i, s, _, st in isl
                ]
        return best

    def _update_streak(self, qpos: int, island: list[tuple[int, float, int, float]] | None) -> bool:
        """Advance the run of consecutive keyframes whose best islands overlap."""
        p = self.params
        if island is None:
            self._prev_island, self._prev_query_pos, self._streak = None, qpos, 0
            return False
        lo = min(c[2] for c in island)
        hi = max(c[2] for c in island)
        follows = self._prev_query_pos is not None and qpos == self._prev_query_pos + 1
        if follows and self._prev_island is not None:
            plo, phi = self._prev_island
            g = p.consistency_max_gap
            overlap = lo <= phi + g and plo <= hi + g
            self._streak = self._streak + 1 if overlap else 1
        else:
            self._streak = 1
        self._prev_island, self._prev_query_pos = (lo, hi), qpos
        return self._streak >= p.temporal_consistency
