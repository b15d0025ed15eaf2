"""Parameters of the ``netvlad_localizer`` node, derived from the layers' params dataclasses.

Nothing is declared twice. The node's parameters are the fields, declared with
``config.param`` (default, description, range, choices, read-only), of

- :class:`NodeParams` (here: topics, QoS, frames, files, what is published),
- ``model.ExtractorParams`` (``device``, ``runtime``, ``fp16``, ``threads``, ``max_side``),
- ``recognition.SessionParams`` (``mode``, odometry/GPS ages, and the nested ``keyframe.*``,
  ``localizer.*``, ``loop_closure.*``, ``calibration.*`` groups),

flattened by ``config.specs`` into :data:`PARAMS`. ``config/localize.yaml`` is rendered
from the same table (``python -m netvlad_ros.ros.params > config/localize.yaml``; a test
checks the file is current), and the node loads it itself when started without
``--params-file``.

Validation happens in two places, both reported with a reason that names the field:
rclpy refuses read-only changes, wrong types and values outside the descriptors'
ranges; :func:`check_values` builds the dataclasses and runs their ``validate()``
(choices, finiteness, device spelling, cross-field rules).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from netvlad_ros.config import ConfigError, ParamSpec, build, check_fields, param, specs
from netvlad_ros.model.extractor import ExtractorParams
from netvlad_ros.recognition.session import MODES, SessionParams
from netvlad_ros.resources import shared_file
from netvlad_ros.ros.qos import QOS_NAMES
from netvlad_ros.sensors.depth import DepthParams

__all__ = [
    "MODES",
    "PARAMS",
    "NodeConfig",
    "NodeParams",
    "ParamSpec",
    "check_values",
    "default_params_file",
    "defaults",
    "descriptor",
    "node_config",
    "render_params_yaml",
]


@dataclass(frozen=True)
class NodeParams:
    """What only the ROS node has: files, topics, QoS, frames and what it publishes."""

    map_path: str = param(
        "",
        "map directory to load at start and on ~/reload_map; '' = none "
        "(allowed in slam mode only: start from an empty map)",
    )
    save_path: str = param(
        "", "where ~/save_map, autosave and the final slam save write the map; '' = map_path"
    )
    autosave_period_s: float = param(
        0.0,
        "slam: save the map this often when keyframes were added (0 = off); slam maps are also saved "
        "on a clean shutdown when save_path or map_path is set",
        range=(0.0, 1e7),
    )
    model_path: str = param("", "model file (.safetensors); '' = the built-in default model", read_only=True)
    compressed: bool = param(
        False, "subscribe to image/compressed (CompressedImage) instead of image (Image)", read_only=True
    )
    image_qos: str = param(
        "sensor_data",
        "QoS of the image subscription: " + ", ".join(QOS_NAMES),
        read_only=True,
        choices=QOS_NAMES,
    )
    image_qos_depth: int = param(
        5, "history depth of the image subscription", read_only=True, range=(1, 1000)
    )
    scaling16: str = param(
        "full_range",
        "16-bit to 8-bit conversion of raw images: full_range or minmax",
        choices=("full_range", "minmax"),
    )
    map_frame: str = param("map", "frame_id of ~/pose, ~/hypotheses, ~/map_keyframes and ~/markers")
    publish_lio_sam_loops: bool = param(
        False,
        "also publish each loop closure as std_msgs/Float64MultiArray [t_query, t_match] on "
        "lio_loop/loop_closure_detection (LIO-SAM's external loop input)",
        read_only=True,
    )
    publish_markers: bool = param(True, "publish ~/markers (best match, loop-closure lines)")
    pipeline_frames: int = param(
        1,
        "frames in the worker pipeline at once: 1 = one frame at a time, each stage using every "
        "core (the lowest latency); 2 prepares and describes the next frame while the current one "
        "is in the map stage, 3 overlaps all three stages (more throughput, but on 2 cores the "
        "overlapping frames slow each other: more latency, docs/node.md)",
        read_only=True,
        range=(1, 3),
    )
    diagnostics_period_s: float = param(
        1.0, "period of /diagnostics and of ~/map_keyframes updates", read_only=True, range=(0.05, 3600.0)
    )
    warn_throttle_s: float = param(
        5.0, "minimum seconds between two warnings of one kind (bad input)", range=(0.0, 3600.0)
    )
    pose_sigma_m: float = param(
        1.0,
        "position standard deviation of ~/pose at confidence 1 (divided by the confidence, floored at 0.01)",
        range=(1e-4, 1e4),
    )
    pose_sigma_deg: float = param(
        10.0,
        "orientation standard deviation of ~/pose at confidence 1 (divided by the confidence, floored at 0.01)",
        range=(1e-4, 360.0),
    )


#: The extractor options the node exposes (a node describes one image at a time: no batch size).
NODE_EXTRACTOR_PARAMS = ("device", "runtime", "fp16", "threads", "max_side")

PARAMS: tuple[ParamSpec, ...] = (
    *specs(NodeParams),
    *specs(DepthParams, "depth."),
    *(s for s in specs(ExtractorParams) if s.name in NODE_EXTRACTOR_PARAMS),
    *specs(SessionParams),
)

_BY_NAME = {p.name: p for p in PARAMS}
assert len(_BY_NAME) == len(PARAMS), "two layers declare the same node parameter name"


@dataclass(frozen=True)
class NodeConfig:
    """The node's parameter values as the layers' params objects."""

    node: NodeParams
    extractor: ExtractorParams
    session: SessionParams
    depth: DepthParams


def defaults() -> dict[str, Any]:
    """Name -> default value of every parameter."""
    return {p.name: p.default for p in PARAMS}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The rcl_interfaces descriptor (description, range, read_only) of one parameter."""
    desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.kind == "float_array":
        # A list of numbers may arrive as a double array, an integer array, or (written `[]`
        # in YAML, or an empty default) with no type at all; values are checked by check_values.
        desc.dynamic_typing = True
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.range is not None:
        lo, hi = spec.range
        if spec.kind == "int":
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
        elif spec.kind == "float":
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)
            ]
    return desc


