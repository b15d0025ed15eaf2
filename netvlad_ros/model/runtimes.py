"""Inference runtimes for the descriptor network: PyTorch, ONNX Runtime, OpenVINO, TensorRT.

One switch picks what runs the network (``ExtractorParams.runtime``):

| runtime       | device     | package                         | what runs                              |
|---------------|------------|---------------------------------|----------------------------------------|
| ``torch``     | cpu, cuda  | torch                           | the PyTorch module (fp16 on CUDA)      |
| ``onnxruntime``| cpu, cuda | onnxruntime / onnxruntime-gpu   | the exported ONNX graph, CPU or CUDA EP|
| ``openvino``  | cpu        | openvino                        | the exported ONNX graph, one compiled  |
|               |            |                                 | model per input size (cached)          |
| ``tensorrt``  | cuda       | onnxruntime-gpu + TensorRT      | ONNX Runtime's TensorRT EP             |
| ``auto``      |            |                                 | CPU: openvino, else onnxruntime, else  |
|               |            |                                 | torch; CUDA: torch                     |

The order for ``auto`` on the CPU was chosen by measurement (benchmarks/bench_runtimes.py,
docs/runtimes.md). On CUDA ``auto`` is PyTorch: the ONNX Runtime GPU providers are written
and behind the same switch, but not yet measured against it (benchmarks/gpu_check.py).

**Exports.** The ONNX graph is exported from the network once, with dynamic batch, height
and width, and cached under ``default_model.cache_dir()/exports/``, keyed by a digest of
the weights, the model card's fingerprint, the PyTorch version, the opset and the export
recipe (:data:`EXPORT_FORMAT`) — everything that changes the graph. The runtime's version
is not in the key: the ONNX file does not depend on it, and every load is re-checked
with the runtime that will run it (below), so an upgraded runtime cannot slip through.
Files are written beside their target and renamed into place under an exclusive lock
(``fileio``), with a JSON sidecar holding the file's SHA-256: a truncated or garbled
export fails the checksum (or the runtime's loader) and is rebuilt, never used.

**The check.** Every time a runtime is opened, its descriptors for probe inputs at two
sizes (one odd-sized, one a batch of two) must match PyTorch's to cosine >=
``min_cosine`` (default :data:`EXPORT_MIN_COSINE`, 0.9999). A cached export that fails is
rebuilt once; a fresh export that fails is refused with :class:`ExportCheckError`, and the
extractor falls back to PyTorch, saying so (a logging warning and ``extractor.runtime_note``).
The check is why OpenVINO runs with ``INFERENCE_PRECISION_HINT=f32``: its CPU default on
processors with bf16 (cosine 0.9996 to PyTorch, measured) would fail it.

**Why the padding adapter.** EfficientNet-Lite's TensorFlow "same" padding is computed from
the input size with Python arithmetic, which the ONNX tracer freezes at the traced size:
a naive dynamic-size export is silently wrong at other sizes (cosine 0.48-0.92 to PyTorch,
measured). The export swaps in :class:`_TraceableSameConv2d`, which computes the same pads
from traced shapes; eager results are bit-identical.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..fileio import exclusive_lock, replace_atomically, sha256_file
from .efficientnet_lite import SameConv2d

__all__ = [
    "AUTO_ORDER_CPU",
    "EXPORT_FORMAT",
    "EXPORT_MIN_COSINE",
    "RUNTIMES",
    "Backend",
    "ExportCheckError",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "OpenedRuntime",
    "RuntimeUnavailableError",
    "TorchBackend",
    "check_backend",
    "export_path",
    "exported_onnx",
    "installed_runtimes",
    "open_runtime",
    "probe_inputs",
    "runtime_version",
]

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
# What ``auto`` tries on the CPU, fastest first (measured: docs/runtimes.md).
AUTO_ORDER_CPU = ("openvino", "onnxruntime")
EXPORT_MIN_COSINE = 0.9999
OPSET = 17
# Bump when the export recipe (adapter, axes, exporter options) changes: old files then miss the cache.
EXPORT_FORMAT = 1
# OpenVINO compiles one model per input shape; a camera gives one or two shapes, so this is plenty.
OPENVINO_MAX_SHAPES = 8

_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "onnxruntime"}
_INSTALL_HINT = {
    "onnxruntime": "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA)",
    "openvino": "pip install openvino",
    "tensorrt": "pip install onnxruntime-gpu tensorrt (TensorRT runs through ONNX Runtime's TensorRT provider)",
}


class RuntimeUnavailableError(RuntimeError):
    """The runtime asked for is not installed, or cannot run on the device asked for."""


class ExportCheckError(RuntimeError):
    """An exported graph does not reproduce PyTorch's descriptors (or could not be made or loaded)."""


