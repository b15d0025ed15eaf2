"""The NetVLAD layer against the paper's definition, written out naively here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netvlad_ros.model.netvlad import NetVLAD


def naive_netvlad(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Per-image, per-cluster loops over the paper's formula (float64)."""
    out = []
    for img in x.double():
        feats = img.flatten(1).T  # (N, D)
        feats = feats / feats.norm(dim=1, keepdim=True)
        logits = feats @ w.double().T + b.double()  # (N, K)
        a = torch.softmax(logits, dim=1)
        v = []
        for k in range(c.shape[0]):
            residual = (a[:, k : k + 1] * (feats - c[k].double())).sum(0)
            v.append(residual / residual.norm())
        v = torch.cat(v)
        out.append(v / v.norm())
    return torch.stack(out)


@pytest.fixture
def layer() -> NetVLAD:
    torch.manual_seed(0)
    net = NetVLAD(num_clusters=5, dim=16)
    with torch.no_grad():
        net.assignment.weight.normal_()
        net.assignment.bias.normal_()
        net.centroids.normal_(0, 0.3)
    return net


def test_vectorised_equals_naive_loop(layer):
    x = torch.randn(3, 16, 6, 7)
    got = layer(x)
    want = naive_netvlad(
        x, layer.assignment.weight.view(5, 16), layer.assignment.bias, layer.centroids.detach()
    )
    assert got.shape == (3, 5 * 16)
    assert torch.allclose(got.double(), want, atol=1e-5)


def test_output_unit_norm(layer):
    out = layer(torch.randn(4, 16, 5, 5) * 10)
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)


def test_invariant_to_spatial_permutation(layer):
    x = torch.randn(2, 16, 4, 9)
    perm = torch.randperm(36)
    shuffled = x.flatten(2)[:, :, perm].reshape(
        2, 16, 6, 6
    )  # other shape too: only the set of positions counts
    assert torch.allclose(layer(x), layer(shuffled), atol=1e-6)


def test_large_alpha_gives_classic_hard_vlad():
    rng = np.random.default_rng(1)
    k, d = 6, 8
    centroids = rng.normal(size=(k, d)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    layer = NetVLAD(k, d)
    layer.set_centroids(centroids, alpha=1e5)
    x = torch.from_numpy(rng.normal(size=(1, d, 5, 5)).astype(np.float32))
    # Classic VLAD: hard nearest-centre assignment, residual sums, intra-norm, L2.
    feats = x[0].flatten(1).T.numpy()
    feats = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    nearest = np.argmin(((feats[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    vlad = np.zeros((k, d))
    for i, j in enumerate(nearest):
        vlad[j] += feats[i] - centroids[j]
    norms = np.linalg.norm(vlad, axis=1, keepdims=True)
    vlad = np.where(norms > 0, vlad / np.maximum(norms, 1e-12), 0).reshape(-1)
    vlad /= np.linalg.norm(vlad)
    assert np.allclose(layer(x)[0].detach().numpy(), vlad, atol=1e-5)
    hard = layer.soft_assignment(x)[0].argmax(0).numpy()
    assert (hard == nearest).all()


def test_alpha_from_data_gives_hundredfold_assignment_ratio():
    rng = np.random.default_rng(2)
    d, k = 16, 4
    centres = rng.normal(size=(k, d)).astype(np.float32)
    sample = (centres[rng.integers(0, k, 500)] + 0.4 * rng.normal(size=(500, d))).astype(np.float32)
    layer = NetVLAD(k, d)
    alpha = layer.init_from_clusters(centres, sample)
    assert alpha > 0
    # Assignment weights from the layer itself, on the same (normalised) descriptors.
    x = torch.from_numpy(sample.T.reshape(1, d, 500, 1).copy())
    a = layer.soft_assignment(x)[0].T.detach().double()  # (N, K)
    top2 = a.topk(2, dim=1).values
    mean_log_ratio = torch.log(top2[:, 0] / top2[:, 1]).mean().item()
    assert mean_log_ratio == pytest.approx(math.log(100), rel=1e-3)
    # And the weights follow the paper's coupling w = 2αc, b = −α‖c‖².
    w = layer.assignment.weight.detach().view(k, d)
    assert torch.allclose(w, 2 * alpha * layer.centroids.detach(), rtol=1e-5)
    assert torch.allclose(
        layer.assignment.bias.detach(), -alpha * (layer.centroids.detach() ** 2).sum(1), rtol=1e-5
    )


def test_rejects_wrong_feature_shape(layer):
    with pytest.raises(ValueError, match="expects"):
        layer(torch.randn(1, 15, 4, 4))


def test_gradients_flow_to_all_parameters(layer):
    out = layer(torch.randn(2, 16, 4, 4, requires_grad=True))
    F.mse_loss(out, torch.zeros_like(out)).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
