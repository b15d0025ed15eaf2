"""Evaluate a map against query images with known positions (``netvlad-ros eval-map``).

Metrics (the NetVLAD / Pittsburgh convention):

- **Recall@N** (N = 1, 5, 10, 20): the fraction of queries for which at least one of
  the top-N retrieved keyframes lies within ``radius_m`` (25 m) of the query's true
  position. Queries with no map keyframe within ``radius_m`` cannot be answered
  correctly; they are counted (``queries_without_positive``) and left out of the
  denominators.
- **Accepted places** (the node's own per-frame rules: a localization-mode
  :class:`netvlad_ros.recognition.RecognitionSession` over the queries in order): an
  accepted place is a true positive when its position is within ``radius_m`` of the query. ``precision = TP / accepted``, ``recall = TP / queries
  with a positive``.
- **Top-1 score sweep**: precision/recall when the top-1 match is accepted iff its
  cosine score is >= a threshold, for every threshold (a PR curve), with the best F1
  and the recall at 100 % precision.

Outputs: a JSON dict and an optional PNG (Recall@N curve, precision/recall curve, and a
top-down plot of the map keyframes and queries coloured by top-1 right/wrong).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..mapdb import MapDatabase
from ..sensors.image_codec import ImageDecodeError
from .build_map import FrameSource, _make_extractor, open_frames
from .errors import BuildMapError
from .recall import DEFAULT_NS, recall_at_n

__all__ = [
    "DEFAULT_NS",
    "describe_source",
    "eval_map",
    "precision_recall_sweep",
    "recall_at_n",
]


def precision_recall_sweep(scores: np.ndarray, correct: np.ndarray, n_positive: int) -> dict:
    """Precision and recall of "accept the top-1 match when its score >= threshold" for every
    threshold (the distinct scores, descending). ``correct``: whether each top-1 is right;
    ``n_positive``: queries that could be answered (the recall denominator)."""
    scores = np.asarray(scores, np.float64)
    correct = np.asarray(correct, bool)
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order]
    tp = np.cumsum(c)
    accepted = np.arange(1, len(s) + 1)
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, bool)  # ties accepted together
    thr, tp, accepted = s[last], tp[last], accepted[last]
    precision = tp / np.maximum(accepted, 1)
    recall = tp / max(n_positive, 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1)) if len(f1) else -1
    perfect = recall[precision >= 1.0]
    return {
        "thresholds": thr.tolist(),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "best_f1": float(f1[best]) if best >= 0 else 0.0,
        "best_f1_threshold": float(thr[best]) if best >= 0 else float("nan"),
        "recall_at_100_precision": float(perfect.max()) if perfect.size else 0.0,
    }


def describe_source(
    source: FrameSource, extractor: Any, batch_size: int | None = None, progress: bool = False
) -> dict:
    """Decode and describe every frame of ``source`` (frames without a pose are kept only when
    ``source.require_poses`` is False). Returns arrays: ``descriptors`` (Q, D), ``positions``
    (Q, 3) (NaN without a pose), ``stamps``, ``indices`` (frame index in the input),
    ``sources`` (list of str) and ``skipped`` ({reason: count})."""
    desc, pos, stamps, idx, srcs = [], [], [], [], []
    skipped = {"no_pose": 0, "decode_error": 0}
    imgs: list[np.ndarray] = []

    def flush() -> None:
        if imgs:
            desc.append(extractor(imgs))
            imgs.clear()

    with open_frames(source) as stream:
        for frame in tqdm(
            stream.frames, total=stream.total, unit="img", desc="describe", disable=not progress
        ):
            if not frame.ok and source.require_poses:
                skipped["no_pose"] += 1
                continue
            try:
                imgs.append(frame.load())
            except (ImageDecodeError, ValueError):
                skipped["decode_error"] += 1
                continue
            pos.append(frame.position if frame.ok else np.full(3, np.nan))
            stamps.append(frame.stamp)
            idx.append(frame.index)
            srcs.append(frame.source)
            if len(imgs) >= (batch_size or extractor.batch_size):
                flush()
        flush()
    if not idx:
        raise BuildMapError(f"no usable query images (skipped: {skipped})")
    return {
        "descriptors": np.concatenate(desc).astype(np.float32),
        "positions": np.asarray(pos, np.float64).reshape(-1, 3),
        "stamps": np.asarray(stamps, np.float64),
        "indices": np.asarray(idx, np.int64),
        "sources": srcs,
        "skipped": skipped,
    }


def run_session(
    db: MapDatabase, source: FrameSource, extractor: Any, session_params: Any = None, progress: bool = False
) -> tuple[dict, list[Any]]:
    """Run every posed frame of ``source`` through a localization-mode ``RecognitionSession``, as the
    node would (same rules, same thresholds). Returns the queries as :func:`describe_source` does
    (descriptors from the session) and the session's ``LocalizationResult`` per query, in order."""
    from ..recognition import FrameStatus, RecognitionSession, SessionParams

    params = session_params or SessionParams()
    params = dataclasses.replace(params, mode="localization")
    session = RecognitionSession(extractor, db, params)
    desc, pos, stamps, idx, srcs, results = [], [], [], [], [], []
    skipped = {"no_pose": 0, "decode_error": 0, "rejected": 0}
    with open_frames(source) as stream:
        for frame in tqdm(
            stream.frames, total=stream.total, unit="img", desc="localize", disable=not progress
        ):
            if not frame.ok:
                skipped["no_pose"] += 1
                continue
            try:
                image = frame.load()
            except (ImageDecodeError, ValueError):
                skipped["decode_error"] += 1
                continue
            res = session.process(frame.stamp, image)
            if res.status != FrameStatus.LOCALIZED or res.descriptor is None:
                skipped["rejected"] += 1
                continue
            desc.append(res.descriptor)
            results.append(res.localization)
            pos.append(frame.position)
            stamps.append(frame.stamp)
            idx.append(frame.index)
            srcs.append(frame.source)
    if not idx:
        raise BuildMapError(f"no usable query images (skipped: {skipped})")
    q = {
        "descriptors": np.stack(desc).astype(np.float32),
        "positions": np.asarray(pos, np.float64).reshape(-1, 3),
        "stamps": np.asarray(stamps, np.float64),
        "indices": np.asarray(idx, np.int64),
        "sources": srcs,
        "skipped": skipped,
    }
    return q, results


