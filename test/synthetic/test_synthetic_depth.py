"""Aligned depth, intrinsics and frame conventions of the synthetic world: depth is Z along
the optical axis, back-projected pixels land on the world's geometry, depth edges are the
image's edges, known 3-D points project where they render, and the ground-truth relative
pose maps one frame's depth into the other's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netvlad_ros.synthetic.conditions import Appearance
from netvlad_ros.synthetic.frames import (
    T_BODY_OPTICAL,
    Frame,
    back_project,
    pose_matrix,
    project,
    relative_pose,
)
from netvlad_ros.synthetic.world import SyntheticWorld, WorldConfig, yaw_to_quaternion

SMALL = {"width": 320, "height": 240, "blocks_x": 1, "blocks_y": 1}


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(WorldConfig(seed=5, **SMALL))


def _world_points(
    world: SyntheticWorld, pos_xy: tuple[float, float], yaw: float, depth: np.ndarray
) -> np.ndarray:
    """(H, W, 3) ENU points of the pixels: optical -> body (T_BODY_OPTICAL) -> world (the pose)."""
    pts = back_project(world.camera, depth).reshape(-1, 3)
    t_wb = pose_matrix([pos_xy[0], pos_xy[1], world.config.camera_height_m], yaw_to_quaternion(yaw))
    t = t_wb @ T_BODY_OPTICAL
    with np.errstate(invalid="ignore"):
        out = pts @ t[:3, :3].T + t[:3, 3]
    return out.reshape((*depth.shape, 3))


def _distance_to_walls(world: SyntheticWorld, xy: np.ndarray) -> np.ndarray:
    """Horizontal distance of points (N, 2) to the nearest wall segment."""
    rel = xy[:, None, :] - world.seg_p0[None]
    s = np.clip(np.einsum("nsk,sk->ns", rel, world.seg_e) / world.seg_len**2, 0.0, 1.0)
    closest = world.seg_p0[None] + s[..., None] * world.seg_e[None]
    return np.min(np.linalg.norm(xy[:, None, :] - closest, axis=2), axis=1)


def test_camera_intrinsics_are_the_renderers(world: SyntheticWorld) -> None:
    cam = world.camera
    assert np.array_equal(cam.matrix, world.intrinsics)
    assert (cam.width, cam.height) == (320, 240) and cam.distortion == (0.0,) * 5
    cam.validate()  # the map database's type accepts it
    frames = world.traversal("mapping", spacing_m=20.0, max_frames=2)
    assert all(f.camera == cam for f in frames)


def test_depth_of_a_wall_seen_head_on_is_its_distance(world: SyntheticWorld) -> None:
    """Looking north at the block's south face from 6 m: every wall pixel has depth 6 m (Z, not the
    ray length, which reaches 6 / cos(35 deg) = 7.3 m at the image edges)."""
    y_wall = world.grid_y[0] + world.config.street_width_m / 2
    x = float(world.seg_p0[0, 0] + world.seg_len[0] / 2)
    img, depth = world.render_rgbd((x, y_wall - 6.0), math.pi / 2)
    assert depth.dtype == np.float32 and depth.shape == img.shape[:2]
    assert np.array_equal(img, world.render((x, y_wall - 6.0), math.pi / 2))  # the same image as render()
    wall = depth[: world.config.height // 2]
    finite = wall[np.isfinite(wall)]
    assert finite.size > 0.5 * wall.size  # measured: all of it (the wall fills the upper half)
    assert np.abs(finite - 6.0).max() < 1e-4  # measured 0.0 (6 is exact in float32)


def test_back_projected_pixels_lie_on_the_world_geometry(world: SyntheticWorld) -> None:
    """Every pixel with a depth, back-projected with the intrinsics and the pose, lies on the
    ground (z = 0) or on a facade (on a wall segment, below its roof)."""
    pos, yaw = (30.0, -2.5), 0.4  # an oblique view up the street and across the corner
    _, depth = world.render_rgbd(pos, yaw)
    pts = _world_points(world, pos, yaw, depth)[np.isfinite(depth)]
    on_ground = np.abs(pts[:, 2]) < 1e-3
    wall_dist = _distance_to_walls(world, pts[:, :2])
    on_wall = (wall_dist < 1e-3) & (pts[:, 2] > -1e-3) & (pts[:, 2] < world.seg_height.max() + 1e-3)
    assert on_ground.sum() > 1000 and on_wall.sum() > 1000
    # measured: all 70,589 pixels on one of the two; walls within 2.2e-6 m, ground |z| < 0.9 mm
    assert np.mean(on_ground | on_wall) > 0.999


def test_depth_edges_are_the_image_edges(world: SyntheticWorld) -> None:
    """Rendering twice with only the sky's colour changed, the pixels that change are exactly the
    pixels whose depth is +inf: depth is aligned with the image to the pixel."""
    base = {"cloud_cover": 0.0, "haze_m": 1e9}  # no haze: walls do not take the sky's colour
    pos, yaw = (30.0, -2.5), 0.4
    dark, depth = world.render_rgbd(
        pos, yaw, Appearance(sky_top_bgr=(0, 0, 0), sky_horizon_bgr=(0, 0, 0), **base)
    )
    bright = world.render(
        pos, yaw, Appearance(sky_top_bgr=(255, 255, 255), sky_horizon_bgr=(255, 255, 255), **base)
    )
    changed = np.any(dark != bright, axis=2)
    sky = ~np.isfinite(depth)
    assert sky.sum() > 2000  # measured 6,211 sky pixels at 320x240
    assert np.isposinf(depth[sky]).all()  # the sky is +inf (REP 118: no return), never NaN
    assert np.array_equal(changed, sky)  # measured: identical masks (0 pixels differ)


def test_known_points_project_where_they_render() -> None:
    """Roof corners and wall bases of a building seen head-on project (with the intrinsics, the
    pose and T_BODY_OPTICAL) to the rows and columns where the depth image changes, within a pixel."""
    world = SyntheticWorld(WorldConfig(seed=5, building_height_m=(4.0, 7.0), **SMALL))  # roofs in view
    c = world.config
    y_wall = world.grid_y[0] + c.street_width_m / 2
    # the first pair of neighbouring buildings on that face whose roofs differ by > 1 m
    k = next(
        i for i in range(len(world.seg_p0) - 1)
        if abs(world.seg_p1[i, 1] - y_wall) < 1e-9 and abs(world.seg_height[i] - world.seg_height[i + 1]) > 1.0
    )  # fmt: skip
    corner = world.seg_p1[k]  # shared by segments k and k + 1
    d = 14.0
    pos, yaw = (float(corner[0]) - 0.7, y_wall - d), math.pi / 2
    _, depth = world.render_rgbd(pos, yaw)
    t_world_optical = (
        pose_matrix([pos[0], pos[1], c.camera_height_m], yaw_to_quaternion(yaw)) @ T_BODY_OPTICAL
    )
    to_optical = np.linalg.inv(t_world_optical)

    def proj(xyz: tuple[float, float, float]) -> np.ndarray:
        p = to_optical @ np.array([*xyz, 1.0])
        return project(world.camera, p[:3][None])[0]

    lo, hi = sorted((world.seg_height[k], world.seg_height[k + 1]))
    u_corner, v_hi = proj((corner[0], corner[1], hi))
    _, v_lo = proj((corner[0], corner[1], lo))
    _, v_base = proj((corner[0], corner[1], 0.0))
    # roof rows: first finite-depth row of a column just left and right of the corner
    col_l, col_r = int(u_corner) - 6, int(u_corner) + 6
    first = [int(np.argmax(np.isfinite(depth[:, col]))) for col in (col_l, col_r)]
    tall_left = world.seg_height[k] > world.seg_height[k + 1]
    expect = (v_hi, v_lo) if tall_left else (v_lo, v_hi)
    for row, v in zip(first, expect, strict=True):
        assert (
            abs(row - math.ceil(v)) <= 1
        )  # the first pixel centre below the roof line; measured 0 (rows 38, 71)
    # the corner column: in a row between the two roofs the depth turns from finite to +inf there
    row = int((v_hi + v_lo) / 2)
    finite = np.isfinite(depth[row])
    edge = int(np.nonzero(np.diff(finite.astype(np.int8)))[0][0]) + 0.5  # between two pixel centres
    assert abs(edge - u_corner) <= 1.0  # measured 0.43 px
    # the wall base: wall depth (d) above it, nearer ground below it
    col = int(u_corner) + 20
    below = int(np.argmax(depth[:, col] < d - 1e-3))
    assert abs(below - math.ceil(v_base)) <= 1  # measured 0
    assert abs(float(depth[below - 1, col]) - d) < 1e-4


def test_relative_pose_maps_one_frames_depth_into_the_other(world: SyntheticWorld) -> None:
    """Points from frame b's depth, moved by relative_pose(a, b, optical=True) into a's optical
    frame and projected with the intrinsics, land where a's own depth sees them."""
    frames = world.traversal("loop", spacing_m=2.0, max_frames=30, depth=True)
    a, b = frames[20], frames[22]  # 4 m apart, slightly different headings (loop jitter)
    t_ab = relative_pose(a, b, optical=True)
    body = relative_pose(a, b)
    assert np.allclose(body, np.linalg.inv(a.pose) @ b.pose)
    assert np.allclose(t_ab, np.linalg.inv(T_BODY_OPTICAL) @ body @ T_BODY_OPTICAL)
    assert body[0, 3] > 3.0  # b is ahead of a: +x forward in the body frame (REP-103); measured 4.0 m
    assert b.depth is not None and a.depth is not None
    pts_b = back_project(world.camera, b.depth)[::4, ::4].reshape(-1, 3)
    pts_b = pts_b[np.isfinite(pts_b[:, 2])]
    pts_a = pts_b @ t_ab[:3, :3].T + t_ab[:3, 3]
    pts_a = pts_a[pts_a[:, 2] > 0.5]
    uv = np.round(project(world.camera, pts_a)).astype(int)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < 320) & (uv[:, 1] >= 0) & (uv[:, 1] < 240)
    seen = a.depth[uv[inside, 1], uv[inside, 0]]
    err = np.abs(seen - pts_a[inside, 2]) / pts_a[inside, 2]
    assert inside.sum() > 2000  # measured 4,411
    # rounding to the pixel and occlusions leave a tail; measured: median 0.4 %, 90.8 % below 3 %
    assert np.median(err) < 0.01 and np.mean(err < 0.03) > 0.85


