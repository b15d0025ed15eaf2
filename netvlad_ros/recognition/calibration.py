"""Calibration of the recognition thresholds from the map itself (weak supervision by its poses).

Cosine scores of the same and of different places overlap, and by how much depends on the
model, the environment and the conditions, so no absolute score or inlier threshold is right
for every map. A map, however, knows where its keyframes are. Following the NetVLAD paper's
weak supervision, two keyframes within ``same_place_m`` (10 m) are the same place and two
keyframes at least ``different_place_m`` (25 m) apart are different places (the band between
is ambiguous and never counted either way).

What is measured (:func:`calibrate`):

- **Negatives: a simulated localization query whose place is not in the map.** For each
  sampled keyframe, every keyframe within ``same_place_m`` of it is removed (its own place),
  the rest of the map is searched with its descriptor (the same ``db.search`` the localizer
  runs), and its local features are verified against the ``verify_top_k`` best candidates,
  exactly as :class:`~netvlad_ros.recognition.localizer.Localizer` re-ranks them. The winner
  (most inliers, ties to the better cosine) is a *false accept* at threshold ``t`` when it
  lies ``>= different_place_m`` away and has ``>= t`` inliers. Candidates in the ambiguous
  band stay in, as they would for a real query, and count as neither.
  This is harder than what a query at a mapped place faces (its own place, which usually
  wins, is gone), and the negatives were taken on the same day, under the same light, as the
  map, which gives wrong pairs more spurious matches than a query of another day gets: both
  make the thresholds conservative.
- **Positives**: each sampled keyframe against up to ``positives_per_keyframe`` keyframes
  within ``same_place_m``, its neighbours in the keyframe sequence (stamp order) first, then
  the nearest. They are easier than a query of another day (same day, nearby): they are used
  only for the probability model and the reported distributions, never for a threshold.

What is derived (for a target per-query false-accept rate ``far``, :meth:`Calibration.min_inliers`,
:meth:`Calibration.min_score`): the smallest threshold at which at most ``floor(far * n)``
of the ``n`` simulated queries would accept a wrong place. When ``far * n < 1`` (a small
map) the largest sample is extrapolated with an exponential tail fitted to the top fifth of
the samples (the peaks-over-threshold estimate), so a small map gets a higher threshold, not
a lower one. Inlier thresholds are never below :data:`MIN_AUTO_INLIERS`.

The probability of "same place" (:meth:`Calibration.probability`, the localizer's confidence)
of a verified candidate with ``n`` inliers is the posterior, equal priors, of "same place"
against "the winner of a query of an unmapped place": ``p = 1 / (1 + m S(n) / beta)`` with
``S(n)`` the share of simulated queries whose wrong winner reaches ``n`` (the exponential
tail above, ``beta`` its scale: the same model that sets the threshold, so ``p`` at the
threshold of false-accept rate ``r`` is ``1 / (1 + r m / beta)``) and ``m`` the median inliers of
the in-map same-place pairs (the same-place likelihood taken flat below it). In-map pairs have
more inliers than a query of another day, so ``m`` is large and ``p`` conservative. Clean
same-day pairs separate perfectly from wrong ones (nothing in between to fit a logistic to),
which is why the verified model is a tail model, not Platt scaling. For an unverified
candidate (``require_verification`` off) it is a logistic fit (Platt scaling) of the cosine
scores of the positives against the hardest negatives, equal class weights: there the
classes overlap and the fit is well defined.

Minimums (:func:`calibration_problem`, below them :func:`calibrate` returns None and the
localizer uses the documented fallback defaults): :data:`MIN_KEYFRAMES` keyframes,
:data:`MIN_NEGATIVE_QUERIES` keyframes with another keyframe ``>= different_place_m`` away
(the map must span more than 25 m, with enough of it), :data:`MIN_POSITIVE_PAIRS` pairs within
``same_place_m``. Measurements: docs/recognition.md ("Calibration").
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from netvlad_ros.config import check_fields, param
from netvlad_ros.mapdb import MapDatabase
from netvlad_ros.model.device import cpu_count
from netvlad_ros.recognition.geometry import GeometricVerifier, GeometryParams
from netvlad_ros.recognition.places import RecognitionParamError

__all__ = [
    "CALIBRATION_VERSION",
    "MIN_AUTO_INLIERS",
    "MIN_KEYFRAMES",
    "MIN_NEGATIVE_QUERIES",
    "MIN_POSITIVE_PAIRS",
    "Calibration",
    "CalibrationError",
    "CalibrationParams",
    "LogisticModel",
    "calibrate",
    "calibrate_or_reason",
    "calibration_problem",
    "evidence",
    "tail_survival",
    "upper_threshold",
]

#: Version of the stored blob (:meth:`Calibration.to_dict`); other versions are refused.
CALIBRATION_VERSION = 1
#: Fewest keyframes a map needs to be calibrated.
MIN_KEYFRAMES = 20
#: Fewest keyframes with another keyframe ``>= different_place_m`` away (simulated queries).
MIN_NEGATIVE_QUERIES = 20
#: Fewest keyframe pairs within ``same_place_m`` (positives of the probability model).
MIN_POSITIVE_PAIRS = 10
#: An automatic inlier threshold is never lower than this (a fundamental matrix needs 8
#: points; 15 inliers of random matches is already rare).
MIN_AUTO_INLIERS = 15


class CalibrationError(RecognitionParamError):
    """A calibration blob cannot be read (wrong version, missing or malformed fields)."""


@dataclass
class CalibrationParams:
    """How a map is calibrated (``calibration.*``); defaults: docs/recognition.md."""

    same_place_m: float = param(10.0, "keyframes this close are the same place", range=(0.0, 1e6))
    different_place_m: float = param(25.0, "keyframes this far apart are different places", range=(0.0, 1e6))
    verify_top_k: int = param(
        5, "candidates verified per simulated query (the localizer's verify_top_k)", range=(1, 1000)
    )
    max_queries: int = param(
        300, "keyframes used as simulated queries at most (evenly spread over the map)", range=(1, 1_000_000)
    )
    positives_per_keyframe: int = param(2, "same-place pairs verified per simulated query", range=(1, 100))
    workers: int = param(0, "threads verifying the simulated queries; 0 = one per core", range=(0, 256))

    def validate(self) -> None:
        """Raise RecognitionParamError naming the first invalid field."""
        check_fields(self, error=RecognitionParamError)
        if self.different_place_m <= self.same_place_m:
            raise RecognitionParamError(
                f"CalibrationParams.different_place_m ({self.different_place_m}) must be larger than "
                f"same_place_m ({self.same_place_m})"
            )


@dataclass(frozen=True)
class LogisticModel:
    """``p = 1 / (1 + exp(-(slope * x + intercept)))`` with ``x`` = ``log(1 + inliers)`` or a score."""

    slope: float
    intercept: float

    def __call__(self, x: float) -> float:
        z = self.slope * float(x) + self.intercept
        return float(1.0 / (1.0 + math.exp(-z))) if z > -700 else 0.0

    def to_list(self) -> list[float]:
        return [float(self.slope), float(self.intercept)]


def evidence(verification: Any) -> int:
    """A verification's evidence for re-ranking and thresholds: its inliers when it passed
    every check of the verifier (built with ``min_inliers`` 1, so only the inlier-ratio and
    spread checks and a model fit apply), else 0."""
    return int(verification.inliers) if verification.success else 0


def _tail_scale(x_desc: np.ndarray, step: float) -> float:
    """Scale ``beta`` of the exponential upper tail of the samples ``x_desc`` (sorted, largest
    first): the mean excess of the top fifth (at least 3) over the next sample, counting only
    samples above the smallest (where "no false accept" samples sit, e.g. 0 inliers); at least
    ``step``."""
    tail = x_desc[x_desc > x_desc[-1]]
    m = min(max(3, len(x_desc) // 5), len(tail) - 1)
    return max(float(np.mean(tail[:m] - tail[m])), step) if m >= 1 else step


def upper_threshold(samples: Sequence[float] | np.ndarray, rate: float, step: float) -> float:
    """Smallest threshold that at most ``floor(rate * n)`` of the ``n`` samples reach.

    ``step`` is the resolution (1 for inlier counts: the threshold is one above the
    ``k+1``-th largest sample). When ``rate * n < 1`` the largest sample is extrapolated:
    ``max + step + beta * ln(1 / (rate * n))``, ``beta`` the exponential tail's scale
    (:func:`_tail_scale`, peaks over threshold). :func:`tail_survival` is its inverse.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))[::-1]
    n = len(x)
    if n == 0:
        raise ValueError("upper_threshold needs samples")
    if not 0 < rate < 1:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    if rate * n >= 1:
        return float(x[math.floor(rate * n)] + step)
    return float(x[0] + step + _tail_scale(x, step) * math.log(1.0 / (rate * n)))


