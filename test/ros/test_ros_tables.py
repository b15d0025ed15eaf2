"""netvlad_ros.ros.tables: structured arrays <-> PointCloud2, in process and through real DDS.

Wire expectations (offsets, datatypes, byte order) are written out by hand from the
PointCloud2 / PointField definitions, not read back from the module. Run as a script
(``table_pub``) this file is the publisher child of the cross-process test.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import PointCloud2, PointField

from netvlad_ros.ros.conversions import sec_to_stamp
from netvlad_ros.ros.tables import (
    HYPOTHESIS_DTYPE,
    KEYFRAME_DTYPE,
    LOOP_CLOSURE_DTYPE,
    TableError,
    array_to_pointcloud2,
    pointcloud2_to_array,
)

THIS = Path(__file__).resolve()
F = PointField


def random_table(dtype: np.dtype, n: int, seed: int) -> np.ndarray:
    """Seeded rows covering each column's full value range (NaN included in floats)."""
    rng = np.random.default_rng(seed)
    arr = np.zeros(n, dtype)
    for name in dtype.names:
        base = dtype.fields[name][0]
        sub = base.subdtype
        shape = (n, *sub[1]) if sub else (n,)
        kind = sub[0] if sub else base
        if kind.kind == "f":
            vals = rng.normal(0, 1e3, shape).astype(kind)
            if n > 2:
                vals.flat[1] = np.nan
        else:
            info = np.iinfo(kind)
            vals = rng.integers(info.min, info.max, shape, dtype=kind, endpoint=True)
        arr[name] = vals
    if "keyframe_stamp" in dtype.names:
        arr["keyframe_stamp"] = 1_700_000_000.0 + np.arange(n) * 0.033333
    return arr


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Exact equality field by field, NaN == NaN (bitwise for floats)."""
    if a.dtype.names != b.dtype.names or a.shape != b.shape:
        return False
    for name in a.dtype.names:
        x, y = a[name], b[name]
        if x.dtype.kind == "f":
            if not np.array_equal(
                x.view(f"u{x.dtype.itemsize}"), y.astype(x.dtype).view(f"u{x.dtype.itemsize}")
            ):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


# ----------------------------------------------------------------------------- layout


def test_hypothesis_layout_is_documented_layout() -> None:
    msg = array_to_pointcloud2(np.zeros(2, HYPOTHESIS_DTYPE), "map", 1.0)
    fields = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    assert fields == [
        ("x", 0, F.FLOAT32, 1),
        ("y", 4, F.FLOAT32, 1),
        ("z", 8, F.FLOAT32, 1),
        ("qx", 12, F.FLOAT32, 1),
        ("qy", 16, F.FLOAT32, 1),
        ("qz", 20, F.FLOAT32, 1),
        ("qw", 24, F.FLOAT32, 1),
        ("score", 28, F.FLOAT32, 1),
        ("rank", 32, F.UINT32, 1),
        ("keyframe_id", 36, F.UINT32, 1),
        ("keyframe_stamp", 40, F.FLOAT64, 1),
    ]
    assert (msg.point_step, msg.row_step, msg.height, msg.width) == (48, 96, 1, 2)
    assert msg.is_bigendian is False and msg.is_dense is True
    assert msg.header.frame_id == "map" and msg.header.stamp.sec == 1


def test_loop_closure_and_keyframe_layouts_are_aligned() -> None:
    lc = array_to_pointcloud2(np.zeros(1, LOOP_CLOSURE_DTYPE), "map")
    assert [(f.name, f.offset, f.datatype, f.count) for f in lc.fields] == [
        ("query_id", 0, F.UINT32, 1),
        ("match_id", 4, F.UINT32, 1),
        ("query_stamp", 8, F.FLOAT64, 1),
        ("match_stamp", 16, F.FLOAT64, 1),
        ("score", 24, F.FLOAT32, 1),
        ("inliers", 28, F.UINT32, 1),
        ("tx", 32, F.FLOAT32, 1),
        ("ty", 36, F.FLOAT32, 1),
        ("tz", 40, F.FLOAT32, 1),
        ("qx", 44, F.FLOAT32, 1),
        ("qy", 48, F.FLOAT32, 1),
        ("qz", 52, F.FLOAT32, 1),
        ("qw", 56, F.FLOAT32, 1),
        ("verified", 60, F.UINT8, 1),
        ("scale_known", 61, F.UINT8, 1),
        ("inlier_ratio", 64, F.FLOAT32, 1),
        ("spread", 68, F.FLOAT32, 1),
        ("covariance", 72, F.FLOAT64, 36),
    ]
    assert lc.point_step == 360 == 72 + 36 * 8
    kf = array_to_pointcloud2(np.zeros(1, KEYFRAME_DTYPE), "map")
    assert [(f.name, f.offset, f.datatype) for f in kf.fields] == [
        ("x", 0, F.FLOAT32),
        ("y", 4, F.FLOAT32),
        ("z", 8, F.FLOAT32),
        ("keyframe_id", 12, F.UINT32),
        ("stamp", 16, F.FLOAT64),
    ]
    assert kf.point_step == 24
    size = {F.UINT8: 1, F.UINT32: 4, F.FLOAT32: 4, F.FLOAT64: 8}
    for msg in (lc, kf):
        assert msg.point_step % 8 == 0
        for f in msg.fields:
            assert f.offset % size[f.datatype] == 0, f"{f.name} is not naturally aligned"


def test_wire_bytes_little_endian_and_zero_padding() -> None:
    row = np.zeros(1, LOOP_CLOSURE_DTYPE)
    row["query_id"], row["match_id"], row["query_stamp"], row["verified"], row["tz"] = 7, 3, 2.5, 1, -1.0
    data = bytes(array_to_pointcloud2(row, "map").data)
    assert len(data) == 360
    assert struct.unpack_from("<IId", data, 0) == (7, 3, 2.5)
    assert struct.unpack_from("<f", data, 40) == (-1.0,)
    assert data[60:64] == b"\x01\x00\x00\x00"  # verified, scale_known 0, two zero padding bytes
    # big-endian input columns are written little-endian
    be = np.zeros(1, [("x", ">f4"), ("id", ">u4")])
    be["x"], be["id"] = 1.5, 0x01020304
    assert bytes(array_to_pointcloud2(be, "f").data) == struct.pack("<fI", 1.5, 0x01020304)


def test_is_dense_false_only_for_non_finite_xyz() -> None:
    arr = np.zeros(3, KEYFRAME_DTYPE)
    assert array_to_pointcloud2(arr, "map").is_dense
    arr["z"][1] = np.nan
    assert not array_to_pointcloud2(arr, "map").is_dense
    lc = np.zeros(2, LOOP_CLOSURE_DTYPE)
    lc["tx"] = np.nan  # unverified closures: no x/y/z columns, still dense
    assert array_to_pointcloud2(lc, "map").is_dense


def test_loop_closure_rows_carry_the_relative_pose_and_its_covariance() -> None:
    """messages.loop_closures_table -> wire -> pointcloud2_to_array gives back what the closure said."""
    from dataclasses import dataclass, fields

    from scipy.spatial.transform import Rotation

    from netvlad_ros.recognition import LoopClosure
    from netvlad_ros.ros.messages import lio_sam_loop_msg, loop_closures_table

    @dataclass(frozen=True)
    class MetricClosure(LoopClosure):  # the fields CONTRACTS.md adds to LoopClosure
        T_match_query: np.ndarray | None = None
        covariance: np.ndarray | None = None
        scale_known: bool = False
        inlier_ratio: float | None = None
        spread: float | None = None

    closure = LoopClosure if "T_match_query" in {f.name for f in fields(LoopClosure)} else MetricClosure
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_euler("xyz", [0.01, -0.02, 0.3]).as_matrix()
    pose[:3, 3] = [1.5, -0.25, 0.05]
    a = np.random.default_rng(0).normal(size=(6, 6))
    cov = a @ a.T * 1e-4 + np.diag([1e-3] * 3 + [1e-5] * 3)
    ids = {"query_id": 12, "match_id": 3, "query_stamp": 1_700_000_012.25, "match_stamp": 1_700_000_003.5}
    closures = [
        closure(
            **ids,
            score=0.91,
            inliers=120,
            T_match_query=pose,
            covariance=cov,
            scale_known=True,
            inlier_ratio=0.6,
            spread=0.35,
        ),
        # verification off: nothing metric
        closure(
            query_id=13, match_id=4, query_stamp=1_700_000_013.0, match_stamp=1_700_000_004.0, score=0.88
        ),
    ]
    msg = loop_closures_table(closures, sec_to_stamp(5.0), "map")
    data = bytes(msg.data)
    assert struct.unpack_from("<36d", data, 72) == tuple(cov.reshape(-1))  # float64, row-major
    rows = pointcloud2_to_array(msg, LOOP_CLOSURE_DTYPE)
    r = rows[0]
    assert (r["query_id"], r["match_id"], r["inliers"], r["verified"], r["scale_known"]) == (12, 3, 120, 1, 1)
    assert r["query_stamp"] == 1_700_000_012.25 and r["match_stamp"] == 1_700_000_003.5
    np.testing.assert_array_equal(r["covariance"].reshape(6, 6), cov)
    np.testing.assert_allclose([r["tx"], r["ty"], r["tz"]], pose[:3, 3], atol=1e-7)  # float32
    q = Rotation.from_quat([r["qx"], r["qy"], r["qz"], r["qw"]])
    assert np.degrees((q.inv() * Rotation.from_matrix(pose[:3, :3])).magnitude()) < 1e-5
    assert r["inlier_ratio"] == np.float32(0.6) and r["spread"] == np.float32(0.35)
    u = rows[1]
    assert (u["verified"], u["scale_known"], u["inliers"]) == (0, 0, 0)
    assert (
        np.isnan(u["covariance"]).all()
        and np.isnan([u[k] for k in ("tx", "qw", "inlier_ratio", "spread")]).all()
    )
    assert list(lio_sam_loop_msg(closures[0]).data) == [1_700_000_012.25, 1_700_000_003.5]


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", [HYPOTHESIS_DTYPE, LOOP_CLOSURE_DTYPE, KEYFRAME_DTYPE])
@pytest.mark.parametrize("n", [0, 1, 37])
def test_table_dtypes_round_trip_exactly(dtype: np.dtype, n: int) -> None:
    arr = random_table(dtype, n, seed=n)
    back = pointcloud2_to_array(array_to_pointcloud2(arr, "map", 5.0))
    assert back.dtype == dtype and same(arr, back)
    typed = pointcloud2_to_array(array_to_pointcloud2(arr, "map"), dtype=dtype)
    assert typed.dtype == dtype and same(arr, typed)


def test_every_pointfield_type_and_counts_round_trip() -> None:
    dtype = np.dtype(
        [
            ("a", "i1"),
            ("b", "u1"),
            ("c", "<i2"),
            ("d", "<u2"),
            ("e", "<i4"),
            ("f", "<u4"),
            ("g", "<f4"),
            ("h", "<f8"),
            ("v", "<f4", (5,)),
        ]
    )
    arr = random_table(dtype, 11, seed=3)
    msg = array_to_pointcloud2(arr, "x")
    assert [f.datatype for f in msg.fields] == [
        F.INT8,
        F.UINT8,
        F.INT16,
        F.UINT16,
        F.INT32,
        F.UINT32,
        F.FLOAT32,
        F.FLOAT64,
        F.FLOAT32,
    ]
    assert msg.fields[-1].count == 5
    assert same(arr, pointcloud2_to_array(msg))


def test_reads_big_endian_and_row_padded_clouds_from_other_producers() -> None:
    # hand-written cloud: 2 rows x 2 points, point_step 12 (x f4, id u4, 4 pad), row_step 30 (6 pad bytes)
    pts = [(1.0, 10), (2.0, 20), (3.0, 30), (4.0, 40)]
    rows = []
    for r in range(2):
        rows.append(
            b"".join(struct.pack(">fI", *p) + b"\xaa" * 4 for p in pts[2 * r : 2 * r + 2]) + b"\xbb" * 6
        )
    msg = PointCloud2(
        height=2,
        width=2,
        fields=[
            F(name="x", offset=0, datatype=F.FLOAT32, count=1),
            F(name="id", offset=4, datatype=F.UINT32, count=1),
        ],
        is_bigendian=True,
        point_step=12,
        row_step=30,
        data=b"".join(rows),
        is_dense=True,
    )
    arr = pointcloud2_to_array(msg)
    assert arr["x"].tolist() == [1.0, 2.0, 3.0, 4.0] and arr["id"].tolist() == [10, 20, 30, 40]
    assert arr.dtype["x"].isnative


def test_typed_read_checks_fields() -> None:
    msg = array_to_pointcloud2(random_table(KEYFRAME_DTYPE, 4, 1), "map")
    with pytest.raises(TableError, match="lacks field 'qx'"):
        pointcloud2_to_array(msg, dtype=HYPOTHESIS_DTYPE)
    with pytest.raises(TableError, match="field 'stamp'"):
        pointcloud2_to_array(msg, dtype=np.dtype([("stamp", "<f4")]))
    sub = pointcloud2_to_array(msg, dtype=np.dtype([("keyframe_id", "<u4")]))
    assert sub.dtype.names == ("keyframe_id",)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("arr", "match"),
    [
        (np.zeros(3, np.float32), "structured"),
        (np.zeros((2, 2), KEYFRAME_DTYPE), "1-D"),
        (np.zeros(2, [("id", "<u8")]), "'id' has dtype uint64.*uint32"),
        (np.zeros(2, [("t", "<i8")]), "'t' has dtype int64"),
        (np.zeros(2, [("ok", "?")]), "'ok' has dtype bool"),
        (np.zeros(2, [("s", "S4")]), "'s'"),
        (np.zeros(2, [("bad name", "<f4")]), "not a plain identifier"),
        (np.zeros(2, [("m", "<f4", (2, 2))]), "1-D sub-arrays"),
        (
            np.zeros(
                2,
                np.dtype({"names": ["a", "b"], "formats": ["<f4", "<f4"], "offsets": [0, 2], "itemsize": 8}),
            ),
            "overlap",
        ),
    ],
)
def test_array_to_pointcloud2_rejects(arr: np.ndarray, match: str) -> None:
    with pytest.raises(TableError, match=match):
        array_to_pointcloud2(arr, "map")


def _broken(**changes) -> PointCloud2:
    msg = array_to_pointcloud2(random_table(KEYFRAME_DTYPE, 3, 0), "map")
    for k, v in changes.items():
        setattr(msg, k, v)
    return msg


@pytest.mark.parametrize(
    ("msg", "match"),
    [
        (_broken(data=b"\x00" * 71), "data has 71 bytes"),
        (_broken(row_step=10), "row_step=10 < width"),
        (_broken(point_step=0), "point_step=0"),
        (_broken(point_step=16), "'stamp'.*ends past point_step=16"),
        (_broken(fields=[]), "no fields"),
        (_broken(fields=[F(name="x", offset=0, datatype=9, count=1)]), "unknown PointField datatype 9"),
        (_broken(fields=[F(name="x", offset=0, datatype=F.FLOAT32, count=0)]), "count=0"),
        (
            _broken(fields=[F(name="x", offset=0, datatype=F.FLOAT32, count=1)] * 2),
            "duplicate field name 'x'",
        ),
        (
            _broken(
                fields=[
                    F(name="x", offset=0, datatype=F.FLOAT64, count=1),
                    F(name="y", offset=4, datatype=F.FLOAT32, count=1),
                ]
            ),
            "overlap",
        ),
    ],
)
def test_pointcloud2_to_array_rejects(msg: PointCloud2, match: str) -> None:
    with pytest.raises(TableError, match=match):
        pointcloud2_to_array(msg)


def test_table_error_is_value_error() -> None:
    assert issubclass(TableError, ValueError)


# ----------------------------------------------------------------------------- through real DDS

TABLES = {
    "hypotheses": (HYPOTHESIS_DTYPE, 10),
    "loop_closures": (LOOP_CLOSURE_DTYPE, 25),
    "map_keyframes": (KEYFRAME_DTYPE, 500),
}


def run_table_publisher(prefix: str) -> None:
    """Child: publish the three seeded tables latched, then wait until told to stop."""
    import rclpy

    from netvlad_ros.ros.qos import latched_qos

    rclpy.init()
    node = rclpy.create_node("table_pub")
    pubs = []
    for i, (name, (dtype, n)) in enumerate(TABLES.items()):
        pub = node.create_publisher(PointCloud2, f"{prefix}/{name}", latched_qos())
        pub.publish(array_to_pointcloud2(random_table(dtype, n, seed=100 + i), "map", 1_700_000_000.5))
        pubs.append(pub)
    print("PUBLISHED", flush=True)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.1)
    except KeyboardInterrupt:
        pass
    print(json.dumps({"ok": True}), flush=True)


@pytest.mark.ros
def test_tables_round_trip_between_processes(ros, ros_child) -> None:
    from netvlad_ros.ros.qos import latched_qos

    prefix = "/netvlad_test_tables"
    child = ros_child([str(THIS), "table_pub", prefix], name="table_pub")
    assert child.wait_for_line("PUBLISHED", timeout=30), child.stderr_tail()
    node = ros.node("table_sub")
    got: dict[str, PointCloud2] = {}
    for name in TABLES:
        node.create_subscription(
            PointCloud2, f"{prefix}/{name}", lambda m, k=name: got.setdefault(k, m), latched_qos()
        )
    assert ros.spin_until(lambda: len(got) == len(TABLES), timeout=20), f"received only {sorted(got)}"
    for i, (name, (dtype, n)) in enumerate(TABLES.items()):
        msg = got[name]
        assert msg.header.frame_id == "map" and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (
            1_700_000_000,
            500_000_000,
        )
        back = pointcloud2_to_array(msg, dtype=dtype)
        assert back.shape == (n,) and same(random_table(dtype, n, seed=100 + i), back), name


if __name__ == "__main__":
    if sys.argv[1] == "table_pub":
        run_table_publisher(sys.argv[2])
