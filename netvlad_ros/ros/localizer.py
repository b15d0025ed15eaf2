"""``LocalizeNode``: the ``netvlad_localizer`` node, ROS glue over a ``RecognitionSession``.

What the robot does with each frame (mode rules, keyframe gating, localization, loop
closure, time going backwards, stale frames) is the ROS-free
``recognition.RecognitionSession``; this class only turns messages into its inputs and
its results into messages, and owns the threads, parameters, services and timers.

Threads: a ``MultiThreadedExecutor`` (``ros/runner.py``) runs the callbacks in three
groups that never wait for each other: inputs (images, odom, fix), services
(save, reload, mode) and timers (diagnostics, autosave). The image callback only keeps
the newest message (replacing one not yet taken counts as a skipped frame). Three worker
threads form a pipeline: *prepare* (decode the newest image, the session's rules,
preprocessing), *network* (the descriptor) and *map* (search, verification, keyframes,
loop closures, publishing), each handing over through a one-item slot that keeps only
the newest frame. With ``pipeline_frames`` 2 or 3, frame N+1 is decoded while N is in the
network (and N-1 in the map); the default 1 takes one frame at a time through the three
(lowest latency on 2 cores; each stage's libraries use every core).

Shared state: the session guards its own (map, localizer, detector, buffers) and drops
frames planned for a map or mode that changed meanwhile. The node's own settings are
one immutable ``NodeConfig`` replaced as a whole on a parameter change, so the worker
reads a consistent set without a lock. Saves (service, autosave, final) take a map
snapshot under the session lock and write it with no lock held.

Interface (topics, services, parameters, QoS, fields): docs/node.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, NavSatFix, NavSatStatus, PointCloud2
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from visualization_msgs.msg import MarkerArray

from netvlad_ros.mapdb import CameraIntrinsics, MapDatabase, MapError
from netvlad_ros.model import DescriptorExtractor, ModelFileError
from netvlad_ros.recognition import FramePlan, FrameResult, FrameStatus, RecognitionSession
from netvlad_ros.recognition.session import SESSION_REASONS
from netvlad_ros.ros import messages
from netvlad_ros.ros.conversions import (
    ImageDecodeError,
    compressed_msg_to_bgr,
    image_msg_to_bgr,
    stamp_to_sec,
)
from netvlad_ros.ros.params import PARAMS, NodeConfig, check_values, descriptor, node_config, ros_value
from netvlad_ros.ros.qos import latched_qos, qos_from_name
from netvlad_ros.ros.runner import StartupError
from netvlad_ros.sensors.camera import (
    CAMERA_ERROR_REASONS,
    CameraInfoError,
    intrinsics_for_image,
    intrinsics_from_camera_info,
)
from netvlad_ros.sensors.depth import DEPTH_ERROR_REASONS, DepthPairer
from netvlad_ros.sensors.image_codec import DECODE_ERROR_REASONS

__all__ = ["NODE_NAME", "REJECT_REASONS", "LocalizeNode"]

NODE_NAME = "netvlad_localizer"

#: Every reason an input can be rejected for (diagnostics key ``rejected.<reason>``).
REJECT_REASONS: tuple[str, ...] = (
    *DECODE_ERROR_REASONS,
    *SESSION_REASONS,
    *CAMERA_ERROR_REASONS,
    *DEPTH_ERROR_REASONS,
    "internal_error",
)

_LATENCY_WINDOW = 500


class LocalizeNode(Node):
    """The ``netvlad_localizer`` node. Raises :class:`StartupError` when it cannot start."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        values: dict[str, Any] = {}
        try:
            for spec in PARAMS:
                values[spec.name] = self.declare_parameter(
                    spec.name, ros_value(spec, spec.default), descriptor(spec)
                ).value
        except ParameterException as exc:
            raise StartupError(f"invalid parameter: {exc}") from exc
        values = {s.name: _from_ros(s.kind, values[s.name]) for s in PARAMS}
        unknown = sorted(set(getattr(self, "_parameter_overrides", {})) - set(values) - {"use_sim_time"})
        if unknown:  # a misspelt or obsolete name would otherwise be ignored without a word
            self.get_logger().warning(
                f"ignoring unknown parameters: {', '.join(unknown)} (see localize_node --help)"
            )
        reason = check_values(values)
        if reason is not None:
            raise StartupError(f"invalid parameter: {reason}")
        self._values = values  # executor callbacks only
        self._cfg: NodeConfig = node_config(values)  # replaced as a whole; the worker reads it lock-free

        self._extractor = self._load_model()
        self._session = RecognitionSession(
            self._extractor, self._load_initial_map(self._extractor), self._cfg.session
        )
        # whether the map's calibration is used, or why the documented fallbacks apply
        self.get_logger().info(f"localizer thresholds: {self._session.status()['calibration']}")

        # statistics (guarded by _stats_lock; the executor and the worker both write)
        self._stats_lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._rejects: Counter[str] = Counter({r: 0 for r in REJECT_REASONS})
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._timings: dict[str, deque[float]] = {}
        self._last_diag = (time.monotonic(), 0, 0)
        self._last_save = time.monotonic()
        self._map_dirty = True

        self._camera: CameraIntrinsics | None = None  # from the newest valid camera_info
        self._depth = DepthPairer(self._cfg.depth)

        # newest unprocessed image (executor -> prepare stage) and newest prepared frame
        # (prepare stage -> network stage): one slot each, the latest-frame policy at both
        self._pending: _LatestSlot[tuple[Any, float]] = _LatestSlot()
        self._prepared: _LatestSlot[_Prepared] = _LatestSlot()
        self._described: _LatestSlot[tuple[_Prepared, np.ndarray]] = _LatestSlot()
        # Frames between the start of prepare and the end of the map stage (Little's law: the
        # latency is about frames in flight / rate). Default 1: on 2 cores a second frame in
        # flight buys rate the targets do not need (21 against 17.6 Hz) and slows both frames
        # (client p95 149 against 99 ms; docs/node.md "Benchmark").
        self._in_flight = threading.Semaphore(self._cfg.node.pipeline_frames)

        inputs = MutuallyExclusiveCallbackGroup()
        services = MutuallyExclusiveCallbackGroup()
        timers = MutuallyExclusiveCallbackGroup()
        saver = MutuallyExclusiveCallbackGroup()
        reliable = qos_from_name("reliable")
        self._pose_pub = self.create_publisher(PoseWithCovarianceStamped, "~/pose", reliable)
        self._hyp_pub = self.create_publisher(PointCloud2, "~/hypotheses", reliable)
        self._lc_pub = self.create_publisher(PointCloud2, "~/loop_closures", reliable)
        self._kf_pub = self.create_publisher(PointCloud2, "~/map_keyframes", latched_qos(1))
        self._marker_pub = self.create_publisher(MarkerArray, "~/markers", reliable)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", reliable)
        self._lio_pub = (
            self.create_publisher(Float64MultiArray, "lio_loop/loop_closure_detection", reliable)
            if self._cfg.node.publish_lio_sam_loops
            else None
        )

        n = self._cfg.node
        image_qos = qos_from_name(n.image_qos, n.image_qos_depth)
        if n.compressed:
            self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, image_qos, callback_group=inputs
            )
        else:
            self.create_subscription(Image, "image", self._on_image, image_qos, callback_group=inputs)
        self.create_subscription(
            Odometry, "odom", self._on_odom, qos_from_name("sensor_data", 50), callback_group=inputs
        )
        self.create_subscription(
            NavSatFix, "fix", self._on_fix, qos_from_name("sensor_data", 10), callback_group=inputs
        )
        # Optional: the camera model and aligned depth (metric loop closures, verification).
        self.create_subscription(
            CameraInfo,
            "camera_info",
            self._on_camera_info,
            qos_from_name("sensor_data", 5),
            callback_group=inputs,
        )
        self.create_subscription(Image, "depth", self._on_depth, image_qos, callback_group=inputs)
        self.create_service(Trigger, "~/save_map", self._srv_save_map, callback_group=saver)
        self.create_service(Trigger, "~/reload_map", self._srv_reload_map, callback_group=services)
        self.create_service(SetBool, "~/set_slam_mode", self._srv_set_slam_mode, callback_group=services)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(n.diagnostics_period_s, self._on_timer, callback_group=timers)
        self.create_timer(1.0, self._on_autosave_timer, callback_group=saver)

        # Each stage starts its next item only once the stage after it has taken the previous
        # one (``take_when_free``): a stage never works ahead on a frame that a newer one would
        # replace before it is used (wasted CPU on a 2-core robot: 40 % of the frames at 30 Hz).
        # The raw-message slot before ``prepare`` still keeps only the newest image.
        # The prepare stage also waits for a free place in the pipeline (``pipeline_frames``).
        stages = (
            ("prepare", self._pending, self._prepared, self._in_flight, self._prepare),
            ("network", self._prepared, self._described, None, self._describe),
            ("map", self._described, None, None, self._finish),
        )
        self._workers = [
            threading.Thread(
                target=self._stage,
                args=(name, functools.partial(_take_when_free, slot, after, room), work),
                name=f"netvlad_{name}",
                daemon=True,
            )
            for name, slot, after, room, work in stages
        ]
        for w in self._workers:
            w.start()

    def ready_message(self) -> str:
        """The "ready" log line (logged by the runner once the executor exists)."""
        ex = self._extractor
        status = self._session.status()
        return (
            f"ready: mode={status['mode']}, map={status['map_size']} keyframes "
            f"({self._cfg.node.map_path or 'empty'}), model {ex.fingerprint[:12]} {ex.dim}-D on "
            f"{ex.device} ({getattr(ex, 'runtime', 'torch')}), "
            f"input {'image/compressed' if self._cfg.node.compressed else 'image'}"
        )

    # ------------------------------------------------------------------ start-up
    def _load_model(self) -> DescriptorExtractor:
        path = self._cfg.node.model_path or None
        if path is not None and not Path(path).is_file():
            raise StartupError(f"model file {path} does not exist")
        try:
            return DescriptorExtractor(path, self._cfg.extractor, batch_size=1)
        except (ModelFileError, OSError, ValueError, RuntimeError) as exc:
            raise StartupError(f"cannot load model {path or '(built-in default)'}: {exc}") from exc

    def _read_map(self, path: str, extractor: DescriptorExtractor) -> MapDatabase:
        return MapDatabase.load(path, expected_model_fingerprint=extractor.fingerprint)

    def _load_initial_map(self, extractor: DescriptorExtractor) -> MapDatabase:
        path = self._cfg.node.map_path
        mode = self._cfg.session.mode
        if not path:
            if mode == "localization":
                raise StartupError("map_path is required in localization mode (or start with mode:=slam)")
            return MapDatabase.create(extractor.dim, extractor.fingerprint)
        if mode == "slam" and not Path(path).exists():
            self.get_logger().info(f"map {path} does not exist yet: starting an empty map (saved there)")
            return MapDatabase.create(extractor.dim, extractor.fingerprint)
        try:
            return self._read_map(path, extractor)
        except (MapError, OSError) as exc:
            raise StartupError(f"cannot load map {path}: {exc}") from exc

    # ------------------------------------------------------------------ bookkeeping
    def _reject(self, reason: str, text: str) -> None:
        with self._stats_lock:
            self._rejects[reason] += 1
        self.get_logger().warning(
            f"{text} [{reason}]", throttle_duration_sec=max(self._cfg.node.warn_throttle_s, 1e-3)
        )

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self._counts[key] += n

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (what /diagnostics reports)."""
        with self._stats_lock:
            lat = np.array(self._latencies) * 1000.0 if self._latencies else None
            timings = {k: float(np.percentile(v, 50)) for k, v in self._timings.items() if v}
            return {
                **{k: self._counts[k] for k in ("received", "processed", "skipped", "accepted")},
                **{
                    k: self._counts[k] for k in ("keyframes_added", "loop_closures", "saves", "save_failures")
                },
                "latency_p50_ms": float(np.percentile(lat, 50)) if lat is not None else math.nan,
                "latency_p95_ms": float(np.percentile(lat, 95)) if lat is not None else math.nan,
                "timings_p50_ms": timings,
                "rejects": dict(self._rejects),
            }

    # ------------------------------------------------------------------ inputs
    def _on_image(self, msg: Any) -> None:
        """Keep only the newest image; never decode or run the network here."""
        now = time.monotonic()
        replaced = self._pending.put((msg, now))
        with self._stats_lock:
            self._counts["received"] += 1
            if replaced:
                self._counts["skipped"] += 1

    def _on_odom(self, msg: Odometry) -> None:
        try:
            p, q = msg.pose.pose.position, msg.pose.pose.orientation
            event = self._session.add_odometry(
                stamp_to_sec(msg.header.stamp),
                np.array([p.x, p.y, p.z]),
                np.array([q.x, q.y, q.z, q.w]),
                msg.header.frame_id,
            )
        except Exception as exc:  # never let one odom message take the callback down
            self._reject("odom_invalid", f"dropped odom message: {exc}")
            return
        if event is not None:
            self._reject(event.reason, event.text)

    def _on_fix(self, msg: NavSatFix) -> None:
        if msg.status.status < NavSatStatus.STATUS_FIX:
            return  # no fix: nothing to store, not an error
        try:
            event = self._session.add_fix(
                stamp_to_sec(msg.header.stamp), msg.latitude, msg.longitude, msg.altitude
            )
        except Exception as exc:
            self._reject("gps_invalid", f"dropped NavSatFix: {exc}")
            return
        if event is not None:
            self._reject(event.reason, event.text)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            camera = intrinsics_from_camera_info(msg.k, msg.d, msg.distortion_model, msg.width, msg.height)
        except CameraInfoError as exc:
            self._reject(exc.reason, f"ignored camera_info: {exc}")
            return
        except Exception as exc:
            self._reject("camera_bad_matrix", f"ignored camera_info: {exc}")
            return
        self._camera = camera

    def _on_depth(self, msg: Image) -> None:
        try:
            self._depth.add(stamp_to_sec(msg.header.stamp), msg)
        except Exception as exc:
            self._reject("depth_malformed", f"ignored depth image: {exc}")

    def _camera_for(self, width: int, height: int) -> CameraIntrinsics | None:
        """The intrinsics of an image of this size: camera_info (scaled to a resize), else the fallback."""
        camera = self._camera
        if camera is not None:
            try:
                return intrinsics_for_image(camera, width, height)
            except CameraInfoError as exc:
                self._reject(exc.reason, f"camera_info not used: {exc}")
        return self._cfg.session.camera.intrinsics(width, height)

    def _depth_for(self, stamp: float, width: int, height: int) -> np.ndarray | None:
        """The aligned depth of an image, or None (why is counted) when depth is being published."""
        if not len(self._depth):
            return None  # no depth stream: not an error
        self._depth.wait_for(stamp)  # depth often comes a little after its colour image
        found = self._depth.lookup(stamp, width, height)
        if found.depth is None:
            self._reject(
                found.reason or "depth_missing", f"no depth for the image at {stamp:.3f}: {found.detail}"
            )
        return found.depth

    # ------------------------------------------------------------------ the worker stages
    def _stage(self, name: str, take: Callable[[], Any], work: Callable[[Any], bool]) -> None:
        """Run ``work`` on each item ``take`` returns until it returns None (the slot is closed).

        ``work`` returns True when it handed the frame to the next stage; otherwise (finished,
        dropped, failed) the frame leaves the pipeline and its place is freed.
        """
        while (item := take()) is not None:
            handed_over = False
            try:
                handed_over = work(item)
            except Exception as exc:  # never let one frame take the node down
                self._reject("internal_error", f"error in the {name} stage: {exc!r}")
                self.get_logger().debug(traceback.format_exc())
            finally:
                if not handed_over:
                    self._in_flight.release()

    def _hand_over(self, slot: _LatestSlot[T], item: T) -> None:
        """Put ``item`` into the next stage's slot; a frame it replaces leaves the pipeline."""
        if slot.put(item):
            self._count("skipped")  # a newer frame took its place before the next stage
            self._in_flight.release()

    def _prepare(self, pending: tuple[Any, float]) -> bool:
        """Stage 1: decode the newest image, apply the session's rules, preprocess it."""
        msg, received = pending
        cfg = self._cfg
        t0 = time.perf_counter()
        try:
            if cfg.node.compressed:
                bgr = compressed_msg_to_bgr(msg)
            else:
                bgr = image_msg_to_bgr(msg, cfg.node.scaling16)
        except ImageDecodeError as exc:
            self._reject(exc.reason, f"dropped image: {exc}")
            return False
        t1 = time.perf_counter()
        plan = self._session.begin(stamp_to_sec(msg.header.stamp), bgr)
        if isinstance(plan, FrameResult):  # rejected, or not a keyframe: no network
            self._finish_frame(plan, msg.header.stamp, received, cfg, {"decode": (t1 - t0) * 1e3})
            return False
        h, w = bgr.shape[:2]
        plan = dataclasses.replace(
            plan, camera=self._camera_for(w, h), depth=self._depth_for(plan.stamp, w, h)
        )
        prepared = self._session.prepare(plan)
        t2 = time.perf_counter()
        timings = {"decode": (t1 - t0) * 1e3, "preprocess": (t2 - t1) * 1e3}
        self._hand_over(self._prepared, _Prepared(plan, prepared, msg.header.stamp, received, timings))
        return True

    def _describe(self, item: _Prepared) -> bool:
        """Stage 2: the network."""
        t0 = time.perf_counter()
        descriptor = self._session.describe(item.plan, item.prepared)
        item.timings["network"] = (time.perf_counter() - t0) * 1e3
        self._hand_over(self._described, (item, descriptor))
        return True

    def _finish(self, described: tuple[_Prepared, np.ndarray]) -> bool:
        """Stage 3: the map (search, verification, keyframes, loop closures) and publishing."""
        item, descriptor = described
        res = self._session.finish(item.plan, descriptor, item.prepared)
        self._finish_frame(res, item.stamp_msg, item.received, self._cfg, item.timings)
        return False  # the frame leaves the pipeline

    def _finish_frame(
        self, res: FrameResult, stamp_msg: Any, received: float, cfg: NodeConfig, timings: dict[str, float]
    ) -> None:
        """Count, warn about and publish one frame's result."""
        for event in res.events:
            self._reject(event.reason, event.text)
        if res.status in (FrameStatus.REJECTED, FrameStatus.STALE):
            self._reject(res.reason or "internal_error", res.text or "dropped image")
            return
        t1 = time.perf_counter()
        if res.status == FrameStatus.LOCALIZED:
            self._publish_localization(res, stamp_msg, cfg)
        elif res.status == FrameStatus.KEYFRAME:
            self._publish_keyframe(res, stamp_msg, cfg)
        timings = {**timings, "publish": (time.perf_counter() - t1) * 1e3}
        if "finish" in res.timings_ms:
            timings["map"] = res.timings_ms["finish"]  # search, verification, keyframe + loop closure
            for part in ("search", "verification"):  # of the map stage
                if part in res.timings_ms:
                    timings[part] = res.timings_ms[part]
        with self._stats_lock:
            self._counts["processed"] += 1
            if res.status != FrameStatus.NOT_KEYFRAME:
                self._latencies.append(time.monotonic() - received)
                for key, ms in timings.items():
                    self._timings.setdefault(key, deque(maxlen=_LATENCY_WINDOW)).append(ms)

    def _publish_localization(self, res: FrameResult, stamp_msg: Any, cfg: NodeConfig) -> None:
        loc = res.localization
        assert loc is not None
        frame = cfg.node.map_frame
        self._hyp_pub.publish(messages.hypotheses_table(loc.hypotheses, stamp_msg, frame))
        if loc.accepted and loc.best_place is not None:
            self._count("accepted")
            self._pose_pub.publish(
                messages.pose_msg(
                    loc.best_place,
                    loc.confidence,
                    stamp_msg,
                    frame,
                    cfg.node.pose_sigma_m,
                    cfg.node.pose_sigma_deg,
                )
            )
        if cfg.node.publish_markers and loc.best_place is not None:
            marker = messages.match_marker(loc.best_place, loc.confidence, loc.accepted, stamp_msg, frame)
            self._marker_pub.publish(messages.marker_array([marker]))

    def _publish_keyframe(self, res: FrameResult, stamp_msg: Any, cfg: NodeConfig) -> None:
        self._map_dirty = True
        closures = res.loop_closure.accepted if res.loop_closure is not None else ()
        with self._stats_lock:
            self._counts["keyframes_added"] += 1
            self._counts["loop_closures"] += len(closures)
        if not closures:
            return
        frame = cfg.node.map_frame
        self._lc_pub.publish(messages.loop_closures_table(closures, stamp_msg, frame))
        if self._lio_pub is not None:
            for lc in closures:
                self._lio_pub.publish(messages.lio_sam_loop_msg(lc))
        if cfg.node.publish_markers:
            markers = messages.loop_closure_markers(closures, res.loop_positions, stamp_msg, frame)
            self._marker_pub.publish(messages.marker_array(markers))
        for lc in closures:
            self.get_logger().info(
                f"loop closure: keyframe {lc.query_id} -> {lc.match_id} (score {lc.score:.3f}, inliers {lc.inliers})"
            )

    # ------------------------------------------------------------------ timers
    def _on_timer(self) -> None:
        now = time.monotonic()
        s = self.stats()
        with self._stats_lock:
            t0, rec0, proc0 = self._last_diag
            self._last_diag = (now, s["received"], s["processed"])
        dt = max(now - t0, 1e-6)
        status = self._session.status()
        ex = self._extractor
        values: dict[str, Any] = {
            "mode": status["mode"],
            "input_rate_hz": (s["received"] - rec0) / dt,
            "processed_rate_hz": (s["processed"] - proc0) / dt,
            "frames_received": s["received"],
            "frames_processed": s["processed"],
            "frames_skipped": s["skipped"],
            "places_accepted": s["accepted"],
            "latency_p50_ms": s["latency_p50_ms"],
            "latency_p95_ms": s["latency_p95_ms"],
            "map_size": status["map_size"],
            "map_generation": status["generation"],
            "unsaved_keyframes": status["unsaved_keyframes"],
            "calibration": status["calibration"],
            "localizer.min_inliers": f"{status['min_inliers']} ({status['min_inliers_source']})",
            "loop_closure.min_score": _threshold_text(
                status["loop_min_score"], status["loop_min_score_source"]
            ),
            "keyframes_added": s["keyframes_added"],
            "loop_closures": s["loop_closures"],
            "saves": s["saves"],
            "save_failures": s["save_failures"],
            "device": str(ex.device),
            "runtime": str(getattr(ex, "runtime", "torch")),
            "model_fingerprint": ex.fingerprint,
            "rejected_total": sum(s["rejects"].values()),
        }
        values.update({f"time_ms.{k}": v for k, v in sorted(s["timings_p50_ms"].items())})
        values.update({f"rejected.{k}": n for k, n in sorted(s["rejects"].items())})
        warn = s["rejects"]["internal_error"] or s["save_failures"]
        level = DiagnosticStatus.WARN if warn else DiagnosticStatus.OK
        text = f"{status['mode']}: {values['processed_rate_hz']:.1f} Hz processed, {status['map_size']} keyframes"
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
            self._map_dirty = False
            ids, pos, stamps = self._session.map_keyframes()
            frame = self._cfg.node.map_frame
            self._kf_pub.publish(
                messages.keyframes_table(ids, pos, stamps, frame, self.get_clock().now().to_msg())
            )

    def _save_target(self) -> str:
        n = self._cfg.node
        return n.save_path or n.map_path

    def _save(self, why: str, secure_first: bool = False) -> tuple[bool, str]:
        path = self._save_target()
        if not path:
            return False, "no save_path or map_path parameter set"
        try:
            res = self._session.save(path, secure_first=secure_first)
        except (MapError, OSError, ValueError) as exc:
            self._count("save_failures")
            return False, f"cannot save map to {path}: {exc}"
        self._count("saves")
        self._last_save = time.monotonic()
        return True, (
            f"saved {res.keyframes} keyframes to {path} ({why}, {res.seconds:.2f} s; calibration: {res.calibration})"
        )

    def _on_autosave_timer(self) -> None:
        period = self._cfg.node.autosave_period_s
        if period <= 0 or self._session.mode != "slam" or self._session.unsaved_changes == 0:
            return
        if time.monotonic() - self._last_save < period or not self._save_target():
            return
        ok, text = self._save("autosave")
        if ok:
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text, throttle_duration_sec=60.0)

    # ------------------------------------------------------------------ services
    def _srv_save_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self._save("~/save_map")
        if response.success:
            self.get_logger().info(response.message)
        return response

    def _srv_reload_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        path = self._cfg.node.map_path
        if not path:
            response.success, response.message = False, "no map_path parameter set"
            return response
        try:
            db = self._read_map(path, self._extractor)  # outside any lock: frames keep flowing
            self._session.replace_map(db)
        except (MapError, OSError, ValueError) as exc:
            response.success, response.message = False, f"cannot load map {path} (old map kept): {exc}"
            return response
        self._map_dirty = True
        response.success, response.message = True, f"loaded {len(db)} keyframes from {path}"
        self.get_logger().info(response.message)
        self.get_logger().info(f"localizer thresholds: {self._session.status()['calibration']}")
        return response

    def _srv_set_slam_mode(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        mode = "slam" if request.data else "localization"
        result = self.set_parameters([Parameter("mode", Parameter.Type.STRING, mode)])[0]
        response.success = bool(result.successful)
        response.message = f"mode is now {mode}" if result.successful else result.reason
        return response

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate the whole new set; when valid, apply it (rclpy checked types, ranges, read-only)."""
        by_name = {s.name: s for s in PARAMS}
        values = dict(self._values)
        for p in params:
            if p.name in by_name:
                values[p.name] = _from_ros(by_name[p.name].kind, p.value)
        reason = check_values(values)
        if reason is not None:
            return SetParametersResult(successful=False, reason=reason)
        old = self._cfg
        self._values = values
        self._cfg = node_config(values)
        self._session.configure(self._cfg.session)
        self._depth.params = self._cfg.depth  # tolerance_s, wait_s (buffer_size is read-only)
        if self._cfg.session.mode != old.session.mode:
            self.get_logger().info(f"mode switched to {self._cfg.session.mode}")
        if self._cfg.node.map_frame != old.node.map_frame:
            self._map_dirty = True
        if self._cfg.extractor.max_side != old.extractor.max_side and hasattr(self._extractor, "max_side"):
            self._extractor.max_side = self._cfg.extractor.max_side
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Stop the workers (frames in progress finish), then save a changed slam map."""
        self._pending.close(discard=True)  # no new frames; frames already prepared are finished
        for slot, worker in zip((self._prepared, self._described, None), self._workers, strict=True):
            worker.join(timeout=30.0)
            if slot is not None:
                slot.close()
        if self._session.mode == "slam" and self._session.unsaved_changes and self._save_target():
            ok, text = self._save("shutdown", secure_first=True)
            (self.get_logger().info if ok else self.get_logger().error)(text)


T = TypeVar("T")


class _LatestSlot(Generic[T]):
    """A one-item hand-over between threads that keeps only the newest item (the latest-frame
    policy): ``put`` replaces an item not yet taken (and says so); ``take`` blocks until there is
    one, and returns None once the slot is closed and empty."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: T) -> bool:
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify_all()  # takers and wait_empty() share the condition
            return replaced

    def take(self) -> T | None:
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait()
            item, self._item = self._item, None
            self._cond.notify_all()  # wake wait_empty()
            return item

    def wait_empty(self) -> None:
        """Block until the item has been taken (or the slot is closed)."""
        with self._cond:
            while self._item is not None and not self._closed:
                self._cond.wait()

    def close(self, discard: bool = False) -> None:
        with self._cond:
            self._closed = True
            if discard:
                self._item = None
            self._cond.notify_all()


def _take_when_free(
    slot: _LatestSlot[T], after: _LatestSlot[Any] | None, room: threading.Semaphore | None = None
) -> T | None:
    """The next item of ``slot``, once ``after`` (the next stage's input) is empty and, with
    ``room``, a place in the pipeline is free (released when the frame leaves it; also when
    the slot turns out closed)."""
    if after is not None:
        after.wait_empty()
    if room is None:
        return slot.take()
    room.acquire()
    item = slot.take()
    if item is None:
        room.release()
    return item


@dataclass
class _Prepared:
    """A frame between the worker stages."""

    plan: FramePlan
    prepared: Any
    stamp_msg: Any
    received: float
    timings: dict[str, float]


def _from_ros(kind: str, value: Any) -> Any:
    """A parameter value as the params dataclasses hold it (DOUBLE_ARRAY lists become tuples)."""
    if kind == "float_array":
        if value is None:
            return ()  # `[]` in YAML arrives untyped
        if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
            return tuple(float(v) for v in value)
    return value  # anything else: check_values refuses it, naming the parameter


def _threshold_text(value: float | None, source: str) -> str:
    """A loop-closure threshold for diagnostics: ``0.7650 (auto)``; ``none yet`` before the first
    keyframe; ``no candidates yet`` while the auto rule has too few keyframe pairs."""
    if value is None:
        return f"none yet ({source})"
    if math.isinf(value):
        return f"no candidates yet ({source}: too few keyframe pairs)"
    return f"{value:.4f} ({source})"
