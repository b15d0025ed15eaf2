"""Benchmark the pose-graph back end: robust kernels against a wrong loop closure, and the
cost of incremental iSAM2 updates at 1k and 10k keyframes.

Part ``kernels``: the simulated loop of the tests (netvlad_ros.posegraph.simulation: 200
keyframes, heading-biased odometry, 21 closures), per loop-closure kernel and scenario
(heading bias, stated odometry sigma as a multiple of the defaults), 3 seeds each:
the optimised ATE as a fraction of the odometry ATE (clean run; target <= 0.25), and the
worst ATE with one wrong closure (4 placements) relative to the clean run (target <= 1.2).
Every ATE is aligned (SE(3), no scale). A batch GNC (GTSAM's GncLMOptimizer, TLS loss) on
the same factors is the non-incremental reference (``--gnc``).

Part ``cost``: a drive of laps round a 100 m square (1 m keyframes, a loop closure on every
5th revisited keyframe) is built to N keyframes (in batches of ``--build-batch``), then
``--samples`` more keyframes are added one call at a time: the time of ``add_keyframe``
(one odometry factor, one iSAM2 step), of ``add_loop_closure`` on revisits (one closure to
a keyframe one or more laps back, ``closure_iterations`` steps), and of ``trajectory()``
(the whole optimised path, as a node publishes it).

    .venv/bin/python benchmarks/bench_posegraph.py                    # both parts, ~4 min
    .venv/bin/python benchmarks/bench_posegraph.py --part kernels --gnc
    .venv/bin/python benchmarks/bench_posegraph.py --part cost --sizes 1000 10000
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from dataclasses import replace

import gtsam
import numpy as np

from netvlad_ros.posegraph import PoseGraph, PoseGraphParams, ate_rmse
from netvlad_ros.posegraph.simulation import closures_from_truth, drifting_odometry, square_loop

WRONG = ((40, 150), (80, 165), (80, 190), (120, 199))
CONFIDENT = np.diag([0.05**2] * 3 + [math.radians(0.5) ** 2] * 3)
KERNELS = (
    ("none", 1.0),
    ("huber", 1.345),
    ("cauchy", 1.0),
    ("cauchy", 2.0),
    ("cauchy", 2.5),
    ("cauchy", 3.0),
    ("geman_mcclure", 20.0),
    ("dcs", 100.0),
)
# (heading bias deg/m, stated odometry sigma as a multiple of the defaults)
SCENARIOS = ((0.1, 1.0), (0.1, 3.0), (0.3, 0.3), (1.0, 1.0))


def scaled_odometry(params: PoseGraphParams, scale: float) -> PoseGraphParams:
    return replace(
        params,
        odom_translation_sigma_per_m=params.odom_translation_sigma_per_m * scale,
        odom_rotation_sigma_per_m=params.odom_rotation_sigma_per_m * scale,
        odom_rotation_sigma_per_rad=params.odom_rotation_sigma_per_rad * scale,
    )


def loop_run(
    params: PoseGraphParams, seed: int, bias_deg: float, wrong: tuple[int, int] | None
) -> tuple[float, float, PoseGraph, np.ndarray]:
    """One incremental run of the test loop; returns (odometry ATE, optimised ATE, graph, odometry)."""
    truth = square_loop()
    odom = drifting_odometry(truth, heading_bias_rad_per_m=math.radians(bias_deg), seed=seed)
    closures = {c.query_key: c for c in closures_from_truth(truth, seed=seed)}
    graph = PoseGraph(params)
    for k in range(len(truth)):
        graph.add_keyframe(k, float(k), odom[k])
        if k in closures:
            c = closures[k]
            graph.add_loop_closure(c.match_key, c.query_key, c.T_match_query, c.covariance, True)
        if wrong is not None and k == wrong[1]:
            graph.add_loop_closure(wrong[0], wrong[1], np.eye(4), CONFIDENT, True)
    poses = graph.optimized_poses()
    est = np.array([poses[k] for k in range(len(truth))])
    return ate_rmse(odom, truth, align=True), ate_rmse(est, truth, align=True), graph, odom


def gnc_ate(params: PoseGraphParams, seed: int, bias_deg: float, wrong: tuple[int, int] | None) -> float:
    """Batch GNC (TLS) over the Gaussian factors of a run, from dead-reckoned odometry."""
    _, _, graph, odom = loop_run(replace(params, loop_kernel="none"), seed, bias_deg, wrong)
    factors, _ = graph.factor_graph()
    inliers = [
        i for i in range(factors.size()) if len(factors.at(i).keys()) == 1 or _is_odometry(factors.at(i))
    ]
    initial = gtsam.Values()
    for k in range(len(odom)):
        initial.insert(k, gtsam.Pose3(odom[k]))
    gnc_params = gtsam.GncLMParams()
    gnc_params.setLossType(gtsam.GncLossType.TLS)
    gnc_params.setKnownInliers(inliers)
    result = gtsam.GncLMOptimizer(factors, initial, gnc_params).optimize()
    est = np.array([result.atPose3(k).matrix() for k in range(len(odom))])
    return ate_rmse(est, square_loop(), align=True)


def _is_odometry(factor: gtsam.NonlinearFactor) -> bool:
    a, b = factor.keys()
    return abs(int(a) - int(b)) == 1


def kernel_table(seeds: int, gnc: bool) -> None:
    print(
        f"\n## Loop-closure kernels ({seeds} seeds; clean = optimised/odometry ATE, wrong = worst wrong/clean)"
    )
    header = (
        "| kernel | param | " + " | ".join(f"bias {b} deg/m, odo sigma x{s}" for b, s in SCENARIOS) + " |"
    )
    print(header)
    print("|" + "---|" * (2 + len(SCENARIOS)))
    base = PoseGraphParams()
    for kernel, c in KERNELS:
        cells = []
        for bias, scale in SCENARIOS:
            params = scaled_odometry(replace(base, loop_kernel=kernel, loop_kernel_param=c), scale)
            clean_ratio, wrong_ratio = 0.0, 0.0
            for seed in range(seeds):
                ate_odom, ate_clean, _, _ = loop_run(params, seed, bias, None)
                clean_ratio = max(clean_ratio, ate_clean / ate_odom)
                for w in WRONG:
                    wrong_ratio = max(wrong_ratio, loop_run(params, seed, bias, w)[1] / ate_clean)
            cells.append(f"clean {clean_ratio:.3f}, wrong {wrong_ratio:.2f}")
        print(f"| {kernel} | {c:g} | " + " | ".join(cells) + " |", flush=True)
    if gnc:
        gnc_row(seeds)


def gnc_row(seeds: int) -> None:
    base = PoseGraphParams()
    cells = []
    t0 = time.perf_counter()
    runs = 0
    for bias, scale in SCENARIOS:
        params = scaled_odometry(base, scale)
        clean_ratio, wrong_ratio = 0.0, 0.0
        for seed in range(seeds):
            ate_odom = loop_run(params, seed, bias, None)[0]
            ate_clean = gnc_ate(params, seed, bias, None)
            clean_ratio = max(clean_ratio, ate_clean / ate_odom)
            for w in WRONG:
                wrong_ratio = max(wrong_ratio, gnc_ate(params, seed, bias, w) / ate_clean)
            runs += 1 + len(WRONG)
        cells.append(f"clean {clean_ratio:.3f}, wrong {wrong_ratio:.2f}")
    print("| GNC TLS (batch) | - | " + " | ".join(cells) + " |")
    print(
        f"(GNC: {1000 * (time.perf_counter() - t0) / runs:.0f} ms per batch solve incl. building, 200 keyframes)"
    )


def percentiles(samples: list[float]) -> str:
    ms = 1000.0 * np.asarray(samples)
    return f"{np.median(ms):.2f} | {np.percentile(ms, 95):.2f}"


def cost_table(sizes: list[int], samples: int, build_batch: int) -> None:
    print(f"\n## iSAM2 update cost ({samples} calls after reaching N keyframes; ms)")
    print(
        "| keyframes N | closures in graph | add_keyframe median | p95 | add_loop_closure median | p95 "
        "| trajectory() median | p95 | build s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    side = 100.0
    for n in sizes:
        total = n + samples
        truth = square_loop(side_m=side, overlap_m=total - 4 * side)
        odom = drifting_odometry(truth, seed=0)
        closures = {c.query_key: c for c in closures_from_truth(truth, min_gap=200, every=5, seed=0)}
        graph = PoseGraph()
        t_build = time.perf_counter()
        kf_t: list[float] = []
        lc_t: list[float] = []
        traj_t: list[float] = []
        for k in range(total):
            measuring = k >= n
            batched = not measuring and (k + 1) % build_batch != 0 and k != n - 1
            t0 = time.perf_counter()
            graph.add_keyframe(k, float(k), odom[k], update=not batched)
            if measuring:
                kf_t.append(time.perf_counter() - t0)
            if k in closures:
                c = closures[k]
                t0 = time.perf_counter()
                graph.add_loop_closure(
                    c.match_key, c.query_key, c.T_match_query, c.covariance, True, update=not batched
                )
                if measuring:
                    lc_t.append(time.perf_counter() - t0)
            if measuring and k % 10 == 0:
                t0 = time.perf_counter()
                graph.trajectory()
                traj_t.append(time.perf_counter() - t0)
            if k == n - 1:
                t_build = time.perf_counter() - t_build
        print(
            f"| {n} | {graph.counters['loop_closures']} | {percentiles(kf_t)} | {percentiles(lc_t)} "
            f"| {percentiles(traj_t)} | {t_build:.1f} |",
            flush=True,
        )


def load_average() -> str:
    """1/5/15-minute load average: other processes' share of the CPUs during the run."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("kernels", "cost", "all"), default="all")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--samples", type=int, default=200, help="timed keyframes after reaching N")
    ap.add_argument("--build-batch", type=int, default=100, help="keyframes per iSAM2 update while building")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--gnc", action="store_true", help="add the batch GNC reference row (about 2.5 min more)")
    args = ap.parse_args()
    print(f"# bench_posegraph: {platform.machine()}, {os.cpu_count()} CPUs, load average {load_average()}")
    t0 = time.perf_counter()
    if args.part in ("kernels", "all"):
        kernel_table(args.seeds, args.gnc)
    if args.part in ("cost", "all"):
        cost_table(args.sizes, args.samples, args.build_batch)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average {load_average()}")


if __name__ == "__main__":
    main()
