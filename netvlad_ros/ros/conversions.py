"""Conversions between ROS image messages and numpy BGR arrays, and between stamps and seconds.

Decoding (``image_msg_to_bgr``, ``compressed_msg_to_bgr``, :class:`ImageDecodeError`,
the limits and :data:`SUPPORTED_ENCODINGS`) lives in the ROS-free
:mod:`netvlad_ros.sensors.image_codec` (bag tools need it without ROS) and is
re-exported here; this module adds the message constructors and stamp helpers.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image

from netvlad_ros.sensors.image_codec import (
    _ENCODINGS,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    _check_size,
    compressed_msg_to_bgr,
    image_msg_to_bgr,
)

_NS_PER_SEC = 1_000_000_000
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "bgr_to_compressed_msg",
    "bgr_to_image_msg",
    "compressed_msg_to_bgr",
    "image_msg_to_bgr",
    "ns_to_stamp",
    "sec_to_stamp",
    "stamp_to_ns",
    "stamp_to_sec",
]


def _bgr_input(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 BGR (or HxW grey), got shape {arr.shape}")
    _check_size(arr.shape[1], arr.shape[0])
    return np.ascontiguousarray(arr)


def _mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """Sample a BGR image on a Bayer pattern given as ROS spells it (``rggb`` = R G / G B)."""
    channel = {"r": 2, "g": 1, "b": 0}
    out = np.empty(bgr.shape[:2], bgr.dtype)
    for k, letter in enumerate(pattern):
        dy, dx = divmod(k, 2)
        out[dy::2, dx::2] = bgr[dy::2, dx::2, channel[letter]]
    return out


def _from_bgr(bgr: np.ndarray, encoding: str) -> np.ndarray:
    """Lay a uint8 BGR image out as ``encoding`` expects (native byte order)."""
    if encoding.startswith("bayer_"):
        pattern = encoding[6:10]
        mosaic = _mosaic(bgr, pattern)
        return mosaic.astype(np.uint16) * 257 if encoding.endswith("16") else mosaic
    kind, channels, _ = _ENCODINGS[encoding]
    if channels == 1:
        out = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    elif channels == 2:
        raise ValueError(f"encoding {encoding!r} (YUV 4:2:2) is decode-only")
    elif encoding.startswith("rgb"):
        out = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA if channels == 4 else cv2.COLOR_BGR2RGB)
    else:
        out = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA) if channels == 4 else bgr
    return out.astype(np.uint16) * 257 if kind == "u2" else out


def bgr_to_image_msg(
    img: np.ndarray,
    encoding: str = "bgr8",
    stamp: Time | float | None = None,
    frame_id: str = "",
    *,
    big_endian: bool = False,
    step_padding: int = 0,
) -> Image:
    """Build a ``sensor_msgs/Image`` from a uint8 BGR (or grey) array, for tests and tools.

    ``encoding`` is any decodable encoding except the YUV ones; 16-bit encodings
    store ``v * 257`` (so 255 -> 65535). ``big_endian`` and ``step_padding`` (extra
    zero bytes at the end of each row) produce the less common wire layouts that
    :func:`image_msg_to_bgr` must handle. ``stamp`` is a ``Time`` or seconds.
    """
    if encoding not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}")
    if step_padding < 0:
        raise ValueError(f"step_padding must be >= 0, got {step_padding}")
    pixels = _from_bgr(_bgr_input(img), encoding)
    height, width = pixels.shape[:2]
    if pixels.dtype.itemsize > 1:
        pixels = pixels.astype(pixels.dtype.newbyteorder(">" if big_endian else "<"))
    row = pixels.reshape(height, -1).view(np.uint8)
    step = row.shape[1] + step_padding
    data = np.zeros((height, step), np.uint8)
    data[:, : row.shape[1]] = row
    msg = Image()
    msg.header.stamp = _as_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.step = height, width, step
    msg.encoding = encoding
    msg.is_bigendian = bool(big_endian and pixels.dtype.itemsize > 1)
    msg.data = data.tobytes()
    return msg


def bgr_to_compressed_msg(
    img: np.ndarray,
    fmt: str = "jpeg",
    stamp: Time | float | None = None,
    frame_id: str = "",
    quality: int = 90,
) -> CompressedImage:
    """Encode a uint8 BGR (or grey) array as a ``sensor_msgs/CompressedImage`` (``jpeg`` or ``png``)."""
    fmt_l = fmt.lower()
    if fmt_l in ("jpeg", "jpg"):
        ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif fmt_l == "png":
        ext, params = ".png", []
    else:
        raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
    ok, enc = cv2.imencode(ext, _bgr_input(img), params)
    if not ok:  # pragma: no cover - OpenCV encodes any valid uint8 BGR image
        raise ValueError(f"OpenCV failed to encode a {fmt} image")
    msg = CompressedImage()
    msg.header.stamp = _as_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.format = "jpeg" if ext == ".jpg" else "png"
    msg.data = enc.tobytes()
    return msg


# --- stamps -------------------------------------------------------------------------------


def stamp_to_ns(stamp: Any) -> int:
    """Exact integer nanoseconds of a ``builtin_interfaces/Time`` (``sec * 1e9 + nanosec``)."""
    return int(stamp.sec) * _NS_PER_SEC + int(stamp.nanosec)


def stamp_to_sec(stamp: Any) -> float:
    """Seconds (float) of a ``builtin_interfaces/Time``.

    A float64 holds epoch times to ~0.24 us; use :func:`stamp_to_ns` when exact
    nanoseconds matter (e.g. as dictionary keys).
    """
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


def ns_to_stamp(ns: int) -> Time:
    """``builtin_interfaces/Time`` from integer nanoseconds (negative allowed; ``nanosec`` stays in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), _NS_PER_SEC)
    if not _INT32_MIN <= sec <= _INT32_MAX:
        raise ValueError(f"time {ns} ns is outside the int32 seconds range of builtin_interfaces/Time")
    return Time(sec=sec, nanosec=nanosec)


def sec_to_stamp(seconds: float) -> Time:
    """``builtin_interfaces/Time`` nearest (to the nanosecond) to ``seconds``.

    The integer part is split off first (``x - floor(x)`` is exact in binary floating
    point) so large epoch times do not lose the fraction; a fraction that rounds to
    1e9 ns carries into ``sec``. Negative times give ``sec < 0`` and ``nanosec >= 0``.
    """
    x = float(seconds)
    if not math.isfinite(x):
        raise ValueError(f"time must be finite, got {seconds!r}")
    whole = math.floor(x)
    nanosec = round((x - whole) * _NS_PER_SEC)
    if nanosec >= _NS_PER_SEC:
        whole, nanosec = whole + 1, nanosec - _NS_PER_SEC
    if not _INT32_MIN <= whole <= _INT32_MAX:
        raise ValueError(f"time {seconds!r} s is outside the int32 seconds range of builtin_interfaces/Time")
    return Time(sec=int(whole), nanosec=int(nanosec))


def _as_stamp(stamp: Time | float | None) -> Time:
    if stamp is None:
        return Time()
    if isinstance(stamp, Time):
        return stamp
    return sec_to_stamp(float(stamp))