def tail_survival(samples: Sequence[float] | np.ndarray, value: float, step: float) -> float:
    """Estimated share of the population behind ``samples`` that reaches ``value``: the
    empirical share while a sample does, beyond the largest sample the exponential tail of
    :func:`upper_threshold` (``exp(-(value - max - step) / beta) / n``). Never 0; non-increasing."""
    x = np.sort(np.asarray(samples, dtype=np.float64))[::-1]
    n = len(x)
    if n == 0:
        raise ValueError("tail_survival needs samples")
    reached = int(np.count_nonzero(x >= value))
    if reached:
        return reached / n
    return math.exp(-max(value - x[0] - step, 0.0) / _tail_scale(x, step)) / n


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> LogisticModel | None:
    """Class-balanced, lightly L2-regularised logistic regression of ``y`` on one feature
    (Newton's method); None when the classes do not order (slope <= 0) or one is empty."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    mu, sd = float(x.mean()), float(x.std()) or 1.0
    z = (x - mu) / sd
    w = np.where(y > 0, 0.5 / n_pos, 0.5 / n_neg)
    theta = np.zeros(2)  # slope, intercept on the standardised feature
    design = np.column_stack([z, np.ones_like(z)])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -500, 500)))
        grad = design.T @ (w * (p - y)) + l2 * np.array([theta[0], 0.0])
        hess = (design * (w * p * (1 - p))[:, None]).T @ design + l2 * np.diag([1.0, 0.0]) + 1e-12 * np.eye(2)
        delta = np.linalg.solve(hess, grad)
        theta -= delta
        if np.abs(delta).max() < 1e-10:
            break
    slope = float(theta[0] / sd)
    if not slope > 0 or not math.isfinite(slope):
        return None
    return LogisticModel(slope, float(theta[1] - theta[0] * mu / sd))


#: Geometry fields that change what a verification measures (all but the thresholds).
def _geometry_signature(params: GeometryParams) -> dict[str, Any]:
    out = dataclasses.asdict(params)
    out.pop("min_inliers", None)
    return {k: v for k, v in out.items() if isinstance(v, (bool, int, float, str))}


@dataclass(frozen=True)
class Calibration:
    """A map's calibration: the simulated queries' samples and the models fitted to them.

    ``candidate_inliers`` / ``candidate_negative`` / ``candidate_scores``: per simulated query
    (rows), per candidate in cosine order (``verify_top_k`` columns, shorter when the pool was
    smaller): the evidence (:func:`evidence`; None when the map has no local features), whether
    the candidate is ``>= different_place_m`` from the query keyframe, and its cosine score.
    ``positive_inliers`` / ``positive_scores``: the same-place pairs. ``retrieval_model``:
    :class:`LogisticModel` on the score (None when the samples do not separate); the verified
    probability is computed from the samples (:meth:`probability`). ``notes``: what a reader of the diagnostics should know.
    """

    keyframes: int
    keyframes_with_features: int
    same_place_m: float
    different_place_m: float
    verify_top_k: int
    candidate_scores: tuple[tuple[float, ...], ...] = field(repr=False)
    candidate_negative: tuple[tuple[bool, ...], ...] = field(repr=False)
    candidate_inliers: tuple[tuple[int, ...], ...] | None = field(repr=False)
    positive_scores: tuple[float, ...] = field(repr=False)
    positive_inliers: tuple[int, ...] | None = field(repr=False)
    retrieval_model: LogisticModel | None
    geometry: dict[str, Any] = field(default_factory=dict, repr=False)
    notes: tuple[str, ...] = ()
    version: int = CALIBRATION_VERSION
    _winners: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ samples
    @property
    def queries(self) -> int:
        """Simulated queries (keyframes with a candidate pool)."""
        return len(self.candidate_scores)

    @property
    def has_verification(self) -> bool:
        """True when inliers were measured (the map had local features)."""
        return self.candidate_inliers is not None

    def negative_winner_inliers(self, verify_top_k: int | None = None) -> np.ndarray:
        """Per simulated query: the winner's evidence when the winner (most inliers among the
        first ``verify_top_k`` candidates, ties to the better cosine) is a negative, else 0."""
        if self.candidate_inliers is None:
            raise CalibrationError("this calibration has no inlier samples (the map had no local features)")
        k = self.verify_top_k if verify_top_k is None else max(1, min(int(verify_top_k), self.verify_top_k))
        if k in self._winners:
            return self._winners[k]
        out = np.zeros(self.queries, np.float64)
        for q, (inl, neg) in enumerate(zip(self.candidate_inliers, self.candidate_negative, strict=True)):
            e = np.asarray(inl[:k], np.float64)
            if len(e) == 0:
                continue
            w = int(np.argmax(e))  # first maximum: the best cosine among equals
            out[q] = e[w] if neg[w] else 0.0
        out.setflags(write=False)
        self._winners[k] = out
        return out

    def negative_best_scores(self) -> np.ndarray:
        """Per simulated query: the best cosine of a negative (a keyframe ``>= different_place_m``
        away); when no candidate is one, the lowest candidate score, an upper bound on it."""
        out = [
            max((v for v, neg in zip(s, n, strict=True) if neg), default=min(s))
            for s, n in zip(self.candidate_scores, self.candidate_negative, strict=True)
            if s
        ]
        return np.asarray(out, np.float64)

    # ------------------------------------------------------------------ thresholds
    def min_inliers(self, target_false_accept_rate: float, verify_top_k: int | None = None) -> int | None:
        """Inliers a verified place needs for the target per-query false-accept rate (None without
        inlier samples); never below :data:`MIN_AUTO_INLIERS`."""
        if self.candidate_inliers is None:
            return None
        t = upper_threshold(self.negative_winner_inliers(verify_top_k), target_false_accept_rate, 1.0)
        return max(MIN_AUTO_INLIERS, math.ceil(t))

    def min_score(self, target_false_accept_rate: float) -> float:
        """Cosine an unverified place needs for the target per-query false-accept rate (may
        exceed 1: then no unverified place is accepted on this map)."""
        return upper_threshold(self.negative_best_scores(), target_false_accept_rate, 1e-4)

    def false_accept_rate(self, min_inliers: int, verify_top_k: int | None = None) -> float:
        """Share of the simulated queries that would accept a wrong place at ``min_inliers``."""
        s = self.negative_winner_inliers(verify_top_k)
        return float(np.mean(s >= min_inliers)) if len(s) else math.nan

    def probability(
        self, score: float, inliers: float | None = None, verify_top_k: int | None = None
    ) -> float | None:
        """Calibrated probability that a candidate is the same place: from its inliers when
        verified (``inliers`` not None), else from its cosine score; None without the samples.

        Verified: the posterior with equal priors of "same place" against "the winner of a
        query of an unmapped place" (:meth:`negative_winner_inliers`), ``odds = f_same(n) /
        f_wrong(n)``. ``f_wrong(n) = S(n) / beta``: the density of the negatives' exponential
        tail, ``S`` = :func:`tail_survival` (the same tail that sets :meth:`min_inliers`);
        ``f_same(n) = 1 / m``: flat up to ``m``, the median inliers of the in-map same-place
        pairs (a query of another day has fewer inliers than a same-day pair, anywhere below).
        So ``p = 1 / (1 + m S(n) / beta)``: at the threshold of a false-accept rate ``r``
        (``S = r``) ``p = 1 / (1 + r m / beta)``, and each ``beta`` more inliers divide the odds
        against by e. Unverified: :attr:`retrieval_model`.
        """
        if inliers is None:
            return None if self.retrieval_model is None else self.retrieval_model(score)
        if self.candidate_inliers is None or not self.positive_inliers:
            return None
        neg = self.negative_winner_inliers(verify_top_k)
        if len(neg) == 0:
            return None
        x = np.sort(neg)[::-1]
        beta = _tail_scale(x, 1.0)
        m = max(float(np.median(self.positive_inliers)), 1.0)
        against = m * tail_survival(x, float(max(inliers, 0)), 1.0) / beta
        return float(1.0 / (1.0 + against))

    def summary(self) -> dict[str, Any]:
        """Counts and quantiles for logs, diagnostics and docs."""
        out: dict[str, Any] = {
            "version": self.version,
            "keyframes": self.keyframes,
            "keyframes_with_features": self.keyframes_with_features,
            "queries": self.queries,
            "positive_pairs": len(self.positive_scores),
            "verify_top_k": self.verify_top_k,
        }
        neg_s = self.negative_best_scores()
        if len(neg_s):
            out["negative_best_score_p50_p99_max"] = [float(v) for v in np.percentile(neg_s, [50, 99, 100])]
        if self.positive_scores:
            out["positive_score_p1_p10_p50"] = [
                float(v) for v in np.percentile(self.positive_scores, [1, 10, 50])
            ]
        if self.candidate_inliers is not None:
            w = self.negative_winner_inliers()
            out["negative_winner_inliers_p50_p99_max"] = [float(v) for v in np.percentile(w, [50, 99, 100])]
        if self.positive_inliers:
            out["positive_inliers_p10_p50"] = [
                float(v) for v in np.percentile(self.positive_inliers, [10, 50])
            ]
        return out

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict for ``MapDatabase.set_calibration`` (lists, str keys, finite numbers)."""
        return {
            "version": self.version,
            "keyframes": self.keyframes,
            "keyframes_with_features": self.keyframes_with_features,
            "same_place_m": self.same_place_m,
            "different_place_m": self.different_place_m,
            "verify_top_k": self.verify_top_k,
            "candidate_scores": [[round(float(s), 6) for s in row] for row in self.candidate_scores],
            "candidate_negative": [[bool(b) for b in row] for row in self.candidate_negative],
            "candidate_inliers": None
            if self.candidate_inliers is None
            else [[int(v) for v in row] for row in self.candidate_inliers],
            "positive_scores": [round(float(s), 6) for s in self.positive_scores],
            "positive_inliers": None
            if self.positive_inliers is None
            else [int(v) for v in self.positive_inliers],
            "retrieval_model": None if self.retrieval_model is None else self.retrieval_model.to_list(),
            "geometry": dict(self.geometry),
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, blob: Any) -> Calibration:
        """Read :meth:`to_dict`'s output back; CalibrationError names what is wrong."""
        if not isinstance(blob, dict):
            raise CalibrationError(f"calibration must be a dict, got {type(blob).__name__}")
        version = blob.get("version")
        if version != CALIBRATION_VERSION:
            raise CalibrationError(
                f"calibration version {version!r} is not supported (this build reads version "
                f"{CALIBRATION_VERSION}); recalibrate the map"
            )
        try:
            scores = tuple(tuple(float(s) for s in row) for row in blob["candidate_scores"])
            negative = tuple(tuple(bool(b) for b in row) for row in blob["candidate_negative"])
            raw_inl = blob["candidate_inliers"]
            inliers = None if raw_inl is None else tuple(tuple(int(v) for v in row) for row in raw_inl)
            raw_pos = blob["positive_inliers"]

            def model(key: str) -> LogisticModel | None:
                v = blob[key]
                return None if v is None else LogisticModel(float(v[0]), float(v[1]))

            cal = cls(
                keyframes=int(blob["keyframes"]),
                keyframes_with_features=int(blob["keyframes_with_features"]),
                same_place_m=float(blob["same_place_m"]),
                different_place_m=float(blob["different_place_m"]),
                verify_top_k=int(blob["verify_top_k"]),
                candidate_scores=scores,
                candidate_negative=negative,
                candidate_inliers=inliers,
                positive_scores=tuple(float(s) for s in blob["positive_scores"]),
                positive_inliers=None if raw_pos is None else tuple(int(v) for v in raw_pos),
                retrieval_model=model("retrieval_model"),
                geometry=dict(blob.get("geometry", {})),
                notes=tuple(str(n) for n in blob.get("notes", ())),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CalibrationError(f"calibration blob is malformed: {type(exc).__name__}: {exc}") from None
        rows = [len(r) for r in scores]
        if [len(r) for r in negative] != rows or (inliers is not None and [len(r) for r in inliers] != rows):
            raise CalibrationError("calibration blob is malformed: candidate rows differ in length")
        if cal.verify_top_k < 1 or any(n > cal.verify_top_k for n in rows):
            raise CalibrationError("calibration blob is malformed: more candidates than verify_top_k")
        return cal

    def geometry_matches(self, params: GeometryParams) -> bool:
        """True when ``params`` measure inliers as the calibration's verifier did (thresholds aside)."""
        return not self.geometry or self.geometry == _geometry_signature(params)


# ---------------------------------------------------------------------- calibrate
def _plan(db: MapDatabase, p: CalibrationParams) -> tuple[str | None, dict[str, Any]]:
    """The pose-only part of calibration: the problem (or None) and the sampled keyframes."""
    n = len(db)
    if n < MIN_KEYFRAMES:
        return f"the map has {n} keyframes (calibration needs at least {MIN_KEYFRAMES})", {}
    ids = np.asarray(db.ids, np.int64)
    stamps = np.asarray(db.stamps(ids), np.float64)
    order = np.lexsort((ids, stamps))
    ids = ids[order]
    pos = np.asarray(db.positions(ids), np.float64)
    finite = np.isfinite(pos).all(axis=1)
    if finite.sum() < MIN_KEYFRAMES:
        return (
            f"only {int(finite.sum())} keyframes have a finite position (calibration needs {MIN_KEYFRAMES})",
            {},
        )
    ids, pos = ids[finite], pos[finite]
    tree = cKDTree(pos)
    far_count = len(ids) - np.array([len(r) for r in tree.query_ball_point(pos, r=p.different_place_m)])
    usable = np.flatnonzero(far_count > 0)
    if len(usable) < MIN_NEGATIVE_QUERIES:
        extent = float(np.max(np.ptp(pos, axis=0))) if len(pos) else 0.0
        return (
            f"only {len(usable)} keyframes have another keyframe >= {p.different_place_m:g} m away "
            f"(calibration needs {MIN_NEGATIVE_QUERIES}; the map spans {extent:.0f} m)"
        ), {}
    pairs = tree.query_pairs(r=p.same_place_m, output_type="ndarray")
    if len(pairs) < MIN_POSITIVE_PAIRS:
        return (
            f"only {len(pairs)} keyframe pairs lie within {p.same_place_m:g} m "
            f"(calibration needs {MIN_POSITIVE_PAIRS})"
        ), {}
    if len(usable) > p.max_queries:
        usable = usable[np.unique(np.linspace(0, len(usable) - 1, p.max_queries).round().astype(np.int64))]
    return None, {"ids": ids, "pos": pos, "tree": tree, "queries": usable}


def calibration_problem(db: MapDatabase, params: CalibrationParams | None = None) -> str | None:
    """Why :func:`calibrate` would return None for ``db`` (a sentence for logs and
    diagnostics), or None when the map can be calibrated. Poses only: cheap."""
    p = params or CalibrationParams()
    p.validate()
    return _plan(db, p)[0]


def _positive_partners(
    q: int, ids: np.ndarray, pos: np.ndarray, tree: cKDTree, p: CalibrationParams
) -> list[int]:
    """Row indices of up to ``positives_per_keyframe`` same-place partners of row ``q``:
    sequence neighbours (stamp order) within ``same_place_m`` first, then the nearest."""
    near = [j for j in tree.query_ball_point(pos[q], r=p.same_place_m) if j != q]
    if not near:
        return []
    seq = [j for j in (q + 1, q - 1) if j in near]
    rest = sorted((j for j in near if j not in seq), key=lambda j: float(np.linalg.norm(pos[j] - pos[q])))
    return (seq + rest)[: p.positives_per_keyframe]


def _verify_pairs(
    db: MapDatabase, pairs: Sequence[tuple[int, int]], geometry: GeometryParams, workers: int
) -> list[int]:
    """:func:`evidence` of each (query id, match id) pair of ``db``'s keyframes, in order;
    0 where either keyframe has no local features. ``workers``: threads, 0 = one per core."""
    needed = sorted({k for pair in pairs for k in pair})
    feats = {k: db.features(k) for k in needed}  # read once, on this thread
    params = dataclasses.replace(geometry, min_inliers=1)
    local = threading.local()

    def one(pair: tuple[int, int]) -> int:
        fa, fb = feats[pair[0]], feats[pair[1]]
        if fa is None or fb is None:
            return 0
        ver = getattr(local, "verifier", None)
        if ver is None:
            ver = local.verifier = GeometricVerifier(params)
        return evidence(ver.verify(fa, fb))

    n = min(workers if workers > 0 else cpu_count(), max(1, len(pairs)))
    if n == 1:
        return [one(pair) for pair in pairs]
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="calibrate") as pool:
        return list(pool.map(one, pairs, chunksize=8))