def ros_value(spec: ParamSpec, value: Any) -> Any:
    """A value as rclpy holds it (tuples of floats are DOUBLE_ARRAY lists)."""
    return list(value) if spec.kind == "float_array" else value


def node_config(values: dict[str, Any]) -> NodeConfig:
    """The params objects from parameter values (not validated: see :func:`check_values`)."""
    extractor_values = {k: v for k, v in values.items() if k in NODE_EXTRACTOR_PARAMS}
    return NodeConfig(
        build(NodeParams, values),
        build(ExtractorParams, extractor_values),
        build(SessionParams, values),
        build(DepthParams, values, "depth."),
    )


def check_values(values: dict[str, Any]) -> str | None:
    """The reason ``values`` (name -> value) is invalid, or None when it is valid.

    Builds the params objects and runs their checks: declared ranges and choices,
    finiteness, the device spelling and the recognition layer's cross-field rules
    (e.g. ``localizer.sequence_search_k >= localizer.top_k`` with sequence matching on).
    """
    try:
        cfg = node_config(values)
        check_fields(cfg.node)
        cfg.extractor.validate()
        cfg.session.validate()
        cfg.depth.validate()
    except ConfigError as exc:
        return str(exc)
    return None


def default_params_file() -> Path | None:
    """The packaged ``config/localize.yaml`` (``$NETVLAD_ROS_PARAMS_FILE`` overrides it, for tests)."""
    env = os.environ.get("NETVLAD_ROS_PARAMS_FILE")
    if env:
        return Path(env)
    return shared_file("config", "localize.yaml")


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_yaml_scalar(float(v)) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    return str(value)


#: The comment block of config/localize.yaml.
LOCALIZE_YAML_HEADER: tuple[str, ...] = (
    "# Parameters of the netvlad_localizer node (executable localize_node), with their defaults.",
    "# Loaded by launch/localize.launch.py, and by localize_node itself when it is started without",
    "# --params-file. Generated from the params dataclasses by",
    "#   python -m netvlad_ros.ros.params > config/localize.yaml",
    "# (test/ros/test_ros_node_launch.py checks it is current). Ranges: docs/node.md or",
    "# `localize_node --help`. (read-only) parameters cannot change while the node runs.",
)


def render_params_yaml(
    params: Sequence[ParamSpec] = PARAMS, header: Sequence[str] = LOCALIZE_YAML_HEADER
) -> str:
    """A node's parameter file: every parameter of ``params`` with its default and description,
    under the ``header`` comment lines (defaults: ``config/localize.yaml``)."""
    lines = [*header, "/**:", "  ros__parameters:"]
    open_groups: list[str] = []
    for spec in params:
        *groups, leaf = spec.name.split(".")
        common = 0
        while common < min(len(groups), len(open_groups)) and groups[common] == open_groups[common]:
            common += 1
        open_groups = open_groups[:common]
        for g in groups[common:]:
            lines.append("    " + "  " * len(open_groups) + f"{g}:")
            open_groups.append(g)
        indent = "    " + "  " * len(groups)
        entry = f"{indent}{leaf}: {_yaml_scalar(spec.default)}"
        note = spec.description + (" (read-only)" if spec.read_only else "")
        lines.append(f"{entry:<43} # {note}")
    return "\n".join(lines) + "\n"


def describe_parameters(params: Sequence[ParamSpec] = PARAMS) -> str:
    """One line per parameter (``--help``): name, default, range/choices, description."""
    out = []
    for p in params:
        limits = ""
        if p.choices:
            limits = f" one of {', '.join(p.choices)};"
        elif p.range is not None:
            limits = f" in [{p.range[0]:g}, {p.range[1]:g}];"
        flags = " [read-only]" if p.read_only else ""
        out.append(f"  {p.name} (default {_yaml_scalar(p.default)};{limits}){flags}: {p.description}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render_params_yaml())
