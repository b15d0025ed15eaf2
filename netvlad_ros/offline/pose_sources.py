"""Offline pose sources for map building: TF chains (/tf and /tf_static), GPS fixes to
local metres, CSV poses and VPR-benchmark file names. Plain numpy/scipy; no ROS.

Conventions as in :mod:`netvlad_ros.sensors.poses` (metres in the map frame, unit
quaternions ``(x, y, z, w)``, seconds), whose :class:`~netvlad_ros.sensors.poses.PoseTrack`
holds the timed poses these sources produce. Every unusable input raises
:class:`~netvlad_ros.offline.errors.BuildMapError` (bad pose data found by
``sensors.poses`` too, with its message unchanged).
"""

from __future__ import annotations

import csv
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from ..mapdb.geodesy import EnuFrame
from ..sensors.poses import PoseTrack, unit_quaternions
from .errors import BuildMapError, sensor_errors_as_build_map_errors

__all__ = [
    "PoseTable",
    "TfBuffer",
    "gps_to_local",
    "parse_utm_filename",
    "read_pose_csv",
]


def _compose(
    p_ab: np.ndarray, q_ab: np.ndarray, p_bc: np.ndarray, q_bc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """T_ac = T_ab * T_bc, row-wise (positions (m, 3), quats (m, 4))."""
    r_ab = Rotation.from_quat(q_ab)
    return p_ab + r_ab.apply(p_bc), (r_ab * Rotation.from_quat(q_bc)).as_quat()


def _invert(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r_inv = Rotation.from_quat(q).inv()
    return -r_inv.apply(p), r_inv.as_quat()


class TfBuffer:
    """Transforms from /tf and /tf_static messages, looked up along the frame tree (no tf2 needed).

    Each edge parent -> child holds a :class:`PoseTrack` of the child frame in the
    parent frame (a static edge is valid at all times). :meth:`lookup` finds the chain
    between two frames (edges may be walked backwards, then inverted), interpolates
    each dynamic edge at the query times and composes them.
    """

    def __init__(self) -> None:
        self._samples: dict[tuple[str, str], list[tuple[float, tuple, tuple]]] = {}
        self._static: dict[tuple[str, str], tuple[tuple, tuple]] = {}
        self._parent: dict[str, str] = {}
        self._edges: dict[tuple[str, str], PoseTrack] | None = None

    @staticmethod
    def _norm(frame: str) -> str:
        return frame.lstrip("/")  # ROS 1 frames may carry a leading slash

    def add(
        self,
        parent: str,
        child: str,
        stamp: float,
        translation: Sequence[float],
        rotation: Sequence[float],
        static: bool = False,
    ) -> None:
        """Record one transform (the pose of ``child`` in ``parent``)."""
        parent, child = self._norm(parent), self._norm(child)
        old = self._parent.get(child)
        if old is not None and old != parent:
            raise BuildMapError(
                f"TF frame {child!r} has two parents ({old!r} and {parent!r}); a TF tree allows one"
            )
        self._parent[child] = parent
        if static:
            self._static[(parent, child)] = (tuple(translation), tuple(rotation))
        else:
            self._samples.setdefault((parent, child), []).append(
                (float(stamp), tuple(translation), tuple(rotation))
            )
        self._edges = None

    @property
    def frames(self) -> list[str]:
        """All frame names seen, sorted."""
        return sorted(set(self._parent) | set(self._parent.values()))

    def _build(self) -> dict[tuple[str, str], PoseTrack]:
        if self._edges is None:
            edges: dict[tuple[str, str], PoseTrack] = {}
            with sensor_errors_as_build_map_errors():
                for key, (tr, rot) in self._static.items():
                    edges[key] = PoseTrack.constant(tr, rot, key[0])
                for key, samples in self._samples.items():
                    if key in edges:
                        continue  # a static transform wins over stray dynamic copies
                    arr_t = np.array([s[0] for s in samples])
                    edges[key] = PoseTrack(
                        arr_t, np.array([s[1] for s in samples]), np.array([s[2] for s in samples]), key[0]
                    )
            self._edges = edges
        return self._edges

    def chain(self, target: str, source: str) -> list[tuple[str, str, bool]]:
        """Edges from ``target`` to ``source``: (parent, child, forward) with forward False meaning inverted."""
        target, source = self._norm(target), self._norm(source)
        known = set(self.frames)
        for name, f in (("fixed", target), ("camera", source)):
            if f not in known:
                raise BuildMapError(
                    f"TF has no frame {f!r} ({name} frame); frames: {', '.join(self.frames) or 'none'}"
                )
        adj: dict[str, list[tuple[str, str, str, bool]]] = {}
        for child, parent in self._parent.items():
            adj.setdefault(parent, []).append((child, parent, child, True))
            adj.setdefault(child, []).append((parent, parent, child, False))
        prev: dict[str, tuple[str, tuple[str, str, bool]] | None] = {target: None}
        todo = deque([target])
        while todo:
            f = todo.popleft()
            if f == source:
                break
            for nxt, parent, child, fwd in adj.get(f, []):
                if nxt not in prev:
                    prev[nxt] = (f, (parent, child, fwd))
                    todo.append(nxt)
        if source not in prev:
            raise BuildMapError(f"TF frames {target!r} and {source!r} are not connected")
        path: list[tuple[str, str, bool]] = []
        f = source
        while prev[f] is not None:
            f_prev, edge = prev[f]  # type: ignore[misc]
            path.append(edge)
            f = f_prev
        return path[::-1]

    def lookup(
        self, target: str, source: str, times: np.ndarray | float, max_gap_s: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pose of frame ``source`` in frame ``target`` at ``times``: (positions, quats, ok)."""
        times = np.atleast_1d(np.asarray(times, np.float64))
        m = len(times)
        pos = np.zeros((m, 3))
        quat = np.tile([0.0, 0.0, 0.0, 1.0], (m, 1))
        ok = np.ones(m, bool)
        edges = self._build()
        for parent, child, fwd in self.chain(target, source):
            p, q, good = edges[(parent, child)].interpolate(times, max_gap_s)
            ok &= good
            p = np.where(good[:, None], p, 0.0)
            q = np.where(good[:, None], q, [0.0, 0.0, 0.0, 1.0])
            if not fwd:
                p, q = _invert(p, q)
            pos, quat = _compose(pos, quat, p, q)
        pos[~ok] = np.nan
        quat[~ok] = np.nan
        return pos, quat, ok


def gps_to_local(
    lat: np.ndarray, lon: np.ndarray, alt: np.ndarray, origin: tuple[float, float, float] | None
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """WGS84 fixes -> ENU metres about ``origin`` (default: the first fix); returns (xyz (n, 3), origin)."""
    lat, lon, alt = (np.asarray(v, np.float64).reshape(-1) for v in (lat, lon, alt))
    if len(lat) == 0:
        raise BuildMapError("no GPS fixes to convert")
    if origin is None:
        origin = (float(lat[0]), float(lon[0]), float(alt[0]))
    try:
        frame = EnuFrame(*origin)
        return np.asarray(frame.to_local(lat, lon, alt), np.float64).reshape(-1, 3), origin
    except ValueError as exc:
        raise BuildMapError(f"GPS fixes: {exc}") from exc


# ----------------------------------------------------------------------------- CSV poses

_ALIASES = {
    "filename": ("filename", "file", "image", "path", "name"),
    "index": ("index", "frame", "frame_index", "idx"),
    "stamp": ("stamp", "time", "timestamp", "t"),
    "x": ("x",),
    "y": ("y",),
    "z": ("z",),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "longitude"),
    "alt": ("alt", "altitude", "height"),
    "qx": ("qx",),
    "qy": ("qy",),
    "qz": ("qz",),
    "qw": ("qw",),
}


@dataclass
class PoseTable:
    """Poses read from a CSV. ``key`` says what identifies a row: ``"filename"`` (``names``),
    ``"index"`` (``indices``, 0-based frame index) or ``"stamp"`` (a timed track).
    ``positions`` are metres in the map frame (ENU about ``origin`` when the CSV gave
    lat/lon, then ``latlonalt`` holds the fixes); ``quats`` are identity when not given."""

    key: str
    positions: np.ndarray
    quats: np.ndarray
    stamps: np.ndarray | None = None
    names: list[str] | None = None
    indices: np.ndarray | None = None
    latlonalt: np.ndarray | None = None
    origin: tuple[float, float, float] | None = None
    has_orientation: bool = False

    def lookup_index(self) -> dict:
        """Map from the row key (name or index) to the row number."""
        if self.key == "filename":
            assert self.names is not None
            return {n: i for i, n in enumerate(self.names)}
        if self.key == "index":
            assert self.indices is not None
            return {int(k): i for i, k in enumerate(self.indices)}
        raise BuildMapError("a pose CSV keyed by stamp has no per-row lookup; use track()")

    def track(self) -> PoseTrack:
        """The rows as a timed :class:`PoseTrack` (needs a stamp column)."""
        if self.stamps is None:
            raise BuildMapError("the pose CSV has no stamp/time column, so it cannot be interpolated in time")
        with sensor_errors_as_build_map_errors():
            return PoseTrack(self.stamps, self.positions, self.quats)


def read_pose_csv(path: str | Path, origin: tuple[float, float, float] | None = None) -> PoseTable:
    """Read poses from a CSV with a header row (comma separated; ``#`` lines are comments).

    Columns (case-insensitive; aliases in brackets): one key, ``filename`` [file, image,
    path, name] or ``index`` [frame, frame_index, idx] (0-based) or only ``stamp`` [time,
    timestamp, t] (seconds; then the rows form a timed track); a position, either ``x, y``
    [``z``] in metres or ``lat, lon`` [``alt``] in degrees/metres (converted to ENU metres
    about ``origin``, default the first row); optionally ``qx, qy, qz, qw`` and ``stamp``.
    """
    path = Path(path)
    if not path.is_file():
        raise BuildMapError(f"pose CSV not found: {path}")
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].lstrip().startswith("#")]
    if len(rows) < 2:
        raise BuildMapError(f"pose CSV {path} needs a header row and at least one data row")
    header = [h.strip().lower() for h in rows[0]]
    cols: dict[str, int] = {}
    for canon, names in _ALIASES.items():
        for n in names:
            if n in header:
                cols[canon] = header.index(n)
                break
    if "x" in cols and "y" in cols:
        metric = True
    elif "lat" in cols and "lon" in cols:
        metric = False
    else:
        raise BuildMapError(f"pose CSV {path}: needs columns x,y[,z] or lat,lon[,alt]; header is {rows[0]}")
    key = (
        "filename"
        if "filename" in cols
        else "index"
        if "index" in cols
        else "stamp"
        if "stamp" in cols
        else None
    )
    if key is None:
        raise BuildMapError(f"pose CSV {path}: needs a filename, index or stamp column; header is {rows[0]}")
    quat_cols = [c for c in ("qx", "qy", "qz", "qw") if c in cols]
    if quat_cols and len(quat_cols) != 4:
        raise BuildMapError(f"pose CSV {path}: orientation needs all of qx, qy, qz, qw; found {quat_cols}")
    data = rows[1:]

    def column(name: str, default: float | None = None) -> np.ndarray:
        if name not in cols:
            return np.full(len(data), default if default is not None else np.nan)
        j = cols[name]
        out = np.empty(len(data))
        for i, r in enumerate(data):
            try:
                out[i] = float(r[j])
            except (ValueError, IndexError):
                raise BuildMapError(
                    f"pose CSV {path}, data row {i + 1}: column {header[j]!r} is not a number: "
                    f"{r[j] if j < len(r) else '(missing)'!r}"
                ) from None
        if not np.all(np.isfinite(out)):
            raise BuildMapError(f"pose CSV {path}: column {header[j]!r} has non-finite values")
        return out

    lla = None
    if metric:
        positions = np.stack([column("x"), column("y"), column("z", 0.0)], axis=1)
    else:
        lla = np.stack([column("lat"), column("lon"), column("alt", 0.0)], axis=1)
        positions, origin = gps_to_local(lla[:, 0], lla[:, 1], lla[:, 2], origin)
    if quat_cols:
        quats = np.stack([column(c) for c in ("qx", "qy", "qz", "qw")], axis=1)
        with sensor_errors_as_build_map_errors():
            quats = unit_quaternions(quats, f"pose CSV {path}")
    else:
        quats = np.tile([0.0, 0.0, 0.0, 1.0], (len(data), 1))
    table = PoseTable(key, positions, quats, latlonalt=lla, origin=None if metric else origin)
    table.has_orientation = bool(quat_cols)
    if "stamp" in cols:
        table.stamps = column("stamp")
    if key == "filename":
        j = cols["filename"]
        table.names = [r[j].strip() if j < len(r) else "" for r in data]
        if len(set(table.names)) != len(table.names):
            raise BuildMapError(f"pose CSV {path}: file names are not unique")
    elif key == "index":
        idx = column("index")
        if np.any(idx != np.round(idx)) or np.any(idx < 0):
            raise BuildMapError(f"pose CSV {path}: frame indices must be integers >= 0")
        table.indices = idx.astype(np.int64)
        if len(np.unique(table.indices)) != len(table.indices):
            raise BuildMapError(f"pose CSV {path}: frame indices are not unique")
    return table


_UTM_NAME = re.compile(r"^@([-+]?\d+(?:\.\d*)?)@([-+]?\d+(?:\.\d*)?)@")


def parse_utm_filename(name: str) -> tuple[float, float]:
    """(easting, northing) in UTM metres from a VPR-benchmark file name
    ``@<easting>@<northing>@<zone>@<band>@...@.jpg`` (e.g. ``@0543256.96@4477339.07@17@T@...@.jpg``)."""
    m = _UTM_NAME.match(Path(name).name)
    if m is None:
        raise BuildMapError(
            f"file name {Path(name).name!r} does not follow '@utm_east@utm_north@zone@band@...@.jpg'"
        )
    return float(m.group(1)), float(m.group(2))
