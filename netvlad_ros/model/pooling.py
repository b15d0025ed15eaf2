"""Baseline global pooling heads (the paper's comparison): average, max and GeM.

Each maps (B, D, H, W) local features to a (B, D) L2-normalised descriptor, so
that any backbone can be evaluated with NetVLAD and with these heads alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AvgPool(nn.Module):
    """Global average pooling followed by L2 normalisation."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.output_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.mean(dim=(2, 3)), p=2, dim=1)


class MaxPool(nn.Module):
    """Global max pooling (MAC) followed by L2 normalisation."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.output_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.amax(dim=(2, 3)), p=2, dim=1)


class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al.), learnable exponent p (init 3)."""

    def __init__(self, dim: int, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.output_dim = dim
        self.p = nn.Parameter(torch.tensor([float(p)]))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)
        return F.normalize(pooled, p=2, dim=1)
