"""faiss index configuration and construction for the map database.

All indexes use the inner-product metric: descriptors are L2-normalised, so inner
product equals cosine similarity. Index ids are keyframe ids.

* ``flat``  : exact, ``IndexIDMap2(IndexFlatIP)``. Default. Needs no training.
* ``ivfpq`` : ``IndexIVFPQ`` (ids stored natively). Needs training; see
  :func:`ivfpq_min_train` for the rule. Until it is trained the database answers
  with exact search over its stored descriptors.
* ``hnsw``  : ``IndexIDMap2(IndexHNSWFlat)``. Needs no training; faiss HNSW cannot
  remove vectors, so removal marks the graph stale and it is rebuilt (lazily) from
  the stored descriptors.

Defaults were chosen from measurements (docs/mapdb.md): the smallest settings
reaching recall@1 >= 0.95 against exact search on clustered synthetic descriptors.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import faiss
import numpy as np

_LOG = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "ivfpq", "hnsw")

#: faiss k-means wants at least this many training points per centroid.
TRAIN_POINTS_PER_CENTROID = 39
#: At most this many vectors are used to train an IVF-PQ index (random sample).
MAX_TRAIN_VECTORS = 131072


@dataclass(frozen=True)
class IndexConfig:
    """How the map's descriptors are indexed.

    Attributes:
        kind: "flat" (exact), "ivfpq" or "hnsw".
        nlist: IVF lists; 0 = automatic at training time: ``round(4 * sqrt(N))``,
            at most ``N / 39`` so k-means has 39 points per centroid.
        m: PQ sub-quantizers (bytes per vector with nbits=8); 0 = automatic:
            the largest divisor of D that is <= min(D // 8, 256).
        nbits: bits per PQ sub-quantizer code.
        nprobe: IVF lists visited per query.
        hnsw_m: HNSW graph degree.
        ef_search: HNSW candidate list size at query time (raised to k when smaller).
        ef_construction: HNSW candidate list size while building.
        rerank: approximate indexes fetch this many candidates and re-score them
            exactly with the stored descriptors (0 disables; ignored for "flat").
        use_gpu: clone flat / IVF-PQ indexes to the GPU for unfiltered search when a
            GPU build of faiss is installed and sees a GPU.
    """

    kind: str = "flat"
    nlist: int = 0
    m: int = 0
    nbits: int = 8
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 64
    ef_construction: int = 64
    rerank: int = 32
    use_gpu: bool = True

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"IndexConfig.kind must be one of {INDEX_KINDS}, got {self.kind!r}")
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("kind", "use_gpu"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"IndexConfig.{f.name} must be a non-negative int, got {v!r}")
        if not 1 <= self.nbits <= 16:
            raise ValueError(f"IndexConfig.nbits must be in [1, 16], got {self.nbits}")
        for name in ("nprobe", "hnsw_m", "ef_search", "ef_construction"):
            if getattr(self, name) < 1:
                raise ValueError(f"IndexConfig.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def approximate(self) -> bool:
        """True for indexes whose results may differ from exact search."""
        return self.kind != "flat"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (stored in the manifest)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown IndexConfig fields: {sorted(unknown)}")
        return cls(**d)


def auto_m(dim: int, requested: int) -> int:
    """PQ sub-quantizer count: ``requested`` (must divide dim) or the automatic rule."""
    if requested:
        if dim % requested:
            raise ValueError(f"IndexConfig.m={requested} must divide the descriptor dimension {dim}")
        return requested
    m = max(1, min(dim // 8, 256))
    while dim % m:
        m -= 1
    return m


def ivfpq_min_train(cfg: IndexConfig) -> int:
    """Vectors needed before an IVF-PQ index is trained: 39 per PQ centroid (2**nbits),
    and 39 per IVF list when nlist is fixed."""
    need = TRAIN_POINTS_PER_CENTROID * (1 << cfg.nbits)
    if cfg.nlist:
        need = max(need, TRAIN_POINTS_PER_CENTROID * cfg.nlist)
    return need


def auto_nlist(n: int, requested: int) -> int:
    """IVF list count for ``n`` training vectors."""
    if requested:
        return requested
    return max(1, min(round(4 * math.sqrt(n)), n // TRAIN_POINTS_PER_CENTROID))


@contextmanager
def openmp_threads(n: int) -> Iterator[None]:
    """faiss (OpenMP) runs on at most ``n`` threads in the calling thread, for the block.

    OpenMP's thread count is a setting of the calling thread, so other threads (the node's
    other stages, an offline tool's batch search) are not affected; it is restored after.
    """
    before = faiss.omp_get_max_threads()
    want = max(1, min(before, n))
    if want == before:
        yield
        return
    faiss.omp_set_num_threads(want)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def threads_for_queries(nq: int) -> AbstractContextManager[None]:
    """At most one faiss thread per query (:func:`openmp_threads`) for a search of ``nq`` queries.

    faiss splits one query's flat scan over every OpenMP thread; the scan is memory-bound,
    so the split buys no speed and costs the other threads' CPU (10,000 x 3584 flat on
    2 cores, docs/mapdb.md: ~10 ms wall either way, 20.1 CPU-ms per query on 2 threads
    against 9.6 with this cap).
    In the node, where one query at a time shares two cores with the network, that CPU
    is what the latency target lacks. Batches keep every thread (one query each).
    """
    return openmp_threads(nq)


def new_flat(dim: int) -> faiss.Index:
    """Exact inner-product index whose ids are keyframe ids."""
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def new_hnsw(dim: int, cfg: IndexConfig) -> faiss.Index:
    """Empty HNSW (inner product) index whose ids are keyframe ids."""
    inner = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = cfg.ef_construction
    inner.hnsw.efSearch = cfg.ef_search
    return faiss.IndexIDMap2(inner)


def train_ivfpq(vectors: np.ndarray, cfg: IndexConfig, seed: int = 0) -> faiss.IndexIVFPQ:
    """A trained, empty IVF-PQ index (inner product) for ``vectors`` (N, D) float32."""
    n, dim = vectors.shape
    m = auto_m(dim, cfg.m)
    nlist = auto_nlist(n, cfg.nlist)
    if n < ivfpq_min_train(cfg):
        raise ValueError(f"IVF-PQ needs >= {ivfpq_min_train(cfg)} training vectors, got {n}")
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, cfg.nbits, faiss.METRIC_INNER_PRODUCT)
    # 10 k-means iterations and <= 64 points per PQ centroid: training time drops ~3x
    # (PQ k-means on many low-dimensional slices dominates) with no measurable recall
    # change after exact re-ranking (docs/mapdb.md).
    for cp in (index.cp, index.pq.cp):
        cp.seed = seed
        cp.niter = 10
    index.pq.cp.max_points_per_centroid = 64
    if n > MAX_TRAIN_VECTORS:
        rows = np.sort(np.random.default_rng(seed).choice(n, MAX_TRAIN_VECTORS, replace=False))
        sample = np.ascontiguousarray(vectors[rows])
    else:
        sample = np.ascontiguousarray(vectors)
    index.train(sample)
    index.nprobe = cfg.nprobe
    return index


def index_ids(index: faiss.Index) -> np.ndarray:
    """All ids stored in a map index (IndexIDMap2 or IndexIVF), unsorted, int64."""
    if isinstance(index, faiss.IndexIDMap2):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    inv = ivf.invlists
    assert inv is not None  # a faiss IndexIVF always has inverted lists
    parts = []
    for lst in range(ivf.nlist):
        size = inv.list_size(lst)
        if size:
            ptr = inv.get_ids(lst)
            parts.append(faiss.rev_swig_ptr(ptr, size).copy())
            inv.release_ids(lst, ptr)  # type: ignore[attr-defined]  # missing from faiss's stubs
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def index_kind(index: faiss.Index) -> str | None:
    """Which of INDEX_KINDS a loaded index is, or None when it is none of them."""
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexFlatIP):
            return "flat"
        if isinstance(inner, faiss.IndexHNSWFlat):
            return "hnsw"
        return None
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq"
    return None


def gpu_available() -> bool:
    """True when the installed faiss is a GPU build that sees at least one GPU."""
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return bool(get and get() > 0)
    except RuntimeError:  # pragma: no cover - broken driver
        return False


def to_gpu(index: faiss.Index) -> faiss.Index | None:
    """GPU clone of ``index`` for search, or None (logged) when that is impossible."""
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except Exception as exc:  # pragma: no cover - needs faiss-gpu
        _LOG.warning("faiss GPU clone failed (%s); searching on the CPU", exc)
        return None
