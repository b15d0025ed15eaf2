"""Loop-closure detection over a growing map (DBoW2 / DLoopDetector scheme on NetVLAD).

Contract: the caller adds the keyframe (pose, descriptor) to the ``MapDatabase``
first, then calls ``LoopClosureDetector.process`` with the id ``db.add`` returned,
the same stamp and descriptor, and optionally the image. Keyframes must be
processed in stamp order.

Per keyframe:
1. Retrieve the ``top_k`` most similar *older* keyframes, leaving out the last
   ``exclusion_seconds`` (in the search itself) and the last
   ``exclusion_keyframes`` keyframes (the recent past always looks alike).
2. Drop candidates scoring below ``min_score``.
3. Group the rest into islands: runs of keyframes adjacent in stamp order (gaps
   up to ``island_max_gap`` keyframes). An island's score is the sum of its
   members' scores, so a place matched by several neighbouring keyframes beats an
   isolated look-alike. Only the best island goes on.
4. Temporal consistency: the best islands of the last ``temporal_consistency``
   consecutive keyframes must overlap (after widening by
   ``consistency_max_gap`` keyframes), as a real revisit keeps matching the same
   stretch of the map while a false match rarely persists.
5. Optional geometric verification (``geometry.GeometricVerifier``) of the best
   members of the island, best score first, up to ``max_verified_candidates``;
   the first that passes is the loop closure.

Every candidate that is not accepted is returned with the reason, for tuning.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from netvlad_ros.config import check_fields, param
from netvlad_ros.recognition.geometry import GeometricVerifier, GeometryParams, ImageFeatures
from netvlad_ros.recognition.places import KeyframeOrder, RecognitionParamError


class RejectReason(str, Enum):
    """Why a loop-closure candidate was not accepted."""

    INSIDE_EXCLUSION_WINDOW = "inside_exclusion_window"
    BELOW_MIN_SCORE = "below_min_score"
    NOT_IN_BEST_ISLAND = "not_in_best_island"
    NOT_TEMPORALLY_CONSISTENT = "not_temporally_consistent"
    GEOMETRY_UNAVAILABLE = "geometry_unavailable"  # no stored features for the query or the match
    GEOMETRIC_VERIFICATION_FAILED = "geometric_verification_failed"
    NOT_SELECTED = "not_selected"  # another member of the island was accepted or the budget ran out


_BIG = 1e9  # "no upper bound" for a declared range


@dataclass
class LoopClosureParams:
    """Loop-closure thresholds; defaults and the measurements behind them: docs/recognition.md.

    ``temporal_consistency`` 1 disables the consistency check;
    ``geometric_verification`` False accepts the best member of a consistent
    island without images. ``feature_store_size`` bounds how many keyframes keep
    their local features (oldest evicted first; a match without features fails
    verification with ``geometry_unavailable``).
    """

    top_k: int = param(20, "older keyframes retrieved per keyframe", range=(1, 1000))
    min_score: float = param(0.85, "minimum cosine similarity of a candidate", range=(-1.0, 1.0))
    exclusion_seconds: float = param(20.0, "keyframes younger than this are never matched", range=(0.0, _BIG))
    exclusion_keyframes: int = param(0, "the last N keyframes are never matched", range=(0, 1_000_000))
    island_max_gap: int = param(
        2, "gap (keyframes) that still joins candidates into an island", range=(0, 100000)
    )
    temporal_consistency: int = param(
        1, "consecutive keyframes whose islands must overlap (1 = off)", range=(1, 1000)
    )
    consistency_max_gap: int = param(3, "widening (keyframes) when comparing islands", range=(0, 100000))
    geometric_verification: bool = param(True, "verify with local features + RANSAC")
    max_verified_candidates: int = param(3, "island members verified at most", range=(1, 1000))
    feature_store_size: int = param(
        10000, "keyframes whose local features are kept in memory", range=(1, 100_000_000), read_only=True
    )
    geometry: GeometryParams = field(default_factory=GeometryParams)

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

    ``inliers``/``rotation``/``translation_direction`` come from geometric
    verification (None when it is off; rotation and direction need intrinsics),
    with the convention of ``GeometricVerifier.verify`` (query = first view).
    ``island`` is the (first, last) match id of the winning island in stamp order.
    """

    query_id: int
    match_id: int
    query_stamp: float
    match_stamp: float
    score: float
    inliers: int | None = None
    rotation: np.ndarray | None = field(default=None, repr=False)
    translation_direction: np.ndarray | None = None
    island: tuple[int, int] | None = None


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


