"""The place-recognition network: backbone -> pooling head -> optional whitening."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .backbones import build_backbone
from .card import ModelCard
from .netvlad import NetVLAD
from .pooling import AvgPool, GeM, MaxPool
from .whitening import Whitening


class PlaceNet(nn.Module):
    """Normalised image tensor (B, 3, H, W) -> (B, descriptor_dim) unit-norm descriptors."""

    def __init__(self, backbone: nn.Module, pool: nn.Module, whitening: Whitening | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = pool
        self.whitening = whitening

    def local_features(self, x: torch.Tensor) -> torch.Tensor:
        """The cut layer's activations, (B, local_dim, h, w)."""
        return self.backbone(x)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The descriptor before whitening (what PCA whitening is fitted on)."""
        return self.pool(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.pooled(x)
        return self.whitening(d) if self.whitening is not None else d


def build_network(
    card: ModelCard, backbone_weights: str | Path = "none", allow_download: bool = False
) -> PlaceNet:
    """Build the network a card describes.

    ``backbone_weights="none"`` when the weights come from a model file next;
    ``"imagenet"`` (or a path) to start a new model from pretrained features.
    """
    card.validate()
    backbone = build_backbone(card.backbone, card.cut, backbone_weights, allow_download)
    dim = card.local_dim
    pool: nn.Module
    if card.pooling == "netvlad":
        pool = NetVLAD(card.num_clusters, dim, card.normalize_input, card.assignment_bias)
    elif card.pooling == "avg":
        pool = AvgPool(dim)
    elif card.pooling == "max":
        pool = MaxPool(dim)
    else:
        pool = GeM(dim)
    whitening = Whitening(card.pooled_dim, card.whitening_dim) if card.whitening_dim else None
    return PlaceNet(backbone, pool, whitening)
