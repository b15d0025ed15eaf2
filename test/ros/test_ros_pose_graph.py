"""pose_graph_node in a child process, fed over real DDS the way localize_node feeds it.

The test publishes what a localize node in slam mode publishes: odometry (``odom``), the
keyframe table (``netvlad_localizer/map_keyframes``, every keyframe so far, every 10
keyframes) and loop-closure tables (``netvlad_localizer/loop_closures``, when the query
keyframe is made, i.e. before the keyframe table lists it). World: the seeded loop of
netvlad_ros.posegraph.simulation (200 keyframes 1 m apart, drifting odometry, 21 closures
with 5 cm / 0.5 deg noise). What comes back is read from the node's topics only.
Margins beside the asserts were measured on the 2-vCPU EPYC with the default parameters.
"""

from __future__ import annotations

import math
import signal
import time

import numpy as np
import pytest

from netvlad_ros.posegraph import ate_rmse, invert, position_quaternion
from netvlad_ros.posegraph.simulation import closures_from_truth, drifting_odometry, square_loop

pytestmark = pytest.mark.ros

TRUTH = square_loop()
STAMPS = 1_700_000_000.0 + 0.1 * np.arange(len(TRUTH))
CONFIDENT = np.diag([0.05**2] * 3 + [math.radians(0.5) ** 2] * 3)
NODE = ["-m", "netvlad_ros.ros.pose_graph_node", "--ros-args"]


def closure_rows(closures: list[tuple[int, int, np.ndarray, np.ndarray, bool]]) -> np.ndarray:
    """LOOP_CLOSURE_DTYPE rows as the localize node fills them: (match, query, T, covariance, scale_known);
    T is a 4x4 matrix or the (position, quaternion) to write."""
    from netvlad_ros.ros.tables import LOOP_CLOSURE_DTYPE

    rows = np.zeros(len(closures), LOOP_CLOSURE_DTYPE)
    for r, (match, query, pose, cov, scale_known) in enumerate(closures):
        rows[r]["match_id"], rows[r]["query_id"] = match, query
        rows[r]["match_stamp"], rows[r]["query_stamp"] = STAMPS[min(match, len(STAMPS) - 1)], STAMPS[0]
        rows[r]["score"], rows[r]["inliers"], rows[r]["verified"] = 0.9, 100, 1
        rows[r]["scale_known"] = int(scale_known)
        if isinstance(pose, tuple):  # (position, quaternion) as written, e.g. a non-unit quaternion
            t, q = pose
        elif np.isnan(pose).any():
            t, q = np.full(3, np.nan), np.full(4, np.nan)
        else:
            t, q = position_quaternion(pose)
        rows[r]["tx"], rows[r]["ty"], rows[r]["tz"] = t
        rows[r]["qx"], rows[r]["qy"], rows[r]["qz"], rows[r]["qw"] = q
        rows[r]["covariance"] = np.asarray(cov, dtype=np.float64).reshape(36)
    return rows


