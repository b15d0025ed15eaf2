"""GTSAM pose graph of keyframes: odometry chain, loop closures, incremental iSAM2.

One variable per keyframe (a ``Pose3``, key = the map database's keyframe id), in the
*map* frame: the graph's frame, equal to the odometry frame at the first keyframe (a
tight prior holds it there). Factors:

- a prior on the first keyframe (``PoseGraphParams.prior_*_sigma``);
- an odometry ``BetweenFactorPose3`` between consecutive keyframes, measuring
  ``inv(T_odom_prev) @ T_odom_this`` with the odometry message's covariance when it is
  usable, else a covariance that grows with the distance and angle travelled;
- a loop-closure ``BetweenFactorPose3(match, query, T_match_query)`` with the caller's
  covariance under a robust kernel (``loop_kernel``), so one wrong closure cannot bend the
  graph. Scale-free closures (monocular: rotation + a unit translation direction) keep
  their rotation block and get ``scale_free_translation_sigma`` on translation, so they
  correct rotation drift without pulling on distances.

Updates are incremental (``gtsam.ISAM2``): each ``add_*`` call updates the solution unless
``update=False`` is passed, in which case factors wait for :meth:`PoseGraph.update`.
Conventions (frames, relative-pose direction, covariance order): ``conventions.py`` and
docs/posegraph.md; defaults and the measurements behind them: docs/posegraph.md.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from dataclasses import dataclass, fields

import gtsam
import numpy as np
from numpy.typing import ArrayLike, NDArray

from netvlad_ros.config import param
from netvlad_ros.posegraph.conventions import (
    Matrix,
    PoseLike,
    as_matrix,
    check_covariance,
    invert,
    position_quaternion,
    ros_to_tangent_covariance,
    tangent_to_ros_covariance,
)
from netvlad_ros.posegraph.errors import PoseGraphError, PoseGraphParamError

LOOP_KERNELS = ("none", "huber", "cauchy", "geman_mcclure", "dcs")
"""Robust kernels for loop closures; measured in docs/posegraph.md."""

Kernel = (
    gtsam.noiseModel.mEstimator.Huber
    | gtsam.noiseModel.mEstimator.Cauchy
    | gtsam.noiseModel.mEstimator.GemanMcClure
    | gtsam.noiseModel.mEstimator.DCS
)

MAX_KEY = 2**62
"""Keys are keyframe ids: non-negative integers below this (GTSAM keys are 64-bit)."""


@dataclass
class PoseGraphParams:
    """Pose-graph settings; defaults and the measurements behind them: docs/posegraph.md.

    Odometry fallback (used when a keyframe comes without a usable odometry covariance):
    per step of ``d`` metres and ``a`` radians, translation sigma
    ``max(odom_min_translation_sigma, odom_translation_sigma_per_m * d)`` on each axis and
    rotation sigma ``max(odom_min_rotation_sigma, odom_rotation_sigma_per_m * d +
    odom_rotation_sigma_per_rad * a)`` about each axis.

    ``loop_kernel`` / ``loop_kernel_param``: the robust kernel of loop closures (one of
    ``LOOP_KERNELS``) and its parameter in whitened units (sigmas of the closure's own
    covariance; for ``dcs`` it is DCS's ``phi``). ``scale_free_translation_sigma``: the
    translation sigma (metres) given to closures with ``scale_known=False``.
    ``closure_iterations``: iSAM2 steps run by an update that contains a loop closure
    (one step is a Gauss-Newton step; a closure after long drift needs a few).
    ``relinearize_threshold`` / ``relinearize_skip``: iSAM2's relinearisation settings.
    ``prior_translation_sigma`` / ``prior_rotation_sigma``: the prior that ties the first
    keyframe to its odometry pose (fixes the map frame).
    """

    # Declared with config.param so the pose_graph_node's ROS parameters (``graph.*``) and
    # config/pose_graph.yaml derive from these fields; the limits are checked by validate()
    # (its messages name the field) and stated in each description. Read-only: the graph
    # reads them when it is built.
    odom_translation_sigma_per_m: float = param(
        0.02, "odometry fallback: translation sigma per metre travelled (>= 0)", read_only=True
    )
    odom_rotation_sigma_per_m: float = param(
        0.01, "odometry fallback: rotation sigma (rad) per metre travelled (>= 0)", read_only=True
    )
    odom_rotation_sigma_per_rad: float = param(
        0.01, "odometry fallback: rotation sigma (rad) per radian turned (>= 0)", read_only=True
    )
    odom_min_translation_sigma: float = param(
        0.01, "odometry fallback: smallest translation sigma, metres (> 0)", read_only=True
    )
    odom_min_rotation_sigma: float = param(
        0.001, "odometry fallback: smallest rotation sigma, radians (> 0)", read_only=True
    )
    loop_kernel: str = param("cauchy", "robust kernel of loop closures", choices=LOOP_KERNELS, read_only=True)
    loop_kernel_param: float = param(
        2.5, "kernel parameter in sigmas of the closure's covariance (dcs: phi) (> 0)", read_only=True
    )
    scale_free_translation_sigma: float = param(
        1000.0,
        "translation sigma (m) of closures with scale_known false: rotation-only constraints (> 0)",
        read_only=True,
    )
    closure_iterations: int = param(
        3, "iSAM2 steps of an update that contains a loop closure (>= 1)", read_only=True
    )
    relinearize_threshold: float = param(0.1, "iSAM2 relinearisation threshold (> 0)", read_only=True)
    relinearize_skip: int = param(10, "iSAM2 relinearises every this many updates (>= 1)", read_only=True)
    prior_translation_sigma: float = param(
        1e-4, "sigma (m) of the prior holding the first keyframe at its odometry pose (> 0)", read_only=True
    )
    prior_rotation_sigma: float = param(
        1e-4, "sigma (rad) of the prior holding the first keyframe at its odometry pose (> 0)", read_only=True
    )

    def validate(self) -> None:
        """Raise PoseGraphParamError (a PoseGraphError) naming the first invalid field."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "loop_kernel":
                if value not in LOOP_KERNELS:
                    raise PoseGraphParamError(f"loop_kernel: {value!r} is not one of {LOOP_KERNELS}")
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise PoseGraphParamError(f"{f.name}: must be a finite number, got {value!r}")
            if f.name in ("closure_iterations", "relinearize_skip"):
                if not float(value).is_integer() or value < 1:
                    raise PoseGraphParamError(f"{f.name}: must be an integer >= 1, got {value!r}")
            elif (
                f.name.startswith("odom_") and f.name.endswith("_per_m")
            ) or f.name == "odom_rotation_sigma_per_rad":
                if value < 0:
                    raise PoseGraphParamError(f"{f.name}: must be >= 0, got {value!r}")
            elif value <= 0:
                raise PoseGraphParamError(f"{f.name}: must be > 0, got {value!r}")


@dataclass(frozen=True)
class Trajectory:
    """Keyframes in the order they were added, at their optimised map-frame poses."""

    keys: NDArray[np.int64]  # (n,)
    stamps: NDArray[np.float64]  # (n,) seconds
    positions: NDArray[np.float64]  # (n, 3) metres, map frame
    orientations: NDArray[np.float64]  # (n, 4) quaternions (x, y, z, w), map frame

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class LoopClosureState:
    """One loop closure as the graph sees it now (for diagnostics and tuning)."""

    match_key: int
    query_key: int
    scale_known: bool
    chi2: float  # squared Mahalanobis distance of its residual at the current estimate (6 dof)
    weight: float  # the robust kernel's weight at that residual (1: fully used, ~0: ignored)


@dataclass
class _Closure:
    match_key: int
    query_key: int
    scale_known: bool
    measured: gtsam.Pose3
    information: Matrix  # tangent order, the Gaussian part of the noise model
    robust: Kernel | None


def _check_key(key: object, what: str) -> int:
    if isinstance(key, bool) or not isinstance(key, numbers.Integral):
        raise PoseGraphError(f"{what}: keyframe key must be an integer, got {key!r}")
    k = int(key)
    if not 0 <= k < MAX_KEY:
        raise PoseGraphError(f"{what}: keyframe key must be in [0, 2**62), got {k}")
    return k


def _kernel(params: PoseGraphParams) -> Kernel | None:
    m = gtsam.noiseModel.mEstimator
    c = float(params.loop_kernel_param)
    if params.loop_kernel == "huber":
        return m.Huber.Create(c)
    if params.loop_kernel == "cauchy":
        return m.Cauchy.Create(c)
    if params.loop_kernel == "geman_mcclure":
        return m.GemanMcClure.Create(c)
    if params.loop_kernel == "dcs":
        return m.DCS.Create(c)
    return None


class PoseGraph:
    """Incremental pose graph over keyframes (see the module docstring).

    Not thread-safe: one owner (the node's executor thread) calls it.
    """

    def __init__(self, params: PoseGraphParams | None = None) -> None:
        self.params = params if params is not None else PoseGraphParams()
        self.params.validate()
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every keyframe and factor (a new map frame starts at the next keyframe)."""
        self._factorization = "CHOLESKY"
        self._isam = self._new_isam()
        self._factors = gtsam.NonlinearFactorGraph()  # every factor iSAM2 has accepted
        self._keys: list[int] = []
        self._stamps: dict[int, float] = {}
        self._odom: dict[int, Matrix] = {}
        self._closures: list[_Closure] = []
        self._pending_graph = gtsam.NonlinearFactorGraph()
        self._pending_values = gtsam.Values()
        self._pending_keys: dict[int, gtsam.Pose3] = {}
        self._pending_closure = False
        self._estimate: gtsam.Values | None = None
        self.counters: Counter[str] = Counter()
        """Event counts: ``odom_covariance_<missing|zero|invalid>`` per fallback, ``loop_closures``,
        ``loop_closures_scale_free``, ``updates``, ``isam2_rebuilt_with_qr``."""
        self.last_odom_covariance_problem: str | None = None
        """Why the last rejected (non-zero) odometry covariance was rejected."""

    def __len__(self) -> int:
        return len(self._keys)

    def _new_isam(self) -> gtsam.ISAM2:
        isam_params = gtsam.ISAM2Params()
        isam_params.setRelinearizeThreshold(float(self.params.relinearize_threshold))
        isam_params.relinearizeSkip = int(self.params.relinearize_skip)
        isam_params.setFactorization(self._factorization)
        return gtsam.ISAM2(isam_params)

    def __contains__(self, key: object) -> bool:
        return key in self._stamps

    @property
    def keys(self) -> list[int]:
        """Keyframe keys in the order they were added."""
        return list(self._keys)

    @property
    def pending(self) -> bool:
        """True when factors wait for :meth:`update`."""
        return self._pending_graph.size() > 0

    # ------------------------------------------------------------------ input
    def add_keyframe(
        self,
        key: int,
        stamp: float,
        odom_pose: PoseLike,
        odom_covariance: ArrayLike | None = None,
        *,
        update: bool = True,
    ) -> None:
        """Add a keyframe at its odometry pose (``T_odom_body``) and the odometry factor to the previous one.

        ``odom_covariance``: the 6x6 (or 36-value) covariance of the motion from the
        previous keyframe to this one, ROS order ``[x, y, z, roll, pitch, yaw]`` in the
        odometry frame's axes (as ``nav_msgs/Odometry`` states its pose covariance). None,
        all zeros, or a matrix that is not finite, symmetric and positive definite selects
        the distance-based fallback (counted in ``counters`` by reason, never an error: a
        driver publishing zeros must not stop the graph). An *accumulated* covariance (the
        pose's uncertainty since the start, as robot_localization and the synthetic world
        publish it) is not a step covariance: pass None for it (docs/posegraph.md).
        Raises PoseGraphError for a duplicate or invalid key, a non-finite or older stamp,
        or an invalid pose.
        """
        k = _check_key(key, "add_keyframe")
        if k in self._stamps:
            raise PoseGraphError(f"add_keyframe: keyframe {k} is already in the graph")
        if isinstance(stamp, bool) or not isinstance(stamp, numbers.Real) or not math.isfinite(stamp):
            raise PoseGraphError(f"add_keyframe: keyframe {k}: stamp must be a finite number, got {stamp!r}")
        t = float(stamp)
        if self._keys and t < self._stamps[self._keys[-1]]:
            raise PoseGraphError(
                f"add_keyframe: keyframe {k}: stamp {t:.6f} is older than the previous keyframe's "
                f"({self._stamps[self._keys[-1]]:.6f}); keyframes must come in time order"
            )
        pose = as_matrix(odom_pose, f"add_keyframe: keyframe {k} odometry pose")

        if not self._keys:
            sigmas = np.r_[[self.params.prior_rotation_sigma] * 3, [self.params.prior_translation_sigma] * 3]
            noise = gtsam.noiseModel.Diagonal.Sigmas(sigmas)
            self._pending_graph.add(gtsam.PriorFactorPose3(k, gtsam.Pose3(pose), noise))
            initial = gtsam.Pose3(pose)
        else:
            prev = self._keys[-1]
            step = invert(self._odom[prev]) @ pose
            cov_tangent = self._odometry_covariance(k, step, pose, odom_covariance)
            noise = gtsam.noiseModel.Gaussian.Covariance(cov_tangent)
            measured = gtsam.Pose3(step)
            self._pending_graph.add(gtsam.BetweenFactorPose3(prev, k, measured, noise))
            initial = self._current_pose3(prev).compose(measured)
        self._pending_values.insert(k, initial)
        self._pending_keys[k] = initial
        self._keys.append(k)
        self._stamps[k] = t
        self._odom[k] = pose
        self._estimate = None
        if update:
            self.update()

    def add_loop_closure(
        self,
        match_key: int,
        query_key: int,
        T_match_query: PoseLike,  # noqa: N803 (the team's name for this transform)
        covariance: ArrayLike,
        scale_known: bool,
        *,
        update: bool = True,
    ) -> None:
        """Add a loop closure: the query keyframe's pose in the match keyframe's frame.

        ``T_match_query`` measures ``inv(x_match) @ x_query``. ``covariance``: 6x6 (or 36
        values), ROS order ``[x, y, z, roll, pitch, yaw]`` in the match keyframe's axes
        (see ``conventions.py``). ``scale_known=False`` (monocular) keeps only the rotation
        block: translation gets ``scale_free_translation_sigma`` and no correlation, so the
        unit-length translation cannot impose a scale. Raises PoseGraphError for unknown
        keys, a closure to itself, an invalid pose, or a covariance that is not finite,
        symmetric and positive definite.
        """
        m = _check_key(match_key, "add_loop_closure: match_key")
        q = _check_key(query_key, "add_loop_closure: query_key")
        for name, k in (("match", m), ("query", q)):
            if k not in self._stamps:
                raise PoseGraphError(f"add_loop_closure: {name} keyframe {k} is not in the graph")
        if m == q:
            raise PoseGraphError(f"add_loop_closure: a loop closure from keyframe {m} to itself")
        if not isinstance(scale_known, bool | np.bool_):
            raise PoseGraphError(f"add_loop_closure: scale_known must be a bool, got {scale_known!r}")
        what = f"add_loop_closure {m} -> {q}"
        rel = as_matrix(T_match_query, f"{what}: T_match_query")
        cov = check_covariance(covariance, f"{what}: covariance")
        if not scale_known:
            cov = cov.copy()
            cov[:3, :] = 0.0
            cov[:, :3] = 0.0
            cov[:3, :3] = np.eye(3) * self.params.scale_free_translation_sigma**2
            cov = check_covariance(cov, f"{what}: covariance with the scale-free translation sigma")
        cov_tangent = ros_to_tangent_covariance(cov, rel[:3, :3])
        gaussian = gtsam.noiseModel.Gaussian.Covariance(cov_tangent)
        robust = _kernel(self.params)
        noise = gaussian if robust is None else gtsam.noiseModel.Robust.Create(robust, gaussian)
        measured = gtsam.Pose3(rel)
        self._pending_graph.add(gtsam.BetweenFactorPose3(m, q, measured, noise))
        eig, vec = np.linalg.eigh(cov_tangent)  # positive definite: checked above, J is orthogonal
        information = np.asarray((vec / eig) @ vec.T, dtype=np.float64)
        self._closures.append(_Closure(m, q, bool(scale_known), measured, information, robust))
        self._pending_closure = True
        self.counters["loop_closures"] += 1
        if not scale_known:
            self.counters["loop_closures_scale_free"] += 1
        self._estimate = None
        if update:
            self.update()

    def update(self, iterations: int | None = None) -> None:
        """Give pending factors to iSAM2 and run ``iterations`` steps.

        Default: one step, or ``closure_iterations`` when a loop closure is pending. With
        nothing pending, runs the steps anyway (refines after large corrections).
        """
        if iterations is None:
            iterations = self.params.closure_iterations if self._pending_closure else 1
        if iterations < 1:
            raise PoseGraphError(f"update: iterations must be >= 1, got {iterations}")
        if not self._keys:
            return
        # Steps after a loop closure relinearise every variable that moved past the threshold
        # now (not only every relinearize_skip-th update): the robust weights of closures
        # are recomputed only at relinearisation, and a closure moves many variables at once.
        force = self._pending_closure or iterations > 1
        try:
            self._step(self._pending_graph, self._pending_values, iterations, force)
        except RuntimeError:
            # Cholesky (the fast default) can meet a system it calls indeterminate although every
            # covariance is positive definite: a step covariance mixing 1e-8 and 1 rad^2, say.
            # QR factorises the Jacobian instead of its square and copes (measured up to
            # condition 1e20) at 4-10x the cost, so rebuild with it and go on.
            if self._factorization == "QR":
                raise PoseGraphError(
                    "iSAM2 update failed with QR factorisation too; reset() the graph"
                ) from None
            self._rebuild_with_qr(iterations, force)
        self._factors.push_back(self._pending_graph)
        self._pending_graph = gtsam.NonlinearFactorGraph()
        self._pending_values = gtsam.Values()
        self._pending_keys.clear()
        self._pending_closure = False
        self._estimate = None
        self.counters["updates"] += 1

    def _step(
        self, graph: gtsam.NonlinearFactorGraph, values: gtsam.Values, iterations: int, force: bool
    ) -> None:
        self._isam.update(graph, values, force_relinearize=force)
        for _ in range(iterations - 1):
            self._isam.update(gtsam.NonlinearFactorGraph(), gtsam.Values(), force_relinearize=force)

    def _rebuild_with_qr(self, iterations: int, force: bool) -> None:
        """Replace the failed iSAM2 by a QR one holding every accepted and pending factor."""
        try:
            previous = self._isam.calculateEstimate()
        except RuntimeError:  # the failed instance may not even give its estimate
            previous = gtsam.Values()
        initial = gtsam.Values()
        last: gtsam.Pose3 | None = None
        for k in self._keys:
            if k in self._pending_keys:
                pose = self._pending_keys[k]
            elif previous.exists(k):
                pose = previous.atPose3(k)
            elif last is not None:  # dead reckoning from the previous keyframe
                pose = last.compose(
                    gtsam.Pose3(invert(self._odom[self._keys[self._keys.index(k) - 1]]) @ self._odom[k])
                )
            else:
                pose = gtsam.Pose3(self._odom[k])
            initial.insert(k, pose)
            last = pose
        graph = gtsam.NonlinearFactorGraph()
        graph.push_back(self._factors)
        graph.push_back(self._pending_graph)
        self._factorization = "QR"
        self._isam = self._new_isam()
        self.counters["isam2_rebuilt_with_qr"] += 1
        try:
            self._step(graph, initial, max(iterations, self.params.closure_iterations), True)
        except RuntimeError as exc:
            raise PoseGraphError(
                f"iSAM2 update failed with QR factorisation too ({exc}); reset() the graph"
            ) from exc

    # ------------------------------------------------------------------ output
    def optimized_poses(self) -> dict[int, Matrix]:
        """Key -> optimised 4x4 pose in the map frame (pending keyframes at their initial guess)."""
        est = self._current_estimate()
        # One vectorised read (rows: row-major rotation, then translation, in est.keys() order);
        # a Python loop over atPose3 costs ~2 us a keyframe.
        flat = np.asarray(gtsam.utilities.extractPose3(est), dtype=np.float64).reshape(-1, 12)
        mats = np.tile(np.eye(4), (len(flat), 1, 1))
        mats[:, :3, :3] = flat[:, :9].reshape(-1, 3, 3)
        mats[:, :3, 3] = flat[:, 9:]
        out = dict(zip((int(k) for k in est.keys()), mats, strict=True))  # noqa: SIM118 (Values is no dict)
        for k, pose in self._pending_keys.items():
            out[k] = pose.matrix()
        return {k: out[k] for k in self._keys}

    def optimized_pose(self, key: int) -> Matrix:
        """One keyframe's optimised 4x4 pose in the map frame."""
        k = _check_key(key, "optimized_pose")
        if k not in self._stamps:
            raise PoseGraphError(f"optimized_pose: keyframe {k} is not in the graph")
        return self._current_pose3(k).matrix()

    def odometry_pose(self, key: int) -> Matrix:
        """The 4x4 odometry pose a keyframe was added with."""
        k = _check_key(key, "odometry_pose")
        if k not in self._odom:
            raise PoseGraphError(f"odometry_pose: keyframe {k} is not in the graph")
        return self._odom[k].copy()

    def latest_correction(self) -> Matrix:
        """``T_map_odom`` = optimised latest pose @ inv(its odometry pose); identity when empty.

        Composing it with any later odometry pose gives the corrected pose in the map frame.
        """
        if not self._keys:
            return np.eye(4)
        k = self._keys[-1]
        return self._current_pose3(k).matrix() @ invert(self._odom[k])

    def pose_covariance(self, key: int) -> Matrix:
        """Marginal 6x6 covariance of a keyframe's optimised pose, ROS order, map-frame axes.

        Raises PoseGraphError for an unknown key or one still pending (call update()).
        """
        k = _check_key(key, "pose_covariance")
        if k not in self._stamps:
            raise PoseGraphError(f"pose_covariance: keyframe {k} is not in the graph")
        if k in self._pending_keys:
            raise PoseGraphError(f"pose_covariance: keyframe {k} is pending; call update() first")
        cov = self._isam.marginalCovariance(k)
        rot = self._current_pose3(k).rotation().matrix()
        return tangent_to_ros_covariance(cov, rot)

    def trajectory(self) -> Trajectory:
        """Every keyframe in insertion order at its optimised pose (for a ``nav_msgs/Path``)."""
        poses = self.optimized_poses()
        stack = np.array([poses[k] for k in self._keys]).reshape(-1, 4, 4)
        positions, orientations = position_quaternion(stack)
        keys = np.array(self._keys, dtype=np.int64)
        stamps = np.array([self._stamps[k] for k in self._keys], dtype=np.float64)
        return Trajectory(keys, stamps, positions, orientations)

    def loop_closures(self) -> list[LoopClosureState]:
        """Every loop closure with its residual and robust weight at the current estimate."""
        out = []
        for c in self._closures:
            x_m, x_q = self._current_pose3(c.match_key), self._current_pose3(c.query_key)
            err = gtsam.Pose3.Logmap(c.measured.between(x_m.between(x_q)))
            chi2 = float(err @ c.information @ err)
            weight = 1.0 if c.robust is None else float(c.robust.weight(math.sqrt(chi2)))
            out.append(LoopClosureState(c.match_key, c.query_key, c.scale_known, chi2, weight))
        return out

    def factor_graph(self) -> tuple[gtsam.NonlinearFactorGraph, gtsam.Values]:
        """Copies of the factors given to iSAM2 and of its current estimate (pending ones left out).

        For inspection, ``gtsam.writeG2o`` or a batch optimiser (the benchmark's GNC reference).
        """
        graph = gtsam.NonlinearFactorGraph()
        for i in range(self._isam.getFactorsUnsafe().size()):
            factor = self._isam.getFactorsUnsafe().at(i)
            if factor is not None:
                graph.add(factor)
        values = self._isam.calculateEstimate() if self._isam.size() else gtsam.Values()
        return graph, values

    # ------------------------------------------------------------------ helpers
    def _current_estimate(self) -> gtsam.Values:
        if self._estimate is None:
            self._estimate = self._isam.calculateEstimate() if self._isam.size() else gtsam.Values()
        return self._estimate

    def _current_pose3(self, key: int) -> gtsam.Pose3:
        if key in self._pending_keys:
            return self._pending_keys[key]
        if self._estimate is not None:
            return self._estimate.atPose3(key)
        return self._isam.calculateEstimatePose3(key)

    def _odometry_covariance(
        self, key: int, step: Matrix, pose: Matrix, odom_covariance: ArrayLike | None
    ) -> Matrix:
        """Tangent-order covariance of one odometry step (message covariance or fallback)."""
        reason = "missing"
        if odom_covariance is not None:
            try:
                raw = np.asarray(odom_covariance, dtype=np.float64)
            except (TypeError, ValueError):
                raw, reason = None, "not_numeric"
            if raw is not None:
                if raw.size == 36 and np.all(raw == 0.0):
                    reason = "zero"
                else:
                    try:
                        cov = check_covariance(raw, f"keyframe {key} odometry covariance")
                        # The step's right perturbation is the body perturbation of this pose.
                        return ros_to_tangent_covariance(cov, pose[:3, :3])
                    except PoseGraphError as exc:
                        reason = "invalid"
                        self.last_odom_covariance_problem = str(exc)
        self.counters[f"odom_covariance_{reason}"] += 1
        p = self.params
        dist = float(np.linalg.norm(step[:3, 3]))
        angle = float(np.linalg.norm(gtsam.Rot3.Logmap(gtsam.Rot3(step[:3, :3]))))
        sigma_t = max(p.odom_min_translation_sigma, p.odom_translation_sigma_per_m * dist)
        sigma_r = max(
            p.odom_min_rotation_sigma,
            p.odom_rotation_sigma_per_m * dist + p.odom_rotation_sigma_per_rad * angle,
        )
        return np.diag([sigma_r**2] * 3 + [sigma_t**2] * 3)
