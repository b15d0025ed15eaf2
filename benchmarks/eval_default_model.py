"""Recall@1, score separation and speed of default-model heads at several input sizes.

The evaluation behind the shipped default model's head and its ``max_side``
(docs/model.md, "The default model"). Each model (``--model LABEL=PATH``; ``default`` is the
built-in one) is run with the default runtime (``auto``: OpenVINO on a CPU), batch 1, map and
queries described at the same ``max_side``, on:

- the RTAB-Map sample walk (../shared/data/rtabmap_samples, 84 real indoor 512x384 images):
  map = images 1-40, queries = images 41-84; a top-1 is right when ``gt_matrix_84x84.npy``
  says so; queries without a true match in images 1-40 are not counted (``offline.recall``);
- cross-day synthetic worlds (``netvlad_ros.synthetic``), seeds none of the fitting worlds
  use (``offline.default_model_fit.DEFAULT_FIT_SEEDS``): the mapping traversal (overcast
  day) is the map, ``query`` traversals (weave, heading jitter, clutter) in each condition
  are the queries, right within ``radius`` metres of the query (streets 10 m with frames
  4 m apart, corridors 4 m with frames 1.5 m apart). Streets: the demo's world (seed 7)
  and the input-size benchmark's (seed 11), both without props, and two 2x2-block worlds
  with trees and street lamps (seeds 21, 22); corridors: two 2x2 buildings (seeds 23, 24).

Score separation (the issue's problem: same place 0.903 vs different places 0.875 on a
real corridor): "same" is a query's score to its true place (RTAB-Map: the ground-truth
pairs; synthetic: the nearest map frame), "different" its scores to map images that are not
that place (RTAB-Map: more than 5 frames from every true match; synthetic: beyond 25 m in
streets, 10 m in corridors). Reported as the mean gap, d' = gap / sqrt((var_same +
var_diff) / 2) (comparable across heads whose cosines have different scales, e.g. with
whitening) and AUC = P(same > different).

ms/image: the median network time (``extractor.run``) over every image described at that
size. Prints markdown tables; ``--json`` also writes every number.

    python benchmarks/eval_default_model.py --model old=/tmp/old.safetensors --model default \
        [--sizes 640 480 320] [--frames 60] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from netvlad_ros.model import DescriptorExtractor
from netvlad_ros.offline.evaluate import ground_truth
from netvlad_ros.offline.recall import recall_at_n
from netvlad_ros.synthetic.world import SyntheticWorld, WorldConfig

RTABMAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rtabmap_samples"

#: (label, config, frame spacing m, right within m, different beyond m, query conditions).
#: "" is the query traversal's own other day (sun, shadows, exposure and white balance).
STREET_CONDITIONS = (
    "",
    "dusk/clear/summer",
    "night/clear/summer",
    "day/rain/spring",
    "day/snow/winter",
    "day/clear/autumn",
    "day/overcast/winter",
)
CORRIDOR_CONDITIONS = ("", "dusk/clear/summer", "night/clear/summer")
PROPS = {"blocks_x": 2, "blocks_y": 2, "tree_spacing_m": 12.0, "lamp_spacing_m": 24.0}
WORLDS = (
    ("street7", WorldConfig(seed=7), 4.0, 10.0, 25.0, STREET_CONDITIONS),
    ("street11", WorldConfig(seed=11), 4.0, 10.0, 25.0, STREET_CONDITIONS),
    ("trees21", WorldConfig(seed=21, **PROPS), 4.0, 10.0, 25.0, STREET_CONDITIONS),
    ("trees22", WorldConfig(seed=22, **PROPS), 4.0, 10.0, 25.0, STREET_CONDITIONS),
    (
        "corridor23",
        WorldConfig.corridors(seed=23, blocks_x=2, blocks_y=2),
        1.5,
        4.0,
        10.0,
        CORRIDOR_CONDITIONS,
    ),
    (
        "corridor24",
        WorldConfig.corridors(seed=24, blocks_x=2, blocks_y=2),
        1.5,
        4.0,
        10.0,
        CORRIDOR_CONDITIONS,
    ),
)


@dataclass
class Scores:
    """Per (model, size): Recall@1 per set, same/different score samples, network times."""

    recall: dict[str, float] = field(default_factory=dict)
    same: dict[str, list[float]] = field(default_factory=dict)
    diff: dict[str, list[float]] = field(default_factory=dict)
    ms: list[float] = field(default_factory=list)


def describe(ex: DescriptorExtractor, images: list[np.ndarray], ms: list[float]) -> np.ndarray:
    """Descriptors one image at a time (batch 1, as the node runs); network ms appended to ``ms``."""
    rows = []
    for image in images:
        batch = ex.prepare([image])
        rows.append(ex.run(batch)[0])
        ms.append(batch.network_ms)
    return np.stack(rows)


def separation(same: np.ndarray, diff: np.ndarray) -> dict[str, float]:
    """Mean same / different scores, their gap, d' and AUC (ties count half)."""
    gap = float(same.mean() - diff.mean())
    spread = float(np.sqrt((same.var() + diff.var()) / 2))
    ranks = np.searchsorted(np.sort(diff), same, side="left") + np.searchsorted(
        np.sort(diff), same, side="right"
    )
    auc = float(ranks.sum() / (2 * len(same) * len(diff)))
    return {
        "same": float(same.mean()),
        "diff": float(diff.mean()),
        "gap": gap,
        "dprime": gap / spread,
        "auc": auc,
    }


