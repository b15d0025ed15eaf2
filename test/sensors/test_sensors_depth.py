"""Depth decoding (real sensor_msgs/Image messages: 16UC1 millimetres, 32FC1 metres, row
padding, big-endian) and pairing with colour by stamp, every failure counted by reason."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import Image

from netvlad_ros.sensors.depth import (
    DEPTH_ERROR_REASONS,
    DepthError,
    DepthPairer,
    DepthParams,
    depth_msg_to_metres,
    depth_to_metres,
)


def msg(arr: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    a = arr.astype(arr.dtype.newbyteorder(">" if bigendian else "<"))
    rows = a.view(np.uint8).reshape(a.shape[0], -1)
    if pad:
        rows = np.hstack([rows, np.zeros((rows.shape[0], pad), np.uint8)])
    h, w = arr.shape
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=rows.shape[1],
                 data=rows.tobytes())  # fmt: skip


def test_16uc1_millimetres_and_32fc1_metres_decode_with_nan_for_no_return() -> None:
    mm = np.array([[0, 1000], [2500, 65535]], np.uint16)
    for kw in ({}, {"pad": 4}, {"bigendian": True}):
        out = depth_msg_to_metres(msg(mm, "16UC1", **kw))
        assert out.dtype == np.float32 and np.isnan(out[0, 0])
        np.testing.assert_allclose(out[[0, 1, 1], [1, 0, 1]], [1.0, 2.5, 65.535], rtol=1e-6)
    m = np.array([[np.nan, 1.5], [np.inf, -2.0]], np.float32)
    out = depth_msg_to_metres(msg(m, "32FC1", pad=8))
    assert out[0, 1] == 1.5 and np.isnan(out[0, 0]) and np.isnan(out[1, 0]) and np.isnan(out[1, 1])
    assert np.isnan(depth_to_metres(np.zeros((2, 2), np.float32), "32FC1")).all()  # 0 = no return


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: msg(np.zeros((2, 2), np.uint8), "mono8"), "depth_bad_encoding"),
        (lambda: Image(height=0, width=4, encoding="16UC1", step=8), "depth_malformed"),
        (lambda: Image(height=2, width=4, encoding="16UC1", step=4, data=bytes(8)), "depth_malformed"),
        (lambda: Image(height=2, width=4, encoding="16UC1", step=8, data=bytes(10)), "depth_malformed"),
    ],
)
def test_bad_depth_messages_name_their_reason(make, reason) -> None:
    with pytest.raises(DepthError) as err:
        depth_msg_to_metres(make())
    assert err.value.reason == reason and reason in DEPTH_ERROR_REASONS


def test_pairing_by_stamp_counts_every_failure() -> None:
    p = DepthPairer(DepthParams(tolerance_s=0.02, buffer_size=3))
    good = np.full((4, 6), 1500, np.uint16)
    assert p.lookup(1.0, 6, 4).reason == "depth_missing"  # nothing buffered yet
    p.add(1.01, msg(good, "16UC1"))
    found = p.lookup(1.0, 6, 4)
    assert (
        found.depth is not None
        and found.depth[0, 0] == pytest.approx(1.5)
        and found.dt == pytest.approx(0.01)
    )
    assert p.lookup(1.05, 6, 4).reason == "depth_missing"  # 40 ms away: outside the tolerance
    assert p.lookup(1.0, 12, 8).reason == "depth_wrong_size"  # not aligned with the colour image
    p.add(2.0, msg(np.zeros((4, 6), np.uint16), "16UC1"))
    assert p.lookup(2.0, 6, 4).reason == "depth_invalid"  # all zero: no pixel has a depth
    p.add(3.0, msg(good.astype(np.uint8), "8UC1"))
    assert p.lookup(3.0, 6, 4).reason == "depth_bad_encoding"
    assert p.counts == {"depth_missing": 2, "depth_wrong_size": 1, "depth_invalid": 1,
                        "depth_bad_encoding": 1, "depth_malformed": 0}  # fmt: skip
    assert p.paired == 1
    p.add(4.0, msg(good, "16UC1"))  # buffer_size 3: the oldest (1.01) is gone
    assert len(p) == 3 and p.lookup(1.0, 6, 4).reason == "depth_missing"
    with pytest.raises(DepthError, match="not finite"):
        p.add(float("nan"), msg(good, "16UC1"))
    p.clear()
    assert len(p) == 0 and sum(p.counts.values()) == 0


def test_wait_for_returns_when_the_late_depth_arrives_and_never_waits_for_a_dead_stream() -> None:
    import threading
    import time

    pairer = DepthPairer(DepthParams(wait_s=5.0))
    t0 = time.monotonic()
    assert pairer.wait_for(10.0) is False  # no depth stream at all: no wait
    assert time.monotonic() - t0 < 0.5  # measured ~0 ms; 5 s if it waited
    depth = np.full((4, 6), 1.5, np.float32)
    depth_msg = msg(depth, "32FC1")
    pairer.add(9.9, depth_msg)
    # The colour image at 10.0 came first; its depth arrives 0.3 s later on another thread.
    threading.Timer(0.3, pairer.add, args=(10.0, depth_msg)).start()
    t0 = time.monotonic()
    assert pairer.wait_for(10.0) is True
    waited = time.monotonic() - t0
    assert 0.25 <= waited < 3.0  # waited for the message (~0.3 s), not for the 5 s timeout
    assert pairer.lookup(10.0, 6, 4).dt == 0.0  # the exact-stamp depth, not the earlier one
    # A stream whose newest depth is > DEPTH_GAP_S (1 s) older than the image has stopped.
    t0 = time.monotonic()
    assert pairer.wait_for(11.5) is False
    assert time.monotonic() - t0 < 0.5
    # A live stream that is late beyond wait_s: the wait ends at the timeout.
    t0 = time.monotonic()
    assert pairer.wait_for(10.5, timeout_s=0.2) is False
    assert 0.15 <= time.monotonic() - t0 < 3.0
