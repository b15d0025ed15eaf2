"""Fixtures for honest ROS 2 integration tests (real rclpy, real Fast DDS, real processes).

Isolation (session-wide, autouse): a random ``ROS_DOMAIN_ID`` in 1..101 (Linux-safe
ports, never the default 0), ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (discovery
stays on this host; ``ROS_LOCALHOST_ONLY`` is ignored in Kilted), ``ROS_LOG_DIR`` in a
temporary directory, ``RMW_IMPLEMENTATION=rmw_fastrtps_cpp``, and no inherited
``FASTDDS_DEFAULT_PROFILES_FILE`` (tests that want the profile pass it to a child).
The variables are set in ``os.environ`` before any test calls ``rclpy.init`` and are
passed to child processes.

Fixtures:

- ``ros_env``: the isolation variables (dict).
- ``ros``: a :class:`RosHarness` with its own rclpy ``Context`` (init before the test,
  nodes destroyed and context shut down after), ``ros.node(name)`` and
  ``ros.spin_until(predicate, timeout)``.
- ``ros_child``: ``ros_child(args, env=...)`` starts ``sys.executable *args`` in its own
  process group with the isolation environment; every child still running at
  teardown is stopped (SIGINT, then SIGKILL to the whole group).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

_ISOLATION_VARS = (
    "ROS_DOMAIN_ID",
    "ROS_AUTOMATIC_DISCOVERY_RANGE",
    "ROS_STATIC_PEERS",
    "ROS_LOG_DIR",
    "RMW_IMPLEMENTATION",
    "FASTDDS_DEFAULT_PROFILES_FILE",
    "FASTDDS_BUILTIN_TRANSPORTS",
    "ROS_LOCALHOST_ONLY",
)


@pytest.fixture(scope="session", autouse=True)
def ros_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Isolate every ROS test of this session on a random domain, on localhost, with logs in tmp."""
    domain = random.SystemRandom().randint(1, 101)
    env = {
        "ROS_DOMAIN_ID": str(domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOG_DIR": str(tmp_path_factory.mktemp("ros_log")),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }
    saved = {k: os.environ.get(k) for k in _ISOLATION_VARS}
    for k in _ISOLATION_VARS:
        os.environ.pop(k, None)
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class RosHarness:
    """One rclpy Context for one test, its nodes, and a spin-until helper."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list = []

    def node(self, name: str):
        """Create a node in this context; it is spun by :meth:`spin_until` and destroyed at teardown."""
        from rclpy.node import Node

        n = Node(name, context=self.context)
        self.nodes.append(n)
        self.executor.add_node(n)
        return n

    def spin_until(self, predicate: Callable[[], bool], timeout: float, period: float = 0.05) -> bool:
        """Spin all nodes until ``predicate()`` is true (returns True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            self.executor.spin_once(timeout_sec=period)

    def close(self) -> None:
        import rclpy

        for n in self.nodes:
            self.executor.remove_node(n)
            n.destroy_node()
        self.executor.shutdown(timeout_sec=1.0)
        if self.context.ok():
            rclpy.shutdown(context=self.context)


@pytest.fixture
def ros(ros_env: dict[str, str]) -> Iterator[RosHarness]:
    """rclpy initialised on a fresh Context for this test only."""
    harness = RosHarness()
    try:
        yield harness
    finally:
        harness.close()


class Child:
    """A child Python process in its own process group, output captured to files."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path, name: str) -> None:
        self.name = name
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: killpg reaches any grandchildren
            )

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr_tail(self, n: int = 2000) -> str:
        return self.stderr_path.read_text(errors="replace")[-n:]

    def wait_for_line(self, text: str, timeout: float) -> bool:
        """Poll stdout until a line equal to ``text`` appears (True), the child exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stdout().splitlines():
                return True
            if self.proc.poll() is not None:
                return text in self.stdout().splitlines()
            time.sleep(0.05)
        return False

    def wait(self, timeout: float) -> int:
        """Wait for exit; on timeout the group is killed and AssertionError raised with stderr."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"child {self.name} did not exit in {timeout} s:\n{self.stderr_tail()}"
            ) from None

    def json_result(self) -> dict:
        """The last stdout line parsed as JSON (children print their result that way)."""
        lines = [ln for ln in self.stdout().splitlines() if ln.startswith("{")]
        if not lines:
            raise AssertionError(f"child {self.name} printed no JSON result:\n{self.stderr_tail()}")
        return json.loads(lines[-1])

    def stop(self) -> None:
        """SIGINT the group, then SIGKILL it if it is still there after 3 s."""
        if self.proc.poll() is not None:
            return
        for sig, grace in ((signal.SIGINT, 3.0), (signal.SIGKILL, 3.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue


@pytest.fixture
def ros_child(ros_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Factory: ``ros_child(args, env=None, name=None)`` starts ``sys.executable *args``.

    The child gets the isolation variables, ``PYTHONPATH`` with the repository root,
    and ``env`` on top (a value of None removes the variable).
    """
    children: list[Child] = []

    def start(args: list[str], env: dict[str, str | None] | None = None, name: str | None = None) -> Child:
        child_env = dict(os.environ)
        child_env.update(ros_env)
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        child_env["PYTHONUNBUFFERED"] = "1"
        for k, v in (env or {}).items():
            if v is None:
                child_env.pop(k, None)
            else:
                child_env[k] = v
        child = Child(args, child_env, tmp_path, name or f"child{len(children)}")
        children.append(child)
        return child

    try:
        yield start
    finally:
        for c in children:
            c.stop()
