"""DescriptorExtractor: uint8 images in, L2-normalised float32 descriptors out.

Built from a model file (or a network + card already in memory) and the options of
:class:`ExtractorParams`: device, runtime (PyTorch, ONNX Runtime, OpenVINO, TensorRT:
see ``runtimes.py``), fp16, threads, input size and batch size. Images of the same size
after preprocessing are batched together; different sizes run as separate batches, so
any mix of sizes works, with every runtime.

The two stages are separate so that a caller can overlap them (the node, with
``pipeline_frames`` 2 or 3, preprocesses frame N+1 while frame N is in the network)::

    batch = extractor.prepare(images)   # validate, resize, normalise: CPU, no network
    descriptors = extractor.run(batch)  # the network; batch.timing() says where the time went

``extractor(images)`` is ``run(prepare(images))``. Thread safety: ``prepare`` may run in
any number of threads at once, also while ``run`` is running; ``run`` calls are
serialised by a lock (the runtimes' inference requests are not re-entrant), so a second
caller waits.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError, check_fields, param
from .card import ModelCard, Preprocessing
from .default_model import cache_dir, default_model_path
from .device import DEVICE_CHOICES_TEXT, check_device, cpu_count, resolve_device
from .model_file import load_model
from .network import PlaceNet
from .preprocess import MIN_SIDE, to_network_input
from .runtimes import EXPORT_MIN_COSINE, RUNTIMES, Backend, open_runtime, set_torch_threads

__all__ = ["DescriptorExtractor", "ExtractorParams", "PreparedBatch", "StageTiming", "resolve_device"]

log = logging.getLogger(__name__)

CUDA_BATCH = 16
CPU_BATCH = 1


@dataclass
class ExtractorParams:
    """How the descriptor network runs. "Off"/"automatic" numbers are 0.

    ``device``, ``runtime``, ``fp16`` and ``threads`` are fixed when the extractor is
    built (``read_only``); ``max_side`` and ``batch_size`` may change afterwards
    (:attr:`DescriptorExtractor.max_side`, :attr:`DescriptorExtractor.batch_size`).
    ``min_cosine`` is not a user parameter: the acceptance threshold of an exported
    graph against PyTorch (tests raise it to make the check fail on purpose).
    """

    device: str = param(
        "auto", f"inference device: {DEVICE_CHOICES_TEXT} (auto: CUDA when available)", read_only=True
    )
    runtime: str = param(
        "auto",
        "what runs the network: auto (the fastest installed: OpenVINO, then ONNX Runtime on the CPU; "
        "PyTorch on CUDA), torch, onnxruntime, openvino or tensorrt (CUDA)",
        choices=RUNTIMES,
        read_only=True,
    )
    fp16: bool = param(False, "half-precision inference (CUDA only)", read_only=True)
    threads: int = param(
        0, "CPU threads for the network (0: one per available core)", range=(0, 1024), read_only=True
    )
    max_side: int = param(
        0,
        "resize each image so its longer side is this many pixels (0: the model card's size, 640 for the "
        "default model); smaller is faster",
        range=(0, 8192),
    )
    batch_size: int = param(0, "images per network call (0: 1 on the CPU, 16 on CUDA)", range=(0, 4096))
    min_cosine: float = EXPORT_MIN_COSINE

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field (ranges, choices, device spelling, max_side)."""
        check_fields(self)
        try:
            check_device(self.device)
        except ValueError as exc:
            raise ConfigError(f"ExtractorParams.{exc}") from exc
        if 0 < self.max_side < MIN_SIDE:
            raise ConfigError(
                f"ExtractorParams.max_side must be 0 (the card's size) or at least {MIN_SIDE}, got {self.max_side}"
            )
        if self.fp16 and self.device == "cpu":
            raise ConfigError(
                "ExtractorParams.fp16: fp16 inference is only supported on CUDA (device is cpu)"
            )


@dataclass(frozen=True)
class StageTiming:
    """Where one ``run`` call's time went (milliseconds), and for how many images."""

    preprocess_ms: float
    network_ms: float
    images: int


