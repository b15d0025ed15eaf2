"""Map snapshot, save and load costs, and the size of stored ORB features (docs/mapdb.md).

Prints three tables:

1. ``MapDatabase.snapshot()`` (the part a caller does under its lock) per index kind,
   and the save (``storage.save_snapshot``, no database lock) that follows it;
2. local features: ORB (``cv2.ORB_create(1000)``) on the real RTAB-Map sample images
   (../shared/data/rtabmap_samples, when present; generated scenes otherwise), bytes per
   keyframe on disk;
3. load time of a map with N keyframes that all carry ORB-sized features (depths too).

    .venv/bin/python benchmarks/bench_mapdb_snapshot.py --n 10000 --dim 3584
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import faiss
import numpy as np

from netvlad_ros.mapdb import (
    CameraIntrinsics,
    IndexConfig,
    Keyframe,
    KeyframeFeatures,
    MapDatabase,
    load_snapshot,
    save_snapshot,
)

REPO = Path(__file__).resolve().parents[1]
RTABMAP_IMAGES = REPO.parent / "shared" / "data" / "rtabmap_samples" / "images"


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, 2048):  # chunks: float64 temporaries stay small
        x = rng.standard_normal((min(2048, n - s), d)).astype(np.float32)
        out[s : s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def keyframes(n: int) -> list[Keyframe]:
    rng = np.random.default_rng(1)
    pos = rng.uniform(-500, 500, (n, 3))
    return [
        Keyframe(stamp=float(i), position=pos[i], source="bench", thumbnail=b"\xff\xd8" + bytes(3000))
        for i in range(n)
    ]


def best_ms(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def dir_bytes(d: Path, names: tuple[str, ...] | None = None) -> int:
    return sum(p.stat().st_size for p in d.iterdir() if names is None or p.name in names)


def orb_features(max_images: int) -> tuple[list[KeyframeFeatures], str]:
    orb = cv2.ORB_create(1000)
    files = sorted(RTABMAP_IMAGES.glob("*.jpg"), key=lambda p: int(p.stem))[:max_images]
    if files:
        images = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
        where = f"{len(files)} RTAB-Map sample images ({images[0].shape[1]}x{images[0].shape[0]})"
    else:
        sys.path.insert(0, str(REPO / "test"))
        from support import make_scene

        images = [cv2.cvtColor(make_scene(i, 480, 640), cv2.COLOR_BGR2GRAY) for i in range(max_images)]
        where = f"{len(images)} generated scenes (640x480; ../shared not found)"
    rng = np.random.default_rng(0)
    out = []
    for img in images:
        kps, desc = orb.detectAndCompute(img, None)
        h, w = img.shape
        pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
        desc = desc if desc is not None else np.zeros((0, 32), np.uint8)
        depth = rng.uniform(0.5, 8.0, len(pts)).astype(np.float32)
        depth[rng.random(len(pts)) < 0.2] = np.nan  # holes, as in real depth images
        cam = CameraIntrinsics(525.0, 525.0, w / 2 - 0.5, h / 2 - 0.5, w, h, "plumb_bob", (0.0,) * 5)
        out.append(KeyframeFeatures.create("orb", pts, desc, (w, h), depths=depth, camera=cam))
    return out, where


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="keyframes")
    ap.add_argument("--dim", type=int, default=3584, help="descriptor dimension")
    ap.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivfpq"])
    ap.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads")
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_mapdb_snapshot_"))
    try:
        x = unit_rows(args.n, args.dim, 0)
        kfs = keyframes(args.n)
        print(
            f"## snapshot and save, N={args.n}, D={args.dim} float32 ({x.nbytes / 2**20:.0f} MiB of descriptors)\n"
        )
        print("| index | build s | snapshot ms | save_snapshot s | map MiB |")
        print("|---|---|---|---|---|")
        for kind in args.kinds:
            t0 = time.perf_counter()
            db = MapDatabase.create(args.dim, "bench", IndexConfig(kind=kind))
            db.add(kfs, x)
            build = time.perf_counter() - t0
            snap_ms = best_ms(db.snapshot)
            snap = db.snapshot()
            t0 = time.perf_counter()
            save_snapshot(snap, tmp / kind)
            save_s = time.perf_counter() - t0
            print(
                f"| {kind} | {build:.1f} | {snap_ms:.2f} | {save_s:.2f} | {dir_bytes(tmp / kind) / 2**20:.0f} |"
            )
            del db, snap
            shutil.rmtree(tmp / kind)

        feats, where = orb_features(84)
        counts = np.array([len(f) for f in feats])
        db = MapDatabase.create(64, "bench")
        db.add(keyframes(len(feats)), unit_rows(len(feats), 64, 2), feats)
        db.save(tmp / "orb")
        names = (
            "features_index.npy",
            "feature_keypoints.npy",
            "feature_descriptors.npy",
            "feature_depths.npy",
        )
        fbytes = dir_bytes(tmp / "orb", names)
        print(f"\n## ORB features (cv2.ORB_create(1000)) on {where}\n")
        print(
            "| features per image min / mean / max | in-memory bytes per keyframe mean / max | on-disk feature files per keyframe |"
        )
        print("|---|---|---|")
        nb = np.array([f.nbytes for f in feats])
        print(
            f"| {counts.min()} / {counts.mean():.0f} / {counts.max()} | {nb.mean() / 1e3:.1f} KB / {nb.max() / 1e3:.1f} KB "
            f"| {fbytes / len(feats) / 1e3:.1f} KB (4 .npy headers + 72 B index row included) |"
        )

        # load time with features on every keyframe: real ORB feature sets, cycled
        full = [f for f in feats if len(f) >= 900] or feats
        per_kf = [full[i % len(full)] for i in range(args.n)]
        db = MapDatabase.create(args.dim, "bench")
        db.add(kfs, x, per_kf)
        db.save(tmp / "big")
        fb = dir_bytes(tmp / "big", names)
        print(
            f"\n## load, N={args.n} keyframes x D={args.dim}, every keyframe with ~{np.mean([len(f) for f in per_kf]):.0f} ORB features + depth\n"
        )
        print(
            "| map MiB | feature files MiB | storage.load s | MapDatabase.load s | features of all keyframes (db.features) ms |"
        )
        print("|---|---|---|---|---|")
        t0 = time.perf_counter()
        load_snapshot(tmp / "big")
        t_snap = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = MapDatabase.load(tmp / "big")
        t_db = time.perf_counter() - t0
        ids = back.ids.tolist()
        t0 = time.perf_counter()
        for i in ids:
            back.features(i)
        t_feat = 1e3 * (time.perf_counter() - t0)
        print(
            f"| {dir_bytes(tmp / 'big') / 2**20:.0f} | {fb / 2**20:.0f} | {t_snap:.2f} | {t_db:.2f} | {t_feat:.1f} |"
        )
        del back
        shutil.rmtree(tmp / "big")
        db = MapDatabase.create(args.dim, "bench")
        db.add(kfs, x)
        db.save(tmp / "nofeat")
        t0 = time.perf_counter()
        MapDatabase.load(tmp / "nofeat")
        print(
            f"| same map without features: {dir_bytes(tmp / 'nofeat') / 2**20:.0f} | 0 | | {time.perf_counter() - t0:.2f} | |"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
