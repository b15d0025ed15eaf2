"""netvlad_ros.offline.build_map: maps from bags (every storage, every pose source) and image
folders, keyframe counts, skip reasons, thumbnails, errors, and the real RTAB-Map bags.

Real model (the small EfficientNet-Lite0 + NetVLAD fixture), real bags, real SQLite/faiss
map files; expected counts and positions are worked out by hand in each test.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from test_offline_bags import BagBuilder, pattern, yaw_q

from netvlad_ros.config import from_arguments
from netvlad_ros.mapdb import MapDatabase
from netvlad_ros.offline.bags import iter_bag_images, open_bag
from netvlad_ros.offline.build_map import BuildMapError, FrameSource, build_map, format_summary
from netvlad_ros.offline.eval_map import describe_source, recall_at_n
from netvlad_ros.sensors.image_codec import decode_image_msg
from netvlad_ros.sensors.poses import KeyframeParams
from netvlad_ros.synthetic import write_bag

from support import rtabmap_or_skip

EVERY_FRAME = KeyframeParams(0.0, 0.0, 0.0)  # every criterion off: every frame is a keyframe


@pytest.fixture(scope="module")
def extractor(small_model):
    from netvlad_ros.model import DescriptorExtractor

    return DescriptorExtractor(small_model, device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def world_frames():
    from netvlad_ros.synthetic import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(seed=3, width=96, height=72))
    frames = world.traversal("mapping", spacing_m=2.0, max_frames=12)
    steps = np.linalg.norm(np.diff([f.position for f in frames], axis=0), axis=1)
    assert np.allclose(steps, 2.0, atol=0.01), "precondition: the first 12 frames are on a straight street"
    return frames


def load_keyframes(path: Path) -> list:
    db = MapDatabase.load(path)
    return [db.keyframe(int(i)) for i in db.ids]


@pytest.mark.parametrize(
    ("storage", "compressed", "pose"),
    [("mcap", True, "gps"), ("sqlite3", False, "odom"), ("ros1", True, "odom")],
)
def test_build_from_synthetic_bag(tmp_path, extractor, world_frames, storage, compressed, pose) -> None:
    bag = write_bag(tmp_path / "bag.bag" if storage == "ros1" else tmp_path / "bag", world_frames, storage,
                    compressed=compressed)  # fmt: skip
    topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    src = FrameSource(bag=bag, image_topic=topic, pose_topic="/gps/fix" if pose == "gps" else "/odom")
    out = tmp_path / "map"
    s = build_map(out, src, keyframes=KeyframeParams(3.0, 0.0, 0.0), extractor=extractor, progress=False)
    # frames 2 m apart, a keyframe every >= 3 m: frames 0, 2, 4, 6, 8, 10
    assert (s["images_read"], s["keyframes"], s["not_selected"], s["skipped"]) == (12, 6, 6, {})
    assert "keyframes" in format_summary(s) and s["network_seconds"] > 0
    kfs = load_keyframes(out)
    chosen = world_frames[::2]
    assert [k.source for k in kfs] == [f"{topic}#{i}" for i in range(0, 12, 2)]
    assert [k.stamp for k in kfs] == pytest.approx([f.stamp for f in chosen], abs=1e-6)
    if pose == "gps":
        db = MapDatabase.load(out)
        assert db.origin == pytest.approx(world_frames[0].latlonalt)
        rel = np.array([f.position - world_frames[0].position for f in chosen])
        assert np.array([k.position for k in kfs]) == pytest.approx(rel, abs=0.02)
        assert kfs[2].latlonalt == pytest.approx(chosen[2].latlonalt, abs=1e-7)
    else:
        assert np.array([k.position for k in kfs]) == pytest.approx(np.array([f.position for f in chosen]))
        assert np.abs(
            np.sum([k.orientation for k in kfs] * np.array([f.orientation for f in chosen]), axis=1)
        ) == (pytest.approx(1.0))
        assert kfs[0].frame_id == "map"
    thumb = cv2.imdecode(np.frombuffer(kfs[0].thumbnail, np.uint8), cv2.IMREAD_COLOR)
    assert thumb.shape == (72, 96, 3)  # smaller than 160 px: not enlarged
    # descriptors are those of the images themselves
    db = MapDatabase.load(out)
    img0 = cv2.imdecode(np.frombuffer(cv2.imencode(".jpg", world_frames[0].image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1],
                                      np.uint8), cv2.IMREAD_COLOR) if compressed else world_frames[0].image  # fmt: skip
    assert db.descriptors(db.ids[:1])[0] @ extractor([img0])[0] == pytest.approx(1.0, abs=1e-5)


def test_gap_and_decode_errors_are_counted(tmp_path, extractor) -> None:
    b = BagBuilder("mcap")
    for k in range(9):  # odometry 0 .. 4 s every 0.5 s, moving 1 m/s
        b.pose("odom", "/odom", k * 0.5, (k * 0.5, 0, 0), yaw_q(0))
    for i in range(10):  # images at 0 .. 9 s; the one at 2 s is a truncated JPEG
        jpeg = cv2.imencode(".jpg", pattern(i, 48, 64))[1].tobytes()
        b.compressed("/cam/compressed", float(i), pattern(i), data=jpeg[: len(jpeg) // 2] if i == 2 else jpeg)
    path = b.write(tmp_path / "bag")
    src = FrameSource(bag=path, image_topic="/cam/compressed", pose_topic="/odom", max_gap_s=0.5)
    s = build_map(tmp_path / "map", src, keyframes=EVERY_FRAME, extractor=extractor, progress=False)
    # images 0..4 have poses (5 is 1 s after the last pose); image 2 does not decode
    assert s["images_read"] == 10 and s["keyframes"] == 4
    assert s["skipped"] == {"decode_error": 1, "no_pose": 5}
    assert "cam/compressed#2" in s["decode_errors"][0] and "truncated" in s["decode_errors"][0]
    assert [k.position[0] for k in load_keyframes(tmp_path / "map")] == [0.0, 1.0, 3.0, 4.0]


def test_no_keyframes_and_bad_inputs(tmp_path, extractor) -> None:
    b = BagBuilder("sqlite3")
    b.pose("pose", "/pose", 100.0, (0, 0, 0), yaw_q(0))
    b.image("/cam", 0.0, pattern(0))
    path = b.write(tmp_path / "bag")
    with pytest.raises(BuildMapError, match=r"no keyframes: all 1 images were skipped \(no_pose: 1\)"):
        build_map(tmp_path / "m", FrameSource(bag=path, image_topic="/cam", pose_topic="/pose"), extractor=extractor,
                  progress=False)  # fmt: skip
    with pytest.raises(BuildMapError, match="image folder not found"):
        build_map(
            tmp_path / "m", FrameSource(images=tmp_path / "none", filename_poses=True), extractor=extractor
        )
    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "frame1.png"), pattern(0))
    with pytest.raises(BuildMapError, match=r"frame1\.png"):
        build_map(tmp_path / "m", FrameSource(images=folder, filename_poses=True), extractor=extractor)
    with pytest.raises(BuildMapError, match="pose CSV not found"):
        build_map(
            tmp_path / "m", FrameSource(images=folder, poses_csv=tmp_path / "x.csv"), extractor=extractor
        )


def test_folder_with_csv_and_utm_names(tmp_path, extractor) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"img{i}.png"), pattern(i, 48, 64))
    (folder / "img4.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    csv = tmp_path / "poses.csv"
    # img2 has no row; img4 does not decode
    csv.write_text("filename,x,y,qx,qy,qz,qw\nimg0.png,0,0,0,0,0,1\nimg1.png,5,0,0,0,0,1\nimg3.png,5,5,0,0,1,0\n"
                   "img4.jpg,9,9,0,0,0,1\n")  # fmt: skip
    s = build_map(
        tmp_path / "m1", FrameSource(images=folder, poses_csv=csv), extractor=extractor, progress=False
    )
    assert (s["images_read"], s["keyframes"]) == (5, 3)
    assert s["skipped"] == {"decode_error": 1, "no_pose": 1}
    kfs = load_keyframes(tmp_path / "m1")
    assert [k.source for k in kfs] == ["img0.png", "img1.png", "img3.png"]
    assert kfs[2].position.tolist() == [5, 5, 0] and kfs[2].orientation.tolist() == [0, 0, 1, 0]

    geo = tmp_path / "geo.csv"
    geo.write_text("index,lat,lon,alt\n0,40.0,-80.0,300\n1,40.0001,-80.0,300\n3,40.0,-80.0001,300\n")
    s = build_map(tmp_path / "m2", FrameSource(images=folder, poses_csv=geo, max_images=4), extractor=extractor,
                  keyframes=EVERY_FRAME, progress=False)  # fmt: skip
    assert (s["keyframes"], s["skipped"]) == (3, {"no_pose": 1})
    db = MapDatabase.load(tmp_path / "m2")
    assert db.origin == (40.0, -80.0, 300.0)
    pos = db.positions(db.ids)
    assert pos[1, 1] == pytest.approx(11.1, abs=0.1) and pos[2, 0] == pytest.approx(-8.5, abs=0.1)
    assert db.keyframe(int(db.ids[1])).latlonalt == (40.0001, -80.0, 300.0)

    utm = tmp_path / "utm"
    utm.mkdir()
    names = ["@0543256.96@4477339.07@17@T@a@.jpg", "@0543259.96@4477343.07@17@T@b@.jpg"]
    for i, n in enumerate(names):
        cv2.imwrite(str(utm / n), pattern(i, 48, 64))
    s = build_map(
        tmp_path / "m3", FrameSource(images=utm, filename_poses=True), extractor=extractor, progress=False
    )
    db = MapDatabase.load(tmp_path / "m3")
    assert s["keyframes"] == 2 and s["frame_id"] == "utm"
    assert db.positions(db.ids).tolist() == [[543256.96, 4477339.07, 0.0], [543259.96, 4477343.07, 0.0]]


def test_rtabmap_bags_build_and_recall(tmp_path, extractor) -> None:
    """Map from the first 40 real images (a straight line, 1 m apart, via a frame-index CSV),
    queries 41..84 scored against the loop-closure ground truth."""
    data = rtabmap_or_skip()
    bags = data / "bags"
    gt = np.load(data / "gt_matrix_84x84.npy")
    topic = "/camera/image/compressed"
    csv = tmp_path / "poses.csv"
    csv.write_text("index,x,y\n" + "".join(f"{i},{i}.0,0.0\n" for i in range(84)))
    # the three storages hold the same images
    decoded = {}
    for name in ("rtabmap_samples_ros2_mcap", "rtabmap_samples_ros2_db3", "rtabmap_samples_ros1.bag"):
        with open_bag(bags / name) as reader:
            decoded[name] = [decode_image_msg(f.msg) for f in iter_bag_images(reader, topic, 38, 3)]
    first = decoded["rtabmap_samples_ros2_mcap"]
    assert all(np.array_equal(a, b) for imgs in decoded.values() for a, b in zip(first, imgs, strict=True))
    assert first[0].shape == (384, 512, 3)

    out = tmp_path / "map"
    src = FrameSource(bag=bags / "rtabmap_samples_ros2_mcap", image_topic=topic, poses_csv=csv, max_images=40)
    s = build_map(out, src, keyframes=KeyframeParams(1.0, 15.0, 0.0), extractor=extractor, progress=False)
    assert (s["images_read"], s["keyframes"], s["skipped"]) == (40, 40, {})
    db = MapDatabase.load(out, expected_model_fingerprint=extractor.fingerprint)
    kf = db.keyframe(int(db.ids[7]))
    assert kf.source == f"{topic}#7" and kf.position.tolist() == [7.0, 0.0, 0.0]
    assert cv2.imdecode(np.frombuffer(kf.thumbnail, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)

    q = describe_source(
        FrameSource(
            bag=bags / "rtabmap_samples_ros1.bag", image_topic=topic, start_index=40, require_poses=False
        ),
        extractor,
    )
    assert q["indices"].tolist() == list(range(40, 84))
    res = db.search(q["descriptors"], 5)
    frame_of = {int(i): int(db.keyframe(int(i)).source.rsplit("#", 1)[1]) for i in db.ids}
    matched = np.vectorize(frame_of.get)(res.ids)
    correct = gt[q["indices"][:, None], matched]
    valid = gt[q["indices"], :40].any(axis=1)
    recall = recall_at_n(correct, (1, 5), valid)
    print(f"\nRTAB-Map samples, small test model: {valid.sum()} queries, Recall@1 {recall[1]:.3f}, "
          f"Recall@5 {recall[5]:.3f}")  # fmt: skip
    # chance is about 4 correct of 40 (~0.1); the small 8-cluster test model must do clearly better
    assert recall[1] >= 0.3 and recall[5] >= recall[1]


def test_argparse_helpers_make_the_same_source(tmp_path) -> None:
    import argparse

    from netvlad_ros.offline.build_map import add_build_map_arguments, source_from_args
    from netvlad_ros.offline.eval_map import add_eval_map_arguments

    p = argparse.ArgumentParser()
    add_build_map_arguments(p)
    args = p.parse_args(
        ["out", "--bag", "b", "--image-topic", "/cam", "--pose-topic", "/tf", "--tf-fixed-frame", "map",
         "--origin", "1", "2", "3", "--max-images", "40", "--keyframe-period-s", "0", "--keyframe-angle-deg", "5"]
    )  # fmt: skip
    src = source_from_args(args)
    assert (src.bag, src.image_topic, src.uses_tf, src.tf_fixed_frame) == (Path("b"), "/cam", True, "map")
    assert (src.origin, src.max_images, src.max_gap_s, from_arguments(KeyframeParams, args, "keyframe.")) == (
        (1, 2, 3),
        40,
        0.5,
        KeyframeParams(distance_m=1.0, angle_deg=5.0, period_s=0.0),  # distance: the default
    )
    e = argparse.ArgumentParser()
    add_eval_map_arguments(e)
    eargs = e.parse_args(["m", "--images", "d", "--poses-csv", "p.csv", "--json", "r.json"])
    assert (eargs.map, source_from_args(eargs).images, eargs.radius) == (Path("m"), Path("d"), 25.0)


def test_build_map_stores_local_features_with_depth_and_intrinsics(tmp_path, small_model):
    """An RGB-D bag with camera_info: every keyframe gets ORB features from the full image, their
    depths from the paired depth image (checked against the renderer's depth) and the intrinsics."""
    from netvlad_ros.model import DescriptorExtractor
    from netvlad_ros.synthetic import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(seed=3))
    frames = world.traversal("mapping", spacing_m=4.0, max_frames=6, depth=True)
    bag = write_bag(tmp_path / "rgbd", frames, "mcap", compressed=True, camera_info_topic="/camera/camera_info",
                    depth_topic="/camera/depth/image_raw", depth_encoding="16UC1")  # fmt: skip
    src = FrameSource(bag=bag, image_topic="/camera/image_raw/compressed", pose_topic="/odom",
                      camera_info_topic="/camera/camera_info", depth_topic="/camera/depth/image_raw")  # fmt: skip
    ex = DescriptorExtractor(small_model, device="cpu", runtime="torch")
    s = build_map(tmp_path / "map", src, keyframes=EVERY_FRAME, extractor=ex, progress=False)
    assert s["keyframes"] == 6 and s["features"]["keyframes_with_features"] == 6
    assert s["features"]["keyframes_with_depth"] == 6 and s["depth_pairing"] == {}
    db = MapDatabase.load(tmp_path / "map")
    for kid, frame in zip(db.ids, frames, strict=True):
        f = db.features(int(kid))
        assert f is not None and f.kind == "orb" and len(f) > 200  # measured 800-1000 per frame
        assert f.image_size == (frame.image.shape[1], frame.image.shape[0])
        assert f.camera is not None and f.camera.fx == pytest.approx(frame.camera.fx)
        # the stored depth at each keypoint is the rendered depth there (16UC1: 1 mm steps), where
        # the renderer has one (sky = no return)
        truth = frame.depth[np.round(f.keypoints[:, 1]).astype(int), np.round(f.keypoints[:, 0]).astype(int)]
        known = np.isfinite(truth) & np.isfinite(f.depths)
        assert known.mean() > 0.5  # measured: most ORB corners are on facades
        err = np.abs(f.depths[known] - truth[known])
        assert np.median(err) < 0.01  # measured ~0.5 mm (16UC1 rounding)


