"""Model files: ``NAME.safetensors`` (weights) + ``NAME.json`` (the model card).

Saving writes both beside their targets and renames them into place, weights
first, so an interrupted save never leaves a card pointing at half a file.
Loading checks, in order: the card parses and is self-consistent; the weights
file's SHA-256 equals the card's (a truncated or swapped file fails here); the
tensors' names and shapes equal what the card's architecture needs. Each check
fails with a ModelFileError that names the file and the problem. Nothing is
unpickled: safetensors holds raw tensors only.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..fileio import replace_atomically, sha256_file
from .backbones import packaged_weights_id
from .card import ModelCard, ModelCardError
from .network import PlaceNet, build_network


class ModelFileError(ValueError):
    """A model file or its card is missing, corrupt, or they disagree."""


def card_path_for(weights_path: str | Path) -> Path:
    """The card that belongs to a weights file: same name, ``.json``."""
    return Path(weights_path).with_suffix(".json")


BACKBONE_PREFIX = "backbone."


def save_model(path: str | Path, net: PlaceNet, card: ModelCard, head_only: bool = False) -> Path:
    """Write ``path`` (.safetensors) and its card; return the weights path.

    The card's ``weights_sha256`` is filled in here. Tensors are stored as
    contiguous CPU float32 copies, so a GPU or fp16 network saves the same way.
    ``head_only``: leave the backbone out; it must be the unmodified ImageNet weights
    an installed package ships (``backbones.packaged_weights_id``), which the card then
    names (``backbone_weights``) and loading takes from that package.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelFileError(f"model files end in .safetensors, got {path.name!r}")
    card.validate()
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    card.backbone_weights = ""
    if head_only:
        weights_id = packaged_weights_id(card.backbone)
        if weights_id is None:
            raise ModelFileError(f"no installed package ships {card.backbone} weights: save the whole model")
        packaged = build_network(card, backbone_weights="imagenet").state_dict()
        changed = [
            k for k, v in tensors.items() if k.startswith(BACKBONE_PREFIX) and not torch.equal(v, packaged[k])
        ]
        if changed:
            raise ModelFileError(
                f"head_only needs the packaged ImageNet backbone, but {len(changed)} backbone tensors differ "
                f"(e.g. {changed[0]}): save the whole model"
            )
        tensors = {k: v for k, v in tensors.items() if not k.startswith(BACKBONE_PREFIX)}
        card.backbone_weights = weights_id
    tmp_weights = path.with_name(f".{path.name}.tmp{os.getpid()}")
    # One metadata key only: safetensors writes a map, whose order is not fixed, and
    # byte-identical files for identical weights keep checksums meaningful.
    save_file(tensors, str(tmp_weights), metadata={"format": "pt"})
    os.chmod(tmp_weights, 0o644)  # a package data file: readable by everyone, like the card
    card.weights_sha256 = sha256_file(tmp_weights)
    replace_atomically(tmp_weights, path)
    card_file = card_path_for(path)
    tmp_card = card_file.with_name(f".{card_file.name}.tmp{os.getpid()}")
    tmp_card.write_text(card.to_json())
    replace_atomically(tmp_card, card_file)
    return path


def read_card(path: str | Path) -> ModelCard:
    """Read the card that belongs to weights file ``path`` (or a .json path)."""
    path = Path(path)
    card_file = path if path.suffix == ".json" else card_path_for(path)
    if not card_file.is_file():
        raise ModelFileError(f"model card not found: {card_file} (every model file needs its .json card)")
    try:
        return ModelCard.from_json(card_file.read_text())
    except (ModelCardError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{card_file}: {exc}") from exc


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[PlaceNet, ModelCard]:
    """Load and verify a model file; return the network (eval mode) and its card."""
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise ModelFileError(f"model weights not found: {path}")
    card = read_card(path)
    actual = sha256_file(path)
    if card.weights_sha256 and actual != card.weights_sha256:
        raise ModelFileError(
            f"{path}: weights do not match the card's checksum (sha256 {actual[:12]}…, card says "
            f"{card.weights_sha256[:12]}…): the file is truncated, corrupt, or belongs to another card"
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from exc
    if card.backbone_weights:
        installed = packaged_weights_id(card.backbone)
        if installed != card.backbone_weights:
            raise ModelFileError(
                f"{path}: the model's backbone weights come from {card.backbone_weights}, but the installed "
                f"weights are {installed or 'missing'}: install the package version the model was made with"
            )
        net = build_network(card, backbone_weights="imagenet")
        expected = {k: v for k, v in net.state_dict().items() if not k.startswith(BACKBONE_PREFIX)}
    else:
        net = build_network(card, backbone_weights="none")
        expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)} vs card {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            problems.append(f"{len(wrong)} shape mismatches (e.g. {'; '.join(wrong[:3])})")
        raise ModelFileError(f"{path}: weights do not fit the card's architecture: {'; '.join(problems)}")
    net.load_state_dict(tensors, strict=not card.backbone_weights)
    net.eval()
    return net.to(map_location), card
