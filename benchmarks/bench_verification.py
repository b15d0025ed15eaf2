"""What geometric verification adds per localized frame, and what one PnP / essential /
fundamental verification costs, on this CPU.

A synthetic cross-day world (default 640x480 frames): a mapping drive is built into a map
three times, with the local features build-map stores for an RGB-D camera (depth +
intrinsics -> PnP), a calibrated monocular camera (intrinsics -> essential matrix) and an
uncalibrated one (fundamental matrix); each map calibrates itself (``calibrate_map``, as
build-map does). A query drive on another day is then localized against each map with the
default ``LocalizerParams``: per query, the time of the query's feature extraction
(``FeatureExtractor.extract``, full resolution) and of ``Localizer.verify`` on the top
``verify_top_k`` hypotheses with the default early stop; their sum is what verification
adds to a localized frame (target: <= 30 ms at p95 on the 2-core CPU). The second table
times single ``GeometricVerifier.verify`` calls on true pairs (the loop-closure case:
``max_verified_candidates`` such calls per keyframe at most).

Feature extraction of a keyframe is not in the per-frame sum of slam mode's keyframes here;
it is the same ``extract`` column.

    .venv/bin/python benchmarks/bench_verification.py [--map-frames 40] [--queries 60]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from netvlad_ros.mapdb import Keyframe, MapDatabase
from netvlad_ros.model import DescriptorExtractor
from netvlad_ros.offline.build_map import calibrate_map
from netvlad_ros.recognition import FeatureExtractor, GeometricVerifier, Localizer
from netvlad_ros.synthetic.world import SyntheticWorld, WorldConfig

CAMERAS = ("pnp (depth + intrinsics)", "essential (intrinsics)", "fundamental (none)")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def localize_all(loc: Localizer, db: MapDatabase, fx: FeatureExtractor, query: list, descs: np.ndarray,
                 cam: object) -> dict:  # fmt: skip
    """Localize every query with the default parameters; the table row's cells, and the
    (query, keyframe) feature pairs that verified (for the per-pair table)."""
    p = loc.params
    t_ex, t_ver, n_ver, accepted, wrong, pairs = [], [], [], 0, 0, []
    for f, d in zip(query, descs, strict=True):
        t0 = time.perf_counter()
        qf = fx.extract(f.image, None, cam)  # type: ignore[arg-type]
        t1 = time.perf_counter()
        res = loc.localize(d, f.stamp, None)  # retrieval only: the hypotheses to verify
        t2 = time.perf_counter()
        checks = loc.verify(qf, res.hypotheses[: p.verify_top_k], p.verify_stop_probability)
        t3 = time.perf_counter()
        t_ex.append((t1 - t0) * 1e3)
        t_ver.append((t3 - t2) * 1e3)
        n_ver.append(len(checks))
        full = loc.localize(d, f.stamp, qf)
        if full.accepted and full.best_place is not None:
            accepted += 1
            wrong += float(np.linalg.norm(full.best_place.position[:2] - f.position[:2])) > 10.0
        pairs += [(qf, db.features(c.keyframe_id)) for c in checks if c.verified][:1]
    added = [a + b for a, b in zip(t_ex, t_ver, strict=True)]
    return {
        "extract p50": f"{pct(t_ex, 50):.1f}",
        "extract p95": f"{pct(t_ex, 95):.1f}",
        "verify p50": f"{pct(t_ver, 50):.1f}",
        "verify p95": f"{pct(t_ver, 95):.1f}",
        "added p50": f"{pct(added, 50):.1f}",
        "added p95": f"{pct(added, 95):.1f}",
        "verified/query": f"{np.mean(n_ver):.2f}",
        "accepted": f"{accepted}/{len(query)}",
        "wrong": str(wrong),
        "pairs": pairs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--map-frames", type=int, default=40)
    ap.add_argument("--queries", type=int, default=60)
    args = ap.parse_args()

    world = SyntheticWorld(WorldConfig(seed=args.seed))
    mapping = world.traversal("mapping", spacing_m=3.0, max_frames=args.map_frames, depth=True)
    spacing = 3.0 * args.map_frames / args.queries
    queries = {
        cond or "another day": world.traversal(
            "query", spacing_m=spacing, max_frames=args.queries, condition=cond
        )
        for cond in (None, "night/clear/summer")
    }
    ex = DescriptorExtractor(None)
    map_desc = np.concatenate([ex([f.image]) for f in mapping])
    q_descs = {k: np.concatenate([ex([f.image]) for f in q]) for k, q in queries.items()}
    fx = FeatureExtractor()
    cam = world.camera

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"world seed {args.seed}, {len(mapping)} map frames, {args.queries} queries per condition, "
          f"{cam.width}x{cam.height}")  # fmt: skip
    print()
    print("| map features | queries | extract p50 | extract p95 | verify p50 | verify p95 | added p50 | added p95 "
          "| verified/query | accepted | wrong (>10 m) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    pairs: dict[str, list[tuple[object, object]]] = {}
    for kind in CAMERAS:
        db = MapDatabase.create(map_desc.shape[1], ex.fingerprint)
        feats = []
        for f in mapping:
            if kind.startswith("pnp"):
                feats.append(fx.extract(f.image, f.depth, cam))
            elif kind.startswith("essential"):
                feats.append(fx.extract(f.image, None, cam))
            else:
                feats.append(fx.extract(f.image))
        kfs = [Keyframe(stamp=f.stamp, position=f.position, orientation=f.orientation) for f in mapping]
        db.add(kfs, map_desc, features=feats)
        calibrate_map(db)
        loc = Localizer(db)
        pairs[kind] = []
        for cond, query in queries.items():
            row = localize_all(
                loc, db, fx, query, q_descs[cond], None if kind.startswith("fundamental") else cam
            )
            pairs[kind] += row.pop("pairs")
            print(f"| {kind} | {cond} | " + " | ".join(str(v) for v in row.values()) + " |")

    print()
    print("| one verify() on a true pair | p50 ms | p95 ms | pairs |")
    print("|---|---|---|---|")
    v = GeometricVerifier()
    for kind in CAMERAS:
        times = []
        for qf, mf in pairs[kind]:
            t0 = time.perf_counter()
            v.verify(qf, mf)  # type: ignore[arg-type]
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"| {kind} | {pct(times, 50):.1f} | {pct(times, 95):.1f} | {len(times)} |")


if __name__ == "__main__":
    main()