def test_build_map_without_camera_info_or_depth_still_stores_features(tmp_path, small_model):
    from netvlad_ros.model import DescriptorExtractor
    from netvlad_ros.synthetic import SyntheticWorld, WorldConfig

    frames = SyntheticWorld(WorldConfig(seed=4)).traversal("mapping", spacing_m=4.0, max_frames=3)
    bag = write_bag(tmp_path / "bag", frames, "mcap", compressed=True)
    src = FrameSource(bag=bag, image_topic="/camera/image_raw/compressed", pose_topic="/odom")
    ex = DescriptorExtractor(small_model, device="cpu", runtime="torch")
    s = build_map(tmp_path / "map", src, keyframes=EVERY_FRAME, extractor=ex, progress=False)
    db = MapDatabase.load(tmp_path / "map")
    f = db.features(int(db.ids[0]))
    assert s["features"]["keyframes_with_depth"] == 0 and f.depths is None and f.camera is None
    # three keyframes are too few to calibrate: the summary says why (the localizer falls back)
    assert s["calibration"]["calibrated"] is False and s["calibration"]["reason"]
    with pytest.raises(BuildMapError, match="camera_info topic '/nope'"):
        build_map(tmp_path / "m2", FrameSource(bag=bag, image_topic="/camera/image_raw/compressed",
                  pose_topic="/odom", camera_info_topic="/nope"), extractor=ex, progress=False)  # fmt: skip
