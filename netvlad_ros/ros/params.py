"""Parameters of the ``netvlad_localizer`` node: one table, declared with descriptors.

:data:`PARAMS` is the single list of every parameter, its default, type, range or
choices, whether it is read-only, and its description. ``config/localize.yaml``
repeats the defaults for users (a test checks that the two agree), and the node
loads that file itself when it is started without ``--params-file``.

Validation happens in two places, both reported with a reason that names the field:

- rclpy itself refuses read-only changes, wrong types and values outside a
  ``FloatingPointRange`` / ``IntegerRange`` (set in the descriptors here);
- :func:`check_values` checks what a range cannot express (string choices, QoS names,
  the recognition layer's own ``validate()`` rules across fields).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from netvlad_ros.recognition import GeometryParams, LocalizerParams, LoopClosureParams
from netvlad_ros.ros.qos import QOS_NAMES

__all__ = [
    "MODES",
    "PARAMS",
    "ParamSpec",
    "check_values",
    "default_params_file",
    "defaults",
    "descriptor",
    "localizer_params",
    "loop_closure_params",
]

#: Operating modes of the node.
MODES = ("localization", "slam")


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter: name, default (its type is the parameter's type), limits, description."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    range: tuple[float, float] | None = None  # inclusive; int params get an IntegerRange
    choices: tuple[str, ...] | None = None


_BIG = 1e9
# The recognition thresholds' defaults are the recognition layer's (one source of truth).
_LP = LocalizerParams()
_LCP = LoopClosureParams()

PARAMS: tuple[ParamSpec, ...] = (
    # ---- general
    ParamSpec(
        "mode",
        "localization",
        "localization (query a fixed map) or slam (grow the map, detect "
        "loop closures); also switched by ~/set_slam_mode",
        choices=MODES,
    ),
    ParamSpec(
        "map_path",
        "",
        "map directory to load at start and on ~/reload_map; '' = none "
        "(allowed in slam mode only: start from an empty map)",
    ),
    ParamSpec("save_path", "", "where ~/save_map writes the map; '' = map_path"),
    ParamSpec("model_path", "", "model file (.safetensors); '' = the built-in default model", read_only=True),
    ParamSpec("device", "auto", "auto (CUDA when available), cpu, cuda or cuda:N", read_only=True),
    ParamSpec("fp16", False, "half-precision inference (CUDA only)", read_only=True),
    ParamSpec(
        "compressed",
        False,
        "subscribe to image/compressed (CompressedImage) instead of image (Image)",
        read_only=True,
    ),
    ParamSpec(
        "image_qos",
        "sensor_data",
        "QoS of the image subscription: " + ", ".join(QOS_NAMES),
        read_only=True,
        choices=QOS_NAMES,
    ),
    ParamSpec(
        "image_qos_depth", 5, "history depth of the image subscription", read_only=True, range=(1, 1000)
    ),
    ParamSpec(
        "scaling16",
        "full_range",
        "16-bit to 8-bit conversion of raw images: full_range or minmax",
        choices=("full_range", "minmax"),
    ),
    ParamSpec("map_frame", "map", "frame_id of ~/pose, ~/hypotheses, ~/map_keyframes and ~/markers"),
    ParamSpec("publish_markers", True, "publish ~/markers (best match, loop-closure lines)"),
    ParamSpec(
        "diagnostics_period_s",
        1.0,
        "period of /diagnostics and of ~/map_keyframes updates",
        read_only=True,
        range=(0.05, 3600.0),
    ),
    ParamSpec(
        "warn_throttle_s",
        5.0,
        "minimum seconds between two warnings of one kind (bad input)",
        range=(0.0, 3600.0),
    ),
    ParamSpec(
        "pose_sigma_m",
        1.0,
        "position standard deviation of ~/pose at confidence 1 (divided by the confidence, floored at 0.01)",
        range=(1e-4, 1e4),
    ),
    ParamSpec(
        "pose_sigma_deg",
        10.0,
        "orientation standard deviation of ~/pose at confidence 1 "
        "(divided by the confidence, floored at 0.01)",
        range=(1e-4, 360.0),
    ),
    # ---- localization (recognition.LocalizerParams)
    ParamSpec(
        "localizer.top_k", _LP.top_k, "hypotheses retrieved per image (rows of ~/hypotheses)", range=(1, 1000)
    ),
    ParamSpec(
        "localizer.place_radius_m",
        _LP.place_radius_m,
        "hypotheses closer than this are one place",
        range=(0.0, _BIG),
    ),
    ParamSpec(
        "localizer.min_score",
        _LP.min_score,
        "minimum cosine similarity of an accepted place",
        range=(-1.0, 1.0),
    ),
    ParamSpec(
        "localizer.min_confidence",
        _LP.min_confidence,
        "minimum confidence (normalized margin) of an accepted place",
        range=(0.0, 1.0),
    ),
    ParamSpec(
        "localizer.temporal_consistency",
        _LP.temporal_consistency,
        "consecutive agreeing images needed (1 = off)",
        range=(1, 1000),
    ),
    ParamSpec(
        "localizer.temporal_max_distance_m",
        _LP.temporal_max_distance_m,
        "max distance between agreeing places",
        range=(0.0, _BIG),
    ),
    ParamSpec(
        "localizer.temporal_max_gap_s",
        _LP.temporal_max_gap_s,
        "max time between agreeing images",
        range=(0.0, _BIG),
    ),
    ParamSpec(
        "localizer.sequence_length",
        _LP.sequence_length,
        "SeqSLAM-style sequence matching length (0 or 1 = off)",
        range=(0, 1000),
    ),
    ParamSpec(
        "localizer.sequence_search_k",
        _LP.sequence_search_k,
        "candidates per image for sequence matching (>= top_k)",
        range=(1, 100000),
    ),
    # ---- loop closure (recognition.LoopClosureParams)
    ParamSpec("loop_closure.top_k", _LCP.top_k, "older keyframes retrieved per keyframe", range=(1, 1000)),
    ParamSpec(
        "loop_closure.min_score",
        _LCP.min_score,
        "minimum cosine similarity of a candidate",
        range=(-1.0, 1.0),
    ),
    ParamSpec(
        "loop_closure.exclusion_seconds",
        _LCP.exclusion_seconds,
        "keyframes younger than this are never matched",
        range=(0.0, _BIG),
    ),
    ParamSpec(
        "loop_closure.exclusion_keyframes",
        _LCP.exclusion_keyframes,
        "the last N keyframes are never matched",
        range=(0, 1_000_000),
    ),
    ParamSpec(
        "loop_closure.island_max_gap",
        _LCP.island_max_gap,
        "gap (keyframes) that still joins candidates into an island",
        range=(0, 100000),
    ),
    ParamSpec(
        "loop_closure.temporal_consistency",
        _LCP.temporal_consistency,
        "consecutive keyframes whose islands must overlap",
        range=(1, 1000),
    ),
    ParamSpec(
        "loop_closure.consistency_max_gap",
        _LCP.consistency_max_gap,
        "widening (keyframes) when comparing islands",
        range=(0, 100000),
    ),
    ParamSpec(
        "loop_closure.geometric_verification",
        _LCP.geometric_verification,
        "verify with local features + RANSAC",
    ),
    ParamSpec(
        "loop_closure.max_verified_candidates",
        _LCP.max_verified_candidates,
        "island members verified at most",
        range=(1, 1000),
    ),
    ParamSpec(
        "loop_closure.feature",
        _LCP.geometry.feature,
        "local features for verification: orb or sift",
        choices=("orb", "sift"),
    ),
    ParamSpec(
        "loop_closure.min_inliers", _LCP.geometry.min_inliers, "RANSAC inliers needed", range=(5, 100000)
    ),
    # ---- slam keyframes and pose inputs
    ParamSpec(
        "keyframe.distance_m",
        1.0,
        "slam: new keyframe after moving this far (0 = every image)",
        range=(0.0, _BIG),
    ),
    ParamSpec("keyframe.angle_deg", 15.0, "slam: new keyframe after turning this much", range=(0.0, 180.0)),
    ParamSpec(
        "keyframe.period_s",
        0.0,
        "slam: new keyframe after this long even without motion (0 = off)",
        range=(0.0, _BIG),
    ),
    ParamSpec(
        "odom_max_age_s",
        0.5,
        "slam: an image needs an odom pose within this of its stamp "
        "(interpolated between two odom messages, else the nearest)",
        range=(0.0, 3600.0),
    ),
    ParamSpec(
        "gps_max_age_s",
        1.0,
        "slam: a fix this close to the image stamp is stored with the keyframe",
        range=(0.0, 3600.0),
    ),
)

_BY_NAME = {p.name: p for p in PARAMS}


def defaults() -> dict[str, Any]:
    """Name -> default value of every parameter."""
    return {p.name: p.default for p in PARAMS}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The rcl_interfaces descriptor (description, range, read_only) of one parameter."""
    desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(spec.default, bool):
            pass
        elif isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        else:
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)
            ]
    return desc


