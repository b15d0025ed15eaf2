"""1,200 malformed image messages (seeded) do not take netvlad_localizer down, and each is counted.

Two nodes run side by side in their own processes, one on raw ``image`` and one on
``image/compressed``; each gets 600 broken messages of many kinds (bad encodings,
zero and absurd sizes, short steps, truncated buffers, odd YUV widths, random bytes,
truncated and corrupted JPEGs, compressedDepth, PNG decompression bombs). Sending is
paced in lockstep with the nodes' diagnostics (every 0.05 s): the next message goes out
only once the previous one has been received and rejected, so no message can be skipped
unseen by the latest-frame policy, whatever the CPU speed, and the accounting is exact:
every message is decoded and rejected for a named reason. Afterwards each node still
localizes a real image correctly.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

N_PER_NODE = 600


def bad_raw_messages(n: int, seed: int) -> list:
    from sensor_msgs.msg import Image

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        kind = k % 7
        w, h = int(rng.integers(1, 64)), int(rng.integers(1, 64))
        enc = str(rng.choice(["bgr8", "rgb8", "mono8", "mono16", "bgra8"]))
        ch = {"bgr8": 3, "rgb8": 3, "mono8": 1, "mono16": 2, "bgra8": 4}[enc]
        step = w * ch
        data_len = step * h
        if kind == 0:  # unsupported encoding
            enc = str(rng.choice(["rgb9", "", "32FC1", "jpeg", "BGR8", "nv12"]))
        elif kind == 1:  # zero size
            w, h = (0, h) if rng.random() < 0.5 else (w, 0)
        elif kind == 2:  # step smaller than a row
            step = int(rng.integers(0, max(step, 1)))
        elif kind == 3:  # truncated data
            data_len = int(rng.integers(0, max(data_len, 1)))
        elif kind == 4:  # odd width for 4:2:2
            enc, w = "yuv422", 2 * int(rng.integers(1, 30)) + 1
            step, data_len = 2 * w, 2 * w * h
        elif kind == 5:  # absurd size (corrupt header)
            w, h = int(rng.integers(40_000, 1 << 30)), int(rng.integers(1, 1 << 20))
            step, data_len = w, 16
        else:  # random header fields and random bytes, length never enough
            w, h = int(rng.integers(1, 5000)), int(rng.integers(1, 5000))
            step, data_len = int(rng.integers(0, 20000)), int(rng.integers(0, 64))
        msg = Image(height=h, width=w, encoding=enc, step=max(step, 0), is_bigendian=bool(rng.random() < 0.2))
        msg.data = rng.integers(0, 256, data_len, dtype=np.uint8).tobytes()
        out.append(msg)
    return out


def bad_compressed_messages(n: int, seed: int, scene: np.ndarray) -> list:
    from sensor_msgs.msg import CompressedImage

    rng = np.random.default_rng(seed)
    jpeg = cv2.imencode(".jpg", scene)[1].tobytes()
    out = []
    for k in range(n):
        kind = k % 6
        fmt = "jpeg"
        if kind == 0:  # random bytes
            data = rng.integers(0, 256, int(rng.integers(1, 4000)), dtype=np.uint8).tobytes()
        elif kind == 1:  # truncated JPEG
            data = jpeg[: int(rng.integers(2, len(jpeg) - 100))]
        elif kind == 2:  # empty
            data = b""
        elif kind == 3:  # compressed depth image
            fmt, data = "16UC1; compressedDepth png", jpeg
        elif kind == 4:  # PNG header claiming 100000 x 100000 px
            ihdr = (100_000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
            data = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + ihdr + bytes(4)
            fmt = "png"
        else:  # JPEG markers around garbage
            data = b"\xff\xd8" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes() + b"\xff\xd9"
        msg = CompressedImage(format=fmt)
        msg.data = data
        out.append(msg)
    return out


def test_malformed_images_are_counted_and_survived(start_node, node_client, node_map, scenes):
    from netvlad_ros.ros.conversions import sec_to_stamp, stamp_to_ns

    common = {
        "map_path": str(node_map["path"]),
        "model_path": str(node_map["model"]),
        "device": "cpu",
        "image_qos": "reliable",
        "image_qos_depth": 1000,
        "diagnostics_period_s": 0.05,
        "warn_throttle_s": 1.0,
    }
    raw_child = start_node(common, namespace="/raw", name="raw_node")
    comp_child = start_node({**common, "compressed": True}, namespace="/comp", name="comp_node")
    raw = node_client(namespace="/raw", name="raw_client")
    comp = node_client(namespace="/comp", compressed=True, name="comp_client")
    raw.wait_ready(raw_child)
    comp.wait_ready(comp_child)

    raw_msgs = bad_raw_messages(N_PER_NODE, seed=1)
    comp_msgs = bad_compressed_messages(N_PER_NODE, seed=2, scene=scenes[0])
    pairs = ((raw, raw_child), (comp, comp_child))

    def handled(client, n: int) -> bool:
        if not client.diagnostics:
            return False
        d = client.diagnostics[-1]
        done = int(d["frames_skipped"]) + int(d["rejected_total"]) + int(d["frames_processed"])
        return int(d["frames_received"]) == n and done == n

    for k, (a, b) in enumerate(zip(raw_msgs, comp_msgs, strict=True)):
        stamp = sec_to_stamp(500.0 + 0.01 * k)
        a.header.stamp = b.header.stamp = stamp
        raw.image_pub.publish(a)
        comp.image_pub.publish(b)
        for client, child in pairs:  # lockstep: both nodes have handled message k before k + 1 goes out
            ok = client.ros.spin_until(lambda client=client, n=k + 1: handled(client, n), 30.0)
            assert ok and child.proc.poll() is None, (k, client.diagnostics[-1:], child.stderr_tail())

    for client, child in pairs:
        d = client.diagnostics[-1]
        assert child.proc.poll() is None, child.stderr_tail()
        assert int(d["frames_skipped"]) == 0, d  # paced: nothing was replaced before it was decoded
        assert int(d["frames_processed"]) == 0, "a malformed message was processed as an image"
        assert int(d["rejected_total"]) == N_PER_NODE, d  # every message decoded and rejected
        reasons = {k: int(v) for k, v in d.items() if k.startswith("rejected.") and int(v) > 0}
        assert "rejected.internal_error" not in reasons, reasons
        assert len(reasons) >= 3, reasons
        assert d["_level"] == b"\x00"

    # still alive and correct
    for client, i, t in ((raw, 4, 900.0), (comp, 9, 901.0)):
        client.send_image(scenes[i], t)
        _, rows = client.hypotheses_for(stamp_to_ns(sec_to_stamp(t)))
        assert rows[0]["keyframe_id"] == i
