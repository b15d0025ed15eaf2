"""LoopClosureDetector on constructed descriptor sequences: exclusion window,
min score, islands, temporal consistency, rejection reasons, contract checks.

Keyframe k has its own orthonormal direction BASIS[k] (so unrelated keyframes
score exactly 0); a revisit query is a chosen mix of old directions, which fixes
every cosine score exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from netvlad_ros.mapdb import Keyframe, MapDatabase
from netvlad_ros.recognition import (
    LoopClosureDetector,
    LoopClosureParams,
    RecognitionParamError,
    RejectReason,
)

DIM = 160
BASIS = np.linalg.qr(np.random.default_rng(11).standard_normal((DIM, DIM)))[0].T


def mix(weights: dict[int, float], noise: int) -> np.ndarray:
    """Unit vector with cosine ``w`` against BASIS[k] for each k, the rest in BASIS[noise]."""
    v = sum(w * BASIS[k] for k, w in weights.items())
    rest = 1.0 - sum(w * w for w in weights.values())
    v = v + math.sqrt(rest) * BASIS[noise]
    return (v / np.linalg.norm(v)).astype(np.float32)


def params(**kw) -> LoopClosureParams:
    base = {
        "top_k": 10,
        "min_score": 0.3,
        "exclusion_seconds": 5.0,
        "exclusion_keyframes": 0,
        "island_max_gap": 1,
        "temporal_consistency": 1,
        "geometric_verification": False,
    }
    base.update(kw)
    return LoopClosureParams(**base)


class Run:
    """Adds keyframes 1 s apart and runs the detector on each (the documented contract)."""

    def __init__(self, p: LoopClosureParams) -> None:
        self.db = MapDatabase.create(DIM, "test-fingerprint")
        self.det = LoopClosureDetector(self.db, p)
        self.t = 0.0

    def step(self, desc: np.ndarray):
        kf = Keyframe(stamp=self.t, frame_id="map", position=[self.t, 0, 0], orientation=[0, 0, 0, 1])
        kid = int(self.db.add([kf], desc[None])[0])
        res = self.det.process(kid, self.t, desc)
        self.t += 1.0
        return kid, res

    def fresh(self, n: int) -> list[int]:
        """n keyframes unlike anything else (BASIS[id])."""
        out = []
        for _ in range(n):
            k = len(self.db)
            kid, res = self.step(BASIS[k].astype(np.float32))
            assert not res.accepted
            out.append(kid)
        return out


def reasons(res) -> dict[int, RejectReason]:
    return {r.match_id: r.reason for r in res.rejected}


def test_exclusion_seconds_hides_recent_keyframes_and_exclusion_keyframes_reports_them() -> None:
    run = Run(params(exclusion_seconds=5.0))
    run.fresh(20)
    # looks exactly like keyframe 17, 3 s ago: inside the 5 s window -> no loop
    _, res = run.step(mix({17: 1.0}, 150))
    assert not res.accepted and 17 not in reasons(res)
    # looks like keyframe 10 (11 s ago): a loop closure
    _, res = run.step(mix({10: 0.9}, 151))
    assert res.loop_closure is not None and res.loop_closure.match_id == 10
    assert res.loop_closure.score == pytest.approx(0.9, abs=1e-4)

    run = Run(params(exclusion_seconds=0.0, exclusion_keyframes=5))
    run.fresh(20)
    _, res = run.step(mix({17: 0.9, 5: 0.4}, 150))
    assert reasons(res)[17] == RejectReason.INSIDE_EXCLUSION_WINDOW
    assert res.loop_closure is not None and res.loop_closure.match_id == 5


def test_below_min_score_is_rejected_with_reason() -> None:
    run = Run(params(min_score=0.5))
    run.fresh(20)
    _, res = run.step(mix({3: 0.45}, 150))
    assert not res.accepted and reasons(res)[3] == RejectReason.BELOW_MIN_SCORE
    assert str(next(r for r in res.rejected if r.match_id == 3)) == "below_min_score"


def test_island_of_adjacent_matches_beats_a_stronger_isolated_match() -> None:
    run = Run(params(island_max_gap=1))
    run.fresh(30)
    # keyframes 2, 3 and 5 (gap of one keyframe allowed) score 0.45 each; keyframe 20 alone 0.5.
    _, res = run.step(mix({2: 0.45, 3: 0.45, 5: 0.45, 20: 0.5}, 150))
    lc = res.loop_closure
    assert lc is not None and lc.match_id in (2, 3, 5) and lc.island == (2, 5)
    r = reasons(res)
    assert r[20] == RejectReason.NOT_IN_BEST_ISLAND
    assert {r[k] for k in (2, 3, 5) if k != lc.match_id} == {RejectReason.NOT_SELECTED}
    # with no gap allowed, 2-3 (0.9) and 5 (0.45) split: the lone 0.5 still loses to 2-3
    run = Run(params(island_max_gap=0))
    run.fresh(30)
    _, res = run.step(mix({2: 0.45, 3: 0.45, 5: 0.45, 20: 0.5}, 150))
    assert res.loop_closure.island == (2, 3) and reasons(res)[5] == RejectReason.NOT_IN_BEST_ISLAND


def test_temporal_consistency_needs_k_consecutive_overlapping_islands() -> None:
    run = Run(params(temporal_consistency=3, consistency_max_gap=1))
    run.fresh(30)
    seq = [mix({5 + t: 0.8, 6 + t: 0.5}, 140 + t) for t in range(4)]
    out = [run.step(d)[1] for d in seq]
    assert [bool(r.accepted) for r in out] == [False, False, True, True]
    assert [r.consistent_keyframes for r in out] == [1, 2, 3, 4]
    assert reasons(out[0])[5] == RejectReason.NOT_TEMPORALLY_CONSISTENT
    assert "consistent_keyframes=1" in str(next(r for r in out[0].rejected if r.match_id == 5))
    # a match far from the previous island restarts the count
    _, res = run.step(mix({25: 0.8}, 150))
    assert not res.accepted and res.consistent_keyframes == 1
    # a keyframe with no candidate at all resets it to 0
    run.fresh(1)
    assert run.det.process(len(run.db) - 1, run.t - 1, BASIS[len(run.db) - 1]).consistent_keyframes == 0


def test_geometric_verification_without_images_rejects_as_unavailable() -> None:
    run = Run(params(geometric_verification=True, max_verified_candidates=2))
    run.fresh(20)
    _, res = run.step(mix({4: 0.6, 5: 0.5, 6: 0.4}, 150))
    assert not res.accepted
    r = {c.match_id: c for c in res.rejected}
    assert r[4].reason == r[5].reason == RejectReason.GEOMETRY_UNAVAILABLE
    assert r[4].detail == "no_query_features"
    assert r[6].reason == RejectReason.NOT_SELECTED  # beyond max_verified_candidates


def test_contract_violations_raise() -> None:
    run = Run(params())
    run.fresh(3)
    with pytest.raises(RecognitionParamError, match="not in the map"):
        run.det.process(99, 10.0, BASIS[0].astype(np.float32))
    with pytest.raises(RecognitionParamError, match="NaN"):
        run.det.process(0, 0.0, np.full(DIM, np.nan, np.float32))
    with pytest.raises(ValueError, match="exclusion_seconds"):
        LoopClosureDetector(run.db, params(exclusion_seconds=-1.0))
    with pytest.raises(ValueError, match="ratio"):
        p = params()
        p.geometry.ratio = 1.5  # a ratio test above 1 keeps every match
        LoopClosureDetector(run.db, p)
