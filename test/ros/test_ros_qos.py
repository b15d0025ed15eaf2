"""netvlad_ros.ros.qos: profile contents, and the behaviour that matters, checked over real DDS."""

from __future__ import annotations

import pytest
from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy
from std_msgs.msg import String

from netvlad_ros.ros.qos import QOS_NAMES, latched_qos, qos_from_name


def test_named_profiles() -> None:
    s = qos_from_name("sensor_data")
    assert (s.reliability, s.durability, s.history, s.depth) == (
        ReliabilityPolicy.BEST_EFFORT,
        DurabilityPolicy.VOLATILE,
        HistoryPolicy.KEEP_LAST,
        5,
    )
    r = qos_from_name("reliable", depth=3)
    assert (r.reliability, r.durability, r.depth) == (
        ReliabilityPolicy.RELIABLE,
        DurabilityPolicy.VOLATILE,
        3,
    )
    assert qos_from_name("reliable").depth == 10
    d = qos_from_name("system_default")
    assert (d.reliability, d.durability, d.history) == (
        ReliabilityPolicy.SYSTEM_DEFAULT,
        DurabilityPolicy.SYSTEM_DEFAULT,
        HistoryPolicy.SYSTEM_DEFAULT,
    )
    d4 = qos_from_name("system_default", depth=4)
    assert (d4.history, d4.depth, d4.reliability) == (
        HistoryPolicy.KEEP_LAST,
        4,
        ReliabilityPolicy.SYSTEM_DEFAULT,
    )
    for name in ("latched", "transient_local", " Transient-Local "):
        p = qos_from_name(name)
        assert (p.reliability, p.durability, p.depth) == (
            ReliabilityPolicy.RELIABLE,
            DurabilityPolicy.TRANSIENT_LOCAL,
            1,
        )
    assert latched_qos(4).depth == 4
    assert set(QOS_NAMES) >= {"sensor_data", "reliable", "system_default"}


@pytest.mark.parametrize("name", ["best_effort", "", "sensor", "default", None, 3])
def test_unknown_names_raise(name) -> None:
    with pytest.raises(ValueError, match="QoS") as info:
        qos_from_name(name)
    if isinstance(name, str):
        assert "sensor_data" in str(info.value)  # the message lists the valid names


@pytest.mark.parametrize("depth", [0, -1, 2.5, True])
def test_bad_depth_raises(depth) -> None:
    with pytest.raises(ValueError, match="depth"):
        qos_from_name("reliable", depth=depth)
    with pytest.raises(ValueError, match="depth"):
        latched_qos(depth)


@pytest.mark.ros
def test_latched_reaches_late_subscriber_volatile_does_not(ros) -> None:
    pub_node, sub_node = ros.node("qos_pub"), ros.node("qos_sub")
    latched = pub_node.create_publisher(String, "/netvlad_test_qos/latched", qos_from_name("latched"))
    volatile = pub_node.create_publisher(String, "/netvlad_test_qos/volatile", qos_from_name("reliable"))
    latched.publish(String(data="map v1"))
    volatile.publish(String(data="gone"))
    got_latched: list[str] = []
    got_volatile: list[str] = []
    sub_node.create_subscription(
        String, "/netvlad_test_qos/latched", lambda m: got_latched.append(m.data), latched_qos()
    )
    v_sub = sub_node.create_subscription(
        String, "/netvlad_test_qos/volatile", lambda m: got_volatile.append(m.data), qos_from_name("reliable")
    )
    assert ros.spin_until(lambda: got_latched == ["map v1"], timeout=10)
    assert ros.spin_until(lambda: v_sub.get_publisher_count() == 1, timeout=10)
    ros.spin_until(lambda: bool(got_volatile), timeout=1.0)
    assert got_volatile == []


@pytest.mark.ros
def test_reliability_compatibility(ros) -> None:
    """sensor_data subscribers take RELIABLE publishers; RELIABLE subscribers never match BEST_EFFORT ones."""
    pub_node, sub_node = ros.node("compat_pub"), ros.node("compat_sub")
    rel_pub = pub_node.create_publisher(String, "/netvlad_test_qos/rel", qos_from_name("reliable"))
    be_pub = pub_node.create_publisher(String, "/netvlad_test_qos/be", qos_from_name("sensor_data"))
    from_rel: list[str] = []
    from_be: list[str] = []
    s1 = sub_node.create_subscription(
        String, "/netvlad_test_qos/rel", lambda m: from_rel.append(m.data), qos_from_name("sensor_data")
    )
    sub_node.create_subscription(
        String, "/netvlad_test_qos/be", lambda m: from_be.append(m.data), qos_from_name("reliable")
    )
    assert ros.spin_until(lambda: s1.get_publisher_count() == 1, timeout=10)

    def tick() -> None:
        rel_pub.publish(String(data="r"))
        be_pub.publish(String(data="b"))

    pub_node.create_timer(0.05, tick)
    assert ros.spin_until(lambda: len(from_rel) >= 5, timeout=10)
    ros.spin_until(lambda: bool(from_be), timeout=0.5)
    assert from_be == []
    assert be_pub.get_subscription_count() == 0  # incompatible QoS: never matched
