"""``localize_node``: the executable that runs the ``netvlad_localizer`` node (``ros/localizer.py``).

Kept free of heavy imports (rclpy, torch) at module level so the signal handlers of
``ros/runner.py`` are in place before they load: SIGINT or SIGTERM at any moment,
starting, idle, mid-frame or mid-save, ends the process with status 0, no traceback.

Start-up errors (bad parameter, missing or corrupt model or map) print one line to
stderr and exit with status 2.
"""

from __future__ import annotations

import sys
from typing import Any

from netvlad_ros.ros.runner import run

__all__ = ["main"]

_USAGE = """usage: localize_node [--help] [--ros-args ...]

NetVLAD place recognition node 'netvlad_localizer'. Configure it with ROS parameters:
  localize_node --ros-args --params-file config/localize.yaml -p map_path:=/path/to/map
Without --params-file the packaged config/localize.yaml is loaded first (same defaults).
Parameters, topics and services: docs/node.md. Exit status 2: bad parameter, model or map.

parameters:
"""


def _usage() -> str:
    from netvlad_ros.ros.params import describe_parameters

    return _USAGE + describe_parameters()


def with_default_params_file(argv: list[str]) -> list[str]:
    """``argv`` with the packaged localize.yaml loaded first when no ``--params-file`` is given.

    It goes in a ``--ros-args`` block right after the program name, so any later
    ``--params-file`` or ``-p`` on the command line overrides it.
    """
    from netvlad_ros.ros.params import default_params_file

    if "--params-file" in argv:
        return argv
    path = default_params_file()
    if path is None:
        return argv
    return [argv[0], "--ros-args", "--params-file", str(path), "--", *argv[1:]]


def _make_node(context: Any) -> Any:
    from netvlad_ros.ros.localizer import LocalizeNode

    return LocalizeNode(context=context)


def main(argv: list[str] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM. Returns the exit status (2: cannot start)."""
    return run(
        "localize_node",
        list(sys.argv if argv is None else argv),
        _make_node,
        _usage,
        prepare_args=with_default_params_file,
    )


if __name__ == "__main__":
    sys.exit(main())
