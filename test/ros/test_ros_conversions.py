"""netvlad_ros.ros.conversions: Image / CompressedImage <-> BGR, stamps.

Expected pixels come from hand-built wire bytes (what each encoding means), from an
independent implementation (rosbags-image) or from OpenCV's own demosaicing of a
uniform colour, never from the functions under test.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rosbags.image import image_to_cvimage
from sensor_msgs.msg import CompressedImage, Image

from netvlad_ros.ros.conversions import (
    SUPPORTED_ENCODINGS,
    ImageDecodeError,
    bgr_to_compressed_msg,
    bgr_to_image_msg,
    compressed_msg_to_bgr,
    image_msg_to_bgr,
    ns_to_stamp,
    sec_to_stamp,
    stamp_to_ns,
    stamp_to_sec,
)
from netvlad_ros.sensors.image_codec import DECODE_ERROR_REASONS


def raw_msg(
    encoding: str, width: int, height: int, row: bytes, step: int | None = None, big: bool = False
) -> Image:
    """Image whose every row is ``row`` followed by 0xEE padding up to ``step``."""
    step = len(row) if step is None else step
    data = (row + b"\xee" * (step - len(row))) * height
    return Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=big, data=data)


# ----------------------------------------------------------------------------- wire meaning


@pytest.mark.parametrize(
    ("encoding", "pixel", "bgr"),
    [
        ("bgr8", b"\x0a\x14\x1e", (10, 20, 30)),
        ("rgb8", b"\x0a\x14\x1e", (30, 20, 10)),
        ("bgra8", b"\x0a\x14\x1e\x28", (10, 20, 30)),
        ("rgba8", b"\x0a\x14\x1e\x28", (30, 20, 10)),
        ("mono8", b"\x4d", (77, 77, 77)),
        ("8UC1", b"\x4d", (77, 77, 77)),
        ("8UC3", b"\x01\x02\x03", (1, 2, 3)),
        ("8UC4", b"\x01\x02\x03\x04", (1, 2, 3)),
        # 16-bit little-endian, values 257*k -> k
        ("mono16", (257 * 200).to_bytes(2, "little"), (200, 200, 200)),
        ("16UC1", (257 * 9).to_bytes(2, "little"), (9, 9, 9)),
        ("rgb16", b"".join((257 * v).to_bytes(2, "little") for v in (30, 20, 10)), (10, 20, 30)),
        ("bgr16", b"".join((257 * v).to_bytes(2, "little") for v in (30, 20, 10)), (30, 20, 10)),
        ("rgba16", b"".join((257 * v).to_bytes(2, "little") for v in (30, 20, 10, 1)), (10, 20, 30)),
        ("bgra16", b"".join((257 * v).to_bytes(2, "little") for v in (30, 20, 10, 1)), (30, 20, 10)),
    ],
)
@pytest.mark.parametrize(("width", "pad"), [(4, 0), (5, 3), (7, 1)])
def test_wire_bytes_decode_to_expected_bgr(
    encoding: str, pixel: bytes, bgr: tuple, width: int, pad: int
) -> None:
    msg = raw_msg(encoding, width, 3, pixel * width, step=len(pixel) * width + pad)
    out = image_msg_to_bgr(msg)
    assert out.shape == (3, width, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out == np.array(bgr, np.uint8)).all()


def test_big_endian_mono16_and_odd_step() -> None:
    values = [0, 128, 129, 257 * 100, 65535]  # round(v / 257): 0, 0, 1, 100, 255
    row_be = b"".join(v.to_bytes(2, "big") for v in values)
    msg = raw_msg(
        "mono16", len(values), 2, row_be, step=len(row_be) + 1, big=True
    )  # odd step: unaligned rows
    out = image_msg_to_bgr(msg)
    assert out[:, :, 0].tolist() == [[0, 0, 1, 100, 255]] * 2
    assert (out[:, :, 0] == out[:, :, 2]).all()
    # the same bytes read as little-endian are different numbers
    msg.is_bigendian = False
    assert image_msg_to_bgr(msg)[0, 2, 0] == 128  # 0x0081 read as 0x8100 = 33024 -> 128


def test_mono16_minmax_scaling_stretches_range() -> None:
    row = b"".join(v.to_bytes(2, "little") for v in (1000, 1500, 2000))
    out = image_msg_to_bgr(raw_msg("16UC1", 3, 1, row), scaling16="minmax")
    assert out[0, :, 1].tolist() == [0, 128, 255]
    flat = image_msg_to_bgr(
        raw_msg("16UC1", 3, 1, row * 0 + (7).to_bytes(2, "little") * 3), scaling16="minmax"
    )
    assert (flat == 0).all()
    with pytest.raises(ValueError, match="scaling16"):
        image_msg_to_bgr(raw_msg("16UC1", 3, 1, row), scaling16="log")


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"])
def test_matches_rosbags_image_on_unpadded_images(encoding: str) -> None:
    rng = np.random.default_rng(7)
    nbytes = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2}[encoding]
    w, h = 13, 6
    data = rng.integers(0, 256, w * h * nbytes, dtype=np.uint8).tobytes()
    msg = Image(height=h, width=w, encoding=encoding, step=w * nbytes, data=data)
    ref = image_to_cvimage(msg, "mono16" if encoding == "mono16" else "bgr8")
    ours = image_msg_to_bgr(msg)
    if encoding == "mono16":
        assert np.array_equal(ours[:, :, 0], np.rint(ref / 257.0).astype(np.uint8))
    else:
        assert np.array_equal(ours, ref)


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_uniform_colour_demosaics_to_that_colour(pattern: str, bits: int) -> None:
    b, g, r = 40, 120, 210
    value = {"r": r, "g": g, "b": b}
    h, w = 8, 10
    mosaic = np.zeros((h, w), np.uint16 if bits == 16 else np.uint8)
    for k, letter in enumerate(pattern):  # ROS: pattern letters are the top-left 2x2 block, row by row
        dy, dx = divmod(k, 2)
        mosaic[dy::2, dx::2] = value[letter] * (257 if bits == 16 else 1)
    msg = Image(
        height=h,
        width=w,
        encoding=f"bayer_{pattern}{bits}",
        step=w * bits // 8,
        data=mosaic.astype("<u2" if bits == 16 else "u1").tobytes(),
    )
    out = image_msg_to_bgr(msg)
    assert (out[2:-2, 2:-2] == np.array([b, g, r], np.uint8)).all()


@pytest.mark.parametrize(
    ("encoding", "layout"), [("uyvy", "UYVY"), ("yuv422", "UYVY"), ("yuyv", "YUYV"), ("yuv422_yuy2", "YUYV")]
)
def test_yuv422_byte_order(encoding: str, layout: str) -> None:
    y0, y1, u, v = 60, 200, 128, 128  # two grey pixels, dark then bright
    quad = bytes([u, y0, v, y1]) if layout == "UYVY" else bytes([y0, u, y1, v])
    out = image_msg_to_bgr(raw_msg(encoding, 4, 2, quad * 2))
    dark, bright = out[0, 0].astype(int), out[0, 1].astype(int)
    assert dark.max() - dark.min() <= 1 and bright.max() - bright.min() <= 1  # grey
    assert dark[0] < 80 < 180 < bright[0]


# ----------------------------------------------------------------------------- round trips


COLOUR_EXACT = [
    e
    for e in SUPPORTED_ENCODINGS
    if e in ("bgr8", "rgb8", "bgra8", "rgba8", "8UC3", "8UC4", "bgr16", "rgb16", "bgra16", "rgba16")
]
GREY = [e for e in SUPPORTED_ENCODINGS if e in ("mono8", "8UC1", "mono16", "16UC1")]


@pytest.mark.parametrize("encoding", COLOUR_EXACT + GREY)
@pytest.mark.parametrize(("width", "pad", "big"), [(8, 0, False), (7, 5, False), (9, 3, True), (1, 1, True)])
def test_round_trip_every_encoding(encoding: str, width: int, pad: int, big: bool) -> None:
    rng = np.random.default_rng(width * 31 + pad)
    img = rng.integers(0, 256, (5, width, 3), dtype=np.uint8)
    msg = bgr_to_image_msg(img, encoding, stamp=12.5, frame_id="cam", big_endian=big, step_padding=pad)
    assert msg.header.frame_id == "cam" and (msg.header.stamp.sec, msg.header.stamp.nanosec) == (
        12,
        500_000_000,
    )
    out = image_msg_to_bgr(msg)
    if encoding in GREY:
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        assert np.array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))
    else:
        assert np.array_equal(out, img)


def test_bgr_to_image_msg_wire_layout() -> None:
    img = np.array([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]], np.uint8)  # 1x3 BGR
    rgb = bgr_to_image_msg(img, "rgb8", step_padding=2)
    assert (rgb.width, rgb.height, rgb.step) == (3, 1, 11)
    assert bytes(rgb.data) == bytes([3, 2, 1, 6, 5, 4, 9, 8, 7, 0, 0])
    grey = np.full((1, 2), 2, np.uint8)
    be = bgr_to_image_msg(grey, "mono16", big_endian=True)
    assert be.is_bigendian and bytes(be.data) == (2 * 257).to_bytes(2, "big") * 2
    assert not bgr_to_image_msg(grey, "mono8", big_endian=True).is_bigendian  # 1-byte data has no order
    with pytest.raises(ValueError, match="encoding"):
        bgr_to_image_msg(img, "32FC1")
    with pytest.raises(ValueError, match="uint8"):
        bgr_to_image_msg(img.astype(np.float32))


def test_compressed_round_trips() -> None:
    yy, xx = np.mgrid[0:48, 0:64]
    img = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=2).astype(np.uint8)  # smooth: JPEG-friendly
    png = bgr_to_compressed_msg(img, "png", stamp=3.0, frame_id="c")
    assert png.format == "png" and png.header.frame_id == "c"
    assert np.array_equal(compressed_msg_to_bgr(png), img)
    jpg = bgr_to_compressed_msg(img, "jpeg", quality=95)
    out = compressed_msg_to_bgr(jpg)
    assert out.shape == img.shape and np.abs(out.astype(int) - img).mean() < 3
    # grey and 16-bit PNGs come back as 8-bit BGR
    ok, grey16 = cv2.imencode(".png", np.full((4, 5), 257 * 33, np.uint16))
    assert ok
    out16 = compressed_msg_to_bgr(CompressedImage(format="png", data=grey16.tobytes()))
    assert out16.shape == (4, 5, 3) and out16.dtype == np.uint8 and (out16 == 33).all()
    with pytest.raises(ValueError, match="fmt"):
        bgr_to_compressed_msg(img, "gif")


# ----------------------------------------------------------------------------- bad input


def _good() -> Image:
    return raw_msg("rgb8", 4, 3, b"\x01\x02\x03" * 4)


@pytest.mark.parametrize(
    ("mutate", "match", "reason"),
    [
        (
            lambda m: setattr(m, "encoding", "32FC1"),
            "unsupported image encoding '32FC1'",
            "unsupported_encoding",
        ),
        (lambda m: setattr(m, "encoding", ""), "unsupported image encoding", "unsupported_encoding"),
        (lambda m: setattr(m, "step", 11), "step=11 is smaller than one row", "step_too_small"),
        (
            lambda m: setattr(m, "data", bytes(m.data)[:-1]),
            "data has 35 bytes, fewer than step",
            "truncated_data",
        ),
        (lambda m: setattr(m, "data", b""), "data has 0 bytes", "truncated_data"),
        (lambda m: setattr(m, "width", 0), "zero size", "zero_size"),
        (lambda m: setattr(m, "height", 0), "zero size", "zero_size"),
        (lambda m: setattr(m, "width", 100_000), "beyond the limit", "too_large"),
        (
            lambda m: (setattr(m, "width", 20_000), setattr(m, "height", 20_000)),
            "beyond the limit",
            "too_large",
        ),
        (
            lambda m: (setattr(m, "encoding", "uyvy"), setattr(m, "width", 3), setattr(m, "step", 6)),
            "even width",
            "odd_width",
        ),
    ],
)
def test_bad_image_raises_image_decode_error(mutate, match: str, reason: str) -> None:
    msg = _good()
    image_msg_to_bgr(msg)  # the unmutated message is fine
    mutate(msg)
    with pytest.raises(ImageDecodeError, match=match) as info:
        image_msg_to_bgr(msg)
    assert info.value.reason == reason


def test_bad_compressed_raises_image_decode_error() -> None:
    img = np.random.default_rng(3).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    jpg = bytes(bgr_to_compressed_msg(img, "jpeg").data)
    png = bytes(bgr_to_compressed_msg(img, "png").data)
    cases = [
        ("no data", "corrupt_compressed", CompressedImage(format="jpeg", data=b"")),
        ("truncated", "truncated_jpeg", CompressedImage(format="jpeg", data=jpg[: len(jpg) // 2])),
        ("cannot decode", "corrupt_compressed", CompressedImage(format="png", data=png[: len(png) // 2])),
        ("cannot decode", "corrupt_compressed", CompressedImage(format="jpeg", data=b"this is not an image")),
        (
            "compressed depth",
            "compressed_depth",
            CompressedImage(format="16UC1; compressedDepth png", data=png),
        ),
        # the format string is free text: words in it must not change the reason
        ("truncated", "truncated_jpeg", CompressedImage(format="zero size; no data", data=jpg[:-2])),
    ]
    for match, reason, msg in cases:
        with pytest.raises(ImageDecodeError, match=match) as info:
            compressed_msg_to_bgr(msg)
        assert info.value.reason == reason, (match, str(info.value))
    # a PNG header claiming 30000 x 30000 px is refused before OpenCV allocates 2.7 GB
    bomb = bytearray(png)
    bomb[16:24] = (30000).to_bytes(4, "big") * 2
    with pytest.raises(ImageDecodeError, match="beyond the limit") as info:
        compressed_msg_to_bgr(CompressedImage(format="png", data=bytes(bomb)))
    assert info.value.reason == "too_large"


def test_image_decode_error_is_value_error() -> None:
    assert issubclass(ImageDecodeError, ValueError)


# ----------------------------------------------------------------------------- fuzz


def _random_image_msg(rng: np.random.Generator) -> Image:
    enc = str(rng.choice([*SUPPORTED_ENCODINGS, "32FC1", "rgb8 ", "RGB8", "", "bayer_xyzw8", "16SC1"]))
    width, height = int(rng.integers(0, 40)), int(rng.integers(0, 40))
    if rng.random() < 0.05:
        width = int(rng.integers(0, 2**32))
    if rng.random() < 0.05:
        height = int(rng.integers(0, 2**32))
    step = int(rng.integers(0, 200)) if rng.random() < 0.5 else width * int(rng.integers(1, 9))
    step = min(step, 2**32 - 1)
    n = int(rng.integers(0, 5000)) if rng.random() < 0.5 else min(step * height, 20000)
    data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    return Image(
        height=height, width=width, encoding=enc, step=step, is_bigendian=bool(rng.random() < 0.5), data=data
    )


def _random_compressed_msg(rng: np.random.Generator, seeds: list[bytes]) -> CompressedImage:
    data = bytearray(seeds[int(rng.integers(len(seeds)))])
    action = int(rng.integers(4))
    if action == 0:  # flip bytes anywhere, headers included
        for _ in range(int(rng.integers(1, 20))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
    elif action == 1:
        data = data[: int(rng.integers(0, len(data)))]
    elif action == 2:
        data = bytearray(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes())
    else:  # splice
        cut = int(rng.integers(len(data)))
        data = data[:cut] + data[cut + int(rng.integers(0, 50)) :]
    return CompressedImage(
        format=str(rng.choice(["jpeg", "png", "", "rgb8; jpeg compressed bgr8"])), data=bytes(data)
    )


def test_fuzz_only_image_decode_error() -> None:
    rng = np.random.default_rng(20240601)
    img = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    seeds = [bytes(bgr_to_compressed_msg(img, f).data) for f in ("jpeg", "png")]
    seeds.append(bytes(bgr_to_compressed_msg(img[:, :, 0], "png").data))
    decoded = rejected = 0
    for i in range(1000):
        msg = _random_image_msg(rng) if i % 2 == 0 else _random_compressed_msg(rng, seeds)
        try:
            out = image_msg_to_bgr(msg) if i % 2 == 0 else compressed_msg_to_bgr(msg)
        except ImageDecodeError as exc:
            assert exc.reason in DECODE_ERROR_REASONS, (exc.reason, str(exc))
            rejected += 1
            continue
        decoded += 1
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        if i % 2 == 0:
            assert out.shape[:2] == (msg.height, msg.width)
    # both outcomes are exercised, so the fuzzer is not trivially rejecting everything
    assert decoded > 50 and rejected > 300, (decoded, rejected)


# ----------------------------------------------------------------------------- stamps


def test_stamps_exact_nanoseconds() -> None:
    t = Time(sec=1_700_000_000, nanosec=123_456_789)
    assert stamp_to_ns(t) == 1_700_000_000_123_456_789
    assert ns_to_stamp(stamp_to_ns(t)) == t
    assert ns_to_stamp(-1) == Time(sec=-1, nanosec=999_999_999)
    assert math.isclose(stamp_to_sec(t), 1_700_000_000.123456789, abs_tol=1e-6)
    assert sec_to_stamp(12.5) == Time(sec=12, nanosec=500_000_000)
    assert sec_to_stamp(-0.25) == Time(sec=-1, nanosec=750_000_000)
    assert sec_to_stamp(0.999_999_999_9) == Time(sec=1, nanosec=0)  # rounding carries into sec
    assert sec_to_stamp(1e-9) == Time(sec=0, nanosec=1)
    # large epoch: the float's nearest nanosecond, fraction not lost to the 1.7e18 magnitude
    x = 1_700_000_000.25
    assert sec_to_stamp(x) == Time(sec=1_700_000_000, nanosec=250_000_000)
    for ns in (0, 1, 999_999_999, 86_400 * 10**9 + 7):
        assert sec_to_stamp(ns / 1e9) == ns_to_stamp(ns)
    for bad in (float("nan"), float("inf"), 2.0**31, -(2.0**31) - 1):
        with pytest.raises(ValueError):
            sec_to_stamp(bad)


def test_rosbags_messages_decode_like_rclpy_messages() -> None:
    """Messages read from bags by rosbags (numpy data, same field names) go through the same path."""
    from rosbags.typesys import Stores, get_typestore

    types = get_typestore(Stores.ROS2_KILTED).types
    img = np.random.default_rng(5).integers(0, 256, (4, 7, 3), dtype=np.uint8)
    ours = bgr_to_image_msg(img, "rgb8", stamp=2.25, step_padding=3)
    bag_msg = types["sensor_msgs/msg/Image"](
        header=types["std_msgs/msg/Header"](
            stamp=types["builtin_interfaces/msg/Time"](sec=2, nanosec=250_000_000), frame_id=""
        ),
        height=ours.height,
        width=ours.width,
        encoding=ours.encoding,
        is_bigendian=0,
        step=ours.step,
        data=np.frombuffer(bytes(ours.data), np.uint8),
    )
    assert np.array_equal(image_msg_to_bgr(bag_msg), img)
    assert stamp_to_sec(bag_msg.header.stamp) == 2.25
