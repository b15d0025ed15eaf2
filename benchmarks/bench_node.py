"""End-to-end benchmark of the netvlad_localizer node (prints a Markdown table).

The node runs in its own process (``python -m netvlad_ros.ros.localize_node``) with the
built-in default model and a 10k-keyframe map (a few real keyframes described by the
model, the rest random unit descriptors), raw 480x640 bgr8 images over Fast DDS with
config/fastdds_large_data.xml, on an isolated domain. This process publishes the
images and receives ``~/hypotheses`` and ``/diagnostics``.

Phases:
1. paced: one image at a time (the next after the previous answer): end-to-end latency
   (image stamp -> hypotheses received here) p50/p95 without queueing;
2. 30 Hz: ``--frames`` images at ``--rate`` Hz: sustained processed rate (the highest
   the node reaches; the rest is skipped), skipped frames, latency under load, and the
   node's RSS and CPU at start / middle / end (``/proc``).

Usage: ``python benchmarks/bench_node.py [--frames 10000] [--rate 30] [--max-seconds 600]``.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))


def build_map(path: Path, n: int, h: int, w: int) -> tuple[list[np.ndarray], str]:
    """A map of ``n`` keyframes: 20 real scenes (ids 0..19) + random unit descriptors."""
    from netvlad_ros.mapdb import Keyframe, MapDatabase
    from netvlad_ros.model import DescriptorExtractor
    from netvlad_ros.recognition import FeatureExtractor

    from support import make_scene

    ex = DescriptorExtractor(None, device="cpu")
    scenes = [make_scene(s, h, w) for s in range(20)]
    real = ex(scenes)
    rng = np.random.default_rng(0)
    filler = rng.standard_normal((n - len(scenes), ex.dim)).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    desc = np.concatenate([real, filler])
    db = MapDatabase.create(ex.dim, ex.fingerprint)
    kfs = [Keyframe(stamp=float(i), position=(float(i), 0.0, 0.0)) for i in range(n)]
    # the real keyframes carry local features as build-map stores them, so the node verifies
    # its answers as it does by default (the filler has none: "unverifiable", never accepted)
    fx = FeatureExtractor()
    db.add(kfs, desc, features=[fx.extract(img) for img in scenes] + [None] * (n - len(scenes)))
    db.save(path)
    return scenes, f"{ex.card.backbone} {ex.dim}-D"


def proc_stats(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds user+system) of a process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10000, help="images in the 30 Hz phase")
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--max-seconds", type=float, default=600.0, help="cap on the 30 Hz phase")
    ap.add_argument("--map-size", type=int, default=10000)
    ap.add_argument("--paced", type=int, default=30, help="images in the paced latency phase")
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="extra node parameter (repeatable)",
    )
    args = ap.parse_args()
    h, w = 480, 640

    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    env = {
        "ROS_DOMAIN_ID": str(random.SystemRandom().randint(1, 101)),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOG_DIR": str(tmp / "log"),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "FASTDDS_DEFAULT_PROFILES_FILE": str(REPO / "config" / "fastdds_large_data.xml"),
    }
    os.environ.update(env)
    t0 = time.monotonic()
    scenes, model = build_map(tmp / "map", args.map_size, h, w)
    print(f"map of {args.map_size} keyframes built in {time.monotonic() - t0:.0f} s", file=sys.stderr)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image, PointCloud2

    from netvlad_ros.ros.conversions import bgr_to_image_msg, sec_to_stamp, stamp_to_sec
    from netvlad_ros.ros.qos import qos_from_name
    from netvlad_ros.ros.tables import HYPOTHESIS_DTYPE, pointcloud2_to_array

    child_env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    err = open(tmp / "node.err", "wb")  # noqa: SIM115 - kept open for the child's lifetime
    node_proc = subprocess.Popen(
        [sys.executable, "-m", "netvlad_ros.ros.localize_node", "--ros-args", "-p", f"map_path:={tmp / 'map'}",
         "-p", "device:=cpu", "-p", "diagnostics_period_s:=1.0",
         *[a for p in args.param for a in ("-p", p)]],
        env=child_env, stdout=err, stderr=err, start_new_session=True,
    )  # fmt: skip
    rclpy.init()
    node = rclpy.create_node("bench_node_client")
    pub = node.create_publisher(Image, "image", qos_from_name("sensor_data", 5))
    got: dict[float, tuple[float, int]] = {}  # image stamp -> (receive wall time, rank-0 id)
    diags: list[dict[str, str]] = []

    def on_hyp(msg: PointCloud2) -> None:
        rows = pointcloud2_to_array(msg, HYPOTHESIS_DTYPE)
        got[round(stamp_to_sec(msg.header.stamp), 6)] = (
            time.time(),
            int(rows[0]["keyframe_id"]) if len(rows) else -1,
        )

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name.startswith("/netvlad_localizer:"):
                diags.append({kv.key: kv.value for kv in st.values})

    node.create_subscription(
        PointCloud2, "/netvlad_localizer/hypotheses", on_hyp, qos_from_name("reliable", 100)
    )
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, qos_from_name("reliable"))

    def spin(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=min(0.01, max(end - time.monotonic(), 0)))

    deadline = time.monotonic() + 300
    while not (diags and pub.get_subscription_count()) and time.monotonic() < deadline:
        if node_proc.poll() is not None:
            print((tmp / "node.err").read_text()[-3000:], file=sys.stderr)
            return 1
        spin(0.2)
    msgs = [bgr_to_image_msg(s, "bgr8") for s in scenes]

    def send(k: int) -> float:
        stamp = round(time.time(), 6)
        m = msgs[k % len(msgs)]
        m.header.stamp = sec_to_stamp(stamp)
        pub.publish(m)
        return stamp

    # ---- phase 1: paced
    lat1, correct = [], 0
    for k in range(args.paced):
        s = send(k)
        end = time.monotonic() + 30
        while s not in got and time.monotonic() < end:
            spin(0.002)
        if s in got:
            lat1.append(got[s][0] - s)
            correct += got[s][1] == k % len(msgs)
    rss0, cpu0 = proc_stats(node_proc.pid)
    d0 = diags[-1]

    # ---- phase 2: --rate Hz
    period = 1.0 / args.rate
    sent: list[float] = []
    samples = [(0, time.monotonic(), rss0, cpu0)]
    start = time.monotonic()
    k = 0
    while k < args.frames and time.monotonic() - start < args.max_seconds:
        target = start + k * period
        spin(max(target - time.monotonic(), 0))
        sent.append(send(k))
        k += 1
        half = k == max(args.frames // 2, 1) or time.monotonic() - start >= args.max_seconds / 2
        if half and len(samples) == 1:
            samples.append((k, time.monotonic(), *proc_stats(node_proc.pid)))
    spin(3.0)
    samples.append((k, time.monotonic(), *proc_stats(node_proc.pid)))
    elapsed = time.monotonic() - start
    d1 = diags[-1]
    lat2 = [got[s][0] - s for s in sent if s in got]
    received = int(d1["frames_received"]) - int(d0["frames_received"])
    processed = int(d1["frames_processed"]) - int(d0["frames_processed"])
    skipped = int(d1["frames_skipped"]) - int(d0["frames_skipped"])

    node_proc.send_signal(2)
    try:
        node_proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        node_proc.kill()
    node.destroy_node()
    rclpy.try_shutdown()

    def pct(x: list[float], q: float) -> str:
        return f"{np.percentile(np.array(x) * 1000, q):.0f} ms" if x else "n/a"

    print(f"\nnetvlad_localizer, {model}, {args.map_size}-keyframe map, raw {w}x{h} bgr8, CPU\n")
    print("| measure | value |\n|---|---|")
    print(
        f"| paced latency (stamp -> hypotheses received) p50 / p95 | {pct(lat1, 50)} / {pct(lat1, 95)} "
        f"({len(lat1)} images, {correct} rank-0 correct) |"
    )
    print(
        f"| highest sustained rate (processed at {args.rate:.0f} Hz input) | {processed / elapsed:.2f} Hz |"
    )
    print(
        f"| frames at {args.rate:.0f} Hz: sent / received by node / processed / skipped | "
        f"{len(sent)} / {received} / {processed} / {skipped} ({100 * skipped / max(received, 1):.1f} % skipped) |"
    )
    print(
        f"| latency under {args.rate:.0f} Hz input p50 / p95 (answered frames) | {pct(lat2, 50)} / {pct(lat2, 95)} |"
    )
    print(
        f"| node latency from diagnostics (receive -> published) p50 / p95 | "
        f"{float(d1['latency_p50_ms']):.0f} / {float(d1['latency_p95_ms']):.0f} ms |"
    )
    stages = {k.removeprefix("time_ms."): float(v) for k, v in d1.items() if k.startswith("time_ms.")}
    if stages:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        print(f"| where the time goes (node, p50 ms per stage) | {parts} |")
    print(f"| runtime | {d1.get('runtime', '?')} on {d1.get('device', '?')} |")
    for label, (n, t, rss, cpu) in zip(("start", "middle", "end"), samples, strict=False):
        cpu_pct = ""
        if label != "start":
            _, pt, _, pc = samples[0]
            cpu_pct = f", {100 * (cpu - pc) / (t - pt):.0f} % CPU since start"
        print(f"| node RSS / CPU time at {label} ({n} frames sent) | {rss:.0f} MiB / {cpu:.0f} s{cpu_pct} |")
    print(f"\n{args.rate:.0f} Hz phase: {len(sent)} frames in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
