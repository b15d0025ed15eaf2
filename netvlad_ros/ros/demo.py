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
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CompressedImage, PointCloud2

    from ..offline.build_map import FrameSource, build_map, format_summary
    from ..offline.demo_report import QueryOutcome, plot_outcomes, score_loop_closures, score_outcomes
    from ..offline.synthetic_world import SyntheticWorld, WorldConfig, write_bag
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
    map_bag = write_bag(
        bags / "mapping", mapping, storage="mcap", image_topic="/camera/image_raw", compressed=True
    )
    query_bag = write_bag(
        bags / "query", query, storage="mcap", image_topic="/camera/image_raw", compressed=True
    )
    _say(f"wrote {map_bag} and {query_bag}")

    _say("building the map from the mapping bag (default model; built once on first use)")
    summary = build_map(
        output / "map",
        FrameSource(bag=map_bag, image_topic=DEMO_IMAGE_TOPIC, pose_topic="/odom"),
        keyframe_distance_m=2.0,
        keyframe_angle_deg=20.0,
        device=device,
        progress=True,
    )
    print(format_summary(summary))
    from ..mapdb import MapDatabase

    db = MapDatabase.load(output / "map")
    map_positions = db.positions(db.ids)

    env = _isolated_ros_env(output / "ros_log")
    node_log = open(output / "node.log", "w")  # noqa: SIM115 - kept open for the child's lifetime
    cmd = [
        sys.executable, "-m", "netvlad_ros.ros.localize_node", "--ros-args",
        "-p", f"map_path:={output / 'map'}", "-p", "compressed:=true", "-p", f"device:={device}",
        "-r", f"image/compressed:={DEMO_IMAGE_TOPIC}",
        # Scores depend on the environment and the model: the default min_score (0.85) was
        # measured on a same-day indoor walk; across "days" in this world correct top-1
        # matches score 0.35-0.45 (eval-map's threshold sweep), so the demo sets 0.3 and
        # keeps the default margin test (min_confidence) as the guard against wrong places.
        # Loop closures likewise. Their geometric verification needs local features of both
        # keyframes, and a map built offline stores thumbnails, not features, so in this
        # multi-session phase it is off and the island/score tests decide (see the note printed).
        "-p", f"localizer.min_score:={DEMO_MIN_SCORE}", "-p", f"loop_closure.min_score:={DEMO_MIN_SCORE}",
        "-p", "loop_closure.geometric_verification:=false",
    ]  # fmt: skip
    _say(f"starting the node in its own process (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}): {' '.join(cmd[1:4])}")
    node_proc = subprocess.Popen(
        cmd, env=env, stdout=node_log, stderr=subprocess.STDOUT, start_new_session=True
    )
    old_env = {
        k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR")
    }
    os.environ.update({k: env[k] for k in old_env})
    context = Context()
    rclpy.init(context=context)
    outcomes: dict[float, QueryOutcome] = {}
    diagnostics: dict[str, str] = {}
    loop_rows: list[tuple] = []
    try:
        node = rclpy.create_node("netvlad_demo_player", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        pub = node.create_publisher(CompressedImage, DEMO_IMAGE_TOPIC, qos_from_name("sensor_data", 5))
        reliable = qos_from_name("reliable", 100)

        def on_hypotheses(msg: PointCloud2) -> None:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            o = outcomes.get(round(stamp, 6))
            if o is not None and o.hypotheses is None:
                table = pointcloud2_to_array(msg, HYPOTHESIS_DTYPE)
                o.hypotheses = np.stack([table["x"], table["y"], table["z"]], axis=1).astype(np.float64)
                o.latency_s = time.perf_counter() - o.extras["sent"]

        def on_pose(msg) -> None:
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            o = outcomes.get(round(stamp, 6))
            if o is not None:
                p = msg.pose.pose.position
                o.accepted_position = np.array([p.x, p.y, p.z])

        def on_loop_closures(msg: PointCloud2) -> None:
            loop_rows.extend(pointcloud2_to_array(msg, LOOP_CLOSURE_DTYPE).tolist())

        def on_diag(msg) -> None:
            for status in msg.status:
                if "netvlad" in status.name:
                    diagnostics.update({kv.key: kv.value for kv in status.values})

        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from nav_msgs.msg import Odometry
        from std_srvs.srv import SetBool

        node.create_subscription(PointCloud2, f"{NODE_FQN}/hypotheses", on_hypotheses, reliable)
        node.create_subscription(PoseWithCovarianceStamped, f"{NODE_FQN}/pose", on_pose, reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, reliable)
        node.create_subscription(PointCloud2, f"{NODE_FQN}/loop_closures", on_loop_closures, reliable)
        odom_pub = node.create_publisher(Odometry, "/odom", qos_from_name("reliable", 50))

        _say("waiting for the node to come up (it loads the model and the map)")
        deadline = time.monotonic() + startup_timeout_s
        while pub.get_subscription_count() == 0 or node.count_publishers(f"{NODE_FQN}/hypotheses") == 0:
            if node_proc.poll() is not None:
                node_log.flush()
                tail = (output / "node.log").read_text()[-2000:]
                raise RuntimeError(f"the node exited with status {node_proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the node did not come up within {startup_timeout_s:.0f} s (see {output / 'node.log'})"
                )
            executor.spin_once(timeout_sec=0.2)
        executor.spin_once(timeout_sec=1.0)  # let matching settle

        messages = _read_bag(query_bag, (DEMO_IMAGE_TOPIC, "/odom"))
        truth = {round(f.stamp, 6): f for f in query}

        def replay(speed: float, with_odom: bool, record: bool) -> None:
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
                if record:
                    key = round(stamp, 6)
                    outcomes[key] = QueryOutcome(
                        stamp=stamp, true_position=truth[key].position, extras={"sent": time.perf_counter()}
                    )
                pub.publish(msg)
            end = time.perf_counter() + 5.0
            while time.perf_counter() < end:
                executor.spin_once(timeout_sec=0.1)

        n_images = sum(t == DEMO_IMAGE_TOPIC for t, _, _ in messages)
        _say(f"localization: replaying {n_images} query images over DDS at {rate:g}x real time")
        replay(rate, with_odom=False, record=True)

        if slam:
            _say(
                "slam: switching the node to SLAM mode (~/set_slam_mode) and replaying the drive with odometry"
            )
            client = node.create_client(SetBool, f"{NODE_FQN}/set_slam_mode")
            if not client.wait_for_service(timeout_sec=10.0):
                raise RuntimeError("the node's ~/set_slam_mode service did not appear")
            future = client.call_async(SetBool.Request(data=True))
            executor.spin_until_future_complete(future, timeout_sec=10.0)
            if future.result() is None or not future.result().success:
                raise RuntimeError(f"~/set_slam_mode failed: {future.result()}")
            replay(2.0 * rate, with_odom=True, record=False)
    finally:
        if node_proc.poll() is None:
            os.killpg(node_proc.pid, signal.SIGINT)
            try:
                node_proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(node_proc.pid, signal.SIGKILL)
                node_proc.wait()
        node_log.close()
        rclpy.try_shutdown(context=context)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    ordered = [outcomes[k] for k in sorted(outcomes)]
    truth_positions = {round(f.stamp, 6): f.position for f in query}
    result = score_outcomes(ordered)
    result["map_keyframes"] = len(map_positions)
    result["loop_closures"] = score_loop_closures(
        loop_rows, truth_positions, dict(zip(db.ids.tolist(), map_positions, strict=True))
    )
    result["node_diagnostics"] = diagnostics
    result["seconds"] = round(time.perf_counter() - t_demo, 1)
    plot = plot_outcomes(output / "demo_plot.png", ordered, map_positions)
    result["plot"] = str(plot)
    for o in ordered:
        o.extras.pop("sent", None)
    (output / "demo_results.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    _print_report(result)
    return result


def _print_report(r: dict) -> None:
    d = r["node_diagnostics"]
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
            f"loop closures       {lc['total']} in SLAM mode ({lc['right']} right within {lc['radius_m']:g} m, "
            f"{lc['verified']} geometrically verified), e.g. {lc['examples']}"
        )
        print(
            "                    (verification is off in the demo: the offline map keeps no local features)"
        )
    else:
        print("loop closures       none accepted in SLAM mode")
    if d:
        keys = [k for k in ("frames_skipped", "skipped", "device", "latency_p50_ms") if k in d]
        print("node diagnostics    " + ", ".join(f"{k}={d[k]}" for k in keys))
    print(f"plot                {r['plot']}")
    print(f"total               {r['seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - the CLI calls run_demo
    """Run with defaults into a temporary folder (for ``python -m netvlad_ros.ros.demo``)."""
    out = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="netvlad_demo_"))
    run_demo(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
