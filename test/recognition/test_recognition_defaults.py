"""Issue 10's targets with default parameters and no override: verified, self-calibrated localization.

Maps are built as build-map stores them (descriptors of the default model + ORB features of
every mapping image), calibrated from their own poses (``calibrate``) and queried with
``Localizer(db)`` and default ``LocalizerParams``. Measured values (2-vCPU AMD EPYC, the same
numbers as benchmarks/bench_recognition_defaults.py, docs/recognition.md) are written beside
the assertions.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from netvlad_ros.mapdb import Keyframe, MapDatabase
from netvlad_ros.mapdb.features import KeyframeFeatures
from netvlad_ros.recognition.calibration import Calibration, calibrate
from netvlad_ros.recognition.features import FeatureExtractor
from netvlad_ros.recognition.localizer import Localizer
from netvlad_ros.synthetic import SyntheticWorld, WorldConfig

from support import rtabmap_or_skip

pytestmark = pytest.mark.slow


@dataclass
class Outcome:
    accepted: int
    wrong: int
    recall: float
    recall_at_1: float  # retrieval top-1
    recall_at_1_reranked: float  # best place after verified re-ranking


@pytest.fixture(scope="module")
def extractor():
    from netvlad_ros.model import DescriptorExtractor

    return DescriptorExtractor(None, device="cpu")


def views(extractor, images: list[np.ndarray], cameras: list) -> tuple[np.ndarray, list[KeyframeFeatures]]:
    fe = FeatureExtractor()
    feats = [fe.extract(im, camera=cam) for im, cam in zip(images, cameras, strict=True)]
    return np.asarray(extractor(images), np.float32), feats


def calibrated_map(desc: np.ndarray, feats: list[KeyframeFeatures], positions: np.ndarray) -> MapDatabase:
    db = MapDatabase.create(desc.shape[1], "test-default-model")
    kfs = [Keyframe(stamp=float(i), frame_id="map", position=p) for i, p in enumerate(positions)]
    db.add(kfs, desc, features=feats)
    cal = calibrate(db)
    assert cal is not None
    db.set_calibration(cal.to_dict())
    return db


def localize_all(db: MapDatabase, desc: np.ndarray, feats: list[KeyframeFeatures], right) -> Outcome:
    loc = Localizer(db)  # defaults: verified places only, auto thresholds from the calibration
    assert loc.thresholds.calibrated and loc.thresholds.min_inliers_source == "calibration"
    accepted = wrong = r1 = r1_rr = 0
    for i in range(len(desc)):
        res = loc.localize(desc[i], float(i), features=feats[i])
        assert res.best_place is not None
        r1 += right(i, res.hypotheses[0].keyframe_id)
        ok = right(i, res.best_place.keyframe_id)
        r1_rr += ok
        accepted += res.accepted
        wrong += res.accepted and not ok
    n = len(desc)
    return Outcome(accepted, wrong, (accepted - wrong) / n, r1 / n, r1_rr / n)


# ---------------------------------------------------------------------- the synthetic cross-day demo
@pytest.fixture(scope="module")
def demo(extractor):
    """The world of ros/demo.py: seed 7, 120 mapping frames 3 m apart, queries of another day."""
    world = SyntheticWorld(WorldConfig(seed=7))
    mapping = world.traversal("mapping", spacing_m=3.0, max_frames=120)
    desc, feats = views(extractor, [f.image for f in mapping], [f.camera for f in mapping])
    db = calibrated_map(desc, feats, np.array([f.position for f in mapping]))

    def queries(condition: str | None):
        q = world.traversal("query", spacing_m=3.0 * 120 / 50, max_frames=50, condition=condition)
        qd, qf = views(extractor, [f.image for f in q], [f.camera for f in q])
        pos = np.array([f.position for f in q])

        def right(i: int, kid: int) -> bool:  # eval-map's radius
            return bool(np.linalg.norm(db.positions([kid])[0] - pos[i]) <= 25.0)

        return qd, qf, right

    return db, queries


def test_calibration_separates_the_maps_own_same_and_different_places(demo) -> None:
    db, _ = demo
    cal = Calibration.from_dict(db.calibration)
    assert cal.queries == 120 and len(cal.positive_inliers) >= 100  # measured 120 queries, 121 pairs
    wrong_winners = cal.negative_winner_inliers()
    same = np.asarray(cal.positive_inliers)
    # measured (v3 head): same-place pairs p1 124, p10 191 inliers; the wrong winners of the
    # simulated queries of unmapped places: p99 78, all but two <= 22; the two are facades
    # seen again from more than 25 m (91 and 140 inliers; v2 retrieved neither, its max was 43);
    # threshold 92 for 1 %
    assert np.percentile(same, 10) > 2 * np.percentile(wrong_winners, 99)
    assert np.sum(wrong_winners > 25) <= 3
    t = cal.min_inliers(0.01)
    assert np.percentile(wrong_winners, 99) < t < np.percentile(same, 1)
    assert cal.false_accept_rate(t) <= 0.01  # measured 1/120
    # the probability rises with the inliers and is coherent with the threshold: measured
    # 0.525 at 10 inliers, 0.869 at the threshold (92), 0.993 at 184
    ns = sorted({0, 5, 10, t, 112, 150, 2 * t})
    probs = [cal.probability(0.0, n) for n in ns]
    # never falls with more inliers; flat between two wrong-winner samples (91 .. 140: the
    # share of wrong winners reaching n does not change there)
    assert bool(np.all(np.diff(probs) >= 0)) and probs[-1] > probs[0] + 0.9, probs
    p10, p_t, p_2t = (cal.probability(0.0, n) for n in (10, t, 2 * t))
    assert p10 < p_t - 0.2 and 0.75 < p_t < 0.95 and p_2t > 0.98, (p10, p_t, p_2t)
    # scores alone overlap: measured (v3) same-place p10 0.735, wrong places' best p99 0.731
    assert np.percentile(cal.positive_scores, 10) < np.percentile(cal.negative_best_scores(), 99) + 0.02


def test_demo_cross_day_with_defaults_is_precise_with_high_recall(demo) -> None:
    db, queries = demo
    out = localize_all(db, *queries(None))
    # measured (v3): 50 of 50 accepted, 0 wrong; Recall@1 1.00 retrieval and re-ranked (v2: 0.98)
    assert out.wrong <= 0.01 * out.accepted, out
    assert out.recall >= 0.8, out
    assert out.recall_at_1_reranked >= out.recall_at_1 >= 0.9, out


@pytest.mark.parametrize("condition", ["dusk/rain/autumn", "night/clear/summer"])
def test_harder_queries_on_a_day_map_lose_recall_not_precision(demo, condition: str) -> None:
    db, queries = demo
    out = localize_all(db, *queries(condition))
    # measured (v3): dusk/rain/autumn 0 accepted (Recall@1 0.90, but no right place reaches the
    # calibrated 92 inliers); night 0 accepted (Recall@1 0.46); v2: dusk 6 right, night 0
    assert out.wrong == 0, out
    assert out.recall < 0.5, out  # the same map's day queries: 1.0 (the condition is harder)


# ---------------------------------------------------------------------- the RTAB-Map walk
def test_rtabmap_walk_localization_with_defaults(extractor) -> None:
    data = rtabmap_or_skip()
    images = [cv2.imread(str(data / "images" / f"{i}.jpg")) for i in range(1, 85)]
    assert all(im is not None for im in images)
    gt = np.load(data / "gt_matrix_84x84.npy", allow_pickle=False)
    desc, feats = views(extractor, images, [None] * 84)  # no intrinsics: fundamental matrix
    # the sample has no poses: images 1-40 placed 1 m apart on a line (docs/recognition.md)
    db = calibrated_map(desc[:40], feats[:40], np.array([[float(i), 0.0, 0.0] for i in range(40)]))
    out = localize_all(db, desc[40:], feats[40:], lambda i, kid: bool(gt[40 + i, kid]))
    # measured (v3): 39 of 44 accepted, 0 wrong (recall 0.886); Recall@1 0.955 both ways
    assert out.wrong <= 0.01 * out.accepted, out
    assert out.recall >= 0.7, out
