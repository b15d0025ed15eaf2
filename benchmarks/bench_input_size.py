"""Recall@1 against network time for the input size (``max_side``) 640 / 480 / 320.

Two data sets, map and queries described with the same ``max_side``:

- the RTAB-Map sample walk (../shared/data/rtabmap_samples, 84 real indoor 512x384
  images): map = images 1-40, queries = images 41-84; a query's top-1 map image is right
  when ``gt_matrix_84x84.npy[query, match]`` is True; queries with no true match among
  images 1-40 are not counted (``offline.recall``, as everywhere in the project);
- a cross-day synthetic world (``netvlad_ros.synthetic.world``): the mapping traversal
  (overcast) as the map, the query traversal (another day, weaving, heading jitter) as
  queries, rendered in ``--condition`` (default dusk, rain, autumn); right within
  ``--radius`` metres (default 10: frames are 4 m apart, so 25 m would be nearly free).

ms/image: the median network time (``extractor.run``, batch 1) over every image described
at that size, with the default runtime (``auto``), and with PyTorch eager for reference.

    python benchmarks/bench_input_size.py [--sizes 640 480 320] [--frames 60] [--radius 25]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import cv2
import numpy as np

from netvlad_ros.model import DescriptorExtractor
from netvlad_ros.offline.recall import recall_at_n
from netvlad_ros.synthetic.world import SyntheticWorld, WorldConfig

RTABMAP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rtabmap_samples"


def describe(ex: DescriptorExtractor, images: list[np.ndarray]) -> tuple[np.ndarray, list[float]]:
    """Descriptors one image at a time (batch 1, as the node runs) and the network ms of each."""
    out, ms = [], []
    for image in images:
        batch = ex.prepare([image])
        out.append(ex.run(batch)[0])
        ms.append(batch.network_ms)
    return np.stack(out), ms


def rtabmap_recall(descriptors: np.ndarray, gt: np.ndarray) -> float:
    mapped, queries = descriptors[:40], descriptors[40:]
    top1 = np.argmax(queries @ mapped.T, axis=1)
    rows = np.arange(40, 84)
    correct = gt[rows, top1][:, None]
    valid = gt[rows, :40].any(axis=1)
    return recall_at_n(correct, (1,), valid)[1]


def world_recall(dm: np.ndarray, dq: np.ndarray, pm: np.ndarray, pq: np.ndarray, radius: float) -> float:
    top1 = np.argmax(dq @ dm.T, axis=1)
    correct = (np.linalg.norm(pm[top1] - pq, axis=1) <= radius)[:, None]
    nearest = np.linalg.norm(pq[:, None, :] - pm[None, :, :], axis=2).min(axis=1)
    return recall_at_n(correct, (1,), nearest <= radius)[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="default: the built-in model")
    ap.add_argument("--sizes", type=int, nargs="+", default=[640, 480, 320])
    ap.add_argument("--frames", type=int, default=60, help="frames per synthetic traversal")
    ap.add_argument("--seed", type=int, default=11, help="synthetic world seed")
    ap.add_argument("--radius", type=float, default=10.0, help="synthetic: a match is right within this (m)")
    ap.add_argument(
        "--condition",
        default="dusk/rain/autumn",
        help="synthetic: the queries' time/weather/season ('' = the query traversal's own other day)",
    )
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch timing column")
    args = ap.parse_args()

    rtab = None
    if (RTABMAP / "gt_matrix_84x84.npy").is_file():
        images = [cv2.imread(str(RTABMAP / "images" / f"{i}.jpg")) for i in range(1, 85)]
        rtab = (images, np.load(RTABMAP / "gt_matrix_84x84.npy", allow_pickle=False))
    else:
        print(f"(RTAB-Map samples not found at {RTABMAP}: that column is left empty)")
    world = SyntheticWorld(WorldConfig(seed=args.seed))
    mapping = world.traversal("mapping", spacing_m=4.0, max_frames=args.frames)
    query = world.traversal("query", spacing_m=4.0, max_frames=args.frames, condition=args.condition or None)
    pm = np.stack([f.position for f in mapping])[:, :2]
    pq = np.stack([f.position for f in query])[:, :2]

    ex = DescriptorExtractor(args.model, device="cpu")
    ref = None if args.no_torch else DescriptorExtractor(args.model, device="cpu", runtime="torch")
    h, w = mapping[0].image.shape[:2]
    print(f"model {ex.card.name}; default runtime: {ex.runtime_description}")
    print(f"synthetic world seed {args.seed}: {len(mapping)} map / {len(query)} query frames {w}x{h} "
          f"(queries: {args.condition or 'another day'}), radius {args.radius:g} m; "
          f"RTAB-Map: 40 map / 44 query images 512x384")  # fmt: skip
    print()
    print(
        "| max_side | RTAB-Map input | RTAB-Map R@1 | synthetic R@1 | ms/image (default runtime) | ms/image PyTorch |"
    )
    print("|---|---|---|---|---|---|")
    for side in args.sizes:
        ex.max_side = side
        times: list[float] = []
        r_rtab = float("nan")
        size = ""
        if rtab is not None:
            d, ms = describe(ex, rtab[0])
            times += ms
            r_rtab = rtabmap_recall(d, rtab[1])
            x = ex.prepare(rtab[0][:1]).inputs[0]
            size = f"{x.shape[2]}x{x.shape[1]}"
        dm, ms_m = describe(ex, [f.image for f in mapping])
        dq, ms_q = describe(ex, [f.image for f in query])
        times += ms_m + ms_q
        r_world = world_recall(dm, dq, pm, pq, args.radius)
        torch_ms = float("nan")
        if ref is not None:
            ref.max_side = side
            _, ms_t = describe(ref, [f.image for f in mapping])
            torch_ms = statistics.median(ms_t)
        print(
            f"| {side} | {size} | {r_rtab:.3f} | {r_world:.3f} | {statistics.median(times):.1f} | {torch_ms:.1f} |"
        )


if __name__ == "__main__":
    main()
