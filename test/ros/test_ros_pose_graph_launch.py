"""How SLAM is started: launch/slam.launch.py, config/pose_graph.yaml, config/netvlad.rviz.

``ros2 launch`` is not installable here (see test_ros_node_launch.py), so the launch file is
checked statically (it compiles; packages, executables, node names and launch arguments are
the real ones) and by executing it against minimal stand-ins for launch/launch_ros that record
what it builds. config/pose_graph.yaml must be the file generated from the declared parameters,
and a real node declares exactly those. The RViz config must parse and name only topics the
two real nodes publish, with the message type and durability they publish them with.
"""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "slam.launch.py"
CONFIG = REPO / "config" / "pose_graph.yaml"
RVIZ = REPO / "config" / "netvlad.rviz"

pytestmark = pytest.mark.ros


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _calls(tree: ast.AST, func: str) -> list[dict[str, ast.AST]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == func:
            out.append({kw.arg: kw.value for kw in node.keywords} | {"_args": node.args})
    return out


def test_launch_file_names_the_real_executables_and_arguments():
    source = LAUNCH.read_text()
    tree = ast.parse(source)
    compile(source, str(LAUNCH), "exec")
    nodes = {ast.literal_eval(n["executable"]): n for n in _calls(tree, "Node")}
    assert set(nodes) == {"localize_node", "pose_graph_node", "rviz2"}
    assert ast.literal_eval(nodes["localize_node"]["name"]) == "netvlad_localizer"
    assert ast.literal_eval(nodes["pose_graph_node"]["name"]) == "netvlad_pose_graph"
    for exe in ("localize_node", "pose_graph_node"):
        assert ast.literal_eval(nodes[exe]["package"]) == "netvlad_ros"
    common = next(
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "_COMMON"
    )
    assert ast.literal_eval(common)["emulate_tty"] is False  # no colour escapes in piped logs
    setup = ast.unparse(ast.parse((REPO / "setup.py").read_text()))
    assert "pose_graph_node = netvlad_ros.ros.pose_graph_node:main" in setup
    args = {ast.literal_eval(c["_args"][0]) for c in _calls(tree, "DeclareLaunchArgument")}
    assert {"map", "model", "params_file", "pose_graph_params_file", "image_topic", "odom_topic"} <= args
    assert {"namespace", "device", "rviz", "rviz_config", "compressed"} <= args
    literal = [c["_args"][0] for c in _calls(tree, "LaunchConfiguration") if c["_args"]]
    used = {ast.literal_eval(a) for a in literal if isinstance(a, ast.Constant)}
    assert used <= args  # each LaunchConfiguration named by a literal is declared
    overrides = next(
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "OVERRIDES"
    )
    keys = {ast.literal_eval(k) for k in overrides.keys}
    assert keys <= args  # the loop's LaunchConfiguration(arg) runs over these


class _Stand:
    """A minimal stand-in for a launch class: records its arguments (launch is not installable here)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Stand):
    def perform(self, context):
        return context[self.args[0]]


class _PackageNotFoundError(KeyError):
    pass


def _launch(monkeypatch, rviz_installed: bool, **given):
    """Run slam.launch.py against stand-ins; returns (actions from its OpaqueFunction, context)."""

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)

    def share(pkg):
        if pkg == "rviz2" and not rviz_installed:
            raise _PackageNotFoundError(pkg)
        return f"/share/{pkg}"

    kinds = {k: type(k, (_Stand,), {}) for k in ("DeclareLaunchArgument", "OpaqueFunction", "LogInfo")}
    module("launch", LaunchDescription=type("LaunchDescription", (_Stand,), {}))
    module("launch.actions", **kinds)
    module("launch.substitutions", LaunchConfiguration=_LaunchConfiguration)
    module("launch_ros")
    module("launch_ros.actions", Node=type("Node", (_Stand,), {}))
    module("launch_ros.parameter_descriptions", ParameterValue=type("ParameterValue", (_Stand,), {}))
    module("ament_index_python")
    module(
        "ament_index_python.packages",
        get_package_share_directory=share,
        PackageNotFoundError=_PackageNotFoundError,
    )
    namespace: dict = {"__name__": "slam_launch"}
    exec(compile(LAUNCH.read_text(), str(LAUNCH), "exec"), namespace)
    actions = namespace["generate_launch_description"]().args[0]
    context = {
        a.args[0]: a.kwargs["default_value"] for a in actions if type(a).__name__ == "DeclareLaunchArgument"
    }
    context.update(given)
    (opaque,) = [a for a in actions if type(a).__name__ == "OpaqueFunction"]
    return opaque.kwargs["function"](context), context


def _by_executable(actions) -> dict:
    return {a.kwargs["executable"]: a for a in actions if type(a).__name__ == "Node"}


def test_launch_starts_both_nodes_in_slam_mode_passing_only_given_arguments(monkeypatch):
    from netvlad_ros.ros.params import PARAMS

    actions, context = _launch(monkeypatch, rviz_installed=True)
    nodes = _by_executable(actions)
    assert set(nodes) == {"localize_node", "pose_graph_node"}  # rviz only on request
    params_file, overrides = nodes["localize_node"].kwargs["parameters"]
    assert params_file.args == ("params_file",) and context["params_file"].endswith("config/localize.yaml")
    assert set(overrides) == {"mode"}  # slam always; nothing else overrides the params file
    assert overrides["mode"].args == ("slam",) and overrides["mode"].kwargs["value_type"] is str
    (graph_file,) = nodes["pose_graph_node"].kwargs["parameters"]
    assert graph_file.args == ("pose_graph_params_file",)
    assert context["pose_graph_params_file"].endswith("config/pose_graph.yaml")
    # both read the same odometry topic, relative by default so namespace:=robot1 moves it
    for exe in ("localize_node", "pose_graph_node"):
        remaps = dict(nodes[exe].kwargs["remappings"])
        assert remaps["odom"].args == ("odom_topic",)
        assert nodes[exe].kwargs["namespace"].args == ("namespace",)
    assert context["odom_topic"] == "odom" and context["image_topic"] == "camera/image_raw"

    actions, _ = _launch(monkeypatch, rviz_installed=True, map="1234", device="0", compressed="true")
    _, overrides = _by_executable(actions)["localize_node"].kwargs["parameters"]
    assert set(overrides) == {"mode", "map_path", "device", "compressed"}
    declared = {p.name: p for p in PARAMS}
    for name, value in overrides.items():
        assert value.kwargs["value_type"] is type(declared[name].default), name  # map:=1234 stays a string


def test_rviz_starts_only_when_asked_and_installed(monkeypatch):
    actions, context = _launch(monkeypatch, rviz_installed=True, rviz="true")
    rviz = _by_executable(actions)["rviz2"]
    assert rviz.kwargs["package"] == "rviz2"
    flag, config = rviz.kwargs["arguments"]
    assert flag == "-d" and config.args == ("rviz_config",)
    assert context["rviz_config"] == "/share/netvlad_ros/config/netvlad.rviz"

    actions, _ = _launch(monkeypatch, rviz_installed=False, rviz="true")
    assert set(_by_executable(actions)) == {"localize_node", "pose_graph_node"}
    (log,) = [a for a in actions if type(a).__name__ == "LogInfo"]
    assert "rviz2 is not installed" in log.kwargs["msg"]

    actions, _ = _launch(monkeypatch, rviz_installed=True, rviz="false")
    assert "rviz2" not in _by_executable(actions)


def test_pose_graph_yaml_is_generated_from_the_declared_parameters(ros):
    from rclpy.parameter import Parameter

    from netvlad_ros.ros.params import render_params_yaml
    from netvlad_ros.ros.pose_graph import PARAMS, YAML_HEADER, PoseGraphNode

    assert CONFIG.read_text() == render_params_yaml(PARAMS, YAML_HEADER), (
        "config/pose_graph.yaml is stale: python -m netvlad_ros.ros.pose_graph > config/pose_graph.yaml"
    )
    doc = yaml.safe_load(CONFIG.read_text())
    assert list(doc) == ["/**"] and list(doc["/**"]) == ["ros__parameters"]
    in_yaml = _flatten(doc["/**"]["ros__parameters"])
    declared = {p.name: p.default for p in PARAMS}
    assert in_yaml == declared and all(type(in_yaml[k]) is type(v) for k, v in declared.items())
    node = PoseGraphNode(context=ros.context)
    try:
        for name, value in in_yaml.items():
            assert node.get_parameter(name).value == value, name
        desc = node.describe_parameters(["graph.loop_kernel", "odom_buffer_size", "map_frame"])
        assert desc[0].read_only and "cauchy" in desc[0].additional_constraints
        assert desc[1].read_only and desc[1].integer_range[0].from_value == 10
        assert not desc[2].read_only
        # run-time changes: the node's own parameters yes, the graph's no
        ok, refused = node.set_parameters(
            [Parameter("map_frame", value="world"), Parameter("graph.loop_kernel", value="huber")]
        )
        assert ok.successful and not refused.successful
        assert node.get_parameter("map_frame").value == "world"
    finally:
        node.shutdown()
        node.destroy_node()


_RVIZ_TYPES = {
    "rviz_default_plugins/PointCloud2": "sensor_msgs/msg/PointCloud2",
    "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
    "rviz_default_plugins/Path": "nav_msgs/msg/Path",
    "rviz_default_plugins/PoseWithCovariance": "geometry_msgs/msg/PoseWithCovarianceStamped",
}


def _rviz_displays(displays: list) -> list[dict]:
    out = []
    for d in displays:
        out.append(d)
        out.extend(_rviz_displays(d.get("Displays", [])))  # display groups nest
    return out


def test_rviz_config_names_only_topics_the_nodes_publish(ros, small_model):
    """Both real nodes in this process (no namespace, as a default launch starts them); every topic
    the config names must be published by one of them with the config's message type, and a
    display asking for Transient Local must meet a transient-local publisher (else RViz gets nothing)."""
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy

    from netvlad_ros.ros.localizer import LocalizeNode
    from netvlad_ros.ros.pose_graph import PoseGraphNode

    config = yaml.safe_load(RVIZ.read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "map"
    displays = [d for d in _rviz_displays(manager["Displays"]) if "Topic" in d]
    wanted = {
        (d["Topic"]["Value"], _RVIZ_TYPES[d["Class"]], d["Topic"]["Durability Policy"]) for d in displays
    }
    names = {t for t, _, _ in wanted}
    assert {
        "/netvlad_localizer/map_keyframes",
        "/netvlad_localizer/hypotheses",
        "/netvlad_localizer/markers",
        "/netvlad_pose_graph/path",
        "/netvlad_pose_graph/pose",
        "/netvlad_pose_graph/markers",
    } <= names

    overrides = [
        Parameter(k, value=v)
        for k, v in {"mode": "slam", "model_path": str(small_model), "device": "cpu"}.items()
    ]
    localizer = LocalizeNode(context=ros.context, parameter_overrides=overrides)
    graph = PoseGraphNode(context=ros.context)
    try:
        published: dict[str, set[str]] = {}
        for node in (localizer, graph):
            for topic, types_ in node.get_publisher_names_and_types_by_node(
                node.get_name(), node.get_namespace()
            ):
                published.setdefault(topic, set()).update(types_)
        for topic, msg_type, durability in sorted(wanted):
            assert msg_type in published.get(topic, set()), (topic, msg_type, sorted(published))
            infos = graph.get_publishers_info_by_topic(topic)
            transient = [i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos]
            if durability == "Transient Local":
                assert transient and all(transient), topic
    finally:
        for node in (localizer, graph):
            node.shutdown()
            node.destroy_node()
