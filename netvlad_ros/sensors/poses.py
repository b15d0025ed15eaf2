"""Timed poses shared by the live node and the offline map builder: pose tracks,
interpolation, the live pose buffer and keyframe selection. Plain numpy/scipy; no ROS.

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

Bad pose data raises :class:`~netvlad_ros.sensors.errors.PoseError` (time going
backwards in a :class:`PoseBuffer`: its subclass ``PoseOrderError``); bad keyframe
thresholds raise :class:`~netvlad_ros.sensors.errors.SensorError`. The offline pose
sources (TF, CSV, GPS, file names) are in :mod:`netvlad_ros.offline.pose_sources`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from ..config import check_fields, param
from .errors import PoseError, PoseOrderError, SensorError

__all__ = [
    "KeyframeParams",
    "KeyframeSelector",
    "PoseBuffer",
    "PoseError",
    "PoseOrderError",
    "PoseTrack",
    "interpolate_poses",
    "rotation_angle_deg",
    "select_keyframes",
    "unit_quaternions",
]


def unit_quaternions(q: np.ndarray, what: str) -> np.ndarray:
    """Quaternions (x, y, z, w) as rows of an (n, 4) float64 array, each scaled to norm 1.

    Raises:
        PoseError: a quaternion is not finite or is zero (``what`` names the source in the message).
    """
    q = np.asarray(q, np.float64).reshape(-1, 4)
    n = np.linalg.norm(q, axis=1)
    if not np.all(np.isfinite(q)) or np.any(n < 1e-9):
        raise PoseError(f"{what}: orientations must be finite non-zero quaternions (x, y, z, w)")
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
    An empty track, parts of different lengths, non-finite times or positions, or a bad
    quaternion raise :class:`~netvlad_ros.sensors.errors.PoseError`.
    """

    times: np.ndarray
    positions: np.ndarray
    quats: np.ndarray
    frame_id: str = "map"
    static: bool = False

    def __post_init__(self) -> None:
        t = np.asarray(self.times, np.float64).reshape(-1)
        p = np.asarray(self.positions, np.float64).reshape(-1, 3)
        q = unit_quaternions(self.quats, "pose track")
        if not (len(t) == len(p) == len(q)):
            raise PoseError(f"pose track: {len(t)} times, {len(p)} positions, {len(q)} orientations")
        if len(t) == 0:
            raise PoseError("pose track is empty")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(p))):
            raise PoseError("pose track: times and positions must be finite")
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

    @property
    def newest_stamp(self) -> float | None:
        """Stamp of the newest sample (None when empty)."""
        return float(self._t[self._end - 1]) if self._end > self._start else None

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


@dataclass(frozen=True)
class KeyframeParams:
    """When a frame becomes a keyframe: any one threshold reached since the last keyframe.

    Each criterion is off at 0; with all three off every frame is a keyframe. Used by the
    node (``keyframe.*`` parameters) and by ``build-map`` (``--keyframe-*`` options).
    """

    distance_m: float = param(1.0, "new keyframe after moving this far, metres (0 = off)", range=(0.0, 1e9))
    angle_deg: float = param(
        15.0, "new keyframe after turning this much, degrees (0 = off)", range=(0.0, 180.0)
    )
    period_s: float = param(
        0.0, "new keyframe after this long even without motion, seconds (0 = off)", range=(0.0, 1e9)
    )

    def validate(self) -> None:
        """Raise SensorError naming a negative, too large or non-finite threshold."""
        check_fields(self, error=SensorError)


class KeyframeSelector:
    """Streaming keyframe selection by :class:`KeyframeParams`: a frame is a keyframe when it is
    the first one, or when, since the last keyframe, the camera moved at least ``distance_m``,
    turned at least ``angle_deg`` or ``period_s`` passed (criteria at 0 are off; all off keeps
    every frame).

    Use :meth:`is_due` to ask and :meth:`take` once the frame really became a keyframe (a
    frame that fails to decode is not taken, so the next one is asked against the same
    last keyframe). The offline map builder feeds it a whole sequence; the node feeds it
    frame by frame, changes thresholds at run time (:meth:`configure`) and starts over on
    a new map or mode (:meth:`reset`).
    """

    def __init__(self, params: KeyframeParams | None = None) -> None:
        self.configure(params or KeyframeParams())
        self._last: tuple[float, np.ndarray, np.ndarray] | None = None

    def configure(self, params: KeyframeParams) -> None:
        """Set the thresholds (the last keyframe is kept). Raises SensorError for an invalid one."""
        params.validate()
        self.params = params

    def reset(self) -> None:
        """Forget the last keyframe: the next frame is a keyframe."""
        self._last = None

    def is_due(self, stamp: float, position: np.ndarray, quat: np.ndarray) -> bool:
        """Whether a frame at this pose/time would be a keyframe."""
        if self._last is None:
            return True
        p = self.params
        if p.distance_m == 0 and p.angle_deg == 0 and p.period_s == 0:
            return True
        t0, p0, q0 = self._last
        if p.period_s > 0 and stamp - t0 >= p.period_s:
            return True
        if p.distance_m > 0 and float(np.linalg.norm(np.asarray(position) - p0)) >= p.distance_m:
            return True
        return p.angle_deg > 0 and float(rotation_angle_deg(q0, quat)[0]) >= p.angle_deg

    def take(self, stamp: float, position: np.ndarray, quat: np.ndarray) -> None:
        """Record that this frame became a keyframe."""
        self._last = (
            float(stamp),
            np.asarray(position, np.float64).copy(),
            np.asarray(quat, np.float64).copy(),
        )


def select_keyframes(
    stamps: np.ndarray, positions: np.ndarray, quats: np.ndarray, params: KeyframeParams | None = None
) -> np.ndarray:
    """Boolean mask of the keyframes of a sequence (see :class:`KeyframeSelector`)."""
    sel = KeyframeSelector(params)
    mask = np.zeros(len(stamps), bool)
    for i in range(len(stamps)):
        if sel.is_due(float(stamps[i]), positions[i], quats[i]):
            sel.take(float(stamps[i]), positions[i], quats[i])
            mask[i] = True
    return mask
