"""Network time per image for every installed runtime, side by side in one run.

Each runtime is built through ``DescriptorExtractor(model, device=..., runtime=...)`` (the
real code path: cached export, the cosine check, thread sizing). The timed call is
``extractor.run(prepared)``: the network only, on inputs prepared once, so all rows
time the same thing. Rounds are interleaved (runtime A, B, C, A, B, C, ...) so a
neighbour's load on a shared machine hits every row alike, with a pause before each call
so one runtime's spinning worker threads do not slow the next. The cosine column compares
each runtime's descriptors of distinct synthetic-world frames with PyTorch eager's.

``--shapes`` adds the dynamic-shape table: steady-state ms and the first call at a new
input size for OpenVINO with per-size compiled models (the default) and with one
dynamic-shape model, and ONNX Runtime with the dynamic export (the default) and with a
static export made for the timed size.

    python benchmarks/bench_runtimes.py [--height 480 --width 640] [--rounds 40] [--shapes]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from netvlad_ros.model import DescriptorExtractor
from netvlad_ros.model import runtimes as rt
from netvlad_ros.model.device import cpu_count
from netvlad_ros.synthetic.world import SyntheticWorld, WorldConfig


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = Path("/proc/meminfo").read_text().split()[1]
        ram = f", {int(mem) / 2**20:.0f} GiB"
    except (OSError, IndexError, ValueError):
        ram = ""
    return f"{cpu}, {cpu_count()} CPUs{ram}"


def timed_rounds(
    fns: dict[str, Any], x: Any, rounds: int, warmup: int, gap: float = 0.0
) -> dict[str, list[float]]:
    """Milliseconds per call of each ``fn(x)``, interleaved round by round, ``gap`` seconds apart.

    The gap matters: PyTorch's OpenMP workers and ONNX Runtime's pool spin for a while
    after a call, and without a pause they steal the cores from whichever runtime runs
    next (measured: OpenVINO 26 ms right after ONNX Runtime, 17 ms after a pause).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn(x)
    out: dict[str, list[float]] = {k: [] for k in fns}
    if gap < 0:  # back to back: each runtime's calls in one block (build-map's regime)
        for name, fn in fns.items():
            for _ in range(rounds):
                t0 = time.perf_counter()
                fn(x)
                out[name].append((time.perf_counter() - t0) * 1e3)
        return out
    for _ in range(rounds):
        for name, fn in fns.items():
            time.sleep(gap)
            t0 = time.perf_counter()
            fn(x)
            out[name].append((time.perf_counter() - t0) * 1e3)
    return out


def cosine_rows(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def shapes_table(
    ex: DescriptorExtractor, size: tuple[int, int], rounds: int, warmup: int, threads: int, gap: float
) -> None:
    """Dynamic-shape variants: steady ms at ``size`` and the first call at a new size."""
    net = ex.net
    path, _ = rt.exported_onnx(net, ex.fingerprint, ex.card.name or "model", rt_cache(), None, False)
    h, w = size
    variants: dict[str, Any] = {}
    if rt.runtime_version("openvino"):
        variants["openvino, per-size compiled (default)"] = lambda: rt.OpenVinoBackend(
            path, threads, "static"
        )
        variants["openvino, one dynamic-shape model"] = lambda: rt.OpenVinoBackend(path, threads, "dynamic")
    if rt.runtime_version("onnxruntime"):
        variants["onnxruntime, dynamic export (default)"] = lambda: rt.OnnxRuntimeBackend(
            path, torch.device("cpu"), threads
        )
        static = Path(tempfile.mkdtemp(prefix="bench_rt_")) / "static.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                rt._exportable(net, torch.device("cpu"), False),
                (torch.zeros(1, 3, h, w),),
                str(static),
                input_names=["image"],
                output_names=["descriptor"],
                opset_version=rt.OPSET,
                dynamo=False,
            )
        variants[f"onnxruntime, static export for {w}x{h}"] = lambda: rt.OnnxRuntimeBackend(
            static, torch.device("cpu"), threads
        )
    rng = np.random.default_rng(0)
    x = (0.5 * rng.standard_normal((1, 3, h, w))).astype(np.float32)
    other = (0.5 * rng.standard_normal((1, 3, h - 32, w))).astype(np.float32)
    backends = {}
    first = {}
    for name, make in variants.items():
        b = make()
        t0 = time.perf_counter()
        b.infer(x)
        first[name] = (time.perf_counter() - t0) * 1e3
        backends[name] = b
    ms = timed_rounds({k: b.infer for k, b in backends.items()}, x, rounds, warmup, gap)
    new_size = {}
    for name, b in backends.items():
        if "static export" in name:
            new_size[name] = float("nan")  # a static graph cannot take another size
            continue
        t0 = time.perf_counter()
        b.infer(other)
        new_size[name] = (time.perf_counter() - t0) * 1e3
    print()
    order = "back to back" if gap < 0 else f"interleaved, {gap:g} s pauses"
    print(f"Dynamic input sizes, {w}x{h}, batch 1, {threads} threads ({rounds} rounds, {order})")
    print()
    print("| variant | median ms | p90 ms | first call ms | first call at a new size ms |")
    print("|---|---|---|---|---|")
    for name, v in ms.items():
        print(
            f"| {name} | {statistics.median(v):.1f} | {percentile(v, 90):.1f} | {first[name]:.0f} | "
            f"{new_size[name]:.0f} |"
        )


