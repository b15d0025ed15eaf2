"""Benchmark MapDatabase search: exact (flat) vs IVF-PQ vs HNSW.

Prints one table row per (size, dim, index): build time, single-query latency p50/p99,
CPU time per query (all threads of this process: more than the latency when the search
runs on several threads), resident memory added by the map, serialised index size, and recall@1 against exact
search. Data: trajectory-clustered synthetic descriptors with revisit queries
(netvlad_ros.synthetic.descriptors), generated in chunks.

    .venv/bin/python benchmarks/bench_mapdb.py --sizes 10000 100000 --dims 256 4096

Cases whose float32 descriptors alone exceed --max-gb are skipped with a printed reason
(the database keeps a float32 copy of every descriptor for re-ranking and saving, and
the flat/HNSW indexes hold another). HNSW builds above --hnsw-max-work (N * D) are
skipped too, because building the graph is the slowest step on small machines.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time

import faiss
import numpy as np

from netvlad_ros.mapdb import IndexConfig, Keyframe, MapDatabase
from netvlad_ros.synthetic.descriptors import clustered_descriptors, revisit_queries


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def exact_top1(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    return faiss.knn(q, x, 1, metric=faiss.METRIC_INNER_PRODUCT)[1][:, 0]


def index_mb(db: MapDatabase) -> float:
    idx = db._index
    if idx is None:
        return float("nan")
    if db.index_config.kind == "ivfpq":
        return len(faiss.serialize_index(idx)) / 2**20
    # flat / HNSW: vectors + ids (+ graph links for HNSW: ~2*M int32 per vector on level 0)
    n, d = idx.ntotal, idx.d
    extra = 2 * db.index_config.hnsw_m * 4 * 1.1 if db.index_config.kind == "hnsw" else 0
    return n * (d * 4 + 8 + extra) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dims", type=int, nargs="+", default=[256, 4096])
    ap.add_argument("--kinds", nargs="+", default=["flat", "ivfpq", "hnsw"])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="faiss OpenMP threads of this process (a single query uses one: MapDatabase.search)",
    )
    ap.add_argument("--max-gb", type=float, default=4.0, help="skip cases whose descriptors exceed this")
    ap.add_argument("--hnsw-max-work", type=float, default=1.2e8, help="skip HNSW builds with N*D above")
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, faiss {faiss.__version__}, "
          f"threads {args.threads}, queries {args.queries}")  # fmt: skip
    hdr = f"| {'N':>9} | {'D':>5} | {'index':<6} | {'build s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'CPU ms':>6} | "
    hdr += f"{'RSS +MiB':>9} | {'index MiB':>9} | {'recall@1':>8} |"
    print(hdr)
    print("|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|")
    for d in args.dims:
        for n in args.sizes:
            gb = n * d * 4 / 2**30
            if gb > args.max_gb:
                print(f"| {n:>9} | {d:>5} | all    | skipped: descriptors alone are {gb:.1f} GiB > --max-gb "
                      f"{args.max_gb} (the DB keeps a float32 copy plus the index) |")  # fmt: skip
                continue
            x = clustered_descriptors(n, d, seed=0)
            q = revisit_queries(x, args.queries, seed=1)
            gt = exact_top1(q, x)
            kfs = [Keyframe(stamp=float(i)) for i in range(n)]
            for kind in args.kinds:
                if kind == "hnsw" and n * d > args.hnsw_max_work:
                    print(f"| {n:>9} | {d:>5} | hnsw   | skipped: N*D = {n * d:.1e} > --hnsw-max-work "
                          f"{args.hnsw_max_work:.1e} (graph build too slow here) |")  # fmt: skip
                    continue
                gc.collect()
                r0 = rss_mb()
                t0 = time.perf_counter()
                db = MapDatabase.create(d, "bench", IndexConfig(kind=kind))
                ids = db.add(kfs, x)
                build = time.perf_counter() - t0
                mem = rss_mb() - r0
                lat = np.empty(len(q))
                top = np.empty(len(q), np.int64)
                db.search(q[0], 1)  # warm-up
                cpu0 = time.process_time()
                for i, qq in enumerate(q):
                    t = time.perf_counter()
                    top[i] = db.search(qq, 1).ids[0, 0]
                    lat[i] = (time.perf_counter() - t) * 1e3
                cpu = (time.process_time() - cpu0) * 1e3 / len(q)
                recall = float(np.mean(top == ids[gt]))
                p50, p99 = np.percentile(lat, [50, 99])
                print(f"| {n:>9} | {d:>5} | {kind:<6} | {build:>8.1f} | {p50:>7.2f} | {p99:>7.2f} | {cpu:>6.2f} | "
                      f"{mem:>9.0f} | {index_mb(db):>9.1f} | {recall:>8.3f} |", flush=True)  # fmt: skip
                del db
            del x, kfs


if __name__ == "__main__":
    main()
