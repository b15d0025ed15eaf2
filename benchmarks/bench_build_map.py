"""Map-building throughput from bags: raw (bgr8 Image) and compressed (JPEG) images, MCAP and
sqlite3 storage, and the share of time spent reading, decoding and in the network.

Frames come from the synthetic world (deterministic), written with the project's bag
writer; every frame is made a keyframe (all keyframe thresholds off) so every image is
decoded and described. A second pass reads and decodes without the network, to give
the I/O-only rate, and each map is calibrated again on one thread (the default uses one per
core) to show what the threads save and that the result is the same. Prints a Markdown table.

    python benchmarks/bench_build_map.py [--frames 40] [--model PATH] [--device auto]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from netvlad_ros.mapdb import MapDatabase
from netvlad_ros.model import DescriptorExtractor
from netvlad_ros.offline.build_map import FrameSource, build_map, calibrate_map, open_frames
from netvlad_ros.recognition.calibration import CalibrationParams
from netvlad_ros.sensors.poses import KeyframeParams
from netvlad_ros.synthetic import SyntheticWorld, WorldConfig, write_bag


def io_rate(src: FrameSource) -> float:
    """Images per second for reading + decoding only."""
    t0 = time.perf_counter()
    n = 0
    with open_frames(src) as stream:
        for frame in stream.frames:
            frame.load()
            n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--model", type=Path, default=None, help="default: the built-in model")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 1 on CPU, 16 on CUDA")
    args = ap.parse_args()

    world = SyntheticWorld(WorldConfig(seed=0, width=args.width, height=args.height))
    frames = world.traversal("mapping", spacing_m=2.0, max_frames=args.frames)
    ex = DescriptorExtractor(args.model, device=args.device, batch_size=args.batch_size)
    ex([frames[0].image] * min(ex.batch_size, len(frames)))  # warm-up (CUDA context, cudnn autotune)
    tmp = Path(tempfile.mkdtemp(prefix="bench_build_map_"))
    rows = []
    try:
        for storage in ("mcap", "sqlite3"):
            for compressed in (False, True):
                bag = write_bag(tmp / f"{storage}_{int(compressed)}", frames, storage, compressed=compressed,
                                gps_topic=None)  # fmt: skip
                topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
                src = FrameSource(bag=bag, image_topic=topic, pose_topic="/odom")
                rate_io = io_rate(src)
                s = build_map(tmp / f"map_{storage}_{int(compressed)}", src, keyframes=KeyframeParams(0.0, 0.0, 0.0),
                              extractor=ex, progress=False)  # fmt: skip
                feat_s, cal_s = s["features"]["seconds"], s["calibration"]["seconds"]
                # the same calibration on one thread (the default uses one per core), side by side
                db = MapDatabase.load(tmp / f"map_{storage}_{int(compressed)}")
                t0 = time.perf_counter()
                one = calibrate_map(db, CalibrationParams(workers=1))
                same = one == {k: v for k, v in s["calibration"].items() if k != "seconds"}
                cal1_s = time.perf_counter() - t0
                busy = s["read_seconds"] + s["decode_seconds"] + s["network_seconds"] + feat_s
                rows.append(
                    (
                        storage,
                        "JPEG" if compressed else "bgr8",
                        s["images_read"],
                        s["images_per_second"],
                        rate_io,
                        100 * s["read_seconds"] / busy,
                        100 * s["decode_seconds"] / busy,
                        100 * s["network_seconds"] / busy,
                        100 * feat_s / busy,
                        cal_s,
                        s["images_read"] / max(s["seconds"] - cal_s, 1e-9),
                        cal1_s,
                        "yes" if same else "NO",
                    )
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    gpu = (
        torch.cuda.get_device_name(0)
        if torch.cuda.is_available() and str(ex.device).startswith("cuda")
        else ""
    )
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"device {ex.device} {gpu}; model {ex.card.name} ({ex.dim}-D); {args.width}x{args.height} images, "
          f"batch {ex.batch_size}")  # fmt: skip
    print()
    print(
        "| storage | image | images | build img/s | img/s without calibration | read+decode only img/s "
        "| read % | decode+thumb % | network % | local features % | calibration s | same on 1 thread: s | equal |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[10]:.1f} | {r[4]:.0f} | {r[5]:.1f} | {r[6]:.1f} | "
            f"{r[7]:.1f} | {r[8]:.1f} | {r[9]:.1f} | {r[11]:.1f} | {r[12]} |"
        )


if __name__ == "__main__":
    main()
