"""Converters, on small synthetic files written in the official structures.

The MATLAB file is written the way hloc reads the official models: a struct
``net`` with ``layers`` (a cell array of structs with ``weights``) and
``meta.normalization.averageImage``. The expected descriptor is computed here
the way hloc's NetVLAD head computes it (D x K residuals flattened
dimension-major, then the whitening conv), independently of our layer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.io import savemat

from netvlad_ros.model import load_model
from netvlad_ros.model.convert import (
    VGG_CONV_INDICES,
    ConversionError,
    convert_matlab_struct,
    convert_pytorch_netvlad,
)

VGG_CHANNELS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
K, WHITE = 4, 16


def write_matlab_struct(path, rng):
    layers = []
    convs = iter(zip(VGG_CONV_INDICES, VGG_CHANNELS, strict=True))
    nxt = next(convs)
    cin = 3
    for i in range(34):
        layer = {"name": f"layer{i}", "type": "relu", "weights": np.empty((0,), dtype=object)}
        if nxt is not None and i == nxt[0]:
            cout = nxt[1]
            w = rng.normal(0, 0.05, (3, 3, cin, cout)).astype(np.float32)  # S x S x IN x OUT
            layer = {
                "name": f"conv{i}",
                "type": "conv",
                "weights": np.array([w, rng.normal(size=cout).astype(np.float32)], dtype=object),
            }
            cin = cout
            nxt = next(convs, None)
        layers.append(layer)
    score_w = rng.normal(size=(512, K)).astype(np.float32)
    centres = rng.normal(size=(512, K)).astype(np.float32)
    layers[30] = {"name": "netvlad", "type": "custom", "weights": np.array([score_w, -centres], dtype=object)}
    white_w = rng.normal(size=(1, 1, 512 * K, WHITE)).astype(np.float32)
    white_b = rng.normal(size=(WHITE,)).astype(np.float32)
    layers[33] = {"name": "WPCA", "type": "conv", "weights": np.array([white_w, white_b], dtype=object)}
    cell = np.empty((len(layers),), dtype=object)
    for i, layer in enumerate(layers):
        cell[i] = layer
    mean = np.array([[[122.7, 114.9, 101.6]]], np.float32)
    savemat(path, {"net": {"layers": cell, "meta": {"normalization": {"averageImage": mean}}}})
    return {
        "convs": layers,
        "score_w": score_w,
        "centres": centres,
        "white_w": white_w,
        "white_b": white_b,
        "mean": mean,
    }


def hloc_style_head(local: torch.Tensor, score_w, centres, white_w, white_b) -> torch.Tensor:
    """hloc's NetVLAD + whitening on (1, D, N) local features: D x K residuals, D-major flatten."""
    x = F.normalize(local, dim=1)
    scores = torch.softmax(torch.einsum("dk,bdn->bkn", torch.from_numpy(score_w), x), dim=1)
    c = torch.from_numpy(centres)  # D x K
    diff = x.unsqueeze(2) - c.unsqueeze(0).unsqueeze(-1)  # (B, D, K, N)
    desc = (scores.unsqueeze(1) * diff).sum(-1)  # (B, D, K)
    desc = F.normalize(desc, dim=1).reshape(1, -1)
    desc = F.normalize(desc, dim=1)
    w = torch.from_numpy(white_w.reshape(512 * K, WHITE))
    return F.normalize(desc @ w + torch.from_numpy(white_b), dim=1)


@pytest.fixture(scope="module")
def matlab_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mat")
    src = write_matlab_struct(tmp / "Pitts30K_struct.mat", np.random.default_rng(0))
    out = convert_matlab_struct(tmp / "Pitts30K_struct.mat", tmp / "vgg16_pitts30k.safetensors")
    return src, out


def test_matlab_conv_weights_are_permuted(matlab_model):
    src, out = matlab_model
    net, _ = load_model(out)
    w_mat = src["convs"][28]["weights"][0]  # S x S x IN x OUT
    w = net.backbone[28].weight.detach().numpy()  # OUT x IN x S x S
    rng = np.random.default_rng(1)
    for _ in range(20):
        o, i, y, x = (int(rng.integers(0, n)) for n in w.shape)
        assert w[o, i, y, x] == w_mat[y, x, i, o]
    assert np.array_equal(net.backbone[0].bias.detach().numpy(), src["convs"][0]["weights"][1])