class GraphClient:
    """The test side of one pose_graph_node: the localize node's outputs in, the graph's outputs kept."""

    def __init__(self, ros, namespace: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped
        from nav_msgs.msg import Odometry, Path
        from sensor_msgs.msg import PointCloud2
        from visualization_msgs.msg import MarkerArray

        from netvlad_ros.ros.qos import latched_qos, qos_from_name

        self.ros = ros
        self.fqn = f"{namespace}/netvlad_pose_graph"
        n = ros.node(f"client{namespace.replace('/', '_')}")
        reliable = qos_from_name("reliable", 100)
        self.odom_pub = n.create_publisher(Odometry, f"{namespace}/odom", reliable)
        self.kf_pub = n.create_publisher(
            PointCloud2, f"{namespace}/netvlad_localizer/map_keyframes", latched_qos()
        )
        self.lc_pub = n.create_publisher(
            PointCloud2, f"{namespace}/netvlad_localizer/loop_closures", reliable
        )
        self.paths: list = []
        self.poses: list = []
        self.transforms: list = []
        self.markers: list = []
        self.diagnostics: list[dict[str, str]] = []
        n.create_subscription(Path, f"{self.fqn}/path", self.paths.append, latched_qos())
        n.create_subscription(PoseWithCovarianceStamped, f"{self.fqn}/pose", self.poses.append, reliable)
        n.create_subscription(
            TransformStamped, f"{self.fqn}/map_to_odom", self.transforms.append, latched_qos()
        )
        n.create_subscription(MarkerArray, f"{self.fqn}/markers", self.markers.append, latched_qos())
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, reliable)

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.name.startswith(self.fqn + ":"):
                self.diagnostics.append({kv.key: kv.value for kv in st.values} | {"_level": st.level})

    def wait_ready(self, child, timeout: float = 60.0) -> None:
        def ready() -> bool:
            pubs = (self.odom_pub, self.kf_pub, self.lc_pub)
            return bool(self.diagnostics) and all(p.get_subscription_count() > 0 for p in pubs)

        ok = self.ros.spin_until(lambda: ready() or child.proc.poll() is not None, timeout)
        assert ok and child.proc.poll() is None, (
            f"pose_graph_node did not become ready:\n{child.stderr_tail()}"
        )

    def odom(self, stamp: float, pose: np.ndarray, frame: str = "odom") -> None:
        from nav_msgs.msg import Odometry

        from netvlad_ros.ros.conversions import sec_to_stamp

        m = Odometry()
        m.header.stamp = sec_to_stamp(stamp)
        m.header.frame_id = frame
        p, q = position_quaternion(pose)
        m.pose.pose.position.x, m.pose.pose.position.y, m.pose.pose.position.z = (float(v) for v in p)
        o = m.pose.pose.orientation
        o.x, o.y, o.z, o.w = (float(v) for v in q)
        self.odom_pub.publish(m)

    def keyframes(self, ids, stamps, positions) -> None:
        from netvlad_ros.ros.tables import KEYFRAME_DTYPE, array_to_pointcloud2

        rows = np.zeros(len(ids), KEYFRAME_DTYPE)
        rows["keyframe_id"], rows["stamp"] = ids, stamps
        rows["x"], rows["y"], rows["z"] = np.asarray(positions, dtype=np.float64).reshape(-1, 3).T
        self.kf_pub.publish(array_to_pointcloud2(rows, "map", float(np.nanmax(stamps))))

    def loop_closures(self, closures) -> None:
        from netvlad_ros.ros.tables import array_to_pointcloud2

        self.lc_pub.publish(array_to_pointcloud2(closure_rows(closures), "map", 0.0))

    def diag_until(self, predicate, timeout: float = 30.0) -> dict[str, str]:
        ok = self.ros.spin_until(lambda: bool(self.diagnostics) and predicate(self.diagnostics[-1]), timeout)
        assert ok, f"diagnostics never matched; last: {self.diagnostics[-1] if self.diagnostics else None}"
        return self.diagnostics[-1]


def drive(clients: dict[str, GraphClient], odom: np.ndarray, closures: dict[str, dict[int, list]]) -> None:
    """Publish the drive to every client: odometry per keyframe, closures at their query, tables every 10."""
    for i in range(len(TRUTH)):
        for name, c in clients.items():
            c.odom(STAMPS[i], odom[i])
            if i in closures[name]:
                c.loop_closures(closures[name][i])
            if i % 10 == 9:
                c.keyframes(np.arange(i + 1), STAMPS[: i + 1], odom[: i + 1, :3, 3])
        next(iter(clients.values())).ros.spin_until(lambda: False, 0.01)  # pace: ~100 keyframes/s


def path_array(msg) -> tuple[np.ndarray, np.ndarray]:
    """(stamps, positions) of a nav_msgs/Path."""
    from netvlad_ros.ros.conversions import stamp_to_sec

    stamps = np.array([stamp_to_sec(p.header.stamp) for p in msg.poses])
    pos = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in msg.poses])
    return stamps, pos


def pose_matrix(position, orientation) -> np.ndarray:
    from netvlad_ros.posegraph import as_matrix

    return as_matrix(
        (
            [position.x, position.y, position.z],
            [orientation.x, orientation.y, orientation.z, orientation.w],
        )
    )


