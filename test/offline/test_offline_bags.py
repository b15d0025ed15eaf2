"""netvlad_ros.offline.bags / pose_sources (+ sensors.image_codec): bag reading, pose sources,
image decoding and the errors, on bags written here with rosbags in all three formats.

Expected values are worked out by hand in the tests (or come from pyproj's geodesic,
an independent computation), never from the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from pyproj import Geod
from rosbags.typesys import Stores, get_typestore

from netvlad_ros.offline.bags import bag_topics, iter_bag_images, open_bag, read_pose_topic, read_tf
from netvlad_ros.offline.build_map import FrameSource, build_map, open_frames
from netvlad_ros.offline.errors import BuildMapError
from netvlad_ros.offline.pose_sources import TfBuffer, parse_utm_filename, read_pose_csv
from netvlad_ros.sensors.errors import PoseError, SensorError
from netvlad_ros.sensors.image_codec import ImageDecodeError, compressed_msg_to_bgr, decode_image_msg
from netvlad_ros.sensors.poses import KeyframeParams

STORAGES = ("mcap", "sqlite3", "ros1")


def yaw_q(deg: float) -> tuple[float, float, float, float]:
    """Quaternion (x, y, z, w) of a rotation by ``deg`` degrees about z (written out by hand)."""
    h = math.radians(deg) / 2
    return (0.0, 0.0, math.sin(h), math.cos(h))


def pattern(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


class BagBuilder:
    """Collects messages and writes them as a ROS 2 (mcap / sqlite3) or ROS 1 bag with rosbags."""

    def __init__(self, storage: str) -> None:
        self.storage = storage
        self.ros1 = storage == "ros1"
        self.ts = get_typestore(Stores.ROS1_NOETIC if self.ros1 else Stores.ROS2_KILTED)
        if "tf2_msgs/msg/TFMessage" not in self.ts.types:  # not in rosbags' ROS 1 store
            from rosbags.typesys import get_types_from_msg

            self.ts.register(
                get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage")
            )
        self.types = self.ts.types
        self.entries: list[tuple[str, str, int, object]] = []
        self.empty_topics: list[tuple[str, str]] = []

    def header(self, t: float, frame: str):
        ns = round(t * 1e9)
        stamp = self.types["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)
        if self.ros1:
            return self.types["std_msgs/msg/Header"](seq=0, stamp=stamp, frame_id=frame)
        return self.types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame)

    def add(self, topic: str, t: float, msg, bag_t: float | None = None) -> None:
        self.entries.append((topic, msg.__msgtype__, round((t if bag_t is None else bag_t) * 1e9), msg))

    def image(self, topic: str, t: float, bgr: np.ndarray, frame: str = "camera", pad: int = 0, **kw) -> None:
        h, w = bgr.shape[:2]
        rows = np.zeros((h, w * 3 + pad), np.uint8)
        rows[:, : w * 3] = bgr.reshape(h, -1)
        msg = self.types["sensor_msgs/msg/Image"](
            header=self.header(t, frame), height=h, width=w, encoding="bgr8", is_bigendian=0,
            step=w * 3 + pad, data=rows.reshape(-1),
        )  # fmt: skip
        self.add(topic, t, msg, **kw)

    def compressed(self, topic: str, t: float, bgr: np.ndarray, data: bytes | None = None) -> None:
        if data is None:
            data = cv2.imencode(".png", bgr)[1].tobytes()
        msg = self.types["sensor_msgs/msg/CompressedImage"](
            header=self.header(t, "camera"), format="png", data=np.frombuffer(data, np.uint8)
        )
        self.add(topic, t, msg)

    def _pose(self, p, q):
        ty = self.types
        return ty["geometry_msgs/msg/Pose"](
            position=ty["geometry_msgs/msg/Point"](x=float(p[0]), y=float(p[1]), z=float(p[2])),
            orientation=ty["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
        )

    def pose(self, kind: str, topic: str, t: float, p, q, frame: str = "odom") -> None:
        ty = self.types
        pose = self._pose(p, q)
        cov = np.zeros(36)
        if kind == "odom":
            twist = ty["geometry_msgs/msg/TwistWithCovariance"](
                twist=ty["geometry_msgs/msg/Twist"](
                    linear=ty["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                    angular=ty["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                ),
                covariance=cov,
            )
            msg = ty["nav_msgs/msg/Odometry"](
                header=self.header(t, frame), child_frame_id="base_link",
                pose=ty["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=cov), twist=twist,
            )  # fmt: skip
        elif kind == "pose":
            msg = ty["geometry_msgs/msg/PoseStamped"](header=self.header(t, frame), pose=pose)
        else:
            msg = ty["geometry_msgs/msg/PoseWithCovarianceStamped"](
                header=self.header(t, frame),
                pose=ty["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=cov),
            )
        self.add(topic, t, msg)

    def navsat(self, topic: str, t: float, lat: float, lon: float, alt: float, status: int = 0) -> None:
        ty = self.types
        msg = ty["sensor_msgs/msg/NavSatFix"](
            header=self.header(t, "gps"), status=ty["sensor_msgs/msg/NavSatStatus"](status=status, service=1),
            latitude=lat, longitude=lon, altitude=alt, position_covariance=np.zeros(9),
            position_covariance_type=0,
        )  # fmt: skip
        self.add(topic, t, msg)

    def tf(self, topic: str, t: float, transforms: list[tuple[str, str, tuple, tuple]]) -> None:
        ty = self.types
        items = [
            ty["geometry_msgs/msg/TransformStamped"](
                header=self.header(t, parent),
                child_frame_id=child,
                transform=ty["geometry_msgs/msg/Transform"](
                    translation=ty["geometry_msgs/msg/Vector3"](x=float(p[0]), y=float(p[1]), z=float(p[2])),
                    rotation=ty["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
                ),
            )
            for parent, child, p, q in transforms
        ]
        self.add(topic, t, ty["tf2_msgs/msg/TFMessage"](transforms=items))

    def write(self, path: Path) -> Path:
        if self.ros1:
            from rosbags.rosbag1 import Writer as Writer1

            path = path.with_suffix(".bag")
            writer = Writer1(path)
            ser = self.ts.serialize_ros1
        else:
            from rosbags.rosbag2 import StoragePlugin, Writer

            plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
            writer = Writer(path, version=9, storage_plugin=plugin)
            ser = self.ts.serialize_cdr
        with writer:
            conns = {}
            for topic, msgtype in self.empty_topics:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=self.ts)
            for topic, msgtype, _, _ in self.entries:
                if topic not in conns:
                    conns[topic] = writer.add_connection(topic, msgtype, typestore=self.ts)
            for topic, msgtype, ns, msg in sorted(self.entries, key=lambda e: e[2]):
                writer.write(conns[topic], ns, ser(msg, msgtype))
        return path


# ----------------------------------------------------------------------------- image codec


def test_codec_decodes_rosbags_messages_with_step_padding_and_png() -> None:
    ts = get_typestore(Stores.ROS2_KILTED)
    img = pattern(1, 5, 7)
    rows = np.full((5, 7 * 3 + 3), 0xEE, np.uint8)
    rows[:, :21] = img.reshape(5, -1)
    msg = ts.types["sensor_msgs/msg/Image"](
        header=ts.types["std_msgs/msg/Header"](stamp=ts.types["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id=""),
        height=5, width=7, encoding="bgr8", is_bigendian=0, step=24, data=rows.reshape(-1),
    )  # fmt: skip
    assert np.array_equal(decode_image_msg(msg), img)
    png = ts.types["sensor_msgs/msg/CompressedImage"](
        header=msg.header, format="png", data=np.frombuffer(cv2.imencode(".png", img)[1].tobytes(), np.uint8)
    )
    assert np.array_equal(decode_image_msg(png), img)
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    png.data = np.frombuffer(jpeg[: len(jpeg) // 2], np.uint8)
    with pytest.raises(ImageDecodeError, match="truncated"):
        compressed_msg_to_bgr(png)


def test_ros_conversions_reexports_the_codec() -> None:
    pytest.importorskip("sensor_msgs")
    from netvlad_ros.ros import conversions
    from netvlad_ros.sensors import image_codec

    assert conversions.image_msg_to_bgr is image_codec.image_msg_to_bgr
    assert conversions.ImageDecodeError is image_codec.ImageDecodeError


# ----------------------------------------------------------------------------- images from bags


@pytest.mark.parametrize("storage", STORAGES)
def test_images_from_all_storages_raw_and_compressed(tmp_path: Path, storage: str) -> None:
    b = BagBuilder(storage)
    imgs = [pattern(i) for i in range(4)]
    for i, im in enumerate(imgs):
        b.image("/cam/raw", 10.0 + 0.5 * i, im, pad=4 if i % 2 else 0)
        b.compressed("/cam/raw/compressed", 10.0 + 0.5 * i + 0.01, im)
    # header stamp 0: the bag time is used instead
    b.image("/cam/zero", 0.0, imgs[0], bag_t=42.0)
    path = b.write(tmp_path / "bag")
    with open_bag(path) as reader:
        topics = bag_topics(reader)
        assert topics["/cam/raw"] == ("sensor_msgs/msg/Image", 4)
        assert topics["/cam/raw/compressed"] == ("sensor_msgs/msg/CompressedImage", 4)
        raw = list(iter_bag_images(reader, "/cam/raw"))
        comp = list(iter_bag_images(reader, "/cam/raw/compressed", start_index=1, max_images=2))
        zero = list(iter_bag_images(reader, "/cam/zero"))
    assert [f.index for f in raw] == [0, 1, 2, 3]
    assert [f.stamp for f in raw] == pytest.approx([10.0, 10.5, 11.0, 11.5], abs=1e-9)
    assert all(np.array_equal(decode_image_msg(f.msg), imgs[i]) for i, f in enumerate(raw))
    assert [f.index for f in comp] == [1, 2]
    assert np.array_equal(decode_image_msg(comp[1].msg), imgs[2])
    assert raw[0].frame_id == "camera"
    assert zero[0].stamp == pytest.approx(42.0)


# ----------------------------------------------------------------------------- pose topics


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("kind", ["odom", "pose", "pose_cov"])
def test_pose_topics_interpolated_at_image_times(tmp_path: Path, storage: str, kind: str) -> None:
    b = BagBuilder(storage)
    # poses at t = 100, 101, 102 moving 4 m/s along x and turning 0 -> 90 -> 90 deg
    for i, (x, yaw) in enumerate([(0.0, 0), (4.0, 90), (8.0, 90)]):
        b.pose(kind, "/robot/pose", 100.0 + i, (x, 1.0, 0.5), yaw_q(yaw), frame="odom")
    for t in (99.0, 100.25, 101.5, 102.0, 104.0):
        b.image("/cam", t, pattern(int(t)))
    path = b.write(tmp_path / "bag")
    src = FrameSource(bag=path, image_topic="/cam", pose_topic="/robot/pose", max_gap_s=0.8)
    with open_frames(src) as stream:
        frames = list(stream.frames)
        assert stream.frame_id == "odom"
    assert [f.ok for f in frames] == [False, True, True, True, False]  # 99 and 104 are > 0.8 s from any pose
    assert frames[1].position == pytest.approx([1.0, 1.0, 0.5])
    assert np.allclose(np.abs(frames[1].orientation @ np.array(yaw_q(22.5))), 1.0)
    assert frames[2].position == pytest.approx([6.0, 1.0, 0.5])
    assert frames[3].position == pytest.approx([8.0, 1.0, 0.5])
    assert np.allclose(np.abs(frames[3].orientation @ np.array(yaw_q(90))), 1.0)


@pytest.mark.parametrize("storage", STORAGES)
def test_navsatfix_to_local_metres(tmp_path: Path, storage: str) -> None:
    b = BagBuilder(storage)
    lat0, lon0 = 48.0, 11.0
    b.navsat("/fix", 0.0, lat0, lon0, 500.0)
    b.navsat("/fix", 1.0, 0.0, 0.0, 0.0, status=-1)  # no fix: ignored
    b.navsat("/fix", 2.0, lat0 + 0.001, lon0, 500.0)
    b.navsat("/fix", 3.0, lat0 + 0.001, lon0 + 0.001, 500.0)
    b.image("/cam", 2.0, pattern(0))
    b.image("/cam", 3.0, pattern(1))
    path = b.write(tmp_path / "bag")
    with open_bag(path) as reader:
        gps = read_pose_topic(reader, "/fix")
    assert gps.dropped == 1 and len(gps.times) == 3
    src = FrameSource(bag=path, image_topic="/cam", pose_topic="/fix", max_gap_s=2.0)
    with open_frames(src) as stream:
        frames = list(stream.frames)
        assert stream.origin == (lat0, lon0, 500.0)
    geod = Geod(ellps="WGS84")
    north = geod.inv(lon0, lat0, lon0, lat0 + 0.001)[2]
    east = geod.inv(lon0, lat0 + 0.001, lon0 + 0.001, lat0 + 0.001)[2]
    assert frames[0].position[:2] == pytest.approx([0.0, north], abs=0.01)
    assert frames[1].position[0] == pytest.approx(east, abs=0.01)
    assert frames[1].latlonalt == pytest.approx((lat0 + 0.001, lon0 + 0.001, 500.0), abs=1e-7)


@pytest.mark.parametrize("storage", ["mcap", "ros1"])
def test_tf_chain_composed(tmp_path: Path, storage: str) -> None:
    b = BagBuilder(storage)
    # map -> odom: 10 m along x, turned 90 deg (static over time, published on /tf at 1 Hz)
    # odom -> base_link: moves 1 m/s along odom x; base_link -> camera (static): 0.5 forward, 1 up
    for i in range(4):
        t = 50.0 + i
        b.tf(
            "/tf",
            t,
            [("map", "odom", (10, 0, 0), yaw_q(90)), ("odom", "base_link", (float(i), 0, 0), yaw_q(0))],
        )
    b.tf("/tf_static", 50.0, [("base_link", "camera", (0.5, 0.0, 1.0), yaw_q(0))])
    b.image("/cam", 51.5, pattern(0))
    path = b.write(tmp_path / "bag")
    with open_bag(path) as reader:
        buf = read_tf(reader)
    # base at odom (1.5, 0, 0); camera at odom (2, 0, 1); odom x is map y: map (10, 2, 1), facing 90 deg
    p, q, ok = buf.lookup("map", "camera", 51.5, 0.6)
    assert ok[0] and p[0] == pytest.approx([10.0, 2.0, 1.0])
    assert np.allclose(np.abs(q[0] @ np.array(yaw_q(90))), 1.0)
    # the inverse chain: map origin seen from the camera
    p2, _, _ = buf.lookup("camera", "map", 51.5, 0.6)
    assert p2[0] == pytest.approx([-2.0, 10.0, -1.0])  # R(-90)*(-10,-2,-1) = (-2, 10, -1)
    src = FrameSource(bag=path, image_topic="/cam", pose_topic="/tf", tf_fixed_frame="map", max_gap_s=0.6)
    with open_frames(src) as stream:  # camera frame defaults to the image's frame_id ("camera")
        (frame,) = list(stream.frames)
        assert stream.frame_id == "map"
    assert frame.ok and frame.position == pytest.approx([10.0, 2.0, 1.0])
    with pytest.raises(BuildMapError, match="no frame 'lidar'"):
        buf.chain("map", "lidar")


def test_tf_buffer_rejects_two_parents_and_disconnected_frames() -> None:
    buf = TfBuffer()
    buf.add("map", "a", 0.0, (0, 0, 0), yaw_q(0))
    buf.add("world", "b", 0.0, (0, 0, 0), yaw_q(0))
    with pytest.raises(BuildMapError, match="not connected"):
        buf.chain("map", "b")
    with pytest.raises(BuildMapError, match="two parents"):
        buf.add("world", "a", 0.0, (0, 0, 0), yaw_q(0))


# ----------------------------------------------------------------------------- CSV and file names


def test_pose_csv_metric_geodetic_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text("# comment\nFilename,x,y,z,qx,qy,qz,qw\na.jpg,1,2,3,0,0,0,2\nb.jpg,4,5,6,0,0,1,0\n")
    t = read_pose_csv(f)
    assert t.key == "filename" and t.names == ["a.jpg", "b.jpg"]
    assert t.positions.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert t.quats.tolist() == [[0, 0, 0, 1], [0, 0, 1, 0]]  # normalised
    g = tmp_path / "g.csv"
    g.write_text("index,lat,lon\n0,45.0,7.0\n5,45.0,7.001\n")
    t = read_pose_csv(g)
    assert t.key == "index" and t.indices.tolist() == [0, 5] and t.origin == (45.0, 7.0, 0.0)
    east = Geod(ellps="WGS84").inv(7.0, 45.0, 7.001, 45.0)[2]
    assert t.positions[1, 0] == pytest.approx(east, abs=0.01) and abs(t.positions[1, 1]) < 0.01
    bad = tmp_path / "bad.csv"
    bad.write_text("index,x\n0,1\n")
    with pytest.raises(BuildMapError, match="x,y"):
        read_pose_csv(bad)
    bad.write_text("index,x,y\n0,1,oops\n")
    with pytest.raises(BuildMapError, match="not a number"):
        read_pose_csv(bad)
    bad.write_text("x,y\n0,1\n")
    with pytest.raises(BuildMapError, match="filename, index or stamp"):
        read_pose_csv(bad)
    with pytest.raises(BuildMapError, match="not found"):
        read_pose_csv(tmp_path / "missing.csv")


def test_utm_file_names() -> None:
    assert parse_utm_filename("@0543256.96@4477339.07@17@T@040.44694@-079.99574@xx@@@@@@@@.jpg") == (
        543256.96,
        4477339.07,
    )
    with pytest.raises(BuildMapError, match="utm_east"):
        parse_utm_filename("frame_0001.jpg")


# ----------------------------------------------------------------------------- errors


def test_error_messages(tmp_path: Path) -> None:
    b = BagBuilder("mcap")
    b.image("/cam", 1.0, pattern(0))
    b.pose("odom", "/odom", 1.0, (0, 0, 0), yaw_q(0))
    b.empty_topics.append(("/silent", "geometry_msgs/msg/PoseStamped"))
    path = b.write(tmp_path / "bag")
    with (
        pytest.raises(BuildMapError, match=r"bag not found"),
        open_frames(FrameSource(bag=tmp_path / "nope", image_topic="/cam", pose_topic="/odom")),
    ):
        pass
    with (
        pytest.raises(
            BuildMapError, match=r"'/camera' is not in the bag; the bag has: /cam \(sensor_msgs/msg/Image"
        ),
        open_frames(FrameSource(bag=path, image_topic="/camera", pose_topic="/odom")),
    ):
        pass
    with (
        pytest.raises(BuildMapError, match=r"unsupported message type nav_msgs/msg/Odometry"),
        open_frames(FrameSource(bag=path, image_topic="/odom", pose_topic="/odom")),
    ):
        pass
    with (
        pytest.raises(BuildMapError, match=r"unsupported message type sensor_msgs/msg/Image"),
        open_frames(FrameSource(bag=path, image_topic="/cam", pose_topic="/cam")),
    ):
        pass
    with (
        pytest.raises(BuildMapError, match=r"'/silent'.*no usable messages"),
        open_frames(FrameSource(bag=path, image_topic="/cam", pose_topic="/silent")),
    ):
        pass
    with (
        pytest.raises(BuildMapError, match=r"no TF topic"),
        open_frames(FrameSource(bag=path, image_topic="/cam", pose_topic="/tf", tf_fixed_frame="map")),
    ):
        pass
    with pytest.raises(BuildMapError, match="no pose source"):
        FrameSource(bag=path, image_topic="/cam").validate()
    empty = BagBuilder("sqlite3")
    empty.empty_topics.append(("/cam", "sensor_msgs/msg/Image"))
    epath = empty.write(tmp_path / "empty")
    with (
        pytest.raises(BuildMapError, match=r"is empty"),
        open_frames(FrameSource(bag=epath, image_topic="/cam", pose_topic="/odom")),
    ):
        pass
    not_bag = tmp_path / "dir"
    not_bag.mkdir()
    with pytest.raises(BuildMapError, match=r"metadata.yaml"), open_bag(not_bag):
        pass


def test_bad_pose_data_found_by_sensors_is_a_build_map_error_with_the_same_message(tmp_path: Path) -> None:
    """The offline tools promise BuildMapError for unusable input, also where the pose code they
    share with the node (sensors.poses, which raises the sensor layer's errors) finds the fault."""
    zero_q = (0.0, 0.0, 0.0, 0.0)
    csv_path = tmp_path / "zero_q.csv"
    csv_path.write_text("filename,x,y,qx,qy,qz,qw\na.png,0,0,0,0,0,0\n")
    with pytest.raises(BuildMapError, match=r"zero_q\.csv: orientations must be finite non-zero") as info:
        read_pose_csv(csv_path)
    assert isinstance(info.value.__cause__, PoseError)
    b = BagBuilder("mcap")
    b.pose("odom", "/odom", 1.0, (0, 0, 0), zero_q)
    with (
        pytest.raises(BuildMapError, match=r"^pose track: orientations must be finite non-zero") as info,
        open_bag(b.write(tmp_path / "bag")) as reader,
    ):
        read_pose_topic(reader, "/odom")
    assert isinstance(info.value.__cause__, PoseError)
    buf = TfBuffer()
    buf.add("map", "camera", 0.0, (0, 0, 0), zero_q)
    with pytest.raises(BuildMapError, match=r"^pose track: orientations must be finite non-zero") as info:
        buf.lookup("map", "camera", 0.0, 1.0)
    assert isinstance(info.value.__cause__, PoseError)
    with pytest.raises(BuildMapError, match=r"^KeyframeParams.distance_m must be in \[0, 1e\+09\]") as info:
        build_map(tmp_path / "map", FrameSource(images=tmp_path), keyframes=KeyframeParams(distance_m=-1.0))
    assert isinstance(info.value.__cause__, SensorError)
