"""Errors of the sensor layer: unusable sensor data (an image message, a pose sample).

Why a base class of its own: the live node and the offline tools both read sensor
data through :mod:`netvlad_ros.sensors`; each catches :class:`SensorError` (or a
subclass) and decides what a bad sample means to it (the node drops and counts it,
the offline tools turn it into their own ``BuildMapError``). All are ``ValueError``s.
"""

from __future__ import annotations

__all__ = ["PoseError", "PoseOrderError", "SensorError"]


class SensorError(ValueError):
    """Sensor data (or a setting of the code that reads it) cannot be used; the message names the problem."""


class PoseError(SensorError):
    """Pose data cannot be used: a non-finite stamp or position, a bad quaternion, or a pose
    track that is empty or whose parts disagree in length."""


class PoseOrderError(PoseError):
    """A pose sample is older than the newest one already buffered (time went backwards)."""
