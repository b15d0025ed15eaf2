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

    def interrupt(self, timeout: float) -> int:
        """Ctrl-C (SIGINT to the group) and the exit status, waiting up to ``timeout`` s (for a
        clean shutdown that has work to finish, e.g. a map save; ``stop`` kills after 3 s)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        return self.wait(timeout)

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


# ---------------------------------------------------------------- netvlad_localizer node fixtures


def node_map_positions(n: int):
    """Positions (n, 3) of the places of :func:`node_map`: 10 m apart in x, zig-zag 4 m in y."""
    import numpy as np

    i = np.arange(n, dtype=np.float64)
    return np.stack([10.0 * i, 4.0 * (i % 2), np.zeros(n)], axis=1)


@pytest.fixture(scope="session")
def node_map(tmp_path_factory: pytest.TempPathFactory, small_model: Path, scenes: list) -> dict:
    """A real map of the twelve ``scenes`` (real DescriptorExtractor on ``small_model``), saved to tmp.

    Keyframe ``i`` (id ``i``) is scene ``i`` at :func:`node_map_positions` ``[i]``, stamp ``1000 + i``,
    with its ORB features (as build-map stores them).
    Returns ``{"path", "model", "positions", "descriptors"}``.
    """
    import numpy as np

    from netvlad_ros.mapdb import Keyframe, MapDatabase
    from netvlad_ros.model import DescriptorExtractor
    from netvlad_ros.recognition.features import FeatureExtractor

    ex = DescriptorExtractor(small_model, device="cpu")
    desc = ex(scenes)
    pos = node_map_positions(len(scenes))
    db = MapDatabase.create(ex.dim, ex.fingerprint)
    kfs = [
        Keyframe(stamp=1000.0 + i, frame_id="map", position=pos[i], source=f"scene{i}")
        for i in range(len(scenes))
    ]
    fx = FeatureExtractor()  # maps store local features (what build-map does): places verify
    ids = db.add(kfs, desc, features=[fx.extract(img) for img in scenes])
    assert list(ids) == list(range(len(scenes)))
    path = tmp_path_factory.mktemp("node_map") / "map"
    db.save(path)
    return {"path": path, "model": small_model, "positions": pos, "descriptors": np.asarray(desc)}


class NodeClient:
    """The test side of a running ``netvlad_localizer``: publishers for its inputs, subscribers for
    its outputs (kept in lists), service and parameter clients. Everything goes over real DDS."""

    def __init__(self, ros: RosHarness, namespace: str = "", compressed: bool = False, name: str = "client"):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from nav_msgs.msg import Odometry
        from rcl_interfaces.srv import GetParameters, SetParameters
        from sensor_msgs.msg import CompressedImage, Image, NavSatFix, PointCloud2
        from std_srvs.srv import SetBool, Trigger
        from visualization_msgs.msg import MarkerArray

        from netvlad_ros.ros.qos import latched_qos, qos_from_name

        self.ros = ros
        ns = namespace.rstrip("/")
        self.fqn = f"{ns}/netvlad_localizer"
        self.node = ros.node(name)
        n = self.node
        reliable = qos_from_name("reliable", depth=100)
        self.compressed = compressed
        self.image_pub = n.create_publisher(
            CompressedImage if compressed else Image,
            f"{ns}/image/compressed" if compressed else f"{ns}/image",
            reliable,
        )
        self.odom_pub = n.create_publisher(Odometry, f"{ns}/odom", reliable)
        self.fix_pub = n.create_publisher(NavSatFix, f"{ns}/fix", reliable)
        self.hypotheses: list = []
        self.poses: list = []
        self.loop_closures: list = []
        self.keyframes: list = []
        self.markers: list = []
        self.diagnostics: list[dict[str, str]] = []
        n.create_subscription(PointCloud2, f"{self.fqn}/hypotheses", self.hypotheses.append, reliable)
        n.create_subscription(PoseWithCovarianceStamped, f"{self.fqn}/pose", self.poses.append, reliable)
        n.create_subscription(PointCloud2, f"{self.fqn}/loop_closures", self.loop_closures.append, reliable)
        n.create_subscription(PointCloud2, f"{self.fqn}/map_keyframes", self.keyframes.append, latched_qos(1))
        n.create_subscription(MarkerArray, f"{self.fqn}/markers", self.markers.append, reliable)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, reliable)
        self.save_map = n.create_client(Trigger, f"{self.fqn}/save_map")
        self.reload_map = n.create_client(Trigger, f"{self.fqn}/reload_map")
        self.set_slam_mode = n.create_client(SetBool, f"{self.fqn}/set_slam_mode")
        self.set_parameters_client = n.create_client(SetParameters, f"{self.fqn}/set_parameters")
        self.get_parameters_client = n.create_client(GetParameters, f"{self.fqn}/get_parameters")

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.name.startswith(self.fqn + ":"):
                d = {kv.key: kv.value for kv in st.values}
                d["_level"] = st.level
                self.diagnostics.append(d)

    def wait_ready(self, child: Child, timeout: float = 120.0) -> None:
        """Until the node has published diagnostics and subscribed to our image topic."""
        ok = self.ros.spin_until(
            lambda: (
                (self.diagnostics and self.image_pub.get_subscription_count() > 0)
                or child.proc.poll() is not None
            ),
            timeout,
        )
        assert ok and child.proc.poll() is None, f"node did not become ready:\n{child.stderr_tail()}"

    def diag(self, fresh_after: int | None = None, timeout: float = 10.0) -> dict[str, str]:
        """The newest diagnostics values (after ``fresh_after`` messages had arrived, if given)."""
        n0 = len(self.diagnostics) if fresh_after is None else fresh_after
        assert self.ros.spin_until(lambda: len(self.diagnostics) > n0, timeout), "no fresh diagnostics"
        return self.diagnostics[-1]

    def send_image(self, bgr, stamp: float, frame_id: str = "camera") -> None:
        from netvlad_ros.ros.conversions import bgr_to_compressed_msg, bgr_to_image_msg

        if self.compressed:
            self.image_pub.publish(bgr_to_compressed_msg(bgr, "jpeg", stamp, frame_id, quality=95))
        else:
            self.image_pub.publish(bgr_to_image_msg(bgr, "bgr8", stamp, frame_id))

    def send_odom(self, stamp: float, position, quat=(0.0, 0.0, 0.0, 1.0), frame_id: str = "odom") -> None:
        from nav_msgs.msg import Odometry

        from netvlad_ros.ros.conversions import sec_to_stamp

        m = Odometry()
        m.header.stamp = sec_to_stamp(stamp)
        m.header.frame_id = frame_id
        p = m.pose.pose.position
        p.x, p.y, p.z = (float(v) for v in position)
        o = m.pose.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in quat)
        self.odom_pub.publish(m)

    def wait_for(self, items: list, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        assert self.ros.spin_until(predicate, timeout), (
            f"timed out waiting for {what} ({len(items)} received)"
        )

    def hypotheses_for(self, stamp_ns: int, timeout: float = 60.0):
        """The ~/hypotheses table (numpy rows) whose header stamp is ``stamp_ns``."""
        from netvlad_ros.ros.conversions import stamp_to_ns
        from netvlad_ros.ros.tables import HYPOTHESIS_DTYPE, pointcloud2_to_array

        def find():
            return next((m for m in self.hypotheses if stamp_to_ns(m.header.stamp) == stamp_ns), None)

        self.wait_for(self.hypotheses, lambda: find() is not None, timeout, f"hypotheses at {stamp_ns}")
        msg = find()
        return msg, pointcloud2_to_array(msg, HYPOTHESIS_DTYPE)

    def call(self, client, request, timeout: float = 30.0):
        assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
        fut = client.call_async(request)
        assert self.ros.spin_until(fut.done, timeout), f"service {client.srv_name} did not answer"
        return fut.result()

    def set_params(self, **values):
        """Set parameters (``localizer__top_k=5`` means ``localizer.top_k``); returns the SetParametersResults."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        req = SetParameters.Request()
        req.parameters = [
            Parameter(k.replace("__", "."), value=v).to_parameter_msg() for k, v in values.items()
        ]
        return self.call(self.set_parameters_client, req).results

    def get_params(self, *names: str) -> list:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        res = self.call(self.get_parameters_client, GetParameters.Request(names=list(names)))
        return [parameter_value_to_python(v) for v in res.values]


def _param_arg(name: str, value) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"{name}:={value}"


@pytest.fixture
def start_node(ros_child: Callable[..., Child]) -> Callable[..., Child]:
    """``start_node(params: dict, namespace="", name=None, env=None)``: run ``localize_node`` in a child
    process (``python -m netvlad_ros.ros.localize_node --ros-args ...``) with ``-p`` per parameter."""

    def start(params: dict, namespace: str = "", name: str | None = None, env: dict | None = None) -> Child:
        args = ["-m", "netvlad_ros.ros.localize_node", "--ros-args"]
        if namespace:
            args += ["-r", f"__ns:={namespace}"]
        for k, v in params.items():
            args += ["-p", _param_arg(k, v)]
        return ros_child(args, env=env, name=name)

    return start


@pytest.fixture
def node_client(ros: RosHarness) -> Callable[..., NodeClient]:
    """``node_client(namespace="", compressed=False, name="client")``: a :class:`NodeClient` in ``ros``."""

    def make(namespace: str = "", compressed: bool = False, name: str = "client") -> NodeClient:
        return NodeClient(ros, namespace=namespace, compressed=compressed, name=name)

    return make
