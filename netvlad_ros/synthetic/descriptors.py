"""Synthetic descriptors that resemble real place-recognition descriptors (tests, benchmarks).

Uniform random unit vectors in high dimension are all nearly orthogonal, which makes
nearest-neighbour search meaningless. Real keyframe descriptors come from trajectories:
consecutive keyframes are very similar, keyframes of one environment share structure,
and a query is a revisit, slightly closer to its true keyframe than to that keyframe's
neighbours along the route (near-ties, which is what makes approximate search hard). So:

* ``n // traj_len`` trajectories, each in one of ``n_clusters`` environments (random
  unit centres);
* along a trajectory, w_t = rho * w_(t-1) + sqrt(1 - rho^2) * g_t with g ~ N(0, I/D),
  and the keyframe descriptor is normalise(centre + spread * w_t);
* a query is normalise(row + noise * g) for a random map row.

With the defaults (spread 1, rho 0.9, noise 0.3) consecutive keyframes have cosine
~0.95, a query ~0.96 with its source row and ~0.91 with the source's neighbours.
"""

from __future__ import annotations

import numpy as np

__all__ = ["clustered_descriptors", "revisit_queries"]


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def clustered_descriptors(
    n: int,
    dim: int,
    n_clusters: int | None = None,
    spread: float = 1.0,
    rho: float = 0.9,
    traj_len: int = 50,
    seed: int = 0,
    chunk: int = 32768,
) -> np.ndarray:
    """(n, dim) float32 unit-norm trajectory-clustered descriptors, made chunk by chunk.

    Rows are in trajectory order (row i and i+1 are usually consecutive keyframes).
    """
    rng = np.random.default_rng(seed)
    k = n_clusters or max(8, n // 1000)
    centres = _normalise(rng.standard_normal((k, dim), dtype=np.float32))
    out = np.empty((n, dim), np.float32)
    scale = np.float32(1.0 / np.sqrt(dim))
    innov = np.float32(np.sqrt(1.0 - rho * rho))
    traj_per_chunk = max(1, chunk // traj_len)
    row = 0
    while row < n:
        t = min(traj_per_chunk, -(-(n - row) // traj_len))
        centre = centres[rng.integers(0, k, t)]  # (t, dim)
        w = rng.standard_normal((t, dim), dtype=np.float32) * scale
        block = np.empty((t, traj_len, dim), np.float32)
        for step in range(traj_len):
            if step:
                w *= np.float32(rho)
                w += rng.standard_normal((t, dim), dtype=np.float32) * (scale * innov)
            block[:, step] = centre + np.float32(spread) * w
        block = block.reshape(t * traj_len, dim)[: n - row]
        out[row : row + block.shape[0]] = _normalise(block)
        row += block.shape[0]
    return out


def revisit_queries(base: np.ndarray, nq: int, noise: float = 0.3, seed: int = 1) -> np.ndarray:
    """(nq, dim) unit-norm queries, each a noisy copy of a random row of ``base``."""
    rng = np.random.default_rng(seed)
    dim = base.shape[1]
    rows = rng.integers(0, base.shape[0], nq)
    q = base[rows] + rng.standard_normal((nq, dim), dtype=np.float32) * np.float32(noise / np.sqrt(dim))
    return _normalise(q.astype(np.float32))
