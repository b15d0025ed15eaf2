"""Bags of RGB-D drives: camera_info, aligned depth (32FC1 and 16UC1), ground truth beside the
drifting odometry, read back with rosbags' AnyReader (ROS 2 MCAP and ROS 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netvlad_ros.synthetic.bags import depth_to_16uc1, write_bag
from netvlad_ros.synthetic.frames import Frame
from netvlad_ros.synthetic.odometry import OdometryNoise
from netvlad_ros.synthetic.world import SyntheticWorld, WorldConfig

TOPICS = {"camera_info_topic": "/camera/camera_info", "depth_topic": "/camera/depth/image_raw",
          "ground_truth_topic": "/ground_truth"}  # fmt: skip


@pytest.fixture(scope="module")
def drive() -> list[Frame]:
    w = SyntheticWorld(WorldConfig(seed=9, width=160, height=120, blocks_x=1, blocks_y=1))
    return w.traversal("loop", spacing_m=6.0, max_frames=6, depth=True, odometry=OdometryNoise(seed=2))


def _read(path: Path) -> tuple[dict[str, str], dict[str, list]]:
    from rosbags.highlevel import AnyReader

    out: dict[str, list] = {}
    with AnyReader([path]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    return types, out


def _field(msg: object, name: str) -> np.ndarray:
    """CameraInfo arrays: d, k, r, p in ROS 2; D, K, R, P in ROS 1."""
    return np.asarray(getattr(msg, name) if hasattr(msg, name) else getattr(msg, name.upper()))


@pytest.mark.parametrize("storage", ["mcap", "ros1"])
def test_rgbd_bag_round_trip(tmp_path: Path, drive: list[Frame], storage: str) -> None:
    path = write_bag(tmp_path / ("d.bag" if storage == "ros1" else "d"), drive, storage=storage, **TOPICS)
    types, got = _read(path)
    assert types["/camera/camera_info"] == "sensor_msgs/msg/CameraInfo"
    assert types["/camera/depth/image_raw"] == "sensor_msgs/msg/Image"
    assert types["/ground_truth"] == types["/odom"] == "nav_msgs/msg/Odometry"
    for i, f in enumerate(drive):
        ns = round(f.stamp * 1e9)
        (t_img, img), (t_info, info) = got["/camera/image_raw"][i], got["/camera/camera_info"][i]
        (t_d, dmsg), (_, gt), (_, odom) = (
            got["/camera/depth/image_raw"][i],
            got["/ground_truth"][i],
            got["/odom"][i],
        )
        # same stamps and frame ids as the colour image
        for msg, t in ((info, t_info), (dmsg, t_d), (img, t_img)):
            assert t == ns and msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == ns
        assert info.header.frame_id == dmsg.header.frame_id == img.header.frame_id == "camera"
        # camera_info: the renderer's pinhole model, no distortion
        cam = f.camera
        assert cam is not None and (info.width, info.height) == (160, 120)
        assert np.allclose(_field(info, "k").reshape(3, 3), cam.matrix)
        assert np.allclose(_field(info, "p").reshape(3, 4)[:, :3], cam.matrix)
        assert info.distortion_model == "plumb_bob" and np.array_equal(_field(info, "d"), np.zeros(5))
        # depth: 32FC1 metres, bit-exact, +inf kept for the sky
        assert dmsg.encoding == "32FC1" and dmsg.step == 160 * 4 and not dmsg.is_bigendian
        depth = np.frombuffer(bytes(dmsg.data), "<f4").reshape(120, 160)
        assert np.array_equal(depth, f.depth)
        assert np.isposinf(depth).any() and np.isfinite(depth).any()
        # ground truth = the frame's pose; /odom = its drifting odometry with the covariance
        p, q = gt.pose.pose.position, gt.pose.pose.orientation
        assert np.allclose([p.x, p.y, p.z], f.position) and np.allclose([q.x, q.y, q.z, q.w], f.orientation)
        assert gt.header.frame_id == "map" and gt.child_frame_id == "base_link"
        p, q = odom.pose.pose.position, odom.pose.pose.orientation
        assert np.allclose([p.x, p.y, p.z], f.odom_position) and np.allclose(
            [q.x, q.y, q.z, q.w], f.odom_orientation
        )
        assert odom.header.frame_id == "odom"
        assert np.allclose(np.asarray(odom.pose.covariance).reshape(6, 6), f.odom_covariance)
    # the odometry has drifted from the truth by the end (it starts at the truth)
    last = got["/odom"][-1][1].pose.pose.position
    assert np.linalg.norm(np.array([last.x, last.y, last.z]) - drive[-1].position) > 1e-3


def test_depth_as_16uc1_millimetres(tmp_path: Path, drive: list[Frame]) -> None:
    path = write_bag(tmp_path / "mm", drive[:2], depth_topic="/depth", depth_encoding="16UC1")
    _, got = _read(path)
    msg = got["/depth"][0][1]
    assert msg.encoding == "16UC1" and msg.step == 160 * 2
    mm = np.frombuffer(bytes(msg.data), "<u2").reshape(120, 160)
    truth = drive[0].depth
    assert truth is not None
    valid = np.isfinite(truth) & (truth < 65.0)
    assert np.array_equal(mm == 0, ~valid)  # 0 = no return: the sky, and beyond 65.535 m
    assert np.abs(mm[valid] / 1000.0 - truth[valid]).max() <= 0.0005 + 1e-6  # rounded to the millimetre
    assert np.array_equal(
        depth_to_16uc1(np.array([np.inf, np.nan, 0.0004, 70.0, 1.2345])), [0, 0, 0, 0, 1234]
    )


def test_rgbd_topics_are_off_by_default_and_checked(tmp_path: Path, drive: list[Frame]) -> None:
    types, _ = _read(write_bag(tmp_path / "plain", drive[:2]))
    assert set(types) == {"/camera/image_raw", "/gps/fix", "/odom"}
    no_depth = [Frame(f.index, f.stamp, f.image, f.position, f.orientation, f.latlonalt) for f in drive[:2]]
    with pytest.raises(ValueError, match="depth=True"):
        write_bag(tmp_path / "x", no_depth, depth_topic="/depth")
    with pytest.raises(ValueError, match="camera"):
        write_bag(tmp_path / "y", no_depth, camera_info_topic="/info")
    with pytest.raises(ValueError, match="depth_encoding"):
        write_bag(tmp_path / "z", drive[:2], depth_topic="/depth", depth_encoding="mono16")
    with pytest.raises(ValueError, match="differ"):
        write_bag(tmp_path / "w", drive[:2], ground_truth_topic="/odom")
