"""Textures of the indoor-like scene: corridors lined with doors, posters and notice boards,
a tiled floor and a ceiling with light panels.

Why: indoor places (office and university corridors) are the hard case for place
recognition: every corridor repeats the same doors, paint and lights, and only small
things (room numbers, posters, notice boards, fire extinguishers, a radiator) tell
places apart. The corridor world reuses the street renderer's geometry: the "blocks"
are rooms, the "streets" corridors ``street_width_m`` wide, all walls reach the ceiling
(``ceiling_height_m``), and the sky becomes a ceiling plane. A wall style (paint, dado,
skirting, door design) is shared by all walls of a block, so textures repeat as in real
buildings. All deterministic from the generators passed in.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["CorridorStyle", "ceiling_lights", "ceiling_map", "corridor_style", "corridor_wall", "floor_map"]

_PAINT = [  # BGR: institutional off-whites, creams, pale greens and blues, greys
    (225, 228, 230), (200, 215, 225), (190, 220, 215), (215, 205, 190), (200, 200, 200), (175, 205, 230),
    (215, 225, 205), (190, 195, 205),
]  # fmt: skip
_DOOR = [
    (60, 90, 140),
    (45, 70, 110),
    (200, 200, 195),
    (90, 90, 90),
    (50, 110, 60),
    (140, 90, 50),
    (70, 60, 150),
]
_ACCENT = [
    (40, 40, 200), (30, 140, 30), (200, 80, 30), (20, 180, 230), (150, 40, 120), (30, 30, 30), (0, 100, 200),
    (180, 180, 40), (90, 200, 90), (230, 230, 230),
]  # fmt: skip


def _jit(rng: np.random.Generator, colour: tuple[int, int, int], j: int) -> tuple[int, int, int]:
    v = np.clip(np.array(colour) + rng.integers(-j, j + 1, 3), 0, 255)
    return (int(v[0]), int(v[1]), int(v[2]))


def _pick(rng: np.random.Generator, palette: list, j: int = 12) -> tuple[int, int, int]:
    return _jit(rng, palette[int(rng.integers(len(palette)))], j)


@dataclass
class CorridorStyle:
    """One building wing's look: shared by all walls of a block (the repetition of corridors)."""

    paint: tuple[int, int, int]
    dado: tuple[int, int, int] | None
    dado_m: float
    skirting: tuple[int, int, int]
    door: tuple[int, int, int]
    frame: tuple[int, int, int]
    door_glass: bool
    door_w_m: float
    door_pitch_m: float
    prefix: str
    rooms: list[int] = field(default_factory=lambda: [100])


def corridor_style(rng: np.random.Generator, block: int) -> CorridorStyle:
    """A seeded wall style for ``block`` (room numbers start at ``100 * (block + 1)``)."""
    paint = _pick(rng, _PAINT, 8)
    dado = _pick(rng, _PAINT + _DOOR, 15) if rng.random() < 0.55 else None
    return CorridorStyle(
        paint=paint,
        dado=dado,
        dado_m=float(rng.uniform(0.9, 1.2)),
        skirting=_pick(rng, [(40, 40, 40), (70, 80, 90), (120, 120, 120), (30, 50, 80)], 10),
        door=_pick(rng, _DOOR, 12),
        frame=_pick(rng, [(230, 230, 230), (60, 60, 60), (150, 150, 150), (40, 70, 120)], 10),
        door_glass=bool(rng.random() < 0.4),
        door_w_m=float(rng.uniform(0.85, 1.05)),
        door_pitch_m=float(rng.uniform(3.5, 6.0)),
        prefix=str(rng.choice(list("ABCDEFGHK"))),
        rooms=[100 * (block + 1)],
    )


def _text(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list(string.ascii_uppercase + "  "), n)).strip() or "INFO"


