"""Baseline pooling heads, PCA whitening and the torchvision backbones' cuts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netvlad_ros.model.backbones import backbone_spec, build_backbone
from netvlad_ros.model.pooling import AvgPool, GeM, MaxPool
from netvlad_ros.model.whitening import Whitening, fit_pca_whitening, load_whitening


def test_pooling_heads_match_their_definitions():
    x = torch.rand(2, 8, 5, 6) + 0.01
    avg = x.mean((2, 3))
    mx = x.flatten(2).max(2).values
    assert torch.allclose(AvgPool(8)(x), avg / avg.norm(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(MaxPool(8)(x), mx / mx.norm(dim=1, keepdim=True), atol=1e-6)
    gem1 = GeM(8, p=1.0)(x)
    assert torch.allclose(gem1, avg / avg.norm(dim=1, keepdim=True), atol=1e-5)
    # Large p tends to max pooling.
    assert torch.allclose(GeM(8, p=200.0)(x), MaxPool(8)(x), atol=2e-2)


def test_pca_whitening_decorrelates_and_equalises_variance():
    rng = np.random.default_rng(0)
    n, d, out = 4000, 32, 8
    mixing = rng.normal(size=(d, d)) * np.linspace(3, 0.1, d)
    x = (rng.normal(size=(n, d)) @ mixing + 5).astype(np.float32)
    w, b = fit_pca_whitening(x, out)
    y = x @ w.T + b
    assert np.allclose(y.mean(0), 0, atol=1e-3)
    cov = np.cov(y.T)
    assert np.allclose(cov, np.eye(out), atol=0.05)
    layer = Whitening(d, out)
    load_whitening(layer, w, b)
    got = layer(torch.from_numpy(x[:5])).detach().numpy()
    want = y[:5] / np.linalg.norm(y[:5], axis=1, keepdims=True)
    assert np.allclose(got, want, atol=1e-4)


def test_pca_whitening_needs_more_samples_than_dims():
    with pytest.raises(ValueError, match="needs more than 16"):
        fit_pca_whitening(np.random.rand(10, 32).astype(np.float32), 16)


@pytest.mark.parametrize("name", ["vgg16", "resnet18", "resnet50"])
def test_torchvision_backbones_cut_at_the_paper_layer(name):
    spec = backbone_spec(name)
    net = build_backbone(name, weights="none").eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, spec.channels, 64 // spec.stride, 96 // spec.stride)
    if name == "vgg16":
        assert isinstance(list(net.children())[-1], torch.nn.Conv2d)  # conv5_3, before its ReLU
        assert (out < 0).any()


def test_torchvision_imagenet_needs_a_file_or_explicit_download():
    with pytest.raises(ValueError, match="allow_download"):
        build_backbone("resnet18", weights="imagenet")


def test_torchvision_weights_from_local_file(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    net = build_backbone("resnet18", weights=tmp_path / "r18.pth")
    assert torch.equal(net[4][0].conv1.weight, ref.layer1[0].conv1.weight)


def test_unknown_backbone_and_cut_are_named():
    with pytest.raises(ValueError, match="unknown backbone 'alexnet'"):
        backbone_spec("alexnet")
    with pytest.raises(ValueError, match=r"stage1\.\.stage7"):
        backbone_spec("efficientnet_lite0", "stage9")
