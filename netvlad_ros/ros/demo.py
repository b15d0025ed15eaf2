"""``netvlad-ros demo``: the whole product in a few minutes, no GPU, no network, default parameters.

1. Render a synthetic street world: a mapping drive and a second drive on another "day"
   (sun, exposure, noise, occluders, lateral offset), written as ROS 2 MCAP bags (JPEG
   images, camera_info, odometry, GPS).
2. Build a map from the mapping bag (``build-map``: default model, local features from the
   full images, the map's calibration from its own poses).
3. Localization: start the real node (``localize_node``, default parameters) in its own
   process on an isolated DDS domain with that map, replay the second drive's images over
   DDS at real-time rate, collect what it publishes (hypotheses, accepted poses).
4. SLAM: a drive round a block with aligned depth, camera_info and *drifting* odometry
   (heading bias + noise); ``localize_node`` in slam mode and ``pose_graph_node`` run over
   DDS; the loop closures (metric, from PnP on the depth) correct the drift. The absolute
   trajectory error of the raw odometry and of the optimised trajectory are measured
   against the ground truth.
5. Print Recall@1/5 (within 25 m), accepted places and their precision, latency, the loop
   closures (checked against the true positions) and the ATEs; write a PNG plot and a JSON.

This module is glue (rclpy lives here); the data, map building and scoring are in
``synthetic/``, ``offline/`` and ``posegraph/``.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

DEMO_IMAGE_TOPIC = "/camera/image_raw/compressed"
DEMO_CAMERA_INFO_TOPIC = "/camera/camera_info"
DEMO_DEPTH_TOPIC = "/camera/depth/image_raw"
DEMO_GROUND_TRUTH_TOPIC = "/ground_truth"
NODE_FQN = "/netvlad_localizer"
GRAPH_FQN = "/netvlad_pose_graph"
#: The drive's odometry noise draw (synthetic.OdometryNoise defaults: car-like wheel odometry).
#: Seed 1 drifts 2.1 m (aligned ATE) over the 384 m loop; over 60 seeds the median is 1.45 m
#: (docs/synthetic_world.md); some draws barely drift (seed 7: 0.3 m), which would show nothing.
DEMO_ODOMETRY_SEED = 1
#: Raw 16UC1 depth frames are ~0.6 MB: over BEST_EFFORT they need Fast DDS's large-data profile.
FASTDDS_PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds_large_data.xml"


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


def _to_rclpy(topic: str, m: Any, stamp: float) -> Any:
    """An rclpy message from a rosbags-deserialised one (the fields the nodes read)."""
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from .conversions import sec_to_stamp

    if topic == DEMO_IMAGE_TOPIC:
        out: Any = CompressedImage(format=m.format, data=bytes(m.data))
    elif topic == DEMO_DEPTH_TOPIC:
        out = Image(height=int(m.height), width=int(m.width), encoding=m.encoding,
                    is_bigendian=int(m.is_bigendian), step=int(m.step), data=bytes(m.data))  # fmt: skip
    elif topic == DEMO_CAMERA_INFO_TOPIC:
        out = CameraInfo(height=int(m.height), width=int(m.width), distortion_model=m.distortion_model,
                         d=[float(v) for v in m.d], k=[float(v) for v in m.k],
                         r=[float(v) for v in m.r], p=[float(v) for v in m.p])  # fmt: skip
    else:
        out = Odometry(child_frame_id=m.child_frame_id)
        p, q = m.pose.pose.position, m.pose.pose.orientation
        out.pose.pose.position.x, out.pose.pose.position.y, out.pose.pose.position.z = p.x, p.y, p.z
        o = out.pose.pose.orientation
        o.x, o.y, o.z, o.w = q.x, q.y, q.z, q.w
        out.pose.covariance = [float(v) for v in m.pose.covariance]
    out.header.stamp = sec_to_stamp(stamp)
    out.header.frame_id = m.header.frame_id
    return out


class _NodeProcess:
    """A node executable in its own process (own session, so Ctrl-C/kill reach all of it)."""

    def __init__(self, module: str, params: dict[str, object], remaps: dict[str, str], env: dict[str, str],
                 log: Path) -> None:  # fmt: skip
        cmd = [sys.executable, "-m", module, "--ros-args"]
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
            raise RuntimeError(f"{self.log_path.stem} exited with status {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not self._log.closed:
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
    localization: bool = True,
    slam_speed: float | None = None,
) -> dict:
    """Run the demo; returns the scored results (also written to ``output/demo_results.json``).

    The nodes run on their default parameters: only what says where things are (map, topics,
    mode, device) is given. ``localization`` / ``slam`` switch the two phases;
    ``slam_speed``: replay speed of the SLAM drive (default ``2 * rate``).
    Call it in a fresh process (as ``make demo`` and ``netvlad-ros demo`` do): Fast DDS reads
    its XML profile once per process, and this process's publisher needs the large-data
    profile it sets for the depth images.
    """
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from nav_msgs.msg import Odometry
    from nav_msgs.msg import Path as PathMsg
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

    from ..mapdb import MapDatabase
    from ..offline.build_map import FrameSource, build_map, format_summary
    from ..offline.demo_report import (
        QueryOutcome,
        plot_outcomes,
        score_loop_closures,
        score_outcomes,
        score_trajectories,
    )
    from ..synthetic import OdometryNoise, SyntheticWorld, WorldConfig, write_bag
    from .qos import latched_qos, qos_from_name
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
    kw: dict[str, Any] = {"storage": "mcap", "image_topic": "/camera/image_raw", "compressed": True,
          "camera_info_topic": DEMO_CAMERA_INFO_TOPIC}  # fmt: skip
    map_bag = write_bag(bags / "mapping", mapping, **kw)
    query_bag = write_bag(bags / "query", query, **kw)
    loop: list = []
    if slam:
        # A drive once round one block and down its first street again, with aligned depth and
        # odometry that drifts like wheel odometry (seeded): a loop to close and an error to fix.
        loop_world = SyntheticWorld(WorldConfig(seed=seed, blocks_x=1, blocks_y=1))
        drift = OdometryNoise(seed=DEMO_ODOMETRY_SEED)
        loop = loop_world.traversal("loop", spacing_m=4.0, depth=True, odometry=drift)
        loop_bag = write_bag(bags / "loop", loop, **kw, depth_topic=DEMO_DEPTH_TOPIC, depth_encoding="16UC1",
                             ground_truth_topic=DEMO_GROUND_TRUTH_TOPIC)  # fmt: skip
    _say(f"wrote the bags in {bags}")

    summary: dict[str, Any] = {}
    map_positions = np.zeros((0, 3))
    if localization:
        _say("building the map from the mapping bag (default model, local features, self-calibration)")
        summary = build_map(
            output / "map",
            FrameSource(
                bag=map_bag,
                image_topic=DEMO_IMAGE_TOPIC,
                pose_topic="/odom",
                camera_info_topic=DEMO_CAMERA_INFO_TOPIC,
            ),
            device=device,
            progress=True,
        )
        print(format_summary(summary))
        db = MapDatabase.load(output / "map")
        map_positions = db.positions(db.ids)

    env = _isolated_ros_env(output / "ros_log")
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    remaps = {"image/compressed": DEMO_IMAGE_TOPIC, "camera_info": DEMO_CAMERA_INFO_TOPIC,
              "depth": DEMO_DEPTH_TOPIC, "odom": "/odom"}  # fmt: skip
    loc_params = {"compressed": True, "device": device, "map_path": output / "map"}
    slam_params = {"compressed": True, "device": device, "mode": "slam"}
    old_env = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR",
                                               "FASTDDS_DEFAULT_PROFILES_FILE")}  # fmt: skip
    os.environ.update({k: env[k] for k in old_env})
    context = Context()
    rclpy.init(context=context)
    outcomes: dict[float, QueryOutcome] = {}
    diagnostics: dict[str, dict[str, str]] = {}
    loop_rows: list[np.void] = []
    paths: list[Any] = []
    procs: list[_NodeProcess] = []
    phase = "localization"
    try:
        node = rclpy.create_node("netvlad_demo_player", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        sensor = qos_from_name("sensor_data", 5)
        pubs = {
            DEMO_IMAGE_TOPIC: node.create_publisher(CompressedImage, DEMO_IMAGE_TOPIC, sensor),
            DEMO_CAMERA_INFO_TOPIC: node.create_publisher(CameraInfo, DEMO_CAMERA_INFO_TOPIC, sensor),
            DEMO_DEPTH_TOPIC: node.create_publisher(Image, DEMO_DEPTH_TOPIC, sensor),
            "/odom": node.create_publisher(Odometry, "/odom", qos_from_name("reliable", 50)),
        }
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
            loop_rows.extend(pointcloud2_to_array(msg, LOOP_CLOSURE_DTYPE))

        def on_diag(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name.startswith(NODE_FQN):
                    diagnostics[phase] = {kv.key: kv.value for kv in status.values}
                elif status.name.startswith(GRAPH_FQN):
                    diagnostics["pose_graph"] = {kv.key: kv.value for kv in status.values}

        node.create_subscription(PointCloud2, f"{NODE_FQN}/hypotheses", on_hypotheses, reliable)
        node.create_subscription(PoseWithCovarianceStamped, f"{NODE_FQN}/pose", on_pose, reliable)
        node.create_subscription(PointCloud2, f"{NODE_FQN}/loop_closures", on_loop_closures, reliable)
        node.create_subscription(PathMsg, f"{GRAPH_FQN}/path", paths.append, latched_qos(1))
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, reliable)

        def spin_for(seconds: float) -> None:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                executor.spin_once(timeout_sec=0.05)

        def start(module: str, params: dict, log_name: str, ready: Callable[[], bool]) -> _NodeProcess:
            proc = _NodeProcess(module, params, remaps, env, output / log_name)
            procs.append(proc)
            _say(f"started {module.rsplit('.', 1)[-1]} ({params.get('mode', 'default')} mode) in its own "
                 f"process, ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}; waiting for it to come up")  # fmt: skip
            deadline = time.monotonic() + startup_timeout_s
            while not ready():
                proc.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{log_name} did not come up within {startup_timeout_s:.0f} s")
                executor.spin_once(timeout_sec=0.2)
            spin_for(1.0)  # let matching settle
            return proc

        def replay(bag: Path, speed: float, topics: tuple[str, ...], truth: dict | None) -> None:
            messages = _read_bag(bag, topics)
            t0_wall, t0_bag = time.perf_counter(), messages[0][1]
            for topic, stamp, m in messages:
                due = t0_wall + (stamp - t0_bag) / speed
                while (now := time.perf_counter()) < due:
                    executor.spin_once(timeout_sec=min(0.05, due - now))
                if topic == DEMO_IMAGE_TOPIC and truth is not None:
                    key = round(stamp, 6)
                    outcomes[key] = QueryOutcome(
                        stamp=stamp, true_position=truth[key], extras={"sent": time.perf_counter()}
                    )
                pubs[topic].publish(_to_rclpy(topic, m, stamp))
            spin_for(5.0)

        image = pubs[DEMO_IMAGE_TOPIC]
        if localization:
            proc = start("netvlad_ros.ros.localize_node", loc_params, "node_localization.log",
                         lambda: image.get_subscription_count() > 0 and node.count_publishers(f"{NODE_FQN}/hypotheses") > 0)  # fmt: skip
            _say(f"localization: replaying the second drive's images over DDS at {rate:g}x real time")
            replay(query_bag, rate, (DEMO_IMAGE_TOPIC,), {round(f.stamp, 6): f.position for f in query})
            proc.stop()

        if slam:
            phase = "slam"
            start("netvlad_ros.ros.pose_graph_node", {}, "pose_graph.log",
                  lambda: node.count_publishers(f"{GRAPH_FQN}/path") > 0)  # fmt: skip
            start("netvlad_ros.ros.localize_node", slam_params, "node_slam.log",
                  lambda: image.get_subscription_count() > 0 and node.count_publishers(f"{NODE_FQN}/loop_closures") > 0)  # fmt: skip
            speed = slam_speed if slam_speed is not None else 2.0 * rate
            _say(f"slam: replaying a drive round a block (images, depth, camera_info, drifting odometry) "
                 f"at {speed:g}x real time; pose_graph_node corrects the drift")  # fmt: skip
            replay(
                loop_bag, speed, (DEMO_IMAGE_TOPIC, DEMO_CAMERA_INFO_TOPIC, DEMO_DEPTH_TOPIC, "/odom"), None
            )
            settle_end = time.monotonic() + 30.0  # the graph catches up with the last keyframes
            while time.monotonic() < settle_end:
                d, g = diagnostics.get("slam", {}), diagnostics.get("pose_graph", {})
                if (
                    d
                    and g
                    and g.get("keyframes") == d.get("map_size")
                    and g.get("pending_closures", "0") == "0"
                ):
                    break
                spin_for(0.5)
            spin_for(1.0)
    finally:
        for proc in reversed(procs):
            proc.stop()
        rclpy.try_shutdown(context=context)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    ordered = [outcomes[k] for k in sorted(outcomes)]
    result = score_outcomes(ordered)
    result["map_keyframes"] = len(map_positions)
    result["build_map"] = {k: summary[k] for k in ("keyframes", "features", "calibration") if k in summary}
    loop_truth = {round(f.stamp, 6): f.position for f in loop}
    result["loop_closures"] = score_loop_closures(
        loop_rows, loop_truth, {}, radius_m=10.0, true_poses={round(f.stamp, 6): f.pose for f in loop}
    )
    result["loop_closures"]["drive_keyframes"] = diagnostics.get("slam", {}).get("keyframes_added")
    trajectories = None
    if slam:
        trajectories = _trajectories(loop, paths[-1] if paths else None)
        result["slam"] = score_trajectories(*trajectories)
    result["node_diagnostics"] = diagnostics
    result["seconds"] = round(time.perf_counter() - t_demo, 1)
    plot = plot_outcomes(
        output / "demo_plot.png", ordered, map_positions, loop_rows=loop_rows, trajectories=trajectories
    )
    result["plot"] = str(plot)
    (output / "demo_results.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    _print_report(result)
    return result


def _trajectories(loop: list, path_msg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth, odometry, optimised) positions (n, 3) at the stamps of the optimised path's poses.

    The pose graph publishes one pose per keyframe, stamped with the keyframe's image stamp;
    the frames of the drive give the truth and the drifting odometry at those stamps.
    """
    by_stamp = {round(f.stamp, 6): f for f in loop}
    truth, odom, opt = [], [], []
    for ps in path_msg.poses if path_msg is not None else []:
        f = by_stamp.get(round(ps.header.stamp.sec + ps.header.stamp.nanosec * 1e-9, 6))
        if f is None:
            continue
        p = ps.pose.position
        truth.append(f.position)
        odom.append(f.odom_position)
        opt.append((p.x, p.y, p.z))
    shape = (-1, 3)
    return (np.asarray(truth, float).reshape(shape), np.asarray(odom, float).reshape(shape),
            np.asarray(opt, float).reshape(shape))  # fmt: skip


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


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
        if lc.get("metric"):
            print(
                f"                    {lc['metric']} metric (PnP on depth): relative pose error at most "
                f"{lc['relative_pose_error_m_max']:.3f} m / {lc['relative_pose_error_deg_max']:.2f} deg"
            )
    elif "slam" in d:
        print("loop closures       none accepted in the SLAM drive")
    sl = r.get("slam")
    if sl:
        print(
            f"SLAM trajectory     ATE (aligned RMSE over {sl['keyframes']} keyframes): odometry "
            f"{sl['ate_odometry_m']:.2f} m -> optimised {sl['ate_optimized_m']:.2f} m"
        )
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