def test_frame_pose_helpers_follow_the_conventions() -> None:
    yaw = 0.7
    f = Frame(
        0,
        0.0,
        np.zeros((2, 2, 3), np.uint8),
        np.array([1.0, 2.0, 1.6]),
        yaw_to_quaternion(yaw),
        (0.0, 0.0, 0.0),
    )
    assert np.allclose(f.pose[:3, 0], [math.cos(yaw), math.sin(yaw), 0.0])  # body x: forward along the yaw
    assert np.allclose(f.pose[:3, 2], [0.0, 0.0, 1.0])  # body z: up
    assert np.array_equal(f.odom_pose, f.pose)  # no odometry of its own: the ground truth
    # optical z (forward) is body x, optical x (right) is body -y, optical y (down) is body -z
    assert np.array_equal(T_BODY_OPTICAL[:3, 2], [1.0, 0.0, 0.0])
    assert np.array_equal(T_BODY_OPTICAL[:3, 0], [0.0, -1.0, 0.0])
    assert np.array_equal(T_BODY_OPTICAL[:3, 1], [0.0, 0.0, -1.0])
    assert np.array_equal(T_BODY_OPTICAL[:3, 3], [0.0, 0.0, 0.0])


def test_corridor_depth_hits_walls_floor_and_ceiling() -> None:
    """Indoors every pixel has a depth (walls, floor, ceiling); back-projected, floor pixels are at
    z = 0, ceiling pixels at the ceiling height, the rest on walls."""
    w = SyntheticWorld(WorldConfig.corridors(seed=3, width=160, height=120, blocks_x=1, blocks_y=1))
    pos, yaw = (6.0, -0.3), 0.05
    _, depth = w.render_rgbd(pos, yaw)
    assert np.isfinite(depth).all()
    pts = _world_points(w, pos, yaw, depth).reshape(-1, 3)
    floor = np.abs(pts[:, 2]) < 1e-3
    ceiling = np.abs(pts[:, 2] - w.config.ceiling_height_m) < 1e-3
    wall = _distance_to_walls(w, pts[:, :2]) < 1e-3
    assert (
        floor.sum() > 1000 and ceiling.sum() > 1000 and wall.sum() > 1000
    )  # measured 3,018 / 3,528 / 12,662
    assert np.mean(floor | ceiling | wall) > 0.999  # measured 1.0
