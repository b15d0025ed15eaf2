"""How netvlad_localizer is started: launch file, parameter file, defaults, exit codes, colcon install.

``ros2 launch`` is not installable here (its packages are not on PyPI; the real one was
run from sources in a scratch venv, see docs/node.md), so the launch file is checked two
ways: statically (it compiles; package, executable, node name and launch arguments are the
real ones) and by executing it against minimal stand-ins for launch/launch_ros that record
what it builds (which parameters it passes, with which types, for which given arguments).
config/localize.yaml must be the file generated from the declared parameters, and a real
node declares exactly those. Start-up failures exit with status 2 and one clear line, not
a traceback. The slow test builds the package with colcon and starts the installed executable.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "localize.launch.py"
CONFIG = REPO / "config" / "localize.yaml"
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.ros


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def yaml_params() -> dict:
    doc = yaml.safe_load(CONFIG.read_text())
    assert list(doc) == ["/**"] and list(doc["/**"]) == ["ros__parameters"]
    return _flatten(doc["/**"]["ros__parameters"])


def _call_kwargs(tree: ast.AST, func: str) -> list[dict[str, ast.AST]]:
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == func:
            calls.append({kw.arg: kw.value for kw in node.keywords} | {"_args": node.args})
    return calls


def test_launch_file_names_the_real_executable_and_parameters():
    source = LAUNCH.read_text()
    tree = ast.parse(source)
    compile(source, str(LAUNCH), "exec")
    nodes = _call_kwargs(tree, "Node")
    assert len(nodes) == 1, "one launch_ros Node action"
    n = nodes[0]
    assert ast.literal_eval(n["package"]) == "netvlad_ros"
    assert ast.literal_eval(n["executable"]) == "localize_node"
    assert ast.literal_eval(n["name"]) == "netvlad_localizer"
    assert {"parameters", "namespace", "remappings"} <= set(n)
    assert ast.literal_eval(n["emulate_tty"]) is False  # no colour escapes in piped logs
    setup = ast.unparse(ast.parse((REPO / "setup.py").read_text()))
    assert "localize_node = netvlad_ros.ros.localize_node:main" in setup
    assert "tests_require" not in setup  # colcon warned: Unknown distribution option
    args = {ast.literal_eval(c["_args"][0]) for c in _call_kwargs(tree, "DeclareLaunchArgument")}
    assert {"map", "model", "params_file", "image_topic", "compressed", "namespace", "device", "mode"} <= args
    configs = [c["_args"][0] for c in _call_kwargs(tree, "LaunchConfiguration") if c["_args"]]
    used = {ast.literal_eval(c) for c in configs if isinstance(c, ast.Constant)}
    assert used <= args  # each LaunchConfiguration named by a literal is declared
    overrides = ast.literal_eval(
        next(
            ast.unparse(n.value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "OVERRIDES"
        )
        .replace("str)", "'str')")
        .replace("bool)", "'bool')")
    )
    assert set(overrides) <= args  # the loop's LaunchConfiguration(arg) runs over these
    assert {name for name, _ in overrides.values()} <= set(yaml_params())  # each is a node parameter


class _Stand:
    """A minimal stand-in for a launch class: records its arguments (launch is not installable here)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _LaunchConfiguration(_Stand):
    def perform(self, context):
        return context[self.args[0]]


def _launch_module(monkeypatch):
    """Execute launch/localize.launch.py against stand-ins for launch, launch_ros and ament_index."""
    import types

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)
        return m

    stand = {"DeclareLaunchArgument": type("DeclareLaunchArgument", (_Stand,), {}),
             "OpaqueFunction": type("OpaqueFunction", (_Stand,), {})}  # fmt: skip
    module("launch", LaunchDescription=type("LaunchDescription", (_Stand,), {}))
    module("launch.actions", **stand)
    module("launch.substitutions", LaunchConfiguration=_LaunchConfiguration)
    module("launch_ros")
    module("launch_ros.actions", Node=type("Node", (_Stand,), {}))
    module("launch_ros.parameter_descriptions", ParameterValue=type("ParameterValue", (_Stand,), {}))
    module("ament_index_python")
    module("ament_index_python.packages", get_package_share_directory=lambda pkg: f"/share/{pkg}")
    namespace: dict = {"__name__": "localize_launch"}
    exec(compile(LAUNCH.read_text(), str(LAUNCH), "exec"), namespace)
    return namespace