class Backend(Protocol):
    """Runs the network: float32 (B, 3, H, W) network input -> (B, dim) float32 descriptors."""

    name: str

    @property
    def description(self) -> str:
        """One line: runtime, version, device, precision, threads (for logs and /diagnostics)."""
        ...

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Descriptors for one batch (not necessarily re-normalised)."""
        ...


def runtime_version(name: str) -> str | None:
    """The installed version of runtime ``name``'s package, or None when it is not installed."""
    if name == "torch":
        return torch.__version__
    module = _MODULES.get(name)
    if module is None or importlib.util.find_spec(module) is None:
        return None
    try:
        return str(importlib.import_module(module).__version__)
    except ImportError:
        return None


def installed_runtimes() -> tuple[str, ...]:
    """The concrete runtimes whose packages import here (``torch`` always)."""
    return tuple(n for n in RUNTIMES if n != "auto" and runtime_version(n) is not None)


# ----------------------------------------------------------------------------- backends


class TorchBackend:
    """The PyTorch module itself, on ``device`` in ``dtype`` (fp16 only on CUDA)."""

    name = "torch"

    def __init__(self, net: nn.Module, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.net = net.to(device, dtype).eval()
        self.device = device
        self.dtype = dtype

    @property
    def description(self) -> str:
        precision = "fp16" if self.dtype == torch.float16 else "fp32"
        return f"torch {torch.__version__} {self.device} {precision}, {torch.get_num_threads()} threads"

    def infer(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            batch = torch.from_numpy(x).to(self.device, self.dtype, non_blocking=True)
            return self.net(batch).float().cpu().numpy()


class OnnxRuntimeBackend:
    """An ONNX Runtime session: CPU, CUDA or TensorRT execution provider.

    ONNX Runtime falls back to its CPU provider when a GPU provider fails to load; that
    would be a silent change of device, so the session's active providers are checked and
    a missing GPU provider raises :class:`RuntimeUnavailableError`.
    """

    def __init__(
        self,
        onnx_path: Path,
        device: torch.device,
        threads: int,
        provider: str = "cpu",
        half: bool = False,
        engine_cache: Path | None = None,
    ) -> None:
        import onnxruntime as ort

        self.name = "tensorrt" if provider == "tensorrt" else "onnxruntime"
        self.device = device
        self.half = half
        self.threads = threads
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # warnings about unused initialisers etc. are noise here
        index = device.index or 0
        providers: list[Any]
        wanted = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(
            provider, "TensorrtExecutionProvider"
        )
        if provider == "cpu":
            providers = ["CPUExecutionProvider"]
        elif provider == "cuda":
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        else:
            trt: dict[str, Any] = {"device_id": index, "trt_fp16_enable": bool(half)}
            if engine_cache is not None:
                engine_cache.mkdir(parents=True, exist_ok=True)
                trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(engine_cache))
            providers = [
                ("TensorrtExecutionProvider", trt),
                ("CUDAExecutionProvider", {"device_id": index}),
                "CPUExecutionProvider",
            ]
        available = ort.get_available_providers()
        if wanted not in available:
            raise RuntimeUnavailableError(
                f"onnxruntime {ort.__version__} here has no {wanted} (it has {', '.join(available)}): "
                f"{_INSTALL_HINT['tensorrt' if provider == 'tensorrt' else 'onnxruntime']}"
            )
        try:
            self.session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ExportCheckError(f"onnxruntime could not load {onnx_path.name}: {exc}") from exc
        active = self.session.get_providers()
        if active[0] != wanted:
            raise RuntimeUnavailableError(
                f"onnxruntime could not start {wanted} (active: {', '.join(active)}); check the CUDA/TensorRT "
                "libraries onnxruntime-gpu needs"
            )
        self.provider = wanted
        self.input_name = self.session.get_inputs()[0].name

    @property
    def description(self) -> str:
        import onnxruntime as ort

        return (
            f"onnxruntime {ort.__version__} {self.provider.removesuffix('ExecutionProvider')} "
            f"{'fp16' if self.half else 'fp32'}, {self.threads} threads"
        )

    def infer(self, x: np.ndarray) -> np.ndarray:
        feed = x.astype(np.float16) if self.half and self.name == "onnxruntime" else x
        out = self.session.run(None, {self.input_name: feed})[0]
        return np.asarray(out, np.float32)


class OpenVinoBackend:
    """OpenVINO on the CPU, f32 (see the module docstring), one compiled model per input shape.

    ``shapes="static"`` (the default, chosen by measurement: docs/runtimes.md) reshapes the
    dynamic graph to each new input shape and compiles it once, keeping the last
    :data:`OPENVINO_MAX_SHAPES`; ``"dynamic"`` compiles the dynamic graph once.
    """

    name = "openvino"

    def __init__(self, onnx_path: Path, threads: int, shapes: str = "static") -> None:
        import openvino as ov

        if shapes not in ("static", "dynamic"):
            raise ValueError(f"shapes must be 'static' or 'dynamic', got {shapes!r}")
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(onnx_path))
        except Exception as exc:  # openvino raises RuntimeError subclasses of its own
            raise ExportCheckError(f"openvino could not read {onnx_path.name}: {exc}") from exc
        self.threads = threads
        self.shapes = shapes
        self.config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": threads,
        }
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self.compile_seconds = 0.0

    @property
    def description(self) -> str:
        import openvino as ov

        return f"openvino {ov.__version__} CPU f32 {self.shapes} shapes, {self.threads} threads"

    def _request(self, shape: tuple[int, ...]) -> Any:
        key = shape if self.shapes == "static" else ()
        request = self._compiled.get(key)
        if request is not None:
            self._compiled.move_to_end(key)
            return request
        t0 = time.perf_counter()
        model = self.model
        if self.shapes == "static":
            model = self.model.clone()
            model.reshape({0: list(shape)})
        request = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        self.compile_seconds += time.perf_counter() - t0
        self._compiled[key] = request
        while len(self._compiled) > OPENVINO_MAX_SHAPES:
            self._compiled.popitem(last=False)
        return request

    def infer(self, x: np.ndarray) -> np.ndarray:
        request = self._request(tuple(x.shape))
        out = request.infer({0: x})[0]
        return np.array(out, np.float32)  # a copy: the request reuses its output buffer


