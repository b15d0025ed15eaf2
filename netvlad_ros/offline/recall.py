"""Recall@N, the place-recognition metric of the paper, computed one way for every tool.

A query counts as answered at N when one of its top-N retrieved database items is
a true match (for the paper: within 25 m). Queries with no true match anywhere are
left out of the denominator (the caller passes them as ``valid=False``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_NS = (1, 5, 10, 20)


def recall_at_n(correct: np.ndarray, ns: Sequence[int] = DEFAULT_NS, valid: np.ndarray | None = None) -> dict:
    """Recall@N from a (Q, K) boolean matrix (``correct[q, r]``: the rank-r result of query q
    is right). ``valid`` (Q,) selects the queries counted (default all). N beyond K uses all K."""
    correct = np.asarray(correct, bool)
    if correct.ndim != 2:
        raise ValueError(f"correct must be a (queries, ranks) matrix, got shape {correct.shape}")
    rows = correct if valid is None else correct[np.asarray(valid, bool)]
    if len(rows) == 0:
        return {int(n): float("nan") for n in ns}
    hit_rank = np.where(rows.any(axis=1), rows.argmax(axis=1), np.iinfo(np.int64).max)
    return {int(n): float(np.mean(hit_rank < n)) for n in ns}