def _launch_node(monkeypatch, **given):
    """The Node the launch file makes when the user gives ``given`` launch arguments."""
    ns = _launch_module(monkeypatch)
    desc = ns["generate_launch_description"]()
    actions = desc.args[0]
    context = {
        a.args[0]: a.kwargs["default_value"] for a in actions if type(a).__name__ == "DeclareLaunchArgument"
    }
    context.update(given)
    (opaque,) = [a for a in actions if type(a).__name__ == "OpaqueFunction"]
    (node,) = opaque.kwargs["function"](context)
    return node, context


def test_launch_passes_only_given_arguments_with_their_types(monkeypatch):
    """A params file keeps its values unless an argument is given; given values keep their type."""
    node, context = _launch_node(monkeypatch)
    params_file, overrides = node.kwargs["parameters"]
    assert params_file.args == ("params_file",) and context["params_file"].endswith("config/localize.yaml")
    assert overrides == {}  # nothing given: nothing overrides the params file (its mode: slam counts)

    node, _ = _launch_node(monkeypatch, map="1234", device="0", mode="slam", compressed="true")
    _, overrides = node.kwargs["parameters"]
    assert set(overrides) == {"map_path", "device", "mode", "compressed"}
    declared = {p.name: p for p in __import__("netvlad_ros.ros.params", fromlist=["PARAMS"]).PARAMS}
    for name, value in overrides.items():
        assert value.kwargs["value_type"] is type(declared[name].default), name  # map:=1234 stays a string
    # both topics are remapped (which one is read is the node's `compressed` parameter), and the
    # default camera topic is relative, so namespace:=robot1 moves it
    remaps = dict(node.kwargs["remappings"])
    assert set(remaps) == {"image", "image/compressed"}
    assert context["image_topic"] == "camera/image_raw" and not context["image_topic"].startswith("/")


def test_yaml_is_generated_from_the_declared_parameters(ros, small_model):
    from rclpy.parameter import Parameter

    from netvlad_ros.config import flatten
    from netvlad_ros.recognition import LocalizerParams, LoopClosureParams
    from netvlad_ros.ros.localizer import LocalizeNode
    from netvlad_ros.ros.params import PARAMS, render_params_yaml

    assert CONFIG.read_text() == render_params_yaml(), (
        "config/localize.yaml is stale: python -m netvlad_ros.ros.params > config/localize.yaml"
    )

    def plain(v):
        return list(v) if isinstance(v, tuple) else v

    declared = {p.name: plain(p.default) for p in PARAMS}
    in_yaml = yaml_params()
    assert set(in_yaml) == set(declared)
    for name, value in in_yaml.items():
        assert type(value) is type(declared[name]) and value == declared[name], name
    # the recognition defaults are the node defaults (one source of truth for thresholds)
    layer_defaults = {
        **flatten(LocalizerParams(), "localizer."),
        **flatten(LoopClosureParams(), "loop_closure."),
    }
    for name, value in layer_defaults.items():
        assert in_yaml[name] == plain(value), name
    assert "loop_closure.geometry.min_inliers" in layer_defaults

    # a real node, no parameter file: what it declares equals the yaml
    overrides = {"mode": "slam", "model_path": str(small_model), "device": "cpu"}
    node = LocalizeNode(
        context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()]
    )
    try:
        for name, value in in_yaml.items():
            got = plain(node.get_parameter(name).value)
            assert got == (overrides.get(name, value)), name
        desc = node.describe_parameters(["device", "localizer.top_k", "localizer.min_score"])
        assert desc[0].read_only and desc[0].description
        assert desc[1].integer_range[0].from_value == 1
        assert desc[2].floating_point_range[0].to_value == 1.0
    finally:
        node.shutdown()
        node.destroy_node()


