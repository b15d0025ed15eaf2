"""Reading ROS 1 (.bag) and ROS 2 (sqlite3 .db3, MCAP) bags without ROS: topics, image
streams and pose streams, via the pure-Python ``rosbags`` library.

Stamps: a message's ``header.stamp`` when it is non-zero, else the time the bag
recorded it (``stamp_source="bag"`` always uses the recording time). Image decoding
is :mod:`netvlad_ros.sensors.image_codec` (the same code the ROS nodes use). Pose streams:
``sensor_msgs/NavSatFix`` (-> ENU metres via :mod:`netvlad_ros.mapdb.geodesy`),
``nav_msgs/Odometry``, ``geometry_msgs/PoseStamped`` and ``PoseWithCovarianceStamped``
(-> :class:`netvlad_ros.sensors.poses.PoseTrack`), and ``tf2_msgs/TFMessage`` on /tf and
/tf_static (-> :class:`.pose_sources.TfBuffer`). Every unusable input raises
:class:`BuildMapError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..mapdb import CameraIntrinsics
from ..sensors.camera import CameraInfoError, intrinsics_from_camera_info
from ..sensors.depth import DepthPairer, DepthParams
from ..sensors.poses import PoseTrack
from .errors import BuildMapError, sensor_errors_as_build_map_errors
from .pose_sources import TfBuffer, gps_to_local

__all__ = [
    "CAMERA_INFO_TYPES",
    "DEPTH_TYPES",
    "IMAGE_TYPES",
    "POSE_TYPES",
    "BagDepth",
    "BagImage",
    "BuildMapError",
    "GpsTrack",
    "bag_topics",
    "iter_bag_images",
    "open_bag",
    "read_camera_info",
    "read_pose_topic",
    "read_tf",
    "resolve_bag_path",
]

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
DEPTH_TYPES = ("sensor_msgs/msg/Image",)
CAMERA_INFO_TYPES = ("sensor_msgs/msg/CameraInfo",)
NAVSAT = "sensor_msgs/msg/NavSatFix"
ODOM = "nav_msgs/msg/Odometry"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
POSE_COV = "geometry_msgs/msg/PoseWithCovarianceStamped"
TF = "tf2_msgs/msg/TFMessage"
POSE_TYPES = (NAVSAT, ODOM, POSE_STAMPED, POSE_COV, TF)
STAMP_SOURCES = ("header", "bag")


def resolve_bag_path(path: str | Path) -> Path:
    """The path ``AnyReader`` wants: a ROS 1 ``.bag`` file or a ROS 2 bag directory.

    A ``.db3``/``.mcap`` file inside a ROS 2 bag directory (one with ``metadata.yaml``)
    is accepted and mapped to its directory.
    """
    p = Path(path)
    if not p.exists():
        raise BuildMapError(f"bag not found: {p}")
    if p.is_file() and p.suffix in (".db3", ".mcap"):
        if (p.parent / "metadata.yaml").is_file():
            return p.parent
        raise BuildMapError(
            f"{p} is a ROS 2 bag file without metadata.yaml beside it; pass the bag directory"
        )
    if p.is_dir() and not (p / "metadata.yaml").is_file():
        raise BuildMapError(f"{p} is a directory without metadata.yaml: not a ROS 2 bag")
    if p.is_file() and p.suffix != ".bag":
        raise BuildMapError(f"{p} is not a bag (expected a ROS 1 .bag file or a ROS 2 bag directory)")
    return p


@contextlib.contextmanager
def open_bag(path: str | Path) -> Iterator[Any]:
    """Open a bag for reading (a context manager yielding a ``rosbags`` ``AnyReader``).

    ROS 2 bags without embedded message definitions fall back to the ROS 2 Kilted types.
    """
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.typesys import Stores, get_typestore

    p = resolve_bag_path(path)
    reader = AnyReader([p], default_typestore=get_typestore(Stores.ROS2_KILTED))
    try:
        reader.open()
    except (AnyReaderError, OSError, ValueError) as exc:
        raise BuildMapError(f"cannot open bag {p}: {exc}") from exc
    try:
        yield reader
    finally:
        reader.close()


def bag_topics(reader: Any) -> dict[str, tuple[str, int]]:
    """``{topic: (message type, message count)}`` of an open bag."""
    return {name: (info.msgtype, int(info.msgcount)) for name, info in sorted(reader.topics.items())}


def _describe_topics(reader: Any) -> str:
    topics = bag_topics(reader)
    if not topics:
        return "the bag has no topics"
    return "the bag has: " + "; ".join(f"{t} ({ty}, {n} msgs)" for t, (ty, n) in topics.items())


def _check_not_empty(reader: Any, path: Any) -> None:
    if not reader.topics or sum(int(i.msgcount) for i in reader.topics.values()) == 0:
        raise BuildMapError(f"bag {path} is empty (no messages)")


def _connections(reader: Any, topic: str, allowed: tuple[str, ...], role: str) -> list[Any]:
    """The bag's connections on ``topic``, checked to carry one of ``allowed`` types."""
    _check_not_empty(reader, reader.paths[0] if getattr(reader, "paths", None) else "")
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        raise BuildMapError(f"{role} topic {topic!r} is not in the bag; {_describe_topics(reader)}")
    for c in conns:
        if c.msgtype not in allowed:
            raise BuildMapError(
                f"{role} topic {topic!r} has unsupported message type {c.msgtype}; supported: {', '.join(allowed)}"
            )
    return conns


