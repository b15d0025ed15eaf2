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


def chain(n: int, step_cos: list[float]) -> list[np.ndarray]:
    """n unit descriptors; consecutive ones have cosine step_cos[i] (each a mix of its own
    direction and the previous descriptor, so non-neighbours score lower)."""
    out = [BASIS[0].astype(np.float64)]
    for i in range(1, n):
        c = step_cos[i - 1]
        v = c * out[-1] + math.sqrt(1.0 - c * c) * BASIS[i]
        out.append(v / np.linalg.norm(v))
    return [v.astype(np.float32) for v in out]


def test_auto_min_score_is_the_median_step_cosine_and_follows_the_map() -> None:
    from netvlad_ros.recognition.loop_closure import AUTO_MIN_PAIRS

    steps = [0.62, 0.91, 0.75, 0.83, 0.70, 0.88, 0.79, 0.66, 0.95, 0.72]
    descs = chain(11, steps)
    run = Run(params(min_score=0.0))
    for k, d in enumerate(descs):
        run.step(d)
        if k < AUTO_MIN_PAIRS:  # fewer than 5 consecutive pairs: no candidate may pass
            assert math.isinf(run.det.last_min_score)
        else:
            assert run.det.last_min_score == pytest.approx(float(np.median(steps[:k])), abs=1e-6)
    # the median of the 10 step cosines (0.77) is the threshold in force now
    assert run.det.effective_min_score() == pytest.approx(0.77, abs=1e-6)
    # revisits of keyframe 0, each 11 m after the last keyframe (so it adds no step pair):
    # cosine 0.80 (above 0.77) is a candidate, 0.74 is not
    run.t += 10.0
    _, res = run.step(mix({0: 0.80}, noise=50))
    assert run.det.last_min_score == pytest.approx(0.77, abs=1e-6)
    assert [lc.match_id for lc in res.accepted] == [0]
    run.t += 10.0
    _, res = run.step(mix({0: 0.74}, noise=51))
    assert run.det.last_min_score == pytest.approx(0.77, abs=1e-6)
    assert not res.accepted and reasons(res)[0] is RejectReason.BELOW_MIN_SCORE
    # an explicit number still wins
    run.det.set_params(params(min_score=0.5))
    assert run.det.effective_min_score() == 0.5


def test_auto_min_score_ignores_pairs_far_apart_and_matches_a_loaded_map() -> None:
    """Consecutive keyframes more than AUTO_PAIR_MAX_M (10 m) apart are not one step along the
    path; a detector on a loaded map (all pairs at once) gets what the incremental one got."""
    from netvlad_ros.recognition.loop_closure import AUTO_PAIR_MAX_M

    steps = [0.9, 0.9, 0.9, 0.9, 0.9, 0.1, 0.9, 0.9]  # the 0.1 step is a 50 m jump (a new street)
    descs = chain(9, steps)
    db = MapDatabase.create(DIM, "test-fingerprint")
    x = 0.0
    for k, d in enumerate(descs):
        x += 50.0 if k == 6 else 1.0
        db.add(
            [Keyframe(stamp=float(k), frame_id="map", position=[x, 0, 0], orientation=[0, 0, 0, 1])], d[None]
        )
    assert AUTO_PAIR_MAX_M < 50.0
    det = LoopClosureDetector(db, params(min_score=0.0))
    assert det.effective_min_score() == pytest.approx(0.9, abs=1e-6)
    # the same map grown keyframe by keyframe gives the same threshold
    grown = MapDatabase.create(DIM, "test-fingerprint")
    det2 = LoopClosureDetector(grown, params(min_score=0.0))
    for k in range(len(db)):
        kf = db.keyframe(k)
        kid = int(grown.add([kf], db.descriptors([k]))[0])
        det2.process(kid, kf.stamp, db.descriptors([k])[0])
    assert det2.effective_min_score() == pytest.approx(det.effective_min_score(), abs=1e-6)
    # the 0.1 pair alone would not move a median of 8, so also a map where most steps are
    # 100 m jumps (cosine 0.3): only the 5 close pairs (0.9) count
    db3 = MapDatabase.create(DIM, "test-fingerprint")
    for k, d in enumerate(chain(12, [0.3] * 6 + [0.9] * 5)):
        pos = [100.0 * k if k <= 6 else 600.0 + k, 0, 0]  # first 6 steps 100 m apart
        db3.add([Keyframe(stamp=float(k), frame_id="map", position=pos, orientation=[0, 0, 0, 1])], d[None])
    assert LoopClosureDetector(db3, params(min_score=0.0)).effective_min_score() == pytest.approx(
        0.9, abs=1e-6
    )
