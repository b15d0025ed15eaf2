"""``netvlad-ros demo``: the whole product in a few minutes, no GPU, no network.

1. Render a synthetic street world (mapping traversal + a second traversal on
   another "day": sun, exposure, noise, occluders, lateral offset) and write
   both as ROS 2 MCAP bags (JPEG images, odometry, GPS).
2. Build a map from the mapping bag (offline.build_map, default model).
3. Start the real node (``localize_node``) in its own process, on an isolated
   DDS domain, with that map.
4. Replay the second bag's images into it over DDS at real-time rate, and
   collect what it publishes (hypotheses, accepted poses, diagnostics).
5. Print Recall@1/5 (within 25 m), accepted places, latency, skipped frames,
   and write a PNG plot and a JSON of the results.

This module is glue (rclpy lives here); the data, map building and scoring
are in ``offline/``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEMO_IMAGE_TOPIC = "/camera/image_raw/compressed"
NODE_FQN = "/netvlad_localizer"
DEMO_MIN_SCORE = 0.3


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _isolated_ros_env(log_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_LOG_DIR"] = str(log_dir)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    return env


def _prepare_output(output: Path) -> None:
    """Refuse to clobber a folder that is not a previous demo's output."""
    if output.exists() and any(output.iterdir()) and not (output / "demo_results.json").exists():
        marker = output / ".netvlad_demo"
        if not marker.exists():
            raise ValueError(f"{output} exists and is not a netvlad-ros demo folder; choose another --output")
    for sub in ("bags", "map", "ros_log"):
        shutil.rmtree(output / sub, ignore_errors=True)
    output.mkdir(parents=True, exist_ok=True)
    (output / ".netvlad_demo").touch()


def _read_bag(bag: Path, topics: tuple[str, ...]) -> list[tuple[str, float, object]]:
    """(topic, header stamp seconds, deserialised message) on ``topics``, in bag order."""
    from rosbags.highlevel import AnyReader

    out = []
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic in topics]
        for conn, _t, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            out.append((conn.topic, msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, msg))
    return out


def _odometry(m: object, stamp: float):
    """An rclpy Odometry from a rosbags-deserialised one (pose only: all the node reads)."""
    from nav_msgs.msg import Odometry

    from .conversions import sec_to_stamp

    out = Odometry()
    out.header.stamp = sec_to_stamp(stamp)
    out.header.frame_id = m.header.frame_id
    out.child_frame_id = m.child_frame_id
    p, q = m.pose.pose.position, m.pose.pose.orientation
    out.pose.pose.position.x, out.pose.pose.position.y, out.pose.pose.position.z = p.x, p.y, p.z
    o = out.pose.pose.orientation
    o.x, o.y, o.z, o.w = q.x, q.y, q.z, q.w
    return out


