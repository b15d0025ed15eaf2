"""Artificial light of the synthetic renderer: street lamps, ceiling lights and headlights,
computed from the depth image.

Why: at night a place looks nothing like by day: what is seen is what the lamps light
(pools of light under each street lamp, falling off with distance), what the camera's own
headlights reach (bright near, dark beyond ~20 m) and what glows (lit windows, lamp
heads). Given the rendered depth, every pixel's 3-D point is known, so the light at it is
a sum over the light sources near the camera. The light varies smoothly, so it is
computed on a 4x coarser grid and interpolated (a few milliseconds per frame).

Light model (relative units; 1 = the day's diffuse light): a lamp of strength ``s`` at
``L`` lights a point ``P`` with ``s * (0.2 + 0.8 * down) / (1 + |P - L|^2 / r0^2)``
where ``down`` in [0, 1] is the cosine of the angle below the lamp (lamps shine down);
headlights give ``h * exp(-x^2 / 0.18) * beam(y) / (1 + (z / 9)^2)`` at normalised image
coordinates (x, y) and depth z, ``beam`` cutting off just above the horizon.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["LIGHT_DOWNSAMPLE", "light_map"]

LIGHT_DOWNSAMPLE = 4


def light_map(
    depth: np.ndarray,
    position: np.ndarray,
    yaw_rad: float,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    lamps: np.ndarray,
    lamp_strength: float,
    lamp_r0_m: float,
    headlights: float,
    downsample: int = LIGHT_DOWNSAMPLE,
) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution (H, W) float32 light from the lamps and from the headlights.

    ``depth``: (H, W) metres along the optical axis (+inf: sky, no light). ``position``:
    camera centre (3,) ENU; ``lamps``: (M, 3) light positions ENU; lamps farther than
    ``12 * lamp_r0_m`` from the camera are left out. ``downsample``: the coarse grid's factor.
    """
    h, w = depth.shape
    k = downsample
    hs, ws = max(1, h // k), max(1, w // k)
    z = cv2.resize(depth, (ws, hs), interpolation=cv2.INTER_NEAREST)
    finite = np.isfinite(z)
    z = np.where(finite, z, 0.0).astype(np.float32)
    us = ((np.arange(ws, dtype=np.float32) + 0.5) * (w / ws) - 0.5 - cx) / fx
    vs = (cy - ((np.arange(hs, dtype=np.float32) + 0.5) * (h / hs) - 0.5)) / fy  # up is positive
    c, s = np.float32(np.cos(yaw_rad)), np.float32(np.sin(yaw_rad))
    # world point: position + z * (fwd + right * u + up * v); fwd = (c, s, 0), right = (s, -c, 0)
    px = position[0] + z * (c + s * us[None, :])
    py = position[1] + z * (s - c * us[None, :])
    pz = position[2] + z * vs[:, None]
    lamp_l = np.zeros((hs, ws), np.float32)
    if lamp_strength > 0 and len(lamps):
        near = lamps[np.sum((lamps[:, :2] - position[None, :2]) ** 2, axis=1) < (12.0 * lamp_r0_m) ** 2]
        inv_r0 = np.float32(1.0 / lamp_r0_m**2)
        pts = np.stack([px.ravel(), py.ravel(), pz.ravel()], axis=1).astype(np.float32)  # (P, 3)
        for chunk in range(0, len(near), 16):  # (lamps, pixels) at a time, bounded memory
            lp = near[chunk : chunk + 16].astype(np.float32)
            d = pts[None, :, :] - lp[:, None, :]
            r2 = np.einsum("lpk,lpk->lp", d, d) + np.float32(0.05)
            down = np.clip(-d[..., 2] / np.sqrt(r2), 0.0, 1.0)
            lamp_l += (((0.2 + 0.8 * down) / (1.0 + r2 * inv_r0)).sum(axis=0)).reshape(hs, ws)
        lamp_l *= np.float32(lamp_strength)
    head_l = np.zeros((hs, ws), np.float32)
    if headlights > 0:
        beam = np.clip((0.06 - vs) / 0.08, 0.0, 1.0)[:, None]
        head_l = (headlights * np.exp(-(us * us) / 0.18)[None, :] * beam / (1.0 + (z / 9.0) ** 2)).astype(
            np.float32
        )
        head_l *= np.minimum(z / 1.5, 1.0)  # nothing closer than the bonnet
    lamp_l *= finite
    head_l *= finite
    up = (w, h)
    return (
        cv2.resize(lamp_l, up, interpolation=cv2.INTER_LINEAR),
        cv2.resize(head_l, up, interpolation=cv2.INTER_LINEAR),
    )