class FeatureStore:
    """Bounded keyframe id -> ImageFeatures map; evicts the oldest insertion first."""

    def __init__(self, max_items: int) -> None:
        if max_items < 1:
            raise RecognitionParamError(f"FeatureStore max_items must be >= 1, got {max_items}")
        self.max_items = int(max_items)
        self._items: OrderedDict[int, ImageFeatures] = OrderedDict()

    def put(self, keyframe_id: int, features: ImageFeatures) -> None:
        self._items[int(keyframe_id)] = features
        self._items.move_to_end(int(keyframe_id))
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def get(self, keyframe_id: int) -> ImageFeatures | None:
        return self._items.get(int(keyframe_id))

    def __contains__(self, keyframe_id: object) -> bool:
        return keyframe_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return sum(f.nbytes for f in self._items.values())


class LoopClosureDetector:
    """Stateful loop-closure detector over a growing ``MapDatabase``."""

    def __init__(self, db, params: LoopClosureParams | None = None) -> None:
        self.params = params or LoopClosureParams()
        self.params.validate()
        self._db = db
        self._order = KeyframeOrder(db)
        self.features = FeatureStore(self.params.feature_store_size)
        self._verifier = (
            GeometricVerifier(self.params.geometry) if self.params.geometric_verification else None
        )
        self._prev_island: tuple[int, int] | None = None  # stamp-order positions of last best island
        self._prev_query_pos: int | None = None
        self._streak = 0

    def reset(self) -> None:
        """Forget the temporal-consistency state (features are kept)."""
        self._prev_island = None
        self._prev_query_pos = None
        self._streak = 0

    def add_image(self, keyframe_id: int, image: np.ndarray) -> None:
        """Store local features of a keyframe's image (done by ``process`` when given one)."""
        if self._verifier is not None:
            self.features.put(keyframe_id, self._verifier.extract(image))

    def process(
        self, keyframe_id: int, stamp: float, descriptor: np.ndarray, image: np.ndarray | None = None
    ) -> LoopClosureResult:
        """Look for a loop closure of keyframe ``keyframe_id`` (already in the map)."""
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
        if image is not None:
            self.add_image(keyframe_id, image)

        res = self._db.search(
            d[None, :], p.top_k + p.exclusion_keyframes + 1, exclude_newer_than=stamp - p.exclusion_seconds
        )
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
                elif s < p.min_score:
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
        qfeat = self.features.get(keyframe_id)
        for n, (i, s, _, st) in enumerate(members):
            if accepted or n >= p.max_verified_candidates:
                rejected.append(RejectedCandidate(i, st, s, RejectReason.NOT_SELECTED))
                continue
            mfeat = self.features.get(i)
            if qfeat is None or mfeat is None:
                which = "query" if qfeat is None else "match"
                rejected.append(
                    RejectedCandidate(
                        i, st, s, RejectReason.GEOMETRY_UNAVAILABLE, detail=f"no_{which}_features"
                    )
                )
                continue
            g = self._verifier.verify(qfeat, mfeat)
            if g.success:
                accepted.append(
                    LoopClosure(
                        keyframe_id,
                        i,
                        stamp,
                        st,
                        s,
                        g.inliers,
                        g.rotation,
                        g.translation_direction,
                        (first, last),
                    )
                )
            else:
                rejected.append(
                    RejectedCandidate(
                        i,
                        st,
                        s,
                        RejectReason.GEOMETRIC_VERIFICATION_FAILED,
                        inliers=g.inliers,
                        detail=g.reason,
                    )
                )
        return self._result(keyframe_id, stamp, accepted, rejected)

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
