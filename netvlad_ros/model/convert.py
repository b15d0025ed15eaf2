"""Converters for NetVLAD weights users already have.

1. The official MATLAB models (Pitts30k / TokyoTM, VGG16 + NetVLAD + whitening)
   in the struct form that hloc reads (exported by netvlad_tf_open's
   ``net_class2struct.m``): ``net.layers`` is a list of layer structs with
   ``weights``; layers 0..28 mirror torchvision VGG16 ``features[:29]``
   (convolution weights stored S x S x IN x OUT), layer 30 is NetVLAD (assignment
   weights D x K without bias, and the centres stored *negated*, D x K), layer 33
   the whitening (1 x 1 x K·D x OUT plus bias). MATLAB flattens the VLAD vector
   dimension-major (d·K + k); ours is cluster-major (k·D + d), so the whitening
   columns are permuted to match. Preprocessing is RGB in 0..255 minus
   ``meta.normalization.averageImage``, std 1.
2. pytorch-NetVlad checkpoints (``checkpoint.pth.tar``): a dict whose
   ``state_dict`` holds ``encoder.N.*`` (VGG16 ``features[:29]``, optionally
   under ``module.`` from DataParallel) and ``pool.conv.*`` / ``pool.centroids``.
   Read with ``torch.load(weights_only=True)``; numpy scalars that such
   checkpoints carry in their metadata are allowed explicitly, nothing else.

Both produce a regular model file (safetensors + card).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .card import ModelCard, Preprocessing
from .model_file import save_model
from .network import PlaceNet, build_network

VGG_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
MATLAB_NETVLAD_LAYER = 30
MATLAB_WHITENING_LAYER = 33


class ConversionError(ValueError):
    """The input is not in the expected structure."""


def _rgb(values: Any) -> tuple[float, float, float]:
    r, g, b = (float(v) for v in values)
    return (r, g, b)


def _vgg_card(
    num_clusters: int, whitening_dim: int, mean: Any, std: Any, assignment_bias: bool, source: dict[str, Any]
) -> ModelCard:
    return ModelCard(
        backbone="vgg16",
        cut="conv5_3",
        pooling="netvlad",
        local_dim=512,
        num_clusters=num_clusters,
        whitening_dim=whitening_dim,
        assignment_bias=assignment_bias,
        preprocessing=Preprocessing(max_side=640, color_order="RGB", mean=_rgb(mean), std=_rgb(std)),
        name=f"vgg16-netvlad-k{num_clusters}" + (f"-white{whitening_dim}" if whitening_dim else ""),
        provenance=source,
    )


def _weights(layer: Any, index: int, path: Path) -> list[np.ndarray]:
    w = getattr(layer, "weights", None)
    if w is None:
        raise ConversionError(f"{path}: net.layers[{index}] has no 'weights' field")
    return list(w) if isinstance(w, np.ndarray) and w.dtype == object else [w]


def convert_matlab_struct(path: str | Path, out: str | Path, whiten: bool = True) -> Path:
    """Convert an hloc-style MATLAB struct ``.mat`` to a model file at ``out``."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(str(path), struct_as_record=False, squeeze_me=True)
    except Exception as exc:  # scipy raises several types for bad files
        raise ConversionError(f"{path}: not a readable MATLAB file ({exc})") from exc
    if "net" not in mat or not hasattr(mat["net"], "layers"):
        raise ConversionError(f"{path}: expected a struct 'net' with 'layers' (hloc's struct form)")
    layers = np.atleast_1d(mat["net"].layers)
    need = MATLAB_WHITENING_LAYER if whiten else MATLAB_NETVLAD_LAYER
    if len(layers) <= need:
        raise ConversionError(f"{path}: net.layers has {len(layers)} entries, expected more than {need}")

    state: dict[str, torch.Tensor] = {}
    for i in VGG_CONV_INDICES:
        w, b = _weights(layers[i], i, path)[:2]
        if w.ndim != 4:
            raise ConversionError(
                f"{path}: net.layers[{i}] should be a conv layer, weights have shape {w.shape}"
            )
        state[f"backbone.{i}.weight"] = torch.from_numpy(
            np.ascontiguousarray(w.transpose(3, 2, 0, 1), np.float32)
        )
        state[f"backbone.{i}.bias"] = torch.from_numpy(np.asarray(b, np.float32).reshape(-1))
    score_w, neg_centres = _weights(layers[MATLAB_NETVLAD_LAYER], MATLAB_NETVLAD_LAYER, path)[:2]
    if score_w.ndim != 2 or score_w.shape != neg_centres.shape or score_w.shape[0] != 512:
        raise ConversionError(
            f"{path}: NetVLAD layer weights should be two 512 x K arrays, got {score_w.shape} and {neg_centres.shape}"
        )
    dim, k = score_w.shape
    state["pool.assignment.weight"] = torch.from_numpy(np.ascontiguousarray(score_w.T, np.float32)).view(
        k, dim, 1, 1
    )
    state["pool.centroids"] = torch.from_numpy(np.ascontiguousarray(-neg_centres.T, np.float32))
    white_dim = 0
    if whiten:
        ww, wb = _weights(layers[MATLAB_WHITENING_LAYER], MATLAB_WHITENING_LAYER, path)[:2]
        ww = np.asarray(ww, np.float32).reshape(dim * k, -1)  # (1,1,IN,OUT) squeezed -> (IN, OUT)
        white_dim = ww.shape[1]
        # MATLAB input index d*K + k  ->  ours k*D + d.
        w_ours = ww.T.reshape(white_dim, dim, k).transpose(0, 2, 1).reshape(white_dim, k * dim)
        state["whitening.linear.weight"] = torch.from_numpy(np.ascontiguousarray(w_ours))
        state["whitening.linear.bias"] = torch.from_numpy(np.asarray(wb, np.float32).reshape(-1))
    try:
        mean = np.asarray(mat["net"].meta.normalization.averageImage, np.float64).reshape(-1)[:3]
    except AttributeError as exc:
        raise ConversionError(f"{path}: missing net.meta.normalization.averageImage") from exc
    card = _vgg_card(
        k, white_dim, mean, (1.0, 1.0, 1.0), False, {"converted_from": path.name, "format": "matlab-struct"}
    )
    return _save(state, card, out, path)