def localizer_params(values: dict[str, Any]) -> LocalizerParams:
    """LocalizerParams from the node's parameter values (not validated)."""
    return LocalizerParams(
        top_k=int(values["localizer.top_k"]),
        place_radius_m=float(values["localizer.place_radius_m"]),
        min_score=float(values["localizer.min_score"]),
        min_confidence=float(values["localizer.min_confidence"]),
        temporal_consistency=int(values["localizer.temporal_consistency"]),
        temporal_max_distance_m=float(values["localizer.temporal_max_distance_m"]),
        temporal_max_gap_s=float(values["localizer.temporal_max_gap_s"]),
        sequence_length=int(values["localizer.sequence_length"]),
        sequence_search_k=int(values["localizer.sequence_search_k"]),
    )


def loop_closure_params(values: dict[str, Any]) -> LoopClosureParams:
    """LoopClosureParams from the node's parameter values (not validated)."""
    return LoopClosureParams(
        top_k=int(values["loop_closure.top_k"]),
        min_score=float(values["loop_closure.min_score"]),
        exclusion_seconds=float(values["loop_closure.exclusion_seconds"]),
        exclusion_keyframes=int(values["loop_closure.exclusion_keyframes"]),
        island_max_gap=int(values["loop_closure.island_max_gap"]),
        temporal_consistency=int(values["loop_closure.temporal_consistency"]),
        consistency_max_gap=int(values["loop_closure.consistency_max_gap"]),
        geometric_verification=bool(values["loop_closure.geometric_verification"]),
        max_verified_candidates=int(values["loop_closure.max_verified_candidates"]),
        geometry=GeometryParams(
            feature=str(values["loop_closure.feature"]), min_inliers=int(values["loop_closure.min_inliers"])
        ),
    )


