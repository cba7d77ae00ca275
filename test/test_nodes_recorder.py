"""The recorder at shutdown: messages DDS delivered before the signal reach the bag even when
the spin ended before their callbacks ran (run_graph drains the recorder, and only it)."""

from __future__ import annotations

import os
import signal
import time

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
rclpy = pytest.importorskip("rclpy")

from std_msgs.msg import String  # noqa: E402

from vlm2vla_ros import topics  # noqa: E402
from vlm2vla_ros.nodes.bringup import Graph, run_graph  # noqa: E402
from vlm2vla_ros.nodes.common import Shutdown, drain, qos_for  # noqa: E402
from vlm2vla_ros.nodes.recorder import RecorderNode  # noqa: E402
from vlm2vla_ros.recording import read_bag  # noqa: E402

pytestmark = [pytest.mark.ros]


@pytest.fixture
def ros():
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init()
    feeder = rclpy.create_node("recorder_feeder")
    yield feeder
    feeder.destroy_node()
    rclpy.shutdown()
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _publish_unspun(feeder, subscriber_count_of, texts):
    """Publish once the subscription is matched, then give DDS time to deliver (nobody spins the
    receiving node, so every message waits in its reader)."""
    pub = feeder.create_publisher(String, topics.TASK.name, qos_for(topics.TASK))
    deadline = time.monotonic() + 10
    while subscriber_count_of(pub) == 0:
        assert time.monotonic() < deadline, "the recorder never matched the feeder"
        time.sleep(0.05)
    time.sleep(0.5)  # matching is two-way
    for text in texts:
        pub.publish(String(data=text))
    time.sleep(1.0)


def test_run_graph_drains_the_recorder_before_it_closes_the_bag(ros, tmp_path):
    graph = Graph()
    graph.recorder = graph.add(RecorderNode(tmp_path / "bag", rollout_topics=(topics.TASK,)))
    sent = [f"task number {i}" for i in range(25)]
    _publish_unspun(ros, lambda pub: pub.get_subscription_count(), sent)
    shutdown = Shutdown()
    shutdown.event.set()  # as if SIGINT came before the spin took any of them
    run_graph(graph, shutdown=shutdown)
    assert [m.data for _, m in read_bag(tmp_path / "bag")[topics.TASK.name]] == sent


def test_drain_returns_once_nothing_waits(ros):
    got = []
    node = rclpy.create_node("drained")
    node.create_subscription(String, "/drain_test", lambda msg: got.append(msg.data), 10)
    try:
        pub = ros.create_publisher(String, "/drain_test", 10)
        deadline = time.monotonic() + 10
        while pub.get_subscription_count() == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        for i in range(5):
            pub.publish(String(data=str(i)))
        time.sleep(1.0)
        start = time.monotonic()
        assert drain(node, limit_s=5.0) == 5
        assert got == ["0", "1", "2", "3", "4"]
        assert drain(node, limit_s=5.0) == 0  # nothing left: returns at once, not at the limit
        assert time.monotonic() - start < 2.0
    finally:
        node.destroy_node()
