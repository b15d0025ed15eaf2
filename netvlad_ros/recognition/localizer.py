"""Localization against a prior map: retrieval, geometric re-ranking, calibrated acceptance,
optional temporal filtering and optional sequence matching.

Per query (:meth:`Localizer.localize`):

1. **Retrieval**: the ``top_k`` keyframes most similar to the query's global descriptor
   (cosine; or the SeqSLAM sequence score with ``sequence_length`` >= 2), merged into places
   within ``place_radius_m`` (``places.cluster_hypotheses``), best score first.
2. **Verified re-ranking** (the hloc / Patch-NetVLAD idea): the query's local features
   (``features``, extracted by the caller from the same image) are verified against the
   stored features of each of the ``verify_top_k`` best hypotheses (``db.features``,
   ``GeometricVerifier``); a candidate is *verified* when it passes the verifier's checks with
   at least ``min_inliers`` inliers. The verified candidate with the most inliers (ties: the
   better score) wins and its place becomes the best place, its keyframe first. Candidates
   are verified in cosine order and the rest skipped once one is verified with probability
   ``verify_stop_probability`` (0.999; 0 = verify all: most queries then cost one). A keyframe
   without stored features (a map built before features existed) is ``unverifiable``,
   never an error.
3. **Acceptance**. By default (``require_verification``) only a verified place is accepted.
   With ``require_verification`` False, a query that could not be verified falls back to the
   retrieval rule: best score >= ``min_score`` and normalized margin >= ``min_margin``.
   Then ``confidence >= min_confidence`` and, with temporal filtering, the last
   ``temporal_consistency`` queries (this one included) all had a candidate, each within
   ``temporal_max_distance_m`` of the previous and at most ``temporal_max_gap_s`` apart
   (the DLoopDetector / ORB-SLAM rule, with metric distance since a prior map has poses).

Thresholds written 0 are **auto** (resolved once per map, :class:`LocalizerThresholds`):
``geometry.min_inliers`` and ``min_score`` from the map's calibration for
``target_false_accept_rate`` (:mod:`.calibration`); ``min_margin`` is the fallback 0.05.
An explicit number wins, and an explicit ``min_score`` / ``min_margin`` also applies to
verified places (auto ones only to unverified places). A map without a calibration, or
too small to have one, uses the documented fallbacks (:data:`FALLBACK_MIN_SCORE`,
:data:`FALLBACK_MIN_MARGIN`, ``geometry.FALLBACK_MIN_INLIERS``) and says why in
:attr:`Localizer.thresholds` (``status``).

``confidence`` is the calibrated probability that the best place is the query's place
(``Calibration.probability``: from the inliers when verified, from the score when not). Without
a calibration model: verified, a fixed logistic in ``log(1 + inliers)`` with 0.9 at the
``min_inliers`` threshold and 0.99 at twice it; unverified, the normalized margin
``(s1 - s2) / (1 - s2)`` over the best spatially distinct place (``margin``, always reported).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

from netvlad_ros.config import check_fields, param
from netvlad_ros.mapdb import MapDatabase
from netvlad_ros.mapdb.features import KeyframeFeatures
from netvlad_ros.recognition.calibration import (
    Calibration,
    CalibrationError,
    calibration_problem,
    evidence,
)
from netvlad_ros.recognition.geometry import (
    FALLBACK_MIN_INLIERS,
    GeometricVerifier,
    GeometryParams,
    Verification,
)
from netvlad_ros.recognition.places import (
    Hypothesis,
    Place,
    RecognitionParamError,
    cluster_hypotheses,
    normalized_margin,
)
from netvlad_ros.recognition.sequence import SequenceMatcher

__all__ = [
    "FALLBACK_MIN_MARGIN",
    "FALLBACK_MIN_SCORE",
    "CandidateCheck",
    "LocalizationReason",
    "LocalizationResult",
    "Localizer",
    "LocalizerParams",
    "LocalizerThresholds",
]

#: ``min_score`` of an unverified place when the map has no calibration (measured on the
#: same-day RTAB-Map walk with the default model; model specific: docs/recognition.md).
FALLBACK_MIN_SCORE = 0.85
#: ``min_margin`` of an unverified place when auto (the normalized margin, docs/recognition.md).
FALLBACK_MIN_MARGIN = 0.05
#: Fixed verified-probability fallback: P = 0.9 at the inlier threshold, 0.99 at twice it.
_FALLBACK_P_AT_THRESHOLD, _FALLBACK_P_AT_TWICE = 0.9, 0.99


class LocalizationReason(str, Enum):
    """Why a query was not accepted."""

    EMPTY_MAP = "empty_map"
    NO_QUERY_FEATURES = "no_query_features"  # verification required, no local features given
    UNVERIFIABLE = "unverifiable"  # no candidate keyframe has stored local features (old map)
    NOT_VERIFIED = "not_verified"  # candidates were verified, none passed
    BELOW_MIN_SCORE = "below_min_score"
    LOW_MARGIN = "low_margin"
    LOW_CONFIDENCE = "low_confidence"  # calibrated probability below min_confidence
    NOT_TEMPORALLY_CONSISTENT = "not_temporally_consistent"
    SEQUENCE_WINDOW_INCOMPLETE = "sequence_window_incomplete"


_BIG = 1e9  # "no upper bound" for a declared range


@dataclass
class LocalizerParams:
    """Localizer thresholds (``localizer.*``); 0 = auto where said; docs/recognition.md.

    ``temporal_consistency`` 1 disables temporal filtering; ``sequence_length`` 0
    or 1 disables sequence matching (then scores are single-image cosines).
    """

    top_k: int = param(10, "hypotheses retrieved per image (rows of ~/hypotheses)", range=(1, 1000))
    place_radius_m: float = param(3.0, "hypotheses closer than this are one place", range=(0.0, _BIG))
    verify_top_k: int = param(
        5,
        "best hypotheses verified geometrically and re-ranked by inliers (0 = no verification)",
        range=(0, 1000),
    )
    verify_stop_probability: float = param(
        0.999,
        "stop verifying further candidates once one is verified with this calibrated probability "
        "(0 = verify all verify_top_k)",
        range=(0.0, 1.0),
    )
    require_verification: bool = param(
        True, "accept only geometrically verified places (false: unverified ones on min_score and min_margin)"
    )
    target_false_accept_rate: float = param(
        0.01,
        "auto thresholds: share of queries of an unmapped place that may be accepted (map calibration)",
        range=(1e-6, 0.5),
    )
    min_score: float = param(
        0.0,
        "minimum cosine of an accepted place; 0 = auto (unverified places: calibrated, else 0.85; "
        "verified: none)",
        range=(-1.0, 1.0),
    )
    min_margin: float = param(
        0.0,
        "minimum normalized margin (s1-s2)/(1-s2) of an accepted place; 0 = auto (unverified: 0.05; verified: none)",
        range=(0.0, 1.0),
    )
    min_confidence: float = param(
        0.0, "minimum calibrated probability of an accepted place (0 = off)", range=(0.0, 1.0)
    )
    temporal_consistency: int = param(1, "consecutive agreeing images needed (1 = off)", range=(1, 1000))
    temporal_max_distance_m: float = param(5.0, "max distance between agreeing places", range=(0.0, _BIG))
    temporal_max_gap_s: float = param(3.0, "max time between agreeing images", range=(0.0, _BIG))
    sequence_length: int = param(0, "SeqSLAM-style sequence matching length (0 or 1 = off)", range=(0, 1000))
    sequence_velocities: tuple[float, ...] = param(
        (0.5, 0.75, 1.0, 1.5, 2.0), "sequence matching: map keyframes per query frame tried"
    )
    sequence_search_k: int = param(
        50, "candidates per image for sequence matching (>= top_k)", range=(1, 100000)
    )
    geometry: GeometryParams = field(default_factory=GeometryParams)

    def validate(self) -> None:
        """Raise RecognitionParamError naming the first invalid field."""
        check_fields(self, error=RecognitionParamError)
        self.geometry.validate()
        if self.sequence_length >= 2 and self.sequence_search_k < self.top_k:
            raise RecognitionParamError(
                f"LocalizerParams.sequence_search_k ({self.sequence_search_k}) must be >= top_k ({self.top_k})"
            )
        if any(v == 0 for v in self.sequence_velocities) or not self.sequence_velocities:
            raise RecognitionParamError(
                f"LocalizerParams.sequence_velocities must be non-empty and non-zero, got {self.sequence_velocities}"
            )
        if self.require_verification and self.verify_top_k == 0:
            raise RecognitionParamError(
                "LocalizerParams.require_verification needs verify_top_k >= 1 (or set require_verification false)"
            )


@dataclass(frozen=True)
class LocalizerThresholds:
    """The thresholds a localizer uses on its map, resolved from params, calibration or fallbacks.

    ``min_score`` / ``min_margin`` are those of an unverified place; a verified place needs
    them only when set explicitly (``verified_min_score`` / ``verified_min_margin``, else
    -1 / 0). ``*_source``: "explicit", "calibration" or "fallback". ``calibrated``: the map's
    calibration was read; ``status``: one line for the log and /diagnostics (why not, when not).
    """

    min_inliers: int
    min_score: float
    min_margin: float
    verified_min_score: float
    verified_min_margin: float
    min_inliers_source: str
    min_score_source: str
    calibrated: bool
    status: str
    estimated_false_accept_rate: float | None = None  # at min_inliers, on the calibration's queries


@dataclass(frozen=True)
class CandidateCheck:
    """Geometric verification of one hypothesis.

    ``inliers``: the verifier's inliers when it passed its own checks, else 0; ``verified``:
    ``inliers >= min_inliers``; ``reason``: None when verified, else ``unverifiable`` (no
    stored features), ``too_few_inliers`` or the verifier's reason.
    """

    keyframe_id: int
    rank: int
    score: float
    inliers: int
    verified: bool
    reason: str | None
    verification: Verification | None = field(default=None, repr=False)


@dataclass(frozen=True)
class LocalizationResult:
    """Outcome of one query.

    ``best_place`` is set whenever the map returned anything, accepted or not (for
    diagnostics): the verified winner's place (its keyframe first) when a candidate was
    verified, else the best-scoring place; ``hypotheses[0]`` is the retrieval top-1 (before
    re-ranking). ``accepted`` says whether to trust it, ``reason`` why not. ``confidence``:
    the calibrated probability that ``best_place`` is right (module docstring); ``margin``:
    the normalized cosine margin of ``best_place``. ``checks``: one per verified hypothesis
    (cosine order; fewer than ``verify_top_k`` after an early stop). ``consistent_frames`` counts consecutive queries agreeing on the place.
    """

    stamp: float
    accepted: bool
    best_place: Place | None
    confidence: float
    hypotheses: tuple[Hypothesis, ...]
    places: tuple[Place, ...] = field(repr=False)
    reason: LocalizationReason | None
    consistent_frames: int = 0
    verified: bool = False
    inliers: int | None = None
    margin: float = 0.0
    checks: tuple[CandidateCheck, ...] = field(default=(), repr=False)


def _fallback_verified_probability(inliers: int, threshold: int) -> float:
    """Logistic in log(1 + n) through 0.9 at ``threshold`` and 0.99 at twice it."""
    lo, hi = math.log1p(threshold), math.log1p(2 * threshold)
    z_lo = math.log(_FALLBACK_P_AT_THRESHOLD / (1 - _FALLBACK_P_AT_THRESHOLD))
    z_hi = math.log(_FALLBACK_P_AT_TWICE / (1 - _FALLBACK_P_AT_TWICE))
    slope = (z_hi - z_lo) / (hi - lo)
    z = z_lo + slope * (math.log1p(max(inliers, 0)) - lo)
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


def _read_calibration(db: MapDatabase) -> tuple[Calibration | None, str]:
    blob = db.calibration
    if blob is None:
        problem = calibration_problem(db)
        if problem is not None:
            return None, f"not calibrated: {problem}"
        return (
            None,
            "not calibrated: the map holds no calibration (calibrate it: build-map does at build time)",
        )
    try:
        return Calibration.from_dict(blob), ""
    except CalibrationError as exc:
        return None, f"not calibrated: the map's calibration cannot be used ({exc})"


def resolve_thresholds(
    params: LocalizerParams, calibration: Calibration | None, why_not: str = ""
) -> LocalizerThresholds:
    """The thresholds ``params`` mean on a map with ``calibration`` (None: the fallbacks)."""
    p = params
    k = max(p.verify_top_k, 1)
    inl_src = score_src = "explicit"
    far_est = None
    if p.geometry.min_inliers > 0:
        min_inl = p.geometry.min_inliers
    elif calibration is not None and calibration.has_verification:
        auto = calibration.min_inliers(p.target_false_accept_rate, k)
        assert auto is not None
        min_inl, inl_src = auto, "calibration"
    else:
        min_inl, inl_src = FALLBACK_MIN_INLIERS, "fallback"
    if calibration is not None and calibration.has_verification:
        far_est = calibration.false_accept_rate(min_inl, k)
    if p.min_score != 0:
        min_score = p.min_score
    elif calibration is not None:
        min_score, score_src = calibration.min_score(p.target_false_accept_rate), "calibration"
    else:
        min_score, score_src = FALLBACK_MIN_SCORE, "fallback"
    min_margin = p.min_margin if p.min_margin != 0 else FALLBACK_MIN_MARGIN
    if calibration is not None:
        notes = list(calibration.notes)
        if k > calibration.verify_top_k:
            notes.append(
                f"calibrated with verify_top_k {calibration.verify_top_k}, used with {k}: recalibrate"
            )
        if not calibration.geometry_matches(p.geometry):
            notes.append("calibrated with other geometry parameters: recalibrate")
        fa = "n/a" if far_est is None else f"{far_est:.3f}"
        status = (
            f"calibrated on {calibration.keyframes} keyframes ({calibration.queries} simulated queries): "
            f"min_inliers {min_inl} ({inl_src}, estimated false-accept rate {fa} for a target of "
            f"{p.target_false_accept_rate:g}), unverified min_score {min_score:.4f} ({score_src})"
        )
        if notes:
            status += "; " + "; ".join(notes)
    else:
        status = (
            f"{why_not or 'not calibrated'}; using min_inliers {min_inl} ({inl_src}), "
            f"unverified min_score {min_score:.4f} ({score_src}), min_margin {min_margin:g}"
        )
    return LocalizerThresholds(
        min_inliers=int(min_inl),
        min_score=float(min_score),
        min_margin=float(min_margin),
        verified_min_score=p.min_score if p.min_score != 0 else -1.0,
        verified_min_margin=p.min_margin,
        min_inliers_source=inl_src,
        min_score_source=score_src,
        calibrated=calibration is not None,
        status=status,
        estimated_false_accept_rate=far_est,
    )


class Localizer:
    """Stateful localizer over a ``MapDatabase`` (state: temporal and sequence windows).

    ``calibration``: ``"map"`` (default) reads ``db.calibration``; a :class:`Calibration` or
    None (the fallbacks) overrides it.
    """

    def __init__(
        self,
        db: MapDatabase,
        params: LocalizerParams | None = None,
        calibration: Calibration | str | None = "map",
    ) -> None:
        self.params = params or LocalizerParams()
        self.params.validate()
        self._db = db
        self._prev: tuple[float, Place] | None = None  # last query with a candidate place
        self._streak = 0
        p = self.params
        if isinstance(calibration, str):
            if calibration != "map":
                raise RecognitionParamError(
                    f"calibration must be 'map', a Calibration or None, got {calibration!r}"
                )
            self.calibration, why_not = _read_calibration(db)
        else:
            self.calibration, why_not = calibration, "not calibrated: no calibration given"
        self.thresholds = resolve_thresholds(p, self.calibration, why_not)
        # The resolved threshold lets the verifier skip pairs with fewer matches than it.
        self._verifier = GeometricVerifier(
            replace(p.geometry, min_inliers=max(1, self.thresholds.min_inliers))
        )
        #: ms of the last ``localize``: ``search``, and ``verification`` when it verified
        #: candidates (stored features read + verified; the node's /diagnostics)
        self.last_timings_ms: dict[str, float] = {}
        self._seq: SequenceMatcher | None = None
        if p.sequence_length >= 2:
            self._seq = SequenceMatcher(
                db, p.sequence_length, p.sequence_velocities, p.sequence_search_k, p.temporal_max_gap_s
            )

    def reset(self) -> None:
        """Forget temporal and sequence state (call after the map changes or a kidnap)."""
        self._prev = None
        self._streak = 0
        if self._seq is not None:
            self._seq.reset()

    def _check_descriptor(self, descriptor: np.ndarray) -> np.ndarray:
        d = np.asarray(descriptor, dtype=np.float32)
        if d.ndim == 2 and d.shape[0] == 1:
            d = d[0]
        if d.ndim != 1:
            raise RecognitionParamError(f"descriptor must have shape (D,), got {np.shape(descriptor)}")
        dim = getattr(self._db, "descriptor_dim", None)
        if dim is not None and d.shape[0] != int(dim):
            raise RecognitionParamError(f"descriptor has dimension {d.shape[0]}, map expects {dim}")
        if not np.isfinite(d).all():
            raise RecognitionParamError("descriptor contains NaN or Inf")
        return d

    def _hypotheses(self, ids: np.ndarray, scores: np.ndarray) -> tuple[Hypothesis, ...]:
        if len(ids) == 0:
            return ()
        pos = np.asarray(self._db.positions(ids), dtype=np.float64)
        ori = np.asarray(self._db.orientations(ids), dtype=np.float64)
        stamps = np.asarray(self._db.stamps(ids), dtype=np.float64)
        return tuple(
            Hypothesis(int(ids[r]), float(scores[r]), pos[r], ori[r], float(stamps[r]), r)
            for r in range(len(ids))
        )

    def _retrieve(self, d: np.ndarray, stamp: float) -> tuple[np.ndarray, np.ndarray, bool]:
        """(ids, scores, window_complete): the ranked candidates of one query."""
        p = self.params
        res = self._db.search(d[None, :], p.top_k)
        ids = np.asarray(res.ids)[0]
        keep = ids >= 0
        ids, scores = ids[keep], np.asarray(res.scores, dtype=np.float64)[0][keep]
        if self._seq is None:
            return ids, scores, True
        self._seq.push(d, stamp)
        if not self._seq.full:
            return ids, scores, False
        seq_scores, _ = self._seq.score_ends(ids)
        order = np.argsort(-seq_scores, kind="stable")
        ids, scores = ids[order], seq_scores[order]
        finite = np.isfinite(scores)
        return ids[finite], scores[finite], True

    def verify(
        self, features: KeyframeFeatures, hypotheses: tuple[Hypothesis, ...], stop_probability: float = 0.0
    ) -> tuple[CandidateCheck, ...]:
        """Verify ``features`` against each hypothesis' stored features, in order (no state is
        changed). ``stop_probability`` > 0: stop after the first candidate verified with at
        least that calibrated probability (the rest cannot matter unless it is wrong, which
        the probability says is rarer than ``1 - stop_probability``; saves their cost)."""
        t = self.thresholds.min_inliers
        out = []
        for h in hypotheses:
            stored = self._db.features(h.keyframe_id)
            if stored is None:
                out.append(CandidateCheck(h.keyframe_id, h.rank, h.score, 0, False, "unverifiable"))
                continue
            v = self._verifier.verify(features, stored)
            n = evidence(v)
            ok = n >= t
            reason = None if ok else (v.reason if not v.success else "too_few_inliers")
            out.append(CandidateCheck(h.keyframe_id, h.rank, h.score, n, ok, reason, v))
            if ok and stop_probability > 0 and self._probability(h.score, n) >= stop_probability:
                break
        return tuple(out)

    def localize(
        self, descriptor: np.ndarray, stamp: float, features: KeyframeFeatures | None = None
    ) -> LocalizationResult:
        """Localize one query: its descriptor (unit norm, shape (D,)) taken at ``stamp`` (s) and
        the local features of the same image (``FeatureExtractor.extract``; None = unverified)."""
        p = self.params
        self.last_timings_ms = {}
        d = self._check_descriptor(descriptor)
        stamp = float(stamp)
        if len(self._db) == 0:
            self._break_streak()
            return LocalizationResult(stamp, False, None, 0.0, (), (), LocalizationReason.EMPTY_MAP)
        started = time.perf_counter()
        ids, scores, complete = self._retrieve(d, stamp)
        self.last_timings_ms = {"search": (time.perf_counter() - started) * 1e3}
        hyps = self._hypotheses(ids, scores)
        places = tuple(cluster_hypotheses(hyps, p.place_radius_m))
        if not complete:
            self._break_streak()
            return LocalizationResult(
                stamp,
                False,
                places[0] if places else None,
                0.0,
                hyps,
                places,
                LocalizationReason.SEQUENCE_WINDOW_INCOMPLETE,
            )
        if not places:
            self._break_streak()
            return LocalizationResult(stamp, False, None, 0.0, (), (), LocalizationReason.EMPTY_MAP)

        checks: tuple[CandidateCheck, ...] = ()
        winner: CandidateCheck | None = None
        if p.verify_top_k > 0 and features is not None:
            started = time.perf_counter()
            checks = self.verify(features, hyps[: p.verify_top_k], p.verify_stop_probability)
            self.last_timings_ms["verification"] = (time.perf_counter() - started) * 1e3
            passed = [c for c in checks if c.verified]
            if passed:
                winner = max(passed, key=lambda c: (c.inliers, -c.rank))
        best = places[0] if winner is None else _place_of(winner.keyframe_id, places)
        margin = _margin_of(best, places, hyps)
        th = self.thresholds
        reason: LocalizationReason | None = None
        if winner is not None:
            confidence = self._probability(best.score, winner.inliers)
            min_score, min_margin = th.verified_min_score, th.verified_min_margin
        else:
            confidence = self._probability(best.score, None, margin)
            min_score, min_margin = th.min_score, th.min_margin
            if p.require_verification:
                if features is None:
                    reason = LocalizationReason.NO_QUERY_FEATURES
                elif checks and all(c.reason == "unverifiable" for c in checks):
                    reason = LocalizationReason.UNVERIFIABLE
                else:
                    reason = LocalizationReason.NOT_VERIFIED
        if reason is None:
            if best.score < min_score:
                reason = LocalizationReason.BELOW_MIN_SCORE
            elif margin < min_margin:
                reason = LocalizationReason.LOW_MARGIN
            elif confidence < p.min_confidence:
                reason = LocalizationReason.LOW_CONFIDENCE
        extra = {
            "verified": winner is not None,
            "inliers": None if winner is None else winner.inliers,
            "margin": margin,
            "checks": checks,
        }
        if reason is not None:
            self._break_streak()
            return LocalizationResult(stamp, False, best, confidence, hyps, places, reason, **extra)  # type: ignore[arg-type]

        self._extend_streak(stamp, best)
        accepted = self._streak >= p.temporal_consistency
        return LocalizationResult(
            stamp,
            accepted,
            best,
            confidence,
            hyps,
            places,
            None if accepted else LocalizationReason.NOT_TEMPORALLY_CONSISTENT,
            self._streak,
            **extra,  # type: ignore[arg-type]
        )

    def _probability(self, score: float, inliers: int | None, margin: float = 0.0) -> float:
        cal = self.calibration
        prob = cal.probability(score, inliers, self.params.verify_top_k) if cal is not None else None
        if prob is not None:
            return prob
        if inliers is not None:
            return _fallback_verified_probability(inliers, self.thresholds.min_inliers)
        return margin

    def _break_streak(self) -> None:
        self._prev = None
        self._streak = 0

    def _extend_streak(self, stamp: float, place: Place) -> None:
        p = self.params
        consistent = False
        if self._prev is not None:
            prev_stamp, prev_place = self._prev
            if 0 <= stamp - prev_stamp <= p.temporal_max_gap_s:
                a = np.asarray(place.position, dtype=np.float64)
                b = np.asarray(prev_place.position, dtype=np.float64)
                if np.isfinite(a).all() and np.isfinite(b).all():
                    consistent = float(np.linalg.norm(a - b)) <= p.temporal_max_distance_m
                else:
                    consistent = place.keyframe_id == prev_place.keyframe_id
        self._streak = self._streak + 1 if consistent else 1
        self._prev = (stamp, place)


def _place_of(keyframe_id: int, places: tuple[Place, ...]) -> Place:
    """The place holding ``keyframe_id``, re-seeded on it (its pose is the one published)."""
    for pl in places:
        for h in pl.hypotheses:
            if h.keyframe_id == keyframe_id:
                rest = tuple(o for o in pl.hypotheses if o.keyframe_id != keyframe_id)
                return Place((h, *rest))
    raise KeyError(keyframe_id)  # pragma: no cover - the winner is always a hypothesis


def _margin_of(best: Place, places: tuple[Place, ...], hyps: tuple[Hypothesis, ...]) -> float:
    """Normalized margin of ``best`` over the best other place (or, alone, the lowest score)."""
    if len(hyps) < 2:
        return 0.0
    members = {h.keyframe_id for h in best.hypotheses}
    others = [pl.score for pl in places if pl.keyframe_id not in members]
    runner_up = max(others) if others else min(h.score for h in hyps)
    return normalized_margin(best.score, runner_up)