def _stamp(msg: Any, bag_ns: int, stamp_source: str) -> float:
    header = getattr(msg, "header", None)
    if stamp_source == "header" and header is not None:
        s = header.stamp
        ns = int(s.sec) * 1_000_000_000 + int(s.nanosec)
        if ns != 0:
            return ns * 1e-9
    return bag_ns * 1e-9


def _check_stamp_source(stamp_source: str) -> None:
    if stamp_source not in STAMP_SOURCES:
        raise BuildMapError(f"stamp_source must be one of {STAMP_SOURCES}, got {stamp_source!r}")


@dataclass
class BagImage:
    """One image message: ``index`` (0-based position on its topic), ``stamp`` (s), the
    header ``frame_id`` and the deserialised message (decode with ``sensors.image_codec``)."""

    index: int
    stamp: float
    frame_id: str
    msg: Any


def iter_bag_images(
    reader: Any,
    topic: str,
    start_index: int = 0,
    max_images: int | None = None,
    stamp_source: str = "header",
) -> Iterator[BagImage]:
    """Image / CompressedImage messages on ``topic`` in recording order, from ``start_index``
    (0-based), at most ``max_images`` of them. Messages are deserialised, not decoded."""
    _check_stamp_source(stamp_source)
    conns = _connections(reader, topic, IMAGE_TYPES, "image")
    if sum(int(c.msgcount) for c in conns) == 0:
        raise BuildMapError(f"image topic {topic!r} has no messages")
    end = None if max_images is None else start_index + max_images
    for index, (conn, bag_ns, raw) in enumerate(reader.messages(connections=conns)):
        if index < start_index:
            continue
        if end is not None and index >= end:
            break
        msg = reader.deserialize(raw, conn.msgtype)
        header = getattr(msg, "header", None)
        yield BagImage(index, _stamp(msg, bag_ns, stamp_source), str(header.frame_id) if header else "", msg)


@dataclass
class GpsTrack:
    """NavSatFix fixes with a usable position (``status >= STATUS_FIX`` and finite), and how
    many were dropped. :meth:`to_pose_track` turns them into ENU metres."""

    times: np.ndarray
    latlonalt: np.ndarray
    dropped: int = 0

    def to_pose_track(self, origin: tuple[float, float, float] | None = None) -> tuple[PoseTrack, tuple]:
        """(PoseTrack in ENU metres about ``origin`` (default the first fix), origin). GPS has no
        orientation: quaternions are identity."""
        xyz, origin = gps_to_local(self.latlonalt[:, 0], self.latlonalt[:, 1], self.latlonalt[:, 2], origin)
        quats = np.tile([0.0, 0.0, 0.0, 1.0], (len(xyz), 1))
        with sensor_errors_as_build_map_errors():
            return PoseTrack(self.times, xyz, quats, "map"), origin


def read_pose_topic(reader: Any, topic: str, stamp_source: str = "header") -> PoseTrack | GpsTrack:
    """All poses on ``topic``: a :class:`PoseTrack` for Odometry / PoseStamped /
    PoseWithCovarianceStamped (in the messages' header frame), a :class:`GpsTrack` for
    NavSatFix. TF topics are read with :func:`read_tf`."""
    _check_stamp_source(stamp_source)
    conns = _connections(reader, topic, (NAVSAT, ODOM, POSE_STAMPED, POSE_COV), "pose")
    msgtype = conns[0].msgtype
    times, values, quats = [], [], []
    dropped = 0
    frame_id = ""
    for conn, bag_ns, raw in reader.messages(connections=conns):
        msg = reader.deserialize(raw, conn.msgtype)
        t = _stamp(msg, bag_ns, stamp_source)
        if msgtype == NAVSAT:
            fix = (float(msg.latitude), float(msg.longitude), float(msg.altitude))
            if int(msg.status.status) < 0 or not np.all(np.isfinite(fix)):
                dropped += 1
                continue
            times.append(t)
            values.append(fix)
            continue
        pose = msg.pose.pose if msgtype in (ODOM, POSE_COV) else msg.pose
        frame_id = frame_id or str(msg.header.frame_id)
        p, q = pose.position, pose.orientation
        times.append(t)
        values.append((float(p.x), float(p.y), float(p.z)))
        quats.append((float(q.x), float(q.y), float(q.z), float(q.w)))
    if not times:
        why = f" ({dropped} NavSatFix messages without a fix)" if dropped else ""
        raise BuildMapError(f"pose topic {topic!r} ({msgtype}) has no usable messages{why}")
    if msgtype == NAVSAT:
        return GpsTrack(np.array(times), np.array(values), dropped)
    with sensor_errors_as_build_map_errors():
        return PoseTrack(np.array(times), np.array(values), np.array(quats), frame_id.lstrip("/") or "map")


