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

import hashlib
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .card import ModelCard, ModelCardError
from .network import PlaceNet, build_network


class ModelFileError(ValueError):
    """A model file or its card is missing, corrupt, or they disagree."""


def card_path_for(weights_path: str | Path) -> Path:
    """The card that belongs to a weights file: same name, ``.json``."""
    return Path(weights_path).with_suffix(".json")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _replace_atomically(tmp: Path, target: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)


def save_model(path: str | Path, net: PlaceNet, card: ModelCard) -> Path:
    """Write ``path`` (.safetensors) and its card; return the weights path.

    The card's ``weights_sha256`` is filled in here. Tensors are stored as
    contiguous CPU float32 copies, so a GPU or fp16 network saves the same way.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelFileError(f"model files end in .safetensors, got {path.name!r}")
    card.validate()
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in net.state_dict().items()}
    tmp_weights = path.with_name(f".{path.name}.tmp{os.getpid()}")
    # One metadata key only: safetensors writes a map, whose order is not fixed, and
    # byte-identical files for identical weights keep checksums meaningful.
    save_file(tensors, str(tmp_weights), metadata={"format": "pt"})
    card.weights_sha256 = sha256_file(tmp_weights)
    _replace_atomically(tmp_weights, path)
    card_file = card_path_for(path)
    tmp_card = card_file.with_name(f".{card_file.name}.tmp{os.getpid()}")
    tmp_card.write_text(card.to_json())
    _replace_atomically(tmp_card, card_file)
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
    net.load_state_dict(tensors, strict=True)
    net.eval()
    return net.to(map_location), card
