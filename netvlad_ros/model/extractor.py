"""DescriptorExtractor: uint8 images in, L2-normalised float32 descriptors out.

Built from a model file (or a network + card already in memory). Images of the
same size after preprocessing are batched together; different sizes run as
separate batches, so any mix of sizes works. Runs under torch.inference_mode,
on CUDA when available (``device="auto"``), optionally in fp16 on CUDA.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .card import ModelCard
from .model_file import load_model
from .network import PlaceNet
from .preprocess import to_network_input


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cpu``; ``cuda`` / ``cuda:N`` (must exist)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")
        return torch.device(device)
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


class DescriptorExtractor:
    """Compute global descriptors for batches of images with one model."""

    def __init__(
        self,
        model: str | Path | None = None,
        device: str = "auto",
        fp16: bool = False,
        batch_size: int | None = None,
    ) -> None:
        """``model``: path to a ``.safetensors`` model file, or None for the built-in default.

        ``batch_size``: images per forward pass; None picks 1 on the CPU (measured: for
        EfficientNet-Lite0 at 480x640, batch 1 is ~3x faster per image than batch 8 on a
        2-core CPU, see docs/model.md) and 16 on CUDA.
        """
        if model is None:
            from .default_model import default_model_path

            model = default_model_path()
        net, card = load_model(model)
        self._setup(net, card, device, fp16, batch_size)
        self.model_path = Path(model)

    @classmethod
    def from_network(
        cls,
        net: PlaceNet,
        card: ModelCard,
        device: str = "auto",
        fp16: bool = False,
        batch_size: int | None = None,
    ) -> DescriptorExtractor:
        """Wrap a network already in memory (e.g. during training or cluster init)."""
        self = cls.__new__(cls)
        self._setup(net, card, device, fp16, batch_size)
        self.model_path = None
        return self

    def _setup(self, net: PlaceNet, card: ModelCard, device: str, fp16: bool, batch_size: int | None) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        if batch_size is None:
            batch_size = 16 if self.device.type == "cuda" else 1
        if fp16 and self.device.type != "cuda":
            raise ValueError("fp16 inference is only supported on CUDA")
        self.dtype = torch.float16 if fp16 else torch.float32
        self.net = net.to(self.device, self.dtype).eval()
        self.card = card
        self.batch_size = batch_size
        self.fingerprint = card.fingerprint()

    @property
    def dim(self) -> int:
        """Descriptor dimension."""
        return self.card.descriptor_dim

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray, color: str = "bgr") -> np.ndarray:
        """Describe images; returns float32 (N, dim), each row unit-norm.

        ``images``: a list of uint8 arrays (any sizes), or one (N, H, W[, C])
        uint8 array. ``color``: the order of the 3-channel inputs, ``"bgr"`` or
        ``"rgb"``. Raises ValueError naming the first bad image.
        """
        return self._run(images, color, self.net.forward)

    def local_features(
        self, images: Sequence[np.ndarray] | np.ndarray, color: str = "bgr"
    ) -> list[np.ndarray]:
        """The cut layer's local descriptors per image, each (h·w, local_dim) float32."""
        out = []

        def fn(x: torch.Tensor) -> torch.Tensor:
            f = self.net.local_features(x)
            out.extend(f.float().flatten(2).transpose(1, 2).cpu().numpy())
            return f.new_zeros((len(x), 1))

        self._run(images, color, fn)
        return out

    def _run(self, images, color: str, fn) -> np.ndarray:
        if isinstance(images, np.ndarray):
            if images.ndim not in (3, 4):
                raise ValueError(f"an image batch array must be (N, H, W[, C]), got shape {images.shape}")
            images = list(images)
        if len(images) == 0:
            raise ValueError("no images given")
        inputs = []
        for i, image in enumerate(images):
            try:
                inputs.append(to_network_input(image, self.card.preprocessing, color))
            except ValueError as exc:
                raise ValueError(f"image {i}: {exc}") from exc
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(inputs):
            by_shape.setdefault(x.shape, []).append(i)
        results: list[np.ndarray | None] = [None] * len(inputs)
        with torch.inference_mode():
            for idx in by_shape.values():
                for start in range(0, len(idx), self.batch_size):
                    chunk = idx[start : start + self.batch_size]
                    batch = torch.from_numpy(np.stack([inputs[i] for i in chunk]))
                    batch = batch.to(self.device, self.dtype, non_blocking=True)
                    desc = F.normalize(fn(batch).float(), p=2, dim=1).cpu().numpy()
                    for i, d in zip(chunk, desc, strict=True):
                        results[i] = d
        return np.stack(results).astype(np.float32, copy=False)