def test_matlab_card_and_preprocessing(matlab_model):
    src, out = matlab_model
    _, card = load_model(out)
    assert (card.backbone, card.cut, card.num_clusters, card.whitening_dim) == ("vgg16", "conv5_3", K, WHITE)
    assert card.assignment_bias is False
    assert np.allclose(card.preprocessing.mean, src["mean"].reshape(-1))
    assert card.preprocessing.std == (1.0, 1.0, 1.0) and card.preprocessing.color_order == "RGB"
    assert card.provenance["format"] == "matlab-struct"


def test_matlab_head_matches_hloc_computation(matlab_model):
    src, out = matlab_model
    net, _ = load_model(out)
    local = torch.randn(1, 512, 5, 7)
    ours = net.whitening(net.pool(local))
    want = hloc_style_head(local.flatten(2), src["score_w"], src["centres"], src["white_w"], src["white_b"])
    assert torch.allclose(ours, want, atol=1e-5)


def test_matlab_without_whitening(tmp_path):
    mat = tmp_path / "m.mat"
    write_matlab_struct(mat, np.random.default_rng(0))
    out = convert_matlab_struct(mat, tmp_path / "nowhite.safetensors", whiten=False)
    _, card = load_model(out)
    assert card.whitening_dim == 0 and card.descriptor_dim == 512 * K


def test_matlab_wrong_structure_is_named(tmp_path):
    savemat(tmp_path / "bad.mat", {"something": np.zeros(3)})
    with pytest.raises(ConversionError, match="expected a struct 'net'"):
        convert_matlab_struct(tmp_path / "bad.mat", tmp_path / "x.safetensors")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(ConversionError, match="not a readable MATLAB file"):
        convert_matlab_struct(tmp_path / "junk.mat", tmp_path / "x.safetensors")


def nanne_checkpoint(rng, parallel=False, vladv2=False):
    import torchvision

    vgg = torchvision.models.vgg16(weights=None)
    encoder = torch.nn.Sequential(*list(vgg.features.children())[:-2])
    prefix = "encoder.module." if parallel else "encoder."
    sd = {prefix + k: v for k, v in encoder.state_dict().items()}
    sd["pool.conv.weight"] = torch.from_numpy(rng.normal(size=(K, 512, 1, 1)).astype(np.float32))
    if vladv2:
        sd["pool.conv.bias"] = torch.from_numpy(rng.normal(size=(K,)).astype(np.float32))
    sd["pool.centroids"] = torch.from_numpy(rng.random((K, 512)).astype(np.float32))
    return {
        "epoch": 7,
        "state_dict": sd,
        "recalls": {1: np.float64(0.81), 5: np.float64(0.9)},
        "best_score": np.float64(0.9),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.0001, "params": [0, 1]}]},
        "parallel": parallel,
    }


@pytest.mark.parametrize(("parallel", "vladv2"), [(False, False), (True, True)])
def test_pytorch_netvlad_checkpoint(tmp_path, parallel, vladv2):
    ckpt = nanne_checkpoint(np.random.default_rng(2), parallel, vladv2)
    torch.save(ckpt, tmp_path / "checkpoint.pth.tar")
    out = convert_pytorch_netvlad(tmp_path / "checkpoint.pth.tar", tmp_path / "nanne.safetensors")
    net, card = load_model(out)
    sd = ckpt["state_dict"]
    prefix = "encoder.module." if parallel else "encoder."
    assert torch.equal(net.backbone[28].weight, sd[prefix + "28.weight"])
    assert torch.equal(net.pool.centroids, sd["pool.centroids"])
    assert torch.equal(net.pool.assignment.weight, sd["pool.conv.weight"])
    assert card.assignment_bias is vladv2
    assert card.provenance["epoch"] == 7.0 and card.provenance["best_score"] == pytest.approx(0.9)
    assert card.preprocessing.mean == pytest.approx((123.675, 116.28, 103.53))


def test_pytorch_checkpoint_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    ckpt = nanne_checkpoint(np.random.default_rng(3))
    ckpt["extra"] = Evil()
    torch.save(ckpt, tmp_path / "checkpoint.pth.tar")
    with pytest.raises(ConversionError, match="cannot be read safely"):
        convert_pytorch_netvlad(tmp_path / "checkpoint.pth.tar", tmp_path / "x.safetensors")
    assert not marker.exists()


def test_pytorch_checkpoint_without_netvlad_is_named(tmp_path):
    torch.save({"state_dict": {"encoder.0.weight": torch.zeros(1)}}, tmp_path / "c.pth.tar")
    with pytest.raises(ConversionError, match="not a NetVLAD checkpoint"):
        convert_pytorch_netvlad(tmp_path / "c.pth.tar", tmp_path / "x.safetensors")
