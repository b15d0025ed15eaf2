"""Build the node's output messages from recognition results (pose, tables, markers, diagnostics).

Pure functions: results in, standard messages out; the node only publishes them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PoseWithCovarianceStamped
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from netvlad_ros.recognition import Hypothesis, LoopClosure, Place
from netvlad_ros.ros.tables import (
    HYPOTHESIS_DTYPE,
    KEYFRAME_DTYPE,
    LOOP_CLOSURE_DTYPE,
    array_to_pointcloud2,
)

__all__ = [
    "diagnostics_msg",
    "hypotheses_table",
    "keyframes_table",
    "loop_closure_markers",
    "loop_closures_table",
    "marker_array",
    "match_marker",
    "pose_msg",
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

    ``verified`` is 1 when geometric verification ran (``inliers`` set); the relative
    pose columns hold the rotation and the unit translation direction when the
    verifier could compute them (with intrinsics), NaN otherwise.
    """
    rows = np.zeros(len(closures), LOOP_CLOSURE_DTYPE)
    for r, lc in enumerate(closures):
        row = rows[r]
        row["query_id"], row["match_id"] = lc.query_id, lc.match_id
        row["query_stamp"], row["match_stamp"] = lc.query_stamp, lc.match_stamp
        row["score"] = lc.score
        row["inliers"] = lc.inliers or 0
        row["verified"] = 1 if lc.inliers is not None else 0
        t = lc.translation_direction
        q = Rotation.from_matrix(np.asarray(lc.rotation)).as_quat() if lc.rotation is not None else None
        for k, name in enumerate(("tx", "ty", "tz")):
            row[name] = float(t[k]) if t is not None else math.nan
        for k, name in enumerate(("qx", "qy", "qz", "qw")):
            row[name] = float(q[k]) if q is not None else math.nan
    return array_to_pointcloud2(rows, frame_id, stamp)


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
