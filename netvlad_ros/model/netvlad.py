"""The NetVLAD pooling layer (Arandjelović et al., CVPR 2016, arXiv 1511.07247).

Given local descriptors x_i (the last conv layer, D channels at N positions):

    a_k(x_i) = softmax_k(w_k · x_i + b_k)            soft assignment (1x1 conv)
    V(k)     = Σ_i a_k(x_i) (x_i − c_k)              residuals to K centres
    V        = L2(flatten(intra_L2(V)))              intra-normalisation, then L2

w_k, b_k and c_k are decoupled parameters (the paper's choice). The residual sum
is computed as  A·Xᵀ − (Σ_i a_k(x_i)) c_k , one batched matrix product: no loop
over clusters, so the cost is that of a single (K×N)·(N×D) GEMM per image.
The output is flattened cluster-major: element k·D + d is V(k)_d.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class NetVLAD(nn.Module):
    """NetVLAD layer: (B, D, H, W) local features -> (B, K·D) unit-norm descriptors."""

    def __init__(
        self, num_clusters: int, dim: int, normalize_input: bool = True, assignment_bias: bool = True
    ):
        super().__init__()
        if num_clusters < 1 or dim < 1:
            raise ValueError(f"NetVLAD needs num_clusters >= 1 and dim >= 1, got {num_clusters}, {dim}")
        self.num_clusters = num_clusters
        self.dim = dim
        self.normalize_input = normalize_input
        self.assignment = nn.Conv2d(dim, num_clusters, kernel_size=1, bias=assignment_bias)
        self.centroids = nn.Parameter(torch.rand(num_clusters, dim))
        self.output_dim = num_clusters * dim

    def soft_assignment(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D, H, W) -> (B, K, H·W) assignment weights; each column sums to 1."""
        if self.normalize_input:
            x = F.normalize(x, p=2, dim=1)
        return F.softmax(self.assignment(x).flatten(2), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"NetVLAD expects (B, {self.dim}, H, W) features, got {tuple(x.shape)}")
        if self.normalize_input:
            x = F.normalize(x, p=2, dim=1)
        a = F.softmax(self.assignment(x).flatten(2), dim=1)  # (B, K, N)
        feats = x.flatten(2)  # (B, D, N)
        vlad = torch.bmm(a, feats.transpose(1, 2))  # (B, K, D): Σ_i a_ik x_i
        vlad = vlad - a.sum(dim=2, keepdim=True) * self.centroids.unsqueeze(0)
        vlad = F.normalize(vlad, p=2, dim=2)  # intra-normalisation
        return F.normalize(vlad.flatten(1), p=2, dim=1)

    @torch.no_grad()
    def init_from_clusters(self, centroids: np.ndarray, descriptors: np.ndarray) -> float:
        """Initialise from k-means centres c_k and a sample of local descriptors.

        Sets w_k = 2·α·c_k and b_k = −α·‖c_k‖², so that the soft assignment is
        softmax(−α‖x − c_k‖²) (the ‖x‖² term cancels in the softmax). α comes
        from the data: the mean gap between the squared distances to the nearest
        and second-nearest centre is made to correspond to a 100:1 assignment
        ratio, α = −ln(0.01) / mean(d₂ − d₁). Returns α.
        """
        centroids = np.asarray(centroids, dtype=np.float32)
        descriptors = np.asarray(descriptors, dtype=np.float32)
        if centroids.shape != (self.num_clusters, self.dim):
            raise ValueError(f"centroids must be ({self.num_clusters}, {self.dim}), got {centroids.shape}")
        if descriptors.ndim != 2 or descriptors.shape[1] != self.dim or len(descriptors) < 2:
            raise ValueError(f"descriptors must be (N >= 2, {self.dim}), got {descriptors.shape}")
        if self.normalize_input:
            descriptors = descriptors / np.maximum(np.linalg.norm(descriptors, axis=1, keepdims=True), 1e-12)
        if self.num_clusters > 1:
            d2 = (
                (descriptors**2).sum(1, keepdims=True)
                - 2.0 * descriptors @ centroids.T
                + (centroids**2).sum(1)[None, :]
            )
            d2.sort(axis=1)
            gap = float(np.mean(d2[:, 1] - d2[:, 0]))
            alpha = -math.log(0.01) / max(gap, 1e-12)
        else:
            alpha = 1.0
        self.set_centroids(centroids, alpha)
        return alpha

    @torch.no_grad()
    def set_centroids(self, centroids: np.ndarray, alpha: float) -> None:
        """Set c_k and the coupled initial assignment w_k = 2αc_k, b_k = −α‖c_k‖²."""
        c = torch.as_tensor(np.asarray(centroids, dtype=np.float32))
        self.centroids.copy_(c)
        self.assignment.weight.copy_((2.0 * alpha * c).view(self.num_clusters, self.dim, 1, 1))
        if self.assignment.bias is not None:
            self.assignment.bias.copy_(-alpha * (c**2).sum(dim=1))