def calibrate(
    db: MapDatabase,
    verifier: GeometricVerifier | None = None,
    params: CalibrationParams | None = None,
) -> Calibration | None:
    """Calibrate ``db`` (see the module docstring); None when :func:`calibration_problem` says why not.

    ``verifier``: its parameters are used (its ``min_inliers`` is not: evidence is measured with
    1); None = the default :class:`GeometryParams`. A map without local features gets a
    calibration of the scores only (``has_verification`` False). Store the result with
    ``db.set_calibration(calibration.to_dict())``. Cost: about ``(verify_top_k +
    positives_per_keyframe)`` verifications per simulated query (docs/recognition.md).
    """
    out = calibrate_or_reason(db, verifier, params)
    return out if isinstance(out, Calibration) else None


def calibrate_or_reason(
    db: MapDatabase,
    verifier: GeometricVerifier | None = None,
    params: CalibrationParams | None = None,
) -> Calibration | str:
    """:func:`calibrate`, or, when the map cannot be calibrated, the sentence
    :func:`calibration_problem` would give (for logs and diagnostics; the plan is made once)."""
    p = params or CalibrationParams()
    p.validate()
    problem, plan = _plan(db, p)
    if problem is not None:
        return problem
    geometry = verifier.params if verifier is not None else GeometryParams()
    ids, pos, tree, queries = plan["ids"], plan["pos"], plan["tree"], plan["queries"]
    desc = np.asarray(db.descriptors(ids), np.float32)
    n_feat = int(db.count_with_features())
    verify = n_feat > 0

    row_of = {int(k): i for i, k in enumerate(ids)}
    # Pass 1 (cheap, sequential): the simulated queries' candidates and the positive pairs.
    cand_rows: list[tuple[int, np.ndarray]] = []  # (query row, candidate ids)
    cand_s: list[tuple[float, ...]] = []
    cand_n: list[tuple[bool, ...]] = []
    pos_pairs: list[tuple[int, int]] = []
    pos_s: list[float] = []
    done_pairs: set[tuple[int, int]] = set()
    for q in queries.tolist():
        own = ids[tree.query_ball_point(pos[q], r=p.same_place_m)]
        res = db.search(desc[q][None, :], p.verify_top_k, exclude_ids=own)
        c_ids = np.asarray(res.ids)[0]
        c_sc = np.asarray(res.scores, np.float64)[0]
        keep = c_ids >= 0
        c_ids, c_sc = c_ids[keep], c_sc[keep]
        if len(c_ids) == 0:
            continue
        rows = [row_of[int(k)] for k in c_ids]
        dist = np.linalg.norm(pos[rows] - pos[q], axis=1)
        cand_rows.append((q, c_ids))
        cand_s.append(tuple(round(float(s), 6) for s in c_sc))
        cand_n.append(tuple(bool(d >= p.different_place_m) for d in dist))
        for j in _positive_partners(q, ids, pos, tree, p):
            key = (min(q, j), max(q, j))
            if key in done_pairs:
                continue
            done_pairs.add(key)
            pos_pairs.append((int(ids[q]), int(ids[j])))
            pos_s.append(round(float(desc[q] @ desc[j]), 6))

    # Pass 2: the verifications (nearly all of the cost), on ``workers`` threads. OpenCV's
    # matching and RANSAC release the GIL, each thread has its own verifier, RANSAC seeds
    # itself per call and results keep their order: the calibration is the same for any
    # number of workers (tested).
    cand_i: list[tuple[int, ...]] = []
    pos_i: list[int] = []
    if verify:
        pairs = [(int(ids[q]), int(k)) for q, c_ids in cand_rows for k in c_ids] + pos_pairs
        evid = _verify_pairs(db, pairs, geometry, p.workers)
        at = 0
        for _, c_ids in cand_rows:
            cand_i.append(tuple(evid[at : at + len(c_ids)]))
            at += len(c_ids)
        pos_i = evid[at:]

    notes: list[str] = []
    if not verify:
        notes.append("the map has no local features: only the retrieval scores are calibrated")
    elif n_feat < len(db):
        notes.append(
            f"{len(db) - n_feat} of {len(db)} keyframes have no local features (counted as 0 inliers)"
        )
    cal = Calibration(
        keyframes=len(db),
        keyframes_with_features=n_feat,
        same_place_m=float(p.same_place_m),
        different_place_m=float(p.different_place_m),
        verify_top_k=int(p.verify_top_k),
        candidate_scores=tuple(cand_s),
        candidate_negative=tuple(cand_n),
        candidate_inliers=tuple(cand_i) if verify else None,
        positive_scores=tuple(pos_s),
        positive_inliers=tuple(pos_i) if verify else None,
        retrieval_model=None,
        geometry=_geometry_signature(geometry),
    )
    neg_s = cal.negative_best_scores()
    retrieval = _fit_logistic(
        np.r_[np.asarray(pos_s), neg_s], np.r_[np.ones(len(pos_s)), np.zeros(len(neg_s))]
    )
    if verify and pos_i and float(np.median(pos_i)) <= float(cal.negative_winner_inliers().max(initial=0)):
        notes.append(
            "same-place pairs do not have more inliers than wrong winners: verification is weak here"
        )
    if retrieval is None:
        notes.append("same-place pairs do not score higher than different places: no score model")
    return dataclasses.replace(cal, retrieval_model=retrieval, notes=tuple(notes))
