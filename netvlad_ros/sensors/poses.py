"""Pose sources for map building: timed pose tracks, interpolation, TF chains, CSV and
file-name poses, and keyframe selection. Plain numpy/scipy; no ROS.

Conventions: positions are metres in the map frame, orientations unit quaternions
``(x, y, z, w)`` (scipy's scalar-last order, the ROS order), times seconds (float64).

Interpolation (:func:`interpolate_poses`, the one implementation behind
:meth:`PoseTrack.interpolate` for whole tracks and :meth:`PoseBuffer.lookup` for the live
node): an image at time ``t`` between two pose samples ``t0 <= t <= t1`` gets the linear
interpolation of the positions and the slerp of the orientations, provided both samples
are within ``max_gap_s`` of ``t``. Before the first or after the last sample the nearest
sample is used when it is within ``max_gap_s`` (a hold, never an extrapolation). Inside
a gap too long to interpolate over, the nearest sample is held only when asked
(``hold_in_gaps``, the node's policy); otherwise the image has no pose.

Keyframe selection (:class:`KeyframeSelector`) is likewise shared by the offline map
builder (:func:`select_keyframes`, whole sequences) and the node (frame by frame).
"""

from __future__ import annotations

import csv
import math
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from ..mapdb.geodesy import EnuFrame

__all__ = [
    "BuildMapError",
    "KeyframeSelector",
    "PoseBuffer",
    "PoseError",
    "PoseOrderError",
    "PoseTable",
    "PoseTrack",
    "TfBuffer",
    "gps_to_local",
    "interpolate_poses",
    "parse_utm_filename",
    "read_pose_csv",
    "rotation_angle_deg",
    "select_keyframes",
]


class BuildMapError(ValueError):
    """Input to map building or evaluation is unusable (file, topic, message type, poses)."""


class PoseError(BuildMapError):
    """One pose sample cannot be used: a non-finite stamp or position, or a bad quaternion."""


class PoseOrderError(PoseError):
    """A pose sample is older than the newest one already buffered (time went backwards)."""


def _unit_quats(q: np.ndarray, what: str) -> np.ndarray:
    q = np.asarray(q, np.float64).reshape(-1, 4)
    n = np.linalg.norm(q, axis=1)
    if not np.all(np.isfinite(q)) or np.any(n < 1e-9):
        raise BuildMapError(f"{what}: orientations must be finite non-zero quaternions (x, y, z, w)")
    return q / n[:, None]


def rotation_angle_deg(q_a: np.ndarray, q_b: np.ndarray) -> np.ndarray:
    """Angle in degrees of the relative rotation between quaternions (x, y, z, w), row-wise."""
    ra = Rotation.from_quat(np.asarray(q_a, np.float64).reshape(-1, 4))
    rb = Rotation.from_quat(np.asarray(q_b, np.float64).reshape(-1, 4))
    return np.degrees((ra.inv() * rb).magnitude())


