"""Creating a model: NetVLAD centres by k-means, and PCA whitening, from images.

The paper initialises the NetVLAD centres with k-means on local descriptors
sampled from training images, and fits PCA whitening on pooled descriptors.
Both use faiss. ``create_model`` runs the whole pipeline from ImageNet
backbone weights, so a new model needs only a folder of images.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import faiss
import numpy as np
import torch

from .. import __version__
from .backbones import backbone_spec
from .card import ModelCard, Preprocessing
from .extractor import DescriptorExtractor
from .netvlad import NetVLAD
from .network import PlaceNet, build_network
from .whitening import fit_pca_whitening, load_whitening


def sample_local_descriptors(
    extractor: DescriptorExtractor,
    images: Iterable[np.ndarray],
    per_image: int = 100,
    seed: int = 0,
    normalize: bool = True,
) -> np.ndarray:
    """Up to ``per_image`` random local descriptors from each image, (N, local_dim) float32.

    ``normalize`` L2-normalises each one, as NetVLAD does before assignment, so
    k-means runs in the space the centres live in.
    """
    rng = np.random.default_rng(seed)
    chunks = []
    for image in images:
        feats = extractor.local_features([image])[0]
        if normalize:
            feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        take = rng.choice(len(feats), size=min(per_image, len(feats)), replace=False)
        chunks.append(feats[take])
    if not chunks:
        raise ValueError("no images to sample local descriptors from")
    return np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def kmeans_centroids(descriptors: np.ndarray, k: int, seed: int = 0, niter: int = 50) -> np.ndarray:
    """faiss k-means; (k, D) float32 centres. Needs at least k descriptors."""
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    if len(x) < k:
        raise ValueError(f"k-means with K={k} needs at least {k} local descriptors, got {len(x)}")
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=False, max_points_per_centroid=100_000)
    km.train(x)
    return np.asarray(km.centroids, dtype=np.float32)


def new_card(
    backbone: str = "efficientnet_lite0",
    cut: str | None = None,
    pooling: str = "netvlad",
    num_clusters: int = 32,
    whitening_dim: int = 0,
    max_side: int = 640,
    name: str = "",
) -> ModelCard:
    """A card for a new model on ImageNet backbone weights (preprocessing to match)."""
    spec = backbone_spec(backbone, cut)
    card = ModelCard(
        backbone=backbone,
        cut=spec.cut,
        pooling=pooling,
        local_dim=spec.channels,
        num_clusters=num_clusters if pooling == "netvlad" else 0,
        whitening_dim=whitening_dim,
        preprocessing=Preprocessing(max_side=max_side, color_order="RGB", mean=spec.mean, std=spec.std),
        name=name
        or f"{backbone}-{spec.cut}-{pooling}" + (f"-k{num_clusters}" if pooling == "netvlad" else ""),
    )
    card.validate()
    return card


def create_model(
    images: Sequence[np.ndarray],
    card: ModelCard,
    backbone_weights: str = "imagenet",
    allow_download: bool = False,
    per_image: int = 100,
    seed: int = 0,
    device: str = "cpu",
    provenance: dict | None = None,
) -> tuple[PlaceNet, ModelCard]:
    """Build a network from ``card``, initialise NetVLAD by k-means and fit whitening.

    ``images`` are uint8 BGR arrays; they are read twice (centres, then
    whitening), so pass a sequence, not a one-shot iterator.
    """
    torch.manual_seed(seed)
    t0 = time.time()
    net = build_network(card, backbone_weights, allow_download)
    whitening, net.whitening = net.whitening, None  # fit the pooled space first
    pooled_card = ModelCard(**{**card.__dict__, "whitening_dim": 0})
    extractor = DescriptorExtractor.from_network(net, pooled_card, device=device)
    info: dict = {"images": len(images), "seed": seed}
    if isinstance(net.pool, NetVLAD):
        local = sample_local_descriptors(extractor, images, per_image, seed, card.normalize_input)
        centroids = kmeans_centroids(local, card.num_clusters, seed)
        alpha = net.pool.init_from_clusters(centroids, local)
        info.update(local_descriptors=len(local), alpha=alpha)
    if whitening is not None:
        pooled = extractor(list(images))
        w, b = fit_pca_whitening(pooled, card.whitening_dim)
        load_whitening(whitening, w, b)
        info["whitening_fitted_on"] = len(pooled)
    net.whitening = whitening
    net.eval()
    card.provenance = {
        "created_by": f"netvlad_ros {__version__} create_model",
        "backbone_weights": str(backbone_weights),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - t0, 1),
        **info,
        **(provenance or {}),
    }
    return net.cpu(), card