class _NodeProcess:
    """``localize_node`` in its own process (own session, so Ctrl-C/kill reach all of it)."""

    def __init__(self, params: dict[str, object], remaps: dict[str, str], env: dict[str, str], log: Path):
        cmd = [sys.executable, "-m", "netvlad_ros.ros.localize_node", "--ros-args"]
        for k, v in params.items():
            cmd += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
        for k, v in remaps.items():
            cmd += ["-r", f"{k}:={v}"]
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - kept open for the child's lifetime
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            self._log.flush()
            tail = self.log_path.read_text()[-2000:]
            raise RuntimeError(f"the node exited with status {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def run_demo(
    output: Path,
    seed: int = 7,
    map_frames: int = 120,
    query_frames: int = 50,
    device: str = "auto",
    rate: float = 1.0,
    slam: bool = True,
    startup_timeout_s: float = 240.0,
) -> dict:
    """Run the demo; returns the scored results (also written to ``output/demo_results.json``)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from nav_msgs.msg import Odometry
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CompressedImage, PointCloud2

    from ..mapdb import MapDatabase
    from ..offline.build_map import FrameSource, build_map, format_summary
    from ..offline.demo_report import QueryOutcome, plot_outcomes, score_loop_closures, score_outcomes
    from ..sensors.poses import KeyframeParams
    from ..synthetic import SyntheticWorld, WorldConfig, write_bag
    from .conversions import sec_to_stamp
    from .qos import qos_from_name
    from .tables import HYPOTHESIS_DTYPE, LOOP_CLOSURE_DTYPE, pointcloud2_to_array

    if rate <= 0:
        raise ValueError(f"--rate must be positive, got {rate}")
    output = Path(output)
    _prepare_output(output)
    t_demo = time.perf_counter()

    _say(f"rendering the synthetic world (seed {seed}): {map_frames} mapping + {query_frames} query frames")
    world = SyntheticWorld(WorldConfig(seed=seed))
    mapping = world.traversal("mapping", spacing_m=3.0, max_frames=map_frames)
    query = world.traversal(
        "query", spacing_m=3.0 * map_frames / max(query_frames, 1), max_frames=query_frames
    )
    bags = output / "bags"
    bags.mkdir()
    kw = {"storage": "mcap", "image_topic": "/camera/image_raw", "compressed": True}
    map_bag = write_bag(bags / "mapping", mapping, **kw)
    query_bag = write_bag(bags / "query", query, **kw)
    loop: list = []
    if slam:
        # A drive once round one block and down its first street again: a loop to close.
        loop = SyntheticWorld(WorldConfig(seed=seed, blocks_x=1, blocks_y=1)).traversal("loop", spacing_m=4.0)
        loop_bag = write_bag(bags / "loop", loop, **kw)
    _say(f"wrote the bags in {bags}")

    _say("building the map from the mapping bag (default model; built once on first use)")
    summary = build_map(
        output / "map",
        FrameSource(bag=map_bag, image_topic=DEMO_IMAGE_TOPIC, pose_topic="/odom"),
        keyframes=KeyframeParams(distance_m=2.0, angle_deg=20.0),
        device=device,
        progress=True,
    )
    print(format_summary(summary))
    db = MapDatabase.load(output / "map")
    map_positions = db.positions(db.ids)

    env = _isolated_ros_env(output / "ros_log")
    remaps = {"image/compressed": DEMO_IMAGE_TOPIC}
    # Scores depend on the environment and the model: the default min_score (0.85) was
    # measured on a same-day indoor walk; across "days" in this world correct top-1 matches
    # score 0.35-0.45 (eval-map's threshold sweep), so the demo sets 0.3 and keeps the
    # default margin (localizer) and geometric verification (loop closure) as the guards.
    # Loop closures: this world repeats its window and facade textures, and wrong candidates
    # reached 25 ORB inliers (the default min_inliers, measured on the indoor walk) while
    # right ones had 80-460; so the demo asks for 50 inliers and 2 consistent keyframes.
    common = {"compressed": True, "device": device}
    loc_params = {**common, "map_path": output / "map", "localizer.min_score": DEMO_MIN_SCORE}
    slam_params = {
        **common,
        "mode": "slam",
        "loop_closure.min_score": DEMO_MIN_SCORE,
        "loop_closure.temporal_consistency": 2,
        "loop_closure.geometry.min_inliers": 50,
        "keyframe.distance_m": 3.0,
    }
    old_env = {
        k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR")
    }
    os.environ.update({k: env[k] for k in old_env})
    context = Context()
    rclpy.init(context=context)
    outcomes: dict[float, QueryOutcome] = {}
    diagnostics: dict[str, dict[str, str]] = {}
    loop_rows: list[tuple] = []
    node_proc: _NodeProcess | None = None
    phase = "localization"
    try:
        node = rclpy.create_node("netvlad_demo_player", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        pub = node.create_publisher(CompressedImage, DEMO_IMAGE_TOPIC, qos_from_name("sensor_data", 5))
        odom_pub = node.create_publisher(Odometry, "/odom", qos_from_name("reliable", 50))
        reliable = qos_from_name("reliable", 100)

        def on_hypotheses(msg: PointCloud2) -> None:
            o = outcomes.get(round(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, 6))
            if o is not None and o.hypotheses is None:
                table = pointcloud2_to_array(msg, HYPOTHESIS_DTYPE)
                o.hypotheses = np.stack([table["x"], table["y"], table["z"]], axis=1).astype(np.float64)
                o.latency_s = time.perf_counter() - o.extras["sent"]

        def on_pose(msg: PoseWithCovarianceStamped) -> None:
            o = outcomes.get(round(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, 6))
            if o is not None:
                p = msg.pose.pose.position
                o.accepted_position = np.array([p.x, p.y, p.z])

        def on_loop_closures(msg: PointCloud2) -> None:
            loop_rows.extend(pointcloud2_to_array(msg, LOOP_CLOSURE_DTYPE).tolist())

        def on_diag(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if "netvlad" in status.name:
                    diagnostics[phase] = {kv.key: kv.value for kv in status.values}

        node.create_subscription(PointCloud2, f"{NODE_FQN}/hypotheses", on_hypotheses, reliable)
        node.create_subscription(PoseWithCovarianceStamped, f"{NODE_FQN}/pose", on_pose, reliable)
        node.create_subscription(PointCloud2, f"{NODE_FQN}/loop_closures", on_loop_closures, reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, reliable)

        def start_node(params: dict, log_name: str, output_topic: str) -> _NodeProcess:
            proc = _NodeProcess(params, remaps, env, output / log_name)
            _say(f"started localize_node ({params.get('mode', 'localization')} mode) in its own process, "
                 f"ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}; waiting for it to come up")  # fmt: skip
            deadline = time.monotonic() + startup_timeout_s
            while pub.get_subscription_count() == 0 or node.count_publishers(output_topic) == 0:
                proc.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the node did not come up within {startup_timeout_s:.0f} s (see {proc.log_path})"
                    )
                executor.spin_once(timeout_sec=0.2)
            executor.spin_once(timeout_sec=1.0)  # let matching settle
            return proc

        def replay(bag: Path, speed: float, with_odom: bool, truth: dict | None) -> int:
            messages = _read_bag(bag, (DEMO_IMAGE_TOPIC, "/odom"))
            t0_wall, t0_bag = time.perf_counter(), messages[0][1]
            for topic, stamp, m in messages:
                due = t0_wall + (stamp - t0_bag) / speed
                while (now := time.perf_counter()) < due:
                    executor.spin_once(timeout_sec=min(0.05, due - now))
                if topic == "/odom":
                    if with_odom:  # a robot's odometry runs ahead of its camera: let it land first
                        odom_pub.publish(_odometry(m, stamp))
                        executor.spin_once(timeout_sec=0.05)
                    continue
                msg = CompressedImage(format=m.format, data=bytes(m.data))
                msg.header.stamp = sec_to_stamp(stamp)
                msg.header.frame_id = "camera"
                if truth is not None:
                    key = round(stamp, 6)
                    outcomes[key] = QueryOutcome(
                        stamp=stamp, true_position=truth[key], extras={"sent": time.perf_counter()}
                    )
                pub.publish(msg)
            end = time.perf_counter() + 5.0
            while time.perf_counter() < end:
                executor.spin_once(timeout_sec=0.1)
            return sum(t == DEMO_IMAGE_TOPIC for t, _, _ in messages)

        node_proc = start_node(loc_params, "node_localization.log", f"{NODE_FQN}/hypotheses")
        _say(f"localization: replaying the second drive's images over DDS at {rate:g}x real time")
        replay(query_bag, rate, with_odom=False, truth={round(f.stamp, 6): f.position for f in query})
        node_proc.stop()

        if slam:
            phase = "slam"
            node_proc = start_node(slam_params, "node_slam.log", f"{NODE_FQN}/loop_closures")
            _say(f"slam: replaying a drive round a block (images + odometry) at {2 * rate:g}x real time")
            replay(loop_bag, 2.0 * rate, with_odom=True, truth=None)
            node_proc.stop()
    finally:
        if node_proc is not None:
            node_proc.stop()
        rclpy.try_shutdown(context=context)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    ordered = [outcomes[k] for k in sorted(outcomes)]
    result = score_outcomes(ordered)
    result["map_keyframes"] = len(map_positions)
    loop_truth = {round(f.stamp, 6): f.position for f in loop}
    result["loop_closures"] = score_loop_closures(loop_rows, loop_truth, {}, radius_m=10.0)
    result["loop_closures"]["drive_keyframes"] = diagnostics.get("slam", {}).get("keyframes_added")
    result["node_diagnostics"] = diagnostics
    result["seconds"] = round(time.perf_counter() - t_demo, 1)
    plot = plot_outcomes(
        output / "demo_plot.png", ordered, map_positions, loop_rows=loop_rows, loop_positions=loop_truth
    )
    result["plot"] = str(plot)
    (output / "demo_results.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    _print_report(result)
    return result


def _print_report(r: dict) -> None:
    d = r["node_diagnostics"]
    loc = d.get("localization", {})
    print()
    print("netvlad_ros demo results")
    print("------------------------")
    print(f"map                 {r['map_keyframes']} keyframes")
    print(f"query images        {r['published']} published over DDS, {r['answered']} answered")
    print(
        f"Recall@1 / @5       {r['recall_at'][1]:.3f} / {r['recall_at'][5]:.3f}  (top-N match within {r['radius_m']:g} m)"
    )
    print(
        f"accepted places     {r['accepted']} ({r['accepted_right']} right: precision "
        f"{r['accepted_precision']:.3f}, recall {r['accepted_recall']:.3f})"
    )
    print(
        f"latency             p50 {r['latency_ms_p50']:.0f} ms, p95 {r['latency_ms_p95']:.0f} ms (publish -> hypotheses received)"
    )
    lc = r["loop_closures"]
    if lc["total"]:
        print(
            f"loop closures       {lc['total']} in the SLAM drive ({lc['drive_keyframes']} keyframes): "
            f"{lc['right']} of {lc['checkable']} within {lc['radius_m']:g} m of the true place, "
            f"{lc['verified']} geometrically verified"
        )
        print(f"                    e.g. {lc['examples']}")
    elif "slam" in d:
        print("loop closures       none accepted in the SLAM drive")
    if loc:
        keys = [
            k
            for k in ("frames_received", "frames_processed", "frames_skipped", "device", "latency_p50_ms")
            if k in loc
        ]
        print("node diagnostics    " + ", ".join(f"{k}={loc[k]}" for k in keys))
    print(f"plot                {r['plot']}")
    print(f"total               {r['seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - the CLI calls run_demo
    """Run with defaults into a temporary folder (for ``python -m netvlad_ros.ros.demo``)."""
    out = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="netvlad_demo_"))
    run_demo(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
