"""Tests of the synthetic city: determinism, camera geometry, poses and GPS, revisits with
appearance change, loops, bag files, and that places are distinguishable by NetVLAD but
not trivially by raw pixels."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from pyproj import Geod

from netvlad_ros.mapdb.geodesy import EnuFrame
from netvlad_ros.synthetic import (
    Appearance,
    Frame,
    SyntheticWorld,
    WorldConfig,
    write_bag,
)

SMALL = {"width": 320, "height": 240, "blocks_x": 2, "blocks_y": 2}


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(WorldConfig(seed=11, **SMALL))


@pytest.fixture(scope="module")
def mapping(world: SyntheticWorld) -> list[Frame]:
    return world.traversal("mapping", spacing_m=5.0, max_frames=60)


@pytest.fixture(scope="module")
def query(world: SyntheticWorld) -> list[Frame]:
    return world.traversal("query", spacing_m=7.5, max_frames=40)


def _positions(frames: list[Frame]) -> np.ndarray:
    return np.stack([f.position for f in frames])


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_frames(world: SyntheticWorld, mapping: list[Frame]) -> None:
    again = SyntheticWorld(WorldConfig(seed=11, **SMALL)).traversal("mapping", spacing_m=5.0, max_frames=6)
    for a, b in zip(mapping[:6], again, strict=True):
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.position, b.position) and np.array_equal(a.orientation, b.orientation)
        assert a.stamp == b.stamp and a.latlonalt == b.latlonalt
    # rendering is a pure function of (world, pose, appearance)
    app = world.query_appearance(3)
    assert np.array_equal(world.render((30.0, -2.0), 0.1, app), world.render((30.0, -2.0), 0.1, app))


def test_different_seed_gives_different_world(mapping: list[Frame]) -> None:
    other = SyntheticWorld(WorldConfig(seed=12, **SMALL)).traversal("mapping", spacing_m=5.0, max_frames=6)
    for a, b in zip(mapping[:6], other, strict=True):
        assert np.allclose(a.position, b.position)  # same route ...
        diff = np.abs(a.image.astype(np.int16) - b.image.astype(np.int16)).mean()
        assert diff > 15.0  # ... but other buildings


def test_facades_are_distinct(world: SyntheticWorld) -> None:
    """Looking head-on at different buildings from the same distance gives different images."""
    half = world.config.street_width_m / 2
    y_wall = world.grid_y[0] + half  # south face of the first block row, seen looking north
    views = [world.render((x, y_wall - 6.0), math.pi / 2) for x in (20.0, 40.0, 60.0, 100.0, 120.0)]
    top = [v[: world.config.height // 2].astype(np.int16) for v in views]
    for i in range(len(top)):
        for j in range(i + 1, len(top)):
            assert np.abs(top[i] - top[j]).mean() > 10.0


# ----------------------------------------------------------------------------- camera geometry


def test_intrinsics_match_field_of_view(world: SyntheticWorld) -> None:
    kmat = world.intrinsics
    c = world.config
    assert kmat.shape == (3, 3)
    # horizontal field of view recovered from kmat: the image edges are at +-fov/2
    fov = 2 * math.degrees(math.atan2(c.width / 2, kmat[0, 0]))
    assert fov == pytest.approx(c.fov_deg, abs=1e-9)
    assert kmat[0, 2] == pytest.approx((c.width - 1) / 2) and kmat[1, 2] == pytest.approx((c.height - 1) / 2)
    assert kmat[1, 1] == kmat[0, 0] and kmat[2, 2] == 1.0


def test_fronto_parallel_wall_scales_with_inverse_distance() -> None:
    """Pinhole check: a wall seen head-on from distance d looks like the view from 2d magnified 2x
    about the principal point (compare the part of the image above the horizon)."""
    w = SyntheticWorld(WorldConfig(seed=5, width=640, height=480, blocks_x=1, blocks_y=1))
    y_wall = w.grid_y[0] + w.config.street_width_m / 2
    x = float(w.seg_p0[0, 0] + w.seg_len[0] / 2)  # the middle of the first building
    near = w.render((x, y_wall - 3.0), math.pi / 2)
    far = w.render((x, y_wall - 6.0), math.pi / 2)
    kmat = w.intrinsics

    def corr_at(scale: float) -> float:
        aff = np.array([[scale, 0.0, (1 - scale) * kmat[0, 2]], [0.0, scale, (1 - scale) * kmat[1, 2]]])
        magnified = cv2.warpAffine(far, aff, (640, 480), flags=cv2.INTER_LINEAR)
        a = cv2.cvtColor(near, cv2.COLOR_BGR2GRAY)[40:200, 160:480].astype(np.float64)  # wall, above horizon
        b = cv2.cvtColor(magnified, cv2.COLOR_BGR2GRAY)[40:200, 160:480].astype(np.float64)
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    assert corr_at(2.0) > 0.99
    assert corr_at(1.9) < 0.9  # a wrong magnification does not fit


# ----------------------------------------------------------------------------- poses and GPS


def test_frame_gps_round_trips_to_its_enu_position(mapping: list[Frame]) -> None:
    """Each frame's GPS, taken back to ENU about the world origin, is the frame's position."""
    frame = EnuFrame(*WorldConfig().origin)
    lla = np.array([f.latlonalt for f in mapping])
    back = frame.to_local(lla[:, 0], lla[:, 1], lla[:, 2])
    assert np.abs(back - _positions(mapping)).max() < 1e-3


def test_gps_agrees_with_an_independent_geodesic(mapping: list[Frame]) -> None:
    """Geodesic distance/azimuth from the origin (pyproj.Geod) match the ENU offset of each frame."""
    lat0, lon0, alt0 = WorldConfig().origin
    geod = Geod(ellps="WGS84")
    for f in mapping[::7]:
        lat, lon, alt = f.latlonalt
        az, _, dist = geod.inv(lon0, lat0, lon, lat)
        e, n, u = f.position
        # Geod measures on the ellipsoid; the ENU plane sits at alt0, so horizontal lengths shrink
        # by R / (R + alt0) when projected down (about 1 cm per 150 m here)
        assert dist == pytest.approx(math.hypot(e, n) * 6.37e6 / (6.37e6 + alt0), abs=0.003)
        if math.hypot(e, n) > 10:
            assert math.radians(az) == pytest.approx(math.atan2(e, n), abs=1e-4)
        # the ENU up axis is normal to the ellipsoid: height grows by the Earth's curvature drop only
        assert alt - alt0 == pytest.approx(u + (e * e + n * n) / (2 * 6.37e6), abs=0.01)


def test_mapping_poses_are_spaced_and_oriented_as_driven(world: SyntheticWorld, mapping: list[Frame]) -> None:
    pos = _positions(mapping)
    step = np.linalg.norm(np.diff(pos[:, :2], axis=0), axis=1)
    assert np.all(step <= 5.0 + 1e-6) and np.all(step > 4.5)  # chords on the rounded corners are shorter
    assert np.median(step) == pytest.approx(5.0, abs=1e-3)
    assert np.allclose(pos[:, 2], world.config.camera_height_m)
    stamps = np.array([f.stamp for f in mapping])
    assert np.all(np.diff(stamps) > 0)
    assert np.median(np.diff(stamps)) == pytest.approx(5.0 / world.config.speed_mps, rel=1e-6)
    q = np.stack([f.orientation for f in mapping])
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0) and np.allclose(q[:, :2], 0.0)
    # heading points along the motion (compare with the direction to the next frame)
    motion = np.arctan2(np.diff(pos[:, 1]), np.diff(pos[:, 0]))
    yaw = 2 * np.arctan2(q[:-1, 2], q[:-1, 3])
    err = np.abs((yaw - motion + np.pi) % (2 * np.pi) - np.pi)
    assert np.median(err) < math.radians(1.0) and err.max() < math.radians(50.0)
    assert [f.yaw for f in mapping[:3]] == pytest.approx(list(yaw[:3]))
    # the camera drives in the right lane: south street eastwards at y = -lane_offset
    assert pos[0, 1] == pytest.approx(world.grid_y[0] - world.config.lane_offset_m, abs=1e-6)


def test_query_revisits_mapping_places_with_changed_appearance(
    mapping: list[Frame], query: list[Frame]
) -> None:
    mp, qp = _positions(mapping)[:, :2], _positions(query)[:, :2]
    d = np.linalg.norm(qp[:, None] - mp[None], axis=2)
    nearest = d.min(axis=1)
    assert nearest.max() < 5.0  # every query is a revisit
    assert nearest.max() > 1.0  # with a real lateral offset, not the same poses
    assert min(f.stamp for f in query) > max(f.stamp for f in mapping)  # another day
    diffs = []
    for i, f in enumerate(query):
        m = mapping[int(np.argmin(d[i]))]
        diffs.append(np.abs(f.image.astype(np.int16) - m.image.astype(np.int16)).mean())
    assert np.min(diffs) > 12.0


def test_loop_traversal_revisits_its_own_start(world: SyntheticWorld) -> None:
    frames = world.traversal("loop", spacing_m=4.0)
    pos = _positions(frames)[:, :2]
    d = np.linalg.norm(pos[:, None] - pos[None], axis=2)
    later = np.arange(len(frames))[:, None] - np.arange(len(frames))[None, :] > 60  # i much later than j
    i, j = np.nonzero(later & (d < 3.0))
    assert i.size > 5
    yaw = np.array([f.yaw for f in frames])
    assert np.all(np.cos(yaw[i] - yaw[j]) > 0.8)  # revisited in the same direction (one pair is in a turn)
    # the loop is closed geometrically: the route length exceeds the grid perimeter
    perim = 2 * (world.grid_x[-1] + world.grid_y[-1])
    assert len(frames) * 4.0 > perim


def test_appearance_changes_the_image_but_not_the_geometry(world: SyntheticWorld) -> None:
    base = world.render((40.0, -2.5), 0.0)
    dark = world.render((40.0, -2.5), 0.0, Appearance(gain=0.5))
    assert abs(dark.mean() - 0.5 * base.mean()) < 3.0
    sunny = world.render(
        (40.0, -2.5), 0.0, Appearance(sun_strength=1.0, sun_azimuth_rad=1.0, sun_elevation_rad=0.7)
    )
    assert np.abs(sunny.astype(np.int16) - base.astype(np.int16)).mean() > 5.0
    noisy = world.render((40.0, -2.5), 0.0, Appearance(noise_sigma=5.0, seed=1))
    assert 2.0 < np.abs(noisy.astype(np.int16) - base.astype(np.int16)).mean() < 6.0


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_rejected_with_a_clear_message(world: SyntheticWorld) -> None:
    with pytest.raises(ValueError, match="fov_deg"):
        SyntheticWorld(WorldConfig(fov_deg=1.0))
    with pytest.raises(ValueError, match="outside the world"):
        world.render((1e4, 0.0), 0.0)
    with pytest.raises(ValueError, match="kind"):
        world.traversal("sideways")
    with pytest.raises(ValueError, match="spacing_m"):
        world.traversal("mapping", spacing_m=0.0)
    with pytest.raises(ValueError, match="gamma"):
        world.render((40.0, -2.5), 0.0, Appearance(gamma=0.0))


# ----------------------------------------------------------------------------- bags


def _read_bag(path: Path) -> dict[str, list]:
    from rosbags.highlevel import AnyReader

    out: dict[str, list] = {}
    with AnyReader([path]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    out["__types__"] = [types]
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3", "ros1"])
def test_bag_round_trip_raw_images(tmp_path: Path, mapping: list[Frame], storage: str) -> None:
    frames = mapping[:8]
    path = write_bag(tmp_path / ("bag.bag" if storage == "ros1" else "bag"), frames, storage=storage)
    assert path.exists()
    got = _read_bag(path)
    assert got["__types__"][0] == {
        "/camera/image_raw": "sensor_msgs/msg/Image",
        "/gps/fix": "sensor_msgs/msg/NavSatFix",
        "/odom": "nav_msgs/msg/Odometry",
    }
    for topic in ("/camera/image_raw", "/gps/fix", "/odom"):
        assert len(got[topic]) == len(frames)
    for f, (t, img), (_, fix), (_, odom) in zip(
        frames, got["/camera/image_raw"], got["/gps/fix"], got["/odom"], strict=True
    ):
        ns = round(f.stamp * 1e9)
        assert t == ns and img.header.stamp.sec * 10**9 + img.header.stamp.nanosec == ns
        assert img.encoding == "bgr8" and img.header.frame_id == "camera"
        decoded = np.asarray(img.data, np.uint8).reshape(img.height, img.width, 3)
        assert np.array_equal(decoded, f.image)
        assert (fix.latitude, fix.longitude, fix.altitude) == pytest.approx(f.latlonalt, abs=1e-12)
        p, q = odom.pose.pose.position, odom.pose.pose.orientation
        assert np.allclose([p.x, p.y, p.z], f.position) and np.allclose([q.x, q.y, q.z, q.w], f.orientation)
        assert odom.header.frame_id == "map" and odom.child_frame_id == "base_link"
        assert odom.twist.twist.linear.x == pytest.approx(WorldConfig().speed_mps, rel=0.05)


@pytest.mark.parametrize("storage", ["mcap", "ros1"])
def test_bag_round_trip_jpeg_and_rate(tmp_path: Path, mapping: list[Frame], storage: str) -> None:
    from rosbags.image import message_to_cvimage

    frames = mapping[:5]
    path = write_bag(tmp_path / ("c.bag" if storage == "ros1" else "c"), frames, storage=storage,
                     compressed=True, rate_hz=10.0, gps_topic=None)  # fmt: skip
    got = _read_bag(path)
    assert got["__types__"][0] == {
        "/camera/image_raw/compressed": "sensor_msgs/msg/CompressedImage",
        "/odom": "nav_msgs/msg/Odometry",
    }
    stamps = [t for t, _ in got["/camera/image_raw/compressed"]]
    assert np.allclose(np.diff(stamps), 1e8)  # re-stamped at 10 Hz
    for f, (_, msg) in zip(frames, got["/camera/image_raw/compressed"], strict=True):
        img = message_to_cvimage(msg, "bgr8")
        assert img.shape == f.image.shape
        assert np.abs(img.astype(np.int16) - f.image.astype(np.int16)).mean() < 4.0


def test_bag_writer_refuses_bad_requests(tmp_path: Path, mapping: list[Frame]) -> None:
    with pytest.raises(ValueError, match="storage"):
        write_bag(tmp_path / "x", mapping[:2], storage="zip")
    with pytest.raises(ValueError, match="no frames"):
        write_bag(tmp_path / "x", [])
    (tmp_path / "exists").mkdir()
    with pytest.raises(FileExistsError, match="exists"):
        write_bag(tmp_path / "exists", mapping[:2])
    with pytest.raises(ValueError, match="increasing"):
        write_bag(tmp_path / "y", [mapping[1], mapping[0]])


# ----------------------------------------------------------------------------- distinguishability


def _raw_descriptors(frames: list[Frame]) -> np.ndarray:
    """The weak baseline: 32x24 grayscale thumbnails, zero-mean, unit-norm."""
    x = np.stack(
        [
            cv2.resize(
                cv2.cvtColor(f.image, cv2.COLOR_BGR2GRAY), (32, 24), interpolation=cv2.INTER_AREA
            ).ravel()
            for f in frames
        ]
    ).astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _recall_at_1(
    dq: np.ndarray, dm: np.ndarray, qp: np.ndarray, mp: np.ndarray, radius: float = 25.0
) -> float:
    nn = np.argmax(dq @ dm.T, axis=1)
    return float(np.mean(np.linalg.norm(qp - mp[nn], axis=1) <= radius))


@pytest.mark.slow
def test_places_are_distinguishable_by_netvlad_but_not_by_raw_pixels(
    mapping: list[Frame], query: list[Frame]
) -> None:
    model = pytest.importorskip("netvlad_ros.model")
    mp, qp = _positions(mapping)[:, :2], _positions(query)[:, :2]
    raw = _recall_at_1(_raw_descriptors(query), _raw_descriptors(mapping), qp, mp)
    ex = model.DescriptorExtractor(None, device="cpu")
    dm = ex([f.image for f in mapping])
    dq = ex([f.image for f in query])
    assert dm.shape[0] == len(mapping) and np.allclose(np.linalg.norm(dm, axis=1), 1.0, atol=1e-4)
    netvlad = _recall_at_1(dq, dm, qp, mp)
    print(f"Recall@1 (25 m): raw pixels {raw:.3f}, NetVLAD {netvlad:.3f}")
    assert raw < 0.75, "raw pixels should not solve this world"
    assert netvlad >= 0.8
    assert netvlad >= raw + 0.2
