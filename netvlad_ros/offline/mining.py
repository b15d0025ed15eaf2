"""Weak supervision and hard-negative mining for NetVLAD training (arXiv 1511.07247, Sec. 4).

GPS tags only say where an image was taken, not what it shows, so the paper
trains from *weak* supervision: for a query q,

- potential positives {p_i}: database images within ``pos_radius`` (10 m). At
  least one of them shows the place; which one is decided in descriptor space
  (the one closest to the query, "best positive");
- definite negatives {n_j}: database images farther than ``neg_radius`` (25 m).

Hard-negative mining: from ``num_sampled`` (1,000) random definite negatives
plus the query's hardest negatives of the previous pass (the cache), keep the
``num_negatives`` (10) hardest that violate the margin, i.e. with
d²(q, n) < d²(q, p*) + m. A query with no violating negative contributes no loss
and is skipped. Distances are computed on a descriptor cache (all database and
query descriptors from one network state), refreshed every N queries with
batched inference: :class:`DescriptorCache`.

Neighbourhoods come from scipy's cKDTree. All randomness comes from one numpy
Generator whose state is part of :meth:`HardNegativeMiner.state_dict`, so a
resumed run draws the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from .datasets import PlaceDataset


class MiningError(ValueError):
    """Mining was asked something impossible (bad radii, no usable queries, wrong shapes)."""


@dataclass
class Triplet:
    """One training tuple: query, its best positive and its hardest violating negatives.

    ``sampled``: the negatives that were considered (random sample ∪ cache);
    ``pos_dist_sq``: d²(q, p*) on the cache; ``neg_dist_sq``: d²(q, n) of ``negatives``.
    """

    query: int
    positive: int
    negatives: np.ndarray
    sampled: np.ndarray
    pos_dist_sq: float
    neg_dist_sq: np.ndarray


def neighbours_within(db_utm: np.ndarray, q_utm: np.ndarray, radius: float) -> list[np.ndarray]:
    """Per query, the sorted database indices within ``radius`` metres (cKDTree ball query)."""
    if not radius > 0:
        raise MiningError(f"radius must be positive, got {radius!r}")
    tree = cKDTree(np.asarray(db_utm, dtype=np.float64))
    found = tree.query_ball_point(np.asarray(q_utm, dtype=np.float64), r=radius)
    return [np.array(sorted(f), dtype=np.int64) for f in found]


class HardNegativeMiner:
    """The paper's weak supervision + hard-negative mining with a per-query cache."""

    def __init__(
        self,
        db_utm: np.ndarray,
        q_utm: np.ndarray,
        pos_radius: float = 10.0,
        neg_radius: float = 25.0,
        num_sampled: int = 1000,
        num_negatives: int = 10,
        margin: float = 0.1,
        seed: int = 0,
    ) -> None:
        if not 0 < pos_radius <= neg_radius:
            raise MiningError(f"need 0 < pos_radius <= neg_radius, got {pos_radius}, {neg_radius}")
        if num_sampled < 1 or num_negatives < 1:
            raise MiningError(
                f"num_sampled and num_negatives must be >= 1, got {num_sampled}, {num_negatives}"
            )
        if margin < 0:
            raise MiningError(f"margin must be >= 0, got {margin}")
        self.db_utm = np.asarray(db_utm, dtype=np.float64).reshape(-1, 2)
        self.q_utm = np.asarray(q_utm, dtype=np.float64).reshape(-1, 2)
        self.num_db = len(self.db_utm)
        self.pos_radius, self.neg_radius = float(pos_radius), float(neg_radius)
        self.num_sampled, self.num_negatives, self.margin = (
            int(num_sampled),
            int(num_negatives),
            float(margin),
        )
        self.positives = neighbours_within(self.db_utm, self.q_utm, pos_radius)
        self.non_negatives = neighbours_within(self.db_utm, self.q_utm, neg_radius)
        self.trainable_queries = np.array(
            [
                q
                for q in range(len(self.q_utm))
                if len(self.positives[q]) > 0 and len(self.non_negatives[q]) < self.num_db
            ],
            dtype=np.int64,
        )
        self.rng = np.random.default_rng(seed)
        self.cache: dict[int, np.ndarray] = {}

    @classmethod
    def for_dataset(cls, ds: PlaceDataset, **kwargs: Any) -> HardNegativeMiner:
        """A miner on a dataset's positions; ``pos_radius`` defaults to √nontriv_pos_dist_sq_thr (10 m)
        and ``neg_radius`` to pos_dist_thr (25 m), the official files' thresholds."""
        kwargs.setdefault("pos_radius", float(np.sqrt(ds.nontriv_pos_dist_sq_thr)))
        kwargs.setdefault("neg_radius", ds.pos_dist_thr)
        return cls(ds.db_utm, ds.q_utm, **kwargs)

    def definite_negatives(self, q: int) -> np.ndarray:
        """All database indices farther than ``neg_radius`` from query ``q`` (sorted)."""
        mask = np.ones(self.num_db, dtype=bool)
        mask[self.non_negatives[q]] = False
        return np.flatnonzero(mask)

    def sample_negatives(self, q: int) -> np.ndarray:
        """Up to ``num_sampled`` distinct random definite negatives of ``q`` (uses the miner's RNG)."""
        excluded = self.non_negatives[q]
        available = self.num_db - len(excluded)
        k = min(self.num_sampled, available)
        # Draw k + |excluded| distinct indices, drop the excluded ones: at least k remain.
        draw = self.rng.choice(self.num_db, size=min(self.num_db, k + len(excluded)), replace=False)
        draw = draw[~np.isin(draw, excluded)]
        return np.sort(draw[:k])

    def mine(self, q: int, q_desc: np.ndarray, db_desc: np.ndarray) -> Triplet | None:
        """Mine query ``q`` against the cached descriptors; None when no negative violates the margin.

        ``q_desc`` (D,), ``db_desc`` (N, D): descriptors of the current cache.
        The chosen negatives replace the query's cache entry.
        """
        q = int(q)
        if db_desc.ndim != 2 or db_desc.shape[0] != self.num_db or q_desc.shape != (db_desc.shape[1],):
            raise MiningError(f"descriptor shapes do not fit: query {q_desc.shape}, database {db_desc.shape}")
        pos = self.positives[q]
        if len(pos) == 0:
            return None
        qd = np.asarray(q_desc, dtype=np.float64)
        d_pos = ((np.asarray(db_desc[pos], dtype=np.float64) - qd) ** 2).sum(1)
        best = int(np.argmin(d_pos))
        positive, pos_d2 = int(pos[best]), float(d_pos[best])
        sampled = self.sample_negatives(q)
        if q in self.cache:
            sampled = np.union1d(sampled, self.cache[q])
        if len(sampled) == 0:
            return None
        d_neg = ((np.asarray(db_desc[sampled], dtype=np.float64) - qd) ** 2).sum(1)
        violating = np.flatnonzero(d_neg < pos_d2 + self.margin)
        if len(violating) == 0:
            return None
        hardest = violating[np.argsort(d_neg[violating], kind="stable")[: self.num_negatives]]
        negatives = sampled[hardest]
        self.cache[q] = negatives.copy()
        return Triplet(q, positive, negatives, sampled, pos_d2, d_neg[hardest])

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: the RNG state and the negative cache."""
        return {
            "rng": self.rng.bit_generator.state,
            "cache": {str(k): v.tolist() for k, v in self.cache.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (exact resume)."""
        try:
            self.rng.bit_generator.state = state["rng"]
            self.cache = {int(k): np.asarray(v, dtype=np.int64) for k, v in state["cache"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise MiningError(f"malformed miner state: {exc}") from exc


class DescriptorCache:
    """Descriptors of every database and query image from one network state.

    ``refresh`` runs batched inference (the network in eval mode, no gradient).
    Under torch.distributed each rank describes a strided share of the images
    and the shares are all-gathered, so every rank holds the same full cache.
    """

    def __init__(self) -> None:
        self.db: np.ndarray | None = None
        self.q: np.ndarray | None = None

    @property
    def ready(self) -> bool:
        return self.db is not None and self.q is not None

    def refresh(
        self, net: torch.nn.Module, card: Any, ds: PlaceDataset, device: torch.device, batch_size: int = 16,
        chunk: int = 256,
    ) -> None:  # fmt: skip
        """Recompute all descriptors with ``net`` (a PlaceNet, unwrapped from DDP)."""
        self.db = describe_images(net, card, ds.db_image, ds.num_db, device, batch_size, chunk)
        self.q = describe_images(net, card, ds.query_image, ds.num_queries, device, batch_size, chunk)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The cache as tensors, for a checkpoint."""
        if not self.ready:
            return {}
        return {"cache_db": torch.from_numpy(self.db), "cache_q": torch.from_numpy(self.q)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "cache_db" in tensors and "cache_q" in tensors:
            self.db = tensors["cache_db"].numpy().copy()
            self.q = tensors["cache_q"].numpy().copy()


def describe_images(
    net: torch.nn.Module,
    card: Any,
    load: Any,
    count: int,
    device: torch.device,
    batch_size: int = 16,
    chunk: int = 256,
) -> np.ndarray:
    """(count, D) float32 descriptors of images ``load(0..count-1)`` with ``net``; distributed-aware.

    The network's train/eval mode is restored afterwards.
    """
    from ..model import DescriptorExtractor

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    modes = {m: m.training for m in net.modules()}
    ex = DescriptorExtractor.from_network(net, card, device=str(device), batch_size=batch_size)  # type: ignore[arg-type]  # a PlaceNet (DDP-unwrapped by the caller)
    mine = list(range(rank, count, world))
    parts = []
    for start in range(0, len(mine), chunk):
        idx = mine[start : start + chunk]
        parts.append(ex([load(i) for i in idx]))
    dim = card.descriptor_dim
    local = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    for m, mode in modes.items():
        m.train(mode)
    if world == 1:
        return local
    # All-gather the strided shares (padded to equal length), then interleave them back.
    per_rank = (count + world - 1) // world
    padded = torch.zeros((per_rank, dim), dtype=torch.float32)
    padded[: len(local)] = torch.from_numpy(local)
    backend_device = device if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    padded = padded.to(backend_device)
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    torch.distributed.all_gather(gathered, padded)
    out = np.zeros((count, dim), np.float32)
    for r, g in enumerate(gathered):
        rows = list(range(r, count, world))
        out[rows] = g.cpu().numpy()[: len(rows)]
    return out
