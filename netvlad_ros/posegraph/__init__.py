"""Pose-graph back end (no ROS): GTSAM iSAM2 over keyframes, loop closures, ATE metrics.

- ``PoseGraph`` / ``PoseGraphParams``: odometry between-factors, robust loop-closure
  between-factors, incremental iSAM2, optimised poses and the map->odom correction.
- ``conventions``: pose forms and the ROS <-> GTSAM covariance conversion.
- ``LiveGraph`` / ``LiveGraphParams``: the graph fed by live streams (odometry, keyframe
  announcements, loop closures that may come before their keyframes); pose_graph_node's core.
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
from netvlad_ros.posegraph.errors import PoseGraphError, PoseGraphParamError
from netvlad_ros.posegraph.graph import (
    LOOP_KERNELS,
    LoopClosureState,
    PoseGraph,
    PoseGraphParams,
    Trajectory,
)
from netvlad_ros.posegraph.live import DOWNWEIGHTED_BELOW, LIVE_REASONS, LiveGraph, LiveGraphParams
from netvlad_ros.posegraph.metrics import ate_rmse, rigid_alignment

__all__ = [
    "DOWNWEIGHTED_BELOW",
    "LIVE_REASONS",
    "LOOP_KERNELS",
    "LiveGraph",
    "LiveGraphParams",
    "LoopClosureState",
    "PoseGraph",
    "PoseGraphError",
    "PoseGraphParamError",
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
