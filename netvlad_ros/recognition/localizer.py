"""Localization against a prior map: top-K retrieval, spatial voting, confidence,
optional temporal filtering and optional sequence matching.

Per query: retrieve the ``top_k`` most similar keyframes, merge those within
``place_radius_m`` of each other into places (``places.cluster_hypotheses``),
and take the best place. Its confidence is the normalized margin over the best
spatially distinct place, ``(s1 - s2) / (1 - s2)``; when every hypothesis falls
in one place, ``s2`` is the lowest top-K score (the best distinct place scores
at most that, so the confidence is a lower bound). The place is accepted when
``s1 >= min_score``, the confidence reaches ``min_confidence`` and, with temporal
filtering, the last ``temporal_consistency`` queries (this one included) all had
such a candidate, each within ``temporal_max_distance_m`` of the previous and
at most ``temporal_max_gap_s`` apart (the DLoopDetector / ORB-SLAM rule, with
metric distance instead of keyframe adjacency since a prior map has poses).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from netvlad_ros.config import check_fields, param
from netvlad_ros.recognition.places import (
    Hypothesis,
    Place,
    RecognitionParamError,
    cluster_hypotheses,
    normalized_margin,
)
from netvlad_ros.recognition.sequence import SequenceMatcher


class LocalizationReason(str, Enum):
    """Why a query was not accepted."""

    EMPTY_MAP = "empty_map"
    BELOW_MIN_SCORE = "below_min_score"
    LOW_CONFIDENCE = "low_confidence"
    NOT_TEMPORALLY_CONSISTENT = "not_temporally_consistent"
    SEQUENCE_WINDOW_INCOMPLETE = "sequence_window_incomplete"


_BIG = 1e9  # "no upper bound" for a declared range


@dataclass
class LocalizerParams:
    """Localizer thresholds; defaults and the measurements behind them: docs/recognition.md.

    ``temporal_consistency`` 1 disables temporal filtering; ``sequence_length`` 0
    or 1 disables sequence matching (then scores are single-image cosines).
    """

    top_k: int = param(10, "hypotheses retrieved per image (rows of ~/hypotheses)", range=(1, 1000))
    place_radius_m: float = param(3.0, "hypotheses closer than this are one place", range=(0.0, _BIG))
    min_score: float = param(0.85, "minimum cosine similarity of an accepted place", range=(-1.0, 1.0))
    min_confidence: float = param(
        0.05, "minimum confidence (normalized margin) of an accepted place", range=(0.0, 1.0)
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

    def validate(self) -> None:
        """Raise RecognitionParamError naming the first invalid field."""
        check_fields(self, error=RecognitionParamError)
        if self.sequence_length >= 2 and self.sequence_search_k < self.top_k:
            raise RecognitionParamError(
                f"LocalizerParams.sequence_search_k ({self.sequence_search_k}) must be >= top_k ({self.top_k})"
            )
        if any(v == 0 for v in self.sequence_velocities) or not self.sequence_velocities:
            raise RecognitionParamError(
                f"LocalizerParams.sequence_velocities must be non-empty and non-zero, got {self.sequence_velocities}"
            )


@dataclass(frozen=True)
class LocalizationResult:
    """Outcome of one query.

    ``best_place`` is set whenever the map returned anything, accepted or not (for
    diagnostics); ``accepted`` says whether to trust it, ``reason`` why not.
    ``consistent_frames`` counts consecutive queries agreeing on the place.
    """

    stamp: float
    accepted: bool
    best_place: Place | None
    confidence: float
    hypotheses: tuple[Hypothesis, ...]
    places: tuple[Place, ...] = field(repr=False)
    reason: LocalizationReason | None
    consistent_frames: int = 0


class Localizer:
    """Stateful localizer over a ``MapDatabase`` (state: temporal and sequence windows)."""

    def __init__(self, db, params: LocalizerParams | None = None) -> None:
        self.params = params or LocalizerParams()
        self.params.validate()
        self._db = db
        self._prev: tuple[float, Place] | None = None  # last query with a candidate place
        self._streak = 0
        p = self.params
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

    def localize(self, descriptor: np.ndarray, stamp: float) -> LocalizationResult:
        """Localize one query descriptor (unit norm, shape (D,)) taken at ``stamp`` (s)."""
        p = self.params
        d = self._check_descriptor(descriptor)
        stamp = float(stamp)
        if len(self._db) == 0:
            self._break_streak()
            return LocalizationResult(stamp, False, None, 0.0, (), (), LocalizationReason.EMPTY_MAP)

        if self._seq is not None:
            self._seq.push(d, stamp)
            res = self._db.search(d[None, :], p.top_k)
            ids = np.asarray(res.ids)[0]
            ids = ids[ids >= 0]
            if not self._seq.full:
                hyps = self._hypotheses(ids, np.asarray(res.scores, dtype=np.float64)[0][: len(ids)])
                places = tuple(cluster_hypotheses(hyps, p.place_radius_m))
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
            seq_scores, _ = self._seq.score_ends(ids)
            order = np.argsort(-seq_scores, kind="stable")
            ids, scores = ids[order], seq_scores[order]
            finite = np.isfinite(scores)
            ids, scores = ids[finite], scores[finite]
        else:
            res = self._db.search(d[None, :], p.top_k)
            ids = np.asarray(res.ids)[0]
            keep = ids >= 0
            ids, scores = ids[keep], np.asarray(res.scores, dtype=np.float64)[0][keep]

        hyps = self._hypotheses(ids, scores)
        places = tuple(cluster_hypotheses(hyps, p.place_radius_m))
        if not places:
            self._break_streak()
            return LocalizationResult(stamp, False, None, 0.0, (), (), LocalizationReason.EMPTY_MAP)
        best = places[0]
        runner_up = places[1].score if len(places) > 1 else min(h.score for h in hyps)
        confidence = normalized_margin(best.score, runner_up) if len(hyps) > 1 else 0.0

        reason: LocalizationReason | None = None
        if best.score < p.min_score:
            reason = LocalizationReason.BELOW_MIN_SCORE
        elif confidence < p.min_confidence:
            reason = LocalizationReason.LOW_CONFIDENCE
        if reason is not None:
            self._break_streak()
            return LocalizationResult(stamp, False, best, confidence, hyps, places, reason)

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
        )

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
