"""Localization with the default parameters: verified re-ranking and the map's own calibration.

For each set: build a map (descriptors + ORB features of every mapping frame, as build-map
stores them), calibrate it from its own poses (``recognition.calibration.calibrate``), then
localize every query with ``Localizer(db)`` and default ``LocalizerParams`` (no override),
passing the query's local features. Prints a Markdown table: accepted places, precision,
recall, Recall@1 before and after re-ranking, the auto thresholds and what they rest on, and
the verification time per query.

Sets:

- ``demo``: the synthetic cross-day demo world of ``ros/demo.py`` (seed 7, 120 mapping frames
  3 m apart, 50 query frames of another day); a query is right within 25 m (eval-map's radius).
  Also with harder query conditions against the same day map (``--conditions``), with and
  without camera intrinsics (essential vs fundamental matrix) and with depth in the map's
  features (PnP).
- ``corridors``: the indoor synthetic world (``WorldConfig.corridors``, seed 7, 120 frames 1 m
  apart, 50 queries of another day and of the night), right within 10 m.
- ``rtabmap``: the shared RTAB-Map walk (``../shared/data/rtabmap_samples``): map images 1-40
  (positions assumed 1 m apart on a line: the sample has no poses), queries 41-84, right when
  ``gt_matrix_84x84.npy`` says so. Skipped when the data is absent.

    python benchmarks/bench_recognition_defaults.py [--conditions night/clear/summer,day/snow/winter]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from netvlad_ros.mapdb import Keyframe, MapDatabase
from netvlad_ros.mapdb.features import KeyframeFeatures
from netvlad_ros.model import DescriptorExtractor
from netvlad_ros.recognition.calibration import calibrate
from netvlad_ros.recognition.features import FeatureExtractor
from netvlad_ros.recognition.localizer import Localizer, LocalizerParams
from netvlad_ros.synthetic import SyntheticWorld, WorldConfig

RTABMAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rtabmap_samples"


@dataclass
class Views:
    """Descriptors, features and positions of a set of images."""

    descriptors: np.ndarray
    features: list[KeyframeFeatures]
    positions: np.ndarray
    stamps: np.ndarray
    feature_ms: np.ndarray  # FeatureExtractor.extract per image


def describe(
    ex: DescriptorExtractor, images: list, cameras: list, positions, stamps, depths: list | None = None
) -> Views:
    fe = FeatureExtractor()
    feats, ms = [], []
    for k, (im, cam) in enumerate(zip(images, cameras, strict=True)):
        t0 = time.perf_counter()
        feats.append(fe.extract(im, depth=None if depths is None else depths[k], camera=cam))
        ms.append((time.perf_counter() - t0) * 1e3)
    return Views(
        np.asarray(ex(images), np.float32),
        feats,
        np.asarray(positions, float),
        np.asarray(stamps, float),
        np.asarray(ms),
    )


def frames_views(ex: DescriptorExtractor, frames: list) -> Views:
    depths = [f.depth for f in frames] if frames[0].depth is not None else None
    return describe(ex, [f.image for f in frames], [f.camera for f in frames],
                    [f.position for f in frames], [f.stamp for f in frames], depths)  # fmt: skip


def without_camera(v: Views) -> Views:
    return replace(v, features=[replace(f, camera=None) for f in v.features])


def build_db(v: Views, fingerprint: str) -> tuple[MapDatabase, float]:
    db = MapDatabase.create(v.descriptors.shape[1], fingerprint)
    kfs = [
        Keyframe(stamp=float(s), frame_id="map", position=p)
        for s, p in zip(v.stamps, v.positions, strict=True)
    ]
    db.add(kfs, v.descriptors, features=v.features)
    t0 = time.perf_counter()
    cal = calibrate(db)
    seconds = time.perf_counter() - t0
    if cal is not None:
        db.set_calibration(cal.to_dict())
    return db, seconds


#: Verification off: retrieval with the calibrated min_score and the fallback margin.
RETRIEVAL_ONLY = LocalizerParams(verify_top_k=0, require_verification=False)


def evaluate(
    db: MapDatabase, q: Views, right: Callable[[int, int], bool], params: LocalizerParams | None = None
) -> dict:
    """Accepted-place precision/recall, Recall@1 before/after re-ranking, time per query."""
    loc = Localizer(db, params)
    tp = fp = r1 = r1_rr = 0
    ms: list[float] = []
    checks: list[int] = []
    conf_ok: list[float] = []
    conf_wrong: list[float] = []
    for i in range(len(q.descriptors)):
        t0 = time.perf_counter()
        res = loc.localize(q.descriptors[i], float(q.stamps[i]), features=q.features[i])
        ms.append((time.perf_counter() - t0) * 1e3)
        checks.append(len(res.checks))
        if not res.hypotheses:
            continue
        r1 += right(i, res.hypotheses[0].keyframe_id)
        assert res.best_place is not None
        ok = right(i, res.best_place.keyframe_id)
        r1_rr += ok
        (conf_ok if ok else conf_wrong).append(res.confidence)
        if res.accepted:
            tp += ok
            fp += not ok
    n = len(q.descriptors)
    th = loc.thresholds
    return {
        "accepted": tp + fp,
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / n,
        "r1": r1 / n,
        "r1_rr": r1_rr / n,
        "min_inliers": th.min_inliers,
        "min_score": th.min_score,
        "source": th.min_inliers_source,
        "far": th.estimated_false_accept_rate,
        "ms": np.asarray(ms),
        "checks": float(np.mean(checks)),
        "conf_right_p10": float(np.percentile(conf_ok, 10)) if conf_ok else float("nan"),
        "conf_wrong_max": max(conf_wrong, default=float("nan")),
        "status": th.status,
        "summary": loc.calibration.summary() if loc.calibration is not None else {},
        "p_at_threshold": None
        if loc.calibration is None
        else loc.calibration.probability(0.0, th.min_inliers, loc.params.verify_top_k),
    }


def synthetic_sets(
    ex: DescriptorExtractor,
    name: str,
    config: WorldConfig,
    spacing_m: float,
    radius_m: float,
    conditions: list[str],
    variants: tuple[str, ...] = ("K", "no K"),
) -> list[tuple[str, MapDatabase, Views, Callable, float]]:
    """A day map of 120 frames ``spacing_m`` apart; 50 queries of another day (and of each
    condition), right within ``radius_m``. Variants: ``K`` (intrinsics: essential matrix), ``no
    K`` (fundamental), ``K + map depth`` (the map's features carry depth: PnP)."""
    world = SyntheticWorld(config)
    mapping = world.traversal(
        "mapping", spacing_m=spacing_m, max_frames=120, depth="K + map depth" in variants
    )
    m = frames_views(ex, mapping)
    dbs = {}
    for v in variants:
        mv = without_camera(m) if v == "no K" else m
        if v == "K":
            mv = replace(mv, features=[replace(f, depths=None) for f in mv.features])
        dbs[v] = build_db(mv, ex.fingerprint)
    out = []
    for cond in [None, *conditions]:
        query = world.traversal("query", spacing_m=spacing_m * 120 / 50, max_frames=50, condition=cond)
        qv = frames_views(ex, query)

        def right(i: int, kid: int, qv: Views = qv, pos: np.ndarray = m.positions) -> bool:
            return bool(np.linalg.norm(pos[kid] - qv.positions[i]) <= radius_m)

        label = cond or "another day"
        for v in variants:
            db, secs = dbs[v]
            out.append((f"{name}, {label}, {v}", db, without_camera(qv) if v == "no K" else qv, right, secs))
    return out


def rtabmap_set(ex: DescriptorExtractor) -> tuple[str, MapDatabase, Views, Callable, float] | None:
    if not (RTABMAP / "gt_matrix_84x84.npy").is_file():
        return None
    images = [cv2.imread(str(RTABMAP / "images" / f"{i}.jpg")) for i in range(1, 85)]
    pos = [[float(i), 0.0, 0.0] for i in range(84)]
    v = describe(ex, images, [None] * 84, pos, np.arange(84, dtype=float))
    gt = np.load(RTABMAP / "gt_matrix_84x84.npy")
    m = Views(v.descriptors[:40], v.features[:40], v.positions[:40], v.stamps[:40], v.feature_ms[:40])
    q = Views(v.descriptors[40:], v.features[40:], v.positions[40:], v.stamps[40:], v.feature_ms[40:])
    db, secs = build_db(m, ex.fingerprint)
    return "RTAB-Map walk (map 1-40, queries 41-84), no K", db, q, lambda i, kid: bool(gt[40 + i, kid]), secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conditions", default="night/clear/summer,day/snow/winter,dusk/rain/autumn")
    args = ap.parse_args()
    ex = DescriptorExtractor(None, device="cpu")
    sets = []
    rt = rtabmap_set(ex)
    if rt is not None:
        sets.append(rt)
    conditions = [c for c in args.conditions.split(",") if c]
    # the world of ros/demo.py (seed 7, 120 mapping frames 3 m apart, 50 queries): eval-map's 25 m
    sets += synthetic_sets(ex, "synthetic street (demo)", WorldConfig(seed=7), 3.0, 25.0, conditions,
                           ("K", "no K", "K + map depth"))  # fmt: skip
    # indoor: corridors round rooms, 120 frames 1 m apart, right within the 10 m of "same place"
    sets += synthetic_sets(ex, "synthetic corridors", WorldConfig.corridors(seed=7), 1.0, 10.0,
                           ["night/clear/summer"], ("K",))  # fmt: skip
    print(f"machine: {platform.processor() or platform.machine()}, {cv2.getNumThreads()} OpenCV threads\n")
    print(
        "| set | accepted | precision | recall | R@1 | R@1 re-ranked | min_inliers (auto) | est. FAR "
        "| P at threshold | confidence right p10 / wrong max | retrieval only (auto min_score): "
        "accepted, precision, recall | calibration s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    summaries, timing = [], []
    for name, db, q, right, secs in sets:
        r = evaluate(db, q, right)
        u = evaluate(db, q, right, RETRIEVAL_ONLY)
        far = "n/a" if r["far"] is None else f"{r['far']:.3f}"
        pth = "n/a" if r["p_at_threshold"] is None else f"{r['p_at_threshold']:.2f}"
        print(f"| {name} | {r['accepted']}/{len(q.descriptors)} | {r['precision']:.3f} | {r['recall']:.3f} | "
              f"{r['r1']:.3f} | {r['r1_rr']:.3f} | {r['min_inliers']} ({r['source']}) | {far} | {pth} | "
              f"{r['conf_right_p10']:.3f} / {r['conf_wrong_max']:.3f} | {u['accepted']}, {u['precision']:.3f}, "
              f"{u['recall']:.3f} (>= {u['min_score']:.3f}) | {secs:.1f} |")  # fmt: skip
        summaries.append((name, r["status"], r["summary"]))
        added = r["ms"] - u["ms"] + q.feature_ms
        timing.append((name, r["checks"], np.percentile(q.feature_ms, [50, 95]), np.percentile(r["ms"] - u["ms"], [50, 95]),
                       np.percentile(added, [50, 95])))  # fmt: skip
    print("\n| set | verifications / query | query features ms p50/p95 | re-ranking ms p50/p95 "
          "| verification adds (both) ms p50/p95 |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, n_checks, fe, rr, add in timing:
        print(
            f"| {name} | {n_checks:.2f} | {fe[0]:.1f}/{fe[1]:.1f} | {rr[0]:.1f}/{rr[1]:.1f} | {add[0]:.1f}/{add[1]:.1f} |"
        )
    print()
    seen = set()
    for name, status, summary in summaries:
        if status in seen:
            continue
        seen.add(status)
        print(f"- {name}: {status}\n  {summary}")


if __name__ == "__main__":
    main()
