"""The descriptor network: backbones, NetVLAD and baseline pooling, whitening,
model files with cards, converters and the DescriptorExtractor. No ROS here."""

from .card import ModelCard, ModelCardError, Preprocessing
from .device import DeviceError, resolve_device
from .extractor import DescriptorExtractor, ExtractorParams
from .model_file import ModelFileError, load_model, read_card, save_model
from .netvlad import NetVLAD
from .network import PlaceNet, build_network

__all__ = [
    "DescriptorExtractor",
    "DeviceError",
    "ExtractorParams",
    "ModelCard",
    "ModelCardError",
    "ModelFileError",
    "NetVLAD",
    "PlaceNet",
    "Preprocessing",
    "build_network",
    "load_model",
    "read_card",
    "resolve_device",
    "save_model",
]
