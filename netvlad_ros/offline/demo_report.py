"""Scoring and plotting what the demo's node published (no ROS here).

The demo (netvlad_ros/ros/demo.py) collects, per replayed query frame, the
hypotheses table and the accepted pose that came back over DDS; this module
turns them into Recall@N (a query is right when a top-N match is within
25 m of where the camera really was), precision of the accepted poses,
latency percentiles, and a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

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
) -> dict[str, Any]:
    """Recall@N over the answered queries, accepted-pose precision/recall, latency percentiles."""
    answered = [(o, o.hypotheses) for o in outcomes if o.hypotheses is not None and len(o.hypotheses)]
    k = max((len(h) for _, h in answered), default=1)
    correct = np.zeros((len(answered), k), bool)
    for i, (o, h) in enumerate(answered):
        d = np.linalg.norm(h[:, :2] - o.true_position[None, :2], axis=1)
        correct[i, : len(d)] = d <= radius_m
    recall = recall_at_n(correct, ns) if answered else {n: float("nan") for n in ns}
    accepted = [(o, o.accepted_position) for o in outcomes if o.accepted_position is not None]
    right = sum(bool(np.linalg.norm(a[:2] - o.true_position[:2]) <= radius_m) for o, a in accepted)
    lat = np.array([o.latency_s for o in outcomes if o.latency_s is not None]) * 1000
    top1_err = [float(np.linalg.norm(h[0, :2] - o.true_position[:2])) for o, h in answered]
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
    rows: Sequence[Any],
    query_positions: dict[float, np.ndarray],
    map_positions: dict[int, np.ndarray],
    radius_m: float = 25.0,
    true_poses: dict[float, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Loop closures published in SLAM mode, checked against the true positions.

    ``rows``: ``~/loop_closures`` table rows (numpy records of ``ros.tables.LOOP_CLOSURE_DTYPE``;
    fields read by name). A closure is right when the matched keyframe lies within ``radius_m``
    of where the camera really was at ``query_stamp``; a match added earlier in the same drive
    is located by its stamp (``query_positions``), one of a prior map by id
    (``map_positions``). Closures whose match cannot be located are counted, unchecked.
    ``true_poses`` (stamp -> true 4x4 body pose): the metric closures' relative pose
    ``T_match_query`` is compared with the truth (translation error m, rotation error deg).
    """
    right = checkable = verified = metric = 0
    t_err: list[float] = []
    r_err: list[float] = []
    examples: list[str] = []
    for row in rows:
        qid, mid = int(row["query_id"]), int(row["match_id"])
        qstamp, mstamp = float(row["query_stamp"]), float(row["match_stamp"])
        verified += bool(row["verified"])
        qpos = query_positions.get(round(qstamp, 6))
        mpos = map_positions.get(mid)
        if mpos is None:  # a keyframe added earlier in the same drive
            mpos = query_positions.get(round(mstamp, 6))
        if qpos is not None and mpos is not None:
            checkable += 1
            ok = float(np.linalg.norm(qpos[:2] - mpos[:2])) <= radius_m
            right += ok
            if len(examples) < 3:
                examples.append(
                    f"keyframe {qid} -> {mid} (score {float(row['score']):.2f}, {int(row['inliers'])} inliers)"
                )
        if true_poses is not None and bool(row["scale_known"]):
            a, b = true_poses.get(round(mstamp, 6)), true_poses.get(round(qstamp, 6))
            if a is not None and b is not None:
                metric += 1
                truth = np.linalg.inv(a) @ b
                est = np.eye(4)
                est[:3, :3] = Rotation.from_quat([row["qx"], row["qy"], row["qz"], row["qw"]]).as_matrix()
                est[:3, 3] = [row["tx"], row["ty"], row["tz"]]
                delta = np.linalg.inv(truth) @ est
                t_err.append(float(np.linalg.norm(delta[:3, 3])))
                r_err.append(float(np.degrees(Rotation.from_matrix(delta[:3, :3]).magnitude())))
    return {
        "total": len(rows),
        "checkable": checkable,
        "right": right,
        "verified": verified,
        "metric": metric,
        "precision": right / checkable if checkable else float("nan"),
        "radius_m": radius_m,
        "relative_pose_error_m_max": max(t_err) if t_err else float("nan"),
        "relative_pose_error_deg_max": max(r_err) if r_err else float("nan"),
        "examples": "; ".join(examples),
    }


def score_trajectories(truth: np.ndarray, odometry: np.ndarray, optimized: np.ndarray) -> dict[str, Any]:
    """Absolute trajectory errors (RMSE, m, after a rigid SE(3) alignment as ``evo_ape --align``)
    of the raw odometry and of the pose graph's optimised trajectory, at the same keyframes."""
    from ..posegraph.metrics import ate_rmse

    n = len(truth)
    if n < 3:
        return {"keyframes": n, "ate_odometry_m": float("nan"), "ate_optimized_m": float("nan")}
    ate_odom = ate_rmse(odometry, truth, align=True)
    ate_opt = ate_rmse(optimized, truth, align=True)
    return {
        "keyframes": n,
        "ate_odometry_m": ate_odom,
        "ate_optimized_m": ate_opt,
        "ate_ratio": ate_opt / ate_odom if ate_odom > 0 else float("nan"),
    }


def plot_outcomes(
    path: str | Path,
    outcomes: list[QueryOutcome],
    map_positions: np.ndarray,
    radius_m: float = 25.0,
    loop_rows: Sequence[Any] | None = None,
    trajectories: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Top-down plot: map keyframes, the query trajectory, top-1 matches coloured right/wrong;
    with ``trajectories`` (truth, drifting odometry, optimised: (n, 3) positions at the SLAM
    drive's keyframes) a second panel draws them and the loop closures (``loop_rows``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if trajectories is not None and len(trajectories[0]):
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(16, 7.5))
        _plot_slam(ax2, loop_rows or [], *trajectories)
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


def _plot_slam(ax: Any, rows: Sequence[Any], truth: np.ndarray, odom: np.ndarray, opt: np.ndarray) -> None:
    """The SLAM drive: truth, drifting odometry, the optimised trajectory and the loop closures
    (drawn between the optimised keyframe positions, matched to keyframes by stamp order)."""
    ax.plot(truth[:, 0], truth[:, 1], c="k", lw=1.5, label="ground truth")
    ax.plot(odom[:, 0], odom[:, 1], c="tab:red", lw=1, ls="--", label="odometry (drifting)")
    ax.plot(opt[:, 0], opt[:, 1], c="tab:green", lw=1.5, label="optimised (pose_graph_node)")
    ax.scatter(truth[:1, 0], truth[:1, 1], s=40, c="k", marker="^", label="start")
    first = True
    for row in rows:
        q, m = int(row["query_id"]), int(row["match_id"])
        if q < len(opt) and m < len(opt):  # keyframe ids of the drive count from 0 in stamp order
            a, b = opt[q], opt[m]
            ax.plot([a[0], b[0]], [a[1], b[1]], c="tab:orange", lw=2, label="loop closure" if first else None)
            first = False
    ax.set(xlabel="east (m)", ylabel="north (m)", title=f"SLAM mode: {len(rows)} loop closures")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="best", fontsize=8)