def _poster(rng: np.random.Generator, img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    """A poster: coloured background, a headline, a picture block and lines of 'text'."""
    bg = _pick(rng, _ACCENT + _PAINT, 30)
    cv2.rectangle(img, (x0, y0), (x1, y1), bg, -1)
    fg = (20, 20, 20) if sum(bg) > 400 else (245, 245, 245)
    h, w = y1 - y0, x1 - x0
    if rng.random() < 0.7:  # a picture: circle, rectangle or stripes
        c = _pick(rng, _ACCENT, 40)
        kind = int(rng.integers(3))
        if kind == 0:
            cv2.circle(img, (x0 + w // 2, y0 + h // 3), max(2, w // 4), c, -1)
        elif kind == 1:
            cv2.rectangle(img, (x0 + w // 6, y0 + h // 6), (x1 - w // 6, y0 + h // 2), c, -1)
        else:
            for k in range(0, w, max(2, w // 6)):
                cv2.line(img, (x0 + k, y0 + h // 6), (x0 + k + w // 4, y0 + h // 2), c, max(1, w // 20))
    font = cv2.FONT_HERSHEY_DUPLEX
    text = _text(rng, int(rng.integers(3, 8)))
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = min(0.85 * w / max(tw, 1), 0.12 * h / max(th, 1))
    if scale * th >= 3:
        cv2.putText(
            img, text, (x0 + (w - int(tw * scale)) // 2, y0 + int(h * 0.62)), font, scale, fg, 1, cv2.LINE_AA
        )
    for k in range(int(rng.integers(2, 6))):  # small text lines
        yy = y0 + int(h * (0.7 + 0.06 * k))
        if yy < y1 - 1:
            cv2.line(img, (x0 + w // 8, yy), (x1 - int(w * rng.uniform(0.1, 0.4)), yy), fg, 1)


def _notice_board(rng: np.random.Generator, img: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> None:
    """A cork board with a frame and pinned sheets of paper."""
    cv2.rectangle(img, (x0, y0), (x1, y1), _jit(rng, (60, 110, 160), 12), -1)
    speck = rng.integers(-18, 19, (y1 - y0, x1 - x0, 1))
    img[y0:y1, x0:x1] = np.clip(img[y0:y1, x0:x1].astype(np.int32) + speck, 0, 255).astype(np.uint8)
    cv2.rectangle(img, (x0, y0), (x1, y1), _jit(rng, (50, 60, 70), 10), 2)
    w, h = x1 - x0, y1 - y0
    for _ in range(int(rng.integers(4, 11))):
        pw, ph = int(w * rng.uniform(0.12, 0.3)), int(h * rng.uniform(0.2, 0.45))
        px, py = (
            int(rng.integers(x0 + 2, max(x0 + 3, x1 - pw - 2))),
            int(rng.integers(y0 + 2, max(y0 + 3, y1 - ph - 2))),
        )
        paper = _pick(
            rng, [(245, 245, 245), (240, 240, 240), (160, 235, 250), (235, 200, 250), (200, 240, 200)], 8
        )
        cv2.rectangle(img, (px, py), (px + pw, py + ph), paper, -1)
        for k in range(2, ph - 1, 3):
            cv2.line(
                img, (px + 2, py + k), (px + pw - int(pw * rng.uniform(0.1, 0.5)), py + k), (90, 90, 90), 1
            )
        cv2.circle(img, (px + pw // 2, py + 1), 1, _pick(rng, _ACCENT, 0), -1)


def corridor_wall(
    rng: np.random.Generator, w_m: float, h_m: float, ppm: float, style: CorridorStyle
) -> np.ndarray:
    """One wall section (a 'building' of the street world): paint, dado, skirting, a door with a
    room number, and maybe a poster, notice board, fire extinguisher, radiator or exit sign."""
    w, h = max(8, round(w_m * ppm)), max(8, round(h_m * ppm))
    px = lambda m: round(m * ppm)  # noqa: E731
    img = np.empty((h, w, 3), np.float32)
    img[:] = style.paint
    small = rng.normal(0.0, 1.0, (h // 24 + 2, w // 24 + 2)).astype(np.float32)
    img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[..., None] * 3.0
    img += rng.normal(0.0, 1.5, (h, w, 1)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    floor_y = h - 1
    if style.dado is not None:
        cv2.rectangle(img, (0, h - px(style.dado_m)), (w - 1, floor_y), style.dado, -1)
        cv2.line(img, (0, h - px(style.dado_m)), (w - 1, h - px(style.dado_m)), style.frame, max(1, px(0.03)))
    cv2.rectangle(img, (0, h - px(0.12)), (w - 1, floor_y), style.skirting, -1)
    cv2.line(
        img, (0, px(0.05)), (w - 1, px(0.05)), _jit(rng, (235, 235, 235), 5), max(1, px(0.04))
    )  # cornice
    # doors at the wing's pitch, offset per wall
    occupied: list[tuple[int, int]] = []
    s = rng.uniform(0.4, max(0.5, min(style.door_pitch_m, w_m - style.door_w_m - 0.4)))
    while s + style.door_w_m < w_m - 0.3:
        x0, x1 = px(s), px(s + style.door_w_m)
        y0 = h - px(2.1)
        cv2.rectangle(img, (x0 - px(0.06), y0 - px(0.06)), (x1 + px(0.06), floor_y), style.frame, -1)
        cv2.rectangle(img, (x0, y0), (x1, floor_y), style.door, -1)
        if style.door_glass:
            cv2.rectangle(img, (x0 + px(0.2), y0 + px(0.2)), (x1 - px(0.2), y0 + px(0.9)), (90, 80, 60), -1)
            cv2.line(img, (x0 + px(0.2), y0 + px(0.4)), (x1 - px(0.2), y0 + px(0.3)), (150, 140, 120), 1)
        else:
            cv2.rectangle(img, (x0 + px(0.12), y0 + px(0.12)), (x1 - px(0.12), y0 + px(0.95)), style.frame, 1)
            cv2.rectangle(
                img, (x0 + px(0.12), y0 + px(1.1)), (x1 - px(0.12), floor_y - px(0.15)), style.frame, 1
            )
        hx = x1 - px(0.12)
        cv2.rectangle(img, (hx - px(0.12), h - px(1.05)), (hx, h - px(1.0)), (180, 180, 185), -1)  # handle
        # room number plate beside the door
        room = style.rooms[0] + len(style.rooms)
        style.rooms.append(room)
        pxl, pyl = x1 + px(0.15), h - px(1.7)
        plate = _pick(rng, [(240, 240, 240), (40, 40, 40), (150, 60, 20), (20, 100, 180)], 8)
        cv2.rectangle(img, (pxl, pyl), (pxl + px(0.28), pyl + px(0.16)), plate, -1)
        fg = (20, 20, 20) if sum(plate) > 400 else (240, 240, 240)
        cv2.putText(img, f"{style.prefix}{room}", (pxl + 1, pyl + px(0.13)), cv2.FONT_HERSHEY_SIMPLEX,
                    max(0.2, ppm * 0.0045), fg, 1, cv2.LINE_AA)  # fmt: skip
        occupied.append((x0 - px(0.2), pxl + px(0.35)))
        s += style.door_pitch_m * rng.uniform(0.85, 1.2)

    def free(xa: int, xb: int) -> bool:
        return xa >= 0 and xb < w and all(xb < a or xa > b for a, b in occupied)

    for _ in range(int(rng.integers(1, 4))):  # wall furniture in the free stretches
        kind = rng.choice(["poster", "board", "extinguisher", "radiator", "exit", "switch", "none"],
                          p=[0.3, 0.22, 0.1, 0.13, 0.07, 0.1, 0.08])  # fmt: skip
        width = {
            "poster": 0.6,
            "board": 1.4,
            "extinguisher": 0.25,
            "radiator": 1.1,
            "exit": 0.4,
            "switch": 0.1,
        }
        if kind == "none":
            continue
        ww = px(width[str(kind)] * rng.uniform(0.8, 1.3))
        xa = int(rng.integers(0, max(1, w - ww)))
        if not free(xa, xa + ww):
            continue
        occupied.append((xa, xa + ww))
        if kind == "poster":
            ph = px(rng.uniform(0.7, 1.0))
            y0 = h - px(rng.uniform(1.3, 1.6)) - ph // 2
            _poster(rng, img, xa, y0, xa + ww, y0 + ph)
        elif kind == "board":
            y0 = h - px(rng.uniform(1.9, 2.1))
            _notice_board(rng, img, xa, y0, xa + ww, y0 + px(rng.uniform(0.8, 1.1)))
        elif kind == "extinguisher":
            y1 = h - px(0.3)
            cv2.rectangle(img, (xa, y1 - px(0.55)), (xa + ww, y1), (30, 30, 200), -1)
            cv2.rectangle(img, (xa, y1 - px(0.6)), (xa + ww // 2, y1 - px(0.55)), (30, 30, 30), -1)
            cv2.rectangle(
                img, (xa - px(0.05), y1 - px(1.4)), (xa + ww + px(0.05), y1 - px(1.15)), (40, 40, 220), -1
            )
        elif kind == "radiator":
            y1 = h - px(0.2)
            cv2.rectangle(img, (xa, y1 - px(0.6)), (xa + ww, y1), (235, 235, 235), -1)
            for xx in range(xa + 2, xa + ww - 1, max(2, px(0.07))):
                cv2.line(img, (xx, y1 - px(0.58)), (xx, y1 - 2), (190, 190, 190), 1)
        elif kind == "exit":
            y0 = px(0.25)
            cv2.rectangle(img, (xa, y0), (xa + ww, y0 + px(0.18)), (60, 160, 30), -1)
            cv2.putText(img, "EXIT", (xa + 2, y0 + px(0.15)), cv2.FONT_HERSHEY_SIMPLEX, max(0.2, ppm * 0.005),
                        (240, 240, 240), 1, cv2.LINE_AA)  # fmt: skip
        else:  # light switch
            y0 = h - px(1.15)
            cv2.rectangle(img, (xa, y0), (xa + ww, y0 + px(0.1)), (235, 235, 235), -1)
            cv2.rectangle(img, (xa, y0), (xa + ww, y0 + px(0.1)), (150, 150, 150), 1)
    return img


def ceiling_lights(
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    bounds: tuple[float, float, float, float],
    pitch_m: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Light panel centres (N, 2) along every corridor centreline, every ``pitch_m``, and a
    seeded on/off set index (N,) in {1, 2} (at night ``lit_windows`` 1, 2 or 3 chooses which stay on)."""
    rng = np.random.default_rng([seed, 9091])
    x0, y0, x1, y1 = bounds
    pts: list[tuple[float, float]] = []
    for gy in grid_y:
        pts.extend((x, gy) for x in np.arange(x0 + pitch_m / 2, x1, pitch_m))
    for gx in grid_x:
        pts.extend(
            (gx, y) for y in np.arange(y0 + pitch_m / 2, y1, pitch_m) if np.min(np.abs(grid_y - y)) > 1.0
        )
    xy = np.array(pts, np.float64).reshape(-1, 2)
    return xy, rng.integers(1, 3, len(xy))


def floor_map(
    shape: tuple[int, int], res: float, origin: tuple[float, float], pitch_m: float, seed: int
) -> np.ndarray:
    """Top-down floor colour (BGR uint8): linoleum or tiles per corridor stretch, a border strip
    along the walls, worn centre, speckle."""
    rng = np.random.default_rng([seed, 2718])
    h, w = shape
    gx = (origin[0] + (np.arange(w, dtype=np.float32) + 0.5) * res)[None, :]
    gy = (origin[1] + (np.arange(h, dtype=np.float32) + 0.5) * res)[:, None]
    cells = max(1.0, float(pitch_m))
    tint = rng.integers(-25, 26, (int(h * res / cells) + 3, int(w * res / cells) + 3, 3)).astype(np.float32)
    base = np.array([150, 160, 165], np.float32)
    ci, cj = (
        ((gy + cells / 2) // cells).astype(np.int64),
        ((gx + cells / 2) // cells).astype(np.int64),
    )  # centred on corridors
    out = base + tint[ci - ci.min(), cj - cj.min()] * 0.6
    tile = float(rng.choice([0.3, 0.4, 0.5, 0.6]))
    grout = (((gx % tile) < 0.015) | ((gy % tile) < 0.015))[..., None]
    checker = ((np.floor(gx / tile) + np.floor(gy / tile)) % 2)[..., None] * 12.0
    out = out - checker - grout * 35.0
    out += rng.normal(0.0, 5.0, (h, w, 1)).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def ceiling_map(
    shape: tuple[int, int],
    res: float,
    origin: tuple[float, float],
    lights: np.ndarray,
    on: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Top-down ceiling (BGRA uint8, seen from below): acoustic tiles on a 0.6 m grid, vents,
    smoke detectors; light panels (0.6 x 1.2 m) where A = 255 * on (emission) and BGR is the
    panel's diffuser colour."""
    rng = np.random.default_rng([seed, 1618])
    h, w = shape
    gx = (origin[0] + (np.arange(w, dtype=np.float32) + 0.5) * res)[None, :]
    gy = (origin[1] + (np.arange(h, dtype=np.float32) + 0.5) * res)[:, None]
    out = np.empty((h, w, 4), np.float32)
    out[..., :3] = np.array([218, 222, 224], np.float32)
    out[..., :3] += rng.normal(0.0, 6.0, (h, w, 1)).astype(np.float32)  # acoustic tile speckle
    grid = ((gx % 0.6) < 0.02) | ((gy % 0.6) < 0.02)
    out[..., :3][grid] = (170, 172, 175)
    out[..., 3] = 0
    img = np.clip(out, 0, 255).astype(np.uint8)

    def to_px(x: float, y: float) -> tuple[int, int]:
        return int((x - origin[0]) / res), int((y - origin[1]) / res)

    for (lx, ly), o in zip(lights, on, strict=True):
        along_x = bool(rng.random() < 0.5)
        hw, hh = (0.6, 0.3) if along_x else (0.3, 0.6)
        a, b = to_px(lx - hw, ly - hh), to_px(lx + hw, ly + hh)
        cv2.rectangle(img, a, b, (235, 240, 245, int(255 * o)), -1)
        cv2.rectangle(img, a, b, (150, 150, 150, 0), 1)
    for _ in range(int(w * h * res * res / 25)):  # vents and smoke detectors
        x, y = int(rng.integers(w)), int(rng.integers(h))
        if rng.random() < 0.5:
            s = int(0.25 / res)
            cv2.rectangle(img, (x, y), (x + s, y + s), (150, 150, 155, 0), -1)
            for k in range(2, s, 3):
                cv2.line(img, (x + 1, y + k), (x + s - 1, y + k), (110, 110, 115, 0), 1)
        else:
            cv2.circle(img, (x, y), max(1, int(0.06 / res)), (245, 245, 245, 0), -1)
    return img
