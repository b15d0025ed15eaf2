"""Write camera frames with poses and GPS as a ROS 2 (MCAP / sqlite3) or ROS 1 bag.

Why: demos and tests of the bag-reading pipeline need real bag files with
known content. Frames are :class:`.frames.Frame` records (what
:class:`.world.SyntheticWorld` renders). Uses the pure-Python ``rosbags`` library (no ROS install).
Messages: sensor_msgs/msg/Image (bgr8) or sensor_msgs/msg/CompressedImage
(JPEG), sensor_msgs/msg/NavSatFix and nav_msgs/msg/Odometry (pose in the local
ENU "map" frame, child "base_link", forward speed in the twist; when the frames carry
drifting odometry, the odometry pose in the "odom" frame with its covariance), and on
request sensor_msgs/msg/CameraInfo, aligned depth (sensor_msgs/msg/Image, 32FC1 metres
or 16UC1 millimetres) and the ground truth (nav_msgs/msg/Odometry). Topics and frame
ids: docs/synthetic_world.md, "Bags".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .frames import Frame

__all__ = ["BAG_STORAGES", "DEPTH_ENCODINGS", "depth_to_16uc1", "write_bag"]

BAG_STORAGES = ("mcap", "sqlite3", "ros1")
DEPTH_ENCODINGS = ("32FC1", "16UC1")


def depth_to_16uc1(depth: np.ndarray) -> np.ndarray:
    """Metres (float, +inf/NaN = no return) -> uint16 millimetres, 0 = no return (also beyond 65.535 m)."""
    mm = np.round(np.nan_to_num(depth.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0) * 1000.0)
    return np.where((mm > 0) & (mm <= 65535), mm, 0).astype(np.uint16)


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
    camera_info_topic: str | None = None,
    depth_topic: str | None = None,
    depth_encoding: str = "32FC1",
    ground_truth_topic: str | None = None,
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

    Off unless named (e.g. ``"/camera/camera_info"``, ``"/camera/depth/image_raw"``,
    ``"/ground_truth"``): ``camera_info_topic`` writes each frame's intrinsics
    (sensor_msgs/CameraInfo, same stamp and ``frame_id`` as the image, plumb_bob with zero
    distortion); ``depth_topic`` its aligned depth (sensor_msgs/Image, ``depth_encoding``
    ``32FC1``: float metres, +inf where there is no return (sky), or ``16UC1``: millimetres,
    0 = no return, also beyond 65.535 m), same stamp and ``frame_id``; ``ground_truth_topic``
    the true pose (nav_msgs/Odometry, frame "map", child "base_link", zero covariance).
    ``odom_topic`` carries the frames' drifting odometry when they have it (frame
    "odom", its covariance), else the ground truth as before (frame "map").
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
    if depth_encoding not in DEPTH_ENCODINGS:
        raise ValueError(
            f"write_bag: depth_encoding must be one of {DEPTH_ENCODINGS}, got {depth_encoding!r}"
        )
    for f in frames:
        if depth_topic and (f.depth is None or f.depth.shape != f.image.shape[:2]):
            got = None if f.depth is None else f.depth.shape
            raise ValueError(
                f"write_bag: depth_topic needs each frame's depth of the image's size; frame {f.index} has {got} "
                "(render the traversal with depth=True)"
            )
        if camera_info_topic and f.camera is None:
            raise ValueError(
                f"write_bag: camera_info_topic needs each frame's camera; frame {f.index} has none"
            )
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
    if camera_info_topic:
        topics.append((camera_info_topic, "sensor_msgs/msg/CameraInfo"))
    if depth_topic:
        topics.append((depth_topic, "sensor_msgs/msg/Image"))
    if ground_truth_topic:
        topics.append((ground_truth_topic, "nav_msgs/msg/Odometry"))
    if len({t for t, _ in topics}) != len(topics):
        raise ValueError(f"write_bag: topic names must differ, got {[t for t, _ in topics]}")

    if ros1:
        from rosbags.rosbag1 import Writer as Writer1

        writer: Any = Writer1(path)
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        writer = Writer(path, version=9, storage_plugin=plugin)
    vec3, quat = types["geometry_msgs/msg/Vector3"], types["geometry_msgs/msg/Quaternion"]
    positions = [f.position for f in frames]

    def speed(pos_of: list[np.ndarray], i: int) -> float:
        if len(pos_of) < 2:
            return 0.0
        j = i + 1 if i + 1 < len(pos_of) else i - 1
        return float(np.linalg.norm(pos_of[j] - pos_of[i]) / abs(stamps[j] - stamps[i]))

    def odometry(ns: int, i: int, fid: str, p: np.ndarray, q: np.ndarray, v: float, cov: np.ndarray) -> Any:
        pose = types["geometry_msgs/msg/Pose"](
            position=types["geometry_msgs/msg/Point"](x=float(p[0]), y=float(p[1]), z=float(p[2])),
            orientation=quat(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
        )
        twist = types["geometry_msgs/msg/Twist"](
            linear=vec3(x=v, y=0.0, z=0.0), angular=vec3(x=0.0, y=0.0, z=0.0)
        )
        twist_cov = (np.eye(6) * 1e-4).reshape(-1)
        return types["nav_msgs/msg/Odometry"](
            header=header(ns, fid, i), child_frame_id="base_link",
            pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.asarray(cov, np.float64).reshape(-1)),
            twist=types["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=twist_cov),
        )  # fmt: skip

    def camera_info(ns: int, i: int, cam: Any) -> Any:
        k = np.array([cam.fx, 0.0, cam.cx, 0.0, cam.fy, cam.cy, 0.0, 0.0, 1.0])
        pm = np.array([cam.fx, 0.0, cam.cx, 0.0, 0.0, cam.fy, cam.cy, 0.0, 0.0, 0.0, 1.0, 0.0])
        dist = np.array(cam.distortion, np.float64)
        model = cam.distortion_model if cam.distortion_model != "none" else "plumb_bob"
        if model == "plumb_bob" and dist.size == 0:
            dist = np.zeros(5)
        roi = types["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        arrays = {"d": dist, "k": k, "r": np.eye(3).reshape(-1), "p": pm}
        if ros1:
            arrays = {key.upper(): val for key, val in arrays.items()}
        return types["sensor_msgs/msg/CameraInfo"](
            header=header(ns, frame_id, i), height=int(cam.height), width=int(cam.width), distortion_model=model,
            binning_x=0, binning_y=0, roi=roi, **arrays,
        )  # fmt: skip

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
                if f.odom_position is not None and f.odom_orientation is not None:
                    pos_of = [
                        fr.odom_position if fr.odom_position is not None else fr.position for fr in frames
                    ]
                    p, q = f.odom_position, f.odom_orientation
                    cov = f.odom_covariance if f.odom_covariance is not None else np.eye(6) * 1e-4
                    msg = odometry(ns, i, "odom", p, q, speed(pos_of, i), cov)
                else:
                    msg = odometry(
                        ns, i, "map", f.position, f.orientation, speed(positions, i), np.eye(6) * 1e-4
                    )
                writer.write(conns[odom_topic], ns, serialize(msg, msg.__msgtype__))
            if camera_info_topic and f.camera is not None:
                cam = f.camera
                msg = camera_info(ns, i, cam)
                writer.write(conns[camera_info_topic], ns, serialize(msg, msg.__msgtype__))
            if depth_topic and f.depth is not None:
                h, w = f.depth.shape
                if depth_encoding == "32FC1":
                    data = np.ascontiguousarray(f.depth.astype("<f4")).view(np.uint8).reshape(-1)
                    step = w * 4
                else:
                    data = (
                        np.ascontiguousarray(depth_to_16uc1(f.depth).astype("<u2")).view(np.uint8).reshape(-1)
                    )
                    step = w * 2
                msg = types["sensor_msgs/msg/Image"](
                    header=header(ns, frame_id, i), height=h, width=w, encoding=depth_encoding, is_bigendian=0,
                    step=step, data=data,
                )  # fmt: skip
                writer.write(conns[depth_topic], ns, serialize(msg, msg.__msgtype__))
            if ground_truth_topic:
                msg = odometry(ns, i, "map", f.position, f.orientation, speed(positions, i), np.zeros((6, 6)))
                writer.write(conns[ground_truth_topic], ns, serialize(msg, msg.__msgtype__))
    return path
