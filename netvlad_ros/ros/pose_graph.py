"""``PoseGraphNode``: the ``netvlad_pose_graph`` node, a reference SLAM back end for the loop closures.

What it does is ``posegraph.LiveGraph`` (ROS-free): keyframe poses are the odometry at the
keyframes' stamps, odometry between-factors join consecutive keyframes, each loop closure
is a between-factor with its published covariance under a robust kernel, iSAM2 updates
incrementally. This class only turns messages into LiveGraph calls and its state into
messages. It is also the example an integrator reads: everything a back end needs from
the localize node is in the two tables it subscribes to.

Inputs (relative names, remappable; the defaults meet a ``netvlad_localizer`` in the same
namespace):

- ``odom`` (nav_msgs/Odometry, BEST_EFFORT depth ``ODOM_QUEUE_DEPTH``: matches either kind of
  publisher; 10 s of 100 Hz odometry, so a slow graph update or a loaded CPU drops none);
- ``netvlad_localizer/map_keyframes`` (PointCloud2 table, transient local): ids and stamps;
- ``netvlad_localizer/loop_closures`` (PointCloud2 table, RELIABLE depth 100).

Outputs: ``~/path`` (nav_msgs/Path, transient local), ``~/pose`` (PoseWithCovarianceStamped:
the newest odometry pose corrected, with the newest keyframe's marginal covariance),
``~/map_to_odom`` (TransformStamped, transient local: tf2 is not on PyPI), ``~/markers``
(closures on the optimised graph) and ``/diagnostics``. All callbacks share the node's
default (mutually exclusive) callback group: the graph has one owner, no locks.

Interface: docs/ros_interface.md; the back end: docs/posegraph.md.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import MarkerArray

from netvlad_ros.config import ConfigError, build, check_fields, param, specs
from netvlad_ros.posegraph import LIVE_REASONS, LiveGraph, LiveGraphParams, PoseGraphError
from netvlad_ros.ros import messages
from netvlad_ros.ros.conversions import stamp_to_sec
from netvlad_ros.ros.params import descriptor, render_params_yaml, ros_value
from netvlad_ros.ros.qos import latched_qos, qos_from_name
from netvlad_ros.ros.runner import StartupError
from netvlad_ros.ros.tables import TableError, pointcloud2_to_array

__all__ = ["NODE_NAME", "PARAMS", "REJECT_REASONS", "PoseGraphNode", "PoseGraphNodeParams"]

NODE_NAME = "netvlad_pose_graph"

#: Odometry messages the subscription queues while a callback runs (about 1 KB each).
ODOM_QUEUE_DEPTH = 1000

#: Every reason an input is dropped (diagnostics key ``rejected.<reason>``).
REJECT_REASONS: tuple[str, ...] = (*LIVE_REASONS, "table_invalid", "internal_error")

#: The table columns this node reads (a producer may send more).
_KEYFRAME_COLUMNS = np.dtype([("keyframe_id", "<u4"), ("stamp", "<f8")])
_CLOSURE_COLUMNS = np.dtype(
    [
        ("query_id", "<u4"),
        ("match_id", "<u4"),
        ("tx", "<f4"),
        ("ty", "<f4"),
        ("tz", "<f4"),
        ("qx", "<f4"),
        ("qy", "<f4"),
        ("qz", "<f4"),
        ("qw", "<f4"),
        ("scale_known", "u1"),
        ("covariance", "<f8", (36,)),
    ]
)


@dataclass(frozen=True)
class PoseGraphNodeParams:
    """What only the ROS node has: frames, what it publishes, diagnostics."""

    map_frame: str = param("map", "frame_id of ~/path, ~/pose, ~/markers; parent frame of ~/map_to_odom")
    odom_frame: str = param(
        "", "child frame of ~/map_to_odom; '' = the odometry messages' frame_id ('odom' when empty)"
    )
    publish_markers: bool = param(True, "publish ~/markers: loop closures on the optimised graph")
    diagnostics_period_s: float = param(1.0, "period of /diagnostics", read_only=True, range=(0.05, 3600.0))
    warn_throttle_s: float = param(
        5.0, "minimum seconds between two warnings of one kind (bad input)", range=(0.0, 3600.0)
    )


PARAMS = (*specs(PoseGraphNodeParams), *specs(LiveGraphParams))

YAML_HEADER = (
    "# Parameters of the netvlad_pose_graph node (executable pose_graph_node), with their defaults.",
    "# Loaded by launch/slam.launch.py. Generated from the params dataclasses by",
    "#   python -m netvlad_ros.ros.pose_graph > config/pose_graph.yaml",
    "# (test/ros/test_ros_pose_graph_launch.py checks it is current). Back end: docs/posegraph.md;",
    "# topics: docs/ros_interface.md. (read-only) parameters cannot change while the node runs.",
)


class PoseGraphNode(Node):
    """The ``netvlad_pose_graph`` node. Raises :class:`StartupError` when it cannot start."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        try:
            values = {
                s.name: self.declare_parameter(s.name, ros_value(s, s.default), descriptor(s)).value
                for s in PARAMS
            }
        except ParameterException as exc:
            raise StartupError(f"invalid parameter: {exc}") from exc
        unknown = sorted(set(getattr(self, "_parameter_overrides", {})) - set(values) - {"use_sim_time"})
        if unknown:
            self.get_logger().warning(
                f"ignoring unknown parameters: {', '.join(unknown)} (see pose_graph_node --help)"
            )
        try:
            self._cfg = build(PoseGraphNodeParams, values)
            check_fields(self._cfg)
            self._live = LiveGraph(build(LiveGraphParams, values))
        except ConfigError as exc:
            raise StartupError(f"invalid parameter: {exc}") from exc
        self._values = values
        self._counts = {"odometry_received": 0, "keyframe_tables": 0, "loop_closure_tables": 0}
        self._node_rejects = {"table_invalid": 0, "internal_error": 0}
        self._odom: tuple[Any, np.ndarray, str] | None = None  # newest (stamp msg, T_odom_body, frame)
        self._published_version = -1
        self._T_map_odom = np.eye(4)
        self._covariance: np.ndarray | None = None

        reliable = qos_from_name("reliable")
        self._path_pub = self.create_publisher(Path, "~/path", latched_qos(1))
        self._pose_pub = self.create_publisher(PoseWithCovarianceStamped, "~/pose", reliable)
        self._tf_pub = self.create_publisher(TransformStamped, "~/map_to_odom", latched_qos(1))
        self._marker_pub = self.create_publisher(MarkerArray, "~/markers", latched_qos(1))
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", reliable)
        self.create_subscription(
            Odometry, "odom", self._guard(self._on_odom), qos_from_name("sensor_data", ODOM_QUEUE_DEPTH)
        )
        self.create_subscription(
            PointCloud2, "netvlad_localizer/map_keyframes", self._guard(self._on_keyframes), latched_qos(1)
        )
        self.create_subscription(
            PointCloud2,
            "netvlad_localizer/loop_closures",
            self._guard(self._on_loop_closures),
            qos_from_name("reliable", 100),
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(self._cfg.diagnostics_period_s, self._guard(self._on_timer))

    def ready_message(self) -> str:
        """The "ready" log line (logged by the runner once the executor exists)."""
        g = self._live.params.graph
        return f"ready: pose graph, kernel {g.loop_kernel} {g.loop_kernel_param:g}, map frame {self._cfg.map_frame}"

    def shutdown(self) -> None:
        """Nothing to stop or save (the graph lives in memory; see docs/posegraph.md, Left out)."""

    # ------------------------------------------------------------------ inputs
    def _on_odom(self, msg: Odometry) -> None:
        self._counts["odometry_received"] += 1
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        stamp = stamp_to_sec(msg.header.stamp)
        before = sum(self._live.rejects.values())
        reason = self._live.add_odometry(stamp, [p.x, p.y, p.z], [q.x, q.y, q.z, q.w])
        if reason is not None and reason != "odom_time_backwards":  # that one is kept (a restart)
            self._warn()
            return
        pose = self._live.odometry_pose(stamp)
        if pose is not None:
            self._odom = (msg.header.stamp, pose, msg.header.frame_id)
        self._after_input(before)  # keyframes that waited for this odometry may have joined
        self._publish_pose()

    def _on_keyframes(self, msg: PointCloud2) -> None:
        rows = self._table(msg, _KEYFRAME_COLUMNS, "keyframe")
        if rows is None:
            return
        self._counts["keyframe_tables"] += 1
        before = sum(self._live.rejects.values())
        self._live.add_keyframes(rows["keyframe_id"], rows["stamp"])
        self._after_input(before)
        self._publish_pose()

    def _on_loop_closures(self, msg: PointCloud2) -> None:
        rows = self._table(msg, _CLOSURE_COLUMNS, "loop closure")
        if rows is None:
            return
        self._counts["loop_closure_tables"] += 1
        before = sum(self._live.rejects.values())
        for r in rows:
            position = np.array([r["tx"], r["ty"], r["tz"]], dtype=np.float64)
            quaternion = np.array([r["qx"], r["qy"], r["qz"], r["qw"]], dtype=np.float64)
            self._live.add_loop_closure(
                int(r["match_id"]),
                int(r["query_id"]),
                (position, quaternion),
                r["covariance"],
                bool(r["scale_known"]),
                update=False,
            )
        self._live.update()
        self._after_input(before)
        self._publish_pose()

    def _table(self, msg: PointCloud2, columns: np.dtype, what: str) -> np.ndarray | None:
        try:
            return pointcloud2_to_array(msg, columns)
        except TableError as exc:
            self._node_rejects["table_invalid"] += 1
            self._warn(f"dropped a {what} table: {exc} [table_invalid]")
            return None

    def _after_input(self, rejects_before: int) -> None:
        """Warn about new rejects; republish the graph's outputs when it changed."""
        if sum(self._live.rejects.values()) > rejects_before:
            self._warn()
        if self._live.version != self._published_version:
            self._publish_graph()

    # ------------------------------------------------------------------ outputs
    def _publish_graph(self) -> None:
        self._published_version = self._live.version
        live = self._live
        self._T_map_odom = live.correction()
        latest = live.latest_key()
        self._covariance = None
        if latest is not None:
            try:
                self._covariance = live.graph.pose_covariance(latest)
            except (PoseGraphError, RuntimeError):  # a marginal GTSAM cannot give: publish none
                self._covariance = None
        frame = self._cfg.map_frame
        trajectory = live.graph.trajectory()
        self._path_pub.publish(messages.path_msg(trajectory, frame))
        if self._cfg.publish_markers:
            positions = dict(zip(trajectory.keys.tolist(), trajectory.positions, strict=True))
            stamp = self.get_clock().now().to_msg()
            markers = messages.graph_closure_markers(live.closure_states(), positions, stamp, frame)
            self._marker_pub.publish(messages.marker_array(markers))

    def _publish_pose(self) -> None:
        """The newest odometry pose corrected by map -> odom (once the graph has a keyframe)."""
        if self._odom is None or self._live.latest_key() is None:
            return
        stamp, T_odom_body, odom_frame = self._odom  # noqa: N806 (the team's name for a transform)
        cfg = self._cfg
        self._pose_pub.publish(
            messages.pose_covariance_msg(
                self._T_map_odom @ T_odom_body, self._covariance, stamp, cfg.map_frame
            )
        )
        child = cfg.odom_frame or odom_frame or "odom"
        self._tf_pub.publish(messages.transform_msg(self._T_map_odom, stamp, cfg.map_frame, child))

    def _on_timer(self) -> None:
        live = self._live
        status = live.status()
        rejects = {**live.rejects, **self._node_rejects}
        values: dict[str, Any] = {
            "keyframes": status.keyframes,
            "loop_closures": status.loop_closures,
            "closures_accepted": status.closures_accepted,
            "closures_downweighted": status.closures_downweighted,
            "pending_closures": status.pending_closures,
            "updates": status.updates,
            "last_update_ms": status.last_update_ms,
            "isam2_rebuilt_with_qr": status.isam2_rebuilt_with_qr,
            **self._counts,
            "rejected_total": sum(rejects.values()),
            **{f"rejected.{k}": rejects[k] for k in sorted(REJECT_REASONS)},
        }
        warn = rejects["internal_error"] or rejects["graph_reset"]
        text = (
            f"{status.keyframes} keyframes, {status.closures_accepted} closures accepted, "
            f"{status.closures_downweighted} down-weighted"
        )
        self._diag_pub.publish(
            messages.diagnostics_msg(
                f"{self.get_fully_qualified_name()}: pose graph",
                NODE_NAME,
                DiagnosticStatus.WARN if warn else DiagnosticStatus.OK,
                text,
                values,
                self.get_clock().now().to_msg(),
            )
        )

    # ------------------------------------------------------------------ helpers
    def _warn(self, text: str | None = None) -> None:
        self.get_logger().warning(
            text or self._live.last_problem, throttle_duration_sec=max(self._cfg.warn_throttle_s, 1e-3)
        )

    def _guard(self, callback: Callable[[Any], None] | Callable[[], None]) -> Callable[..., None]:
        """``callback`` that counts and logs an unexpected error instead of raising it (never a crash)."""

        def run(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as exc:
                self._node_rejects["internal_error"] += 1
                self._warn(
                    f"error in {getattr(callback, '__name__', 'a callback')}: {exc!r} [internal_error]"
                )
                self.get_logger().debug(traceback.format_exc())

        return run

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Apply the node's own parameters (frames, markers, throttle); rclpy refuses the read-only ones."""
        values = dict(self._values)
        values.update({p.name: p.value for p in params if p.name in values})
        try:
            cfg = build(PoseGraphNodeParams, values)
            check_fields(cfg)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._values, self._cfg = values, cfg
        return SetParametersResult(successful=True)


if __name__ == "__main__":
    sys.stdout.write(render_params_yaml(PARAMS, YAML_HEADER))
