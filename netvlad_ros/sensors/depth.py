"""Aligned depth images: decoding ``sensor_msgs/Image`` depth and pairing it with colour by stamp.

Decoding (:func:`depth_msg_to_metres`, duck-typed on the ``sensor_msgs/Image`` fields
like :mod:`.image_codec`): ``16UC1`` (and ``mono16``) are millimetres with 0 = no return
(REP 118), ``32FC1`` metres with NaN / +-inf / 0 = no return; both become float32 metres
with **NaN wherever the depth is unknown** (0, NaN, inf, negative), the one form the
feature extractor reads. ``step`` (row padding) and ``is_bigendian`` are honoured.

Pairing (:class:`DepthPairer`): message_filters is not installable here, and an
approximate-time synchroniser is more than a keyframe needs, so the node keeps the newest
``buffer_size`` depth messages (undecoded: only a keyframe's depth is ever decoded) and,
for a colour image, looks up the nearest one within ``tolerance_s``. Depth travels on its
own topic and often arrives a little after the colour image of the same stamp (a loaded
CPU, a fast replay): while a depth stream is live, :meth:`DepthPairer.wait_for` lets the
caller wait up to ``wait_s`` for it, so a keyframe does not lose its depths (and its loop
closures their metric pose) to message order. Every failed pairing is counted by reason
(``counts``), the node's ``/diagnostics`` keys:

- ``depth_missing``: no depth message within the tolerance (none yet, or a gap);
- ``depth_wrong_size``: the depth image is not the colour image's size (not aligned);
- ``depth_bad_encoding``: an encoding other than 16UC1 / mono16 / 32FC1;
- ``depth_malformed``: zero size, ``step`` shorter than a row, ``data`` truncated;
- ``depth_invalid``: decoded, but no pixel holds a depth (all NaN / zero).

A failed pairing is never fatal: the keyframe is stored without depths and its loop
closures are scale-free (essential matrix) instead of metric (PnP).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import check_fields, param
from .errors import SensorError

__all__ = [
    "DEPTH_ENCODINGS",
    "DEPTH_ERROR_REASONS",
    "DEPTH_GAP_S",
    "DepthError",
    "DepthLookup",
    "DepthPairer",
    "DepthParams",
    "depth_msg_to_metres",
    "depth_to_metres",
]

#: encoding -> (element dtype, metres per unit)
_ENCODINGS: dict[str, tuple[str, float]] = {
    "16UC1": ("u2", 1e-3),
    "mono16": ("u2", 1e-3),
    "32FC1": ("f4", 1.0),
}
#: Depth encodings :func:`depth_msg_to_metres` accepts.
DEPTH_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)
#: Every :attr:`DepthError.reason` / :attr:`DepthLookup.reason` (stable: diagnostics count by them).
DEPTH_ERROR_REASONS: tuple[str, ...] = (
    "depth_missing",
    "depth_wrong_size",
    "depth_bad_encoding",
    "depth_malformed",
    "depth_invalid",
)


class DepthError(SensorError):
    """A depth image cannot be used; ``reason`` is one of :data:`DEPTH_ERROR_REASONS`."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def depth_to_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded depth array (uint16 millimetres or float32 metres) -> float32 metres, NaN = unknown.

    Also for depth from elsewhere than messages (a 16-bit PNG, a synthetic frame's +inf sky).
    Raises :class:`DepthError` ``depth_bad_encoding`` for another encoding or a dtype that
    does not fit it, ``depth_malformed`` for an array that is not 2-D.
    """
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise DepthError(
            f"depth encoding {encoding!r} is not supported; supported: {', '.join(DEPTH_ENCODINGS)}",
            "depth_bad_encoding",
        )
    a = np.asarray(depth)
    if a.ndim != 2 or a.size == 0:
        raise DepthError(f"depth image must be a non-empty 2-D array, got shape {a.shape}", "depth_malformed")
    kind, scale = spec
    if (kind == "u2") != (a.dtype.kind in "ui"):
        raise DepthError(f"depth encoding {encoding!r} does not fit dtype {a.dtype}", "depth_bad_encoding")
    out = a.astype(np.float32) * np.float32(scale)
    with np.errstate(invalid="ignore"):
        out[~(np.isfinite(out) & (out > 0))] = np.nan
    return out


def depth_msg_to_metres(msg: Any) -> np.ndarray:
    """A ``sensor_msgs/Image`` depth message -> float32 (height, width) metres, NaN = unknown.

    Raises :class:`DepthError`: ``depth_bad_encoding`` (not 16UC1 / mono16 / 32FC1),
    ``depth_malformed`` (zero size, ``step`` shorter than a row, ``data`` shorter than
    ``step * height``). The result owns its memory.
    """
    encoding = str(msg.encoding)
    spec = _ENCODINGS.get(encoding)
    if spec is None:
        raise DepthError(
            f"depth encoding {encoding!r} is not supported; supported: {', '.join(DEPTH_ENCODINGS)}",
            "depth_bad_encoding",
        )
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    if width <= 0 or height <= 0:
        raise DepthError(f"depth image has zero size: width={width}, height={height}", "depth_malformed")
    elem = np.dtype(spec[0])
    row = width * elem.itemsize
    if step < row:
        raise DepthError(
            f"depth step={step} is shorter than one row ({width} px x {elem.itemsize} B)", "depth_malformed"
        )
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < step * height:
        raise DepthError(
            f"depth data has {buf.size} bytes, fewer than step*height = {step * height}", "depth_malformed"
        )
    rows = np.ascontiguousarray(buf[: step * height].reshape(height, step)[:, :row])
    wire = elem.newbyteorder(">" if msg.is_bigendian else "<")
    arr = rows.view(wire).reshape(height, width).astype(elem.newbyteorder("="))
    return depth_to_metres(arr, encoding)


@dataclass
class DepthParams:
    """Pairing of depth with colour (the node's ``depth.*`` parameters)."""

    tolerance_s: float = param(
        0.02, "a depth image this close to the colour image's stamp is its depth (s)", range=(0.0, 10.0)
    )
    buffer_size: int = param(30, "newest depth messages kept for pairing", range=(1, 10000), read_only=True)
    wait_s: float = param(
        0.25,
        "while depth is streaming, wait up to this long (wall clock) for the depth of a colour "
        "image that arrived before it (s; 0: do not wait)",
        range=(0.0, 10.0),
    )

    def validate(self) -> None:
        """Raise SensorError naming the first invalid field."""
        check_fields(self, error=SensorError)


DEPTH_GAP_S = 1.0
"""A depth stream whose newest image is this much older (stamp time) than a colour image has
stopped or has a gap: :meth:`DepthPairer.wait_for` does not wait for it (a stream at even
1 Hz is within it; a dead stream must not add ``wait_s`` to every frame)."""


@dataclass(frozen=True)
class DepthLookup:
    """The depth paired with one colour image: ``depth`` float32 metres (NaN = unknown) or
    None with ``reason`` (one of :data:`DEPTH_ERROR_REASONS`) and ``detail`` for people;
    ``dt``: depth stamp minus colour stamp (s), None when nothing was in tolerance."""

    depth: np.ndarray | None
    reason: str | None = None
    detail: str = ""
    dt: float | None = None


class DepthPairer:
    """The newest depth messages and a nearest-stamp lookup for colour images (thread-safe).

    ``add(stamp, msg)`` from the depth callback (any object with the Image fields, or a
    decoded 2-D array with ``encoding`` set); ``lookup(stamp, width, height)`` from the
    colour path. ``counts``: failed pairings by reason since construction (or :meth:`clear`).
    """

    def __init__(self, params: DepthParams | None = None) -> None:
        self.params = params or DepthParams()
        self.params.validate()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._buf: deque[tuple[float, Any]] = deque(maxlen=self.params.buffer_size)
        self.counts: dict[str, int] = dict.fromkeys(DEPTH_ERROR_REASONS, 0)
        self.paired = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._buf)

    def clear(self) -> None:
        """Forget buffered depth and counts (e.g. a restarted bag)."""
        with self._lock:
            self._buf.clear()
            self.counts = dict.fromkeys(DEPTH_ERROR_REASONS, 0)
            self.paired = 0

    def add(self, stamp: float, msg: Any) -> None:
        """Buffer a depth message (decoded only if a colour image pairs with it)."""
        t = float(stamp)
        if not np.isfinite(t):
            raise DepthError(f"depth stamp {stamp!r} is not finite", "depth_malformed")
        with self._lock:
            self._buf.append((t, msg))
            self._arrived.notify_all()

    def wait_for(self, stamp: float, timeout_s: float | None = None) -> bool:
        """Wait until a depth message stamped at or after ``stamp`` is buffered; True when one is.

        Returns at once (False) when nothing is buffered (no depth stream) or the newest depth
        is more than :data:`DEPTH_GAP_S` older than ``stamp`` (the stream stopped), and after
        ``timeout_s`` (default ``params.wait_s``) otherwise. Call it from a worker thread,
        never from the callback that delivers depth.
        """
        t = float(stamp)
        timeout = self.params.wait_s if timeout_s is None else float(timeout_s)

        def done() -> bool:
            return not self._buf or self._buf[-1][0] >= t or self._buf[-1][0] < t - DEPTH_GAP_S

        with self._arrived:
            self._arrived.wait_for(done, timeout=max(timeout, 0.0))
            return bool(self._buf) and self._buf[-1][0] >= t

    def lookup(self, stamp: float, width: int, height: int) -> DepthLookup:
        """The depth for a colour image at ``stamp`` of ``width`` x ``height``, or why there is none."""
        t = float(stamp)
        with self._lock:
            best = min(self._buf, key=lambda e: abs(e[0] - t), default=None)
        tol = self.params.tolerance_s
        if best is None or not abs(best[0] - t) <= tol:
            near = "no depth buffered" if best is None else f"nearest depth {best[0] - t:+.3f} s away"
            return self._fail("depth_missing", f"no depth within {tol} s of {t:.3f} ({near})", None)
        dt = best[0] - t
        msg = best[1]
        try:
            depth = msg if isinstance(msg, np.ndarray) else depth_msg_to_metres(msg)
        except DepthError as exc:
            return self._fail(exc.reason, str(exc), dt)
        if depth.shape != (int(height), int(width)):
            return self._fail(
                "depth_wrong_size",
                f"depth is {depth.shape[1]}x{depth.shape[0]}, the colour image {width}x{height} (not aligned)",
                dt,
            )
        if not np.isfinite(depth).any():
            return self._fail("depth_invalid", "no pixel of the depth image holds a depth (all NaN/zero)", dt)
        with self._lock:
            self.paired += 1
        return DepthLookup(depth, None, "", dt)

    def _fail(self, reason: str, detail: str, dt: float | None) -> DepthLookup:
        with self._lock:
            self.counts[reason] += 1
        return DepthLookup(None, reason, detail, dt)
