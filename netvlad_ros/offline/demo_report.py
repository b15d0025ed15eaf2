"""Scoring and plotting what the demo's node published (no ROS here).

The demo (netvlad_ros/ros/demo.py) collects, per replayed query frame, the
hypotheses table and the accepted pose that came back over DDS; this module
turns them into Recall@N (a query is right when a top-N match is within
25 m of where the camera really was), precision of the accepted poses,
latency percentiles, and a PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .recall import recall_at_n


@dataclass
class QueryOutcome:
    """What the node answered for one replayed frame."""

    stamp: float
    true_position: np.ndarray
    hypotheses: np.ndarray | None = None  # (K, 3) positions, best first; None = no answer
    accepted_position: np.ndarray | None = None
    latency_s: float | None = None
    extras: dict = field(default_factory=dict)


def score_outcomes(
    outcomes: list[QueryOutcome], radius_m: float = 25.0, ns: tuple[int, ...] = (1, 5)
) -> dict:
    """Recall@N over the answered queries, accepted-pose precision/recall, latency percentiles."""
    answered = [o for o in outcomes if o.hypotheses is not None and len(o.hypotheses)]
    k = max((len(o.hypotheses) for o in answered), default=1)
    correct = np.zeros((len(answered), k), bool)
    for i, o in enumerate(answered):
        d = np.linalg.norm(o.hypotheses[:, :2] - o.true_position[None, :2], axis=1)
        correct[i, : len(d)] = d <= radius_m
    recall = recall_at_n(correct, ns) if answered else {n: float("nan") for n in ns}
    accepted = [o for o in outcomes if o.accepted_position is not None]
    right = sum(np.linalg.norm(o.accepted_position[:2] - o.true_position[:2]) <= radius_m for o in accepted)
    lat = np.array([o.latency_s for o in outcomes if o.latency_s is not None]) * 1000
    top1_err = [float(np.linalg.norm(o.hypotheses[0, :2] - o.true_position[:2])) for o in answered]
    return {
        "published": len(outcomes),
        "answered": len(answered),
        "recall_at": {int(n): float(v) for n, v in recall.items()},
        "accepted": len(accepted),
        "accepted_right": int(right),
        "accepted_precision": float(right / len(accepted)) if accepted else float("nan"),
        "accepted_recall": float(right / len(outcomes)) if outcomes else float("nan"),
        "top1_error_m_median": float(np.median(top1_err)) if top1_err else float("nan"),
        "latency_ms_p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "latency_ms_p95": float(np.percentile(lat, 95)) if len(lat) else float("nan"),
        "radius_m": radius_m,
    }


def score_loop_closures(
    rows: list[tuple],
    query_positions: dict[float, np.ndarray],
    map_positions: dict[int, np.ndarray],
    radius_m: float = 25.0,
) -> dict:
    """Loop closures published in SLAM mode, checked against the true positions.

    ``rows`` are LOOP_CLOSURE_DTYPE tuples (query_id, match_id, query_stamp,
    match_stamp, score, inliers, ..., verified). A closure is right when the
    matched map keyframe lies within ``radius_m`` of where the camera really
    was at ``query_stamp``; a match added earlier in the same drive is located
    by its stamp. Closures whose match cannot be located are counted, unchecked.
    """
    right = checkable = verified = 0
    examples = []
    for row in rows:
        qid, mid, qstamp, mstamp, score, inliers, ver = (
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[-1],
        )
        verified += bool(ver)
        qpos = query_positions.get(round(qstamp, 6))
        mpos = map_positions.get(int(mid))
        if mpos is None:  # a keyframe added earlier in the same drive
            mpos = query_positions.get(round(mstamp, 6))
        if qpos is not None and mpos is not None:
            checkable += 1
            ok = float(np.linalg.norm(qpos[:2] - mpos[:2])) <= radius_m
            right += ok
            if len(examples) < 3:
                examples.append(f"keyframe {qid} -> {mid} (score {score:.2f}, {inliers} inliers)")
    return {
        "total": len(rows),
        "checkable": checkable,
        "right": right,
        "verified": verified,
        "precision": right / checkable if checkable else float("nan"),
        "radius_m": radius_m,
        "examples": "; ".join(examples),
    }


def plot_outcomes(
    path: str | Path,
    outcomes: list[QueryOutcome],
    map_positions: np.ndarray,
    radius_m: float = 25.0,
    loop_rows: list[tuple] | None = None,
    loop_positions: dict[float, np.ndarray] | None = None,
) -> Path:
    """Top-down plot: map keyframes, the query trajectory, top-1 matches coloured right/wrong;
    with ``loop_positions`` (stamp -> true position of the SLAM drive) a second panel draws
    that drive and its loop closures (``loop_rows``: LOOP_CLOSURE_DTYPE tuples)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if loop_positions:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(16, 7.5))
        _plot_loop_closures(ax2, loop_rows or [], loop_positions)
    else:
        fig, ax = plt.subplots(figsize=(9, 8))
    ax.scatter(map_positions[:, 0], map_positions[:, 1], s=10, c="0.7", label="map keyframes")
    traj = np.array([o.true_position for o in outcomes])
    if len(traj):
        ax.plot(traj[:, 0], traj[:, 1], c="tab:blue", lw=1, alpha=0.6, label="query trajectory")
    for ok, colour, label in (
        (True, "tab:green", f"top-1 right (≤ {radius_m:g} m)"),
        (False, "tab:red", "top-1 wrong"),
    ):
        first = True
        for o in outcomes:
            if o.hypotheses is None or not len(o.hypotheses):
                continue
            best = o.hypotheses[0]
            right = np.linalg.norm(best[:2] - o.true_position[:2]) <= radius_m
            if right != ok:
                continue
            ax.plot([o.true_position[0], best[0]], [o.true_position[1], best[1]], c=colour, lw=0.8)
            ax.scatter(
                [o.true_position[0]], [o.true_position[1]], s=14, c=colour, label=label if first else None
            )
            first = False
    acc = np.array([o.accepted_position for o in outcomes if o.accepted_position is not None])
    if len(acc):
        ax.scatter(
            acc[:, 0],
            acc[:, 1],
            s=60,
            facecolors="none",
            edgecolors="tab:purple",
            label="accepted place (~/pose)",
        )
    missed = np.array([o.true_position for o in outcomes if o.hypotheses is None])
    if len(missed):
        ax.scatter(missed[:, 0], missed[:, 1], s=14, marker="x", c="k", label="no answer (frame skipped)")
    ax.set(xlabel="east (m)", ylabel="north (m)", title="netvlad_ros demo: queries and their top-1 matches")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_loop_closures(ax, rows: list[tuple], positions: dict[float, np.ndarray]) -> None:
    """The SLAM drive and a line per loop closure between the two true keyframe positions."""
    traj = np.array([positions[k] for k in sorted(positions)])
    ax.plot(traj[:, 0], traj[:, 1], c="tab:blue", lw=1, alpha=0.7, label="SLAM drive (odometry)")
    ax.scatter(traj[:1, 0], traj[:1, 1], s=40, c="k", marker="^", label="start")
    first = True
    for row in rows:
        a, b = positions.get(round(row[2], 6)), positions.get(round(row[3], 6))
        if a is None or b is None:
            continue
        ax.plot([a[0], b[0]], [a[1], b[1]], c="tab:orange", lw=2, label="loop closure" if first else None)
        ax.scatter([a[0], b[0]], [a[1], b[1]], s=12, c="tab:orange")
        first = False
    ax.set(xlabel="east (m)", ylabel="north (m)", title=f"SLAM mode: {len(rows)} loop closures")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=8)
