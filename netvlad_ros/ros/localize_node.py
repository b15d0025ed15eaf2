"""``netvlad_localizer`` (executable ``localize_node``): NetVLAD localization and loop closure for ROS 2.

Threads: the rclpy executor runs the subscriptions, services, parameter callbacks
and the diagnostics timer; one worker thread runs the network. The image callback
only keeps the newest message (replacing one not yet processed counts as a skipped
frame), so latency stays bounded when the camera is faster than the network. Decoding
happens in the worker. ``self._lock`` guards the map, the Localizer and the
LoopClosureDetector (the network runs outside it).

Modes: ``localization`` queries the map (``~/hypotheses`` every image, ``~/pose`` when
a place is accepted); ``slam`` adds a keyframe (pose from ``odom``, optional ``fix``)
every ``keyframe.distance_m`` / ``keyframe.angle_deg`` / ``keyframe.period_s`` and looks
for loop closures against older keyframes (``~/loop_closures``).

Interface (topics, services, parameters, QoS, fields): docs/node.md.

Start-up errors (bad parameter, missing or corrupt model or map) print one line to
stderr and exit with status 2. Bad input at run time is counted (``/diagnostics``),
warned about (throttled) and dropped; the node carries on.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
import traceback
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image, NavSatFix, NavSatStatus, PointCloud2
from std_srvs.srv import SetBool, Trigger
from visualization_msgs.msg import MarkerArray

from netvlad_ros.ros import messages
from netvlad_ros.ros.conversions import (
    ImageDecodeError,
    compressed_msg_to_bgr,
    image_msg_to_bgr,
    stamp_to_sec,
)
from netvlad_ros.ros.params import (
    PARAMS,
    check_values,
    default_params_file,
    descriptor,
    localizer_params,
    loop_closure_params,
)
from netvlad_ros.ros.qos import latched_qos, qos_from_name
from netvlad_ros.sensors.image_codec import DECODE_ERROR_REASONS
from netvlad_ros.sensors.poses import KeyframeSelector, PoseBuffer, PoseError, PoseOrderError

__all__ = ["NODE_NAME", "REJECT_REASONS", "LocalizeNode", "StartupError", "main"]

NODE_NAME = "netvlad_localizer"

#: Every reason a message can be rejected for (diagnostics key ``rejected.<reason>``).
REJECT_REASONS: tuple[str, ...] = (
    *DECODE_ERROR_REASONS,  # an image that cannot be decoded: ImageDecodeError.reason
    "time_backwards",
    "no_odom",
    "odom_invalid",
    "odom_time_backwards",
    "gps_invalid",
    "internal_error",
)

_LATENCY_WINDOW = 500


class StartupError(Exception):
    """The node cannot start (bad parameter, model or map); the message says why."""


def _keyframe_thresholds(values: dict[str, Any]) -> tuple[float, float, float | None]:
    """(distance_m, angle_deg, interval_s) for :class:`KeyframeSelector`; ``keyframe.period_s`` 0 is off."""
    period = float(values["keyframe.period_s"])
    return (
        float(values["keyframe.distance_m"]),
        float(values["keyframe.angle_deg"]),
        period if period > 0 else None,
    )


class LocalizeNode(Node):
    """The ``netvlad_localizer`` node. Raises :class:`StartupError` when it cannot start."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._values: dict[str, Any] = {}
        try:
            for spec in PARAMS:
                self._values[spec.name] = self.declare_parameter(
                    spec.name, spec.default, descriptor(spec)
                ).value
        except rclpy.exceptions.ParameterException as exc:
            raise StartupError(f"invalid parameter: {exc}") from exc
        reason = check_values(self._values)
        if reason is not None:
            raise StartupError(f"invalid parameter: {reason}")
        v = self._values

        self._lock = threading.RLock()
        self._mode: str = v["mode"]
        self._extractor = self._load_model()
        self._db = self._load_initial_map()
        self._localizer = self._new_localizer()
        self._detector = self._new_detector()
        self._gate = KeyframeSelector(*_keyframe_thresholds(v))
        self._odom = PoseBuffer()
        self._odom_frame = v["map_frame"]
        self._fixes: deque[tuple[float, tuple[float, float, float]]] = deque(maxlen=200)
        self._last_stamp: float | None = None
        self._positions_cache: dict[int, np.ndarray] = {}

        # statistics (guarded by _stats_lock; the image callback and the worker both write)
        self._stats_lock = threading.Lock()
        self._received = 0
        self._processed = 0
        self._skipped = 0
        self._keyframes_added = 0
        self._loop_closures = 0
        self._accepted = 0
        self._rejects: Counter[str] = Counter({r: 0 for r in REJECT_REASONS})
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._last_diag = (time.monotonic(), 0, 0)

        # newest unprocessed image (the only hand-over between executor and worker)
        self._pending: tuple[Any, float] | None = None
        self._cond = threading.Condition()
        self._running = True
        self._map_dirty = True

        reliable = qos_from_name("reliable")
        self._pose_pub = self.create_publisher(PoseWithCovarianceStamped, "~/pose", reliable)
        self._hyp_pub = self.create_publisher(PointCloud2, "~/hypotheses", reliable)
        self._lc_pub = self.create_publisher(PointCloud2, "~/loop_closures", reliable)
        self._kf_pub = self.create_publisher(PointCloud2, "~/map_keyframes", latched_qos(1))
        self._marker_pub = self.create_publisher(MarkerArray, "~/markers", reliable)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", reliable)

        image_qos = qos_from_name(v["image_qos"], v["image_qos_depth"])
        self._compressed = bool(v["compressed"])
        if self._compressed:
            self.create_subscription(CompressedImage, "image/compressed", self._on_image, image_qos)
        else:
            self.create_subscription(Image, "image", self._on_image, image_qos)
        self.create_subscription(Odometry, "odom", self._on_odom, qos_from_name("sensor_data", 50))
        self.create_subscription(NavSatFix, "fix", self._on_fix, qos_from_name("sensor_data", 10))

        self.create_service(Trigger, "~/save_map", self._srv_save_map)
        self.create_service(Trigger, "~/reload_map", self._srv_reload_map)
        self.create_service(SetBool, "~/set_slam_mode", self._srv_set_slam_mode)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)
        self.create_timer(v["diagnostics_period_s"], self._on_timer)

        self._worker = threading.Thread(target=self._work, name="netvlad_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: mode={self._mode}, map={len(self._db)} keyframes ({v['map_path'] or 'empty'}), "
            f"model {self._extractor.fingerprint[:12]} {self._extractor.dim}-D on {self._extractor.device}, "
            f"input {'image/compressed' if self._compressed else 'image'}"
        )

    # ------------------------------------------------------------------ start-up
    def _load_model(self):
        from netvlad_ros.model import DescriptorExtractor, ModelFileError

        path = self._values["model_path"] or None
        if path is not None and not Path(path).is_file():
            raise StartupError(f"model file {path} does not exist")
        try:
            return DescriptorExtractor(
                path, device=self._values["device"], fp16=self._values["fp16"], batch_size=1
            )
        except (ModelFileError, OSError, ValueError, RuntimeError) as exc:
            raise StartupError(f"cannot load model {path or '(built-in default)'}: {exc}") from exc

    def _empty_map(self):
        from netvlad_ros.mapdb import MapDatabase

        return MapDatabase.create(self._extractor.dim, self._extractor.fingerprint)

    def _read_map(self, path: str):
        from netvlad_ros.mapdb import MapDatabase

        return MapDatabase.load(path, expected_model_fingerprint=self._extractor.fingerprint)

    def _load_initial_map(self):
        from netvlad_ros.mapdb import MapError

        path = self._values["map_path"]
        if not path:
            if self._mode == "localization":
                raise StartupError("map_path is required in localization mode (or start with mode:=slam)")
            return self._empty_map()
        if self._mode == "slam" and not Path(path).exists():
            self.get_logger().info(f"map {path} does not exist yet: starting an empty map (saved there)")
            return self._empty_map()
        try:
            return self._read_map(path)
        except (MapError, OSError) as exc:
            raise StartupError(f"cannot load map {path}: {exc}") from exc

    def _new_localizer(self):
        from netvlad_ros.recognition import Localizer

        return Localizer(self._db, localizer_params(self._values))

    def _new_detector(self):
        from netvlad_ros.recognition import LoopClosureDetector

        return LoopClosureDetector(self._db, loop_closure_params(self._values))

    # ------------------------------------------------------------------ bookkeeping
    def _reject(self, reason: str, text: str) -> None:
        with self._stats_lock:
            self._rejects[reason] += 1
        self.get_logger().warning(
            f"{text} [{reason}]", throttle_duration_sec=max(self._values["warn_throttle_s"], 1e-3)
        )

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (what /diagnostics reports)."""
        with self._stats_lock:
            lat = np.array(self._latencies) * 1000.0 if self._latencies else None
            return {
                "received": self._received,
                "processed": self._processed,
                "skipped": self._skipped,
                "accepted": self._accepted,
                "keyframes_added": self._keyframes_added,
                "loop_closures": self._loop_closures,
                "latency_p50_ms": float(np.percentile(lat, 50)) if lat is not None else math.nan,
                "latency_p95_ms": float(np.percentile(lat, 95)) if lat is not None else math.nan,
                "rejects": dict(self._rejects),
            }

    # ------------------------------------------------------------------ inputs
    def _on_image(self, msg: Any) -> None:
        """Keep only the newest image; never decode or run the network here."""
        now = time.monotonic()
        with self._cond:
            replaced = self._pending is not None
            self._pending = (msg, now)
            self._cond.notify()
        with self._stats_lock:
            self._received += 1
            if replaced:
                self._skipped += 1

    def _on_odom(self, msg: Odometry) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        stamp = stamp_to_sec(msg.header.stamp)
        try:
            with self._lock:
                self._odom.add(stamp, np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))
                if msg.header.frame_id:
                    self._odom_frame = msg.header.frame_id
        except PoseOrderError as exc:
            with self._lock:
                self._odom.clear()  # a restarted source (e.g. a looping bag): start over
                self._odom.add(stamp, np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))
            self._reject("odom_time_backwards", f"odom time went backwards, pose buffer cleared: {exc}")
        except PoseError as exc:
            self._reject("odom_invalid", f"dropped odom message: {exc}")
        except Exception as exc:  # never let one odom message take the callback down
            self._reject("odom_invalid", f"dropped odom message: {exc}")

    def _on_fix(self, msg: NavSatFix) -> None:
        if msg.status.status < NavSatStatus.STATUS_FIX:
            return  # no fix: nothing to store, not an error
        lla = (float(msg.latitude), float(msg.longitude), float(msg.altitude))
        if not all(math.isfinite(x) for x in lla) or abs(lla[0]) > 90 or abs(lla[1]) > 360:
            self._reject("gps_invalid", f"dropped NavSatFix with lat/lon/alt {lla}")
            return
        with self._lock:
            self._fixes.append((stamp_to_sec(msg.header.stamp), lla))

    def _fix_at(self, stamp: float) -> tuple[float, float, float] | None:
        best = min(self._fixes, key=lambda f: abs(f[0] - stamp), default=None)
        if best is None or abs(best[0] - stamp) > self._values["gps_max_age_s"]:
            return None
        return best[1]

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and self._running:
                    self._cond.wait(timeout=0.2)
                if not self._running:
                    return
                msg, received = self._pending
                self._pending = None
            try:
                self._process(msg, received)
            except Exception as exc:  # never let one frame take the node down
                self._reject("internal_error", f"error processing an image: {exc!r}")
                self.get_logger().debug(traceback.format_exc())

    def _process(self, msg: Any, received: float) -> None:
        stamp_msg = msg.header.stamp
        t = stamp_to_sec(stamp_msg)
        try:
            if self._compressed:
                bgr = compressed_msg_to_bgr(msg)
            else:
                bgr = image_msg_to_bgr(msg, self._values["scaling16"])
        except ImageDecodeError as exc:
            self._reject(exc.reason, f"dropped image: {exc}")
            return

        with self._lock:
            mode = self._mode
            if self._last_stamp is not None and t < self._last_stamp:
                if mode == "slam":
                    self._reject(
                        "time_backwards",
                        f"dropped image: stamp {t:.3f} is older than the last keyframe's {self._last_stamp:.3f}",
                    )
                    return
                self._reject(
                    "time_backwards",
                    f"image time went backwards ({self._last_stamp:.3f} -> {t:.3f}); temporal filter reset",
                )
                self._localizer.reset()
            pose = None
            if mode == "slam":
                pose = self._odom.lookup(t, self._values["odom_max_age_s"])
                if pose is None:
                    self._reject(
                        "no_odom",
                        f"dropped image at {t:.3f}: no odom pose within {self._values['odom_max_age_s']} s",
                    )
                    return
                if not self._gate.is_due(t, *pose):
                    with self._stats_lock:
                        self._processed += 1  # handled: not a keyframe, no network run
                    return
                lla = self._fix_at(t)
                frame_id = self._odom_frame
            else:
                self._last_stamp = t

        desc = self._extractor([bgr])[0]  # the network: outside the lock

        if mode == "slam":
            self._add_keyframe(t, stamp_msg, pose, lla, frame_id, desc, bgr)
        else:
            self._localize(t, stamp_msg, desc)
        with self._stats_lock:
            self._processed += 1
            self._latencies.append(time.monotonic() - received)

    def _localize(self, t: float, stamp_msg: Any, desc: np.ndarray) -> None:
        with self._lock:
            res = self._localizer.localize(desc, t)
        frame = self._values["map_frame"]
        self._hyp_pub.publish(messages.hypotheses_table(res.hypotheses, stamp_msg, frame))
        if res.accepted and res.best_place is not None:
            with self._stats_lock:
                self._accepted += 1
            self._pose_pub.publish(
                messages.pose_msg(
                    res.best_place,
                    res.confidence,
                    stamp_msg,
                    frame,
                    self._values["pose_sigma_m"],
                    self._values["pose_sigma_deg"],
                )
            )
        if self._values["publish_markers"] and res.best_place is not None:
            marker = messages.match_marker(res.best_place, res.confidence, res.accepted, stamp_msg, frame)
            self._marker_pub.publish(messages.marker_array([marker]))

    def _add_keyframe(self, t, stamp_msg, pose, lla, frame_id, desc, bgr) -> None:
        from netvlad_ros.mapdb import Keyframe

        position, orientation = pose
        with self._lock:
            kf = Keyframe(
                stamp=t,
                frame_id=frame_id,
                position=position,
                orientation=orientation,
                latlonalt=lla,
                source=NODE_NAME,
            )
            kid = int(self._db.add([kf], desc[None, :])[0])
            self._gate.take(t, position, orientation)
            self._last_stamp = t
            self._map_dirty = True
            verify = self._detector.params.geometric_verification
            res = self._detector.process(kid, t, desc, image=bgr if verify else None)
            closures = res.accepted
            positions = {}
            if closures:
                ids = [kid] + [lc.match_id for lc in closures]
                positions = dict(zip(ids, self._db.positions(ids), strict=True))
        with self._stats_lock:
            self._keyframes_added += 1
            self._loop_closures += len(closures)
        if closures:
            frame = self._values["map_frame"]
            self._lc_pub.publish(messages.loop_closures_table(closures, stamp_msg, frame))
            if self._values["publish_markers"]:
                markers = messages.loop_closure_markers(closures, positions, stamp_msg, frame)
                self._marker_pub.publish(messages.marker_array(markers))
            for lc in closures:
                self.get_logger().info(
                    f"loop closure: keyframe {lc.query_id} -> {lc.match_id} (score {lc.score:.3f}, "
                    f"inliers {lc.inliers})"
                )

    # ------------------------------------------------------------------ timer: diagnostics + map
    def _on_timer(self) -> None:
        now = time.monotonic()
        with self._stats_lock:
            t0, rec0, proc0 = self._last_diag
            self._last_diag = (now, self._received, self._processed)
        dt = max(now - t0, 1e-6)
        s = self.stats()
        with self._lock:
            map_size = len(self._db)
            mode = self._mode
        rejected_total = sum(s["rejects"].values())
        values: dict[str, Any] = {
            "mode": mode,
            "input_rate_hz": (s["received"] - rec0) / dt,
            "processed_rate_hz": (s["processed"] - proc0) / dt,
            "frames_received": s["received"],
            "frames_processed": s["processed"],
            "frames_skipped": s["skipped"],
            "places_accepted": s["accepted"],
            "latency_p50_ms": s["latency_p50_ms"],
            "latency_p95_ms": s["latency_p95_ms"],
            "map_size": map_size,
            "keyframes_added": s["keyframes_added"],
            "loop_closures": s["loop_closures"],
            "device": str(self._extractor.device),
            "model_fingerprint": self._extractor.fingerprint,
            "rejected_total": rejected_total,
        }
        values.update({f"rejected.{k}": n for k, n in sorted(s["rejects"].items())})
        level = DiagnosticStatus.WARN if s["rejects"]["internal_error"] else DiagnosticStatus.OK
        text = f"{mode}: {values['processed_rate_hz']:.1f} Hz processed, {map_size} keyframes"
        self._diag_pub.publish(
            messages.diagnostics_msg(
                f"{self.get_fully_qualified_name()}: place recognition",
                f"{NODE_NAME}@{values['device']}",
                level,
                text,
                values,
                self.get_clock().now().to_msg(),
            )
        )
        if self._map_dirty:
            self._publish_map()

    def _publish_map(self) -> None:
        with self._lock:
            self._map_dirty = False
            ids = self._db.ids
            pos = self._db.positions(ids)
            stamps = self._db.stamps(ids)
        msg = messages.keyframes_table(
            ids, pos, stamps, self._values["map_frame"], self.get_clock().now().to_msg()
        )
        self._kf_pub.publish(msg)

    # ------------------------------------------------------------------ services
    def _srv_save_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        from netvlad_ros.mapdb import MapError

        path = self._values["save_path"] or self._values["map_path"]
        if not path:
            response.success, response.message = False, "no save_path or map_path parameter set"
            return response
        try:
            with self._lock:
                self._db.save(path)
                n = len(self._db)
        except (MapError, OSError, ValueError) as exc:
            response.success, response.message = False, f"cannot save map to {path}: {exc}"
            return response
        response.success, response.message = True, f"saved {n} keyframes to {path}"
        self.get_logger().info(response.message)
        return response

    def _srv_reload_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        from netvlad_ros.mapdb import MapError

        path = self._values["map_path"]
        if not path:
            response.success, response.message = False, "no map_path parameter set"
            return response
        try:
            db = self._read_map(path)
        except (MapError, OSError) as exc:
            response.success, response.message = False, f"cannot load map {path} (old map kept): {exc}"
            return response
        with self._lock:
            self._db = db
            self._localizer = self._new_localizer()
            self._detector = self._new_detector()
            self._gate.reset()
            self._last_stamp = None
            self._map_dirty = True
        response.success, response.message = True, f"loaded {len(db)} keyframes from {path}"
        self.get_logger().info(response.message)
        return response

    def _srv_set_slam_mode(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        mode = "slam" if request.data else "localization"
        result = self.set_parameters([Parameter("mode", Parameter.Type.STRING, mode)])[0]
        response.success = bool(result.successful)
        response.message = f"mode is now {mode}" if result.successful else result.reason
        return response

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        values = dict(self._values)
        for p in params:
            values[p.name] = p.value
        reason = check_values(values)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _after_set_parameters(self, params: list[Parameter]) -> None:
        names = {p.name for p in params}
        with self._lock:
            for p in params:
                self._values[p.name] = p.value
            if any(n.startswith("localizer.") for n in names):
                self._localizer = self._new_localizer()
            if any(n.startswith("loop_closure.") for n in names):
                new = loop_closure_params(self._values)
                old = self._detector.params
                if (new.geometric_verification, new.geometry) != (old.geometric_verification, old.geometry):
                    self._detector = self._new_detector()  # the verifier is built at construction
                else:
                    self._detector.params = new
            if any(n.startswith("keyframe.") for n in names):
                self._gate.configure(*_keyframe_thresholds(self._values))
            if "mode" in names and self._values["mode"] != self._mode:
                self._mode = self._values["mode"]
                self._localizer.reset()
                self._detector.reset()
                self._gate.reset()
                self._last_stamp = None
                self.get_logger().info(f"mode switched to {self._mode}")
        if "map_frame" in names:
            self._map_dirty = True

    # ------------------------------------------------------------------ shutdown
    def stop(self) -> None:
        """Stop the worker thread (waits for the frame in progress)."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        self._worker.join(timeout=30.0)


