"""camera_info and aligned depth over real DDS, including every kind of bad input.

A slam-mode node gets a camera_info with a zero focal length (refused, counted), then a
good one, then six keyframes, each with a depth image: a good one, then one of each
failure (wrong size, unsupported encoding, all NaN, truncated data, none within the
stamp tolerance). The node must count each failure by reason in /diagnostics, never stop,
add every keyframe, and store depth only with the first: the others keep the camera
(their loop closures fall back to scale-free, tested in test_recognition_geometry.py).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

BAD_DEPTH = ["depth_wrong_size", "depth_bad_encoding", "depth_invalid", "depth_malformed", "depth_missing"]


def _depth_msg(arr: np.ndarray, encoding: str, stamp: float):
    from sensor_msgs.msg import Image

    from netvlad_ros.ros.conversions import sec_to_stamp

    m = Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding, step=arr.shape[1] * arr.itemsize)
    m.header.stamp = sec_to_stamp(stamp)
    m.data = arr.tobytes()
    return m


def _camera_info(fx: float, stamp: float):
    from sensor_msgs.msg import CameraInfo

    from netvlad_ros.ros.conversions import sec_to_stamp

    m = CameraInfo(width=320, height=240, distortion_model="plumb_bob")
    m.header.stamp = sec_to_stamp(stamp)
    m.k = [fx, 0.0, 159.5, 0.0, fx, 119.5, 0.0, 0.0, 1.0]
    return m


def test_bad_depth_and_camera_info_are_counted_and_survived(
    start_node, node_client, scenes, small_model, tmp_path
):
    from sensor_msgs.msg import CameraInfo, Image
    from std_srvs.srv import Trigger

    from netvlad_ros.mapdb import MapDatabase
    from netvlad_ros.ros.qos import qos_from_name
    from netvlad_ros.ros.tables import KEYFRAME_DTYPE, pointcloud2_to_array

    out = tmp_path / "rgbd_map"
    child = start_node(
        {"mode": "slam", "model_path": str(small_model), "device": "cpu", "save_path": str(out),
         "diagnostics_period_s": 0.25},
        namespace="/rgbd",
    )  # fmt: skip
    c = node_client(namespace="/rgbd")
    reliable = qos_from_name("reliable", 10)
    info_pub = c.node.create_publisher(CameraInfo, "/rgbd/camera_info", reliable)
    depth_pub = c.node.create_publisher(Image, "/rgbd/depth", reliable)
    c.wait_ready(child)
    assert c.ros.spin_until(
        lambda: depth_pub.get_subscription_count() > 0 and info_pub.get_subscription_count() > 0, 10.0
    )
    info_pub.publish(_camera_info(0.0, 1.0))  # an uncalibrated driver: K = 0
    c.ros.spin_until(lambda: False, 0.3)
    info_pub.publish(_camera_info(300.0, 1.0))
    c.ros.spin_until(lambda: False, 0.3)

    good = np.full((240, 320), 2000, np.uint16)  # 2 m everywhere
    depths = [
        (good, "16UC1", 0.0),
        (np.full((120, 160), 2000, np.uint16), "16UC1", 0.0),  # not the colour image's size
        (np.full((240, 320), 7, np.uint8), "mono8", 0.0),  # not a depth encoding
        (np.full((240, 320), np.nan, np.float32), "32FC1", 0.0),  # no pixel holds a depth
        (good, "16UC1", 0.0),  # truncated below
        (good, "16UC1", 0.5),  # half a second off: outside depth.tolerance_s (0.02)
    ]

    def size() -> int:
        return len(pointcloud2_to_array(c.keyframes[-1], KEYFRAME_DTYPE)) if c.keyframes else 0

    for k, (arr, enc, offset) in enumerate(depths):
        t = 10.0 + 2.0 * k
        msg = _depth_msg(arr, enc, t + offset)
        if k == 4:
            msg.data = msg.data[: len(msg.data) // 2]
        depth_pub.publish(msg)
        c.ros.spin_until(lambda: False, 0.2)
        c.send_odom(t - 0.1, (5.0 * k - 0.05, 0.0, 0.0))
        c.send_odom(t + 0.1, (5.0 * k + 0.05, 0.0, 0.0))
        c.ros.spin_until(lambda: False, 0.1)
        c.send_image(scenes[k], t)
        c.wait_for(c.keyframes, lambda k=k: size() == k + 1, 60.0, f"keyframe {k}")

    n0 = len(c.diagnostics)
    d = c.diag(fresh_after=n0)
    assert int(d["rejected.camera_zero_focal_length"]) == 1
    for reason in BAD_DEPTH:
        assert int(d[f"rejected.{reason}"]) == 1, (reason, d)
    assert int(d["keyframes_added"]) == 6 and child.proc.poll() is None
    res = c.call(c.save_map, Trigger.Request())
    assert res.success, res.message
    db = MapDatabase.load(out)
    feats = [db.features(k) for k in range(6)]
    assert all(f is not None and f.camera is not None and f.camera.fx == 300.0 for f in feats)
    d0 = feats[0].depths
    assert d0 is not None and np.nanmedian(d0) == pytest.approx(2.0) and np.isfinite(d0).mean() > 0.9
    assert all(f.depths is None for f in feats[1:]), "a failed pairing must store no depth"
