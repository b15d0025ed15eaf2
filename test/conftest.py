"""Shared fixtures: deterministic generated images and a small real model file.

The model is a real EfficientNet-Lite0 + NetVLAD made by the package's own
create_model from generated scenes: no mocks.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from support import colcon_build_workspace, make_scene

# Tests never read or write the user's cache (~/.cache/netvlad_ros): a stale artefact
# there could make a test pass. Set before any test imports the package's cache users;
# child processes inherit it through os.environ.
_CACHE = tempfile.TemporaryDirectory(prefix="netvlad_ros_test_cache_")
os.environ["NETVLAD_ROS_CACHE"] = _CACHE.name


@pytest.fixture(scope="session")
def scenes() -> list[np.ndarray]:
    """Twelve distinct generated scenes."""
    return [make_scene(seed) for seed in range(12)]


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, scenes) -> Path:
    """A real model file (EfficientNet-Lite0 stage5 + NetVLAD K=8), made from the scenes."""
    from netvlad_ros.model import save_model
    from netvlad_ros.model.clusters import create_model, new_card

    card = new_card("efficientnet_lite0", "stage5", "netvlad", num_clusters=8, max_side=320)
    net, card = create_model(scenes, card, per_image=50, seed=0, device="cpu")
    return save_model(tmp_path_factory.mktemp("model") / "small.safetensors", net, card)


@pytest.fixture(scope="session")
def colcon_ws(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """One ``colcon build`` of a copy of the repository per test session: (workspace, environment).

    Every test that needs the installed package shares it (a build takes ~30-60 s here).
    """
    return colcon_build_workspace(tmp_path_factory.mktemp("colcon"))
