"""Build the nodes' output messages from results (pose, tables, markers, diagnostics, paths).

Pure functions: results in, standard messages out; the nodes only publish them. The
localize node's come from recognition results; the pose-graph node's (``path_msg``,
``pose_covariance_msg``, ``transform_msg``, ``graph_closure_markers``) from the pose graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseStamped, PoseWithCovarianceStamped, TransformStamped
from nav_msgs.msg import Path
from numpy.typing import ArrayLike
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import ColorRGBA, Float64MultiArray
from visualization_msgs.msg import Marker, MarkerArray

from netvlad_ros.posegraph import DOWNWEIGHTED_BELOW, LoopClosureState, Trajectory, position_quaternion
from netvlad_ros.recognition import Hypothesis, LoopClosure, Place
from netvlad_ros.ros.conversions import sec_to_stamp
from netvlad_ros.ros.tables import (
    HYPOTHESIS_DTYPE,
    KEYFRAME_DTYPE,
    LOOP_CLOSURE_DTYPE,
    array_to_pointcloud2,
)

__all__ = [
    "diagnostics_msg",
    "graph_closure_markers",
    "hypotheses_table",
    "keyframes_table",
    "lio_sam_loop_msg",
    "loop_closure_markers",
    "loop_closures_table",
    "marker_array",
    "match_marker",
    "path_msg",
    "pose_covariance_msg",
    "pose_msg",
    "transform_msg",
]

_MIN_CONFIDENCE_FOR_COVARIANCE = 0.01


def pose_msg(
    place: Place, confidence: float, stamp: Time, frame_id: str, sigma_m: float, sigma_deg: float
) -> PoseWithCovarianceStamped:
    """The accepted place's keyframe pose; covariance diagonal ``(sigma / max(confidence, 0.01))^2``.

    x, y, z get ``sigma_m``, roll, pitch, yaw get ``sigma_deg`` (in radians); a
    confident match therefore has a tight covariance, a marginal one a wide one.
    """
    msg = PoseWithCovarianceStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    p = np.asarray(place.position, dtype=np.float64)
    q = np.asarray(place.orientation, dtype=np.float64)
    msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = (float(v) for v in p)
    o = msg.pose.pose.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in q)
    c = max(float(confidence), _MIN_CONFIDENCE_FOR_COVARIANCE)
    var_p = (sigma_m / c) ** 2
    var_r = (math.radians(sigma_deg) / c) ** 2
    cov = np.zeros((6, 6))
    cov[np.arange(3), np.arange(3)] = var_p
    cov[np.arange(3, 6), np.arange(3, 6)] = var_r
    msg.pose.covariance = cov.reshape(-1).tolist()
    return msg


def hypotheses_table(hypotheses: Sequence[Hypothesis], stamp: Time, frame_id: str) -> PointCloud2:
    """``~/hypotheses``: one HYPOTHESIS_DTYPE row per hypothesis, best first (zero rows allowed)."""
    rows = np.zeros(len(hypotheses), HYPOTHESIS_DTYPE)
    for r, h in enumerate(hypotheses):
        rows[r]["x"], rows[r]["y"], rows[r]["z"] = h.position
        rows[r]["qx"], rows[r]["qy"], rows[r]["qz"], rows[r]["qw"] = h.orientation
        rows[r]["score"] = h.score
        rows[r]["rank"] = h.rank
        rows[r]["keyframe_id"] = h.keyframe_id
        rows[r]["keyframe_stamp"] = h.stamp
    return array_to_pointcloud2(rows, frame_id, stamp)


def loop_closures_table(closures: Sequence[LoopClosure], stamp: Time, frame_id: str) -> PointCloud2:
    """``~/loop_closures``: one LOOP_CLOSURE_DTYPE row per accepted loop closure.

    ``verified`` is 1 when geometric verification ran (``inliers`` set). The relative pose
    columns hold ``T_match_query`` (body frames) and ``covariance`` its 36 row-major values,
    NaN where the closure has none; ``inlier_ratio`` and ``spread`` NaN when not measured.
    """
    rows = np.zeros(len(closures), LOOP_CLOSURE_DTYPE)
    for r, lc in enumerate(closures):
        row = rows[r]
        row["query_id"], row["match_id"] = lc.query_id, lc.match_id
        row["query_stamp"], row["match_stamp"] = lc.query_stamp, lc.match_stamp
        row["score"] = lc.score
        row["inliers"] = lc.inliers or 0
        row["verified"] = 1 if lc.inliers is not None else 0
        # getattr: LoopClosure gains these fields with metric verification (CONTRACTS.md)
        row["scale_known"] = 1 if getattr(lc, "scale_known", False) else 0
        row["inlier_ratio"] = _number(getattr(lc, "inlier_ratio", None))
        row["spread"] = _number(getattr(lc, "spread", None))
        pose = getattr(lc, "T_match_query", None)
        t, q = np.full(3, math.nan), np.full(4, math.nan)
        if pose is not None and np.all(np.isfinite(pose)):
            t, q = position_quaternion(pose)
        row["tx"], row["ty"], row["tz"] = t
        row["qx"], row["qy"], row["qz"], row["qw"] = q
        cov = getattr(lc, "covariance", None)
        row["covariance"] = math.nan if cov is None else np.asarray(cov, dtype=np.float64).reshape(36)
    return array_to_pointcloud2(rows, frame_id, stamp)


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def lio_sam_loop_msg(closure: LoopClosure) -> Float64MultiArray:
    """LIO-SAM's external loop message: ``data = [query_stamp, match_stamp]`` (seconds).

    LIO-SAM (``loopInfoHandler`` on ``lio_loop/loop_closure_detection``) keeps messages of
    exactly two values, finds its keyframes nearest those times and registers them itself.
    """
    return Float64MultiArray(data=[float(closure.query_stamp), float(closure.match_stamp)])


def keyframes_table(
    ids: np.ndarray, positions: np.ndarray, stamps: np.ndarray, frame_id: str, stamp: Time
) -> PointCloud2:
    """``~/map_keyframes``: one KEYFRAME_DTYPE row per map keyframe."""
    rows = np.zeros(len(ids), KEYFRAME_DTYPE)
    if len(ids):
        pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        rows["x"], rows["y"], rows["z"] = pos[:, 0], pos[:, 1], pos[:, 2]
        rows["keyframe_id"] = np.asarray(ids)
        rows["stamp"] = np.asarray(stamps)
    return array_to_pointcloud2(rows, frame_id, stamp)


def _color(r: float, g: float, b: float, a: float = 1.0) -> ColorRGBA:
    return ColorRGBA(r=float(r), g=float(g), b=float(b), a=float(a))


def _point(p: Iterable[float]) -> Point:
    x, y, z = (float(v) for v in p)
    return Point(x=x, y=y, z=z)


def match_marker(place: Place, confidence: float, accepted: bool, stamp: Time, frame_id: str) -> Marker:
    """A sphere on the best-matching keyframe: green when accepted, red otherwise; alpha from confidence."""
    m = Marker()
    m.header.stamp = stamp
    m.header.frame_id = frame_id
    m.ns, m.id = "best_match", 0
    m.type, m.action = Marker.SPHERE, Marker.ADD
    m.pose.position = _point(place.position)
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = 1.0
    m.color = (
        _color(0.1, 0.9, 0.1, 0.4 + 0.6 * min(max(confidence, 0.0), 1.0))
        if accepted
        else _color(0.9, 0.1, 0.1, 0.5)
    )
    m.lifetime = Duration(sec=5)
    return m


def loop_closure_markers(
    closures: Sequence[LoopClosure], positions: dict[int, np.ndarray], stamp: Time, frame_id: str
) -> list[Marker]:
    """One LINE_LIST marker per loop closure (ns ``loop_closures``, id = query keyframe id) joining the
    two keyframes; closures whose keyframes have no finite position are left out."""
    out = []
    for lc in closures:
        a, b = positions.get(lc.query_id), positions.get(lc.match_id)
        if a is None or b is None or not (np.isfinite(a).all() and np.isfinite(b).all()):
            continue
        m = Marker()
        m.header.stamp = stamp
        m.header.frame_id = frame_id
        m.ns, m.id = "loop_closures", int(lc.query_id) % (1 << 31)
        m.type, m.action = Marker.LINE_LIST, Marker.ADD
        m.pose.orientation.w = 1.0
        m.scale.x = 0.1
        m.color = _color(1.0, 0.6, 0.0)
        m.points = [_point(a), _point(b)]
        out.append(m)
    return out


def marker_array(markers: Sequence[Marker]) -> MarkerArray:
    """Wrap markers in a MarkerArray."""
    return MarkerArray(markers=list(markers))


def diagnostics_msg(
    name: str, hardware_id: str, level: bytes, message: str, values: dict[str, Any], stamp: Time
) -> DiagnosticArray:
    """A DiagnosticArray with one status (``level``: ``DiagnosticStatus.OK``/``WARN``/``ERROR``);
    values are written with ``str`` (floats with 3 decimals)."""
    kv = []
    for k, v in values.items():
        text = f"{v:.3f}" if isinstance(v, float) else str(v)
        kv.append(KeyValue(key=str(k), value=text))
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id, values=kv)
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = [status]
    return arr


# ---------------------------------------------------------------------------- pose graph outputs


def _pose(matrix: ArrayLike) -> Pose:
    p, q = position_quaternion(matrix)
    out = Pose()
    out.position.x, out.position.y, out.position.z = (float(v) for v in p)
    o = out.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in q)
    return out


def path_msg(trajectory: Trajectory, frame_id: str) -> Path:
    """``~/path``: every keyframe at its optimised pose, stamped with the keyframe's stamp.

    The header stamp is the newest keyframe's (zero when empty).
    """
    msg = Path()
    msg.header.frame_id = frame_id
    poses = []
    # Python floats (tolist) and in-place field writes: 2.4x faster than numpy scalars into
    # new sub-messages (10k keyframes: 108-200 ms vs 279 ms on the loaded 2-vCPU EPYC)
    rows = zip(
        trajectory.stamps.tolist(),
        trajectory.positions.tolist(),
        trajectory.orientations.tolist(),
        strict=True,
    )
    for stamp, (x, y, z), (qx, qy, qz, qw) in rows:
        ps = PoseStamped()
        ps.header.frame_id = frame_id
        ps.header.stamp = sec_to_stamp(stamp)
        p, o = ps.pose.position, ps.pose.orientation
        p.x, p.y, p.z = x, y, z
        o.x, o.y, o.z, o.w = qx, qy, qz, qw
        poses.append(ps)
    msg.poses = poses
    if len(trajectory):
        msg.header.stamp = sec_to_stamp(float(trajectory.stamps[-1]))
    return msg


def pose_covariance_msg(
    pose: ArrayLike, covariance: ArrayLike | None, stamp: Time, frame_id: str
) -> PoseWithCovarianceStamped:
    """A 4x4 pose with its 6x6 covariance (ROS order; None: all zeros, "unknown")."""
    msg = PoseWithCovarianceStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.pose.pose = _pose(pose)
    if covariance is not None:
        msg.pose.covariance = np.asarray(covariance, dtype=np.float64).reshape(36).tolist()
    return msg


def transform_msg(transform: ArrayLike, stamp: Time, parent: str, child: str) -> TransformStamped:
    """``T_parent_child`` (4x4) as a TransformStamped (e.g. map -> odom)."""
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = parent
    msg.child_frame_id = child
    p = _pose(transform)
    tr = msg.transform
    tr.translation.x, tr.translation.y, tr.translation.z = p.position.x, p.position.y, p.position.z
    tr.rotation = p.orientation
    return msg


def graph_closure_markers(
    states: Sequence[LoopClosureState], positions: dict[int, np.ndarray], stamp: Time, frame_id: str
) -> list[Marker]:
    """Two LINE_LIST markers joining the optimised positions (key -> (3,)) of each closure's keyframes:
    ns ``accepted`` (green) and ``downweighted`` (red: robust weight below DOWNWEIGHTED_BELOW,
    i.e. rejected by the kernel). An empty set is sent as a DELETE so stale lines disappear."""
    out = []
    for ns, color, chosen in (
        ("accepted", _color(0.1, 0.8, 0.1), [s for s in states if s.weight >= DOWNWEIGHTED_BELOW]),
        ("downweighted", _color(0.9, 0.1, 0.1), [s for s in states if s.weight < DOWNWEIGHTED_BELOW]),
    ):
        m = Marker()
        m.header.stamp = stamp
        m.header.frame_id = frame_id
        m.ns, m.id = ns, 0
        m.type = Marker.LINE_LIST
        m.pose.orientation.w = 1.0
        m.scale.x = 0.15
        m.color = color
        for s in chosen:
            a, b = positions.get(s.match_key), positions.get(s.query_key)
            if a is not None and b is not None:
                m.points.extend((_point(a), _point(b)))
        m.action = Marker.ADD if m.points else Marker.DELETE
        out.append(m)
    return out
