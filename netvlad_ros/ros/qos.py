"""QoS profiles built from the node's string parameters.

Parameters such as ``image_qos: sensor_data`` pick one of a few named profiles:

==================  ===========  ============  =========================================
name                reliability  durability    use
==================  ===========  ============  =========================================
``sensor_data``     BEST_EFFORT  VOLATILE      camera input: drop late frames, never
                                               block the driver (default depth 5)
``reliable``        RELIABLE     VOLATILE      results (pose, hypotheses, loop closures);
                                               default depth 10
``system_default``  RMW default  RMW default   whatever the RMW picks (depth overrides
                                               only when given)
``latched``         RELIABLE     TRANSIENT_    ``~/map_keyframes``: late subscribers get
(``transient_       LOCAL                      the last message (default depth 1)
local``)
==================  ===========  ============  =========================================

A BEST_EFFORT subscription matches both kinds of publisher, a RELIABLE one only
RELIABLE publishers; so subscribe to cameras with ``sensor_data`` unless you know
the driver publishes RELIABLE. Large raw images over BEST_EFFORT need the Fast DDS
profile in ``config/fastdds_large_data.xml`` (see docs/ros_interface.md).
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_system_default,
)

__all__ = ["QOS_NAMES", "latched_qos", "qos_from_name"]

#: Names :func:`qos_from_name` accepts (lower case; ``-`` is read as ``_``).
QOS_NAMES: tuple[str, ...] = ("sensor_data", "reliable", "system_default", "latched", "transient_local")

_DEFAULT_DEPTH = {"sensor_data": 5, "reliable": 10, "latched": 1, "transient_local": 1}


def _check_depth(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"QoS depth must be an integer >= 1, got {depth!r}")
    return depth


def latched_qos(depth: int = 1) -> QoSProfile:
    """RELIABLE + TRANSIENT_LOCAL + KEEP_LAST(depth): late subscribers receive the last ``depth`` messages.

    Subscribers must use TRANSIENT_LOCAL too to get the stored messages.
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=_check_depth(depth),
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def qos_from_name(name: str, depth: int | None = None) -> QoSProfile:
    """QoS profile for a parameter string (see the module table); ``depth`` overrides the default depth.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or depth < 1.
    """
    if not isinstance(name, str):
        raise ValueError(f"QoS name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key not in QOS_NAMES:
        raise ValueError(f"unknown QoS profile name {name!r}; expected one of: {', '.join(QOS_NAMES)}")
    if depth is not None:
        _check_depth(depth)
    if key == "system_default":
        base = qos_profile_system_default
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST if depth is not None else base.history,
            depth=depth if depth is not None else base.depth,
            reliability=base.reliability,
            durability=base.durability,
        )
    d = depth if depth is not None else _DEFAULT_DEPTH[key]
    if key in ("latched", "transient_local"):
        return latched_qos(d)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=d,
        reliability=ReliabilityPolicy.BEST_EFFORT if key == "sensor_data" else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )
