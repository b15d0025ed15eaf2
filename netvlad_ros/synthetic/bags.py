"""Write camera frames with poses and GPS as a ROS 2 (MCAP / sqlite3) or ROS 1 bag.

Why: demos and tests of the bag-reading pipeline need real bag files with
known content. Frames are :class:`.frames.Frame` records (what
:class:`.world.SyntheticWorld` renders). Uses the pure-Python ``rosbags`` library (no ROS install).
Messages: sensor_msgs/msg/Image (bgr8) or sensor_msgs/msg/CompressedImage
(JPEG), sensor_msgs/msg/NavSatFix and nav_msgs/msg/Odometry (pose in the local
ENU "map" frame, child "base_link", forward speed in the twist).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .frames import Frame

__all__ = ["BAG_STORAGES", "write_bag"]

BAG_STORAGES = ("mcap", "sqlite3", "ros1")


def _stamp_ns(stamp: float) -> int:
    return round(stamp * 1e9)


def write_bag(
    path: str | Path,
    frames: Sequence[Frame],
    storage: str = "mcap",
    image_topic: str = "/camera/image_raw",
    compressed: bool = False,
    gps_topic: str | None = "/gps/fix",
    odom_topic: str | None = "/odom",
    frame_id: str = "camera",
    rate_hz: float | None = None,
    jpeg_quality: int = 90,
) -> Path:
    """Write ``frames`` to a new bag at ``path`` and return its path.

    ``storage``: ``mcap`` or ``sqlite3`` (ROS 2 bag directory, which must not
    exist yet) or ``ros1`` (a .bag file). ``compressed`` stores JPEG
    CompressedImage messages on ``image_topic + "/compressed"`` (the
    image_transport convention) unless the topic already ends in
    ``/compressed``. ``rate_hz`` re-stamps the frames at that rate starting at
    the first frame's stamp; otherwise the frames' own stamps are used (they
    must increase). Header and bag receive times are identical. A topic given
    as None is not written.
    """
    from rosbags.typesys import Stores, get_typestore

    if storage not in BAG_STORAGES:
        raise ValueError(f"write_bag: storage must be one of {BAG_STORAGES}, got {storage!r}")
    if not frames:
        raise ValueError("write_bag: no frames to write")
    if rate_hz is not None and not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise ValueError(f"write_bag: rate_hz must be positive, got {rate_hz!r}")
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"write_bag: {path} already exists")
    stamps = np.array([f.stamp for f in frames], dtype=np.float64)
    if rate_hz is not None:
        stamps = stamps[0] + np.arange(len(frames)) / rate_hz
    if len(stamps) > 1 and not np.all(np.diff(stamps) > 0):
        raise ValueError("write_bag: frame stamps must be strictly increasing")
    for f in frames:
        if f.image.dtype != np.uint8 or f.image.ndim != 3 or f.image.shape[2] != 3:
            raise ValueError(f"write_bag: frame {f.index} image must be HxWx3 uint8 BGR, got {f.image.shape}")
    if compressed and not image_topic.endswith("/compressed"):
        image_topic = image_topic.rstrip("/") + "/compressed"

    ros1 = storage == "ros1"
    ts = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_KILTED)
    types = ts.types
    serialize = ts.serialize_ros1 if ros1 else ts.serialize_cdr

    def header(ns: int, fid: str, seq: int) -> Any:
        stamp = types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
        if ros1:
            return types["std_msgs/msg/Header"](seq=seq, stamp=stamp, frame_id=fid)
        return types["std_msgs/msg/Header"](stamp=stamp, frame_id=fid)

    img_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    topics = [(image_topic, img_type)]
    if gps_topic:
        topics.append((gps_topic, "sensor_msgs/msg/NavSatFix"))
    if odom_topic:
        topics.append((odom_topic, "nav_msgs/msg/Odometry"))

    if ros1:
        from rosbags.rosbag1 import Writer as Writer1

        writer: Any = Writer1(path)
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        writer = Writer(path, version=9, storage_plugin=plugin)
    vec3, quat = types["geometry_msgs/msg/Vector3"], types["geometry_msgs/msg/Quaternion"]
    with writer:
        conns = {topic: writer.add_connection(topic, msgtype, typestore=ts) for topic, msgtype in topics}
        for i, f in enumerate(frames):
            ns = _stamp_ns(float(stamps[i]))
            if compressed:
                ok, buf = cv2.imencode(".jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
                if not ok:
                    raise ValueError(f"write_bag: JPEG encoding failed for frame {f.index}")
                msg = types["sensor_msgs/msg/CompressedImage"](
                    header=header(ns, frame_id, i), format="bgr8; jpeg compressed bgr8", data=buf.reshape(-1)
                )
            else:
                h, w = f.image.shape[:2]
                msg = types["sensor_msgs/msg/Image"](
                    header=header(ns, frame_id, i), height=h, width=w, encoding="bgr8", is_bigendian=0,
                    step=w * 3, data=np.ascontiguousarray(f.image).reshape(-1),
                )  # fmt: skip
            writer.write(conns[image_topic], ns, serialize(msg, msg.__msgtype__))
            if gps_topic:
                lat, lon, alt = f.latlonalt
                status = types["sensor_msgs/msg/NavSatStatus"](status=0, service=1)  # STATUS_FIX, SERVICE_GPS
                cov = np.diag([0.01, 0.01, 0.04]).reshape(-1).astype(np.float64)
                msg = types["sensor_msgs/msg/NavSatFix"](
                    header=header(ns, "gps", i), status=status, latitude=float(lat), longitude=float(lon),
                    altitude=float(alt), position_covariance=cov, position_covariance_type=2,
                )  # fmt: skip
                writer.write(conns[gps_topic], ns, serialize(msg, msg.__msgtype__))
            if odom_topic:
                speed = 0.0
                if len(frames) > 1:
                    j = i + 1 if i + 1 < len(frames) else i - 1
                    speed = float(
                        np.linalg.norm(frames[j].position - f.position) / abs(stamps[j] - stamps[i])
                    )
                p, q = f.position, f.orientation
                pose = types["geometry_msgs/msg/Pose"](
                    position=types["geometry_msgs/msg/Point"](x=float(p[0]), y=float(p[1]), z=float(p[2])),
                    orientation=quat(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
                )
                twist = types["geometry_msgs/msg/Twist"](
                    linear=vec3(x=speed, y=0.0, z=0.0), angular=vec3(x=0.0, y=0.0, z=0.0)
                )
                cov = (np.eye(6) * 1e-4).reshape(-1)
                msg = types["nav_msgs/msg/Odometry"](
                    header=header(ns, "map", i), child_frame_id="base_link",
                    pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=cov),
                    twist=types["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=cov),
                )  # fmt: skip
                writer.write(conns[odom_topic], ns, serialize(msg, msg.__msgtype__))
    return path
