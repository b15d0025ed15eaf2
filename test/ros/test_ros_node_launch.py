"""How netvlad_localizer is started: launch file, parameter file, defaults, exit codes, colcon install.

``ros2 launch`` is not installable here, so the launch file is checked statically
(it compiles; package, executable, node name and launch arguments are the real ones,
the arguments it overrides are real parameters). The parameter file must list exactly
the parameters the node declares, with the declared defaults (checked on a real node).
Start-up failures exit with status 2 and one clear line, not a traceback. The slow
test builds the package with colcon and starts the installed executable.
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

from support import colcon_build_workspace

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
    assert nodes, "no launch_ros Node action"
    for n in nodes:
        assert ast.literal_eval(n["package"]) == "netvlad_ros"
        assert ast.literal_eval(n["executable"]) == "localize_node"
        assert ast.literal_eval(n["name"]) == "netvlad_localizer"
        assert {"parameters", "namespace", "remappings"} <= set(n)
    setup = ast.unparse(ast.parse((REPO / "setup.py").read_text()))
    assert "localize_node = netvlad_ros.ros.localize_node:main" in setup
    args = {ast.literal_eval(c["_args"][0]) for c in _call_kwargs(tree, "DeclareLaunchArgument")}
    assert {"map", "model", "params_file", "image_topic", "compressed", "namespace", "device"} <= args
    # every parameter the launch file overrides is a node parameter
    overrides = next(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "overrides"
    )
    names = {ast.literal_eval(k) for k in overrides.keys}
    assert names and names <= set(yaml_params())
    # each LaunchConfiguration used is declared
    used = {ast.literal_eval(c["_args"][0]) for c in _call_kwargs(tree, "LaunchConfiguration") if c["_args"]}
    assert used <= args


def test_yaml_matches_the_declared_parameters(ros, small_model):
    from rclpy.parameter import Parameter

    from netvlad_ros.recognition import LocalizerParams, LoopClosureParams
    from netvlad_ros.ros.localize_node import LocalizeNode
    from netvlad_ros.ros.params import PARAMS

    declared = {p.name: p.default for p in PARAMS}
    in_yaml = yaml_params()
    assert set(in_yaml) == set(declared)
    for name, value in in_yaml.items():
        assert type(value) is type(declared[name]) and value == declared[name], name
    # the recognition defaults are the node defaults (one source of truth for thresholds)
    lp, lcp = LocalizerParams(), LoopClosureParams()
    for name, value in in_yaml.items():
        group, _, field = name.partition(".")
        if group == "localizer":
            assert getattr(lp, field) == value, name
        elif group == "loop_closure" and hasattr(lcp, field):
            assert getattr(lcp, field) == value, name
    assert in_yaml["loop_closure.min_inliers"] == lcp.geometry.min_inliers

    # a real node, no parameter file: what it declares equals the yaml
    overrides = {"mode": "slam", "model_path": str(small_model), "device": "cpu"}
    node = LocalizeNode(
        context=ros.context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()]
    )
    try:
        for name, value in in_yaml.items():
            got = node.get_parameter(name).value
            assert got == (overrides.get(name, value)), name
        desc = node.describe_parameters(["device", "localizer.top_k", "localizer.min_score"])
        assert desc[0].read_only and desc[0].description
        assert desc[1].integer_range[0].from_value == 1
        assert desc[2].floating_point_range[0].to_value == 1.0
    finally:
        node.stop()
        node.destroy_node()


def test_default_params_file_is_loaded_first(tmp_path):
    from netvlad_ros.ros.localize_node import _with_default_params_file

    argv = ["localize_node", "--ros-args", "-p", "map_path:=/m"]
    out = _with_default_params_file(argv)
    assert out[:4] == ["localize_node", "--ros-args", "--params-file", str(CONFIG)]
    assert out[-3:] == ["--ros-args", "-p", "map_path:=/m"]  # later, so it overrides the file
    mine = ["localize_node", "--ros-args", "--params-file", str(tmp_path / "x.yaml")]
    assert _with_default_params_file(mine) == mine


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
def test_colcon_installed_node_serves(tmp_path, ros_env, node_map, node_client, scenes):
    from netvlad_ros.ros.conversions import sec_to_stamp, stamp_to_ns

    ws, env = colcon_build_workspace(tmp_path)
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
