"""The demo's SLAM phase, repeated: wrong loop closures and trajectory errors at several replay speeds.

Each run renders the demo's drive round a block (world seed varies per run), replays it over
DDS into ``localize_node`` (slam mode, default parameters) and ``pose_graph_node`` at the
given speed (1x, 2x, 6x real time: the faster, the more frames the latest-frame policy skips,
so the keyframes and candidates differ), optionally with the CPU loaded by busy processes
(``--load N``: N processes spinning at normal priority, as another program on the robot
would). Prints one row per run and a summary: loop closures, how many were wrong (matched
keyframe more than 10 m from the query's true position), the largest metric relative-pose
error, and the ATE of the odometry and of the optimised trajectory.

Usage: ``python benchmarks/bench_slam_demo.py [--runs 10] [--speeds 1 2 6] [--load 0 2]``
(about 1.5 / 1 / 0.5 minutes per run at 1x / 2x / 6x on a 2-core machine).
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _spin() -> None:  # pragma: no cover - a CPU hog for the loaded runs
    while True:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per speed and load")
    ap.add_argument("--speeds", type=float, nargs="+", default=[1.0, 2.0, 6.0])
    ap.add_argument("--load", type=int, nargs="+", default=[0, 2], help="busy processes during the runs")
    ap.add_argument("--first-seed", type=int, default=7)
    args = ap.parse_args()

    from netvlad_ros.ros.demo import run_demo

    print(f"machine: {platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} CPUs")
    print(
        "\n| speed | load | seed | closures | wrong | metric | max pose err (m / deg) | ATE odom -> opt (m) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    totals = {"runs": 0, "closures": 0, "wrong": 0}
    worst_ratio = 0.0
    for load in args.load:
        hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(load)]
        for h in hogs:
            h.start()
        try:
            for speed in args.speeds:
                for k in range(args.runs):
                    seed = args.first_seed + k
                    with tempfile.TemporaryDirectory() as tmp:
                        r = run_demo(Path(tmp) / "demo", seed=seed, device="cpu", localization=False,
                                     slam_speed=speed)  # fmt: skip
                    lc, sl = r["loop_closures"], r["slam"]
                    wrong = lc["checkable"] - lc["right"]
                    totals["runs"] += 1
                    totals["closures"] += lc["total"]
                    totals["wrong"] += wrong
                    if sl["ate_odometry_m"] > 0:
                        worst_ratio = max(worst_ratio, sl["ate_optimized_m"] / sl["ate_odometry_m"])
                    print(
                        f"| {speed:g}x | {load} | {seed} | {lc['total']} | {wrong} | {lc['metric']} | "
                        f"{lc['relative_pose_error_m_max']:.3f} / {lc['relative_pose_error_deg_max']:.2f} | "
                        f"{sl['ate_odometry_m']:.2f} -> {sl['ate_optimized_m']:.2f} |",
                        flush=True,
                    )
        finally:
            for h in hogs:
                h.terminate()
                h.join()
            time.sleep(1.0)
    print(
        f"\n{totals['runs']} runs: {totals['closures']} loop closures, {totals['wrong']} wrong; "
        f"worst optimised/odometry ATE ratio {worst_ratio:.2f}"
    )
    return 0 if totals["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