@dataclass
class PoseTrack:
    """Timed poses of one frame in another: ``times`` (n,), ``positions`` (n, 3), ``quats`` (n, 4).

    Samples are sorted by time; for equal times the last sample wins (a re-published pose).
    ``static`` tracks (one sample, e.g. from /tf_static) are valid at every time.
    """

    times: np.ndarray
    positions: np.ndarray
    quats: np.ndarray
    frame_id: str = "map"
    static: bool = False

    def __post_init__(self) -> None:
        t = np.asarray(self.times, np.float64).reshape(-1)
        p = np.asarray(self.positions, np.float64).reshape(-1, 3)
        q = _unit_quats(self.quats, "pose track")
        if not (len(t) == len(p) == len(q)):
            raise BuildMapError(f"pose track: {len(t)} times, {len(p)} positions, {len(q)} orientations")
        if len(t) == 0:
            raise BuildMapError("pose track is empty")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
            raise BuildMapError("pose track: times and positions must be finite")
        order = np.argsort(t, kind="stable")
        t, p, q = t[order], p[order], q[order]
        keep = np.ones(len(t), bool)
        keep[:-1] = t[1:] != t[:-1]  # last of each run of equal times
        self.times, self.positions, self.quats = t[keep], p[keep], q[keep]

    @classmethod
    def constant(cls, position: Sequence[float], quat: Sequence[float], frame_id: str = "map") -> PoseTrack:
        """A pose valid at all times (a static transform)."""
        return cls(np.zeros(1), np.asarray(position)[None], np.asarray(quat)[None], frame_id, static=True)

    def __len__(self) -> int:
        return len(self.times)

    def interpolate(
        self, t: np.ndarray | float, max_gap_s: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Poses at times ``t``: (positions (m, 3), quats (m, 4), ok (m,) bool); see the module docstring.

        Rows with ``ok`` False hold NaN.
        """
        if self.static:
            m = len(np.atleast_1d(t))
            return np.tile(self.positions[0], (m, 1)), np.tile(self.quats[0], (m, 1)), np.ones(m, bool)
        return interpolate_poses(self.times, self.positions, self.quats, t, max_gap_s)


def interpolate_poses(
    times: np.ndarray,
    positions: np.ndarray,
    quats: np.ndarray,
    t: np.ndarray | float,
    max_gap_s: float,
    *,
    hold_in_gaps: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poses at times ``t`` from samples (``times`` (n,) strictly increasing, ``positions`` (n, 3),
    unit ``quats`` (n, 4)): (positions (m, 3), quats (m, 4), ok (m,) bool), rows without a pose NaN.

    The rule is in the module docstring: interpolate (linear / slerp) between the two samples
    around ``t`` when both are within ``max_gap_s``; else hold the nearest sample within
    ``max_gap_s`` outside the sampled span, or anywhere when ``hold_in_gaps``.
    """
    t = np.atleast_1d(np.asarray(t, np.float64))
    m, n = len(t), len(times)
    pos = np.full((m, 3), np.nan)
    quat = np.full((m, 4), np.nan)
    if n == 0:
        return pos, quat, np.zeros(m, bool)
    hi = np.searchsorted(times, t, side="left")  # first sample >= t
    hi_c = np.minimum(hi, n - 1)
    lo = np.maximum(hi - 1, 0)
    exact = times[hi_c] == t
    inside = (hi > 0) & (hi < n)
    interp = ~exact & inside & (t - times[lo] <= max_gap_s) & (times[hi_c] - t <= max_gap_s)
    nearest = np.where(np.abs(times[lo] - t) <= np.abs(times[hi_c] - t), lo, hi_c)
    hold = ~exact & ~interp & (np.abs(times[nearest] - t) <= max_gap_s) & (~inside | hold_in_gaps)
    ok = exact | interp | hold
    if not ok.any():
        return pos, quat, ok
    first = np.where(interp, lo, np.where(exact, hi_c, nearest))  # exact/hold rows: one sample
    a, b = first[ok], np.where(interp, hi_c, first)[ok]
    span = times[b] - times[a]
    alpha = np.where(span > 0, (t[ok] - times[a]) / np.where(span > 0, span, 1.0), 0.0)
    pos[ok] = positions[a] + alpha[:, None] * (positions[b] - positions[a])
    r_a = Rotation.from_quat(quats[a])
    step = (r_a.inv() * Rotation.from_quat(quats[b])).as_rotvec()
    quat[ok] = (r_a * Rotation.from_rotvec(step * alpha[:, None])).as_quat()
    return pos, quat, ok


class PoseBuffer:
    """The newest ``maxlen`` timed poses of a live source (e.g. nav_msgs/Odometry), fed one by one.

    Why: the node needs the pose at each image stamp while odometry keeps arriving; memory
    stays bounded (at most ``2 * maxlen`` samples are stored, compacted in place) and each
    :meth:`lookup` runs :func:`interpolate_poses` on array views, without copying.
    A sample at the newest stamp replaces it (the last one wins, as in :class:`PoseTrack`).
    """

    def __init__(self, maxlen: int = 2000) -> None:
        if maxlen < 1:
            raise ValueError(f"PoseBuffer maxlen must be >= 1, got {maxlen}")
        self.maxlen = int(maxlen)
        self._t = np.empty(2 * self.maxlen)
        self._p = np.empty((2 * self.maxlen, 3))
        self._q = np.empty((2 * self.maxlen, 4))
        self._start = self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def clear(self) -> None:
        """Forget every sample (e.g. the source restarted)."""
        self._start = self._end = 0

    def add(self, stamp: float, position: np.ndarray, orientation: np.ndarray) -> None:
        """Append a pose (position (3,), quaternion (x, y, z, w)).

        Raises:
            PoseError: non-finite stamp or position, or a quaternion that is not finite with norm ~1.
            PoseOrderError: ``stamp`` is older than the newest buffered sample.
        """
        stamp = float(stamp)
        if not math.isfinite(stamp):
            raise PoseError(f"stamp is not finite: {stamp}")
        p = np.asarray(position, dtype=np.float64).reshape(-1)
        q = np.asarray(orientation, dtype=np.float64).reshape(-1)
        if p.shape != (3,) or not np.isfinite(p).all():
            raise PoseError(f"position is not 3 finite numbers: {p.tolist()}")
        if q.shape != (4,) or not np.isfinite(q).all():
            raise PoseError(f"orientation is not 4 finite numbers: {q.tolist()}")
        norm = float(np.linalg.norm(q))
        if not 0.5 < norm < 1.5:
            raise PoseError(f"orientation quaternion has norm {norm:.3g}, not ~1")
        if self._end > self._start:
            newest = float(self._t[self._end - 1])
            if stamp < newest:
                raise PoseOrderError(f"stamp {stamp:.9f} is older than the previous pose's {newest:.9f}")
            if stamp == newest:
                self._end -= 1  # re-published pose: replace it
        if self._end == len(self._t):  # full: move the newest maxlen - 1 samples to the front
            keep = slice(self._end - (self.maxlen - 1), self._end)
            k = self.maxlen - 1
            self._t[:k], self._p[:k], self._q[:k] = self._t[keep], self._p[keep], self._q[keep]
            self._start, self._end = 0, k
        self._t[self._end], self._p[self._end], self._q[self._end] = stamp, p, q / norm
        self._end += 1
        self._start = max(self._start, self._end - self.maxlen)

    def lookup(self, stamp: float, max_age: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(position (3,), unit quaternion xyzw) at ``stamp``, or None when no pose is within ``max_age``.

        Interpolates between the samples around ``stamp``, else holds the nearest one within
        ``max_age`` (also inside a gap: :func:`interpolate_poses` with ``hold_in_gaps``).
        """
        s = slice(self._start, self._end)
        pos, quat, ok = interpolate_poses(
            self._t[s], self._p[s], self._q[s], stamp, max_age, hold_in_gaps=True
        )
        return (pos[0], quat[0]) if ok[0] else None


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


class KeyframeSelector:
    """Streaming keyframe selection: a frame is a keyframe when it is the first one, or when,
    since the last keyframe, the camera moved at least ``distance_m`` metres, turned at least
    ``angle_deg`` degrees, or ``interval_s`` seconds passed (any one suffices; None disables
    that criterion; all None keeps every frame).

    Use :meth:`is_due` to ask and :meth:`take` once the frame really became a keyframe (a
    frame that fails to decode is not taken, so the next one is asked against the same
    last keyframe). The offline map builder feeds it a whole sequence; the node feeds it
    frame by frame, changes thresholds at run time (:meth:`configure`) and starts over on
    a new map or mode (:meth:`reset`).
    """

    def __init__(
        self, distance_m: float | None = 1.0, angle_deg: float | None = 15.0, interval_s: float | None = None
    ) -> None:
        self.configure(distance_m, angle_deg, interval_s)
        self._last: tuple[float, np.ndarray, np.ndarray] | None = None

    def configure(self, distance_m: float | None, angle_deg: float | None, interval_s: float | None) -> None:
        """Set the thresholds (the last keyframe is kept). Raises BuildMapError for a negative or NaN one."""
        for name, v in (("distance_m", distance_m), ("angle_deg", angle_deg), ("interval_s", interval_s)):
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise BuildMapError(f"keyframe {name} must be a finite number >= 0 or None, got {v!r}")
        self.distance_m, self.angle_deg, self.interval_s = distance_m, angle_deg, interval_s

    def reset(self) -> None:
        """Forget the last keyframe: the next frame is a keyframe."""
        self._last = None

    def is_due(self, stamp: float, position: np.ndarray, quat: np.ndarray) -> bool:
        """Whether a frame at this pose/time would be a keyframe."""
        if self._last is None:
            return True
        if self.distance_m is None and self.angle_deg is None and self.interval_s is None:
            return True
        t0, p0, q0 = self._last
        if self.interval_s is not None and stamp - t0 >= self.interval_s:
            return True
        if (
            self.distance_m is not None
            and float(np.linalg.norm(np.asarray(position) - p0)) >= self.distance_m
        ):
            return True
        return self.angle_deg is not None and float(rotation_angle_deg(q0, quat)[0]) >= self.angle_deg

    def take(self, stamp: float, position: np.ndarray, quat: np.ndarray) -> None:
        """Record that this frame became a keyframe."""
        self._last = (
            float(stamp),
            np.asarray(position, np.float64).copy(),
            np.asarray(quat, np.float64).copy(),
        )


def select_keyframes(
    stamps: np.ndarray,
    positions: np.ndarray,
    quats: np.ndarray,
    distance_m: float | None = 1.0,
    angle_deg: float | None = 15.0,
    interval_s: float | None = None,
) -> np.ndarray:
    """Boolean mask of the keyframes of a sequence (see :class:`KeyframeSelector`)."""
    sel = KeyframeSelector(distance_m, angle_deg, interval_s)
    mask = np.zeros(len(stamps), bool)
    for i in range(len(stamps)):
        if sel.is_due(float(stamps[i]), positions[i], quats[i]):
            sel.take(float(stamps[i]), positions[i], quats[i])
            mask[i] = True
    return mask


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
        try:
            quats = _unit_quats(quats, f"pose CSV {path}")
        except BuildMapError:
            raise
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