_USAGE = """usage: localize_node [--help] [--ros-args ...]

NetVLAD place recognition node 'netvlad_localizer'. Configure it with ROS parameters:
  localize_node --ros-args --params-file config/localize.yaml -p map_path:=/path/to/map
Without --params-file the packaged config/localize.yaml is loaded first (same defaults).
Parameters, topics and services: docs/node.md. Exit status 2: bad parameter, model or map.

parameters:
"""


def _with_default_params_file(argv: list[str]) -> list[str]:
    """``argv`` with the packaged localize.yaml loaded first when no ``--params-file`` is given.

    It goes in a ``--ros-args`` block right after the program name, so any later
    ``--params-file`` or ``-p`` on the command line overrides it.
    """
    if "--params-file" in argv:
        return argv
    path = default_params_file()
    if path is None:
        return argv
    return [argv[0], "--ros-args", "--params-file", str(path), "--", *argv[1:]]


def main(argv: list[str] | None = None) -> int:
    """Run the node until Ctrl-C / shutdown. Returns the exit status (2: cannot start)."""
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if argv is None else argv)
    extra = remove_ros_args(argv)[1:]
    if extra:
        if extra[0] in ("-h", "--help"):
            lines = [
                f"  {p.name} (default {p.default!r}){' [read-only]' if p.read_only else ''}: {p.description}"
                for p in PARAMS
            ]
            print(_USAGE + "\n".join(lines))
            return 0
        print(f"localize_node: error: unexpected arguments {extra} (use --ros-args)", file=sys.stderr)
        return 2
    argv = _with_default_params_file(argv)
    try:
        rclpy.init(args=argv)
    except Exception as exc:  # bad --ros-args, unreadable params file
        print(f"localize_node: error: cannot initialise ROS: {exc}", file=sys.stderr)
        return 2
    node = None
    try:
        try:
            node = LocalizeNode()
        except StartupError as exc:
            print(f"localize_node: error: {exc}", file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            executor.spin()
        return 0
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
