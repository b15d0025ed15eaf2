"""Decoding of image messages to numpy BGR arrays, from their fields only (no ROS imports).

Works on anything with the ``sensor_msgs/Image`` fields (``encoding``, ``height``,
``width``, ``step``, ``is_bigendian``, ``data``) or the ``sensor_msgs/CompressedImage``
fields (``format``, ``data``): rclpy messages and messages deserialised from bags by
``rosbags`` alike (duck typing). It lives in ``sensors/`` so that the node and the bag
tools share it without ROS; ``netvlad_ros.ros.conversions`` re-exports it for nodes.

Why not cv_bridge: ROS 2's cv_bridge is not on PyPI and PyPI's ``cv-bridge`` is a
ROS 1 port that is broken with numpy 2. ``rosbags-image`` is correct for unpadded
images but ignores ``step`` (row padding), so raw images are laid out here with numpy
(honouring ``step`` and ``is_bigendian``) and colour conversions are done by OpenCV.

Every malformed message raises :class:`ImageDecodeError` (a
:class:`~netvlad_ros.sensors.errors.SensorError`, so a ``ValueError``) whose
message names the field at fault, so a caller can log it and drop the frame instead
of crashing on an ``IndexError`` deep inside numpy; its ``reason`` attribute (one of
:data:`DECODE_ERROR_REASONS`) says what went wrong in a form a program can count on.

16-bit images (``mono16``, ``16UC1``, ``rgb16`` ... and 16-bit Bayer) are reduced
to 8 bits in one of two ways (``scaling16`` argument):

- ``"full_range"`` (default): ``round(v / 257)``, i.e. 0 -> 0 and 65535 -> 255.
  Deterministic per pixel, so the same scene gives the same descriptor from frame
  to frame; right for cameras that use the full 16-bit range.
- ``"minmax"``: per-image linear stretch of [min, max] to [0, 255] (a constant
  image gives zeros). Use it for 10/12-bit sensors stored in 16 bits, or for depth
  images in millimetres, which are nearly black under ``"full_range"``.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .errors import SensorError

__all__ = [
    "DECODE_ERROR_REASONS",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "compressed_msg_to_bgr",
    "decode_image_msg",
    "image_msg_to_bgr",
]

#: Largest width or height accepted (bigger headers are treated as corrupt).
MAX_IMAGE_SIDE = 1 << 15
#: Largest width * height accepted (128 Mpx).
MAX_IMAGE_PIXELS = 1 << 27


#: Every :attr:`ImageDecodeError.reason`: short snake_case names that callers count by
#: (the node's diagnostics keys ``rejected.<reason>``), so they must stay stable.
DECODE_ERROR_REASONS: tuple[str, ...] = (
    "unsupported_encoding",  # Image.encoding not in SUPPORTED_ENCODINGS
    "zero_size",  # width or height is 0
    "too_large",  # width/height beyond MAX_IMAGE_SIDE / MAX_IMAGE_PIXELS (corrupt header?)
    "step_too_small",  # Image.step shorter than one row
    "truncated_data",  # Image.data shorter than step * height
    "odd_width",  # 4:2:2 YUV encoding with an odd width
    "compressed_depth",  # CompressedImage in compressedDepth format (depth, not a camera image)
    "truncated_jpeg",  # JPEG without its end-of-image marker
    "corrupt_compressed",  # empty CompressedImage.data, or data OpenCV cannot decode
    "decode_error",  # anything else (OpenCV failed on a validated raw image)
)


class ImageDecodeError(SensorError):
    """An image message cannot be turned into a BGR array (bad header, data or codec).

    ``reason`` is one of :data:`DECODE_ERROR_REASONS`, so callers classify the failure
    without parsing the message text, which is for people.
    """

    def __init__(self, message: str, reason: str = "decode_error") -> None:
        super().__init__(message)
        self.reason = reason


# encoding -> (element dtype, channels, OpenCV conversion to BGR or None when already BGR/gray)
# ROS Bayer names give the top-left 2x2 block row by row (rggb: R G / G B); OpenCV names
# its codes after the 2x2 block starting at the second row and column, hence rggb ->
# BayerBG (the same mapping cv_bridge and rosbags-image use; checked by the tests).
_ENCODINGS: dict[str, tuple[str, int, int | None]] = {
    "bgr8": ("u1", 3, None),
    "rgb8": ("u1", 3, cv2.COLOR_RGB2BGR),
    "bgra8": ("u1", 4, cv2.COLOR_BGRA2BGR),
    "rgba8": ("u1", 4, cv2.COLOR_RGBA2BGR),
    "mono8": ("u1", 1, cv2.COLOR_GRAY2BGR),
    "8UC1": ("u1", 1, cv2.COLOR_GRAY2BGR),
    "8UC3": ("u1", 3, None),  # OpenCV convention: 3 unnamed 8-bit channels are BGR
    "8UC4": ("u1", 4, cv2.COLOR_BGRA2BGR),
    "mono16": ("u2", 1, cv2.COLOR_GRAY2BGR),
    "16UC1": ("u2", 1, cv2.COLOR_GRAY2BGR),
    "bgr16": ("u2", 3, None),
    "rgb16": ("u2", 3, cv2.COLOR_RGB2BGR),
    "bgra16": ("u2", 4, cv2.COLOR_BGRA2BGR),
    "rgba16": ("u2", 4, cv2.COLOR_RGBA2BGR),
    "bayer_rggb8": ("u1", 1, cv2.COLOR_BayerBG2BGR),
    "bayer_bggr8": ("u1", 1, cv2.COLOR_BayerRG2BGR),
    "bayer_gbrg8": ("u1", 1, cv2.COLOR_BayerGR2BGR),
    "bayer_grbg8": ("u1", 1, cv2.COLOR_BayerGB2BGR),
    "bayer_rggb16": ("u2", 1, cv2.COLOR_BayerBG2BGR),
    "bayer_bggr16": ("u2", 1, cv2.COLOR_BayerRG2BGR),
    "bayer_gbrg16": ("u2", 1, cv2.COLOR_BayerGR2BGR),
    "bayer_grbg16": ("u2", 1, cv2.COLOR_BayerGB2BGR),
    "uyvy": ("u1", 2, cv2.COLOR_YUV2BGR_UYVY),
    "yuv422": ("u1", 2, cv2.COLOR_YUV2BGR_UYVY),
    "yuyv": ("u1", 2, cv2.COLOR_YUV2BGR_YUY2),
    "yuv422_yuy2": ("u1", 2, cv2.COLOR_YUV2BGR_YUY2),
}

#: Encodings :func:`image_msg_to_bgr` accepts.
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)

_SCALINGS = ("full_range", "minmax")


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has zero size: width={width}, height={height}", "zero_size")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(
            f"image size {width}x{height} is beyond the limit ({MAX_IMAGE_SIDE} per side, "
            f"{MAX_IMAGE_PIXELS} pixels): corrupt header?",
            "too_large",
        )


def _to_uint8(img: np.ndarray, scaling16: str) -> np.ndarray:
    """Reduce a uint16 image to uint8 (see the module docstring for the two scalings)."""
    if img.dtype == np.uint8:
        return img
    if scaling16 == "full_range":
        # round(v / 257) in integers: 257 * k -> k, 65535 -> 255.
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    lo, hi = int(img.min()), int(img.max())
    if hi == lo:
        return np.zeros(img.shape, np.uint8)
    out = (img.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.rint(out).astype(np.uint8)


def image_msg_to_bgr(msg: Any, scaling16: str = "full_range") -> np.ndarray:
    """Convert a ``sensor_msgs/Image`` to a contiguous uint8 ``(height, width, 3)`` BGR array.

    Honours ``step`` (row padding is dropped) and ``is_bigendian`` (for 16-bit
    encodings). See :data:`SUPPORTED_ENCODINGS`; 16-bit images are reduced to 8 bits
    with ``scaling16`` (``"full_range"`` or ``"minmax"``, see the module docstring).
    The result owns its memory (it is not a view of ``msg.data``). Any object with the
    Image fields works (duck typing), e.g. messages read from bags by ``rosbags``.

    Raises:
        ImageDecodeError: unsupported encoding, zero or absurd size, ``step`` smaller
            than one row, ``data`` shorter than ``step * height``, odd width for a
            4:2:2 YUV encoding.
    """
    if scaling16 not in _SCALINGS:
        raise ValueError(f"scaling16 must be one of {_SCALINGS}, got {scaling16!r}")
    encoding = str(msg.encoding)
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}",
            "unsupported_encoding",
        )
    kind, channels, code = spec
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_size(width, height)
    if channels == 2 and width % 2:
        raise ImageDecodeError(f"encoding {encoding!r} needs an even width, got width={width}", "odd_width")
    elem = np.dtype(kind)
    row_bytes = width * channels * elem.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"step={step} is smaller than one row of {width} px x {channels} ch x "
            f"{elem.itemsize} B = {row_bytes} B (encoding {encoding!r})",
            "step_too_small",
        )
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < step * height:
        raise ImageDecodeError(
            f"data has {buf.size} bytes, fewer than step*height = {step}*{height} = {step * height}",
            "truncated_data",
        )
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    wire = elem.newbyteorder(">" if msg.is_bigendian else "<") if elem.itemsize > 1 else elem
    img = np.ascontiguousarray(rows).view(wire).reshape(height, width, channels)
    img = img.astype(elem.newbyteorder("="), copy=False)
    if channels == 1:
        img = img.reshape(height, width)  # type: ignore[assignment]  # gray: 2-D
    try:
        if code is not None:
            img = cv2.cvtColor(img, code)
    except cv2.error as exc:  # pragma: no cover - shapes are validated above
        raise ImageDecodeError(f"OpenCV cannot convert {encoding!r}: {exc}", "decode_error") from exc
    out = _to_uint8(img, scaling16)
    return np.array(out, dtype=np.uint8, order="C", copy=True)


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _peek_size(buf: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG IHDR or JPEG SOF header, or None when not found.

    Only a guard against decompression bombs: a corrupt header claiming e.g.
    30000x30000 px would make OpenCV allocate gigabytes before failing. Anything
    this cannot parse is left to OpenCV.
    """
    if buf[:8] == b"\x89PNG\r\n\x1a\n" and len(buf) >= 24 and buf[12:16] == b"IHDR":
        return int.from_bytes(buf[16:20], "big"), int.from_bytes(buf[20:24], "big")
    if buf[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(buf):
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        if marker in _JPEG_SOF and pos + 9 <= len(buf):
            height = int.from_bytes(buf[pos + 5 : pos + 7], "big")
            width = int.from_bytes(buf[pos + 7 : pos + 9], "big")
            return width, height
        if length < 2:
            return None
        pos += 2 + length
    return None


def compressed_msg_to_bgr(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG, PNG, anything OpenCV reads) to uint8 BGR.

    Grey, 16-bit and alpha images are converted to 8-bit 3-channel BGR by OpenCV
    (``IMREAD_COLOR``). A JPEG without its end-of-image marker (a truncated frame,
    which libjpeg would otherwise pad with grey) is rejected.

    Raises:
        ImageDecodeError: empty data, ``compressedDepth`` format (depth, not a camera
            image), truncated JPEG, data OpenCV cannot decode, or a decoded size beyond
            the limits.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ImageDecodeError(
            f"format {fmt!r} is a compressed depth image, not a camera image", "compressed_depth"
        )
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size == 0:
        raise ImageDecodeError(f"compressed image (format {fmt!r}) has no data", "corrupt_compressed")
    if buf.size >= 2 and buf[0] == 0xFF and buf[1] == 0xD8:
        tail = buf[-1024:].tobytes().rstrip(b"\x00")
        if b"\xff\xd9" not in tail:
            raise ImageDecodeError(
                f"JPEG data ({buf.size} B, format {fmt!r}) is truncated: no EOI marker", "truncated_jpeg"
            )
    size = _peek_size(buf[:65536].tobytes())
    if size is not None:
        _check_size(*size)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageDecodeError(
            f"OpenCV cannot decode compressed image (format {fmt!r}): {exc}", "corrupt_compressed"
        ) from exc
    if img is None or img.size == 0:
        raise ImageDecodeError(
            f"OpenCV cannot decode {buf.size} B of compressed image (format {fmt!r})", "corrupt_compressed"
        )
    _check_size(img.shape[1], img.shape[0])
    return _to_uint8(np.ascontiguousarray(img), "full_range")


def decode_image_msg(msg: Any, scaling16: str = "full_range") -> np.ndarray:
    """Decode either kind of image message to uint8 BGR: CompressedImage when it has a
    ``format`` field, Image otherwise (both field sets are disjoint apart from ``data``)."""
    if hasattr(msg, "format"):
        return compressed_msg_to_bgr(msg)
    return image_msg_to_bgr(msg, scaling16)
