"""Street props of the synthetic city: trees that change with the seasons and lamp posts.

Why: the same place must look different in summer (leafy), autumn (orange and red,
thinner crowns), winter (bare branches, snow on them) and spring (light green with
blossom), and at night the street lamps cast pools of light. Facades are fixed
textures, so props are separate objects: seeded positions along the kerbs, drawn per
frame as camera-facing billboards (trees) or projected 3-D lines (lamp posts), depth
tested against the walls and each other, so they also appear in the depth image.

Placement: every side of every block gets a tree every ``tree_spacing_m`` (jittered)
and a lamp every ``lamp_spacing_m``, ``sidewalk_width_m - 0.6`` m (trees) and
``sidewalk_width_m - 0.3`` m (lamps) out from the facade. Tree sprites are drawn at
:data:`SPRITE_PX_PER_M`, one structure per template (trunk and branches from a seeded
recursion) and one foliage set, thinned and coloured by season.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

__all__ = ["LAMP_HEIGHT_M", "SPRITE_PX_PER_M", "TREE_TEMPLATES", "StreetProps", "place_props", "tree_sprite"]

SPRITE_PX_PER_M = 40.0
TREE_TEMPLATES = 10
LAMP_HEIGHT_M = 5.6
LAMP_ARM_M = 1.1
SPRITE_LEVELS = 4

_FOLIAGE = {  # BGR palettes per season; fraction of the crown's leaf blobs kept
    "summer": ([(40, 110, 50), (50, 130, 70), (30, 95, 45), (60, 140, 90), (35, 120, 80)], 1.0),
    "spring": ([(90, 200, 140), (110, 215, 160), (80, 185, 120), (205, 190, 245), (235, 235, 250)], 0.8),
    "autumn": ([(30, 120, 220), (20, 80, 200), (40, 160, 230), (30, 60, 170), (50, 140, 180)], 0.62),
    "winter": ([], 0.0),
}


@dataclass
class StreetProps:
    """Positions of the props (ENU metres) and their per-object variation."""

    tree_xy: np.ndarray  # (N, 2)
    tree_height: np.ndarray  # (N,) metres
    tree_template: np.ndarray  # (N,) int
    tree_flip: np.ndarray  # (N,) bool
    lamp_xy: np.ndarray  # (M, 2) pole foot
    lamp_dir: np.ndarray  # (M, 2) unit vector of the arm (into the street)

    @property
    def lamp_heads(self) -> np.ndarray:
        """(M, 3) positions of the lamp heads: where the light comes from."""
        head = self.lamp_xy + self.lamp_dir * LAMP_ARM_M
        return np.concatenate([head, np.full((len(head), 1), LAMP_HEIGHT_M - 0.15)], axis=1)


def place_props(
    sides: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    sidewalk_width_m: float,
    tree_spacing_m: float,
    lamp_spacing_m: float,
    seed: int,
) -> StreetProps:
    """Seeded props along ``sides``: (start, end, unit normal into the street) of each facade line."""
    rng = np.random.default_rng([seed, 6067])
    txy, th, tt, tf, lxy, ld = [], [], [], [], [], []
    for a, b, n in sides:
        side = float(np.linalg.norm(b - a))
        d = (b - a) / side
        if tree_spacing_m > 0:
            off = max(0.8, sidewalk_width_m - 0.6)
            s = rng.uniform(2.0, 2.0 + tree_spacing_m / 2)
            while s < side - 2.0:
                txy.append(a + d * s + n * (off + rng.uniform(-0.15, 0.15)))
                th.append(rng.uniform(5.0, 9.0))
                tt.append(int(rng.integers(TREE_TEMPLATES)))
                tf.append(bool(rng.random() < 0.5))
                s += tree_spacing_m * rng.uniform(0.8, 1.25)
        if lamp_spacing_m > 0:
            off = max(0.5, sidewalk_width_m - 0.3)
            s = rng.uniform(4.0, 4.0 + lamp_spacing_m / 2)
            while s < side - 3.0:
                lxy.append(a + d * s + n * off)
                ld.append(n.copy())
                s += lamp_spacing_m * rng.uniform(0.9, 1.1)
    return StreetProps(
        tree_xy=np.array(txy, np.float64).reshape(-1, 2),
        tree_height=np.array(th, np.float64),
        tree_template=np.array(tt, np.int64),
        tree_flip=np.array(tf, bool),
        lamp_xy=np.array(lxy, np.float64).reshape(-1, 2),
        lamp_dir=np.array(ld, np.float64).reshape(-1, 2),
    )


def _branches(rng: np.random.Generator, h_px: int, w_px: int) -> tuple[list, list]:
    """Trunk and branch segments ((x0, y0, x1, y1, thickness)) and crown points (x, y)."""
    segs: list[tuple[float, float, float, float, float]] = []
    tips: list[tuple[float, float]] = []
    trunk_top = h_px * rng.uniform(0.35, 0.5)
    x0, y0 = w_px / 2.0, float(h_px - 1)
    thick = max(3.0, w_px * 0.05)
    x1 = x0 + rng.uniform(-0.03, 0.03) * w_px
    segs.append((x0, y0, x1, h_px - trunk_top, thick))

    def grow(x: float, y: float, ang: float, length: float, t: float, depth: int) -> None:
        if depth == 0 or length < 3:
            tips.append((x, y))
            return
        for _ in range(int(rng.integers(2, 4))):
            a = ang + rng.uniform(-0.75, 0.75)
            ln = length * rng.uniform(0.6, 0.85)
            xe, ye = x + math.cos(a) * ln, y - math.sin(a) * ln
            segs.append((x, y, xe, ye, max(1.0, t)))
            grow(xe, ye, a, ln, t * 0.62, depth - 1)

    grow(x1, h_px - trunk_top, math.pi / 2, h_px * 0.22, thick * 0.7, 4)
    return segs, tips


@lru_cache(maxsize=64)
def tree_sprite(seed: int, template: int, season: str, snowy: bool) -> tuple[np.ndarray, ...]:
    """The BGRA sprite pyramid (level 0 at :data:`SPRITE_PX_PER_M`, 8 m tall tree, 0.6 as wide)
    of one tree template in ``season``; ``snowy`` puts snow on the branches (winter)."""
    h_px, w_px = round(8.0 * SPRITE_PX_PER_M), round(4.8 * SPRITE_PX_PER_M)
    rng = np.random.default_rng([seed, template, 3131])
    segs, tips = _branches(rng, h_px, w_px)
    img = np.zeros((h_px, w_px, 3), np.uint8)
    alpha = np.zeros((h_px, w_px), np.uint8)
    bark = tuple(int(v) for v in np.clip(np.array([45, 62, 78]) + rng.integers(-10, 11, 3), 0, 255))
    for x0, y0, x1, y1, t in segs:
        p0, p1 = (round(x0), round(y0)), (round(x1), round(y1))
        cv2.line(img, p0, p1, bark, max(1, round(t)), cv2.LINE_AA)
        cv2.line(alpha, p0, p1, 255, max(1, round(t)), cv2.LINE_AA)
        if snowy and t < 6:  # snow lies on top of the thinner branches
            q0, q1 = (p0[0], p0[1] - 1), (p1[0], p1[1] - 1)
            cv2.line(img, q0, q1, (235, 235, 238), 1, cv2.LINE_AA)
    # foliage: one blob set per template (the same in every season), thinned and recoloured
    leaf_rng = np.random.default_rng([seed, template, 4141])
    blobs = []
    for tx, ty in tips:
        for _ in range(3):
            ox, oy = leaf_rng.normal(0.0, w_px * 0.06, 2)
            blobs.append(
                (tx + ox, ty + oy, leaf_rng.uniform(0.05, 0.09) * w_px, leaf_rng.random(), leaf_rng.random())
            )
    palette, keep = _FOLIAGE[season]
    for bx, by, br, u_keep, u_col in blobs:
        if u_keep >= keep:
            continue
        base = np.array(palette[int(u_col * len(palette)) % len(palette)], np.int32)
        col = tuple(int(v) for v in np.clip(base + leaf_rng.integers(-18, 19, 3), 0, 255))
        c, r = (round(bx), round(by)), max(2, round(br))
        cv2.circle(img, c, r, col, -1, cv2.LINE_AA)
        cv2.circle(alpha, c, r, 255, -1, cv2.LINE_AA)
        # leaf texture: darker speckles inside the blob
        cv2.circle(img, (c[0] + r // 3, c[1] + r // 3), max(1, r // 2), tuple(int(v * 0.75) for v in col), -1)
    levels: list[np.ndarray] = [np.dstack([img, alpha])]
    for _ in range(1, SPRITE_LEVELS):
        prev = levels[-1]
        levels.append(
            cv2.resize(prev, (prev.shape[1] // 2, prev.shape[0] // 2), interpolation=cv2.INTER_AREA)
        )
    return tuple(levels)
