"""Localizer retrieval rules: spatial voting, margin, thresholds, temporal filtering, sequence
matching (verification off: ``retrieval_params``; verified re-ranking and calibration are in
test_recognition_calibration.py).

Descriptors are built from an orthonormal basis so every cosine score is exact:
a map keyframe meant to score s against the query e0 is s*e0 + sqrt(1-s^2)*e_i
with its own e_i. Expected values follow from that construction and the formula
documented in docs/recognition.md, not from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from netvlad_ros.mapdb import Keyframe, MapDatabase
from netvlad_ros.recognition import (
    LocalizationReason,
    Localizer,
    LocalizerParams,
    RecognitionParamError,
)

DIM = 128
BASIS = np.linalg.qr(np.random.default_rng(7).standard_normal((DIM, DIM)))[0].T.astype(np.float64)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def scored(score: float, own: int) -> np.ndarray:
    """A unit vector whose cosine with BASIS[0] is exactly ``score``."""
    return unit(score * BASIS[0] + math.sqrt(1 - score**2) * BASIS[own])


def make_db(descs: list[np.ndarray], xs: list[float]) -> MapDatabase:
    db = MapDatabase.create(DIM, "test-fingerprint")
    kfs = [
        Keyframe(stamp=float(i), frame_id="map", position=np.array([x, 0.0, 0.0]), orientation=[0, 0, 0, 1])
        for i, x in enumerate(xs)
    ]
    db.add(kfs, np.stack(descs).astype(np.float32))
    return db


QUERY = BASIS[0].astype(np.float32)


def retrieval_params(**kw: object) -> LocalizerParams:
    """Retrieval-only localizer params (no local features in these maps)."""
    return LocalizerParams(verify_top_k=0, require_verification=False, **kw)  # type: ignore[arg-type]


def voting_db(b_score: float = 0.80) -> MapDatabase:
    # place A: 4 keyframes within 1.5 m, scores 0.90..0.83; place B far away.
    scores = [0.90, 0.85, 0.84, 0.83, b_score]
    xs = [0.0, 0.5, 1.0, 1.5, 50.0]
    return make_db([scored(s, i + 1) for i, s in enumerate(scores)], xs)


def test_neighbouring_keyframes_vote_as_one_place_and_confidence_uses_distinct_place() -> None:
    db = voting_db()
    loc = Localizer(db, retrieval_params(top_k=5, place_radius_m=3.0, min_score=0.5, min_margin=0.1))
    r = loc.localize(QUERY, 0.0)
    assert r.accepted and r.reason is None
    assert r.best_place.keyframe_id == 0 and r.best_place.votes == 4
    assert len(r.places) == 2 and r.places[1].keyframe_id == 4
    assert r.margin == pytest.approx((0.90 - 0.80) / (1 - 0.80), abs=1e-4)
    assert [h.rank for h in r.hypotheses] == [0, 1, 2, 3, 4]
    assert np.allclose(r.best_place.position, [0, 0, 0]) and np.allclose(
        r.best_place.orientation, [0, 0, 0, 1]
    )


def test_without_voting_near_duplicates_compete_and_lower_confidence() -> None:
    db = voting_db()
    loc = Localizer(db, retrieval_params(top_k=5, place_radius_m=0.1, min_score=0.5, min_margin=0.4))
    r = loc.localize(QUERY, 0.0)
    # runner-up is now keyframe 1 (0.85, 0.5 m away) instead of place B
    assert r.margin == pytest.approx((0.90 - 0.85) / (1 - 0.85), abs=1e-4)
    assert not r.accepted and r.reason == LocalizationReason.LOW_MARGIN
    assert r.best_place.keyframe_id == 0  # still reported for diagnostics


def test_single_place_uses_lowest_top_k_score_as_runner_up() -> None:
    db = voting_db()
    loc = Localizer(db, retrieval_params(top_k=4, place_radius_m=3.0, min_score=0.5, min_margin=0.0))
    r = loc.localize(QUERY, 0.0)
    assert len(r.places) == 1
    assert r.margin == pytest.approx((0.90 - 0.83) / (1 - 0.83), abs=1e-4)


def test_below_min_score_and_empty_map() -> None:
    db = voting_db()
    r = Localizer(db, retrieval_params(top_k=5, min_score=0.95, min_margin=0.0)).localize(QUERY, 0.0)
    assert not r.accepted and r.reason == LocalizationReason.BELOW_MIN_SCORE
    empty = MapDatabase.create(DIM, "test-fingerprint")
    r = Localizer(empty).localize(QUERY, 0.0)
    assert not r.accepted and r.reason == LocalizationReason.EMPTY_MAP and r.best_place is None


def test_bad_descriptor_and_params_raise_naming_the_problem() -> None:
    db = voting_db()
    with pytest.raises(RecognitionParamError, match="dimension"):
        Localizer(db).localize(np.ones(DIM + 1, np.float32), 0.0)
    with pytest.raises(RecognitionParamError, match="NaN"):
        Localizer(db).localize(np.full(DIM, np.nan, np.float32), 0.0)
    with pytest.raises(RecognitionParamError, match="top_k"):
        Localizer(db, retrieval_params(top_k=0))
    with pytest.raises(ValueError, match="place_radius_m"):
        Localizer(db, LocalizerParams(place_radius_m=-1.0))


def corridor_db(n: int = 40) -> tuple[MapDatabase, np.ndarray]:
    """n keyframes 1 m apart along x, each with its own basis direction as descriptor."""
    descs = [BASIS[i + 1].astype(np.float32) for i in range(n)]
    return make_db(descs, [float(i) for i in range(n)]), np.stack(descs)


def query_near(descs: np.ndarray, i: int, s: float, noise: int) -> np.ndarray:
    return unit(s * descs[i] + math.sqrt(1 - s**2) * BASIS[noise])


def test_temporal_filter_accepts_after_n_consistent_frames_and_resets() -> None:
    db, descs = corridor_db()
    params = retrieval_params(
        top_k=5,
        min_score=0.5,
        min_margin=0.1,
        temporal_consistency=3,
        temporal_max_distance_m=2.5,
        temporal_max_gap_s=1.5,
    )
    loc = Localizer(db, params)
    out = [loc.localize(query_near(descs, 10 + t, 0.8, 100 + t), float(t)) for t in range(4)]
    assert [r.accepted for r in out] == [False, False, True, True]
    assert out[0].reason == LocalizationReason.NOT_TEMPORALLY_CONSISTENT
    assert [r.consistent_frames for r in out] == [1, 2, 3, 4]
    # a jump of 20 m breaks the chain
    r = loc.localize(query_near(descs, 30, 0.8, 110), 4.0)
    assert not r.accepted and r.consistent_frames == 1
    # consistent again, but after a stamp gap larger than temporal_max_gap_s
    r1 = loc.localize(query_near(descs, 31, 0.8, 111), 5.0)
    r2 = loc.localize(query_near(descs, 32, 0.8, 112), 9.0)
    assert r1.consistent_frames == 2 and r2.consistent_frames == 1 and not r2.accepted


def test_sequence_matching_recovers_a_frame_where_single_image_retrieval_fails() -> None:
    db, descs = corridor_db()
    # queries along keyframes 10..14 under "appearance change" (score 0.6 only);
    # the last query looks more like keyframe 30 (0.7) than like keyframe 14 (0.5).
    queries = [query_near(descs, 10 + t, 0.6, 100 + t) for t in range(4)]
    queries.append(unit(0.5 * descs[14] + 0.7 * descs[30] + math.sqrt(1 - 0.74) * BASIS[120]))
    single = Localizer(db, retrieval_params(top_k=5, min_score=0.3, min_margin=0.0))
    assert single.localize(queries[-1], 4.0).best_place.keyframe_id == 30

    seq = Localizer(
        db,
        retrieval_params(
            top_k=5, min_score=0.3, min_margin=0.1, sequence_length=5, sequence_velocities=(1.0, 2.0)
        ),
    )
    out = [seq.localize(q, float(t)) for t, q in enumerate(queries)]
    assert all(r.reason == LocalizationReason.SEQUENCE_WINDOW_INCOMPLETE for r in out[:4])
    last = out[-1]
    assert last.accepted, last.reason
    assert last.best_place.keyframe_id == 14
    # sequence score of the path 10..14 at velocity 1: mean of 0.6, 0.6, 0.6, 0.6, 0.5
    assert last.best_place.score == pytest.approx((4 * 0.6 + 0.5) / 5, abs=1e-4)
    # keyframe 30's best path only gets its own frame's 0.7 (all other rows score 0 there)
    other = {h.keyframe_id: h.score for h in last.hypotheses}
    assert other[30] == pytest.approx(0.7 / 5, abs=1e-4)


def test_sequence_window_restarts_after_a_gap() -> None:
    db, descs = corridor_db()
    seq = Localizer(db, retrieval_params(top_k=5, min_score=0.3, sequence_length=3, temporal_max_gap_s=2.0))
    stamps = [0.0, 1.0, 10.0, 11.0, 12.0]
    out = [seq.localize(query_near(descs, 10 + t, 0.8, 100 + t), s) for t, s in enumerate(stamps)]
    reasons = [r.reason == LocalizationReason.SEQUENCE_WINDOW_INCOMPLETE for r in out]
    assert reasons == [True, True, True, True, False]
    assert out[-1].best_place.keyframe_id == 14