def test_drift_is_corrected_and_one_wrong_closure_does_not_bend_the_path(ros, ros_child):
    """Two nodes (namespaces /clean and /wrong) get the same drive; /wrong also gets one confident
    closure claiming keyframes 80 and 190 (about 40 m apart) are the same place."""
    seed = 0
    odom = drifting_odometry(TRUTH, seed=seed)
    sim = closures_from_truth(TRUTH, seed=seed)
    clean = {c.query_key: [(c.match_key, c.query_key, c.T_match_query, c.covariance, True)] for c in sim}
    wrong = {k: list(v) for k, v in clean.items()}
    wrong.setdefault(190, []).append((80, 190, np.eye(4), CONFIDENT, True))
    children = {ns: ros_child([*NODE, "-r", f"__ns:=/{ns}"], name=ns) for ns in ("clean", "wrong")}
    clients = {ns: GraphClient(ros, f"/{ns}") for ns in children}
    for ns, c in clients.items():
        c.wait_ready(children[ns])
    drive(clients, odom, {"clean": clean, "wrong": wrong})
    for c in clients.values():  # the last keyframes (191-199) come with a final table
        c.keyframes(np.arange(len(TRUTH)), STAMPS, odom[:, :3, 3])

    ate_odom = ate_rmse(odom, TRUTH, align=True)
    results = {}
    for ns, c in clients.items():
        n_closures = len(sim) + (ns == "wrong")
        d = c.diag_until(lambda d, n=n_closures: d["keyframes"] == "200" and d["loop_closures"] == str(n))
        assert d["rejected_total"] == "0" and d["pending_closures"] == "0", d
        assert d["odometry_received"] == "200", d  # no odometry lost on the BEST_EFFORT subscription
        assert c.ros.spin_until(lambda c=c: c.paths and len(c.paths[-1].poses) == len(TRUTH), 10.0)
        stamps, positions = path_array(c.paths[-1])
        np.testing.assert_allclose(stamps, STAMPS, atol=1e-6)
        results[ns] = (ate_rmse(positions, TRUTH, align=True), d)

    ate_clean, d_clean = results["clean"]
    ate_wrong, d_wrong = results["wrong"]
    print(
        f"aligned ATE: odometry {ate_odom:.4f} m, clean {ate_clean:.4f} m, one wrong closure {ate_wrong:.4f} m"
    )
    # measured: odometry 2.213 m, optimised 0.233 m (ratio 0.105; the same as the in-process
    # LiveGraph); issue 11 asks <= 25 % and < 1 m
    assert ate_clean < 0.2 * ate_odom and ate_clean < 0.5, (ate_clean, ate_odom)
    # measured: 0.2337 m with the wrong closure, 1.002 x clean; issue 11 asks <= 1.2 x
    assert ate_wrong < 1.1 * ate_clean, (ate_wrong, ate_clean)
    assert (d_clean["closures_downweighted"], d_wrong["closures_downweighted"]) == ("0", "1")
    assert d_wrong["closures_accepted"] == str(len(sim))

    # ~/pose and ~/map_to_odom: the newest odometry pose corrected, consistent with the path
    for ns, c in clients.items():
        last = c.paths[-1].poses[-1].pose
        final = pose_matrix(last.position, last.orientation)

        def latest_pose(c=c) -> np.ndarray | None:
            return (
                pose_matrix(c.poses[-1].pose.pose.position, c.poses[-1].pose.pose.orientation)
                if c.poses
                else None
            )

        def latest_tf(c=c) -> np.ndarray | None:
            if not c.transforms:
                return None
            return pose_matrix(c.transforms[-1].transform.translation, c.transforms[-1].transform.rotation)

        def settled(c=c, final=final) -> bool:
            p, t = latest_pose(c), latest_tf(c)
            n = len(c.markers[-1].markers[0].points) if c.markers else 0
            return p is not None and t is not None and np.allclose(p, final, atol=1e-6) and n == 2 * len(sim)

        assert c.ros.spin_until(settled, 10.0), ns
        np.testing.assert_allclose(latest_tf() @ odom[-1], final, atol=1e-6)
        tf = c.transforms[-1]
        assert (tf.header.frame_id, tf.child_frame_id) == ("map", "odom")
        cov = np.array(c.poses[-1].pose.covariance).reshape(6, 6)
        assert np.all(np.linalg.eigvalsh(cov) > 0), cov  # the newest keyframe's marginal
        markers = {m.ns: m for m in c.markers[-1].markers}
        if ns == "wrong":
            a, b = markers["downweighted"].points
            ends = np.array([[a.x, a.y], [b.x, b.y]])
            _, positions = path_array(c.paths[-1])
            np.testing.assert_allclose(ends, positions[[80, 190], :2], atol=1e-6)
        else:
            assert markers["downweighted"].action == markers["downweighted"].DELETE


