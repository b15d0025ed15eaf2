"""The pose graph fed the way a live front end delivers its data (``pose_graph_node``; no ROS).

A place-recognition front end (the localize node in slam mode) announces its keyframes by
id and stamp (the ``~/map_keyframes`` table, about once a second) and its loop closures
between keyframe ids (``~/loop_closures``, as soon as a keyframe closes a loop, so usually
*before* the table that lists the query keyframe). Odometry comes on its own stream.
:class:`LiveGraph` turns the three streams into :class:`PoseGraph` calls:

- odometry goes into a ``sensors.PoseBuffer``; a keyframe's pose is the odometry
  interpolated at the keyframe's stamp (the rule the front end used when it made the
  keyframe), so nothing but the stamps ties the front end to the back end, as it would for
  any other back end (rtabmap, LIO-SAM, Kimera: docs/ros_interface.md);
- keyframes are added once each, in stamp order; one newer than the newest odometry waits
  until that odometry arrives (it travels on another topic). Keyframes the odometry does not cover
  (a map loaded from an earlier drive, keyframes made before this node started) are left
  out and counted (``keyframe_outside_odometry``): an odometry factor to them would join
  two unrelated odometry frames;
- a loop closure waits until both keyframes are in the graph. It is dropped as
  ``closure_unknown_keyframe`` once the tables have moved past a missing keyframe (it was
  left out, or never listed while later ids were) or when more than
  ``max_pending_closures`` wait;
- scale-free closures (``scale_known`` false: no depth, essential matrix) are left out
  unless ``scale_free_closures`` is on: their rotations err by several degrees where their
  stated sigma says a tenth of one, and one such closure bends the graph (docs/posegraph.md);
- odometry covariances are not used: a ``nav_msgs/Odometry`` covariance is the accumulated
  uncertainty of the pose, not that of one step (docs/posegraph.md), so every odometry
  factor gets the fallback model ``graph.odom_*``.

Bad input is counted in :attr:`LiveGraph.rejects` by reason (:data:`LIVE_REASONS`), the
last text in :attr:`LiveGraph.last_problem`; nothing here raises for what a message holds.
Not thread-safe: one owner (the node's executor) calls it.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from netvlad_ros.config import check_fields, param
from netvlad_ros.posegraph.conventions import Matrix, PoseLike, as_matrix, check_covariance
from netvlad_ros.posegraph.errors import PoseGraphError, PoseGraphParamError
from netvlad_ros.posegraph.graph import LoopClosureState, PoseGraph, PoseGraphParams
from netvlad_ros.sensors.errors import PoseError, PoseOrderError
from netvlad_ros.sensors.poses import PoseBuffer

__all__ = ["DOWNWEIGHTED_BELOW", "LIVE_REASONS", "LiveGraph", "LiveGraphParams"]

#: Every reason an input is dropped (a counter each in ``LiveGraph.rejects``).
LIVE_REASONS: tuple[str, ...] = (
    "odom_invalid",  # non-finite stamp/position, quaternion not of norm ~1
    "odom_time_backwards",  # older than the newest odometry: the buffer restarts from it
    "keyframe_invalid",  # non-finite stamp, bad id
    "keyframe_time_backwards",  # older than the newest keyframe in the graph
    "keyframe_outside_odometry",  # no odometry within odom_max_age_s of its stamp
    "closure_without_pose",  # the front end gave no relative pose (NaN)
    "closure_scale_free",  # scale_known false and scale_free_closures off (the default)
    "closure_pose_invalid",  # not a rigid transform (non-unit quaternion, ...)
    "closure_without_covariance",  # covariance all NaN
    "closure_covariance_invalid",  # not symmetric positive definite, not finite, singular
    "closure_unknown_keyframe",  # a keyframe that is not (and will not be) in the graph
    "closure_invalid",  # refused by the graph (e.g. from a keyframe to itself)
    "graph_reset",  # iSAM2 failed even with QR: the graph started over
)

DOWNWEIGHTED_BELOW = 0.1
"""A closure whose robust weight is below this counts as down-weighted (rejected by the kernel).
For Cauchy (weight ``1 / (1 + chi2 / c^2)``) that is ``chi2 > 9 c^2`` (56 at c = 2.5; a 6-dof
chi-square exceeds it with probability ~1e-9). Measured on the simulation loop (4 seeds): correct
closures end with weights 0.27-1, a wrong one near 1e-6; 0.5 would count a quarter of the
correct ones (a correct 6-dof residual has chi2 ~ 6 on average, weight ~ 0.5)."""


@dataclass
class LiveGraphParams:
    """How the live streams are joined; ``graph``: the pose graph's own settings."""

    odom_max_age_s: float = param(
        0.5,
        "a keyframe's pose is the odometry interpolated at its stamp from samples within this "
        "(as the localize node's odom_max_age_s); keyframes without are left out",
        range=(0.0, 3600.0),
        read_only=True,
    )
    odom_buffer_size: int = param(
        2000,
        "odometry samples kept (the newest): must span the keyframe table's delay "
        "(~1 s) at the odometry rate",
        range=(10, 10_000_000),
        read_only=True,
    )
    scale_free_closures: bool = param(
        False,
        "use loop closures without metric scale (monocular, essential matrix) as rotation-only "
        "factors; off: they are counted (closure_scale_free) and left out (docs/posegraph.md)",
        read_only=True,
    )
    max_pending_closures: int = param(
        1000, "loop closures that may wait for their keyframes (the oldest is dropped)", range=(1, 1e7)
    )
    graph: PoseGraphParams = field(default_factory=PoseGraphParams)

    def validate(self) -> None:
        """Raise PoseGraphParamError naming the first invalid field."""
        check_fields(self, error=PoseGraphParamError)
        self.graph.validate()


