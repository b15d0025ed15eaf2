"""PCA whitening of global descriptors, fitted with faiss, applied as Linear + L2.

The paper reduces the 32k-D VGG16 NetVLAD vector to 4096-D with PCA whitening
followed by L2 normalisation. faiss.PCAMatrix with eigen_power = −0.5 computes
exactly that projection (y = A(x − μ), rows scaled by λ^−½); we copy A and the
bias −Aμ into a torch Linear so that whitening runs inside the network.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Whitening(nn.Module):
    """y = L2(W x + b)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        if not 0 < out_dim <= in_dim:
            raise ValueError(f"whitening output dim must be in 1..{in_dim}, got {out_dim}")
        self.linear = nn.Linear(in_dim, out_dim, bias=True)
        self.output_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x), p=2, dim=1)


def fit_pca_whitening(
    descriptors: np.ndarray, out_dim: int, eps: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Fit PCA whitening on (N, D) descriptors; return (W (out_dim, D), b (out_dim,)).

    Needs more samples than output dimensions: with N <= out_dim the trailing
    eigenvalues are zero and whitening would divide by them.
    """
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"descriptors must be a 2-D array, got shape {x.shape}")
    n, d = x.shape
    if not 0 < out_dim <= d:
        raise ValueError(f"whitening output dim must be in 1..{d}, got {out_dim}")
    if n <= out_dim:
        raise ValueError(f"PCA whitening to {out_dim}-D needs more than {out_dim} descriptors, got {n}")
    if not np.isfinite(x).all():
        raise ValueError("descriptors for PCA whitening contain NaN or Inf")
    pca = faiss.PCAMatrix(d, out_dim, -0.5, False)
    pca.epsilon = eps
    pca.train(x)
    a = faiss.vector_to_array(pca.A).reshape(-1, d)[:out_dim].astype(np.float64)
    b = faiss.vector_to_array(pca.b)[:out_dim].astype(np.float64)
    # faiss's eigenvalues are of the unnormalised scatter matrix; rescale each
    # output so the training data has unit variance, whatever that convention.
    scale = (x.astype(np.float64) @ a.T + b).std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return (a / scale[:, None]).astype(np.float32), (b / scale).astype(np.float32)


@torch.no_grad()
def load_whitening(layer: Whitening, weight: np.ndarray, bias: np.ndarray) -> None:
    """Copy a fitted projection into the layer (shapes must match)."""
    layer.linear.weight.copy_(torch.as_tensor(weight))
    layer.linear.bias.copy_(torch.as_tensor(bias))
