"""Hypotheses, places and the spatial voting shared by localization and loop closure.

A retrieval returns the top-K most similar keyframes. Neighbouring keyframes of one
place all look alike, so the raw top-K list is dominated by near-duplicates of the
same place; counting them as competitors would make every well-mapped place look
ambiguous. Hypotheses whose keyframes lie within ``radius_m`` of each other are
therefore merged into one *place* before the confidence is computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from netvlad_ros.config import ConfigError
from netvlad_ros.mapdb import MapDatabase


class RecognitionParamError(ConfigError):
    """A recognition parameter or input has an invalid value (the message names it)."""


@dataclass(frozen=True)
class Hypothesis:
    """One retrieved map keyframe.

    ``score`` is the cosine similarity of the query with the keyframe descriptor
    (or the sequence score when sequence matching is on); ``rank`` is 0 for the best.
    """

    keyframe_id: int
    score: float
    position: np.ndarray = field(repr=False)
    orientation: np.ndarray = field(repr=False)
    stamp: float
    rank: int


@dataclass(frozen=True)
class Place:
    """A group of hypotheses within the place radius of the best one (its seed).

    ``score``/``keyframe_id``/``position``/``orientation`` are those of the seed, the
    best-scoring hypothesis of the group; ``votes`` is the group size.
    """

    hypotheses: tuple[Hypothesis, ...]

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[0]

    @property
    def score(self) -> float:
        return self.best.score

    @property
    def keyframe_id(self) -> int:
        return self.best.keyframe_id

    @property
    def position(self) -> np.ndarray:
        return self.best.position

    @property
    def orientation(self) -> np.ndarray:
        return self.best.orientation

    @property
    def votes(self) -> int:
        return len(self.hypotheses)


def cluster_hypotheses(hypotheses: Sequence[Hypothesis], radius_m: float) -> list[Place]:
    """Greedy spatial clustering, best score first.

    The best unassigned hypothesis seeds a place and takes every unassigned
    hypothesis within ``radius_m`` (Euclidean, map frame) of the seed; repeat.
    Hypotheses with a non-finite position (keyframes without a pose) cannot be
    placed and each form a place of their own. Returns places sorted by score.
    """
    if not np.isfinite(radius_m) or radius_m < 0:
        raise RecognitionParamError(f"place radius_m must be finite and >= 0, got {radius_m}")
    hyps = sorted(hypotheses, key=lambda h: (-h.score, h.rank))
    if not hyps:
        return []
    pos = np.array([np.asarray(h.position, dtype=np.float64).reshape(3) for h in hyps])
    finite = np.isfinite(pos).all(axis=1)
    tree = cKDTree(np.where(finite[:, None], pos, 0.0))
    assigned = np.zeros(len(hyps), dtype=bool)
    places: list[Place] = []
    for i, h in enumerate(hyps):
        if assigned[i]:
            continue
        assigned[i] = True
        members = [h]
        if finite[i]:
            for j in sorted(tree.query_ball_point(pos[i], r=radius_m)):
                if not assigned[j] and finite[j]:
                    assigned[j] = True
                    members.append(hyps[j])
        places.append(Place(tuple(members)))
    return places


def normalized_margin(best: float, runner_up: float) -> float:
    """Confidence of ``best`` over ``runner_up`` (cosine scores): (s1 - s2) / (1 - s2).

    The share of the gap between the runner-up and a perfect match (1.0) that the
    best place closes. 0 when the two are equally similar, 1 when the best is a
    perfect match. Unlike the plain margin it rewards the same absolute lead more
    when both scores are high, where a lead is harder to get by chance. Clipped
    to [0, 1].
    """
    if runner_up >= 1.0:
        return 0.0
    return float(np.clip((best - runner_up) / (1.0 - runner_up), 0.0, 1.0))


class KeyframeOrder:
    """Map keyframes sorted by stamp (ties by id), refreshed when the map grows.

    Loop-closure islands and sequence paths need "temporally adjacent keyframes";
    keyframe ids need not be dense or chronological (maps can be merged), so
    adjacency is the position in stamp order. Refreshing sorts the whole map
    (O(N log N), a few ms for 10^5 keyframes) only when its size changed.
    """

    def __init__(self, db: MapDatabase) -> None:
        self._db = db
        self._size = -1
        self.ids = np.zeros(0, dtype=np.int64)
        self.stamps = np.zeros(0, dtype=np.float64)
        self._pos: dict[int, int] = {}

    def refresh(self) -> bool:
        """Re-read the map if its size changed; returns True when it did."""
        if len(self._db) == self._size:
            return False
        ids = np.asarray(self._db.ids, dtype=np.int64).reshape(-1)
        stamps = np.asarray(self._db.stamps(ids), dtype=np.float64).reshape(-1)
        order = np.lexsort((ids, stamps))
        self.ids, self.stamps = ids[order], stamps[order]
        self._pos = {int(k): i for i, k in enumerate(self.ids)}
        self._size = len(self._db)
        return True

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, keyframe_id: object) -> bool:
        return keyframe_id in self._pos

    def position(self, keyframe_id: int) -> int:
        """Index of ``keyframe_id`` in stamp order (KeyError if not in the map)."""
        return self._pos[int(keyframe_id)]

    def positions(self, keyframe_ids: np.ndarray) -> np.ndarray:
        return np.array([self._pos[int(k)] for k in np.asarray(keyframe_ids).reshape(-1)], dtype=np.int64)
