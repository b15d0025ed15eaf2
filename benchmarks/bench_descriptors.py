"""Descriptor speed on this machine; prints Markdown tables (not a timed test).

1. ms/image at 480x640 for each backbone + NetVLAD (K=64, the paper's K; the
   default model uses K=32), batch 1 and batch 8, plus the baseline heads.
2. The NetVLAD layer alone, vectorised vs a naive per-cluster loop, on the
   same input (the default model's stage5 features at 480x640: 112 x 30 x 40).

    .venv/bin/python benchmarks/bench_descriptors.py [--reps 3] [--backbones ...]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from netvlad_ros.model import DescriptorExtractor, build_network
from netvlad_ros.model.clusters import new_card
from netvlad_ros.model.netvlad import NetVLAD


def time_call(fn, reps: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def naive_netvlad(layer: NetVLAD, x: torch.Tensor) -> torch.Tensor:
    out = []
    x = F.normalize(x, dim=1)
    a = F.softmax(layer.assignment(x).flatten(2), dim=1)
    feats = x.flatten(2)
    for b in range(x.shape[0]):
        v = []
        for k in range(layer.num_clusters):
            r = (a[b, k][None, :] * (feats[b] - layer.centroids[k][:, None])).sum(1)
            v.append(F.normalize(r, dim=0))
        out.append(F.normalize(torch.cat(v), dim=0))
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--backbones", nargs="+", default=["efficientnet_lite0", "resnet18", "resnet50", "vgg16"]
    )
    parser.add_argument("--clusters", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    print()
    print("| backbone | pooling | dim | ms/img batch 1 | ms/img batch 8 |")
    print("|---|---|---|---|---|")
    for name in args.backbones:
        poolings = ["netvlad", "avg", "max", "gem"] if name == "efficientnet_lite0" else ["netvlad"]
        for pooling in poolings:
            card = new_card(name, None, pooling, args.clusters, 0, max_side=640)
            net = build_network(card, backbone_weights="none").eval()
            ex = DescriptorExtractor.from_network(net, card, device="cpu", batch_size=8)
            one = time_call(lambda ex=ex: ex([frame]), args.reps) * 1000
            eight = time_call(lambda ex=ex: ex([frame] * 8), max(1, args.reps // 2)) * 1000 / 8
            print(f"| {name} {card.cut} | {pooling} | {card.descriptor_dim} | {one:.0f} | {eight:.0f} |")
    print()
    print("| NetVLAD layer alone (112x30x40 input) | K | ms batch 1 | ms batch 8 |")
    print("|---|---|---|---|")
    for k in (32, 64):
        layer = NetVLAD(k, 112).eval()
        for label, fn in (
            ("vectorised", layer.forward),
            ("naive per-cluster loop", lambda x, layer=layer: naive_netvlad(layer, x)),
        ):
            with torch.inference_mode():
                x1, x8 = torch.randn(1, 112, 30, 40), torch.randn(8, 112, 30, 40)
                t1 = time_call(lambda fn=fn, x1=x1: fn(x1), args.reps * 3) * 1000
                t8 = time_call(lambda fn=fn, x8=x8: fn(x8), args.reps) * 1000
            print(f"| {label} | {k} | {t1:.2f} | {t8:.2f} |")


if __name__ == "__main__":
    main()
