"""Recall@N evaluation of place recognition (the paper's protocol) and pooling baselines.

A query is correctly localised at N when at least one of its top-N database
images (exact cosine search, faiss IndexFlatIP on L2-normalised descriptors)
lies within ``pos_dist_thr`` (25 m) of the query's true position
(arXiv 1511.07247, Sec. 5.1). Queries with no database image within that
distance cannot be answered correctly by any method; they are left out and
counted in ``queries_without_positive``.

:func:`evaluate` writes ``recalls.json``, ``recall_curve.png`` (matplotlib,
Agg) and ``recalls.md`` and, with ``baselines=True``, evaluates the same
backbone (the model's own weights) with average, max and GeM pooling in the
same table.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from scipy.spatial import cKDTree

from ..model import ModelCard, PlaceNet, build_network, load_model, resolve_device
from .datasets import PlaceDataset, dataset_from_spec
from .mining import describe_images
from .recall import recall_at_n

RECALL_NS = (1, 5, 10, 20)
CURVE_MAX_N = 25
BASELINE_POOLINGS = ("avg", "max", "gem")


def ground_truth(db_utm: np.ndarray, q_utm: np.ndarray, radius: float) -> list[np.ndarray]:
    """Per query, the database indices within ``radius`` metres (cKDTree)."""
    tree = cKDTree(np.asarray(db_utm, dtype=np.float64))
    return [
        np.asarray(g, dtype=np.int64) for g in tree.query_ball_point(np.asarray(q_utm, np.float64), r=radius)
    ]


def recall_curve(
    q_desc: np.ndarray, db_desc: np.ndarray, gt: Sequence[np.ndarray], max_n: int = CURVE_MAX_N
) -> tuple[np.ndarray, int]:
    """Recall@1..max_n (fraction of answerable queries) and the number of answerable queries."""
    db = np.ascontiguousarray(db_desc, dtype=np.float32)
    qs = np.ascontiguousarray(q_desc, dtype=np.float32)
    k = min(max_n, len(db))
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db)
    _, top = index.search(qs, k)
    correct = np.zeros((len(gt), max(k, 1)), dtype=bool)
    for i, g in enumerate(gt):
        if len(g) and k:
            correct[i, :k] = np.isin(top[i], g)
    valid = np.array([len(g) > 0 for g in gt], dtype=bool)
    recall = recall_at_n(correct, range(1, max_n + 1), valid)  # N beyond k: recall saturates
    curve = np.nan_to_num(np.array([recall[n] for n in range(1, max_n + 1)], dtype=np.float64))
    return curve, int(valid.sum())


def recalls_from_descriptors(
    q_desc: np.ndarray,
    db_desc: np.ndarray,
    q_utm: np.ndarray,
    db_utm: np.ndarray,
    pos_dist_thr: float = 25.0,
    ns: Sequence[int] = RECALL_NS,
) -> dict[str, Any]:
    """``{"recall@N": float, ..., "curve": [...], "queries": n, "queries_without_positive": m}``."""
    gt = ground_truth(db_utm, q_utm, pos_dist_thr)
    curve, answerable = recall_curve(q_desc, db_desc, gt, max(CURVE_MAX_N, *ns))
    out: dict[str, Any] = {f"recall@{n}": float(curve[n - 1]) for n in ns}
    out.update(
        curve=[float(v) for v in curve], queries=answerable, queries_without_positive=len(gt) - answerable
    )
    return out


def evaluate_network(
    net: PlaceNet,
    card: ModelCard,
    ds: PlaceDataset,
    ns: Sequence[int] = RECALL_NS,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> dict[str, Any]:
    """Describe a dataset with ``net`` (train/eval mode restored after) and compute Recall@N."""
    device = torch.device(device) if isinstance(device, str) else device
    db = describe_images(net, card, ds.db_image, ds.num_db, device, batch_size)
    q = describe_images(net, card, ds.query_image, ds.num_queries, device, batch_size)
    return recalls_from_descriptors(q, db, ds.q_utm, ds.db_utm, ds.pos_dist_thr, ns)


def baseline_networks(net: PlaceNet, card: ModelCard) -> dict[str, tuple[PlaceNet, ModelCard]]:
    """The same backbone (same weights) with average, max and GeM (p=3) pooling, no whitening."""
    out = {}
    for pooling in BASELINE_POOLINGS:
        bcard = ModelCard(
            backbone=card.backbone,
            cut=card.cut,
            pooling=pooling,
            local_dim=card.local_dim,
            num_clusters=0,
            whitening_dim=0,
            preprocessing=copy.deepcopy(card.preprocessing),
            name=f"{card.backbone}-{card.cut}-{pooling}",
        )
        bnet = build_network(bcard, backbone_weights="none")
        bnet.backbone.load_state_dict(net.backbone.state_dict())
        out[pooling] = (bnet.eval(), bcard)
    return out


def recall_table(results: dict[str, dict[str, Any]], ns: Sequence[int] = RECALL_NS) -> str:
    """A Markdown table: one row per method, Recall@N in percent."""
    head = "| method | dim | " + " | ".join(f"R@{n}" for n in ns) + " |"
    sep = "|---|---:|" + "---:|" * len(ns)
    rows = [
        f"| {name} | {r.get('dim', '')} | " + " | ".join(f"{100 * r[f'recall@{n}']:.1f}" for n in ns) + " |"
        for name, r in results.items()
    ]
    return "\n".join([head, sep, *rows])


def plot_recall_curves(results: dict[str, dict[str, Any]], path: Path, title: str = "") -> Path:
    """Recall@N against N for every method, to a PNG (matplotlib Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    for name, r in results.items():
        curve = np.asarray(r["curve"]) * 100
        ax.plot(np.arange(1, len(curve) + 1), curve, marker=".", label=name)
    ax.set_xlabel("N (number of top database candidates)")
    ax.set_ylabel("Recall@N (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def evaluate(
    model: str | Path | tuple[PlaceNet, ModelCard],
    dataset: dict[str, Any] | PlaceDataset,
    output_dir: str | Path | None = None,
    *,
    baselines: bool = True,
    ns: Sequence[int] = RECALL_NS,
    device: str = "auto",
    batch_size: int = 16,
    print_table: bool = True,
) -> dict[str, Any]:
    """Recall@N of a model file (or a network + card) on a dataset, with pooling baselines.

    ``dataset``: a :class:`PlaceDataset` or a spec for :func:`dataset_from_spec`
    (e.g. ``{"format": "pittsburgh", "root": ..., "split": "pitts30k_test"}``).
    Writes recalls.json, recall_curve.png and recalls.md to ``output_dir`` when
    given. Returns ``{"model", "dataset", "results": {method: recalls}, "table", "files"}``.
    """
    ds = dataset_from_spec(dataset)
    dev = resolve_device(device)
    if isinstance(model, tuple):
        net, card = model
        model_name = card.name or "model"
    else:
        net, card = load_model(model)
        model_name = card.name or Path(model).stem
    results: dict[str, dict[str, Any]] = {}
    results[model_name] = {**evaluate_network(net, card, ds, ns, dev, batch_size), "dim": card.descriptor_dim}
    if baselines:
        for pooling, (bnet, bcard) in baseline_networks(net, card).items():
            r = evaluate_network(bnet, bcard, ds, ns, dev, batch_size)
            results[f"{card.backbone}/{card.cut} + {pooling}"] = {**r, "dim": bcard.descriptor_dim}
    table = recall_table(results, ns)
    if print_table:
        print(table)
    files: list[str] = []
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        payload = {
            "model": model_name,
            "model_fingerprint": card.fingerprint(),
            "dataset": ds.summary(),
            "results": results,
        }
        (out / "recalls.json").write_text(json.dumps(payload, indent=2) + "\n")
        (out / "recalls.md").write_text(table + "\n")
        plot_recall_curves(results, out / "recall_curve.png", f"{ds.name} {ds.split}".strip())
        files = [str(out / n) for n in ("recalls.json", "recalls.md", "recall_curve.png")]
    return {"model": model_name, "dataset": ds.summary(), "results": results, "table": table, "files": files}
