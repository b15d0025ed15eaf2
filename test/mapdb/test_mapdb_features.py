"""Local features per keyframe: validation, storage, bit-exact round trip, corruption, calibration."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from netvlad_ros.mapdb import (
    CameraIntrinsics,
    Keyframe,
    KeyframeFeatures,
    MapCorruptError,
    MapDatabase,
    UnknownKeyframeError,
)
from netvlad_ros.mapdb.features import sift_descriptors_to_uint8

from support import RTABMAP, make_scene

D = 32


def images(n: int) -> list[np.ndarray]:
    """Real RTAB-Map images when ../shared exists, generated scenes otherwise (grayscale)."""
    files = sorted((RTABMAP / "images").glob("*.jpg"), key=lambda p: int(p.stem))
    if len(files) >= n:
        return [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files[:: len(files) // n][:n]]
    return [cv2.cvtColor(make_scene(i, 384, 512), cv2.COLOR_BGR2GRAY) for i in range(n)]


def camera(w: int, h: int) -> CameraIntrinsics:
    return CameraIntrinsics(
        525.0, 524.5, (w - 1) / 2, (h - 1) / 2, w, h, "plumb_bob", (0.1, -0.02, 1e-3, 0.0, 0.0)
    )


def extract(img: np.ndarray, kind: str, seed: int, with_depth: bool) -> KeyframeFeatures:
    det = cv2.ORB_create(1000) if kind == "orb" else cv2.SIFT_create(300)
    kps, desc = det.detectAndCompute(img, None)
    pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
    h, w = img.shape
    depth = None
    if with_depth:
        rng = np.random.default_rng(seed)
        depth = rng.uniform(0.3, 10.0, len(pts)).astype(np.float32)
        depth[rng.random(len(pts)) < 0.3] = np.nan
    return KeyframeFeatures.create(
        kind, pts, desc, (w, h), depths=depth, camera=camera(w, h) if seed % 2 else None
    )


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, D)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def feature_sets() -> list[KeyframeFeatures]:
    imgs = images(6)
    out = [extract(img, "orb", i, with_depth=i % 3 != 0) for i, img in enumerate(imgs)]
    out.append(extract(imgs[0], "sift", 7, with_depth=True))
    return out


def map_with_features(feature_sets: list[KeyframeFeatures]) -> MapDatabase:
    rng = np.random.default_rng(0)
    n = 10
    db = MapDatabase.create(D, "model-F")
    feats: list[KeyframeFeatures | None] = [None] * n
    for i, f in enumerate(feature_sets):
        feats[[0, 2, 3, 5, 6, 8, 9][i]] = f
    db.add([Keyframe(stamp=float(i)) for i in range(n)], unit(rng, n), feats)
    return db


def test_orb_features_round_trip_bit_exact(tmp_path, feature_sets):
    # real ORB output: hundreds of features per image (measured 151-913 on the six RTAB-Map
    # images used here at ORB_create(1000); 266-898 on the generated scenes)
    assert all(len(f) > 100 for f in feature_sets[:6])
    db = map_with_features(feature_sets)
    db.save(tmp_path / "m")
    back = MapDatabase.load(tmp_path / "m")
    assert back.count_with_features() == db.count_with_features() == 7
    for kid in db.ids.tolist():
        a, b = db.features(kid), back.features(kid)
        assert (a is None) == (b is None)
        if a is not None:
            assert b == a  # bit-exact: dtypes, keypoints, descriptors, depths (NaN included), camera
            assert b.keypoints.tobytes() == a.keypoints.tobytes()
            assert b.descriptors.tobytes() == a.descriptors.tobytes()
            assert (b.depths is None) == (a.depths is None)
            if a.depths is not None:
                assert b.depths.tobytes() == a.depths.tobytes()
            assert b.camera == a.camera and b.image_size == a.image_size and b.kind == a.kind
    assert not back.has_features(1) and back.features(1) is None
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["features"]["keyframes"] == 7 and manifest["features"]["by_kind"] == {"orb": 6, "sift": 1}
    assert len(manifest["features"]["cameras"]) == 1  # one camera shared by the odd seeds, stored once


def test_sift_float_descriptors_are_stored_losslessly():
    img = images(1)[0]
    kps, desc = cv2.SIFT_create(200).detectAndCompute(img, None)
    assert desc.dtype == np.float32 and len(desc) > 20
    f = KeyframeFeatures.create("sift", np.array([k.pt for k in kps]), desc, img.shape[::-1])
    assert f.descriptors.dtype == np.uint8
    # OpenCV's float SIFT values are integers in [0, 255] (measured max 229 on this image),
    # so the uint8 copy is exact: the COLMAP storage rule loses nothing here
    np.testing.assert_array_equal(f.descriptors.astype(np.float32), desc)
    np.testing.assert_array_equal(
        sift_descriptors_to_uint8(np.array([[-3.0, 0.4, 254.6, 300.0]])), [[0, 0, 255, 255]]
    )


def test_stored_features_are_read_only_copies(feature_sets):
    rng = np.random.default_rng(1)
    pts = feature_sets[0].keypoints.copy()
    desc = feature_sets[0].descriptors.copy()
    mine = KeyframeFeatures("orb", pts, desc, None, feature_sets[0].image_size)
    db = MapDatabase.create(D, "m")
    (kid,) = db.add([Keyframe()], unit(rng, 1), [mine]).tolist()
    pts[0] = -1.0  # the caller keeps editing its arrays: the map's copy does not change
    stored = db.features(kid)
    assert stored.keypoints[0, 0] == feature_sets[0].keypoints[0, 0] != -1.0
    with pytest.raises(ValueError, match="read-only"):
        stored.keypoints[0, 0] = 5.0


def test_set_remove_merge_carry_features(feature_sets):
    db = map_with_features(feature_sets)
    ids = db.ids
    db.set_features(int(ids[1]), feature_sets[1])
    assert db.has_features(int(ids[1])) and db.count_with_features() == 8
    db.set_features(int(ids[0]), None)
    assert not db.has_features(int(ids[0])) and db.count_with_features() == 7
    db.remove([int(ids[2])])
    assert db.count_with_features() == 6
    with pytest.raises(UnknownKeyframeError):
        db.features(int(ids[2]))
    with pytest.raises(UnknownKeyframeError):
        db.set_features(999, feature_sets[0])
    other = MapDatabase.create(D, "model-F")
    mapping = other.merge(db)
    for old, new in mapping.items():
        assert other.features(new) == db.features(old)
    assert other.count_with_features() == 6


def test_bad_features_add_nothing(feature_sets):
    rng = np.random.default_rng(2)
    db = MapDatabase.create(D, "m")
    bad = KeyframeFeatures(
        "orb", feature_sets[0].keypoints, feature_sets[0].descriptors[:, :16], None, (512, 384)
    )
    with pytest.raises(ValueError, match=r"features\[1\]: KeyframeFeatures.descriptors"):
        db.add([Keyframe(), Keyframe()], unit(rng, 2), [None, bad])
    with pytest.raises(ValueError, match="2 keyframes but 1 feature entries"):
        db.add([Keyframe(), Keyframe()], unit(rng, 2), [None])
    with pytest.raises(ValueError, match=r"features\[0\] must be KeyframeFeatures"):
        db.add([Keyframe()], unit(rng, 1), [{"kind": "orb"}])
    assert len(db) == 0 and db.next_id == 0


def _kf(**over):
    base = dict(
        kind="orb",
        keypoints=np.array([[1.0, 2.0], [100.0, 50.0]], np.float32),
        descriptors=np.zeros((2, 32), np.uint8),
        depths=np.array([1.5, np.nan], np.float32),
        image_size=(160, 120),
        camera=CameraIntrinsics(100.0, 100.0, 80.0, 60.0, 160, 120),
    )
    base.update(over)
    return KeyframeFeatures(**base)


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"kind": "akaze"}, "kind"),
        ({"keypoints": np.array([[1.0, 2.0], [3.0, 4.0]])}, "keypoints must be float32"),
        ({"keypoints": np.zeros((2, 3), np.float32)}, "keypoints must be float32 .N, 2."),
        ({"keypoints": np.array([[1.0, np.nan], [3.0, 4.0]], np.float32)}, "keypoints contain NaN"),
        ({"keypoints": np.array([[1.0, 2.0], [160.0, 4.0]], np.float32)}, "keypoints outside the 160x120"),
        ({"keypoints": np.array([[-0.6, 2.0], [1.0, 4.0]], np.float32)}, "keypoints outside"),
        ({"descriptors": np.zeros((2, 128), np.uint8)}, r"descriptors must be uint8 \(2, 32\)"),
        ({"kind": "sift"}, r"descriptors must be uint8 \(2, 128\) for 'sift'"),
        ({"descriptors": np.zeros((2, 32), np.float32)}, "descriptors must be uint8"),
        ({"descriptors": np.zeros((3, 32), np.uint8)}, "descriptors"),
        ({"depths": np.array([1.0], np.float32)}, r"depths must be float32 \(2,\)"),
        ({"depths": np.array([1.0, 2.0])}, "depths must be float32"),
        ({"depths": np.array([-1.0, 2.0], np.float32)}, "depths must be finite metres > 0"),
        ({"depths": np.array([0.0, 2.0], np.float32)}, "depths must be finite metres > 0"),
        ({"depths": np.array([np.inf, 2.0], np.float32)}, "depths must be finite metres > 0"),
        ({"image_size": (0, 120)}, "image_size"),
        ({"camera": CameraIntrinsics(100.0, 100.0, 80.0, 60.0, 320, 240)}, "camera is for a 320x240 image"),
        ({"camera": CameraIntrinsics(0.0, 100.0, 80.0, 60.0, 160, 120)}, "focal lengths must be > 0"),
        (
            {"camera": CameraIntrinsics(100.0, 100.0, float("nan"), 60.0, 160, 120)},
            r"CameraIntrinsics.cx must be finite",
        ),
        (
            {"camera": CameraIntrinsics(100.0, 100.0, 80.0, 60.0, 160, 120, "plumb_bob", (0.1,))},
            "takes 5 coefficients",
        ),
        ({"camera": CameraIntrinsics(100.0, 100.0, 80.0, 60.0, 160, 120, "fisheye62")}, "distortion_model"),
        ({"camera": "K"}, "camera must be CameraIntrinsics"),
    ],
)
def test_validate_names_the_bad_field(over, field):
    _kf().validate()  # the base case is valid
    with pytest.raises(ValueError, match=field):
        _kf(**over).validate()


def test_empty_feature_sets_and_maps_without_features_are_valid(tmp_path):
    rng = np.random.default_rng(3)
    none = KeyframeFeatures.create("orb", np.zeros((0, 2)), np.zeros((0, 32), np.uint8), (64, 48))
    assert len(none) == 0 and none.nbytes == 0
    for name, feats in [("empty", None), ("plain", [None, None]), ("zero", [none, None])]:
        db = MapDatabase.create(D, "m")
        if name != "empty":
            db.add([Keyframe(), Keyframe()], unit(rng, 2), feats)
        db.save(tmp_path / name)
        back = MapDatabase.load(tmp_path / name)
        assert len(back) == len(db) and back.count_with_features() == db.count_with_features()
    assert MapDatabase.load(tmp_path / "zero").features(0) == none


# ------------------------------------------------------------------ corruption
FEATURE_FILES = [
    "features_index.npy",
    "feature_keypoints.npy",
    "feature_descriptors.npy",
    "feature_depths.npy",
]


@pytest.fixture
def saved(tmp_path, feature_sets) -> Path:
    map_with_features(feature_sets).save(tmp_path / "m")
    return tmp_path / "m"


def write_manifest(map_dir: Path, m: dict) -> None:
    """Write a manifest with a correct self-checksum (canonical JSON without that key)."""
    body = {k: v for k, v in m.items() if k != "manifest_sha256"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    (map_dir / "manifest.json").write_text(json.dumps({**body, "manifest_sha256": digest}))


def rewrite(map_dir: Path, name: str, array: np.ndarray, allow_pickle: bool = False) -> None:
    """Replace a data file AND fix its checksum (a buggy writer, not bit rot): the loader
    must then find the inconsistency from the content itself."""
    with open(map_dir / name, "wb") as f:
        np.save(f, array, allow_pickle=allow_pickle)
    m = json.loads((map_dir / "manifest.json").read_text())
    data = (map_dir / name).read_bytes()
    m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write_manifest(map_dir, m)


def test_rewrite_helper_keeps_a_valid_map_valid(saved):
    # guards the corruption tests below: rewriting a file with its own content loads fine
    table = np.load(saved / "features_index.npy")
    rewrite(saved, "features_index.npy", table)
    assert MapDatabase.load(saved).count_with_features() == 7


@pytest.mark.parametrize("name", FEATURE_FILES)
def test_flipped_truncated_or_missing_feature_file(saved, name):
    p = saved / name
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x10
    p.write_bytes(bytes(data))
    with pytest.raises(MapCorruptError, match=rf"{name}.*SHA-256"):
        MapDatabase.load(saved)
    p.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(MapCorruptError, match=rf"{name}.*truncated"):
        MapDatabase.load(saved)
    p.unlink()
    with pytest.raises(MapCorruptError, match=rf"{name}: missing \(listed in the manifest\)"):
        MapDatabase.load(saved)


def test_manifest_without_a_feature_file_entry(saved):
    mp = saved / "manifest.json"
    m = json.loads(mp.read_text())
    del m["files"]["feature_depths.npy"]
    write_manifest(saved, m)
    with pytest.raises(MapCorruptError, match=r"manifest\.json: no checksum for feature_depths\.npy"):
        MapDatabase.load(saved)


def _table(saved: Path) -> np.ndarray:
    return np.load(saved / "features_index.npy").copy()


@pytest.mark.parametrize(
    ("case", "name", "why"),
    [
        ("table_columns", "features_index.npy", "expected 9 columns"),
        ("table_dtype", "features_index.npy", "expected int64"),
        ("offset_shifted", "features_index.npy", "keypoint offsets out of range"),
        ("count_too_big", "features_index.npy", "keypoint offsets out of range"),
        ("desc_offset", "features_index.npy", "descriptor offsets out of range"),
        ("unknown_id", "features_index.npy", "not ascending ids of this map"),
        ("kind_code", "features_index.npy", "unknown feature kind"),
        ("camera_index", "features_index.npy", "camera index out of range"),
        ("keypoints_shape", "feature_keypoints.npy", r"expected \(M, 2\)"),
        ("keypoints_nan", "feature_keypoints.npy", "NaN or inf"),
        ("keypoints_outside", "feature_keypoints.npy", "outside the image of keyframe 0"),
        ("depths_short", "feature_depths.npy", "one per keypoint"),
        ("depths_negative", "feature_depths.npy", "finite metres > 0"),
        ("descriptors_short", "feature_descriptors.npy", "manifest says"),
        ("pickled", "feature_depths.npy", "cannot be read as .npy"),
    ],
)
def test_inconsistent_feature_data_names_the_file(saved, case, name, why):
    t = _table(saved)
    kp = np.load(saved / "feature_keypoints.npy").copy()
    z = np.load(saved / "feature_depths.npy").copy()
    if case == "table_columns":
        rewrite(saved, name, t[:, :8])
    elif case == "table_dtype":
        rewrite(saved, name, t.astype(np.int32))
    elif case == "offset_shifted":
        t[1, 2] += 1
        rewrite(saved, name, t)
    elif case == "count_too_big":
        t[-1, 3] += 5
        rewrite(saved, name, t)
    elif case == "desc_offset":
        t[2, 4] -= 32
        rewrite(saved, name, t)
    elif case == "unknown_id":
        t[-1, 0] = 12345
        rewrite(saved, name, t)
    elif case == "kind_code":
        t[0, 1] = 7
        rewrite(saved, name, t)
    elif case == "camera_index":
        t[0, 7] = 3
        rewrite(saved, name, t)
    elif case == "keypoints_shape":
        rewrite(saved, name, np.zeros((kp.shape[0], 3), np.float32))
    elif case == "keypoints_nan":
        kp[5, 1] = np.nan
        rewrite(saved, name, kp)
    elif case == "keypoints_outside":
        kp[0, 0] = 1e4
        rewrite(saved, name, kp)
    elif case == "depths_short":
        rewrite(saved, name, z[:-1])
    elif case == "depths_negative":
        z[np.flatnonzero(~np.isnan(z))[0]] = -2.0
        rewrite(saved, name, z)
    elif case == "descriptors_short":
        rewrite(saved, name, np.load(saved / name)[:-32])
    elif case == "pickled":
        rewrite(saved, name, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MapCorruptError, match=rf"{name}.*{why}"):
        MapDatabase.load(saved)


def test_bad_camera_in_manifest(saved):
    mp = saved / "manifest.json"
    m = json.loads(mp.read_text())
    m["features"]["cameras"][0]["fx"] = 0.0
    write_manifest(saved, m)
    with pytest.raises(MapCorruptError, match=r"manifest\.json: bad camera.*focal lengths"):
        MapDatabase.load(saved)


# ------------------------------------------------------------------ calibration
def test_calibration_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    db = MapDatabase.create(D, "m")
    assert db.calibration is None
    calib = {
        "version": 1,
        "score": {"same": [0.91, 0.02], "different": [0.87, 0.03]},
        "inliers": [12, 40],
        "note": "fit on 84 pairs",
    }
    db.set_calibration(calib)
    calib["version"] = 2  # the map stored a copy
    assert db.calibration["version"] == 1
    got = db.calibration
    got["inliers"].append(99)  # and hands out copies
    assert db.calibration["inliers"] == [12, 40]
    db.add([Keyframe(), Keyframe()], unit(rng, 2))
    db.remove([0])  # stored, never invalidated automatically (callers recompute)
    db.save(tmp_path / "m")
    back = MapDatabase.load(tmp_path / "m")
    assert back.calibration == {
        "version": 1,
        "score": {"same": [0.91, 0.02], "different": [0.87, 0.03]},
        "inliers": [12, 40],
        "note": "fit on 84 pairs",
    }
    back.set_calibration(None)
    back.save(tmp_path / "m")
    assert MapDatabase.load(tmp_path / "m").calibration is None


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ([1, 2], "must be a dict"),
        ({"x": float("nan")}, "JSON-serialisable"),
        ({"x": object()}, "JSON-serialisable"),
        ({"x": (1, 2)}, "round trip unchanged"),
        ({1: "a"}, "round trip unchanged"),
    ],
)
def test_calibration_must_be_plain_json(value, why):
    db = MapDatabase.create(D, "m")
    with pytest.raises(ValueError, match=why):
        db.set_calibration(value)
    assert db.calibration is None