# ----------------------------------------------------------------------------- export


class _TraceableSameConv2d(SameConv2d):
    """SameConv2d whose pads the ONNX tracer keeps symbolic (see the module docstring).

    pad = (ceil(i/s) − 1)·s + k − i = ((−i) mod s) + k − s, which is >= 0 whenever
    k >= s (true of every EfficientNet-Lite conv), so ``max`` and ``ceil`` are not needed,
    and a zero pad is harmless, so the branch on "any padding" is decided by the module's
    constants, not the input.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        sh, sw = self.stride
        if (kh, kw, sh, sw) != (1, 1, 1, 1):
            ih, iw = x.shape[-2], x.shape[-1]
            ph = (-ih) % sh + (kh - sh)
            pw = (-iw) % sw + (kw - sw)
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _exportable(net: nn.Module, device: torch.device, half: bool) -> nn.Module:
    copy_ = copy.deepcopy(net).to(device, torch.float16 if half else torch.float32).eval()
    for m in copy_.modules():
        if type(m) is SameConv2d:
            kh, kw = m.kernel_size
            sh, sw = m.stride
            if kh < sh or kw < sw:  # pragma: no cover - no such layer in EfficientNet-Lite
                raise ExportCheckError(f"cannot export a 'same' conv with kernel {m.kernel_size} < stride")
            m.__class__ = _TraceableSameConv2d
    return copy_


def weights_digest(net: nn.Module) -> str:
    """SHA-256 over the network's state (names, shapes, values): what the export was made from.

    The card's fingerprint alone is not enough: a network in memory (training) can
    change its weights under the same card.
    """
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:".encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def export_key(net: nn.Module, fingerprint: str, half: bool) -> tuple[str, dict[str, Any]]:
    """The cache key of ``net``'s export and the fields it was made from."""
    fields = {
        "weights": weights_digest(net),
        "fingerprint": fingerprint,
        "torch": torch.__version__,
        "opset": OPSET,
        "export_format": EXPORT_FORMAT,
        "precision": "fp16" if half else "fp32",
        "axes": "dynamic batch, height, width",
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest(), fields


def export_path(cache: Path, name: str, key: str) -> Path:
    """Where the export with ``key`` of the model called ``name`` is cached."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "model"
    return cache / "exports" / f"{safe}-{key[:24]}.onnx"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _export_file(net: nn.Module, device: torch.device, half: bool, out: Path) -> None:
    model = _exportable(net, device, half)
    x = torch.zeros(1, 3, 224, 288, device=device, dtype=torch.float16 if half else torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings for the card-constant checks in forward()
        torch.onnx.export(
            model,
            (x,),
            str(out),
            input_names=["image"],
            output_names=["descriptor"],
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "descriptor": {0: "batch"}},
        )


def _cached_ok(path: Path) -> str | None:
    """None when ``path`` and its sidecar agree; else why the cached file cannot be used."""
    side = _sidecar(path)
    if not path.is_file() or not side.is_file():
        return "not cached"
    try:
        meta = json.loads(side.read_text())
        expected = meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its checksum file {side.name} is unreadable ({exc})"
    actual = sha256_file(path)
    if actual != expected:
        return f"{path.name} does not match its checksum (truncated or corrupt)"
    return None


# Exports this process wrote (path -> sha256): known to be what the exporter makes of the network.
_WRITTEN: dict[Path, str] = {}


def _written_here(path: Path) -> bool:
    try:
        return _WRITTEN.get(path) == sha256_file(path)
    except OSError:
        return False


def exported_onnx(
    net: nn.Module,
    fingerprint: str,
    name: str,
    cache: Path,
    device: torch.device | None = None,
    half: bool = False,
    rebuild: bool = False,
) -> tuple[Path, str]:
    """The cached ONNX export of ``net`` (made now if missing, corrupt, or ``rebuild``); and a note.

    The note is "" when a good cached file was used, else says why it was (re)made.
    Safe against concurrent processes: one exports under the lock while the others wait,
    then use its file; a reader never sees a half-written file.
    """
    key, fields = export_key(net, fingerprint, half)
    path = export_path(cache, name, key)
    if not rebuild and _cached_ok(path) is None:
        return path, ""
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.parent / f".{path.name}.lock"):
        problem = "rebuild requested" if rebuild else _cached_ok(path)
        if problem is None:  # another process made it while we waited
            return path, ""
        if problem != "not cached":
            log.warning("cached export %s: %s; exporting again", path, problem)
        t0 = time.perf_counter()
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            _export_file(net, device or torch.device("cpu"), half, tmp)
        except Exception as exc:  # the exporter raises many types for an unsupported network
            tmp.unlink(missing_ok=True)
            raise ExportCheckError(f"the network could not be exported to ONNX: {exc}") from exc
        seconds = time.perf_counter() - t0
        side = _sidecar(path)
        meta = {"sha256": sha256_file(tmp), "bytes": tmp.stat().st_size, "key": key, **fields}
        # The old sidecar goes first: a crash between the two renames leaves a file without one
        # (re-exported next time), never a sidecar vouching for the wrong file.
        side.unlink(missing_ok=True)
        replace_atomically(tmp, path)
        tmp_side = side.with_name(f".{side.name}.tmp{os.getpid()}")
        tmp_side.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        replace_atomically(tmp_side, side)
        _WRITTEN[path] = meta["sha256"]
    why = "exported" if problem == "not cached" else f"re-exported ({problem})"
    log.info("%s %s in %.1f s", why, path, seconds)
    return path, why


# ----------------------------------------------------------------------------- the check


def probe_inputs() -> list[np.ndarray]:
    """Deterministic network inputs for the check: smooth structure plus fine texture.

    Two sizes: 192x256 (a batch of two) and 213x283 (odd, a different residue mod 32
    from the export's traced 224x288), so a graph with frozen sizes or batch fails.
    """
    rng = np.random.default_rng(20240611)
    out = []
    for batch, h, w in ((2, 192, 256), (1, 213, 283)):
        coarse = rng.standard_normal((h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
        smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        img = 0.6 * smooth + 0.3 * rng.standard_normal((h, w, 3)).astype(np.float32)
        frames = [np.roll(img, 17 * i, axis=1) for i in range(batch)]
        out.append(np.ascontiguousarray(np.stack(frames).transpose(0, 3, 1, 2)))
    return out


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def check_backend(backend: Backend, reference: Backend, min_cosine: float = EXPORT_MIN_COSINE) -> float:
    """The lowest cosine between ``backend``'s and ``reference``'s descriptors over the probes.

    Raises ExportCheckError when it is below ``min_cosine``, when an output has the
    wrong shape or is not finite, or when the runtime fails on a probe.
    """
    worst = 1.0
    for x in probe_inputs():
        want = reference.infer(x)
        try:
            got = backend.infer(x)
        except Exception as exc:  # runtimes raise their own types on a broken graph
            raise ExportCheckError(f"{backend.name} failed on a {x.shape} probe: {exc}") from exc
        if got.shape != want.shape or not np.isfinite(got).all():
            raise ExportCheckError(
                f"{backend.name} gave {got.shape} outputs (finite: {bool(np.isfinite(got).all())}) for a "
                f"{x.shape} probe; PyTorch gives {want.shape}"
            )
        worst = min(worst, float(_cosines(got, want).min()))
    if not worst >= min_cosine:
        raise ExportCheckError(
            f"{backend.name}'s descriptors differ from PyTorch's: cosine {worst:.6f} < {min_cosine:g} on the probe "
            "inputs"
        )
    return worst


# ----------------------------------------------------------------------------- choosing


@dataclass
class OpenedRuntime:
    """What :func:`open_runtime` settled on: the backend, why, the check's cosine, and PyTorch.

    ``reference`` is the PyTorch backend the check compared with (``backend`` itself
    when PyTorch runs); local features and fallbacks use it.
    """

    backend: Backend
    note: str
    reference: TorchBackend
    cosine: float = 1.0


def _supports(name: str, device: torch.device, fp16: bool) -> str | None:
    """None when ``name`` can run on ``device`` with ``fp16``; else the reason."""
    if name == "openvino" and device.type != "cpu":
        return "openvino runs on the CPU only here (device cuda asked for)"
    if name == "tensorrt" and device.type != "cuda":
        return "tensorrt needs a CUDA device"
    return None


def _build(
    name: str,
    path: Path,
    device: torch.device,
    threads: int,
    fp16: bool,
    cache: Path,
    openvino_shapes: str,
) -> Backend:
    if name == "openvino":
        return OpenVinoBackend(path, threads, openvino_shapes)
    provider = "tensorrt" if name == "tensorrt" else ("cuda" if device.type == "cuda" else "cpu")
    return OnnxRuntimeBackend(
        path, device, threads, provider, half=fp16, engine_cache=cache / "exports" / "tensorrt"
    )


def _open_exported(
    name: str,
    net: nn.Module,
    fingerprint: str,
    model_name: str,
    device: torch.device,
    threads: int,
    fp16: bool,
    cache: Path,
    reference: TorchBackend,
    min_cosine: float,
    openvino_shapes: str,
) -> OpenedRuntime:
    """Export (or reuse the cached export), open it with runtime ``name`` and check it.

    A cached file that fails to load or fails the check is re-exported once, unless this
    process wrote that very file (same checksum): then the export itself is at fault and
    exporting again would give the same graph.
    """
    # ONNX Runtime's CUDA provider runs an fp16 graph; TensorRT converts an fp32 one itself.
    half_graph = fp16 and name == "onnxruntime"
    path, made = exported_onnx(
        net, fingerprint, model_name, cache, device if half_graph else None, half_graph
    )
    notes = [made] if made else []
    for attempt in (0, 1):
        try:
            backend = _build(name, path, device, threads, fp16, cache, openvino_shapes)
            cosine = check_backend(backend, reference, min_cosine)
            notes.append(f"{backend.description}; cosine to PyTorch {cosine:.6f} on the probes")
            return OpenedRuntime(backend, "; ".join(notes), reference, cosine)
        except ExportCheckError as exc:
            if attempt == 1 or made or _written_here(path):
                raise
            log.warning("cached export %s failed (%s); exporting again", path, exc)
            path, made = exported_onnx(
                net, fingerprint, model_name, cache, device if half_graph else None, half_graph, rebuild=True
            )
            notes = [f"cached export failed ({exc}); re-exported"]
    raise AssertionError("unreachable")  # pragma: no cover


def open_runtime(
    runtime: str,
    net: nn.Module,
    fingerprint: str,
    model_name: str,
    device: torch.device,
    fp16: bool,
    threads: int,
    cache: Path,
    min_cosine: float = EXPORT_MIN_COSINE,
    openvino_shapes: str = "static",
    warn: Callable[[str], None] | None = None,
) -> OpenedRuntime:
    """Open ``runtime`` for ``net`` on ``device``; fall back to PyTorch when an export is refused.

    - ``torch``: the module itself.
    - an explicit other runtime that is not installed, or cannot run on ``device``, raises
      :class:`RuntimeUnavailableError` naming the package (no silent PyTorch instead).
    - ``auto``: the first of :data:`AUTO_ORDER_CPU` that is installed and passes the check
      on the CPU; PyTorch on CUDA.
    - an export that fails the check (or cannot be made): a warning through ``warn``
      (default: logging), and PyTorch runs; the note says why.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}; got {runtime!r}")
    warn = warn or log.warning
    dtype = torch.float16 if fp16 else torch.float32
    reference = TorchBackend(net, device, dtype)
    if runtime == "torch":
        return OpenedRuntime(reference, f"asked for; {reference.description}", reference)
    # auto: the measured order on the CPU; PyTorch itself on CUDA (see the module docstring).
    auto = list(AUTO_ORDER_CPU) if device.type == "cpu" else []
    candidates = auto if runtime == "auto" else [runtime]
    skipped: list[str] = []
    # The check compares with fp32 PyTorch where the runtime runs fp32, else with fp16 PyTorch.
    for name in candidates:
        if runtime_version(name) is None:
            reason = f"{name} is not installed ({_INSTALL_HINT[name]})"
            if runtime != "auto":
                raise RuntimeUnavailableError(f"runtime {name!r} was asked for, but {reason}")
            skipped.append(reason)
            continue
        unsupported = _supports(name, device, fp16)
        if unsupported is not None:
            if runtime != "auto":
                raise RuntimeUnavailableError(f"runtime {name!r} was asked for, but {unsupported}")
            skipped.append(unsupported)
            continue
        try:
            opened = _open_exported(
                name,
                net,
                fingerprint,
                model_name,
                device,
                threads,
                fp16,
                cache,
                reference,
                min_cosine,
                openvino_shapes,
            )
        except RuntimeUnavailableError as exc:
            if runtime != "auto":
                raise
            skipped.append(str(exc))
            continue
        except ExportCheckError as exc:
            message = f"runtime {name} refused: {exc}"
            warn(
                f"{message}; "
                + ("trying the next runtime" if runtime == "auto" else "running PyTorch instead")
            )
            skipped.append(message)
            continue
        prefix = "auto: " if runtime == "auto" else "asked for: "
        if skipped:
            prefix += "; ".join(skipped) + "; "
        return OpenedRuntime(opened.backend, prefix + opened.note, reference, opened.cosine)
    if runtime == "auto":
        why = "; ".join(skipped) if skipped else "PyTorch is the default on CUDA"
        return OpenedRuntime(reference, f"auto: {why}; {reference.description}", reference)
    note = f"fell back to PyTorch: {'; '.join(skipped)}; {reference.description}"
    return OpenedRuntime(reference, note, reference)


_THREAD_LOCK = threading.Lock()


def set_torch_threads(threads: int) -> None:
    """Set PyTorch's intra-op thread count (process-wide: PyTorch has one pool per process)."""
    with _THREAD_LOCK:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
