"""Test-data generators: a deterministic synthetic city (:mod:`.world`), its frames
(:mod:`.frames`), a ROS bag writer (:mod:`.bags`) and synthetic place-recognition
descriptors (:mod:`.descriptors`). Used by tests, benchmarks and the demo; no ROS.

Imports only ``mapdb.geodesy`` (GPS of the rendered poses) and third-party libraries.
"""

from .bags import BAG_STORAGES, write_bag
from .descriptors import clustered_descriptors, revisit_queries
from .frames import Frame
from .world import DEFAULT_ORIGIN, Appearance, SyntheticWorld, WorldConfig

__all__ = [
    "BAG_STORAGES",
    "DEFAULT_ORIGIN",
    "Appearance",
    "Frame",
    "SyntheticWorld",
    "WorldConfig",
    "clustered_descriptors",
    "revisit_queries",
    "write_bag",
]