def rt_cache() -> Path:
    from netvlad_ros.model.default_model import cache_dir

    return cache_dir()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="default: the built-in model")
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0: one per available core")
    ap.add_argument("--batch", type=int, default=1, help="images per run() call")
    ap.add_argument("--frames", type=int, default=6, help="distinct frames for the cosine column")
    ap.add_argument("--shapes", action="store_true", help="also the dynamic-shape table")
    ap.add_argument(
        "--gap",
        type=float,
        default=0.25,
        help="seconds of pause before each timed call (the node's regime: a frame, then a wait); "
        "negative: back to back, each runtime in one block (build-map's regime)",
    )
    args = ap.parse_args()

    world = SyntheticWorld(WorldConfig(seed=3, width=args.width, height=args.height))
    frames = [f.image for f in world.traversal("mapping", spacing_m=6.0, max_frames=args.frames)]
    # max_side = the frames' longer side, so the network sees exactly height x width.
    common = dict(
        device="cpu", threads=args.threads, max_side=max(args.width, args.height), batch_size=args.batch
    )
    names = ["torch"] + [n for n in ("onnxruntime", "openvino") if rt.runtime_version(n)]
    extractors = {n: DescriptorExtractor(args.model, runtime=n, **common) for n in names}
    auto = DescriptorExtractor(args.model, runtime="auto", **common)
    reference = extractors["torch"](frames)
    cos = {n: cosine_rows(ex(frames), reference) for n, ex in extractors.items()}
    batch = extractors["torch"].prepare(frames[: args.batch])
    assert batch.inputs[0].shape == (3, args.height, args.width), batch.inputs[0].shape
    ms = timed_rounds({n: ex.run for n, ex in extractors.items()}, batch, args.rounds, args.warmup, args.gap)
    pre = timed_rounds({"prepare": extractors["torch"].prepare}, frames[: args.batch], args.rounds, 2)[
        "prepare"
    ]
    torch_median = statistics.median(ms["torch"]) / args.batch

    order = "back to back" if args.gap < 0 else f"interleaved, {args.gap:g} s pause before each call"
    print(f"machine: {machine()}; torch {torch.__version__}, {extractors['torch'].threads} threads")
    print(f"model: {extractors['torch'].card.name} ({extractors['torch'].dim}-D); input {args.width}x{args.height}, "
          f"batch {args.batch}, {args.rounds} rounds, {order}; preprocessing {statistics.median(pre) / args.batch:.1f} "
          f"ms/image (not in the table)")  # fmt: skip
    print(f"auto picks: {auto.runtime} ({auto.runtime_description})")
    print()
    print("| runtime | median ms/image | p90 ms/image | speed-up vs PyTorch | min cosine to PyTorch |")
    print("|---|---|---|---|---|")
    for n, ex in extractors.items():
        med = statistics.median(ms[n]) / args.batch
        p90 = percentile(ms[n], 90) / args.batch
        label = f"{n}{' (auto)' if n == auto.runtime else ''}: {ex.runtime_description}"
        print(f"| {label} | {med:.1f} | {p90:.1f} | {torch_median / med:.2f}x | {cos[n]:.6f} |")
    if args.shapes:
        shapes_table(
            extractors["torch"], (args.height, args.width), args.rounds, args.warmup, auto.threads, args.gap
        )


if __name__ == "__main__":
    main()
