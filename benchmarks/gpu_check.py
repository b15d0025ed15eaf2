"""The GPU path in one run: ms/image per runtime on CUDA and the cosine to fp32 CPU PyTorch.

Rows: PyTorch fp32 and fp16, ONNX Runtime's CUDA provider (fp32, fp16) and its TensorRT
provider (fp32, fp16) when onnxruntime-gpu / TensorRT are installed. Each row is built
through ``DescriptorExtractor(model, device=..., runtime=..., fp16=...)``, the product's
own path, so a row that fell back to PyTorch (export refused by the cosine check) or is
unavailable says so instead of timing something else. The timed call is
``extractor.run(prepared)`` (the network, including the host<->device copies), batch 1 and
batch 16, after a warm-up that also builds TensorRT engines.

On a machine without CUDA it prints why and exits 0 (nothing to check); ``--device cpu``
runs the same rows on the CPU, a dry run of the script itself. Exports and
TensorRT engines go to a temporary cache (``--cache`` to keep them).

    python benchmarks/gpu_check.py [--device cuda:0] [--model PATH] [--rounds 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", type=Path, default=None, help="default: the built-in model")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--cache", type=Path, default=None, help="export/engine cache (default: a temp dir)")
    args = ap.parse_args()
    os.environ["NETVLAD_ROS_CACHE"] = str(args.cache or tempfile.mkdtemp(prefix="gpu_check_cache_"))

    import torch

    if args.device != "cpu" and not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA GPU here (torch {torch.__version__}: torch.cuda.is_available() is False); "
            "nothing to check"
        )
        return 0

    from netvlad_ros.model import DescriptorExtractor
    from netvlad_ros.model import runtimes as rt
    from netvlad_ros.synthetic.world import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(seed=3, width=args.width, height=args.height))
    frames = [f.image for f in world.traversal("mapping", spacing_m=4.0, max_frames=16)]
    side = max(args.width, args.height)
    cpu = DescriptorExtractor(args.model, device="cpu", runtime="torch", max_side=side)
    reference = cpu(frames)
    try:
        import onnxruntime as ort

        providers = ", ".join(ort.get_available_providers())
        ort_line = f"onnxruntime {ort.__version__} (providers: {providers})"
    except ImportError:
        ort_line = "onnxruntime not installed"
    gpu = (
        torch.cuda.get_device_name(args.device) if args.device != "cpu" else "none (--device cpu: a dry run)"
    )
    print(f"GPU: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}; {ort_line}")
    print(f"model {cpu.card.name} ({cpu.dim}-D), {args.width}x{args.height}, {args.rounds} rounds per row")
    print()
    print(
        "| runtime | fp16 | runs | batch 1 median ms | batch 1 p90 ms | batch 16 ms/image | min cosine to fp32 CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    notes = []
    for runtime, fp16 in (
        ("torch", False),
        ("torch", True),
        ("onnxruntime", False),
        ("onnxruntime", True),
        ("tensorrt", False),
        ("tensorrt", True),
    ):
        label = f"| {runtime} | {fp16} "
        try:
            ex = DescriptorExtractor(
                args.model, device=args.device, runtime=runtime, fp16=fp16, max_side=side, batch_size=16
            )
        except (rt.RuntimeUnavailableError, ValueError) as exc:
            print(f"{label}| unavailable | | | | |")
            notes.append(f"{runtime} fp16={fp16}: {exc}")
            continue
        one = ex.prepare(frames[:1])
        sixteen = ex.prepare(frames)
        for _ in range(10):  # warm-up: CUDA context, cuDNN autotuning, TensorRT engines
            ex.run(one)
        ex.run(sixteen)
        times = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            ex.run(one)
            times.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        reps = max(1, args.rounds // 10)
        for _ in range(reps):
            got = ex.run(sixteen)
        per_image16 = (time.perf_counter() - t0) * 1e3 / (reps * len(frames))
        cosine = float(((got * reference).sum(1)).min())  # both unit-norm
        runs = ex.runtime if ex.runtime == runtime else f"{ex.runtime} (fell back)"
        print(
            f"{label}| {runs} | {statistics.median(times):.2f} | {float(np.percentile(times, 90)):.2f} | "
            f"{per_image16:.2f} | {cosine:.6f} |"
        )
        notes.append(f"{runtime} fp16={fp16}: {ex.runtime_note}")
    print()
    for line in notes:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