def test_bad_input_is_counted_by_reason_and_never_stops_the_node(ros, ros_child):
    from sensor_msgs.msg import PointCloud2, PointField

    child = ros_child(NODE, name="pose_graph")
    c = GraphClient(ros, "")
    c.wait_ready(child)
    for k in range(12):
        c.odom(100.0 + k, TRUTH[k])
    bad = np.eye(4)
    bad[0, 3] = math.nan
    c.odom(112.0, bad)  # NaN position
    c.odom(80.0, TRUTH[0], frame="odom")  # time going backwards: the buffer restarts from it
    for k in range(12):  # ... and this drive goes on
        c.odom(100.0 + k + 0.5, TRUTH[k])
    c.diag_until(lambda d: d["odometry_received"] == "26")  # before the table: its poses are fixed
    not_pd = CONFIDENT.copy()
    not_pd[3, 3] = -1.0
    c.loop_closures(
        [
            (0, 9, np.full((4, 4), np.nan), CONFIDENT, True),  # no relative pose
            (0, 9, ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0]), CONFIDENT, True),  # quaternion of norm 2
            (0, 9, np.eye(4), np.full(36, np.nan), True),  # no covariance
            (0, 9, np.eye(4), not_pd, True),  # not positive definite
            (3, 9, np.eye(4), CONFIDENT, True),  # keyframe 3 will be left out of the table
        ]
    )
    # table: keyframe 0 from an older map (no odometry then), 1, 2, 4..11 (no 3), one with a NaN stamp
    ids = [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    stamps = [10.0, 101.5, 102.5, *(100.5 + k for k in range(4, 12)), math.nan]
    c.keyframes(ids, stamps, np.zeros((len(ids), 3)))
    c.diag_until(lambda d: d["keyframe_tables"] == "1")  # latched depth 1: the next table would replace it
    wrong_fields = PointCloud2(
        height=1,
        width=1,
        point_step=4,
        row_step=4,
        fields=[PointField(name="keyframe_id", offset=0, datatype=PointField.FLOAT32, count=1)],
        data=b"\x00" * 4,
    )
    c.kf_pub.publish(wrong_fields)  # keyframe_id as FLOAT32, no stamp
    c.lc_pub.publish(PointCloud2())  # no fields at all
    d = c.diag_until(lambda d: d["rejected.table_invalid"] == "2" and d["keyframes"] == "10")
    expected = {
        "odom_invalid": 1,
        "odom_time_backwards": 1,
        "keyframe_invalid": 1,
        "keyframe_outside_odometry": 1,
        "closure_without_pose": 1,
        "closure_pose_invalid": 1,
        "closure_without_covariance": 1,
        "closure_covariance_invalid": 1,
        "closure_unknown_keyframe": 1,
        "table_invalid": 2,
        "internal_error": 0,
    }
    got = {k: int(d[f"rejected.{k}"]) for k in expected}
    assert got == expected, d
    assert d["rejected_total"] == str(sum(expected.values()))
    assert d["_level"] == b"\x00"  # OK: bad input is not a node fault
    # still working: a right closure between two keyframes it has (odometry is the truth here)
    c.loop_closures([(1, 9, invert(TRUTH[1]) @ TRUTH[9], CONFIDENT, True)])
    d = c.diag_until(lambda d: d["loop_closures"] == "1")
    assert d["closures_accepted"] == "1" and child.proc.poll() is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_stop_the_node_cleanly(ros, ros_child, sig):
    child = ros_child(NODE, name=f"pose_graph_{sig.name}")
    c = GraphClient(ros, "")
    c.wait_ready(child)
    for k in range(3):
        c.odom(100.0 + k, TRUTH[k])
    c.keyframes([0, 1, 2], [100.0, 101.0, 102.0], TRUTH[:3, :3, 3])
    c.diag_until(lambda d: d["keyframes"] == "3")
    child.proc.send_signal(sig)
    assert child.wait(timeout=20) == 0
    err = child.stderr_tail()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


def test_help_and_bad_parameters(ros_child):
    helped = ros_child(["-m", "netvlad_ros.ros.pose_graph_node", "--help"], name="help")
    assert helped.wait(timeout=60) == 0
    text = helped.stdout()
    assert 'graph.loop_kernel (default "cauchy"; one of none, huber, cauchy, geman_mcclure, dcs;)' in text
    assert "odom_max_age_s (default 0.5; in [0, 3600];) [read-only]" in text
    cases = {
        "kernel": (["-p", "graph.loop_kernel:=tls"], "graph.loop_kernel"),
        "iterations": (["-p", "graph.closure_iterations:=0"], "closure_iterations"),
        "buffer": (["-p", "odom_buffer_size:=3"], "odom_buffer_size"),
    }
    children = {k: ros_child([*NODE, *args], name=k) for k, (args, _) in cases.items()}
    for k, child in children.items():
        started = time.monotonic()
        assert child.wait(timeout=60) == 2, k
        err = child.stderr_tail()
        assert cases[k][1] in err and "Traceback" not in err, (k, err, time.monotonic() - started)


@pytest.mark.slow
def test_localize_node_feeds_pose_graph_node(start_node, node_client, ros, ros_child, scenes, small_model):
    """The two real nodes in one namespace, as slam.launch.py starts them: the localizer's keyframes
    become the graph's keyframes at the odometry of their stamps, and every loop closure it
    publishes is accounted for by the graph (used, or counted with a reason)."""
    from netvlad_ros.ros.tables import KEYFRAME_DTYPE, LOOP_CLOSURE_DTYPE, pointcloud2_to_array

    localizer = start_node(
        {
            "mode": "slam",
            "model_path": str(small_model),
            "device": "cpu",
            "diagnostics_period_s": 0.25,
            "loop_closure.exclusion_seconds": 3.0,
            "loop_closure.min_score": 0.5,  # the small test model: other views of a place ~0.85
            "keyframe.distance_m": 1.0,
        },
        namespace="/pair",
        name="localizer",
    )
    graph = ros_child([*NODE, "-r", "__ns:=/pair"], name="pose_graph")
    client = node_client(namespace="/pair")
    pg = GraphClient(ros, "/pair")
    client.wait_ready(localizer)
    pg.wait_ready(graph)
    assert ros.spin_until(lambda: client.odom_pub.get_subscription_count() >= 2, 10.0)

    order = [0, 2, 3, 4, 6, 9, 0, 2]  # six places 5 m apart, then the first two again
    positions = [(5.0 * k, 0.0, 0.0) for k in range(6)] + [(0.2, 0.2, 0.0), (5.2, 0.2, 0.0)]
    stamps = [100.0 + 2.0 * k for k in range(len(order))]
    for k, (scene, pos, t) in enumerate(zip(order, positions, stamps, strict=True)):
        client.send_odom(t - 0.1, np.subtract(pos, (0.05, 0, 0)))
        client.send_odom(t + 0.1, np.add(pos, (0.05, 0, 0)))
        ros.spin_until(lambda: False, 0.1)
        client.send_image(scenes[scene], t)

        def size(k=k) -> bool:
            return (
                bool(client.keyframes) and len(pointcloud2_to_array(client.keyframes[-1], KEYFRAME_DTYPE)) > k
            )

        client.wait_for(client.keyframes, size, 60.0, f"keyframe {k}")

    d = pg.diag_until(lambda d: d["keyframes"] == str(len(order)) and d["pending_closures"] == "0")
    kf = pointcloud2_to_array(client.keyframes[-1], KEYFRAME_DTYPE)
    assert ros.spin_until(lambda: pg.paths and len(pg.paths[-1].poses) == len(order), 10.0)
    path_stamps, path_positions = path_array(pg.paths[-1])
    rows = [r for m in client.loop_closures for r in pointcloud2_to_array(m, LOOP_CLOSURE_DTYPE)]
    print(
        f"max |path - odometry| {np.abs(path_positions - positions).max():.3g} m; "
        f"{len(rows)} closures published, graph: {d['loop_closures']} used, {d['rejected_total']} rejected"
    )
    np.testing.assert_allclose(path_stamps, kf["stamp"], atol=1e-6)
    # the odometry interpolated at each image stamp; without a metric closure the graph moves
    # none of them (measured 9e-16 m; 2 closures published, both without a relative pose here:
    # no camera_info, so no metric verification)
    np.testing.assert_allclose(path_positions, positions, atol=1e-3)
    closure_rejects = sum(int(v) for k, v in d.items() if k.startswith("rejected.closure_"))
    assert int(d["loop_closures"]) + closure_rejects == len(rows), (d, len(rows))
    assert d["rejected.table_invalid"] == "0" and d["rejected.internal_error"] == "0"
    assert localizer.proc.poll() is None and graph.proc.poll() is None
