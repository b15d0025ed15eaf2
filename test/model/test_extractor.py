"""DescriptorExtractor: input handling, batching, colour order, devices, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from netvlad_ros.model import DescriptorExtractor


@pytest.fixture(scope="module")
def extractor(small_model):
    return DescriptorExtractor(small_model, device="cpu", batch_size=4)


def test_output_shape_dtype_norm(extractor, scenes):
    d = extractor(scenes[:5])
    assert d.shape == (5, extractor.dim) and d.dtype == np.float32
    assert np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)


def test_batching_does_not_change_descriptors(extractor, scenes):
    together = extractor(scenes[:6])
    alone = np.concatenate([extractor([s]) for s in scenes[:6]])
    assert np.allclose(together, alone, atol=1e-5)


def test_mixed_sizes_in_one_call(extractor, scenes):
    tall = cv2.resize(scenes[0], (200, 300))
    out = extractor([scenes[1], tall, scenes[2]])
    assert np.allclose(out[0], extractor([scenes[1]])[0], atol=1e-5)
    assert np.allclose(out[1], extractor([tall])[0], atol=1e-5)


def test_colour_orders_and_channels_agree(extractor, scenes):
    bgr = scenes[3]
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    assert np.allclose(extractor([bgr], color="bgr"), extractor([rgb], color="rgb"), atol=1e-6)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    assert np.allclose(extractor([bgra]), extractor([bgr]), atol=1e-6)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    three = np.repeat(gray[:, :, None], 3, axis=2)
    assert np.allclose(extractor([gray]), extractor([three]), atol=1e-6)
    assert np.allclose(extractor([gray[:, :, None]]), extractor([three]), atol=1e-6)


def test_stacked_array_input(extractor, scenes):
    stack = np.stack(scenes[:3])
    assert np.allclose(extractor(stack), extractor(scenes[:3]), atol=1e-6)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((100, 100, 3), np.float32), "dtype must be uint8"),
        (np.zeros((100, 100), np.uint16), "convert 16-bit"),
        (np.zeros((1, 1, 3), np.uint8), "too small"),
        (np.zeros((100, 100, 5), np.uint8), "HxWx4"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_inputs_raise_clear_errors(extractor, image, message):
    with pytest.raises(ValueError, match=message):
        extractor([image])


def test_bad_image_is_named_by_index(extractor, scenes):
    with pytest.raises(ValueError, match=r"image 1: .*dtype"):
        extractor([scenes[0], scenes[1].astype(np.float32)])


def test_no_images_and_bad_options(extractor, small_model):
    with pytest.raises(ValueError, match="no images"):
        extractor([])
    with pytest.raises(ValueError, match="color must be"):
        extractor([np.zeros((64, 64, 3), np.uint8)], color="hsv")
    with pytest.raises(ValueError, match="fp16"):
        DescriptorExtractor(small_model, device="cpu", fp16=True)
    with pytest.raises(ValueError, match="device must be"):
        DescriptorExtractor(small_model, device="tpu")


def test_cuda_requested_without_cuda(small_model):
    import torch

    if torch.cuda.is_available():
        ex = DescriptorExtractor(small_model, device="cuda", fp16=True)
        assert ex.device.type == "cuda"
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            DescriptorExtractor(small_model, device="cuda")
        assert DescriptorExtractor(small_model, device="auto").device.type == "cpu"


def test_huge_image_is_downscaled_not_refused(extractor, scenes):
    big = cv2.resize(scenes[4], (8000, 8000), interpolation=cv2.INTER_NEAREST)
    d = extractor([big])
    assert d.shape == (1, extractor.dim) and np.isfinite(d).all()