def read_tf(reader: Any, topics: tuple[str, ...] = ("/tf", "/tf_static")) -> TfBuffer:
    """All transforms on the TF topics present in the bag (``/tf_static`` ones are static)."""
    present = [t for t in topics if any(c.topic == t for c in reader.connections)]
    if not present:
        _check_not_empty(reader, "")
        raise BuildMapError(f"no TF topic ({', '.join(topics)}) in the bag; {_describe_topics(reader)}")
    buf = TfBuffer()
    count = 0
    for topic in present:
        conns = _connections(reader, topic, (TF,), "TF")
        static = topic.endswith("tf_static")
        for conn, _bag_ns, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            for tr in msg.transforms:
                s = tr.header.stamp
                tt, rr = tr.transform.translation, tr.transform.rotation
                buf.add(
                    str(tr.header.frame_id),
                    str(tr.child_frame_id),
                    int(s.sec) + int(s.nanosec) * 1e-9,
                    (float(tt.x), float(tt.y), float(tt.z)),
                    (float(rr.x), float(rr.y), float(rr.z), float(rr.w)),
                    static=static,
                )
                count += 1
    if count == 0:
        raise BuildMapError(f"TF topics {', '.join(present)} hold no transforms")
    return buf


def read_camera_info(reader: Any, topic: str) -> tuple[CameraIntrinsics, int]:
    """The camera model of a bag's camera_info ``topic``: the first valid message (cameras keep
    their calibration through a recording) and how many invalid ones were skipped.

    Raises BuildMapError when the topic is unknown, of another type, or holds no valid message
    (the last message's problem is named).
    """
    conns = _connections(reader, topic, CAMERA_INFO_TYPES, "camera_info")
    invalid, last = 0, "no messages"
    for conn, _bag_ns, raw in reader.messages(connections=conns):
        msg = reader.deserialize(raw, conn.msgtype)
        try:
            camera = intrinsics_from_camera_info(msg.k, msg.d, msg.distortion_model, msg.width, msg.height)
        except CameraInfoError as exc:
            invalid, last = invalid + 1, str(exc)
            continue
        return camera, invalid
    raise BuildMapError(f"camera_info topic {topic!r} has no valid message ({invalid} invalid; {last})")


class BagDepth:
    """Aligned depth images of a bag, paired with colour frames by stamp as the node pairs them
    (``sensors.depth.DepthPairer``: nearest within ``params.tolerance_s``, failures counted by reason).

    The depth topic is read by a reader of its own, lazily and in step with the colour frames
    (frames must be asked for in stamp order), so only a few depth images are held at a time.
    """

    def __init__(self, path: str | Path, topic: str, params: DepthParams | None = None,
                 stamp_source: str = "header") -> None:  # fmt: skip
        _check_stamp_source(stamp_source)
        self._stack = contextlib.ExitStack()
        reader = self._stack.enter_context(open_bag(path))
        conns = _connections(reader, topic, DEPTH_TYPES, "depth")
        self._messages = (
            (conn, bag_ns, raw, reader) for conn, bag_ns, raw in reader.messages(connections=conns)
        )
        self._pairer = DepthPairer(params)
        self._stamp_source = stamp_source
        self._ahead: tuple[float, Any] | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Failed pairings by reason (``sensors.depth.DEPTH_ERROR_REASONS``)."""
        return dict(self._pairer.counts)

    def at(self, stamp: float, width: int, height: int) -> np.ndarray | None:
        """Depth in metres (NaN = unknown) for the colour frame at ``stamp``, or None (counted)."""
        horizon = float(stamp) + self._pairer.params.tolerance_s
        while True:
            if self._ahead is None:
                item = next(self._messages, None)
                if item is None:
                    break
                conn, bag_ns, raw, reader = item
                msg = reader.deserialize(raw, conn.msgtype)
                self._ahead = (_stamp(msg, bag_ns, self._stamp_source), msg)
            t, msg = self._ahead
            if t > horizon:
                break
            self._pairer.add(t, msg)
            self._ahead = None
        return self._pairer.lookup(stamp, width, height).depth

    def close(self) -> None:
        self._stack.close()