def test_default_params_file_is_loaded_first(tmp_path):
    from netvlad_ros.ros.localize_node import with_default_params_file

    argv = ["localize_node", "--ros-args", "-p", "map_path:=/m"]
    out = with_default_params_file(argv)
    assert out[:4] == ["localize_node", "--ros-args", "--params-file", str(CONFIG)]
    assert out[-3:] == ["--ros-args", "-p", "map_path:=/m"]  # later, so it overrides the file
    mine = ["localize_node", "--ros-args", "--params-file", str(tmp_path / "x.yaml")]
    assert with_default_params_file(mine) == mine


def test_startup_errors_exit_2_with_a_clear_message(ros_child, small_model, tmp_path):
    corrupt = tmp_path / "corrupt_map"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text("{ not json")
    bad_model = tmp_path / "bad.safetensors"
    bad_model.write_bytes(b"\x00" * 100)
    cases = {
        "corrupt_map": (
            ["-p", f"map_path:={corrupt}", "-p", f"model_path:={small_model}"],
            "cannot load map",
        ),
        "missing_map": (
            ["-p", f"map_path:={tmp_path / 'nope'}", "-p", f"model_path:={small_model}"],
            "cannot load map",
        ),
        "bad_model": (["-p", "mode:=slam", "-p", f"model_path:={bad_model}"], "cannot load model"),
        "bad_param": (["-p", "mode:=slam", "-p", "localizer.top_k:=0"], "localizer.top_k"),
    }
    children = {
        name: ros_child(
            ["-m", "netvlad_ros.ros.localize_node", "--ros-args", "-p", "device:=cpu", *args], name=name
        )
        for name, (args, _) in cases.items()
    }
    for name, child in children.items():
        rc = child.wait(timeout=120)
        err = child.stderr_tail()
        assert rc == 2, f"{name}: exit {rc}\n{err}"
        assert cases[name][1] in err, f"{name}: {err}"
        assert "Traceback" not in err, f"{name}: {err}"


@pytest.mark.slow
def test_colcon_installed_node_serves(tmp_path, colcon_ws, ros_env, node_map, node_client, scenes):
    from netvlad_ros.ros.conversions import sec_to_stamp, stamp_to_ns

    ws, env = colcon_ws
    exe = ws / "install" / "netvlad_ros" / "lib" / "netvlad_ros" / "localize_node"
    assert exe.is_file()
    params = ws / "install" / "netvlad_ros" / "share" / "netvlad_ros" / "config" / "localize.yaml"
    assert params.is_file()
    script = f"""
set -e
export AMENT_PREFIX_PATH="$VIRTUAL_ENV"
source install/setup.bash
export AMENT_PREFIX_PATH="$AMENT_PREFIX_PATH:$VIRTUAL_ENV"
exec {exe} --ros-args --params-file {params} -r __ns:=/installed \\
  -p map_path:={node_map["path"]} -p model_path:={node_map["model"]} -p device:=cpu
"""
    log = tmp_path / "installed_node.err"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            ["bash", "-c", script], cwd=ws, env=env, stdout=err, stderr=err, start_new_session=True
        )
    try:
        client = node_client(namespace="/installed")

        class _Child:  # what NodeClient.wait_ready needs
            def __init__(self, p):
                self.proc = p

            def stderr_tail(self, n=2000):
                return log.read_text(errors="replace")[-n:]

        client.wait_ready(_Child(proc))
        t = 77.0
        client.send_image(scenes[2], t)
        _, rows = client.hypotheses_for(stamp_to_ns(sec_to_stamp(t)))
        assert rows[0]["keyframe_id"] == 2
    finally:
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=5)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
