"""numpy structured arrays <-> ``sensor_msgs/PointCloud2`` used as typed tables.

The node publishes its results (top-K hypotheses, loop closures, map keyframes) as
PointCloud2 "tables": one row per point, one PointField per column. Standard
messages need no interface package, RViz draws any table whose first fields are
``x y z``, a C++ consumer reads columns with ``sensor_msgs::PointCloud2ConstIterator``
by field name, and Python reads them with :func:`pointcloud2_to_array`.
(``sensor_msgs_py`` would do the Python half but is not on PyPI.)

Wire layout written by :func:`array_to_pointcloud2`:

- ``height = 1``, ``width = N`` rows, ``point_step = dtype.itemsize``,
  ``row_step = N * point_step``, little-endian (``is_bigendian = False``);
- one PointField per dtype field with the dtype's exact offset (no reordering);
  padding bytes (where a dtype has any) are zero;
- ``is_dense`` is False only when a float ``x``/``y``/``z`` column holds NaN/inf.

PointField has no 64-bit integer type, so int64/uint64 columns are rejected (a
:class:`TableError` names the column): the node's tables use uint32 ids and float64
seconds for stamps (float64 keeps epoch times to ~0.24 us, enough to find the frame).
Field names must be plain identifiers so every consumer can look them up by name.

The three table dtypes below are packed so every column is naturally aligned
(offsets are multiples of the column's size and ``point_step`` a multiple of 8),
which keeps ``reinterpret_cast`` reads in PointCloud2Iterator aligned on any CPU.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField

from netvlad_ros.ros.conversions import sec_to_stamp

__all__ = [
    "HYPOTHESIS_DTYPE",
    "KEYFRAME_DTYPE",
    "LOOP_CLOSURE_DTYPE",
    "TableError",
    "array_to_pointcloud2",
    "pointcloud2_to_array",
]


class TableError(ValueError):
    """A structured array or PointCloud2 cannot be converted (bad dtype, fields or data length)."""


#: One row per top-K place hypothesis; pose of the matched keyframe in the map frame.
#: Offsets: x 0, y 4, z 8, qx 12, qy 16, qz 20, qw 24, score 28, rank 32,
#: keyframe_id 36, keyframe_stamp 40; point_step 48.
HYPOTHESIS_DTYPE = np.dtype(
    [
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("qx", "<f4"),
        ("qy", "<f4"),
        ("qz", "<f4"),
        ("qw", "<f4"),
        ("score", "<f4"),
        ("rank", "<u4"),
        ("keyframe_id", "<u4"),
        ("keyframe_stamp", "<f8"),
    ]
)

#: One row per accepted loop closure (``~/loop_closures``). (tx..qw) is ``T_match_query``:
#: the pose of the query keyframe's body frame in the match keyframe's body frame (what a
#: ``BetweenFactor(match, query)`` measures), NaN when the closure has no relative pose
#: (geometric verification off, or a fundamental-matrix model). ``covariance``: its 6x6
#: covariance, row-major, ROS order [x y z roll pitch yaw] in the match body frame's axes
#: (FLOAT64, count 36), NaN when unknown. ``scale_known`` 0: the translation is a unit
#: direction (monocular), its covariance block not metric.
#: Offsets: query_id 0, match_id 4, query_stamp 8, match_stamp 16, score 24, inliers 28,
#: tx 32, ty 36, tz 40, qx 44, qy 48, qz 52, qw 56, verified 60, scale_known 61,
#: (62-63 zero padding), inlier_ratio 64, spread 68, covariance 72 (36 x 8 bytes);
#: point_step 360.
LOOP_CLOSURE_DTYPE = np.dtype(
    {
        "names": [
            "query_id",
            "match_id",
            "query_stamp",
            "match_stamp",
            "score",
            "inliers",
            "tx",
            "ty",
            "tz",
            "qx",
            "qy",
            "qz",
            "qw",
            "verified",
            "scale_known",
            "inlier_ratio",
            "spread",
            "covariance",
        ],
        "formats": ["<u4", "<u4", "<f8", "<f8", "<f4", "<u4"]
        + ["<f4"] * 7
        + ["u1", "u1", "<f4", "<f4", ("<f8", (36,))],
        "offsets": [0, 4, 8, 16, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 61, 64, 68, 72],
        "itemsize": 360,
    }
)

#: One row per map keyframe (``~/map_keyframes``, transient local).
#: Offsets: x 0, y 4, z 8, keyframe_id 12, stamp 16; point_step 24.
KEYFRAME_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("keyframe_id", "<u4"), ("stamp", "<f8")]
)

# numpy kind+size <-> PointField datatype
_TO_POINTFIELD: dict[str, int] = {
    "i1": PointField.INT8,
    "u1": PointField.UINT8,
    "i2": PointField.INT16,
    "u2": PointField.UINT16,
    "i4": PointField.INT32,
    "u4": PointField.UINT32,
    "f4": PointField.FLOAT32,
    "f8": PointField.FLOAT64,
}
_FROM_POINTFIELD: dict[int, str] = {v: k for k, v in _TO_POINTFIELD.items()}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# refuse headers that would make numpy allocate absurd dtypes
_MAX_POINT_STEP = 1 << 20


def _check_overlap(spans: list[tuple[str, int, int]]) -> None:
    """Raise if any two (name, offset, nbytes) byte ranges overlap."""
    ordered = sorted(spans, key=lambda s: s[1])
    for (a, a_off, a_len), (b, b_off, _) in itertools.pairwise(ordered):
        if b_off < a_off + a_len:
            raise TableError(f"fields {a!r} (offset {a_off}, {a_len} B) and {b!r} (offset {b_off}) overlap")


def _fields(dt: np.dtype) -> dict[str, tuple[np.dtype, int]]:
    """name -> (column dtype, byte offset) of a structured dtype, in field order."""
    if dt.names is None or dt.fields is None:
        raise TableError(f"expected a structured dtype with named fields, got {dt}")
    return {n: (dt.fields[n][0], int(dt.fields[n][1])) for n in dt.names}


def _record(names: list[str], formats: list[np.dtype], offsets: list[int], itemsize: int) -> np.dtype:
    """A structured dtype with explicit offsets (numpy's typing has no name for the dict form)."""
    spec: Any = {"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize}
    return np.dtype(spec)


def _field_base(name: str, dt: np.dtype) -> tuple[np.dtype, int]:
    """(scalar dtype, count) for a column; 1-D subarrays become PointField.count > 1."""
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        if len(shape) != 1:
            raise TableError(f"field {name!r}: only 1-D sub-arrays map to PointField.count, got {shape}")
        return base, int(shape[0])
    return dt, 1


def array_to_pointcloud2(arr: np.ndarray, frame_id: str, stamp: Time | float | None = None) -> PointCloud2:
    """Pack a 1-D structured array into a ``PointCloud2`` table (layout in the module docstring).

    ``stamp`` is a ``builtin_interfaces/Time``, seconds, or None (zero). Column
    values are converted to little-endian; offsets and ``point_step`` are the dtype's.

    Raises:
        TableError: not a 1-D structured array, a field name that is not an identifier,
            a column type PointField cannot express (int64, uint64, bool, strings,
            nested records, multi-dimensional sub-arrays).
    """
    arr = np.asarray(arr)
    dt = arr.dtype
    if dt.names is None or len(dt.names) == 0:
        raise TableError(f"expected a structured array with named fields, got dtype {dt}")
    if arr.ndim != 1:
        raise TableError(f"expected a 1-D structured array (one row per point), got shape {arr.shape}")
    columns = _fields(dt)
    _check_overlap([(n, off, fdt.itemsize) for n, (fdt, off) in columns.items()])
    fields: list[PointField] = []
    le_formats = []
    for name, (fdt, offset) in columns.items():
        if not _IDENT.match(name):
            raise TableError(f"field name {name!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
        base, count = _field_base(name, fdt)
        key = f"{base.kind}{base.itemsize}"
        if key not in _TO_POINTFIELD:
            hint = " (use uint32 ids or float64 seconds)" if base.kind in "iu" and base.itemsize == 8 else ""
            raise TableError(f"field {name!r} has dtype {base}, which PointField cannot express{hint}")
        fields.append(PointField(name=name, offset=offset, datatype=_TO_POINTFIELD[key], count=count))
        le = np.dtype(f"<{key}")
        le_formats.append(le if count == 1 else np.dtype((le, (count,))))
    le_dtype = _record(list(columns), le_formats, [off for _, off in columns.values()], dt.itemsize)
    packed = np.zeros(arr.shape[0], le_dtype)  # zeroed so padding bytes are deterministic
    for name in columns:
        packed[name] = arr[name]
    msg = PointCloud2()
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp if isinstance(stamp, Time) else sec_to_stamp(float(stamp))
    msg.height = 1
    msg.width = int(arr.shape[0])
    msg.fields = fields
    msg.is_bigendian = False
    msg.point_step = int(dt.itemsize)
    msg.row_step = int(dt.itemsize) * int(arr.shape[0])
    msg.data = packed.tobytes()
    dense = True
    for name in ("x", "y", "z"):
        if name in columns and columns[name][0].kind == "f" and arr.size:
            dense = dense and bool(np.isfinite(arr[name]).all())
    msg.is_dense = dense
    return msg


def _msg_dtype(msg: Any) -> np.dtype:
    """Structured dtype (wire byte order, itemsize = point_step) described by a PointCloud2."""
    order = ">" if msg.is_bigendian else "<"
    point_step = int(msg.point_step)
    if point_step <= 0 or point_step > _MAX_POINT_STEP:
        raise TableError(f"point_step={point_step} is outside 1..{_MAX_POINT_STEP}")
    if not msg.fields:
        raise TableError("PointCloud2 has no fields")
    names, formats, offsets = [], [], []
    for f in msg.fields:
        name = str(f.name)
        if name in names:
            raise TableError(f"duplicate field name {name!r}")
        if not name:
            raise TableError("empty field name")
        key = _FROM_POINTFIELD.get(int(f.datatype))
        if key is None:
            raise TableError(f"field {name!r} has unknown PointField datatype {f.datatype}")
        count = int(f.count)
        if count < 1:
            raise TableError(f"field {name!r} has count={count}; must be >= 1")
        base = np.dtype(order + key)
        end = int(f.offset) + base.itemsize * count
        if end > point_step:
            raise TableError(
                f"field {name!r} (offset {f.offset}, {count} x {base}) ends past point_step={point_step}"
            )
        names.append(name)
        formats.append(base if count == 1 else np.dtype((base, (count,))))
        offsets.append(int(f.offset))
    _check_overlap([(n, o, f.itemsize) for n, o, f in zip(names, offsets, formats, strict=True)])
    try:
        return _record(names, formats, offsets, point_step)
    except (ValueError, TypeError) as exc:
        raise TableError(f"PointCloud2 fields do not form a valid record: {exc}") from exc


def pointcloud2_to_array(msg: PointCloud2, dtype: np.dtype | None = None) -> np.ndarray:
    """Unpack a ``PointCloud2`` into a 1-D structured array (``height * width`` rows, native byte order).

    Honours field offsets, ``point_step``, ``row_step`` (row padding) and
    ``is_bigendian``; any producer's cloud works, not only :func:`array_to_pointcloud2`'s.
    With ``dtype`` (e.g. :data:`HYPOTHESIS_DTYPE`), the message must carry every field
    of ``dtype`` with the same type and count, and the result has exactly that dtype
    (extra fields in the message are ignored), so a consumer gets the layout it expects.

    Raises:
        TableError: unknown datatype, duplicate or overlapping fields, a field past
            ``point_step``, ``row_step < width * point_step``, ``data`` shorter than
            ``row_step * height``, or (with ``dtype``) a missing or mistyped field.
    """
    wire = _msg_dtype(msg)
    width, height = int(msg.width), int(msg.height)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if row_step < width * point_step:
        raise TableError(f"row_step={row_step} < width*point_step = {width}*{point_step}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < row_step * height:
        raise TableError(f"data has {buf.size} bytes, fewer than row_step*height = {row_step}*{height}")
    rows = buf[: row_step * height].reshape(height, row_step)[:, : width * point_step]
    records = np.ascontiguousarray(rows).reshape(-1).view(wire)
    have_cols = _fields(wire)
    native = _record(
        list(have_cols),
        [fdt.newbyteorder("=") for fdt, _ in have_cols.values()],
        [off for _, off in have_cols.values()],
        wire.itemsize,
    )
    out = records.astype(native)
    if dtype is None:
        return out
    dtype = np.dtype(dtype)
    if dtype.names is None:
        raise TableError(f"dtype must be structured, got {dtype}")
    native_cols = _fields(native)
    result = np.zeros(out.shape[0], dtype)
    for name, (want, _) in _fields(dtype).items():
        if name not in native_cols:
            raise TableError(f"PointCloud2 lacks field {name!r} (has {', '.join(native_cols)})")
        have = native_cols[name][0]
        wb, wc = _field_base(name, want)
        hb, hc = _field_base(name, have)
        if (wb.kind, wb.itemsize, wc) != (hb.kind, hb.itemsize, hc):
            raise TableError(f"field {name!r} is {hc} x {hb} in the message, expected {wc} x {wb}")
        result[name] = out[name]
    return result