def _localizer_metrics(results: list[Any], positions: np.ndarray, radius_m: float) -> dict:
    tp = fp = 0
    reasons: dict[str, int] = {}
    for res, p in zip(results, positions, strict=True):
        if res.accepted and res.best_place is not None:
            if float(np.linalg.norm(np.asarray(res.best_place.position) - p)) <= radius_m:
                tp += 1
            else:
                fp += 1
        else:
            key = res.reason.value if res.reason is not None else "none"
            reasons[key] = reasons.get(key, 0) + 1
    return {"true_positives": tp, "false_positives": fp, "not_accepted": reasons}


def eval_map(
    map_path: str | Path,
    source: FrameSource,
    *,
    ns: Sequence[int] = DEFAULT_NS,
    radius_m: float = 25.0,
    output_json: str | Path | None = None,
    output_png: str | Path | None = None,
    session_params: Any = None,
    model: str | Path | None = None,
    device: str | None = None,
    fp16: bool | None = None,
    batch_size: int | None = None,
    extractor_params: Any = None,
    extractor: Any = None,
    progress: bool = True,
) -> dict:
    """Evaluate the map at ``map_path`` with the query frames of ``source`` (which needs poses).

    Returns (and writes to ``output_json`` when given) a dict: ``queries``,
    ``queries_without_positive``, ``recall_at`` ({N: recall}), ``localizer``
    (precision, recall, counts), ``top1_sweep`` (see :func:`precision_recall_sweep`),
    ``radius_m``, ``skipped``, ``seconds``. ``output_png``: the plots. The queries go through a
    localization-mode ``RecognitionSession`` with ``session_params`` (the node's defaults when None),
    so the accepted places are what the node would publish.
    """
    if not (np.isfinite(radius_m) and radius_m > 0):
        raise BuildMapError(f"radius_m must be a positive number, got {radius_m!r}")
    ns = sorted({int(n) for n in ns})
    if not ns or ns[0] < 1:
        raise BuildMapError(f"ns must be integers >= 1, got {ns}")
    t0 = time.perf_counter()
    map_path = Path(map_path)
    if not map_path.exists():
        raise BuildMapError(f"map not found: {map_path}")
    source.require_poses = True
    source.validate()
    ex = (
        extractor
        if extractor is not None
        else _make_extractor(model, device, batch_size, fp16, extractor_params)
    )
    db = MapDatabase.load(map_path, expected_model_fingerprint=ex.fingerprint)
    if len(db) == 0:
        raise BuildMapError(f"map {map_path} has no keyframes")
    q, localized = run_session(db, source, ex, session_params, progress)
    k = min(ns[-1], len(db))
    res = db.search(q["descriptors"], k)
    ids = np.asarray(res.ids)
    map_ids = db.ids
    map_pos = db.positions(map_ids)
    pos_of = dict(zip(map_ids.tolist(), range(len(map_ids)), strict=True))
    rows = np.vectorize(lambda i: pos_of.get(int(i), -1), otypes=[np.int64])(ids) if ids.size else ids
    match_pos = np.where((rows >= 0)[..., None], map_pos[np.maximum(rows, 0)], np.nan)
    dist = np.linalg.norm(match_pos - q["positions"][:, None, :], axis=2)
    correct = np.nan_to_num(dist, nan=np.inf) <= radius_m
    from scipy.spatial import cKDTree

    nearest, _ = cKDTree(map_pos).query(q["positions"], k=1)
    has_pos = nearest <= radius_m
    n_pos = int(has_pos.sum())
    recalls = recall_at_n(correct, ns, has_pos)
    scores = np.asarray(res.scores, np.float64)[:, 0]
    sweep = precision_recall_sweep(scores, correct[:, 0], n_pos)
    loc = _localizer_metrics(localized, q["positions"], radius_m)
    accepted = loc["true_positives"] + loc["false_positives"]
    loc["accepted"] = accepted
    loc["precision"] = loc["true_positives"] / accepted if accepted else float("nan")
    loc["recall"] = loc["true_positives"] / n_pos if n_pos else float("nan")
    result = {
        "map": str(map_path),
        "map_keyframes": len(db),
        "queries": len(q["indices"]),
        "queries_without_positive": int(len(has_pos) - n_pos),
        "radius_m": float(radius_m),
        "recall_at": {str(n): v for n, v in recalls.items()},
        "localizer": loc,
        "top1_sweep": sweep,
        "skipped": q["skipped"],
        "seconds": time.perf_counter() - t0,
        "model_fingerprint": ex.fingerprint,
    }
    if output_json is not None:
        Path(output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(output_json).write_text(json.dumps(result, indent=2, allow_nan=True))
    if output_png is not None:
        _plot(output_png, correct, has_pos, sweep, map_pos, q["positions"], match_pos[:, 0], ns)
    return result


def _plot(
    path: str | Path,
    correct: np.ndarray,
    has_pos: np.ndarray,
    sweep: dict,
    map_pos: np.ndarray,
    q_pos: np.ndarray,
    top1_pos: np.ndarray,
    ns: Sequence[int],
) -> None:
    """Recall@N curve, top-1 PR curve and a top-down trajectory plot, written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    n_axis = np.arange(1, correct.shape[1] + 1)
    curve = recall_at_n(correct, [int(n) for n in n_axis], has_pos)
    axes[0].plot(n_axis, [curve[int(n)] for n in n_axis], marker="o")
    for n in ns:
        if n in curve:
            axes[0].annotate(f"{curve[n]:.2f}", (n, curve[n]), textcoords="offset points", xytext=(0, 6))
    axes[0].set(xlabel="N", ylabel="Recall@N", title="Recall@N", ylim=(0, 1.05))
    axes[0].grid(True, alpha=0.3)
    axes[1].plot(sweep["recall"], sweep["precision"])
    axes[1].set(xlabel="recall", ylabel="precision", title="top-1 score threshold sweep", xlim=(0, 1.02))
    axes[1].set_ylim(0, 1.05)
    axes[1].grid(True, alpha=0.3)
    ax = axes[2]
    ax.scatter(map_pos[:, 0], map_pos[:, 1], s=6, c="0.6", label="map keyframes")
    ok = correct[:, 0]
    for mask, colour, label in ((ok, "tab:green", "top-1 right"), (~ok, "tab:red", "top-1 wrong")):
        if mask.any():
            ax.scatter(q_pos[mask, 0], q_pos[mask, 1], s=10, c=colour, label=label)
            for a, b in zip(q_pos[mask], top1_pos[mask], strict=True):
                if np.isfinite(b).all():
                    ax.plot([a[0], b[0]], [a[1], b[1]], c=colour, lw=0.4, alpha=0.5)
    ax.set(xlabel="x (m)", ylabel="y (m)", title="queries and top-1 matches")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_eval_map_arguments(parser: Any) -> None:
    """All ``eval-map`` options (call :func:`eval_map_from_args` with the parsed namespace)."""
    from .build_map import add_model_arguments, add_source_arguments

    parser.add_argument("map", type=Path, help="map directory")
    add_source_arguments(parser)
    parser.add_argument("--radius", type=float, default=25.0, help="a match is right within this many metres")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--plot", type=Path, default=None, help="write the plots (PNG) here")
    add_model_arguments(parser)  # --model must be the map's model (checked against its fingerprint)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def eval_map_from_args(args: Any) -> dict:
    """Run :func:`eval_map` from the namespace of :func:`add_eval_map_arguments`."""
    from .build_map import extractor_params_from_args, source_from_args

    return eval_map(
        args.map,
        source_from_args(args),
        radius_m=args.radius,
        output_json=args.json,
        output_png=args.plot,
        model=args.model,
        extractor_params=extractor_params_from_args(args),
        progress=not args.quiet,
    )


def format_eval(result: dict) -> str:
    """Human-readable lines for an :func:`eval_map` result (printed by the CLI)."""
    r = result
    rec = ", ".join(f"R@{n} {v:.3f}" for n, v in r["recall_at"].items())
    loc = r["localizer"]
    return "\n".join(
        [
            f"{r['queries']} queries ({r['queries_without_positive']} without a keyframe within "
            f"{r['radius_m']:g} m) against {r['map_keyframes']} keyframes",
            rec,
            f"localizer: accepted {loc['accepted']}, precision {loc['precision']:.3f}, recall {loc['recall']:.3f}",
            f"top-1 sweep: best F1 {r['top1_sweep']['best_f1']:.3f} at score "
            f"{r['top1_sweep']['best_f1_threshold']:.3f}, recall@100% precision "
            f"{r['top1_sweep']['recall_at_100_precision']:.3f}",
        ]
    )
