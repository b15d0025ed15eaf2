"""The record of one synthetic camera frame with its ground truth (:class:`Frame`).

Why a module of its own: the world renderer (:mod:`.world`) makes frames and the bag
writer (:mod:`.bags`) writes them; both import the record from here, so neither
imports the other (no import cycle).

Frames: ENU metres (x east, y north, z up) about the world's geodetic origin;
orientations are base_link quaternions (x, y, z, w), x forward, z up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Frame"]


@dataclass
class Frame:
    """One rendered camera frame with its ground truth.

    ``position``: camera centre, ENU metres (3,). ``orientation``: base_link
    quaternion (x, y, z, w) in ENU. ``latlonalt``: WGS84 of ``position``.
    """

    index: int
    stamp: float
    image: np.ndarray
    position: np.ndarray
    orientation: np.ndarray
    latlonalt: tuple[float, float, float]

    @property
    def yaw(self) -> float:
        """Heading in radians, from east counter-clockwise."""
        x, y, z, w = self.orientation
        return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
