"""Exceptions raised by the pose-graph back end.

Every problem with what a caller feeds the graph (a non-finite pose, a covariance that is
not symmetric positive definite, an unknown or duplicate keyframe key, a loop closure from
a keyframe to itself) is a :class:`PoseGraphError`, raised before anything reaches GTSAM,
so a bad message is reported by name instead of failing deep inside the solver. It is a
``ValueError``, so callers that only care about "this input cannot be used" catch one class.
Invalid parameters raise :class:`PoseGraphParamError`, which is both a ``PoseGraphError`` and
the configuration vocabulary's ``ConfigError`` (what the nodes catch for any bad parameter).
"""

from __future__ import annotations

from netvlad_ros.config import ConfigError


class PoseGraphError(ValueError):
    """Invalid input to the pose graph or its parameters; the message names the problem."""


class PoseGraphParamError(PoseGraphError, ConfigError):
    """A pose-graph parameter has an invalid value (the message names the field)."""
