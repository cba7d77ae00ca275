"""The recorder at shutdown: messages DDS delivered before the signal reach the bag even when
the spin ended before their callbacks ran (run_graph drains the recorder, and only it), and a
chunk the shutdown cuts short reports its end before the bag closes."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
rclpy = pytest.importorskip("rclpy")

from std_msgs.msg import Bool, String  # noqa: E402

from vlm2vla_ros import topics  # noqa: E402
from vlm2vla_ros.nodes.bringup import Graph, run_graph  # noqa: E402
from vlm2vla_ros.nodes.common import EVENTS_QOS, Shutdown, drain, qos_for  # noqa: E402
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


def test_an_estop_from_a_volatile_publisher_is_in_the_bag(ros, tmp_path):
    """The executor stops for an e-stop from a plain `ros2 topic pub` (volatile); the bag must
    show it too, beside the latched ones, or a chunk ends "aborted: e-stop" with no stop recorded."""
    graph = Graph()
    graph.recorder = graph.add(RecorderNode(tmp_path / "bag", rollout_topics=(topics.ESTOP,)))
    volatile = ros.create_publisher(Bool, topics.ESTOP.name, EVENTS_QOS)
    latched = ros.create_publisher(Bool, topics.ESTOP.name, qos_for(topics.ESTOP))
    deadline = time.monotonic() + 10
    while volatile.get_subscription_count() == 0 or latched.get_subscription_count() == 0:
        assert time.monotonic() < deadline, "the recorder never matched the publishers"
        time.sleep(0.05)
    time.sleep(0.5)  # matching is two-way
    volatile.publish(Bool(data=True))
    latched.publish(Bool(data=False))
    time.sleep(1.0)
    shutdown = Shutdown()
    shutdown.event.set()
    run_graph(graph, shutdown=shutdown)
    assert sorted(m.data for _, m in read_bag(tmp_path / "bag")[topics.ESTOP.name]) == [False, True]


def test_a_callback_that_ends_the_spin_still_leaves_the_bag_whole(ros, tmp_path, monkeypatch):
    """A node's callback raises, which ends the spin: the error reaches the caller, and what DDS
    delivered before it is drained into the bag before the bag closes."""
    from vlm2vla_ros.nodes import bringup

    def failing_spin(nodes, shutdown, done):
        raise RuntimeError("a callback failed")

    monkeypatch.setattr(bringup, "spin_until", failing_spin)
    graph = Graph()
    graph.recorder = graph.add(RecorderNode(tmp_path / "bag", rollout_topics=(topics.TASK,)))
    sent = [f"task number {i}" for i in range(5)]
    _publish_unspun(ros, lambda pub: pub.get_subscription_count(), sent)
    with pytest.raises(RuntimeError, match="a callback failed"):
        run_graph(graph, shutdown=Shutdown())
    assert [m.data for _, m in read_bag(tmp_path / "bag")[topics.TASK.name]] == sent
    assert graph.nodes == []  # closed


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


def test_a_chunk_cut_short_by_the_shutdown_ends_in_the_bag(ros, tmp_path):
    """The spin ends mid-chunk: the robot is stopped, and the chunk's final event is published
    and drained into the bag before it closes (the rollout keeps how many steps ran)."""
    import threading

    from vlm2vla_ros.nodes.bringup import build_graph
    from vlm2vla_ros.sim.backend import SimBackend
    from vlm2vla_ros.sim.scene import make_scene

    backend = SimBackend(make_scene(1, "put_in")[0], time_scale=2.0)  # 8 steps of 3 cm take about 3.4 s
    graph = build_graph(None, "robot", sim=True, backend=backend, record_dir=str(tmp_path / "bag"),
                        overrides={"executor_node": {"heartbeat_timeout_s": 0.0}})
    pub = ros.create_publisher(String, topics.POLICY_CHUNK.name, qos_for(topics.POLICY_CHUNK))
    shutdown, x0, moved = Shutdown(), backend.world.gripper_x, []

    def cut_short():
        deadline = time.monotonic() + 10
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # matched both ways, and camera frames for the executor's watchdog
        pub.publish(String(data=topics.encode(task_id="cut-1", cycle=1, subtask_index=0, subtask="move",
                                              next_subtask="", image_stamp_ns=0, steps=[[10.0, 0.0, 0.0, 1]] * 8,
                                              text="")))
        deadline = time.monotonic() + 10
        while backend.world.gripper_x == x0 and time.monotonic() < deadline:
            time.sleep(0.02)
        moved.append(backend.world.gripper_x != x0)
        shutdown.event.set()  # as a signal does, mid-chunk

    thread = threading.Thread(target=cut_short)
    thread.start()
    run_graph(graph, shutdown=shutdown)
    thread.join()
    events = [json.loads(m.data) for _, m in read_bag(tmp_path / "bag")[topics.EXECUTOR_EVENT.name]]
    assert moved == [True], f"the chunk never started moving: {events}"
    x_stopped = backend.world.gripper_x
    time.sleep(0.5)
    assert backend.world.gripper_x == x_stopped  # stopped, and nothing moves after
    events = [json.loads(m.data) for _, m in read_bag(tmp_path / "bag")[topics.EXECUTOR_EVENT.name]]
    ours = [e["event"] for e in events if e["task_id"] == "cut-1"]
    assert ours[0] == "started" and ours[-1] == "aborted", ours
    final = [e for e in events if e["task_id"] == "cut-1"][-1]
    assert final["steps_executed"] < 8 and "shutting down" in final["reason"], final  # cut in its first step, often


def test_a_bag_that_fails_to_close_does_not_keep_the_robot_open(ros):
    """Graph.close raises the bag's error only after the nodes and the robot backend are closed."""
    from vlm2vla_ros.recording import RecordingError

    class FullDisk:
        def close(self):
            raise RecordingError("disk full")

    class Backend:
        closed = False

        def close(self):
            self.closed = True

    graph = Graph(backend=Backend(), recorder=FullDisk(), _owns_backend=True)
    graph.add(rclpy.create_node("closed_with_the_graph"))
    with pytest.raises(RecordingError, match="disk full"):
        graph.close()
    assert graph.backend.closed and graph.nodes == [] and graph.by_name == {}


