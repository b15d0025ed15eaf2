"""WGS84 geodetic coordinates <-> local East-North-Up (ENU) metres about an origin.

Geodetic -> ECEF uses pyproj (EPSG:4979, 3-D WGS84 lat/lon/ellipsoidal height ->
EPSG:4978, WGS84 geocentric), then the exact ECEF -> ENU rotation about the origin.
No flat-earth approximation is involved, so the result is exact to pyproj's precision
at any distance. Every distance is in metres, angles in degrees, heights are
ellipsoidal (WGS84), not above mean sea level.

pyproj ``Transformer`` objects are not thread safe, so each thread gets its own.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from pyproj import Transformer

_local = threading.local()


def _transformers() -> tuple[Transformer, Transformer]:
    """(geodetic->ECEF, ECEF->geodetic) transformers, one pair per thread."""
    pair = getattr(_local, "pair", None)
    if pair is None:
        fwd = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
        inv = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True)
        pair = (fwd, inv)
        _local.pair = pair
    return pair


def _check_geodetic(lat: np.ndarray, lon: np.ndarray, alt: np.ndarray) -> None:
    if not (np.all(np.isfinite(lat)) and np.all(np.isfinite(lon)) and np.all(np.isfinite(alt))):
        raise ValueError("geodetic coordinates must be finite (lat, lon in degrees, alt in metres)")
    if np.any(np.abs(lat) > 90.0):
        raise ValueError(f"latitude must be within [-90, 90] degrees, got {lat}")
    if np.any(np.abs(lon) > 360.0):
        raise ValueError(f"longitude must be within [-360, 360] degrees, got {lon}")


def geodetic_to_ecef(lat: np.ndarray | float, lon: np.ndarray | float, alt: np.ndarray | float) -> np.ndarray:
    """WGS84 (lat, lon deg, ellipsoidal alt m) -> ECEF metres, shape (..., 3)."""
    lat_a, lon_a, alt_a = np.broadcast_arrays(
        np.asarray(lat, np.float64), np.asarray(lon, np.float64), np.asarray(alt, np.float64)
    )
    _check_geodetic(lat_a, lon_a, alt_a)
    fwd, _ = _transformers()
    x, y, z = fwd.transform(lon_a, lat_a, alt_a)
    return np.stack([np.asarray(x), np.asarray(y), np.asarray(z)], axis=-1)


def ecef_to_geodetic(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ECEF metres (..., 3) -> (lat deg, lon deg, ellipsoidal alt m)."""
    xyz = np.asarray(xyz, np.float64)
    if xyz.shape[-1] != 3 or not np.all(np.isfinite(xyz)):
        raise ValueError(f"ECEF coordinates must be finite with a last axis of 3, got shape {xyz.shape}")
    _, inv = _transformers()
    lon, lat, alt = inv.transform(xyz[..., 0], xyz[..., 1], xyz[..., 2])
    return np.asarray(lat), np.asarray(lon), np.asarray(alt)


def enu_rotation(lat: float, lon: float) -> np.ndarray:
    """3x3 rotation R with rows (east, north, up) so that enu = R @ (ecef - ecef_origin)."""
    phi, lam = math.radians(lat), math.radians(lon)
    sp, cp, sl, cl = math.sin(phi), math.cos(phi), math.sin(lam), math.cos(lam)
    return np.array(
        [
            [-sl, cl, 0.0],
            [-sp * cl, -sp * sl, cp],
            [cp * cl, cp * sl, sp],
        ]
    )


@dataclass(frozen=True)
class EnuFrame:
    """A local ENU frame (x east, y north, z up, metres) about a WGS84 origin."""

    lat: float
    lon: float
    alt: float

    def __post_init__(self) -> None:
        _check_geodetic(np.asarray(self.lat), np.asarray(self.lon), np.asarray(self.alt))

    @property
    def rotation(self) -> np.ndarray:
        """ECEF -> ENU rotation (3x3)."""
        return enu_rotation(self.lat, self.lon)

    @property
    def origin_ecef(self) -> np.ndarray:
        """Origin in ECEF metres, shape (3,)."""
        return geodetic_to_ecef(self.lat, self.lon, self.alt)

    def to_local(
        self, lat: np.ndarray | float, lon: np.ndarray | float, alt: np.ndarray | float
    ) -> np.ndarray:
        """Geodetic -> ENU metres about this origin, shape (..., 3)."""
        ecef = geodetic_to_ecef(lat, lon, alt)
        enu: np.ndarray = (ecef - self.origin_ecef) @ self.rotation.T
        return enu

    def to_geodetic(self, enu: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ENU metres (..., 3) about this origin -> (lat deg, lon deg, alt m)."""
        enu = np.asarray(enu, np.float64)
        if enu.shape[-1] != 3:
            raise ValueError(f"ENU coordinates need a last axis of 3, got shape {enu.shape}")
        ecef = enu @ self.rotation + self.origin_ecef
        return ecef_to_geodetic(ecef)

    def transform_to(self, other: EnuFrame) -> np.ndarray:
        """4x4 rigid transform taking points in this ENU frame to ``other``'s ENU frame.

        Exact (ECEF based): p_other = R_o (R_s^T p + ecef_s - ecef_o).
        """
        r_s, r_o = self.rotation, other.rotation
        t = np.eye(4)
        t[:3, :3] = r_o @ r_s.T
        t[:3, 3] = r_o @ (self.origin_ecef - other.origin_ecef)
        return t


def geodetic_to_enu(
    lat: np.ndarray | float,
    lon: np.ndarray | float,
    alt: np.ndarray | float,
    origin: tuple[float, float, float],
) -> np.ndarray:
    """Geodetic -> ENU metres about ``origin`` (lat, lon, alt)."""
    return EnuFrame(*origin).to_local(lat, lon, alt)


def enu_to_geodetic(
    enu: np.ndarray, origin: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ENU metres about ``origin`` -> (lat deg, lon deg, alt m)."""
    return EnuFrame(*origin).to_geodetic(enu)