@dataclass
class PreparedBatch:
    """Network inputs made by :meth:`DescriptorExtractor.prepare`, ready for ``run``.

    ``inputs``: one float32 (3, H, W) array per image, in order. ``run`` records its
    network time here, so each frame carries its own timing through a pipeline.
    """

    inputs: list[np.ndarray]
    preprocess_ms: float
    network_ms: float = field(default=0.0)

    def __len__(self) -> int:
        return len(self.inputs)

    def timing(self) -> StageTiming:
        """Preprocessing and network milliseconds of this batch (network 0 before ``run``)."""
        return StageTiming(self.preprocess_ms, self.network_ms, len(self.inputs))


def _params(
    params: ExtractorParams | None, overrides: dict[str, Any], default_runtime: str
) -> ExtractorParams:
    if params is not None and not isinstance(params, ExtractorParams):
        raise TypeError(
            f"params must be an ExtractorParams, got {type(params).__name__}; pass device=... etc. by keyword"
        )
    base = params if params is not None else ExtractorParams(runtime=default_runtime)
    known = {f.name for f in dataclasses.fields(ExtractorParams)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(
            f"unknown extractor options: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    # None means "not given" (the CLI's and the old API's batch_size=None): the params' value stays.
    given = {k: v for k, v in overrides.items() if v is not None}
    out = dataclasses.replace(base, **given)
    out.validate()
    return out


class DescriptorExtractor:
    """Compute global descriptors for batches of images with one model.

    Attributes worth reading: ``runtime`` (what actually runs: ``torch``, ``onnxruntime``,
    ``openvino`` or ``tensorrt``), ``runtime_note`` (why, including any fallback to
    PyTorch and the export check's cosine), ``runtime_description`` (version, device,
    precision, threads), ``device``, ``fingerprint``, ``dim``, ``last_timing``.
    """

    def __init__(
        self, model: str | Path | None = None, params: ExtractorParams | None = None, **overrides: Any
    ) -> None:
        """``model``: a ``.safetensors`` model file, or None for the built-in default model.

        ``params``: the options (default ``ExtractorParams()``); keyword ``overrides``
        replace single fields (``device="cpu"``, ``batch_size=4``; None keeps the field).
        Raises ConfigError (a ValueError) for bad options, DeviceError for a device this
        machine lacks, RuntimeUnavailableError for an explicit runtime that is not installed.
        """
        p = _params(params, overrides, "auto")
        if model is None:
            model = default_model_path()
        net, card = load_model(model)
        self.model_path: Path | None = Path(model)
        self._setup(net, card, p, card.name or Path(model).stem)

    @classmethod
    def from_network(
        cls, net: PlaceNet, card: ModelCard, params: ExtractorParams | None = None, **overrides: Any
    ) -> DescriptorExtractor:
        """Wrap a network already in memory (training, cluster initialisation).

        The runtime defaults to ``torch`` here, not ``auto``: such a network usually
        changes between calls (training steps), and PyTorch always runs its current
        weights; an exported graph would be a snapshot.
        """
        self = cls.__new__(cls)
        self.model_path = None
        self._setup(net, card, _params(params, overrides, "torch"), card.name or "network")
        return self

    def _setup(self, net: PlaceNet, card: ModelCard, p: ExtractorParams, name: str) -> None:
        self.params = p
        self.device = resolve_device(p.device)
        if p.fp16 and self.device.type != "cuda":
            raise ConfigError("fp16 inference is only supported on CUDA")
        self.dtype = torch.float16 if p.fp16 else torch.float32
        self.card = card
        self.fingerprint = card.fingerprint()
        self.threads = p.threads or cpu_count()
        if p.threads:
            set_torch_threads(p.threads)
        self._batch_size = 0
        self._max_side = 0
        self.batch_size = p.batch_size
        self.max_side = p.max_side
        opened = open_runtime(
            p.runtime,
            net,
            self.fingerprint,
            name,
            self.device,
            p.fp16,
            self.threads,
            cache_dir(),
            min_cosine=p.min_cosine,
        )
        self._backend: Backend = opened.backend
        self.runtime: str = opened.backend.name
        self.runtime_note: str = opened.note
        self.runtime_cosine: float = opened.cosine
        self.net = net  # moved to the device in place by the PyTorch backend
        self._run_lock = threading.Lock()
        self.last_timing: StageTiming | None = None
        log.info("descriptor network runs on %s (%s)", self.runtime_description, self.runtime_note)

    # ------------------------------------------------------------------ options that may change

    @property
    def batch_size(self) -> int:
        """Images per network call (always >= 1; set 0 for the device's default)."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"batch_size must be an integer >= 0 (0: automatic), got {value!r}")
        self._batch_size = value or (CUDA_BATCH if self.device.type == "cuda" else CPU_BATCH)

    @property
    def max_side(self) -> int:
        """The longer image side the network sees (set 0 for the model card's value)."""
        return self._max_side

    @max_side.setter
    def max_side(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0 or 0 < value < MIN_SIDE:
            raise ConfigError(
                f"max_side must be 0 (the card's size) or an integer >= {MIN_SIDE}, got {value!r}"
            )
        side = value or self.card.preprocessing.max_side
        self._preprocessing = dataclasses.replace(self.card.preprocessing, max_side=side)
        self._max_side = side

    @property
    def preprocessing(self) -> Preprocessing:
        """The preprocessing in force: the card's, with ``max_side`` applied."""
        return self._preprocessing

    @property
    def dim(self) -> int:
        """Descriptor dimension."""
        return self.card.descriptor_dim

    @property
    def runtime_description(self) -> str:
        """Runtime, version, device, precision and threads, in one line."""
        return self._backend.description

    # ------------------------------------------------------------------ the two stages

    def prepare(self, images: Sequence[np.ndarray] | np.ndarray, color: str = "bgr") -> PreparedBatch:
        """Validate and preprocess images for :meth:`run` (thread-safe; no network).

        ``images``: a list of uint8 arrays (any sizes), or one (N, H, W[, C]) uint8 array.
        ``color``: the order of 3-channel inputs, ``"bgr"`` or ``"rgb"``. Raises
        ValueError naming the first bad image.
        """
        t0 = time.perf_counter()
        if isinstance(images, np.ndarray):
            if images.ndim not in (3, 4):
                raise ValueError(f"an image batch array must be (N, H, W[, C]), got shape {images.shape}")
            images = list(images)
        if len(images) == 0:
            raise ValueError("no images given")
        spec = self._preprocessing
        inputs = []
        for i, image in enumerate(images):
            try:
                inputs.append(to_network_input(image, spec, color))
            except ValueError as exc:
                raise ValueError(f"image {i}: {exc}") from exc
        return PreparedBatch(inputs, (time.perf_counter() - t0) * 1e3)

    def run(self, batch: PreparedBatch) -> np.ndarray:
        """Descriptors of a prepared batch: float32 (N, dim), each row unit-norm.

        Records the network time in ``batch.network_ms`` and ``last_timing``.
        """
        if not isinstance(batch, PreparedBatch):
            raise TypeError(f"run() takes what prepare() returns, got {type(batch).__name__}")
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(batch.inputs):
            by_shape.setdefault(x.shape, []).append(i)
        out = np.empty((len(batch.inputs), self.dim), np.float32)
        with self._run_lock:
            t0 = time.perf_counter()
            step = self._batch_size
            for idx in by_shape.values():
                for start in range(0, len(idx), step):
                    chunk = idx[start : start + step]
                    x = (
                        np.stack([batch.inputs[i] for i in chunk])
                        if len(chunk) > 1
                        else batch.inputs[chunk[0]][None]
                    )
                    out[chunk] = self._backend.infer(x)
            batch.network_ms = (time.perf_counter() - t0) * 1e3
            self.last_timing = batch.timing()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray, color: str = "bgr") -> np.ndarray:
        """Describe images: ``run(prepare(images, color))``; float32 (N, dim), unit rows."""
        return self.run(self.prepare(images, color))

    def warm_up(self, height: int, width: int) -> None:
        """Run one blank ``height`` x ``width`` image through the network, results discarded.

        OpenVINO compiles a model per input size on first sight (~0.3 s, docs/runtimes.md);
        a node that knows its camera's size calls this at start-up so the first real frame
        does not pay for it.
        """
        self.run(self.prepare([np.full((height, width, 3), 127, np.uint8)]))
        self.last_timing = None

    def local_features(
        self, images: Sequence[np.ndarray] | np.ndarray, color: str = "bgr"
    ) -> list[np.ndarray]:
        """The cut layer's local descriptors per image, each (h·w, local_dim) float32 (PyTorch)."""
        batch = self.prepare(images, color)
        out = []
        with torch.inference_mode(), self._run_lock:
            for x in batch.inputs:
                t = torch.from_numpy(x[None]).to(self.device, self.dtype)
                f = self.net.local_features(t)
                out.append(f.float().flatten(2).transpose(1, 2)[0].cpu().numpy())
        return out