def rtabmap_scores(d: np.ndarray, gt: np.ndarray, out: Scores) -> None:
    sims = d[40:] @ d[:40].T
    rows = np.arange(40, 84)
    truth = gt[rows, :40]
    valid = truth.any(axis=1)
    top1 = np.argmax(sims, axis=1)
    out.recall["rtabmap"] = recall_at_n(truth[np.arange(44), top1][:, None], (1,), valid)[1]
    gap = np.abs(np.subtract.outer(np.arange(40), np.arange(40)))  # map index distance
    same, diff = [], []
    for q in np.flatnonzero(valid):
        near = gap[truth[q]].min(axis=0) <= 5  # within 5 frames of a true match
        same += sims[q, truth[q]].tolist()
        diff += sims[q, ~near].tolist()
    out.same["rtabmap"], out.diff["rtabmap"] = same, diff


def world_scores(
    key: str,
    dm: np.ndarray,
    dq: np.ndarray,
    pm: np.ndarray,
    pq: np.ndarray,
    radius: float,
    far: float,
    out: Scores,
) -> None:
    sims = dq @ dm.T
    right = ground_truth(pm, pq, radius)
    top1 = np.argmax(sims, axis=1)
    correct = np.array([t in g for t, g in zip(top1, right, strict=True)])[:, None]
    out.recall[key] = recall_at_n(correct, (1,), np.array([len(g) > 0 for g in right]))[1]
    dist = np.linalg.norm(pq[:, None, :] - pm[None, :, :], axis=2)
    nearest = np.argmin(dist, axis=1)
    out.same[key] = sims[np.arange(len(pq)), nearest].tolist()
    out.diff[key] = sims[dist > far].tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="LABEL=PATH, or 'default' (repeatable)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[640, 480, 320])
    ap.add_argument("--frames", type=int, default=60, help="frames per synthetic traversal")
    ap.add_argument("--worlds", nargs="+", default=[w[0] for w in WORLDS], help="which synthetic worlds")
    ap.add_argument("--threads", type=int, default=0, help="network threads (0: one per core)")
    ap.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = ap.parse_args()

    models: dict[str, DescriptorExtractor] = {}
    for spec in args.model or ["default"]:
        label, _, path = spec.partition("=")
        models[label] = DescriptorExtractor(Path(path) if path else None, device="cpu", threads=args.threads)
        ex = models[label]
        print(f"{label}: {ex.card.name} {ex.card.descriptor_dim}-D, fingerprint {ex.fingerprint[:12]}, "
              f"{ex.runtime_description}")  # fmt: skip
    results = {(m, s): Scores() for m in models for s in args.sizes}
    t0 = time.time()

    if (RTABMAP / "gt_matrix_84x84.npy").is_file():
        images = [cv2.imread(str(RTABMAP / "images" / f"{i}.jpg")) for i in range(1, 85)]
        gt = np.load(RTABMAP / "gt_matrix_84x84.npy", allow_pickle=False)
        for (m, s), res in results.items():
            models[m].max_side = s
            rtabmap_scores(describe(models[m], images, res.ms), gt, res)
    else:
        print(f"(RTAB-Map samples not found at {RTABMAP}: that column is left empty)")

    for label, config, spacing, radius, far, conditions in WORLDS:
        if label not in args.worlds:
            continue
        world = SyntheticWorld(config)
        mapping = world.traversal("mapping", spacing_m=spacing, max_frames=args.frames)
        pm = np.stack([f.position for f in mapping])[:, :2]
        queries = {
            c: world.traversal("query", spacing_m=spacing, max_frames=args.frames, condition=c or None)
            for c in conditions
        }
        for (m, s), res in results.items():
            models[m].max_side = s
            dm = describe(models[m], [f.image for f in mapping], res.ms)
            for c, frames in queries.items():
                dq = describe(models[m], [f.image for f in frames], res.ms)
                pq = np.stack([f.position for f in frames])[:, :2]
                world_scores(f"{label}|{c or 'other day'}", dm, dq, pm, pq, radius, far, res)
        print(f"  {label} done ({time.time() - t0:.0f} s)", flush=True)

    report(results, args.json)


