"""Pose-graph back end (no ROS): GTSAM iSAM2 over keyframes, loop closures, ATE metrics.

- ``PoseGraph`` / ``PoseGraphParams``: odometry between-factors, robust loop-closure
  between-factors, incremental iSAM2, optimised poses and the map->odom correction.
- ``conventions``: pose forms and the ROS <-> GTSAM covariance conversion.
- ``metrics``: absolute trajectory error with optional rigid alignment.
- ``simulation``: seeded loops with drifting odometry and loop closures (tests, benchmarks).

Conventions, defaults and the measurements behind them: docs/posegraph.md.
"""

from netvlad_ros.posegraph.conventions import (
    PoseLike,
    as_matrix,
    check_covariance,
    invert,
    position_quaternion,
    ros_to_tangent_covariance,
    tangent_to_ros_covariance,
)
from netvlad_ros.posegraph.errors import PoseGraphError
from netvlad_ros.posegraph.graph import (
    LOOP_KERNELS,
    LoopClosureState,
    PoseGraph,
    PoseGraphParams,
    Trajectory,
)
from netvlad_ros.posegraph.metrics import ate_rmse, rigid_alignment

__all__ = [
    "LOOP_KERNELS",
    "LoopClosureState",
    "PoseGraph",
    "PoseGraphError",
    "PoseGraphParams",
    "PoseLike",
    "Trajectory",
    "as_matrix",
    "ate_rmse",
    "check_covariance",
    "invert",
    "position_quaternion",
    "rigid_alignment",
    "ros_to_tangent_covariance",
    "tangent_to_ros_covariance",
]