def convert_pytorch_netvlad(path: str | Path, out: str | Path) -> Path:
    """Convert a pytorch-NetVlad ``checkpoint.pth.tar`` (VGG16 + NetVLAD) to a model file."""
    path = Path(path)
    allowed: list[Any] = [
        np.dtype,
        type(np.dtype(np.float64)),
        type(np.dtype(np.float32)),
        type(np.dtype(np.int64)),
    ]
    scalar = getattr(np, "_core", np.core).multiarray.scalar
    try:
        with torch.serialization.safe_globals([scalar, *allowed]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything that is not plain data
        raise ConversionError(f"{path}: cannot be read safely as a checkpoint ({exc})") from exc
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise ConversionError(f"{path}: no state_dict found")
    sd = {k.replace("module.", ""): v for k, v in sd.items()}
    if "pool.centroids" not in sd or "pool.conv.weight" not in sd:
        raise ConversionError(f"{path}: not a NetVLAD checkpoint (needs pool.centroids and pool.conv.weight)")
    state: dict[str, torch.Tensor] = {}
    for i in VGG_CONV_INDICES:
        for part in ("weight", "bias"):
            key = f"encoder.{i}.{part}"
            if key not in sd:
                raise ConversionError(f"{path}: missing {key} (only the VGG16 encoder is supported)")
            state[f"backbone.{i}.{part}"] = sd[key].float()
    centroids = sd["pool.centroids"].float()
    k, dim = centroids.shape
    state["pool.centroids"] = centroids
    state["pool.assignment.weight"] = sd["pool.conv.weight"].float().view(k, dim, 1, 1)
    has_bias = "pool.conv.bias" in sd
    if has_bias:
        state["pool.assignment.bias"] = sd["pool.conv.bias"].float()
    from .backbones import IMAGENET_MEAN_255, IMAGENET_STD_255

    source: dict[str, Any] = {"converted_from": path.name, "format": "pytorch-netvlad"}
    if isinstance(ckpt, dict):
        for key in ("epoch", "best_score"):
            if key in ckpt:
                source[key] = float(ckpt[key])
    card = _vgg_card(k, 0, IMAGENET_MEAN_255, IMAGENET_STD_255, has_bias, source)
    return _save(state, card, out, path)


def _save(state: dict[str, torch.Tensor], card: ModelCard, out: str | Path, src: Path) -> Path:
    net: PlaceNet = build_network(card, backbone_weights="none")
    expected = net.state_dict()
    for key, value in state.items():
        if key not in expected or expected[key].shape != value.shape:
            shape = tuple(expected[key].shape) if key in expected else "absent"
            raise ConversionError(
                f"{src}: tensor {key} has shape {tuple(value.shape)}, the network needs {shape}"
            )
    missing = set(expected) - set(state)
    if missing:
        raise ConversionError(f"{src}: no weights for {', '.join(sorted(missing)[:4])}")
    net.load_state_dict(state, strict=True)
    return save_model(out, net, card)
