"""A deterministic synthetic world for demos and tests of visual place recognition.

Why: tests and demos need image sequences with exact ground-truth poses, depth and GPS,
revisits under appearance change (another day, night, fog, rain, snow, another season),
and loops, without shipping data sets. From a seed this module builds either a city
(``scene="street"``: a grid of blocks lined with procedurally textured building facades,
each one distinct: wall material, window grids with curtains, shop signs with text,
awnings; optionally street trees and lamp posts) or an indoor-like building
(``scene="corridor"``: corridors with doors, room numbers, posters, notice boards,
a tiled floor and a ceiling with light panels), and renders a pinhole camera moving
through it. Rendering is a per-column ray cast against the wall segments (a vertical
wall per column, like a 2.5-D ray caster) followed by per-pixel texture look-ups with
mip-mapping, textured ground (and ceiling) planes, a sky with clouds, props as depth-
tested billboards, then lighting and weather passes that use the depth image.

Frames (docs/synthetic_world.md): ENU metres (x east, y north, z up) about a fixed
geodetic origin; a pose is the body origin (the camera centre) and the base_link
orientation (x forward, y left, z up; yaw from east, counter-clockwise) as a quaternion
(x, y, z, w). The camera looks along base_link +x with zero pitch and roll; its optical
frame is ``frames.T_BODY_OPTICAL``. Depth is Z along the optical axis. GPS comes from the
exact ENU -> ECEF -> WGS84 transform (``mapdb.geodesy``, pyproj based).
"""

from __future__ import annotations

import dataclasses
import math
import string
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from ..mapdb.features import CameraIntrinsics
from ..mapdb.geodesy import EnuFrame
from . import corridor, props, weather
from .conditions import Appearance, Condition, condition_appearance
from .frames import Frame
from .lighting import light_map
from .odometry import OdometryNoise, drift_frames

__all__ = [
    "DEFAULT_ORIGIN",
    "SCENES",
    "Appearance",
    "SyntheticWorld",
    "WorldConfig",
]

DEFAULT_ORIGIN: tuple[float, float, float] = (47.3769, 8.5417, 408.0)  # Zurich: lat, lon, alt (WGS84)
TRAVERSAL_KINDS = ("mapping", "query", "loop")
SCENES = ("street", "corridor")


# --------------------------------------------------------------------------- data classes


