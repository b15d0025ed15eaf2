"""Which EfficientNet-Lite0 stage should NetVLAD read? Prints a table.

For each candidate cut: local-descriptor channels and stride, ms/image at
480x640 (batch 1, this CPU), and place-recognition quality on the real
RTAB-Map sample walk (../shared/data/rtabmap_samples: 84 indoor images, the
second half revisits the first). Clusters (K=32) are fitted on the first
traversal (images 1-40); each image of the second traversal that has a
ground-truth loop queries the first traversal; Recall@1/5 = the top-1/top-5
contains a ground-truth match.

    .venv/bin/python benchmarks/choose_lite0_cut.py [--stages 4 5 6 7]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from netvlad_ros.model import DescriptorExtractor
from netvlad_ros.model.clusters import create_model, new_card

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "rtabmap_samples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, nargs="+", default=[4, 5, 6, 7])
    parser.add_argument("--clusters", type=int, default=32)
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"needs the RTAB-Map samples at {DATA}")
    torch.set_num_threads(2)
    images = [cv2.imread(str(DATA / "images" / f"{i}.jpg")) for i in range(1, 85)]
    gt = np.load(DATA / "gt_matrix_84x84.npy")
    mapping, queries = list(range(40)), [i for i in range(40, 84) if gt[i, :40].any()]
    frame = cv2.resize(images[0], (640, 480))
    print(f"| cut | channels | stride | dim (K={args.clusters}) | ms/image 480x640 | R@1 | R@5 |")
    print("|---|---|---|---|---|---|---|")
    for stage in args.stages:
        card = new_card("efficientnet_lite0", f"stage{stage}", num_clusters=args.clusters, max_side=640)
        net, card = create_model([images[i] for i in mapping], card, seed=0)
        ex = DescriptorExtractor.from_network(net, card, device="cpu", batch_size=1)
        ex([frame])
        t0 = time.perf_counter()
        for _ in range(5):
            ex([frame])
        ms = (time.perf_counter() - t0) / 5 * 1000
        d = ex(images)
        sims = d[queries] @ d[mapping].T
        order = np.argsort(-sims, axis=1)
        r1 = np.mean([gt[q, order[n, 0]] for n, q in enumerate(queries)])
        r5 = np.mean([gt[q, order[n, :5]].any() for n, q in enumerate(queries)])
        from netvlad_ros.model.backbones import backbone_spec

        spec = backbone_spec("efficientnet_lite0", f"stage{stage}")
        print(
            f"| stage{stage} | {spec.channels} | {spec.stride} | {card.descriptor_dim} | {ms:.0f} | {r1:.3f} | {r5:.3f} |"
        )


if __name__ == "__main__":
    main()
