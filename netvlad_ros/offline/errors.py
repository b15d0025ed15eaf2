"""Errors of the offline tools (map building and evaluation).

:class:`BuildMapError` is the one error for unusable input to ``build-map`` and
``eval-map`` (a file, a topic, a message type, poses, a setting); the message names the
problem. The pose and image code that the offline tools share with the live node lives
in :mod:`netvlad_ros.sensors` and raises that layer's errors;
:func:`sensor_errors_as_build_map_errors` turns those into :class:`BuildMapError` with
the same message where the offline tools call it, so callers catch one type.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..sensors.errors import SensorError

__all__ = ["BuildMapError", "sensor_errors_as_build_map_errors"]


class BuildMapError(ValueError):
    """Input to map building or evaluation is unusable (file, topic, message type, poses)."""


@contextlib.contextmanager
def sensor_errors_as_build_map_errors() -> Iterator[None]:
    """Re-raise a :class:`~netvlad_ros.sensors.errors.SensorError` from the block as a
    :class:`BuildMapError` with the same message (the original is its ``__cause__``)."""
    try:
        yield
    except SensorError as exc:
        raise BuildMapError(str(exc)) from exc
