"""The network input (``model.preprocess.to_network_input``) against its definition.

Definition (the model card's preprocessing): resize so the longer side is ``max_side``
(area interpolation when shrinking), put the channels in the card's order, then
``(x - mean) / std`` per channel, laid out as float32 (3, H, W).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from netvlad_ros.model.card import Preprocessing
from netvlad_ros.model.preprocess import to_network_input

SPECS = [
    Preprocessing(480, "RGB", (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),  # the default model's
    Preprocessing(640, "RGB", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),  # ImageNet
    Preprocessing(0, "BGR", (103.9, 116.8, 123.7), (1.0, 1.0, 1.0)),  # Caffe VGG (no resize)
]


def _reference(image: np.ndarray, spec: Preprocessing, color: str) -> np.ndarray:
    if image.ndim == 2:
        image = image[:, :, None]
    rgb = {1: lambda a: np.repeat(a, 3, axis=2), 3: lambda a: a, 4: lambda a: a[:, :, :3]}[image.shape[2]](
        image
    )
    if color == "bgr":
        rgb = rgb[:, :, ::-1]  # now RGB
    h, w = rgb.shape[:2]
    if spec.max_side and max(h, w) != spec.max_side:
        s = spec.max_side / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        rgb = cv2.resize(
            np.ascontiguousarray(rgb), size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        )
    ordered = rgb if spec.color_order == "RGB" else rgb[:, :, ::-1]
    x = (ordered.astype(np.float64) - np.asarray(spec.mean)) / np.asarray(spec.std)
    return x.transpose(2, 0, 1)


@pytest.mark.parametrize("spec", SPECS, ids=["default", "imagenet", "caffe"])
@pytest.mark.parametrize("shape", [(480, 640, 3), (300, 200), (300, 200, 1), (240, 320, 4), (200, 400, 3)])
@pytest.mark.parametrize("color", ["bgr", "rgb"])
def test_network_input_is_the_cards_definition(
    spec: Preprocessing, shape: tuple[int, ...], color: str
) -> None:
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    got = to_network_input(image, spec, color)
    want = _reference(image, spec, color)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == want.shape
    # float32 arithmetic: a few ulps of the largest value (255 / std). Measured against float64:
    # 2.4e-7 (default, ImageNet), 6.1e-6 (Caffe, std 1); the bound is 4 ulps of 255 / min(std).
    atol = 4 * np.finfo(np.float32).eps * 255 / min(spec.std)
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def test_bad_image_is_named() -> None:
    with pytest.raises(ValueError, match="dtype must be uint8"):
        to_network_input(np.zeros((64, 64, 3), np.float32), SPECS[0])
    with pytest.raises(ValueError, match="color must be"):
        to_network_input(np.zeros((64, 64, 3), np.uint8), SPECS[0], "yuv")
