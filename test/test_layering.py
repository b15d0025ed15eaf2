"""The layering rule, checked on the source: imports only go down, no module cycles, ROS only in ros/.

Every import statement of every module counts (module level, inside functions, under
``TYPE_CHECKING``), read with ``ast`` (nothing is imported). The layer order is the one in
docs/layout.md; a package may import itself and the layers before it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "netvlad_ros"

#: Bottom to top (docs/layout.md).
LAYERS = (
    "__init__",
    "fileio",
    "resources",
    "config",
    "model",
    "mapdb",
    "sensors",
    "recognition",
    "posegraph",
    "synthetic",
    "offline",
    "ros",
    "cli",
)

#: Top-level modules only ros/ may import (rclpy and the ROS message/service packages).
ROS_MODULES = ("rclpy", "rcl_interfaces", "builtin_interfaces", "std_msgs", "std_srvs", "sensor_msgs",
               "geometry_msgs", "nav_msgs", "diagnostic_msgs", "visualization_msgs", "launch", "launch_ros")  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(mod: str, path: Path, names: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) of every import in ``path``; package-internal targets resolved."""
    tree = ast.parse(path.read_text(), str(path))
    here = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                full = ".".join(base) + (f".{node.module}" if node.module else "")
            else:
                full = node.module or ""
            for a in node.names:
                sub = f"{full}.{a.name}"
                out.append((sub if sub in names else full, node.lineno))
    return out


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    modules = _modules()
    names = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in names}
    ros_imports = []
    for mod, path in modules.items():
        for target, line in _imports(mod, path, names):
            if target in names and target != mod:
                graph[mod].add(target)
            top = target.split(".")[0]
            if top in ROS_MODULES and _layer(mod) != "ros":
                ros_imports.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{line} imports {target}")
    return graph, ros_imports


def test_every_package_is_in_the_layer_order():
    packages = {_layer(m) for m in _modules()}
    assert packages <= set(LAYERS), f"add to LAYERS and docs/layout.md: {sorted(packages - set(LAYERS))}"


def find_upward(graph: dict[str, set[str]]) -> list[str]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    return sorted(
        f"{src} -> {dst}"
        for src, dsts in graph.items()
        for dst in dsts
        if _layer(dst) != "__init__" and rank[_layer(dst)] > rank[_layer(src)]
    )


def find_cycles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1 = on the DFS path, 2 = done
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return cycles


def test_imports_only_go_down():
    upward = find_upward(_graph()[0])
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_module_cycles():
    cycles = find_cycles(_graph()[0])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_ros_imports_rclpy_and_messages():
    _, ros_imports = _graph()
    assert not ros_imports, "\n".join(ros_imports)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above are not vacuous: a planted cycle and an upward import are found."""
    pkg = tmp_path / "netvlad_ros"
    (pkg / "model").mkdir(parents=True)
    (pkg / "ros").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "__init__.py").write_text("")
    (pkg / "model" / "a.py").write_text("from . import b\n")
    (pkg / "model" / "b.py").write_text("def f():\n    from .a import x\n    from ..ros import node\n")
    (pkg / "ros" / "__init__.py").write_text("")
    (pkg / "ros" / "node.py").write_text("import rclpy\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE_DIR", pkg)
    graph, ros_imports = _graph()
    assert find_cycles(graph) == ["netvlad_ros.model.a -> netvlad_ros.model.b -> netvlad_ros.model.a"]
    assert find_upward(graph) == ["netvlad_ros.model.b -> netvlad_ros.ros.node"]  # a function-level import
    assert ros_imports == []  # rclpy imported from ros/: allowed
    (pkg / "model" / "c.py").write_text("from rclpy.node import Node\n")
    assert _graph()[1] == ["netvlad_ros/model/c.py:1 imports rclpy.node"]