@dataclass
class WorldConfig:
    """Everything that defines a world; the same config always gives the same world.

    Lengths in metres. The city is ``blocks_x`` x ``blocks_y`` square blocks of
    ``block_size_m`` separated by streets ``street_width_m`` wide (facade to
    facade), enclosed by a ring of buildings. ``px_per_m`` is the facade texture
    resolution; ``lane_offset_m`` is how far right of the street centreline the
    camera drives. ``tree_spacing_m`` / ``lamp_spacing_m`` put street trees / lamp posts
    along every kerb at about that spacing (0 = none, the default, which keeps the
    worlds of earlier versions pixel for pixel; 12 and 24 look like a city street).

    ``scene="corridor"`` builds an indoor-like world on the same grid: blocks are rooms,
    streets corridors, every wall reaches ``ceiling_height_m`` and the sky is a ceiling;
    use :meth:`corridors` for sizes that fit (it sets width, texture resolution, speed).
    """

    seed: int = 0
    width: int = 640
    height: int = 480
    fov_deg: float = 70.0
    blocks_x: int = 3
    blocks_y: int = 3
    block_size_m: float = 60.0
    street_width_m: float = 16.0
    sidewalk_width_m: float = 2.5
    building_width_m: tuple[float, float] = (7.0, 18.0)
    building_height_m: tuple[float, float] = (8.0, 22.0)
    camera_height_m: float = 1.6
    lane_offset_m: float = 2.5
    px_per_m: float = 16.0
    speed_mps: float = 5.0
    start_time: float = 1_700_000_000.0
    origin: tuple[float, float, float] = DEFAULT_ORIGIN
    scene: str = "street"
    tree_spacing_m: float = 0.0
    lamp_spacing_m: float = 0.0
    ceiling_height_m: float = 2.8

    @classmethod
    def corridors(cls, seed: int = 0, **overrides: object) -> WorldConfig:
        """An indoor-like world: 2.6 m corridors round 18 m rooms, 2.8 m ceilings, a camera at
        1.5 m walking at 1.4 m/s 0.3 m right of the centre, walls textured at 64 px/m."""
        values: dict[str, object] = {
            "scene": "corridor", "block_size_m": 18.0, "street_width_m": 2.6, "sidewalk_width_m": 0.0,
            "building_width_m": (3.0, 8.0), "building_height_m": (2.8, 2.8), "camera_height_m": 1.5,
            "lane_offset_m": 0.3, "px_per_m": 64.0, "speed_mps": 1.4, "ceiling_height_m": 2.8,
        }  # fmt: skip
        values.update(overrides)
        return cls(seed=seed, **values)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Raise ValueError naming the first field that makes no sense."""
        indoor = self.scene == "corridor"
        checks = [
            ("scene", self.scene in SCENES),
            ("width", self.width >= 16),
            ("height", self.height >= 16),
            ("fov_deg", 10.0 <= self.fov_deg <= 150.0),
            ("blocks_x", self.blocks_x >= 1),
            ("blocks_y", self.blocks_y >= 1),
            ("block_size_m", self.block_size_m >= (4.0 if indoor else 20.0)),
            ("street_width_m", (1.2 if indoor else 6.0) <= self.street_width_m <= 60.0),
            ("sidewalk_width_m", 0.0 <= self.sidewalk_width_m < self.street_width_m / 2),
            ("building_width_m", (1.0 if indoor else 3.0) <= self.building_width_m[0] <= self.building_width_m[1]),
            ("building_height_m", (2.0 if indoor else 4.0) <= self.building_height_m[0] <= self.building_height_m[1]),
            ("ceiling_height_m", 2.0 <= self.ceiling_height_m <= 20.0),
            ("camera_height_m", 0.2 <= self.camera_height_m < (self.ceiling_height_m if indoor else self.building_height_m[0])),
            ("lane_offset_m", abs(self.lane_offset_m) < self.street_width_m / 2 - (0.3 if indoor else 1.0)),
            ("px_per_m", 4.0 <= self.px_per_m <= 64.0),
            ("speed_mps", self.speed_mps > 0),
            ("tree_spacing_m", self.tree_spacing_m == 0.0 or self.tree_spacing_m >= 3.0),
            ("lamp_spacing_m", self.lamp_spacing_m == 0.0 or self.lamp_spacing_m >= 5.0),
        ]  # fmt: skip
        for name, ok in checks:
            if not ok:
                raise ValueError(f"WorldConfig.{name} is out of range: {getattr(self, name)!r}")


def yaw_to_quaternion(yaw: float) -> np.ndarray:
    """Rotation about ENU z by ``yaw`` as a quaternion (x, y, z, w)."""
    return np.array([0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)])


# --------------------------------------------------------------------------- facade textures

_WALL_COLOURS = [  # BGR
    (150, 190, 215), (170, 205, 230), (200, 215, 225), (90, 105, 150), (70, 80, 125), (160, 160, 160),
    (120, 125, 130), (185, 200, 175), (170, 185, 215), (200, 185, 170), (140, 175, 200), (110, 150, 185),
    (205, 205, 195), (90, 120, 110), (180, 170, 205), (100, 140, 210), (130, 110, 95), (215, 225, 235),
]  # fmt: skip
_ACCENT_COLOURS = [
    (40, 40, 200), (30, 140, 30), (200, 80, 30), (20, 180, 230), (150, 40, 120), (30, 30, 30),
    (240, 240, 240), (0, 100, 200), (120, 60, 20), (180, 180, 40), (60, 20, 120), (90, 200, 90),
]  # fmt: skip
_FONTS = [
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
]


def _col(rng: np.random.Generator, palette: Sequence[tuple[int, int, int]], jitter: int = 18) -> tuple:
    base = np.array(palette[int(rng.integers(len(palette)))], dtype=np.int32)
    return tuple(int(v) for v in np.clip(base + rng.integers(-jitter, jitter + 1, 3), 0, 255))


def _wall(rng: np.random.Generator, h: int, w: int, ppm: float) -> np.ndarray:
    """Wall base: plaster, brick, panels or stone, in a random colour."""
    colour = np.array(_col(rng, _WALL_COLOURS, 20), dtype=np.float32)
    kind = int(rng.integers(4))
    img = np.empty((h, w, 3), np.float32)
    img[:] = colour
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 0:  # plaster: blotchy low-frequency stains
        small = rng.normal(0.0, 1.0, (h // 20 + 2, w // 20 + 2)).astype(np.float32)
        stain = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) * rng.uniform(6, 16)
        img += stain[..., None]
    elif kind in (1, 3):  # brick / stone courses with per-unit tone
        bh = max(2, round(ppm * (0.18 if kind == 1 else 0.45)))
        bw = max(4, round(ppm * (0.45 if kind == 1 else 0.9)))
        row = yy // bh
        colidx = (xx + (row % 2) * (bw // 2)) // bw
        tone = rng.normal(0.0, 12.0, (row.max() + 1, colidx.max() + 2)).astype(np.float32)
        img += tone[row, colidx][..., None]
        mortar = ((yy % bh) == 0) | (((xx + (row % 2) * (bw // 2)) % bw) == 0)
        img[mortar] = img[mortar] * 0.55 + 90
    else:  # concrete panels
        ph, pw = max(4, round(ppm * rng.uniform(1.2, 3.0))), max(4, round(ppm * rng.uniform(1.5, 3.5)))
        tone = rng.normal(0.0, 8.0, (h // ph + 1, w // pw + 1)).astype(np.float32)
        img += tone[yy // ph, xx // pw][..., None]
        img[((yy % ph) == 0) | ((xx % pw) == 0)] *= 0.6
    img += rng.normal(0.0, 3.0, (h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _window(
    rng: np.random.Generator, img: np.ndarray, x0: int, y0: int, x1: int, y1: int, style: dict
) -> None:
    """One window with frame, glass reflection gradient, mullions, curtains/blinds, shutters."""
    if x1 - x0 < 3 or y1 - y0 < 3:
        return
    if style.get("record") is not None:  # for the night (lit windows) and snow (sills) layers
        style["record"].append(("win", x0, y0, x1, y1))
        style["record"].append(("ledge", x0 - 1, y1 - 1, x1 + 1, y1 + max(1, style["frame_t"])))
    if style["shutters"] and rng.random() < 0.85:
        sw = max(1, (x1 - x0) // 2)
        cv2.rectangle(img, (x0 - sw, y0), (x0 - 1, y1), style["shutter"], -1)
        cv2.rectangle(img, (x1 + 1, y0), (x1 + sw, y1), style["shutter"], -1)
        for yy in range(y0 + 1, y1, 2):
            cv2.line(img, (x0 - sw, yy), (x0 - 1, yy), (0, 0, 0), 1)
            cv2.line(img, (x1 + 1, yy), (x1 + sw, yy), (0, 0, 0), 1)
    glass = np.array(style["glass"], np.float32)
    t = np.linspace(0.0, 1.0, y1 - y0, dtype=np.float32)[:, None, None]
    refl = rng.uniform(0.2, 0.9)
    pane = glass * (0.6 + 0.8 * refl * (1.0 - t)) + rng.normal(0, 4, (1, 1, 3))
    img[y0:y1, x0:x1] = np.clip(pane, 0, 255).astype(np.uint8)
    r = rng.random()
    ww, wh = x1 - x0, y1 - y0
    if r < style["curtain_p"]:  # curtains on one or both sides, or half drawn from the top
        c = style["curtains"][int(rng.integers(len(style["curtains"])))]
        mode = int(rng.integers(3))
        if mode == 0:
            cv2.rectangle(img, (x0, y0), (x0 + int(ww * rng.uniform(0.2, 0.5)), y1), c, -1)
            cv2.rectangle(img, (x1 - int(ww * rng.uniform(0.2, 0.5)), y0), (x1, y1), c, -1)
        elif mode == 1:
            cv2.rectangle(img, (x0, y0), (x1, y0 + int(wh * rng.uniform(0.2, 0.8))), c, -1)
        else:
            cv2.rectangle(img, (x0, y0), (x0 + int(ww * rng.uniform(0.3, 0.9)), y1), c, -1)
    elif r < style["curtain_p"] + 0.12:  # blinds
        yb = y0 + int(wh * rng.uniform(0.3, 1.0))
        cv2.rectangle(img, (x0, y0), (x1, yb), (200, 205, 210), -1)
        for yy in range(y0, yb, 2):
            cv2.line(img, (x0, yy), (x1, yy), (150, 150, 150), 1)
    elif r < style["curtain_p"] + 0.17:  # lit room
        cv2.rectangle(img, (x0, y0), (x1, y1), (120, 210, 245), -1)
    th = style["frame_t"]
    cv2.rectangle(img, (x0, y0), (x1, y1), style["frame"], th)
    if style["mullion"] in (1, 2):
        cv2.line(img, ((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1), style["frame"], th)
    if style["mullion"] == 2:
        cv2.line(img, (x0, y0 + wh // 3), (x1, y0 + wh // 3), style["frame"], th)
    cv2.rectangle(img, (x0 - 1, y1), (x1 + 1, y1 + max(1, th)), style["sill"], -1)
    if rng.random() < 0.08:  # flower pot on the sill
        cx = int(rng.integers(x0, x1 + 1))
        cv2.ellipse(img, (cx, y1 - 1), (max(2, ww // 5), max(2, wh // 6)), 0, 180, 360, (40, 140, 60), -1)


def _sign(rng: np.random.Generator, img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    """Shop sign: a coloured board (rectangle, rounded or oval) with random text."""
    bg = _col(rng, _ACCENT_COLOURS, 30)
    fg = (255, 255, 255) if sum(bg) < 360 else (20, 20, 20)
    shape = int(rng.integers(3))
    if shape == 0:
        cv2.rectangle(img, (x0, y0), (x1, y1), bg, -1)
    elif shape == 1:
        cv2.ellipse(
            img, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, bg, -1
        )
    else:
        cv2.rectangle(img, (x0, y0), (x1, y1), bg, -1)
        cv2.rectangle(img, (x0, y0), (x1, y1), fg, 1)
    text = "".join(rng.choice(list(string.ascii_uppercase + "  &"), int(rng.integers(3, 9)))).strip() or "BAR"
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = min(0.8 * (x1 - x0) / max(tw, 1), 0.7 * (y1 - y0) / max(th, 1))
    if scale * th < 4:
        return
    thick = 1 if scale < 1.2 else 2
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    org = ((x0 + x1 - tw) // 2, (y0 + y1 + th) // 2)
    cv2.putText(img, text, org, font, scale, fg, thick, cv2.LINE_AA)


def _facade(
    rng: np.random.Generator, w_m: float, h_m: float, ppm: float, record: list | None = None
) -> np.ndarray:
    """A complete, unique building facade texture (rows top to bottom), BGR uint8.

    ``record`` (optional) collects ``("win" | "ledge", x0, y0, x1, y1)`` texel rectangles of
    the windows and of the horizontal ledges (sills, cornice, bands, awnings, sign tops); it
    draws nothing from ``rng``, so the texture is the same with or without it."""
    w, h = max(8, round(w_m * ppm)), max(8, round(h_m * ppm))
    img = _wall(rng, h, w, ppm)
    px = lambda m: round(m * ppm)  # noqa: E731
    style: dict[str, Any] = {
        "frame": _col(
            rng, [(240, 240, 240), (40, 40, 40), (30, 60, 100), (60, 100, 40), (200, 200, 190)], 10
        ),
        "frame_t": int(rng.integers(1, 3)),
        "glass": _col(rng, [(90, 70, 50), (110, 100, 80), (70, 60, 60), (120, 110, 100)], 15),
        "sill": _col(rng, [(220, 220, 220), (150, 150, 150), (100, 130, 160)], 10),
        "mullion": int(rng.integers(3)),
        "shutters": rng.random() < 0.3,
        "shutter": _col(rng, [(50, 110, 50), (60, 80, 130), (120, 70, 40), (180, 180, 170)], 15),
        "curtain_p": rng.uniform(0.15, 0.6),
        "curtains": [_col(rng, _ACCENT_COLOURS + _WALL_COLOURS, 40) for _ in range(3)],
    }
    style["record"] = record
    ledges = record if record is not None else []
    ground = rng.uniform(3.5, 5.0)
    floor_h = rng.uniform(2.8, 3.6)
    n_floors = max(0, int((h_m - ground - 0.8) / floor_h))
    pitch = rng.uniform(2.2, 4.0)
    n_cols = max(1, int((w_m - 1.0) / pitch))
    pitch = (w_m - 1.0) / n_cols
    win_w = pitch * rng.uniform(0.35, 0.6)
    win_h = floor_h * rng.uniform(0.42, 0.62)
    # cornice and floor bands
    band = _col(rng, _WALL_COLOURS, 30)
    cornice = px(rng.uniform(0.3, 0.9))
    cv2.rectangle(img, (0, 0), (w - 1, cornice), band, -1)
    ledges.append(("ledge", 0, 0, w - 1, max(2, cornice // 2)))
    bands = rng.random() < 0.5
    for f in range(n_floors):
        fy0 = h_m - ground - (f + 1) * floor_h  # metres from the top of the floor band
        if bands:
            y = px(fy0 + floor_h)
            cv2.rectangle(img, (0, y - 1), (w - 1, y + 1), band, -1)
            ledges.append(("ledge", 0, y - 1, w - 1, y))
        balcony = rng.random() < 0.15
        for c in range(n_cols):
            cx = 0.5 + (c + 0.5) * pitch
            x0, x1 = px(cx - win_w / 2), px(cx + win_w / 2)
            y0 = px(fy0 + (floor_h - win_h) * 0.55)
            y1 = y0 + px(win_h)
            _window(rng, img, x0, y0, x1, y1, style)
            if balcony:
                cv2.rectangle(img, (x0 - 2, y1 - px(0.9)), (x1 + 2, y1 + 1), style["frame"], 1)
                ledges.append(("ledge", x0 - 2, y1 - px(0.9) - 1, x1 + 2, y1 - px(0.9)))
                for xx in range(x0, x1, 3):
                    cv2.line(img, (xx, y1 - px(0.9)), (xx, y1), style["frame"], 1)
    # ground floor: shop fronts or residential entrances
    gy0, gy1 = h - px(ground), h - 1
    n_units = int(rng.integers(1, 4))
    edges = np.linspace(0, w, n_units + 1).astype(int)
    for u in range(n_units):
        ux0, ux1 = edges[u] + px(0.3), edges[u + 1] - px(0.3)
        if ux1 - ux0 < px(1.5):
            continue
        if rng.random() < 0.7:  # shop
            door_w = px(rng.uniform(0.9, 1.4))
            door_x = int(rng.integers(ux0, max(ux0 + 1, ux1 - door_w)))
            sy0, sy1 = gy0 + px(0.3), gy0 + px(rng.uniform(0.9, 1.3))
            win_style = dict(style, curtain_p=0.0, shutters=False, mullion=int(rng.integers(2)))
            _window(rng, img, ux0, sy1 + px(0.3), ux1, gy1 - px(0.5), win_style)
            for _ in range(int(rng.integers(2, 7))):  # goods in the shop window
                gx = int(rng.integers(ux0, ux1))
                gw, gh = px(rng.uniform(0.2, 0.8)), px(rng.uniform(0.2, 1.0))
                cv2.rectangle(
                    img, (gx, gy1 - px(0.5) - gh), (gx + gw, gy1 - px(0.5)), _col(rng, _ACCENT_COLOURS), -1
                )
            cv2.rectangle(
                img, (door_x, sy1 + px(0.5)), (door_x + door_w, gy1), _col(rng, _ACCENT_COLOURS, 30), -1
            )
            cv2.rectangle(img, (door_x, sy1 + px(0.5)), (door_x + door_w, gy1), (20, 20, 20), 1)
            _sign(rng, img, ux0, sy0, ux1, sy1)
            ledges.append(("ledge", ux0, sy0 - 1, ux1, sy0))
            if rng.random() < 0.45:  # striped awning with a scalloped edge
                c1, c2 = _col(rng, _ACCENT_COLOURS, 20), _col(rng, [(235, 235, 235), (40, 40, 40)], 10)
                ay0, ay1 = sy1 + 1, sy1 + px(rng.uniform(0.6, 1.0))
                ledges.append(("ledge", ux0, ay0, ux1, ay0 + max(1, px(0.12))))
                stripe = max(2, px(0.35))
                for xs in range(ux0, ux1, stripe):
                    cv2.rectangle(
                        img, (xs, ay0), (min(xs + stripe, ux1), ay1), c1 if (xs // stripe) % 2 else c2, -1
                    )
                for xs in range(ux0, ux1, stripe):
                    cv2.circle(img, (xs + stripe // 2, ay1), stripe // 2, c1, -1)
        else:  # residential entrance: arched door, two small windows
            dw = px(rng.uniform(1.2, 1.8))
            dx = (ux0 + ux1 - dw) // 2
            dcol = _col(rng, [(30, 50, 90), (40, 40, 40), (50, 90, 30), (20, 20, 120)], 15)
            cv2.rectangle(img, (dx, gy0 + px(1.2)), (dx + dw, gy1), dcol, -1)
            cv2.ellipse(img, (dx + dw // 2, gy0 + px(1.2)), (dw // 2, dw // 2), 0, 180, 360, dcol, -1)
            for sx in (ux0 + px(0.4), ux1 - px(1.4)):
                _window(rng, img, sx, gy0 + px(1.0), sx + px(1.0), gy0 + px(2.4), style)
        if rng.random() < 0.25:  # poster / graffiti
            pw, ph_ = px(rng.uniform(0.5, 1.2)), px(rng.uniform(0.7, 1.5))
            pxx = int(rng.integers(0, max(1, w - pw)))
            cv2.rectangle(
                img, (pxx, gy1 - px(0.4) - ph_), (pxx + pw, gy1 - px(0.4)), _col(rng, _ACCENT_COLOURS, 60), -1
            )
            cv2.circle(
                img,
                (pxx + pw // 2, gy1 - px(0.4) - ph_ // 2),
                max(1, pw // 3),
                _col(rng, _ACCENT_COLOURS),
                -1,
            )
    cv2.rectangle(img, (0, h - px(0.35)), (w - 1, h - 1), _col(rng, [(90, 90, 90), (120, 130, 140)], 15), -1)
    # street furniture drawn on the facade plane: trees and lamp posts
    for _ in range(int(rng.integers(0, 3))):
        tx = int(rng.integers(0, w))
        if rng.random() < 0.6:
            crown_h = rng.uniform(3.5, 6.5)
            r = px(rng.uniform(1.2, 2.4))
            cv2.rectangle(img, (tx - 2, h - px(crown_h)), (tx + 2, h - 1), (40, 60, 80), -1)
            green = np.array(_col(rng, [(40, 110, 50), (50, 130, 90), (30, 90, 60), (60, 140, 110)], 20))
            for _ in range(14):
                ox, oy = rng.normal(0, r * 0.45, 2)
                g = tuple(int(v) for v in np.clip(green + rng.integers(-25, 26, 3), 0, 255))
                cv2.circle(img, (int(tx + ox), int(h - px(crown_h) + oy)), max(2, int(r * 0.55)), g, -1)
        else:
            top = h - px(rng.uniform(4.5, 6.0))
            cv2.line(img, (tx, top), (tx, h - 1), (45, 45, 45), 2)
            cv2.line(img, (tx, top), (tx + px(0.8), top), (45, 45, 45), 2)
            cv2.circle(img, (tx + px(0.8), top + 2), 2, (200, 230, 240), -1)
    return img


# --------------------------------------------------------------------------- the world


class SyntheticWorld:
    """A seeded world of textured blocks (a city or a building) and a camera that moves through it.

    Construction builds the wall segments and a mip-mapped texture atlas
    (about a second for the default 3 x 3 blocks). ``render`` draws one view,
    ``render_rgbd`` the view and its aligned depth; ``traversal`` drives a route and
    returns frames with poses, GPS, intrinsics and (optionally) depth and drifting odometry.
    """

    MIP_LEVELS = 4
    PROP_RANGE_M = 110.0  # props farther than this are not drawn (under 30 px tall at 640x480)

    def __init__(self, config: WorldConfig) -> None:
        config.validate()
        self.config = config
        c = config
        self.indoor = c.scene == "corridor"
        self.pitch_m = c.block_size_m + c.street_width_m
        self.grid_x = np.arange(c.blocks_x + 1) * self.pitch_m  # street centrelines
        self.grid_y = np.arange(c.blocks_y + 1) * self.pitch_m
        f = (c.width / 2.0) / math.tan(math.radians(c.fov_deg) / 2.0)
        self._K = np.array([[f, 0.0, (c.width - 1) / 2.0], [0.0, f, (c.height - 1) / 2.0], [0.0, 0.0, 1.0]])
        self.camera = CameraIntrinsics(
            fx=float(f), fy=float(f), cx=(c.width - 1) / 2.0, cy=(c.height - 1) / 2.0, width=c.width,
            height=c.height, distortion_model="plumb_bob", distortion=(0.0, 0.0, 0.0, 0.0, 0.0),
        )  # fmt: skip
        self._ground_res = 0.05 if self.indoor else 0.1
        self._records: list[list] = []
        self._build_geometry()
        self._ground_cache: OrderedDict = OrderedDict()
        self._ceiling_cache: OrderedDict = OrderedDict()
        self._noise_field: np.ndarray | None = None
        self._extra: np.ndarray | None = None  # lit windows A, B and snow ledges, packed like the atlas
        self._streaks: np.ndarray | None = None
        self._flakes: np.ndarray | None = None
        self.props = self._place_props()
        if self.indoor:
            self.lights_xy, self.lights_set = corridor.ceiling_lights(
                self.grid_x, self.grid_y, self.bounds, 3.0, c.seed
            )

    # ------------------------------------------------------------------ construction

    def _build_geometry(self) -> None:
        c = self.config
        rng = np.random.default_rng([c.seed, 7919])
        half = c.street_width_m / 2.0
        polys: list[tuple[list[tuple[float, float]], bool]] = []
        for i in range(c.blocks_x):  # blocks, counter-clockwise (normals point out, into the streets)
            for j in range(c.blocks_y):
                x0, x1 = self.grid_x[i] + half, self.grid_x[i + 1] - half
                y0, y1 = self.grid_y[j] + half, self.grid_y[j + 1] - half
                polys.append(([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], True))
        x0, x1 = self.grid_x[0] - half, self.grid_x[-1] + half  # enclosing ring, clockwise (normals in)
        y0, y1 = self.grid_y[0] - half, self.grid_y[-1] + half
        polys.append(([(x0, y0), (x0, y1), (x1, y1), (x1, y0)], False))
        p0s: list[np.ndarray] = []
        p1s: list[np.ndarray] = []
        heights: list[float] = []
        offsets: list[int] = []
        textures: list[np.ndarray] = []
        col = 0
        ppm = c.px_per_m
        self._sides: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for block, (verts, _) in enumerate(polys):
            style = (
                corridor.corridor_style(np.random.default_rng([c.seed, block, 1201]), block)
                if self.indoor
                else None
            )
            for k in range(4):
                a, b = np.array(verts[k]), np.array(verts[(k + 1) % 4])
                side = float(np.linalg.norm(b - a))
                d = (b - a) / side
                self._sides.append((a, b, np.array([d[1], -d[0]])))
                drawn: list[float] = []
                while sum(drawn) < side:
                    drawn.append(rng.uniform(*c.building_width_m))
                widths = np.array(drawn) * side / sum(drawn)
                s = 0.0
                for wm in widths:
                    tex_rng = np.random.default_rng([c.seed, len(textures), 104729])
                    if style is not None:
                        hm = c.ceiling_height_m
                        tex = corridor.corridor_wall(tex_rng, wm, hm, ppm, style)
                        self._records.append([])
                    else:
                        hm = rng.uniform(*c.building_height_m)
                        record: list = []
                        tex = _facade(tex_rng, wm, hm, ppm, record)
                        self._records.append(record)
                    p0s.append(a + d * s)
                    p1s.append(a + d * (s + wm))
                    heights.append(hm)
                    offsets.append(col)
                    textures.append(tex)
                    col += tex.shape[1]
                    s += wm
        self.seg_p0 = np.array(p0s)
        self.seg_p1 = np.array(p1s)
        self.seg_e = self.seg_p1 - self.seg_p0
        self.seg_len = np.linalg.norm(self.seg_e, axis=1)
        self.seg_normal = np.stack([self.seg_e[:, 1], -self.seg_e[:, 0]], axis=1) / self.seg_len[:, None]
        self.seg_height = np.array(heights)
        self.seg_offset = np.array(offsets)
        self.seg_tex_w = np.array([t.shape[1] for t in textures])
        self._tex_h = np.array([t.shape[0] for t in textures])
        atlas_h = int(math.ceil((max(t.shape[0] for t in textures) + 1) / 8.0) * 8)
        atlas_w = int(math.ceil(col / 8.0) * 8)
        atlas = np.zeros((atlas_h, atlas_w, 3), np.uint8)
        for off, tex in zip(offsets, textures, strict=True):
            atlas[atlas_h - tex.shape[0] :, off : off + tex.shape[1]] = tex
        self._atlas_h = atlas.shape[0]
        self._packed, self._strip_row = self._pack_atlas(atlas)
        self.bounds = (x0, y0, x1, y1)
        self._ground_base = self._make_ground_map()

    STRIP_W = 4096  # atlas strips keep cv2.remap sources below its 32767-pixel coordinate limit

    def _pack_atlas(self, atlas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mip-map an atlas and fold every level into strips stacked in one image.

        Column u of level l lives in strip u // STRIP_W at rows ``strip_row[l] + strip * H_l``.
        Each strip carries one extra column (the next strip's first) so bilinear reads never
        fall off a strip. Returns (packed image, strip_row per level).
        """
        strip_w = self.STRIP_W
        levels = [atlas]
        for _ in range(1, self.MIP_LEVELS):
            prev = levels[-1]
            levels.append(
                cv2.resize(prev, (prev.shape[1] // 2, prev.shape[0] // 2), interpolation=cv2.INTER_AREA)
            )
        blocks: list[np.ndarray] = []
        rows = [0]
        for lv in levels:
            n = -(-lv.shape[1] // strip_w)
            padded = np.zeros((lv.shape[0], n * strip_w + 1, *lv.shape[2:]), np.uint8)
            padded[:, : lv.shape[1]] = lv
            blocks.extend(padded[:, k * strip_w : k * strip_w + strip_w + 1] for k in range(n))
            rows.append(rows[-1] + n * lv.shape[0])
        return np.ascontiguousarray(np.concatenate(blocks, axis=0)), np.array(rows[:-1], np.float64)

    def _extra_atlas(self) -> np.ndarray:
        """The night and snow layer, packed like the facade atlas (built on first use):
        channel 0 and 1: emission of two seeded sets of lit windows, 2: snow-bearing ledges."""
        if self._extra is None:
            c = self.config
            atlas_w = self._packed_width()
            extra = np.zeros((self._atlas_h, atlas_w, 3), np.uint8)
            for idx, record in enumerate(self._records):
                off, base = int(self.seg_offset[idx]), self._atlas_h - int(self._tex_h[idx])
                lit_rng = np.random.default_rng([c.seed, idx, 5151])
                for kind, x0, y0, x1, y1 in record:
                    ys = slice(base + max(y0, 0), base + y1 + 1)
                    xs = slice(off + max(x0, 0), off + x1 + 1)
                    if kind == "ledge":
                        extra[ys, xs, 2] = 255
                        continue
                    u, level = lit_rng.random(), int(lit_rng.integers(150, 256))
                    big = (x1 - x0) * (y1 - y0) > 4 * c.px_per_m**2  # shop windows: lit more often
                    if u < (0.6 if big else 0.3):
                        extra[ys, xs, 0] = level
                    if 1.0 - u < (0.6 if big else 0.3):
                        extra[ys, xs, 1] = level
            self._extra, _ = self._pack_atlas(extra)
        return self._extra

    def _packed_width(self) -> int:
        return int(math.ceil((int(self.seg_offset[-1]) + int(self.seg_tex_w[-1])) / 8.0) * 8)

    def _place_props(self) -> props.StreetProps:
        c = self.config
        if self.indoor:
            return props.place_props([], 0.0, 0.0, 0.0, c.seed)
        return props.place_props(self._sides, c.sidewalk_width_m, c.tree_spacing_m, c.lamp_spacing_m, c.seed)

    def _make_ground_map(self) -> np.ndarray:
        """Top-down ground colour (unlit, BGR uint8) of the whole world at ``_ground_res`` metres.

        Streets: asphalt with noise, dashed centre lines, paved sidewalks along the facades
        (the masks of the sidewalks and of the wheel tracks are kept for snow). Corridors:
        the tiled floor. Rendering warps it into the image with the ground-plane homography.
        """
        c = self.config
        res = self._ground_res
        x0, y0, x1, y1 = self.bounds
        w, h = math.ceil((x1 - x0) / res) + 1, math.ceil((y1 - y0) / res) + 1
        if self.indoor:
            self._sidewalk = self._tracks = np.zeros((1, 1), bool)
            return corridor.floor_map((h, w), res, (x0, y0), self.pitch_m, c.seed)
        rng = np.random.default_rng([c.seed, 31337])
        gx = (x0 + (np.arange(w, dtype=np.float32) + 0.5) * res)[None, :]
        gy = (y0 + (np.arange(h, dtype=np.float32) + 0.5) * res)[:, None]
        half, p = c.street_width_m / 2.0, self.pitch_m
        dx = np.abs((gx + p / 2.0) % p - p / 2.0)  # distance to the nearest north-south centreline
        dy = np.abs((gy + p / 2.0) % p - p / 2.0)
        in_v, in_h = dx < half, dy < half
        walk = half - c.sidewalk_width_m
        sidewalk = (
            (in_v & ~in_h & (dx > walk))
            | (in_h & ~in_v & (dy > walk))
            | (in_v & in_h & (dx > walk) & (dy > walk))
        )
        line = (in_v & ~in_h & (dx < 0.08) & ((gy % 6.0) < 3.0)) | (
            in_h & ~in_v & (dy < 0.08) & ((gx % 6.0) < 3.0)
        )
        lo, hi = c.lane_offset_m - 0.8, c.lane_offset_m + 0.8  # wheel tracks either side of each lane centre
        track_v = (np.abs(dx - lo) < 0.25) | (np.abs(dx - hi) < 0.25)
        track_h = (np.abs(dy - lo) < 0.25) | (np.abs(dy - hi) < 0.25)
        self._tracks = (in_v & ~in_h & track_v) | (in_h & ~in_v & track_h)
        self._sidewalk = sidewalk
        coarse = cv2.resize(rng.normal(0.0, 1.0, (h // 40 + 2, w // 40 + 2)).astype(np.float32), (w, h),
                            interpolation=cv2.INTER_CUBIC)  # fmt: skip
        g = np.where(sidewalk, 150.0, 88.0).astype(np.float32) + 7.0 * rng.standard_normal((h, w), np.float32)
        g += 8.0 * coarse
        g = np.where(sidewalk & (((gx % 0.6) < 0.1) | ((gy % 0.6) < 0.1)), g - 25.0, g)
        g = np.where(line, 215.0, g)
        out = np.repeat(g[..., None], 3, axis=2)
        out[..., 0] += np.where(sidewalk, -6.0, 4.0).astype(np.float32)  # warm paving, cool asphalt
        out = np.clip(out, 0, 255).astype(np.uint8)
        for tx, ty in self._place_props().tree_xy:  # tree pits: dark soil squares under the trees
            i, j = int((tx - x0) / res), int((ty - y0) / res)
            cv2.rectangle(out, (i - 6, j - 6), (i + 6, j + 6), (40, 55, 70), -1)
        return out

    GROUND_RES = 0.1  # metres per ground-map pixel at level 0 (streets; corridors: 0.05)
    GROUND_LEVELS = 3  # ground mip levels, each 4x coarser

    def _mips(self, img: np.ndarray) -> list[np.ndarray]:
        levels = [img]
        for _ in range(1, self.GROUND_LEVELS):
            prev = levels[-1]
            levels.append(
                cv2.resize(prev, (prev.shape[1] // 4, prev.shape[0] // 4), interpolation=cv2.INTER_AREA)
            )
        return levels

    def _lit_ground(self, app: Appearance) -> tuple[list[np.ndarray], float]:
        """Ground mip levels (uint8) lit by ``app``'s sun, with building shadows (filled shadow
        polygons), dressed for its weather and season (snow, wet, autumn leaves)."""
        sun = 0.0 if self.indoor else app.sun_strength
        leaves = "autumn" if app.season == "autumn" and self.props.tree_xy.size else ""
        # snow and rain in steps of 0.1: a few ground maps serve every condition (each takes ~0.1 s)
        dressing = (0.0, 0.0, "") if self.indoor else (round(app.snow, 1), round(app.rain, 1), leaves)
        key = (round(sun, 6), round(app.sun_azimuth_rad, 6), round(app.sun_elevation_rad, 6), dressing)
        if key in self._ground_cache:
            self._ground_cache.move_to_end(key)
            return self._ground_cache[key]
        ambient = 1.0 - 0.5 * sun  # all light factors stay <= 1; exposure is the gain's job
        base = self._ground_base
        if dressing != (0.0, 0.0, ""):
            base = weather.dress_ground(base, self._sidewalk, self._tracks, *dressing, seed=self.config.seed)
        if sun > 0:
            res = self._ground_res
            x0, y0, _, _ = self.bounds
            sm = np.zeros(base.shape[:2], np.uint8)
            away = -np.array([math.cos(app.sun_azimuth_rad), math.sin(app.sun_azimuth_rad)])
            for p0, p1, hb in zip(self.seg_p0, self.seg_p1, self.seg_height, strict=True):
                length = hb / math.tan(app.sun_elevation_rad)
                quad = np.array([p0, p1, p1 + away * length, p0 + away * length])
                cv2.fillPoly(
                    sm, [np.round((quad - [x0, y0]) / res * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4
                )
            direct = (1.0 - ambient) * math.sin(app.sun_elevation_rad)
            light = np.where(sm > 0, ambient, ambient + direct).astype(np.float32)
            lit = cv2.multiply(base, cv2.merge([light, light, light]), dtype=cv2.CV_8U)
        else:
            lit = cv2.convertScaleAbs(base, alpha=ambient)
        out = (self._mips(lit), self._ground_res)
        self._ground_cache[key] = out
        if len(self._ground_cache) > 3:
            self._ground_cache.popitem(last=False)
        return out

    def _ceiling(self, lit_set: int) -> tuple[list[np.ndarray], float]:
        """Ceiling mip levels (BGRA: A is the light panels' emission) with the panels of
        ``lit_set`` on (0: all; 1, 2, 3: the seeded subsets that stay on at night)."""
        if lit_set in self._ceiling_cache:
            return self._ceiling_cache[lit_set]
        x0, y0, _, _ = self.bounds
        on = self._lights_on(lit_set)
        img = corridor.ceiling_map(self._ground_base.shape[:2], self._ground_res, (x0, y0), self.lights_xy, on,
                                   self.config.seed)  # fmt: skip
        out = (self._mips(img), self._ground_res)
        self._ceiling_cache[lit_set] = out
        return out

    def _lights_on(self, lit_set: int) -> np.ndarray:
        if lit_set == 0:
            return np.ones(len(self.lights_xy), bool)
        return (self.lights_set & lit_set) > 0

    @property
    def intrinsics(self) -> np.ndarray:
        """Pinhole camera matrix K (3, 3) of the rendered images (also ``camera.matrix``)."""
        return self._K.copy()

    @property
    def route_length_m(self) -> float:
        """Length of the mapping route's centreline polyline (metres)."""
        nodes = self._route_nodes("mapping")
        return float(np.sum(np.linalg.norm(np.diff(nodes, axis=0), axis=1)))

    # ------------------------------------------------------------------ ray casting

    def _cast(
        self,
        origins: np.ndarray,
        dirs: np.ndarray,
        exclude: np.ndarray | None = None,
        candidates: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nearest facade hit per ray. origins/dirs (N, 2); ``candidates``: the segment indices worth
        testing (culling), default all. Returns (t, segment, s in [0,1]); t = inf on a miss."""
        idx = np.arange(self.seg_e.shape[0]) if candidates is None else candidates
        if idx.size == 0:
            n = origins.shape[0]
            return np.full(n, np.inf), np.zeros(n, np.int64), np.zeros(n)
        q = self.seg_p0[idx][None, :, :] - origins[:, None, :]  # (N, segments, 2)
        e = self.seg_e[idx][None, :, :]
        d = dirs[:, None, :]
        den = d[..., 0] * e[..., 1] - d[..., 1] * e[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / den
            t = (q[..., 0] * e[..., 1] - q[..., 1] * e[..., 0]) * inv
            s = (q[..., 0] * d[..., 1] - q[..., 1] * d[..., 0]) * inv
        ok = (t > 1e-4) & (s >= 0.0) & (s <= 1.0)
        if exclude is not None:
            ok &= idx[None, :] != exclude[:, None]
        t = np.where(ok, t, np.inf)
        k = np.argmin(t, axis=1)
        rows = np.arange(t.shape[0])
        return t[rows, k], idx[k], s[rows, k]

    def _visible_segments(self, pos: np.ndarray, fwd: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Indices of the facades that face the camera and may fall inside the horizontal field of view."""
        tan_half = self._K[0, 2] / self._K[0, 0] * 1.02 + 1e-3
        rel0, rel1 = self.seg_p0 - pos, self.seg_p1 - pos
        facing = np.einsum("ij,ij->i", self.seg_normal, -rel0) > 0
        z0, z1 = rel0 @ fwd, rel1 @ fwd
        x0, x1 = rel0 @ right, rel1 @ right
        in_front = (z0 > 0) | (z1 > 0)
        both_front = (z0 > 0) & (z1 > 0)
        left_out = both_front & (x0 < -tan_half * z0) & (x1 < -tan_half * z1)
        right_out = both_front & (x0 > tan_half * z0) & (x1 > tan_half * z1)
        return np.nonzero(facing & in_front & ~left_out & ~right_out)[0]

    # ------------------------------------------------------------------ rendering

    def render(
        self,
        position_xy: tuple[float, float] | np.ndarray,
        yaw_rad: float,
        appearance: Appearance | None = None,
    ) -> np.ndarray:
        """Render the view from ``position_xy`` (ENU metres, camera at camera_height_m) looking along
        ``yaw_rad`` (from east, counter-clockwise). Returns a height x width x 3 uint8 BGR image."""
        return self._render(position_xy, yaw_rad, appearance, want_depth=False)[0]

    def render_rgbd(
        self,
        position_xy: tuple[float, float] | np.ndarray,
        yaw_rad: float,
        appearance: Appearance | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The view of :meth:`render` (the same image) and its aligned depth.

        Depth: float32 (height, width), metres along the optical axis (the Z coordinate in
        the camera optical frame, not the ray length) of the surface each pixel shows, at
        the pixel centre; ``+inf`` where the pixel sees the sky (REP 118: no return, too far).
        """
        image, depth = self._render(position_xy, yaw_rad, appearance, want_depth=True)
        assert depth is not None
        return image, depth

    def _render(
        self,
        position_xy: tuple[float, float] | np.ndarray,
        yaw_rad: float,
        appearance: Appearance | None,
        want_depth: bool,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        app = appearance if appearance is not None else Appearance()
        app.validate()
        pos = np.asarray(position_xy, dtype=np.float64).reshape(-1)[:2]
        if pos.shape != (2,) or not np.all(np.isfinite(pos)) or not math.isfinite(yaw_rad):
            raise ValueError(f"render: position {position_xy!r} and yaw {yaw_rad!r} must be finite")
        x0, y0, x1, y1 = self.bounds
        if not (x0 < pos[0] < x1 and y0 < pos[1] < y1):
            raise ValueError(f"render: position {tuple(pos)} is outside the world bounds {self.bounds}")
        if self.indoor:  # no sun, weather or season indoors
            app = dataclasses.replace(app, sun_strength=0.0, fog_m=0.0, rain=0.0, snow=0.0, snowfall=0.0)
        c = self.config
        img_h, img_w = c.height, c.width
        fx, fy, cx, cy = self._K[0, 0], self._K[1, 1], self._K[0, 2], self._K[1, 2]
        fwd = np.array([math.cos(yaw_rad), math.sin(yaw_rad)])
        right = np.array([math.sin(yaw_rad), -math.cos(yaw_rad)])
        xs = (np.arange(img_w) - cx) / fx
        dirs = fwd[None, :] + xs[:, None] * right[None, :]  # unit forward component: t is depth
        t, seg, s = self._cast(
            np.repeat(pos[None, :], img_w, axis=0), dirs, None, self._visible_segments(pos, fwd, right)
        )
        hit = np.isfinite(t)
        z = np.where(hit, t, 1e6)
        rng = np.random.default_rng([c.seed, app.seed, 4242])
        sun = app.sun_strength
        ambient = 1.0 - 0.5 * sun  # all light factors stay <= 1; exposure is the gain's job
        sun_h = np.array([math.cos(app.sun_azimuth_rad), math.sin(app.sun_azimuth_rad)])
        cos_el, sin_el = math.cos(app.sun_elevation_rad), math.sin(app.sun_elevation_rad)
        sky_h = np.array(app.sky_horizon_bgr, np.float32)
        night = app.night
        glowing = night > 0 or self.indoor
        # light emitted (lit windows, lamp heads, ceiling panels): added after the lighting pass
        emission = np.zeros((img_h, img_w, 3), np.float32) if glowing else None

        horizon = math.floor(cy) + 1  # first row strictly below the horizon
        rows = np.arange(img_h, dtype=np.float64)
        with np.errstate(divide="ignore"):
            plane = np.where(rows >= horizon, c.camera_height_m * fy / (rows - cy), np.inf)
            if self.indoor:
                plane = np.where(
                    rows < horizon, (c.ceiling_height_m - c.camera_height_m) * fy / (cy - rows), plane
                )
        img = np.empty((img_h, img_w, 3), np.uint8)
        ceiling_light = None
        if self.indoor:
            img[:horizon], ceiling_light = self._ceiling_rows(pos, fwd, right, horizon, app, sky_h)
        else:
            img[:horizon] = self._sky(app, yaw_rad, xs, horizon, fy, cy)
        if horizon < img_h:
            img[horizon:] = self._ground(pos, fwd, right, horizon, app, sky_h)

        mask = np.zeros((img_h, img_w), bool)
        if hit.any():
            img, mask = self._walls(
                img, pos, dirs, t, z, seg, s, hit, app, sun, ambient, sun_h, cos_el, sin_el, sky_h, emission
            )
        if ceiling_light is not None and emission is not None:  # lit panels the walls do not hide
            a = ceiling_light * (~mask[:horizon]).astype(np.float32)
            emission[:horizon] = cv2.merge(
                [a * np.float32(v) for v in (0.85 * 235.0, 0.85 * 240.0, 0.85 * 245.0)]
            )
        has_props = bool(self.props.tree_xy.size or self.props.lamp_xy.size)
        need_depth = want_depth or has_props or app.occluders > 0 or glowing or app.fog_m > 0
        occ = (
            np.where(mask, z.astype(np.float32)[None, :], np.float32(np.inf)) if need_depth else None
        )  # walls
        prop_depth = None
        if has_props and occ is not None:
            walls_only = occ.copy()
            self._draw_props(img, occ, emission, pos, yaw_rad, app, ambient, sky_h)
            prop_depth = np.where(occ < walls_only, occ, np.float32(np.inf))
        occluded = None
        if app.occluders:
            occluded = self._draw_occluders(
                img, app, rng, np.where(hit, t, np.inf), fx, fy, cx, cy, occ is not None, prop_depth, emission
            )
        depth = None if occ is None else np.minimum(occ, plane.astype(np.float32)[:, None])
        if depth is not None and occluded is not None:
            depth = np.where(np.isfinite(occluded), occluded, depth)
        fx_rng = np.random.default_rng([c.seed, app.seed, 4243])  # new effects: their own stream
        glow = None
        if glowing and depth is not None and emission is not None:
            img, glow = self._light(img, depth, emission, pos, yaw_rad, app)
        if app.fog_m > 0 and depth is not None:
            img = weather.apply_fog(img, depth, app.fog_m, app.fog_bgr, glow)
        if app.rain > 0 or app.snowfall > 0:
            if app.rain > 0 and self._streaks is None:
                self._streaks = weather.streak_field(img_h, img_w, c.seed)
            if app.snowfall > 0 and self._flakes is None:
                self._flakes = weather.flake_field(img_h, img_w, c.seed)
            img = weather.apply_precipitation(
                img, app.rain, app.snowfall, app.daylight, self._streaks, self._flakes, fx_rng
            )
        return self._finish(img, app, rng), depth

    def _walls(
        self, img, pos, dirs, t, z, seg, s, hit, app, sun, ambient, sun_h, cos_el, sin_el, sky_h, emission
    ):
        """Facades: per-column texture strip, mip level and lighting; per-pixel remap of the atlas.
        Returns the image and the wall mask; adds lit windows to ``emission`` at night."""
        c = self.config
        img_h, img_w = img.shape[:2]
        fy, cy = self._K[1, 1], self._K[1, 2]
        ppm = c.px_per_m
        strip_w = self.STRIP_W
        seg_len = self.seg_len[seg]
        u_m = s * seg_len
        rate_v = ppm * z / fy  # texels per pixel, vertically
        du = np.abs(np.gradient(u_m)) * ppm
        du = np.where(np.abs(np.gradient(seg.astype(np.float64))) > 0, rate_v, du)
        lvl = np.clip(np.floor(np.log2(np.maximum(np.maximum(rate_v, du), 1e-6))), 0, self.MIP_LEVELS - 1)
        scale = 2.0**lvl
        u_full = self.seg_offset[seg] + np.clip(u_m * ppm, 0.5, self.seg_tex_w[seg] - 0.5)
        u_l = u_full / scale - 0.5
        strip = np.floor(np.maximum(u_l, 0) / strip_w)
        h_l = np.floor(self._atlas_h / scale)
        map_x = (u_l - strip * strip_w).astype(np.float32)
        # row (continuous) in the full-res atlas for image row y: atlas_h - hgt * ppm
        base = self._strip_row[lvl.astype(np.int64)] + strip * h_l
        a = base + (self._atlas_h - c.camera_height_m * ppm - cy * rate_v) / scale - 0.5
        b = rate_v / scale
        rows = np.arange(img_h, dtype=np.float32)[:, None]
        map_y = a.astype(np.float32)[None, :] + rows * b.astype(np.float32)[None, :]
        map_xx = np.ascontiguousarray(np.broadcast_to(map_x, (img_h, img_w)))
        wall = cv2.remap(self._packed, map_xx, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        lit_windows = None
        if not self.indoor and (app.snow > 0 or (app.night > 0 and app.lit_windows)):
            extra = cv2.remap(
                self._extra_atlas(), map_xx, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
            )
            if app.snow > 0:  # snow on the sills, cornices, bands and awnings
                cover = extra[..., 2].astype(np.float32) * np.float32(app.snow / 255.0)
                c3 = cv2.merge([cover, cover, cover])
                wall = (wall.astype(np.float32) * (1.0 - c3) + np.float32(238.0) * c3).astype(np.uint8)
            if app.night > 0 and app.lit_windows:
                sets = [extra[..., ch] for bit, ch in ((1, 0), (2, 1)) if app.lit_windows & bit]
                lit_windows = sets[0] if len(sets) == 1 else cv2.max(sets[0], sets[1])  # uint8
        # wall rows: from the roof line down to the ground line, per column
        bh = self.seg_height[seg]
        top = np.where(hit, cy - (bh - c.camera_height_m) * fy / z, img_h + 1.0)
        bottom = np.where(hit, cy + c.camera_height_m * fy / z, -1.0)
        yy = rows  # pixel centres
        mask = (yy >= top[None, :]) & (yy < bottom[None, :])
        # lighting: Lambert on the wall and shadows cast by buildings across the street
        n = self.seg_normal[seg]
        lam = np.maximum(0.0, (n @ sun_h) * cos_el)
        fog = 1.0 - np.exp(-z / app.haze_m)
        wet = 1.0 - 0.12 * app.rain if app.rain > 0 else 1.0
        k_amb = (ambient * (1.0 - fog) * wet).astype(np.float32)
        if sun > 0:
            k_lit = ((ambient + (1.0 - ambient) * lam) * (1.0 - fog) * wet).astype(np.float32)
            facing = hit & (lam > 0)
            shadow_row = np.full(img_w, -1.0)  # pixels at rows above this are lit
            shadow_row[facing] = img_h + 1.0
            if facing.any():
                p = pos[None, :] + t[:, None] * dirs + n * 0.01
                toward = np.nonzero(self.seg_normal @ sun_h < 0)[0]  # walls a sun ray can hit from the front
                ts, sseg, _ = self._cast(
                    p[facing], np.repeat(sun_h[None, :], int(facing.sum()), 0), seg[facing], toward
                )
                with np.errstate(invalid="ignore"):
                    sh = np.where(np.isfinite(ts), self.seg_height[sseg] - ts * sin_el / cos_el, -1e9)
                shadow_row[facing] = cy + (c.camera_height_m - sh) * fy / z[facing]
            k = np.where(yy < shadow_row[None, :], k_lit[None, :], k_amb[None, :])
        else:
            k = np.ascontiguousarray(np.broadcast_to(k_amb[None, :], (img_h, img_w)))
        haze = np.ascontiguousarray(
            np.broadcast_to((sky_h[None, :] * fog[:, None]).astype(np.uint8), (img_h, img_w, 3))
        )
        shaded = cv2.add(
            cv2.multiply(wall, cv2.merge([k, k, k]), dtype=cv2.CV_8U), haze
        )  # OpenCV: fast, saturating
        if lit_windows is not None and emission is not None and lit_windows.any():
            # emission = lit * night * (1 - haze) * lamp colour * 230 * (0.35 + 0.65 * texture): curtains tint it
            scale = (1.0 - fog).astype(np.float32) * np.float32(app.night * 230.0 / 255.0**3)
            lw = cv2.multiply(
                lit_windows.astype(np.float32),
                np.ascontiguousarray(np.broadcast_to(scale, lit_windows.shape)),
            )
            lw = cv2.multiply(lw, mask.astype(np.float32))
            glass = cv2.addWeighted(wall, 0.65, wall, 0.0, 0.35 * 255.0, dtype=cv2.CV_32F)
            tint = cv2.merge([lw * np.float32(v) for v in app.lamp_bgr])
            emission += cv2.multiply(glass, tint)
        return cv2.copyTo(shaded, mask.astype(np.uint8), img), mask

    def _sky(
        self, app: Appearance, yaw: float, xs: np.ndarray, rows: int, fy: float, cy: float
    ) -> np.ndarray:
        """Sky rows 0..rows-1: horizon-to-zenith gradient with clouds from a panorama fixed in azimuth."""
        pano = _sky_panorama(
            tuple(app.sky_top_bgr), tuple(app.sky_horizon_bgr), app.cloud_cover, app.cloud_seed,
            float(app.cloud_brightness),
        )  # fmt: skip
        ph, pw = pano.shape[0], pano.shape[1] - 1
        az = (yaw - np.arctan(xs)) % (2.0 * math.pi)
        elev = np.arctan2(cy - np.arange(rows), fy)
        map_x = (az / (2.0 * math.pi) * pw).astype(np.float32)
        map_y = np.clip(elev / _SKY_ELEV_MAX * (ph - 1), 0, ph - 1).astype(np.float32)
        mx = np.ascontiguousarray(np.broadcast_to(map_x[None, :], (rows, xs.size)))
        my = np.ascontiguousarray(np.broadcast_to(map_y[:, None], (rows, xs.size)))
        return cv2.remap(pano, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def _plane(
        self, levels: list[np.ndarray], res: float, pos, fwd, right, row0: int, row1: int, height: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows row0..row1-1 of a horizontal plane ``height`` metres below the camera (negative:
        above, a ceiling), warped from its top-down map by the plane homography, mip level by
        depth band. Returns the rows and their depth."""
        c = self.config
        img_w = c.width
        fx, fy, cx, cy = self._K[0, 0], self._K[1, 1], self._K[0, 2], self._K[1, 2]
        x0, y0, _, _ = self.bounds
        out = np.empty((row1 - row0, img_w, *levels[0].shape[2:]), np.uint8)
        rows = np.arange(row0, row1, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            zg = height * fy / (rows - cy)
            footprint = zg * zg / (abs(height) * fy)  # metres of plane per pixel row
            lvl = np.clip(np.floor(np.log(np.maximum(np.nan_to_num(footprint, nan=1e9) / (2.0 * res), 1e-9))
                                   / math.log(4.0)) + 1, 0, self.GROUND_LEVELS - 1).astype(np.int64)  # fmt: skip
        for lv in range(self.GROUND_LEVELS):
            band = np.nonzero(lvl == lv)[0]
            if band.size == 0:
                continue
            r0, r1 = int(band[0]), int(band[-1]) + 1
            rl = res * 4**lv
            # image (u, v') -> map pixel, v = v' + row0 + r0: X * (v - cy) = pos*(v - cy) + h*fy*(fwd + right*(u-cx)/fx)
            hom = np.zeros((3, 3))
            for i, (p, f_, r_, o) in enumerate(
                ((pos[0], fwd[0], right[0], x0), (pos[1], fwd[1], right[1], y0))
            ):
                hom[i, 0] = height * fy * r_ / fx
                hom[i, 1] = p - o
                hom[i, 2] = (p - o) * (row0 + r0 - cy) + height * fy * (f_ - r_ * cx / fx)
                hom[i] /= rl
            hom[2] = [0.0, 1.0, row0 + r0 - cy]
            hom[:2] -= 0.5 * hom[2]  # map pixel centres sit at integer coordinates
            out[r0:r1] = cv2.warpPerspective(levels[lv], hom, (img_w, r1 - r0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                             borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        return out, zg

    def _haze(self, out: np.ndarray, zg: np.ndarray, app: Appearance, sky_h: np.ndarray) -> np.ndarray:
        fog = 1.0 - np.exp(-np.nan_to_num(zg, posinf=1e9) / app.haze_m)
        k = np.ascontiguousarray(np.broadcast_to((1.0 - fog).astype(np.float32)[:, None], out.shape[:2]))
        haze = np.ascontiguousarray(
            np.broadcast_to((fog[:, None] * sky_h[None, :]).astype(np.uint8)[:, None, :], out.shape)
        )
        return cv2.add(cv2.multiply(out, cv2.merge([k, k, k]), dtype=cv2.CV_8U), haze)

    def _ground(self, pos, fwd, right, horizon: int, app: Appearance, sky_h: np.ndarray) -> np.ndarray:
        """Rows horizon..height-1: the lit ground map warped by the ground-plane homography, mip level by
        depth band, then hazed."""
        levels, res = self._lit_ground(app)
        out, zg = self._plane(
            levels, res, pos, fwd, right, horizon, self.config.height, self.config.camera_height_m
        )
        return self._haze(out, zg, app, sky_h)

    def _ceiling_rows(
        self, pos, fwd, right, horizon: int, app: Appearance, sky_h
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows 0..horizon-1 indoors: the ceiling plane (BGR) and its panels' emission (float32 0-1)."""
        c = self.config
        lit_set = app.lit_windows if app.night >= 0.5 else 0
        levels, res = self._ceiling(lit_set)
        out, zg = self._plane(
            levels, res, pos, fwd, right, 0, horizon, c.camera_height_m - c.ceiling_height_m
        )
        light = out[..., 3].astype(np.float32) * np.float32(1.0 / 255.0)
        return self._haze(np.ascontiguousarray(out[..., :3]), zg, app, sky_h), light

    def _light(
        self,
        img: np.ndarray,
        depth: np.ndarray,
        emission: np.ndarray,
        pos: np.ndarray,
        yaw: float,
        app: Appearance,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Artificial light: ``img * (daylight + lamps + headlights) + emission`` where something
        is seen (the sky keeps its colour), plus a bloom around what glows at night."""
        c = self.config
        fx, fy, cx, cy = self._K[0, 0], self._K[1, 1], self._K[0, 2], self._K[1, 2]
        cam = np.array([pos[0], pos[1], c.camera_height_m])
        if self.indoor:
            on = self._lights_on(app.lit_windows if app.night >= 0.5 else 0)
            xy = self.lights_xy[on]
            lamps = np.concatenate([xy, np.full((len(xy), 1), c.ceiling_height_m - 0.02)], axis=1)
            strength, r0, ambient, tint, down = 0.3, 2.5, 0.5 * app.daylight, (245.0, 250.0, 255.0), 8
        else:
            lamps = self.props.lamp_heads
            strength, r0, ambient = 1.5 * app.night, 3.5, app.daylight
            tint = (float(app.lamp_bgr[0]), float(app.lamp_bgr[1]), float(app.lamp_bgr[2]))
            down = 4
        lamp_l, head_l = light_map(
            depth, cam, yaw, fx, fy, cx, cy, lamps, strength, r0, app.headlights * app.night, downsample=down
        )
        base = head_l * np.float32(0.5) + np.float32(ambient)
        k3 = cv2.merge([base + lamp_l * np.float32(t / 255.0) for t in tint])
        out = cv2.add(cv2.multiply(img.astype(np.float32), k3), emission)
        glow = None
        if app.night > 0:
            small = cv2.resize(emission, (c.width // 4, c.height // 4), interpolation=cv2.INTER_AREA)
            glow = cv2.resize(
                cv2.GaussianBlur(small, (0, 0), 2.5), (c.width, c.height), interpolation=cv2.INTER_LINEAR
            )
            out = cv2.scaleAdd(glow, 0.8 * app.night, out)
        lit = cv2.convertScaleAbs(out)
        sky = ~np.isfinite(depth)
        if sky.any():  # the sky keeps its own colour (night skies are set dark by the appearance)
            lit = cv2.copyTo(img, sky.astype(np.uint8), lit)
        return lit, glow

    def _composite(
        self,
        img: np.ndarray,
        occ: np.ndarray,
        emission: np.ndarray | None,
        x0: int,
        y0: int,
        colour: np.ndarray,
        alpha: np.ndarray,
        z: float,
    ) -> None:
        """Draw a billboard at depth ``z``: premultiplied ``colour`` (h, w, 3) float32 and ``alpha``
        (h, w) in [0, 1] at image offset (x0, y0), where nothing nearer (``occ``) hides it."""
        h, w = alpha.shape
        ys, xs = slice(y0, y0 + h), slice(x0, x0 + w)
        occ_roi = occ[ys, xs]
        vis = (occ_roi > z).astype(np.float32)
        a = alpha * vis
        if not a.any():
            return
        keep = cv2.merge([1.0 - a] * 3)
        out = cv2.add(
            cv2.multiply(img[ys, xs], keep, dtype=cv2.CV_32F), cv2.multiply(colour, cv2.merge([vis] * 3))
        )
        img[ys, xs] = cv2.convertScaleAbs(out)
        occ_roi[a > 0.5] = np.float32(z)
        if emission is not None:
            emission[ys, xs] *= keep

    @staticmethod
    def _hidden(occ: np.ndarray, xa: int, xb: int, ya: int, yb: int, z: float) -> bool:
        """Whether everything over the box (columns xa..xb-1, rows ya..yb-1) is nearer than ``z``: then a
        billboard at depth ``z`` there is hidden and need not be drawn (a cheap test before the warp)."""
        return bool((occ[ya:yb, xa:xb] < z).all())

    def _draw_props(self, img, occ, emission, pos, yaw, app: Appearance, ambient: float, sky_h) -> None:
        """Street trees (billboards, dressed by season) and lamp posts (3-D lines), far to near."""
        c = self.config
        fx, fy, cx, cy = self._K[0, 0], self._K[1, 1], self._K[0, 2], self._K[1, 2]
        img_h, img_w = img.shape[:2]
        fwd = np.array([math.cos(yaw), math.sin(yaw)])
        right = np.array([math.sin(yaw), -math.cos(yaw)])
        pr = self.props
        items: list[tuple[float, str, int]] = []
        tan_half = (img_w / 2.0) / fx
        for kind, xy, half_w in (("tree", pr.tree_xy, 2.6), ("lamp", pr.lamp_xy, 1.3)):
            if not len(xy):
                continue
            rel = xy - pos
            zz, xx = rel @ fwd, rel @ right
            ok = (zz > 0.4) & (zz < self.PROP_RANGE_M) & (np.abs(xx) < zz * tan_half + half_w)
            items.extend((float(zz[i]), kind, int(i)) for i in np.nonzero(ok)[0])
        light = (
            ambient + (1.0 - ambient) * 0.55 * math.sin(app.sun_elevation_rad)
            if app.sun_strength > 0
            else ambient
        )
        snowy = app.snow > 0.3
        for zz, kind, i in sorted(items, reverse=True):
            fog = 1.0 - math.exp(-zz / app.haze_m)
            if kind == "tree":
                rel = pr.tree_xy[i] - pos
                x_c = float(rel @ right)
                height = float(pr.tree_height[i])
                levels = props.tree_sprite(c.seed, int(pr.tree_template[i]), app.season, snowy)
                sh = levels[0].shape[0]
                s0 = fy * height / zz / sh  # image pixels per sprite pixel at level 0
                lv = int(np.clip(math.floor(math.log2(max(1.0 / s0, 1e-9))), 0, len(levels) - 1))
                spr = levels[lv]
                sc = s0 * (sh / spr.shape[0])
                u_c = cx + fx * x_c / zz
                v_b = cy + fy * c.camera_height_m / zz
                wpx, hpx = sc * spr.shape[1], sc * spr.shape[0]
                left, topp = u_c - wpx / 2.0, v_b - hpx
                xa, ya = max(0, math.floor(left)), max(0, math.floor(topp))
                xb, yb = min(img_w, math.ceil(left + wpx)), min(img_h, math.ceil(v_b))
                if xb <= xa or yb <= ya or self._hidden(occ, xa, xb, ya, yb, zz):
                    continue
                flip = -1.0 if pr.tree_flip[i] else 1.0
                # dst = sc * src + offset (pixel centres): x_dst = left + (x_src + 0.5) * sc - 0.5
                if flip > 0:
                    m = np.array(
                        [[sc, 0.0, left + 0.5 * sc - 0.5 - xa], [0.0, sc, topp + 0.5 * sc - 0.5 - ya]]
                    )
                else:
                    m = np.array(
                        [[-sc, 0.0, left + wpx - 0.5 * sc - 0.5 - xa], [0.0, sc, topp + 0.5 * sc - 0.5 - ya]]
                    )
                warped = cv2.warpAffine(spr, m, (xb - xa, yb - ya), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))  # fmt: skip
                alpha = warped[..., 3].astype(np.float32) / 255.0
                colour = warped[..., :3].astype(np.float32) * np.float32(light * (1.0 - fog))
                colour += (sky_h * np.float32(fog))[None, None, :] * alpha[..., None]
                self._composite(img, occ, emission, xa, ya, colour, alpha, zz)
            else:
                self._draw_lamp(img, occ, emission, pos, fwd, right, i, app, light, fog, sky_h)

    def _draw_lamp(
        self, img, occ, emission, pos, fwd, right, i: int, app: Appearance, light, fog, sky_h
    ) -> None:
        """One lamp post: pole and arm projected from 3-D, a lamp head that glows at night."""
        c = self.config
        fx, fy, cx, cy = self._K[0, 0], self._K[1, 1], self._K[0, 2], self._K[1, 2]
        pr = self.props
        foot = pr.lamp_xy[i]
        head = foot + pr.lamp_dir[i] * props.LAMP_ARM_M
        pts3 = [(foot, 0.0), (foot, props.LAMP_HEIGHT_M), (head, props.LAMP_HEIGHT_M - 0.1)]
        uv, zs = [], []
        for xy, hgt in pts3:
            rel = xy - pos
            zz = float(rel @ fwd)
            if zz < 0.3:
                return
            uv.append((cx + fx * float(rel @ right) / zz, cy - fy * (hgt - c.camera_height_m) / zz))
            zs.append(zz)
        zmid = float(np.mean(zs))
        thick = max(1, round(fx * 0.14 / zmid))
        xs_ = [p[0] for p in uv]
        ys_ = [p[1] for p in uv]
        pad = thick + max(2, round(fx * 0.35 / zmid))
        xa, xb = max(0, math.floor(min(xs_)) - pad), min(img.shape[1], math.ceil(max(xs_)) + pad)
        ya, yb = max(0, math.floor(min(ys_)) - pad), min(img.shape[0], math.ceil(max(ys_)) + pad)
        if xb <= xa or yb <= ya or self._hidden(occ, xa, xb, ya, yb, min(zs)):
            return
        canvas = np.zeros((yb - ya, xb - xa), np.uint8)
        q = [(round(u - xa), round(v - ya)) for u, v in uv]
        cv2.line(canvas, q[0], q[1], 255, thick, cv2.LINE_AA)
        cv2.line(canvas, q[1], q[2], 255, max(1, thick * 2 // 3), cv2.LINE_AA)
        r_head = max(1, round(fx * 0.22 / zs[2]))
        cv2.ellipse(canvas, q[2], (r_head, max(1, r_head // 2)), 0, 0, 360, 255, -1, cv2.LINE_AA)
        alpha = canvas.astype(np.float32) / 255.0
        grey = np.float32(60.0 * light * (1.0 - fog)) + sky_h * np.float32(fog)
        colour = alpha[..., None] * grey[None, None, :] if np.ndim(grey) else alpha[..., None] * grey
        self._composite(img, occ, emission, xa, ya, np.asarray(colour, np.float32), alpha, zmid)
        if emission is not None and app.night > 0:
            hx, hy = round(uv[2][0]), round(uv[2][1])
            if (
                0 <= hx < img.shape[1] and 0 <= hy < img.shape[0] and occ[hy, hx] >= min(zs) - 0.1
            ):  # the head itself is not hidden
                col = tuple(float(v) * app.night * 1.2 for v in app.lamp_bgr)
                cv2.ellipse(
                    emission, (hx, hy), (r_head, max(1, r_head // 2)), 0, 0, 360, col, -1, cv2.LINE_AA
                )

    def _draw_occluders(
        self,
        img,
        app: Appearance,
        rng,
        depth,
        fx,
        fy,
        cx,
        cy,
        want_depth: bool,
        props_depth=None,
        emission=None,
    ) -> np.ndarray | None:
        """Cars and pedestrians ahead in the street, as billboards; returns their depth (+inf elsewhere).

        As in earlier versions (whose images this keeps exactly), an occluder is left out when
        the wall at its centre column is nearer, and otherwise drawn over the walls and over
        the occluders drawn before it (in the order drawn from ``rng``); nearer props
        (``props_depth``) hide it. The depth follows what is drawn, so it stays aligned."""
        hcam = self.config.camera_height_m
        img_h, img_w = img.shape[:2]
        drawn_depth = np.full((img_h, img_w), np.inf, np.float32) if want_depth else None
        for _ in range(app.occluders):
            zf = rng.uniform(5.0, 30.0)
            lat = rng.uniform(-5.0, 5.0)
            car = rng.random() < 0.6
            w_m, h_m = (rng.uniform(1.7, 2.0), rng.uniform(1.4, 1.7)) if car else (0.6, rng.uniform(1.6, 1.9))
            u = cx + fx * lat / zf
            half = fx * w_m / 2.0 / zf
            xa, xb = int(u - half), int(u + half)
            yb, ya = int(cy + fy * hcam / zf), int(cy + fy * (hcam - h_m) / zf)
            if xb < 0 or xa >= img_w or depth[int(np.clip(u, 0, img_w - 1))] < zf:
                continue
            colour = np.array(_col(rng, _ACCENT_COLOURS + _WALL_COLOURS, 40), np.float32)
            # draw on a canvas over the occluder's box (wheels reach below its base), then depth-test
            r = max(1, int(fy * 0.33 / zf))
            bx0, by0 = max(0, xa - 1), max(0, ya - 1)
            bx1, by1 = min(img_w, xb + 2), min(img_h, yb + r + 2)
            if bx1 <= bx0 or by1 <= by0:
                continue
            canvas = img[by0:by1, bx0:bx1].copy()
            drawn = np.zeros(canvas.shape[:2], np.uint8)

            def rect(p0, p1, col, canvas=canvas, drawn=drawn, ox=bx0, oy=by0) -> None:
                cv2.rectangle(canvas, (p0[0] - ox, p0[1] - oy), (p1[0] - ox, p1[1] - oy), col, -1)
                cv2.rectangle(drawn, (p0[0] - ox, p0[1] - oy), (p1[0] - ox, p1[1] - oy), 255, -1)

            def circ(c0, rad, col, canvas=canvas, drawn=drawn, ox=bx0, oy=by0) -> None:
                cv2.circle(canvas, (c0[0] - ox, c0[1] - oy), rad, col, -1)
                cv2.circle(drawn, (c0[0] - ox, c0[1] - oy), rad, 255, -1)

            if car:
                yr = int(cy + fy * (hcam - h_m * 0.55) / zf)
                rect((xa, yr), (xb, yb), colour.tolist())
                inset = int(half * 0.25)
                rect((xa + inset, ya), (xb - inset, yr), (colour * 0.8).tolist())
                rect((xa + inset + 2, ya + 2), (xb - inset - 2, yr), (70.0, 60.0, 50.0))
                for wx in (xa + 2 * r, xb - 2 * r):
                    circ((wx, yb), r, (20.0, 20.0, 20.0))
            else:
                head = max(1, int(fy * 0.12 / zf))
                rect((xa, ya + 2 * head), (xb, yb), colour.tolist())
                circ(((xa + xb) // 2, ya + head), head, (90.0, 120.0, 170.0))
            vis = drawn > 0
            if props_depth is not None:
                vis &= props_depth[by0:by1, bx0:bx1] > zf  # nearer trees and lamp posts hide it
            if drawn_depth is not None:
                drawn_depth[by0:by1, bx0:bx1][vis] = np.float32(zf)
            if emission is not None:
                emission[by0:by1, bx0:bx1][vis] = 0.0
            img[by0:by1, bx0:bx1][vis] = canvas[vis]
        return drawn_depth

    def _noise_crop(self, rng: np.random.Generator) -> np.ndarray:
        """Unit Gaussian noise (height, width) float32: a random window of a fixed 2H x 2W field (fast per frame)."""
        img_h, img_w = self.config.height, self.config.width
        if self._noise_field is None:
            self._noise_field = np.random.default_rng([self.config.seed, 777]).standard_normal(
                (2 * img_h, 2 * img_w), np.float32
            )
        oy, ox = int(rng.integers(img_h)), int(rng.integers(img_w))
        return np.ascontiguousarray(self._noise_field[oy : oy + img_h, ox : ox + img_w])

    def _finish(self, img: np.ndarray, app: Appearance, rng: np.random.Generator) -> np.ndarray:
        """Exposure, white balance, gamma (one LUT per channel), blur and sensor noise."""
        out = img
        if app.blur_sigma > 0:
            out = cv2.GaussianBlur(out, (0, 0), app.blur_sigma)
        if app.noise_sigma > 0:
            noise = self._noise_crop(rng) * np.float32(app.noise_sigma)
            out = cv2.add(out, cv2.merge([noise, noise, noise]), dtype=cv2.CV_8U)
        if (app.gain, app.gamma, tuple(app.color_gain)) != (1.0, 1.0, (1.0, 1.0, 1.0)):
            lut = _exposure_lut(app.gain, app.gamma, tuple(app.color_gain))
            out = cv2.LUT(out, lut)
        return out

    # ------------------------------------------------------------------ routes and traversals

    def _route_nodes(self, kind: str) -> np.ndarray:
        """Centreline polyline of a route through street intersections (metres)."""
        nx, ny = self.config.blocks_x, self.config.blocks_y
        nodes: list[tuple[int, int]] = []
        if kind in ("mapping", "query"):  # serpentine over the east-west streets
            for j in range(ny + 1):
                row = [(0, j), (nx, j)] if j % 2 == 0 else [(nx, j), (0, j)]
                nodes.extend(row)
        elif kind == "loop":  # around the whole grid, then the first street again
            nodes = [(0, 0), (nx, 0), (nx, ny), (0, ny), (0, 0), (max(1, nx - 1), 0)]
        else:
            raise ValueError(f"traversal kind must be one of {TRAVERSAL_KINDS}, got {kind!r}")
        return np.array([(self.grid_x[i], self.grid_y[j]) for i, j in nodes], dtype=np.float64)

    @staticmethod
    def _smooth_polyline(nodes: np.ndarray, radius: float, step: float = 0.1) -> np.ndarray:
        """Dense points along the polyline with corners rounded (quadratic Bezier of ``radius``)."""
        pts: list[np.ndarray] = [nodes[0]]
        for k in range(1, len(nodes) - 1):
            a, b, c = nodes[k - 1], nodes[k], nodes[k + 1]
            d1 = (b - a) / np.linalg.norm(b - a)
            d2 = (c - b) / np.linalg.norm(c - b)
            pts.append(b - d1 * radius)
            tt = np.linspace(0.0, 1.0, 40)[1:-1, None]
            p0, p2 = b - d1 * radius, b + d2 * radius
            pts.extend((1 - tt) ** 2 * p0 + 2 * (1 - tt) * tt * b + tt**2 * p2)
            pts.append(p2)
        pts.append(nodes[-1])
        dense = np.array(pts)
        seg = np.linalg.norm(np.diff(dense, axis=0), axis=1)
        keep = np.concatenate([[True], seg > 1e-9])
        kept = dense[keep]
        s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(kept, axis=0), axis=1))])
        sd = np.arange(0.0, s[-1], step)
        return np.stack([np.interp(sd, s, kept[:, 0]), np.interp(sd, s, kept[:, 1])], axis=1)

    def query_appearance(self, seed: int) -> Appearance:
        """A random 'other day' appearance: sun and shadows, exposure, white balance, sky, noise, clutter."""
        r = np.random.default_rng([self.config.seed, seed, 555])
        top = np.array([215, 160, 110]) + r.integers(-30, 31, 3)
        warm = float(r.uniform(-0.12, 0.12))  # colour temperature shift
        return Appearance(
            gain=float(r.uniform(0.65, 1.35)),
            gamma=float(r.uniform(0.7, 1.45)),
            color_gain=(1.0 - warm, float(r.uniform(0.96, 1.04)), 1.0 + warm),  # white balance: B, G, R
            sun_strength=float(r.uniform(0.6, 1.0)),
            sun_azimuth_rad=float(r.uniform(0.0, 2.0 * math.pi)),
            sun_elevation_rad=float(r.uniform(0.6, 1.1)),
            sky_top_bgr=(
                int(np.clip(top[0], 0, 255)),
                int(np.clip(top[1], 0, 255)),
                int(np.clip(top[2], 0, 255)),
            ),
            sky_horizon_bgr=(
                int(np.clip(top[0] + 40, 0, 255)),
                int(np.clip(top[1] + 40, 0, 255)),
                int(np.clip(top[2] + 40, 0, 255)),
            ),
            cloud_cover=float(r.uniform(0.0, 0.6)),
            cloud_seed=int(r.integers(1 << 30)),
            haze_m=float(r.uniform(150.0, 500.0)),
            noise_sigma=float(r.uniform(2.0, 5.0)),
            blur_sigma=float(r.uniform(0.0, 0.8)),
            occluders=int(r.integers(1, 4)),
            seed=int(r.integers(1 << 30)),
        )

    def appearance(self, condition: Condition | str, seed: int = 0) -> Appearance:
        """A seeded appearance of ``condition`` (a :class:`Condition` or its label such as
        ``"night/rain/autumn"``) in this world (indoor worlds use only the time of day)."""
        cond = Condition.parse(condition) if isinstance(condition, str) else condition
        return condition_appearance(cond, (self.config.seed, seed), indoor=self.indoor)

    def traversal(
        self,
        kind: str = "mapping",
        spacing_m: float = 2.0,
        max_frames: int | None = None,
        seed: int | None = None,
        *,
        condition: Condition | str | None = None,
        depth: bool = False,
        odometry: OdometryNoise | None = None,
        start_m: float = 0.0,
    ) -> list[Frame]:
        """Drive a route and render a frame every ``spacing_m`` metres of path.

        ``mapping``: the serpentine route over all east-west streets, overcast,
        clean sensor, in the right lane. ``query``: the same route on another
        day (``query_appearance``), starting half a spacing later, weaving up
        to 1.5 m laterally with up to ~4 degrees of heading jitter. ``loop``:
        once around the whole grid and then along the first street again (a
        revisit within the sequence), sunny, with mild lateral weaving. Stamps
        advance at ``speed_mps``; each kind starts on a different day. (Indoors the
        weaving is limited to a quarter (query) or 15 % (loop) of the corridor width.)

        ``condition`` (a :class:`Condition` or its label, e.g. ``"night/rain/winter"``)
        replaces the kind's appearance with :meth:`appearance` of that condition (the route
        and jitter stay those of the kind), so a query can be another season or the night.
        ``depth`` fills ``Frame.depth`` (float32 metres, see :meth:`render_rgbd`; 1.2 MB per
        640x480 frame). ``odometry`` makes the frames' odometry drift by that noise model
        (:func:`.odometry.drift_frames`); None keeps it equal to the ground truth.
        ``start_m`` starts that many metres further along the route.
        """
        if kind not in TRAVERSAL_KINDS:
            raise ValueError(f"traversal kind must be one of {TRAVERSAL_KINDS}, got {kind!r}")
        if not (spacing_m > 0 and math.isfinite(spacing_m)):
            raise ValueError(f"spacing_m must be a positive number, got {spacing_m!r}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {max_frames!r}")
        if not (start_m >= 0 and math.isfinite(start_m)):
            raise ValueError(f"start_m must be a non-negative number, got {start_m!r}")
        c = self.config
        kidx = TRAVERSAL_KINDS.index(kind)
        seed = (c.seed * 1000 + kidx) if seed is None else seed
        r = np.random.default_rng([c.seed, seed, kidx, 99])
        dense = self._smooth_polyline(self._route_nodes(kind), radius=min(8.0, 0.5 * c.street_width_m))
        tang = np.gradient(dense, axis=0)
        tang /= np.linalg.norm(tang, axis=1, keepdims=True)
        s_c = np.arange(len(dense)) * 0.1
        if kind == "mapping":
            lateral = np.full(len(dense), c.lane_offset_m)
            appearance = Appearance()
            start0, yaw_amp = 0.0, 0.0
        elif kind == "query":
            phase, wl = r.uniform(0, 2 * math.pi), r.uniform(40.0, 90.0)
            weave = min(1.5, 0.25 * c.street_width_m)
            lateral = c.lane_offset_m + weave * np.sin(2 * math.pi * s_c / wl + phase)
            appearance = self.query_appearance(seed)
            start0, yaw_amp = spacing_m / 2.0, math.radians(4.0)
        else:
            phase = r.uniform(0, 2 * math.pi)
            weave = min(0.7, 0.15 * c.street_width_m)
            lateral = c.lane_offset_m + weave * np.sin(2 * math.pi * s_c / 70.0 + phase)
            appearance = Appearance(sun_strength=0.7, sun_azimuth_rad=float(r.uniform(0, 2 * math.pi)),
                                    noise_sigma=2.0, occluders=1)  # fmt: skip
            start0, yaw_amp = 0.0, math.radians(1.5)
        cond: Condition | None = None
        if condition is not None:
            cond = Condition.parse(condition) if isinstance(condition, str) else condition
            appearance = self.appearance(cond, seed)
        path = dense + lateral[:, None] * np.stack([tang[:, 1], -tang[:, 0]], axis=1)
        s_p = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
        samples = np.arange(start0 + start_m, s_p[-1] - 1.0, spacing_m)
        if samples.size == 0:
            raise ValueError(f"start_m {start_m} is beyond the end of the {kind} route ({s_p[-1]:.0f} m)")
        if max_frames is not None:
            samples = samples[:max_frames]
        px = np.interp(samples, s_p, path[:, 0])
        py = np.interp(samples, s_p, path[:, 1])
        ahead = np.minimum(samples + 1.5, s_p[-1])
        behind = np.maximum(samples - 1.5, 0.0)
        yaw = np.arctan2(np.interp(ahead, s_p, path[:, 1]) - np.interp(behind, s_p, path[:, 1]),
                         np.interp(ahead, s_p, path[:, 0]) - np.interp(behind, s_p, path[:, 0]))  # fmt: skip
        if yaw_amp > 0:  # smooth random heading jitter
            knots = r.uniform(-yaw_amp, yaw_amp, int(samples[-1] / 10.0) + 3)
            yaw = yaw + np.interp(samples / 10.0, np.arange(len(knots)), knots)
        pos = np.stack([px, py, np.full_like(px, c.camera_height_m)], axis=1)
        lat, lon, alt = EnuFrame(*c.origin).to_geodetic(pos)
        t0 = c.start_time + 86400.0 * kidx
        frames = []
        for i in range(len(samples)):
            app_i = dataclasses.replace(appearance, seed=appearance.seed * 100003 + i)
            if kind == "query":  # auto-exposure drifting along the drive
                app_i.gain = float(appearance.gain * (1.0 + 0.12 * math.sin(samples[i] / 37.0)))
            image, dmap = self._render(pos[i, :2], float(yaw[i]), app_i, want_depth=depth)
            frames.append(
                Frame(
                    index=i,
                    stamp=float(t0 + samples[i] / c.speed_mps),
                    image=image,
                    position=pos[i].copy(),
                    orientation=yaw_to_quaternion(float(yaw[i])),
                    latlonalt=(float(lat[i]), float(lon[i]), float(alt[i])),
                    depth=dmap if depth else None,
                    camera=self.camera,
                    condition=cond,
                    scene=c.scene,
                )
            )
        if odometry is not None:
            frames = drift_frames(frames, odometry)
        return frames


_SKY_ELEV_MAX = 1.2  # radians covered by the sky panorama above the horizon


@lru_cache(maxsize=8)
def _sky_panorama(top: tuple, horizon: tuple, cover: float, seed: int, cloud: float = 245.0) -> np.ndarray:
    """Sky colour (rows: elevation 0.._SKY_ELEV_MAX, cols: azimuth 0..360 plus a wrap column), uint8 BGR.

    A horizon-to-zenith gradient with procedural clouds (sum of smooth noise at three scales,
    wrapping in azimuth); ``cover`` in [0, 1] is roughly the fraction of sky that is cloud.
    """
    rng = np.random.default_rng([seed, 2024])
    h, w = 128, 1024
    acc = np.zeros((h, w), np.float32)
    for scale, amp in ((8, 1.0), (24, 0.5), (64, 0.25)):
        small = rng.normal(0.0, 1.0, (max(2, h * scale // w + 2), scale)).astype(np.float32)
        tiled = np.concatenate([small, small, small], axis=1)  # periodic in azimuth: keep the middle copy
        acc += amp * cv2.resize(tiled, (3 * w, h), interpolation=cv2.INTER_CUBIC)[:, w : 2 * w]
    acc = (acc - acc.min()) / max(float(acc.max() - acc.min()), 1e-6)
    tt = np.clip(np.linspace(0.0, 1.0, h, dtype=np.float32) * _SKY_ELEV_MAX / 0.7, 0, 1)[:, None, None]
    sky = np.array(horizon, np.float32) * (1.0 - tt) + np.array(top, np.float32) * tt
    a = (
        np.clip((acc - (1.0 - cover)) * 3.0, 0.0, 1.0)[..., None]
        if cover > 0
        else np.zeros((h, w, 1), np.float32)
    )
    shade = (0.85 + 0.15 * acc)[..., None]
    img = sky * (1.0 - a) + np.float32(cloud) * shade * a
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.concatenate([img, img[:, :1]], axis=1)


@lru_cache(maxsize=16)
def _exposure_lut(gain: float, gamma: float, color_gain: tuple[float, float, float]) -> np.ndarray:
    x = np.arange(256, dtype=np.float64) / 255.0
    lut = np.stack(
        [np.clip(255.0 * np.clip(x * gain * g, 0, 1) ** gamma, 0, 255) for g in color_gain], axis=-1
    )
    return lut.reshape(256, 1, 3).astype(np.uint8)
