"""Odometry buffer (pose at an image stamp) and the SLAM keyframe gate. No rclpy here.

Plain numpy/scipy so it can be tested and reused without ROS; it lives beside the node
because only the node feeds it (offline tools sync poses from whole bags at once).
"""

from __future__ import annotations

import bisect
import math
from collections import deque

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

__all__ = ["KeyframeGate", "PoseBuffer", "PoseError"]


class PoseError(ValueError):
    """A pose or stamp that cannot be used (NaN, bad quaternion, time going backwards)."""


def _check_pose(position: np.ndarray, orientation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(position, dtype=np.float64).reshape(-1)
    q = np.asarray(orientation, dtype=np.float64).reshape(-1)
    if p.shape != (3,) or not np.isfinite(p).all():
        raise PoseError(f"position is not 3 finite numbers: {p.tolist()}")
    if q.shape != (4,) or not np.isfinite(q).all():
        raise PoseError(f"orientation is not 4 finite numbers: {q.tolist()}")
    n = float(np.linalg.norm(q))
    if not 0.5 < n < 1.5:
        raise PoseError(f"orientation quaternion has norm {n:.3g}, not ~1")
    return p, q / n


class PoseBuffer:
    """The last ``maxlen`` timestamped poses (e.g. from nav_msgs/Odometry), in stamp order.

    ``lookup(t)`` interpolates (linear position, slerp orientation) between the two
    poses around ``t`` when both are within ``max_age`` of it, else returns the
    nearest pose within ``max_age``, else None.
    """

    def __init__(self, maxlen: int = 2000) -> None:
        self._stamps: deque[float] = deque(maxlen=maxlen)
        self._pos: deque[np.ndarray] = deque(maxlen=maxlen)
        self._quat: deque[np.ndarray] = deque(maxlen=maxlen)

    def __len__(self) -> int:
        return len(self._stamps)

    def clear(self) -> None:
        self._stamps.clear()
        self._pos.clear()
        self._quat.clear()

    def add(self, stamp: float, position: np.ndarray, orientation: np.ndarray) -> None:
        """Append a pose. Raises PoseError for NaN/inf, a non-unit quaternion or a stamp older than the last."""
        if not math.isfinite(stamp):
            raise PoseError(f"stamp is not finite: {stamp}")
        p, q = _check_pose(position, orientation)
        if self._stamps and stamp < self._stamps[-1]:
            raise PoseError(f"stamp {stamp:.9f} is older than the previous pose's {self._stamps[-1]:.9f}")
        self._stamps.append(float(stamp))
        self._pos.append(p)
        self._quat.append(q)

    def lookup(self, stamp: float, max_age: float) -> tuple[np.ndarray, np.ndarray] | None:
        """(position, unit quaternion xyzw) at ``stamp``, or None when no pose is within ``max_age``."""
        if not self._stamps:
            return None
        stamps = list(self._stamps)
        i = bisect.bisect_left(stamps, stamp)
        if i < len(stamps) and stamps[i] == stamp:
            return self._pos[i].copy(), self._quat[i].copy()
        if 0 < i < len(stamps):
            t0, t1 = stamps[i - 1], stamps[i]
            if stamp - t0 <= max_age and t1 - stamp <= max_age:
                a = (stamp - t0) / (t1 - t0)
                pos = (1 - a) * self._pos[i - 1] + a * self._pos[i]
                rots = Rotation.from_quat(np.stack([self._quat[i - 1], self._quat[i]]))
                quat = Slerp([0.0, 1.0], rots)([a]).as_quat()[0]
                return pos, quat
        near = min(
            (j for j in (i - 1, i) if 0 <= j < len(stamps)),
            key=lambda j: abs(stamps[j] - stamp),
        )
        if abs(stamps[near] - stamp) <= max_age:
            return self._pos[near].copy(), self._quat[near].copy()
        return None


class KeyframeGate:
    """Decides whether an image becomes a keyframe: moved ``distance_m``, turned ``angle_deg``,
    or ``period_s`` (> 0) passed since the last keyframe; the first image always does."""

    def __init__(self, distance_m: float, angle_deg: float, period_s: float) -> None:
        self.distance_m = float(distance_m)
        self.angle_deg = float(angle_deg)
        self.period_s = float(period_s)
        self._last: tuple[float, np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        self._last = None

    def check(self, stamp: float, position: np.ndarray, orientation: np.ndarray) -> bool:
        """True when a keyframe should be taken here (does not record it: call :meth:`accept`)."""
        if self._last is None:
            return True
        t0, p0, q0 = self._last
        if float(np.linalg.norm(np.asarray(position) - p0)) >= self.distance_m:
            return True
        dot = min(1.0, abs(float(np.dot(orientation, q0))))
        if math.degrees(2.0 * math.acos(dot)) >= self.angle_deg:
            return True
        return self.period_s > 0 and stamp - t0 >= self.period_s

    def accept(self, stamp: float, position: np.ndarray, orientation: np.ndarray) -> None:
        """Record the keyframe just taken."""
        self._last = (float(stamp), np.asarray(position, np.float64).copy(), np.asarray(orientation).copy())
