"""ENU geodesy: pyproj-based conversion vs closed-form WGS84 formulas written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from netvlad_ros.mapdb.geodesy import EnuFrame, enu_to_geodetic, geodetic_to_ecef, geodetic_to_enu

A = 6378137.0  # WGS84 semi-major axis
F = 1 / 298.257223563
E2 = F * (2 - F)


def ecef_closed_form(lat: float, lon: float, h: float) -> np.ndarray:
    phi, lam = math.radians(lat), math.radians(lon)
    n = A / math.sqrt(1 - E2 * math.sin(phi) ** 2)
    return np.array(
        [
            (n + h) * math.cos(phi) * math.cos(lam),
            (n + h) * math.cos(phi) * math.sin(lam),
            (n * (1 - E2) + h) * math.sin(phi),
        ]
    )


def enu_closed_form(lat, lon, h, lat0, lon0, h0) -> np.ndarray:
    d = ecef_closed_form(lat, lon, h) - ecef_closed_form(lat0, lon0, h0)
    p, lm = math.radians(lat0), math.radians(lon0)
    e = -math.sin(lm) * d[0] + math.cos(lm) * d[1]
    nn = -math.sin(p) * math.cos(lm) * d[0] - math.sin(p) * math.sin(lm) * d[1] + math.cos(p) * d[2]
    u = math.cos(p) * math.cos(lm) * d[0] + math.cos(p) * math.sin(lm) * d[1] + math.sin(p) * d[2]
    return np.array([e, nn, u])


ORIGINS = [(48.137, 11.575, 519.0), (-33.8688, 151.2093, 30.0), (64.1466, -21.9426, 10.0), (0.0, 179.9, 0.0)]


@pytest.mark.parametrize("origin", ORIGINS)
def test_enu_matches_closed_form_within_1cm_over_km(origin):
    rng = np.random.default_rng(0)
    lat0, lon0, h0 = origin
    for _ in range(50):
        # points up to ~5 km away, +-200 m height
        lat = lat0 + rng.uniform(-0.045, 0.045)
        lon = lon0 + rng.uniform(-0.045, 0.045)
        h = h0 + rng.uniform(-200, 200)
        got = geodetic_to_enu(lat, lon, h, origin)
        want = enu_closed_form(lat, lon, h, *origin)
        assert np.linalg.norm(got - want) < 0.01, (got, want)
        assert np.linalg.norm(want) > 0  # non-trivial


def test_ecef_known_values():
    # Equator / prime meridian and the north pole: textbook values
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 0.0, 0.0), [A, 0, 0], atol=1e-3)
    b = A * (1 - F)
    np.testing.assert_allclose(geodetic_to_ecef(90.0, 0.0, 0.0), [0, 0, b], atol=1e-3)
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 90.0, 100.0), [0, A + 100, 0], atol=1e-3)


def test_enu_axes_and_distances():
    origin = (45.0, 7.0, 200.0)
    # 1 degree of latitude north is ~111.1 km north, 0 east, slightly down (curvature)
    e, n, u = geodetic_to_enu(45.001, 7.0, 200.0, origin)
    assert abs(e) < 1e-6 and 110.0 < n < 112.0 and -0.01 < u < 0
    e, n, u = geodetic_to_enu(45.0, 7.001, 200.0, origin)
    assert 78.0 < e < 79.5 and abs(n) < 0.01
    e, n, u = geodetic_to_enu(45.0, 7.0, 250.0, origin)
    np.testing.assert_allclose([e, n, u], [0, 0, 50], atol=1e-6)


def test_round_trip():
    origin = (52.52, 13.405, 34.0)
    rng = np.random.default_rng(1)
    enu = rng.uniform(-3000, 3000, size=(100, 3))
    lat, lon, alt = enu_to_geodetic(enu, origin)
    back = geodetic_to_enu(lat, lon, alt, origin)
    np.testing.assert_allclose(back, enu, atol=1e-6)


def test_frame_transform_between_origins_is_exact():
    a, b = EnuFrame(47.0, 8.0, 400.0), EnuFrame(47.01, 8.02, 420.0)
    t = a.transform_to(b)
    np.testing.assert_allclose(t[:3, :3] @ t[:3, :3].T, np.eye(3), atol=1e-12)
    rng = np.random.default_rng(2)
    pts = rng.uniform(-2000, 2000, size=(20, 3))
    lat, lon, alt = a.to_geodetic(pts)
    want = b.to_local(lat, lon, alt)
    np.testing.assert_allclose(pts @ t[:3, :3].T + t[:3, 3], want, atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="latitude"):
        geodetic_to_enu(91.0, 0.0, 0.0, (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="finite"):
        EnuFrame(float("nan"), 0.0, 0.0)
