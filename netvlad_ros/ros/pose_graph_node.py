"""``pose_graph_node``: the executable that runs the ``netvlad_pose_graph`` node (``ros/pose_graph.py``).

Started, spun and stopped by ``ros/runner.py``, like ``localize_node``: SIGINT or SIGTERM
at any moment ends the process with status 0 and no traceback; a bad parameter prints
one line to stderr and exits with status 2. Kept free of heavy imports at module level
so the signal handlers are in place before rclpy and GTSAM load.
"""

from __future__ import annotations

import sys
from typing import Any

from netvlad_ros.ros.runner import run

__all__ = ["main"]

_USAGE = """usage: pose_graph_node [--help] [--ros-args ...]

Pose-graph back end 'netvlad_pose_graph' (GTSAM iSAM2) for the loop closures of localize_node
in slam mode. Configure it with ROS parameters:
  pose_graph_node --ros-args --params-file config/pose_graph.yaml -r odom:=/wheel/odom
It reads odom, netvlad_localizer/map_keyframes and netvlad_localizer/loop_closures and publishes
~/path, ~/pose, ~/map_to_odom, ~/markers and /diagnostics (docs/ros_interface.md).
Exit status 2: bad parameter.

parameters:
"""


def _usage() -> str:
    from netvlad_ros.ros.params import describe_parameters
    from netvlad_ros.ros.pose_graph import PARAMS

    return _USAGE + describe_parameters(PARAMS)


def _make_node(context: Any) -> Any:
    from netvlad_ros.ros.pose_graph import PoseGraphNode

    return PoseGraphNode(context=context)


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM. Returns the exit status (2: cannot start)."""
    return run("pose_graph_node", list(sys.argv if argv is None else argv), _make_node, _usage, threads=2)


if __name__ == "__main__":
    sys.exit(main())
