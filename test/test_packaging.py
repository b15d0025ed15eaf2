"""The package builds with colcon, installs its share files, and its console scripts run.

A real ``colcon build`` of a copy of the repository, then a shell that sources
``install/setup.bash`` (keeping the venv on AMENT_PREFIX_PATH, which the
script would otherwise replace) resolves the package share directory and runs
the installed executables from ``lib/netvlad_ros`` (the ``ros2 run`` layout).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from support import REPO

VENV_BIN = Path(sys.executable).parent


def test_package_xml_declares_the_ros_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "netvlad_ros"
    deps = {e.text for e in root if e.tag.endswith("depend")}
    for dep in (
        "rclpy",
        "sensor_msgs",
        "geometry_msgs",
        "nav_msgs",
        "std_srvs",
        "diagnostic_msgs",
        "visualization_msgs",
    ):
        assert dep in deps, dep
    assert root.find("export/build_type").text == "ament_python"


def test_setup_py_installs_share_files():
    tree = ast.parse((REPO / "setup.py").read_text())
    text = ast.unparse(tree)
    for folder in ("launch", "config", "models"):
        assert f"share/{{PACKAGE}}/{folder}" in text


@pytest.mark.slow
def test_colcon_build_and_installed_scripts(colcon_ws):
    ws, env = colcon_ws
    prefix = ws / "install" / "netvlad_ros"
    for sub in ("launch", "config", "models"):
        assert (prefix / "share" / "netvlad_ros" / sub).is_dir(), sub
    script = """
set -e
export AMENT_PREFIX_PATH="$VIRTUAL_ENV"
source install/setup.bash
export AMENT_PREFIX_PATH="$AMENT_PREFIX_PATH:$VIRTUAL_ENV"
python -c "from ament_index_python.packages import get_package_share_directory as g; print(g('netvlad_ros'))"
install/netvlad_ros/lib/netvlad_ros/netvlad-ros --version
install/netvlad_ros/lib/netvlad_ros/netvlad-ros info --help >/dev/null && echo info-ok
"""
    run = subprocess.run(["bash", "-c", script], cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.split()
    assert Path(lines[0]).resolve() == (prefix / "share" / "netvlad_ros").resolve()
    assert "netvlad-ros 0.1.0" in run.stdout and "info-ok" in run.stdout