@dataclass
class _Pending:
    match_id: int
    query_id: int
    pose: Matrix
    covariance: Matrix
    scale_known: bool


@dataclass(frozen=True)
class LiveStatus:
    """Counts for diagnostics (see :meth:`LiveGraph.status`)."""

    keyframes: int
    loop_closures: int
    closures_accepted: int
    closures_downweighted: int
    pending_closures: int
    waiting_keyframes: int
    updates: int
    last_update_ms: float
    isam2_rebuilt_with_qr: int


class LiveGraph:
    """A :class:`PoseGraph` fed by odometry, keyframe announcements and loop closures."""

    def __init__(self, params: LiveGraphParams | None = None) -> None:
        self.params = params if params is not None else LiveGraphParams()
        self.params.validate()
        self.graph = PoseGraph(self.params.graph)
        self._odom = PoseBuffer(self.params.odom_buffer_size)
        self._seen: set[int] = set()  # every keyframe id handled (added or left out)
        self._max_seen = -1
        self._in_graph: set[int] = set()
        self._latest: int | None = None
        self._dirty = False  # factors given to the graph but not yet to iSAM2
        # keyframes newer than the newest odometry, (stamp, id) in stamp order: their odometry
        # is still on the way (another topic); holding an older sample would misplace them
        self._waiting: list[tuple[float, int]] = []
        self._last_stamp = -math.inf
        self._pending: deque[_Pending] = deque()
        self._states: list[LoopClosureState] = []
        self.rejects: Counter[str] = Counter({r: 0 for r in LIVE_REASONS})
        self.last_problem = ""
        self.last_update_ms = math.nan
        self.updates = 0
        self.version = 0
        """Incremented by every graph update (callers republish when it changes)."""

    # ------------------------------------------------------------------ inputs
    def add_odometry(self, stamp: float, position: ArrayLike, orientation: ArrayLike) -> str | None:
        """Buffer one odometry pose (quaternion x, y, z, w); the reject reason, or None when kept.

        Keyframes that waited for odometry up to ``stamp`` join the graph now (check ``version``).
        """
        try:
            self._odom.add(stamp, np.asarray(position), np.asarray(orientation))
        except PoseOrderError as exc:
            self._odom.clear()  # a restarted source: start over from this sample
            self._odom.add(stamp, np.asarray(position), np.asarray(orientation))
            return self._reject("odom_time_backwards", f"odometry time went backwards: {exc}")
        except PoseError as exc:
            return self._reject("odom_invalid", f"dropped odometry: {exc}")
        if self._waiting and self._waiting[0][0] <= float(stamp):
            self._take_waiting()
        return None

    def odometry_pose(self, stamp: float) -> Matrix | None:
        """The buffered odometry ``T_odom_body`` (4x4) at ``stamp``, or None (see ``odom_max_age_s``)."""
        found = self._odom.lookup(stamp, self.params.odom_max_age_s)
        return None if found is None else as_matrix(found)

    def add_keyframes(self, ids: Sequence[int] | np.ndarray, stamps: Sequence[float] | np.ndarray) -> int:
        """Add the keyframes not seen before (a whole keyframe table may be passed each time).

        Returns how many joined the graph; waiting loop closures whose keyframes are now
        known are added too, and the graph is updated once. Keyframes newer than the newest
        odometry wait for it (``status().waiting_keyframes``; :meth:`add_odometry` adds them).
        """
        waiting = {k for _, k in self._waiting}
        fresh = [
            (float(t), int(k))
            for k, t in zip(np.asarray(ids), np.asarray(stamps), strict=True)
            if int(k) not in self._seen and int(k) not in waiting
        ]
        for stamp, key in fresh:
            if not math.isfinite(stamp):
                self._seen.add(key)
                self._reject("keyframe_invalid", f"keyframe {key}: stamp {stamp} is not finite")
        self._waiting = sorted(self._waiting + [(t, k) for t, k in fresh if math.isfinite(t)])
        return self._take_waiting()

    def _take_waiting(self) -> int:
        """Add the waiting keyframes the odometry now covers, in stamp order; then closures, one update."""
        newest = self._odom.newest_stamp
        covered = [w for w in self._waiting if newest is not None and w[0] <= newest]
        self._waiting = self._waiting[len(covered) :]
        added = 0
        for stamp, key in covered:
            self._seen.add(key)
            self._max_seen = max(self._max_seen, key)
            if stamp < self._last_stamp:
                self._reject(
                    "keyframe_time_backwards",
                    f"keyframe {key} at {stamp:.3f} is older than the graph's newest ({self._last_stamp:.3f})",
                )
                continue
            pose = self.odometry_pose(stamp)
            if pose is None:
                self._reject(
                    "keyframe_outside_odometry",
                    f"keyframe {key} at {stamp:.3f}: no odometry within {self.params.odom_max_age_s} s",
                )
                continue
            try:
                self.graph.add_keyframe(key, stamp, pose, None, update=False)
            except PoseGraphError as exc:
                self._reject("keyframe_invalid", str(exc))
                continue
            self._last_stamp = stamp
            self._in_graph.add(key)
            self._latest = key
            self._dirty = True
            added += 1
        self._drain()
        self.update()
        return added

    def add_loop_closure(
        self,
        match_id: int,
        query_id: int,
        T_match_query: PoseLike,  # noqa: N803 (the team's name for this transform)
        covariance: ArrayLike | None,
        scale_known: bool,
        *,
        update: bool = True,
    ) -> str | None:
        """Add a loop closure now, or keep it until both keyframes are in the graph.

        Arguments as ``PoseGraph.add_loop_closure`` (``T_match_query`` NaN or
        ``covariance`` None / NaN: the front end had none). For ``scale_known=False`` only
        the rotation block of the covariance is read. Returns the reject reason, or None.
        ``update=False`` leaves the iSAM2 update to a later :meth:`update`.
        """
        what = f"loop closure {query_id} -> {match_id}"
        if not scale_known and not self.params.scale_free_closures:
            return self._reject(
                "closure_scale_free", f"{what}: scale-free (no depth); scale_free_closures is off"
            )
        if _has_nan(T_match_query):
            return self._reject("closure_without_pose", f"{what}: no relative pose")
        try:
            pose = as_matrix(T_match_query, f"{what}: T_match_query")
        except PoseGraphError as exc:
            return self._reject("closure_pose_invalid", str(exc))
        cov = None if covariance is None else np.array(covariance, dtype=np.float64).reshape(-1)
        if cov is None or cov.size == 0 or np.all(np.isnan(cov)):
            return self._reject("closure_without_covariance", f"{what}: no covariance")
        try:
            c = cov.reshape(6, 6)
            if not scale_known:  # the unit-direction block is replaced by the graph: do not judge it
                c = c.copy()
                c[:3, :] = 0.0
                c[:, :3] = 0.0
                c[:3, :3] = np.eye(3) * self.params.graph.scale_free_translation_sigma**2
            c = check_covariance(c, f"{what}: covariance")
        except (ValueError, PoseGraphError) as exc:
            return self._reject("closure_covariance_invalid", str(exc))
        self._pending.append(_Pending(int(match_id), int(query_id), pose, c, bool(scale_known)))
        while len(self._pending) > self.params.max_pending_closures:
            old = self._pending.popleft()
            self._reject(
                "closure_unknown_keyframe",
                f"loop closure {old.query_id} -> {old.match_id} waited too long for its keyframes",
            )
        self._drain()
        if update:
            self.update()
        return None

    def update(self) -> None:
        """Give what was added with ``update=False`` to iSAM2 (nothing to do: no update)."""
        if not self._dirty:
            return
        self._dirty = False
        t0 = time.perf_counter()
        try:
            self.graph.update()
        except PoseGraphError as exc:  # iSAM2 failed with QR too: nothing to keep
            self.graph.reset()
            self._in_graph.clear()
            self._latest = None
            self._last_stamp = -math.inf
            self._reject("graph_reset", str(exc))
        self.last_update_ms = (time.perf_counter() - t0) * 1e3
        self._states = self.graph.loop_closures()
        self.updates += 1
        self.version += 1

    # ------------------------------------------------------------------ outputs
    def correction(self) -> Matrix:
        """``T_map_odom`` (4x4): compose with an odometry pose for the corrected pose."""
        return self.graph.latest_correction()

    def latest_key(self) -> int | None:
        """Id of the newest keyframe in the graph (None when empty)."""
        return self._latest

    def closure_states(self) -> list[LoopClosureState]:
        """Every loop closure with its residual and robust weight after the last update."""
        return list(self._states)

    def status(self) -> LiveStatus:
        """Counts for diagnostics."""
        down = sum(1 for s in self._states if s.weight < DOWNWEIGHTED_BELOW)
        return LiveStatus(
            keyframes=len(self._in_graph),
            loop_closures=len(self._states),
            closures_accepted=len(self._states) - down,
            closures_downweighted=down,
            pending_closures=len(self._pending),
            waiting_keyframes=len(self._waiting),
            updates=self.updates,
            last_update_ms=self.last_update_ms,
            isam2_rebuilt_with_qr=int(self.graph.counters["isam2_rebuilt_with_qr"]),
        )

    # ------------------------------------------------------------------ helpers
    def _reject(self, reason: str, text: str) -> str:
        self.rejects[reason] += 1
        self.last_problem = f"{text} [{reason}]"
        return reason

    def _drain(self) -> int:
        """Add every waiting closure whose keyframes are in the graph; drop the hopeless ones."""
        added = 0
        keep: deque[_Pending] = deque()
        for p in self._pending:
            missing = [k for k in (p.match_id, p.query_id) if k not in self._in_graph]
            if not missing:
                try:
                    self.graph.add_loop_closure(
                        p.match_id, p.query_id, p.pose, p.covariance, p.scale_known, update=False
                    )
                    added += 1
                    self._dirty = True
                except PoseGraphError as exc:
                    self._reject("closure_invalid", str(exc))
            elif any(k in self._seen or k < self._max_seen for k in missing):
                self._reject(
                    "closure_unknown_keyframe",
                    f"loop closure {p.query_id} -> {p.match_id}: keyframe {missing[0]} is not in the graph",
                )
            else:
                keep.append(p)
        self._pending = keep
        return added


def _has_nan(pose: PoseLike) -> bool:
    """Whether a pose (4x4, or position + quaternion) holds NaN: "no relative pose"."""
    parts = pose if isinstance(pose, tuple | list) and len(pose) == 2 else (pose,)
    try:
        return any(bool(np.isnan(np.asarray(p, dtype=np.float64)).any()) for p in parts)
    except (TypeError, ValueError):
        return False  # not numeric: as_matrix names the problem
