"""SeqSLAM-style sequence matching on top of the map's nearest-neighbour search.

Single-image retrieval fails under strong appearance change (night/day, seasons)
because the right keyframe is rarely the single best match; it is, however, often
*among* the good matches for every image of a short run. SeqSLAM (Milford & Wyeth,
ICRA 2012) scores a candidate map keyframe by the mean similarity along a straight
line in the (query frame, map keyframe) similarity matrix ending at that keyframe,
over a set of relative speeds.

The map has no "all descriptors" view and may be large, so the similarity matrix
is kept sparse: every query of the window is searched once (``search_k`` nearest
keyframes) when it arrives; a map keyframe missing from a row gets that row's
k-th score, an upper bound on its true similarity (so a path through unseen
keyframes is never scored below what the search could prove). Map keyframes are
ordered by stamp; a path is a sequence of positions in that order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from netvlad_ros.mapdb import MapDatabase
from netvlad_ros.recognition.places import KeyframeOrder, RecognitionParamError


@dataclass(frozen=True)
class _Row:
    stamp: float
    order_pos: np.ndarray  # positions (in the map's stamp order) of the retrieved keyframes, sorted
    scores: np.ndarray  # scores aligned with order_pos
    floor: float  # score given to keyframes not retrieved for this query


class SequenceMatcher:
    """Keeps a window of recent queries and scores map keyframes as sequence ends.

    ``length``: number of consecutive queries in a sequence (the current included).
    ``velocities``: map keyframes advanced per query frame along a path (negative
    values match traversals in the opposite direction). ``search_k``: nearest map
    keyframes retrieved per query. ``max_gap_s``: a larger stamp gap between two
    consecutive queries restarts the window (the sequence would not be contiguous).
    """

    def __init__(
        self,
        db: MapDatabase,
        length: int,
        velocities: Sequence[float],
        search_k: int,
        max_gap_s: float,
    ) -> None:
        if length < 2:
            raise RecognitionParamError(f"sequence length must be >= 2, got {length}")
        if not velocities or not all(np.isfinite(v) and v != 0 for v in velocities):
            raise RecognitionParamError(f"sequence velocities must be finite and non-zero, got {velocities}")
        if search_k < 1:
            raise RecognitionParamError(f"sequence search_k must be >= 1, got {search_k}")
        if not max_gap_s > 0:
            raise RecognitionParamError(f"sequence max_gap_s must be > 0, got {max_gap_s}")
        self._db = db
        self.length = int(length)
        self._velocities = np.asarray(velocities, dtype=np.float64)
        self._search_k = int(search_k)
        self._max_gap_s = float(max_gap_s)
        self._rows: deque[_Row] = deque(maxlen=self.length)
        self._order = KeyframeOrder(db)

    def reset(self) -> None:
        """Forget the query window (e.g. after a relocalization or a jump)."""
        self._rows.clear()

    @property
    def full(self) -> bool:
        """True once ``length`` contiguous queries are in the window."""
        return len(self._rows) == self.length

    def _refresh_order(self) -> None:
        if self._order.refresh():
            # Rows refer to positions in the old order: drop them rather than mix orders.
            self._rows.clear()

    def push(self, descriptor: np.ndarray, stamp: float) -> None:
        """Search the map for one query and append it to the window."""
        self._refresh_order()
        if self._rows and (stamp - self._rows[-1].stamp > self._max_gap_s or stamp < self._rows[-1].stamp):
            self._rows.clear()
        res = self._db.search(np.asarray(descriptor, dtype=np.float32)[None, :], self._search_k)
        ids = np.asarray(res.ids)[0]
        scores = np.asarray(res.scores, dtype=np.float64)[0]
        keep = ids >= 0
        ids, scores = ids[keep], scores[keep]
        pos = self._order.positions(ids)
        srt = np.argsort(pos)
        floor = float(scores.min()) if len(scores) == self._search_k else -1.0
        self._rows.append(_Row(float(stamp), pos[srt], scores[srt], floor))

    def score_ends(self, candidate_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best sequence score (over velocities) for each candidate end keyframe.

        Returns (scores, velocities) aligned with ``candidate_ids``; a candidate
        with no path inside the map gets score -inf. Requires a full window.
        """
        if not self.full:
            raise RuntimeError("sequence window is not full yet")
        cand_pos = self._order.positions(candidate_ids)
        n_map = len(self._order)
        steps_back = np.arange(self.length - 1, -1, -1, dtype=np.float64)  # oldest row first
        # path[c, v, t] = position in map order visited by window row t
        path = np.rint(
            cand_pos[:, None, None] - self._velocities[None, :, None] * steps_back[None, None, :]
        ).astype(np.int64)
        valid = ((path >= 0) & (path < n_map)).all(axis=2)
        total = np.zeros(path.shape[:2], dtype=np.float64)
        for t, row in enumerate(self._rows):
            p = path[:, :, t]
            if len(row.order_pos):
                j = np.clip(np.searchsorted(row.order_pos, p), 0, len(row.order_pos) - 1)
                hit = row.order_pos[j] == p
                total += np.where(hit, row.scores[j], row.floor)
            else:
                total += row.floor
        mean = np.where(valid, total / self.length, -np.inf)
        best_v = np.argmax(mean, axis=1)
        best = mean[np.arange(len(cand_pos)), best_v]
        return best, self._velocities[best_v]
