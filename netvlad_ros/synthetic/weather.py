"""Weather and season effects of the synthetic renderer: fog from depth, rain streaks and wet
surfaces, snow cover and falling flakes, autumn leaves on the pavement.

Why: the appearance changes a place-recognition system meets between visits. Each
effect is a pure function of its inputs (seeded), cheap per frame: the precipitation
layers are fixed random fields of twice the image size from which every frame takes a
seeded window (as the sensor noise does), and the ground changes are applied once to
the top-down ground map and cached by the renderer.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["apply_fog", "apply_precipitation", "dress_ground", "flake_field", "streak_field"]


def streak_field(height: int, width: int, seed: int) -> np.ndarray:
    """Rain streaks: float32 (2H, 2W) in [0, 1], short bright slanted lines, motion-blurred."""
    rng = np.random.default_rng([seed, 2626])
    h, w = 2 * height, 2 * width
    out = np.zeros((h, w), np.float32)
    tilt = rng.uniform(-0.25, 0.25)
    n = int(h * w / 260)
    scale = height / 480.0
    for _ in range(n):
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        length = rng.uniform(8.0, 30.0) * scale
        ang = math.pi / 2 + tilt + rng.normal(0.0, 0.04)
        x1, y1 = x + math.cos(ang) * length, y + math.sin(ang) * length
        cv2.line(
            out, (round(x), round(y)), (round(x1), round(y1)), float(rng.uniform(0.35, 1.0)), 1, cv2.LINE_AA
        )
    return cv2.GaussianBlur(out, (0, 0), 0.6)


def flake_field(height: int, width: int, seed: int) -> np.ndarray:
    """Snow flakes: float32 (2H, 2W) alpha in [0, 1], discs of 1-4 px (nearer flakes bigger), soft."""
    rng = np.random.default_rng([seed, 2727])
    h, w = 2 * height, 2 * width
    out = np.zeros((h, w), np.float32)
    scale = height / 480.0
    n = int(h * w / 700)
    radii = rng.choice([1, 1, 1, 2, 2, 3, 4], n) * max(scale, 0.5)
    for r, x, y, a in zip(
        radii, rng.uniform(0, w, n), rng.uniform(0, h, n), rng.uniform(0.5, 1.0, n), strict=True
    ):
        cv2.circle(out, (int(x), int(y)), max(1, round(r)), float(a), -1, cv2.LINE_AA)
    return cv2.GaussianBlur(out, (0, 0), 0.8)


def _crop(field: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    oy, ox = int(rng.integers(height)), int(rng.integers(width))
    return np.ascontiguousarray(field[oy : oy + height, ox : ox + width])


def apply_precipitation(
    img: np.ndarray,
    rain: float,
    snowfall: float,
    light: float,
    streaks: np.ndarray | None,
    flakes: np.ndarray | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Rain streaks (additive, ``rain`` 0-1) and flakes (alpha-blended white, ``snowfall`` 0-1) over
    ``img`` (uint8 BGR); ``light`` (0-1) dims them at night."""
    h, w = img.shape[:2]
    out = img
    if rain > 0 and streaks is not None:
        s = _crop(streaks, h, w, rng) * np.float32(70.0 * rain * (0.35 + 0.65 * light))
        out = cv2.add(out, cv2.merge([s, s, s]), dtype=cv2.CV_8U)
    if snowfall > 0 and flakes is not None:
        a = np.minimum(_crop(flakes, h, w, rng) * np.float32(1.3 * snowfall), 1.0)
        a3 = cv2.merge([a, a, a])
        white = np.float32(240.0 * (0.3 + 0.7 * light))
        out = (out.astype(np.float32) * (1.0 - a3) + white * a3).astype(np.uint8)
    return out


def apply_fog(
    img: np.ndarray,
    depth: np.ndarray,
    fog_m: float,
    fog_bgr: tuple[int, int, int],
    glow: np.ndarray | None = None,
) -> np.ndarray:
    """Depth-dependent attenuation: ``out = img * exp(-depth / fog_m) + fog * (1 - exp(...))``
    (depth +inf: the fog colour). ``glow`` (float32 BGR, optional): light scattered by the fog
    around light sources, added in proportion to the fog."""
    t = np.exp(-np.minimum(depth, 1e4) / np.float32(fog_m)).astype(np.float32)
    t3 = cv2.merge([t, t, t])
    out = img.astype(np.float32) * t3 + np.array(fog_bgr, np.float32) * (1.0 - t3)
    if glow is not None:
        out += glow * (1.0 - t3)
    return np.clip(out, 0, 255).astype(np.uint8)


def dress_ground(
    base: np.ndarray,
    sidewalk: np.ndarray,
    tracks: np.ndarray,
    snow: float,
    rain: float,
    season: str,
    seed: int,
) -> np.ndarray:
    """The ground map (uint8 BGR, unlit) under the weather and season.

    ``snow`` 0-1 whitens pavements fully and roads except the wheel ``tracks`` (slush);
    ``rain`` 0-1 darkens everything (wet asphalt reflects less diffuse light); autumn
    scatters orange and brown leaves on the pavements.
    """
    out = base
    h, w = base.shape[:2]
    rng = np.random.default_rng([seed, 5353])
    if season == "autumn" and snow < 0.5:
        leaves = (rng.random((h, w), np.float32) < 0.09) & sidewalk
        col = np.array([[30, 90, 190], [25, 60, 140], [40, 130, 200]], np.uint8)[
            rng.integers(0, 3, int(leaves.sum()))
        ]
        out = out.copy()
        out[leaves] = col
    if snow > 0:
        small = rng.normal(0.0, 1.0, (h // 16 + 2, w // 16 + 2)).astype(np.float32)
        patch = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        cover = np.clip(snow * (1.15 + 0.25 * patch), 0.0, 1.0)
        cover = np.where(sidewalk, cover, np.where(tracks, cover * 0.25, cover * 0.85)).astype(np.float32)
        white = np.float32(236.0) + 8.0 * rng.standard_normal((h, w), np.float32)
        white = np.stack([white + 6.0, white + 2.0, white], axis=-1)  # a faint blue cast
        c3 = cover[..., None]
        slush = np.where(tracks[..., None], out.astype(np.float32) * 0.45 + white * 0.45, white)
        out = np.clip(out.astype(np.float32) * (1.0 - c3) + slush * c3, 0, 255).astype(np.uint8)
    if rain > 0:
        out = cv2.convertScaleAbs(out, alpha=1.0 - 0.32 * rain, beta=-6.0 * rain)
    return out
