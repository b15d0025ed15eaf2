"""Calibration from the map's own poses, verified re-ranking and the auto thresholds.

Fast tests build maps from exact descriptors (an orthonormal basis: a keyframe meant to score
s against the query is s*e0 + sqrt(1-s^2)*e_i) and real ORB features of synthetic-world
renders (no network). The slow tests run the default model on the synthetic cross-day demo
world of ``ros/demo.py`` (seed 7, 120 mapping + 50 query frames) with default parameters.
Measured values are written beside the assertions (2-vCPU AMD EPYC).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from netvlad_ros.mapdb import Keyframe, MapDatabase
from netvlad_ros.mapdb.features import KeyframeFeatures
from netvlad_ros.recognition.calibration import (
    MIN_AUTO_INLIERS,
    MIN_KEYFRAMES,
    Calibration,
    CalibrationError,
    CalibrationParams,
    calibrate,
    calibration_problem,
    tail_survival,
    upper_threshold,
)
from netvlad_ros.recognition.features import FeatureExtractor
from netvlad_ros.recognition.geometry import FALLBACK_MIN_INLIERS, GeometryParams
from netvlad_ros.recognition.localizer import (
    FALLBACK_MIN_SCORE,
    LocalizationReason,
    Localizer,
    LocalizerParams,
)
from netvlad_ros.synthetic import SyntheticWorld, WorldConfig

DIM = 64
BASIS = np.linalg.qr(np.random.default_rng(3).standard_normal((DIM, DIM)))[0].T


def scored(score: float, own: int) -> np.ndarray:
    """A unit vector whose cosine with BASIS[0] (the query) is exactly ``score``."""
    v = score * BASIS[0] + math.sqrt(1 - score**2) * BASIS[own]
    return (v / np.linalg.norm(v)).astype(np.float32)


QUERY = BASIS[0].astype(np.float32)


def make_db(
    descs: list[np.ndarray], xs: list[float], feats: list[KeyframeFeatures | None] | None = None
) -> MapDatabase:
    db = MapDatabase.create(DIM, "test-fingerprint")
    kfs = [
        Keyframe(stamp=float(i), frame_id="map", position=np.array([x, 0.0, 0.0])) for i, x in enumerate(xs)
    ]
    db.add(kfs, np.stack(descs), features=feats)
    return db


@pytest.fixture(scope="module")
def street() -> dict[str, KeyframeFeatures]:
    """ORB features (with intrinsics) of one synthetic street: ``query`` at x = 1.5 m (another
    day), ``same`` the mapping frame at x = 0 (1.5 m away), ``elsewhere`` a frame of another city."""
    fe = FeatureExtractor()
    w = SyntheticWorld(WorldConfig(seed=3, blocks_x=1, blocks_y=1))
    m = w.traversal("mapping", spacing_m=3.0, max_frames=1)
    q = w.traversal("query", spacing_m=3.0, max_frames=1)
    other = SyntheticWorld(WorldConfig(seed=11, blocks_x=1, blocks_y=1)).traversal(
        "loop", spacing_m=3.0, max_frames=30
    )
    return {
        "query": fe.extract(q[0].image, camera=q[0].camera),
        "same": fe.extract(m[0].image, camera=m[0].camera),
        "elsewhere": fe.extract(other[-1].image, camera=other[-1].camera),
    }


# ---------------------------------------------------------------------- the threshold rule
def test_upper_threshold_allows_at_most_the_target_share_of_samples() -> None:
    samples = np.arange(200, dtype=float)  # 0..199
    # rate 0.01 of 200 = 2 samples may reach it: one above the third largest (197)
    assert upper_threshold(samples, 0.01, 1.0) == 198.0
    assert np.sum(samples >= 198.0) == 2
    # a small sample (rate * n < 1) is extrapolated above its maximum, never below
    small = np.array([0, 0, 0, 1, 2, 3, 5, 8, 9, 10], float)
    t = upper_threshold(small, 0.01, 1.0)
    # top fifth (3 values: 10, 9, 8) over the next (5): mean excess 4 -> 10 + 1 + 4 ln(10)
    assert t == pytest.approx(11 + 4 * math.log(10))
    with pytest.raises(ValueError, match="rate"):
        upper_threshold(samples, 0.0, 1.0)


# ---------------------------------------------------------------------- minimums and fallbacks
def test_too_small_map_is_not_calibrated_and_the_localizer_says_why() -> None:
    n = MIN_KEYFRAMES - 1
    db = make_db([scored(0.5, i + 1) for i in range(n)], [3.0 * i for i in range(n)])
    assert calibrate(db) is None
    reason = calibration_problem(db)
    assert reason is not None and f"{n} keyframes" in reason
    loc = Localizer(db)
    th = loc.thresholds
    assert not th.calibrated and loc.calibration is None
    assert (th.min_inliers, th.min_inliers_source) == (FALLBACK_MIN_INLIERS, "fallback")
    assert (th.min_score, th.min_score_source) == (FALLBACK_MIN_SCORE, "fallback")
    assert reason in th.status and "not calibrated" in th.status


def test_short_map_is_not_calibrated() -> None:
    # 40 keyframes within 20 m: no pair 25 m apart, so no negative to learn from
    db = make_db([scored(0.5, i + 1) for i in range(40)], [0.5 * i for i in range(40)])
    reason = calibration_problem(db)
    assert reason is not None and ">= 25 m" in reason and "spans 20 m" in reason
    assert calibrate(db) is None


def test_map_without_features_calibrates_scores_only_and_inliers_fall_back() -> None:
    # keyframes 3 m apart along x; descriptors: neighbours similar, far keyframes not
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.standard_normal((40, DIM)), axis=0)
    descs = [(v / np.linalg.norm(v)).astype(np.float32) for v in walk]
    db = make_db(descs, [3.0 * i for i in range(40)])
    cal = calibrate(db)
    assert cal is not None and not cal.has_verification and cal.min_inliers(0.01) is None
    assert any("no local features" in n for n in cal.notes)
    loc = Localizer(db, calibration=cal)
    assert (
        loc.thresholds.min_inliers_source == "fallback" and loc.thresholds.min_score_source == "calibration"
    )
    # the score threshold sits above every simulated negative's best score (28 queries < 1/0.01: extrapolated)
    assert loc.thresholds.min_score > cal.negative_best_scores().max()


# ---------------------------------------------------------------------- explicit values win
def test_explicit_thresholds_win_over_auto(street) -> None:
    db = make_db([scored(0.9, 1)], [0.0], [street["same"]])
    cal = _fake_calibration()
    auto = Localizer(db, calibration=cal).thresholds
    assert auto.min_inliers == cal.min_inliers(0.01, 5) and auto.min_inliers_source == "calibration"
    assert auto.min_score == pytest.approx(cal.min_score(0.01)) and auto.verified_min_score == -1.0
    params = LocalizerParams(geometry=GeometryParams(min_inliers=77), min_score=0.5, min_margin=0.2)
    th = Localizer(db, params, calibration=cal).thresholds
    assert (th.min_inliers, th.min_inliers_source) == (77, "explicit")
    assert (th.min_score, th.min_score_source) == (0.5, "explicit") and th.verified_min_score == 0.5
    assert th.min_margin == 0.2 and th.verified_min_margin == 0.2
    # a stricter target false-accept rate never lowers the auto threshold
    strict = Localizer(db, LocalizerParams(target_false_accept_rate=0.001), calibration=cal).thresholds
    assert strict.min_inliers >= auto.min_inliers


def _fake_calibration() -> Calibration:
    """A calibration whose samples are known: 100 simulated queries, negative winners with
    0..99 inliers (so the 1 % rule gives 99 + 1 = 100), best negative scores 0.5..0.599."""
    rows = 100
    return Calibration(
        keyframes=100,
        keyframes_with_features=100,
        same_place_m=10.0,
        different_place_m=25.0,
        verify_top_k=5,
        candidate_scores=tuple((round(0.5 + i / 1000, 6), 0.1) for i in range(rows)),  # stored to 6 decimals
        candidate_negative=tuple((True, False) for _ in range(rows)),
        candidate_inliers=tuple((i, 0) for i in range(rows)),
        positive_scores=(0.8,) * 10,
        positive_inliers=(200,) * 10,
        retrieval_model=None,
    )


def test_fake_calibration_thresholds_follow_the_rule() -> None:
    cal = _fake_calibration()
    assert cal.min_inliers(0.01) == 99  # one sample (99) may reach it: one above the 2nd largest (98)
    assert cal.false_accept_rate(99) == pytest.approx(0.01)
    assert cal.min_score(0.01) == pytest.approx(0.598 + 1e-4)
    low = replace(cal, candidate_inliers=tuple((0, 0) for _ in range(100)))
    assert low.min_inliers(0.01) == MIN_AUTO_INLIERS  # never below the floor


def test_verified_probability_is_the_tail_posterior_and_coherent_with_the_threshold() -> None:
    cal = _fake_calibration()
    # wrong winners 0..99: tail scale = mean(99..80) - 79 = 10.5; same-place median m = 200
    # p = 1 / (1 + m S(n) / beta): S(50) = 0.5 (empirical); beyond 99, S(n) = exp(-(n - 100) / 10.5) / 100
    assert cal.probability(0.0, 50) == pytest.approx(1 / (1 + 200 * 0.5 / 10.5))  # 0.095
    assert cal.probability(0.0, 100) == pytest.approx(1 / (1 + 200 * 0.01 / 10.5))  # 0.840
    assert cal.probability(0.0, 121) == pytest.approx(1 / (1 + 200 * math.exp(-2) / 100 / 10.5))  # 0.975
    # at the threshold of a rate r beyond the samples, S = r: p = 1 / (1 + r m / beta)
    t = upper_threshold(cal.negative_winner_inliers(), 0.001, 1.0)
    assert tail_survival(cal.negative_winner_inliers(), t, 1.0) == pytest.approx(0.001)
    assert cal.probability(0.0, t) == pytest.approx(1 / (1 + 0.001 * 200 / 10.5))
    # no score model, no same-place inliers: no probability (the localizer falls back)
    assert cal.probability(0.9) is None
    assert replace(cal, positive_inliers=()).probability(0.0, 100) is None


# ---------------------------------------------------------------------- storage
def test_round_trip_through_the_map_manifest(tmp_path) -> None:
    cal = _fake_calibration()
    cal = replace(cal, notes=("a note",), geometry={"ratio": 0.8})
    db = make_db([scored(0.9, 1)], [0.0])
    db.set_calibration(cal.to_dict())
    db.save(tmp_path / "map")
    back = Calibration.from_dict(MapDatabase.load(tmp_path / "map").calibration)
    assert back == cal
    assert back.min_inliers(0.01) == cal.min_inliers(0.01)


def test_malformed_or_newer_blob_is_refused_naming_the_problem_and_the_localizer_falls_back() -> None:
    blob = _fake_calibration().to_dict()
    with pytest.raises(CalibrationError, match="version 99"):
        Calibration.from_dict({**blob, "version": 99})
    with pytest.raises(CalibrationError, match="candidate_scores"):
        Calibration.from_dict({k: v for k, v in blob.items() if k != "candidate_scores"})
    with pytest.raises(CalibrationError, match="differ in length"):
        Calibration.from_dict({**blob, "candidate_negative": blob["candidate_negative"][:-1]})
    db = make_db([scored(0.9, 1)], [0.0])
    db.set_calibration({**blob, "version": 99})
    th = Localizer(db).thresholds
    assert not th.calibrated and "version 99" in th.status and th.min_inliers_source == "fallback"


# ---------------------------------------------------------------------- verified re-ranking
def test_verification_re_ranks_a_wrong_top1_to_the_right_place(street) -> None:
    # keyframe 0: another place 50 m away that looks more alike (0.90); keyframe 1: the query's
    # own place (0.80), with the features of the mapping frame 1.5 m from the query
    db = make_db([scored(0.90, 1), scored(0.80, 2)], [50.0, 0.0], [street["elsewhere"], street["same"]])
    res = Localizer(db).localize(QUERY, 0.0, features=street["query"])
    assert res.hypotheses[0].keyframe_id == 0  # retrieval alone is wrong
    assert res.accepted and res.verified and res.reason is None
    assert res.best_place.keyframe_id == 1 and res.best_place.best.keyframe_id == 1
    checks = {c.keyframe_id: c for c in res.checks}
    # measured: 276 inliers for the right place, 0 for the other city (fallback threshold 25)
    assert checks[1].verified and checks[1].inliers >= 4 * FALLBACK_MIN_INLIERS
    assert not checks[0].verified and checks[0].inliers < FALLBACK_MIN_INLIERS
    assert 0.9 < res.confidence <= 1.0  # fallback model: 0.9 at 25 inliers, 0.99 at 50


def test_unverified_candidates_are_not_accepted_by_default(street) -> None:
    db = make_db([scored(0.95, 1), scored(0.5, 2)], [0.0, 50.0], [street["elsewhere"], None])
    loc = Localizer(db)
    r = loc.localize(QUERY, 0.0, features=street["query"])
    assert not r.accepted and r.reason == LocalizationReason.NOT_VERIFIED
    # measured: the other city gets 6 essential-matrix inliers of 26 matches (threshold 25)
    assert [c.reason for c in r.checks] == ["too_few_inliers", "unverifiable"]
    assert r.checks[0].inliers < FALLBACK_MIN_INLIERS
    assert r.best_place is not None and r.best_place.keyframe_id == 0  # still reported for diagnostics
    r = loc.localize(QUERY, 1.0)  # no query features
    assert not r.accepted and r.reason == LocalizationReason.NO_QUERY_FEATURES
    # an old map (no stored features): reported, never a crash
    old = make_db([scored(0.95, 1), scored(0.5, 2)], [0.0, 50.0])
    r = Localizer(old).localize(QUERY, 0.0, features=street["query"])
    assert not r.accepted and r.reason == LocalizationReason.UNVERIFIABLE
    assert {c.reason for c in r.checks} == {"unverifiable"}
    # opting out of verification accepts on the retrieval rule (explicit score, fallback margin 0.05)
    lenient = LocalizerParams(require_verification=False, min_score=0.9)
    r = Localizer(old, lenient).localize(QUERY, 0.0, features=street["query"])
    assert r.accepted and not r.verified and r.best_place.keyframe_id == 0
    assert r.margin == pytest.approx((0.95 - 0.5) / (1 - 0.5), abs=1e-4)


def test_require_verification_needs_candidates_to_verify() -> None:
    from netvlad_ros.recognition.places import RecognitionParamError

    with pytest.raises(RecognitionParamError, match="verify_top_k"):
        LocalizerParams(verify_top_k=0).validate()


def test_verification_stops_early_once_a_candidate_is_certain(street) -> None:
    # both keyframes hold the query's own place; the first verifies with 276 inliers (measured),
    # far above the 96 at which the fallback probability reaches 0.999, so the second is skipped
    db = make_db([scored(0.90, 1), scored(0.80, 2)], [0.0, 1.0], [street["same"], street["same"]])
    r = Localizer(db).localize(QUERY, 0.0, features=street["query"])
    assert r.accepted and [c.keyframe_id for c in r.checks] == [0] and r.confidence >= 0.999
    every = Localizer(db, LocalizerParams(verify_stop_probability=0.0)).localize(
        QUERY, 0.0, features=street["query"]
    )
    assert every.accepted and [c.keyframe_id for c in every.checks] == [0, 1]


def test_calibration_is_the_same_for_any_number_of_workers() -> None:
    """The verifications run on threads (``CalibrationParams.workers``); the result must not
    depend on how many, or on which thread verified which pair."""
    fe = FeatureExtractor()
    frames = SyntheticWorld(WorldConfig(seed=5, blocks_x=1, blocks_y=1)).traversal(
        "mapping", spacing_m=3.0, max_frames=36
    )
    rng = np.random.default_rng(0)
    descs = rng.standard_normal((len(frames), DIM)).astype(np.float32)
    descs /= np.linalg.norm(descs, axis=1, keepdims=True)
    db = MapDatabase.create(DIM, "test-fingerprint")
    db.add(
        [Keyframe(stamp=float(i), frame_id="map", position=f.position) for i, f in enumerate(frames)],
        descs,
        features=[fe.extract(f.image, camera=f.camera) for f in frames],
    )
    assert calibration_problem(db) is None
    one = calibrate(db, params=CalibrationParams(workers=1))
    two = calibrate(db, params=CalibrationParams(workers=2))
    three = calibrate(db, params=CalibrationParams(workers=3))
    assert one is not None and one.has_verification
    # real verifications happened: neighbours 3 m apart on the street share many inliers
    # (measured: median positive 100+), so an all-zero result cannot pass for equality
    assert one.positive_inliers is not None and max(one.positive_inliers) >= MIN_AUTO_INLIERS
    assert one.to_dict() == two.to_dict() == three.to_dict()