def report(results: dict[tuple[str, int], Scores], json_path: Path | None) -> None:
    """Markdown tables: Recall@1 per set and condition, separation, ms/image."""
    keys = next(iter(results.values())).recall.keys()
    conditions = sorted({k.split("|")[1] for k in keys if "|" in k}, key=lambda c: (c != "other day", c))
    worlds = sorted({k.split("|")[0] for k in keys if "|" in k})
    table: dict[str, dict] = {}
    print()
    print(
        "| model | max_side | RTAB-Map R@1 | synthetic R@1 (mean) | "
        + " | ".join(conditions)
        + " | ms/image |"
    )
    print("|---|---|---|---|" + "---|" * len(conditions) + "---|")
    for (m, s), res in results.items():
        synth = {k: v for k, v in res.recall.items() if "|" in k}
        per_cond = [np.mean([v for k, v in synth.items() if k.endswith("|" + c)]) for c in conditions]
        ms = statistics.median(res.ms) if res.ms else float("nan")
        row = {
            "recall": res.recall,
            "synthetic_mean": float(np.mean(list(synth.values()))) if synth else float("nan"),
            "per_condition": dict(zip(conditions, map(float, per_cond), strict=True)),
            "per_world": {
                w: float(np.mean([v for k, v in synth.items() if k.startswith(w + "|")])) for w in worlds
            },
            "ms_per_image": ms,
        }
        for name, keys_ in (("rtabmap", ["rtabmap"]), ("synthetic", list(synth))):
            if all(k in res.same for k in keys_) and keys_:
                same = np.concatenate([res.same[k] for k in keys_])
                diff = np.concatenate([res.diff[k] for k in keys_])
                row[f"separation_{name}"] = separation(same, diff)
        table[f"{m}@{s}"] = row
        print(
            f"| {m} | {s} | {res.recall.get('rtabmap', float('nan')):.3f} | {row['synthetic_mean']:.3f} | "
            + " | ".join(f"{v:.3f}" for v in per_cond)
            + f" | {ms:.1f} |"
        )
    print()
    print("| model | max_side | " + " | ".join(worlds) + " |")
    print("|---|---|" + "---|" * len(worlds))
    for name, row in table.items():
        m, s = name.rsplit("@", 1)
        print(f"| {m} | {s} | " + " | ".join(f"{row['per_world'][w]:.3f}" for w in worlds) + " |")
    print()
    print("| model | max_side | set | same mean | different mean | gap | d' | AUC |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in table.items():
        m, s = name.rsplit("@", 1)
        for key in ("rtabmap", "synthetic"):
            sep = row.get(f"separation_{key}")
            if sep:
                print(f"| {m} | {s} | {key} | {sep['same']:.3f} | {sep['diff']:.3f} | {sep['gap']:.3f} | "
                      f"{sep['dprime']:.2f} | {sep['auc']:.3f} |")  # fmt: skip
    if json_path is not None:
        json_path.write_text(json.dumps(table, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
