"""Test-data generators: a deterministic synthetic world (:mod:`.world`: a city or an indoor
corridor building, with aligned depth) under seeded conditions (:mod:`.conditions`: time of
day, weather, season), its frames (:mod:`.frames`: ground truth, intrinsics, frame
conventions), drifting odometry (:mod:`.odometry`), a ROS bag writer (:mod:`.bags`), the
model-fitting frame sampler (:mod:`.sampler`) and synthetic place-recognition descriptors
(:mod:`.descriptors`). Used by tests, benchmarks and the demo; no ROS.

Imports ``mapdb.geodesy`` (GPS of the rendered poses), ``mapdb.features`` (the intrinsics
type), ``posegraph.simulation`` (the drift model, imported when odometry is drifted) and
third-party libraries.
"""

from .bags import BAG_STORAGES, DEPTH_ENCODINGS, write_bag
from .conditions import SEASONS, TIMES_OF_DAY, WEATHERS, Condition
from .descriptors import clustered_descriptors, revisit_queries
from .frames import T_BODY_OPTICAL, Frame, back_project, project, relative_pose
from .odometry import OdometryNoise, drift_frames
from .sampler import fitting_frames
from .world import DEFAULT_ORIGIN, SCENES, Appearance, SyntheticWorld, WorldConfig

__all__ = [
    "BAG_STORAGES",
    "DEFAULT_ORIGIN",
    "DEPTH_ENCODINGS",
    "SCENES",
    "SEASONS",
    "TIMES_OF_DAY",
    "T_BODY_OPTICAL",
    "WEATHERS",
    "Appearance",
    "Condition",
    "Frame",
    "OdometryNoise",
    "SyntheticWorld",
    "WorldConfig",
    "back_project",
    "clustered_descriptors",
    "drift_frames",
    "fitting_frames",
    "project",
    "relative_pose",
    "revisit_queries",
    "write_bag",
]