def test_a_bag_that_cannot_be_written_is_reported_at_the_next_flush(ros, tmp_path):
    """A full disk: the write fails on the writer thread; the recorder says so at its next flush
    instead of recording nothing in silence until the run ends."""
    recorder = RecorderNode(tmp_path / "bag", rollout_topics=(topics.TASK,), flush_period_s=0.1)
    try:
        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        recorder.writer._writer.write = full
        recorder.writer.write(topics.TASK.name, b"\x00\x01\x00\x00\x00\x00\x00\x00", 1)
        deadline = time.monotonic() + 10
        while recorder.failure is None and time.monotonic() < deadline:
            rclpy.spin_once(recorder, timeout_sec=0.05)
        assert recorder.failure == "OSError: [Errno 28] No space left on device"
    finally:
        with pytest.raises(Exception, match="No space left on device"):
            recorder.destroy_node()


def test_a_recording_that_fails_ends_the_run_with_its_error(ros, tmp_path):
    """A bag that can no longer be written stops the graph (the robot with it) and the run ends
    with the bag's error, instead of going on unrecorded until someone reads the log."""
    from vlm2vla_ros.recording import RecordingError

    recorder = RecorderNode(tmp_path / "bag", rollout_topics=(topics.TASK,), flush_period_s=0.1)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    recorder.writer._writer.write = full
    recorder.writer.write(topics.TASK.name, b"\x00\x01\x00\x00\x00\x00\x00\x00", 1)
    graph = Graph(recorder=recorder)
    graph.add(recorder)
    gave_up = []

    def done():  # the run's own end never comes; a minute bounds the test if the failure is ignored
        if time.monotonic() - start > 60:
            gave_up.append(True)
            return True
        return False

    start = time.monotonic()
    with pytest.raises(RecordingError, match="No space left on device"):
        run_graph(graph, done=done, shutdown=Shutdown())
    assert not gave_up and recorder.failure == "OSError: [Errno 28] No space left on device"
    assert graph.nodes == []