def check_values(values: dict[str, Any]) -> str | None:
    """The reason ``values`` (a complete name -> value dict) is invalid, or None when it is valid.

    Checks the string choices, finiteness of floats and the recognition layer's own
    cross-field rules (e.g. ``localizer.sequence_search_k >= localizer.top_k`` when
    sequence matching is on). Ranges and types are checked by rclpy from the descriptors.
    """
    for name, value in values.items():
        spec = _BY_NAME.get(name)
        if spec is None:
            continue
        if spec.choices and value not in spec.choices:
            return f"{name} must be one of {', '.join(spec.choices)}; got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{name} must be finite, got {value!r}"
        if spec.range is not None and not isinstance(value, bool) and isinstance(value, (int, float)):
            lo, hi = spec.range
            if not lo <= value <= hi:
                return f"{name} must be in [{lo}, {hi}], got {value!r}"
    device = str(values.get("device", "auto"))
    if not (
        device in ("auto", "cpu") or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        return f"device must be auto, cpu, cuda or cuda:N; got {device!r}"
    try:
        localizer_params(values).validate()
        loop_closure_params(values).validate()
    except ValueError as exc:
        return str(exc)
    return None


def default_params_file() -> Path | None:
    """The packaged ``config/localize.yaml``: the source tree's, else the installed share directory's.

    ``$NETVLAD_ROS_PARAMS_FILE`` overrides both (mainly for tests). None when not found.
    """
    env = os.environ.get("NETVLAD_ROS_PARAMS_FILE")
    if env:
        return Path(env)
    src = Path(__file__).resolve().parents[2] / "config" / "localize.yaml"
    if src.is_file() and (src.parents[1] / "package.xml").is_file():
        return src
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:  # pragma: no cover - ament_index_python comes with rclpy
        return None
    try:
        share = Path(get_package_share_directory("netvlad_ros"))
    except (PackageNotFoundError, ValueError):
        return None
    path = share / "config" / "localize.yaml"
    return path if path.is_file() else None
