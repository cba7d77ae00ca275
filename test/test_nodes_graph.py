"""The full graph in one process over real DDS: camera, policy (tiny model), executor (sim),
verifier and recorder; a task through to completion with every rollout topic in the bag, and
malformed /task payloads answered with a clear status."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
rclpy = pytest.importorskip("rclpy")

from background_spin import background_spin  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from vlm2vla_ros import topics  # noqa: E402
from vlm2vla_ros.nodes.bringup import build_graph  # noqa: E402
from vlm2vla_ros.nodes.common import qos_for  # noqa: E402
from vlm2vla_ros.recording import read_bag  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


class Probe:
    """A test node that records every JSON payload per topic and can publish tasks."""

    def __init__(self, node):
        self.node = node
        self.lock = threading.Lock()
        self.got = {t.name: [] for t in (topics.POLICY_STATUS, topics.POLICY_CHUNK, topics.EXECUTOR_EVENT, topics.VERDICT)}
        for name in self.got:
            node.create_subscription(String, name, self._cb(name), qos_for(topics.BY_NAME[name]))
        self.task_pub = node.create_publisher(String, topics.TASK.name, qos_for(topics.TASK))

    def _cb(self, name):
        def cb(msg):
            with self.lock:
                self.got[name].append(json.loads(msg.data))

        return cb

    def statuses(self, task_id):
        with self.lock:
            return [d for d in self.got[topics.POLICY_STATUS.name] if d["task_id"] == task_id]

    def wait_for(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = pred()
            if result:
                return result
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout} s")


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    rclpy.init()
    bag = tmp_path_factory.mktemp("graph") / "bag"
    g = build_graph(
        None, "all", sim=True, record_dir=str(bag), sim_seed=3, sim_task_kind="put_in",
        overrides={
            # as many cycles as the longest subtask list: the count verifier advances after every chunk,
            # so a task succeeds in as many cycles as the tiny model's list has items, whatever they are
            "policy_node": {"model_path": "tiny", "max_cycles": 12, "max_task_chars": 80},
            "verifier_node": {"backend": "count", "advance_after_chunks": 1},
            "camera_node": {"rate_hz": 10.0},
        },
    )
    probe = Probe(rclpy.create_node("probe"))
    with background_spin([*g.nodes, probe.node]):
        probe.wait_for(lambda: probe.task_pub.get_subscription_count() > 0, 10)
        yield g, probe, bag
    g.close()
    probe.node.destroy_node()
    rclpy.shutdown()


def test_task_runs_to_completion_and_every_topic_is_in_the_bag(graph):
    g, probe, bag = graph
    start_world = g.backend.world
    probe.task_pub.publish(String(data=topics.encode_task("put the red block in the bowl", "full-1")))
    final = probe.wait_for(lambda: [s for s in probe.statuses("full-1") if s["state"] in topics.TERMINAL_STATES], 60)[-1]
    # The count verifier advances after every chunk: the policy walks through all its subtasks.
    assert final["state"] == topics.SUCCEEDED, final
    n = len(final["subtasks"])
    assert n >= 1 and final["cycle"] == n
    chunks = [c for c in probe.got[topics.POLICY_CHUNK.name] if c["task_id"] == "full-1"]
    events = [e for e in probe.got[topics.EXECUTOR_EVENT.name] if e["task_id"] == "full-1"]
    verdicts = [v for v in probe.got[topics.VERDICT.name] if v["task_id"] == "full-1"]
    assert [c["cycle"] for c in chunks] == list(range(1, n + 1))
    assert [v["verdict"] for v in verdicts] == ["advance"] * n
    done = [e for e in events if e["event"] == "done"]
    assert len(done) == n and all(e["after_stamp_ns"] > e["before_stamp_ns"] > 0 for e in done)
    # each chunk was computed from a frame taken after the previous chunk finished
    for prev, nxt in zip(done, chunks[1:]):
        assert nxt["image_stamp_ns"] >= prev["after_stamp_ns"]
    # the simulated robot moved
    assert g.backend.world.gripper != start_world.gripper

    g.recorder.close()
    messages = read_bag(bag)
    expected_nonempty = {
        topics.IMAGE.name, topics.TASK.name, topics.POLICY_STATUS.name, topics.POLICY_HEARTBEAT.name,
        topics.POLICY_PLAN.name, topics.POLICY_RAW.name, topics.POLICY_CHUNK.name, topics.EXECUTOR_EVENT.name,
        topics.EXECUTOR_STATUS.name, topics.VERDICT.name,
    }
    assert set(messages) == {t.name for t in topics.ROLLOUT_TOPICS}
    for name in expected_nonempty:
        assert messages[name], f"{name} has no message in the bag"
    bag_chunks = [json.loads(m.data) for _, m in messages[topics.POLICY_CHUNK.name]]
    assert [c["cycle"] for c in bag_chunks if c["task_id"] == "full-1"] == list(range(1, n + 1))
    raw_stages = [json.loads(m.data)["stage"] for _, m in messages[topics.POLICY_RAW.name]]
    assert raw_stages.count("subtasks") == 1 and raw_stages.count("chunk") == n
    _, img = messages[topics.IMAGE.name][0]
    assert img.encoding == "rgb8" and img.width == 224 and len(img.data) == 224 * 224 * 3
    assert img.header.frame_id == "camera_color_optical_frame"
    stamps = [t for t, _ in messages[topics.IMAGE.name]]
    assert stamps == sorted(stamps)


@pytest.mark.parametrize(
    "payload, why",
    [
        ("", "empty"),
        ("   \t\n", "empty"),
        ("x" * 81, "more than the limit of 80"),
        ('{"task": "pick", "id": ', "does not parse"),
        ('{"task": ["pick"], "id": "bad-1"}', "string 'task'"),
    ],
)
def test_malformed_task_gets_a_rejected_status(graph, payload, why):
    _g, probe, _bag = graph
    before = len(probe.got[topics.POLICY_STATUS.name])
    probe.task_pub.publish(String(data=payload))

    def rejected():
        with probe.lock:
            new = probe.got[topics.POLICY_STATUS.name][before:]
        return [s for s in new if s["state"] == topics.REJECTED]

    status = probe.wait_for(rejected, 10)[0]
    assert why in status["message"] and status["message"].startswith("task rejected:")


def test_new_task_preempts_the_running_one(graph):
    _g, probe, _bag = graph
    probe.task_pub.publish(String(data=topics.encode_task("put the red block in the bowl", "pre-1")))
    probe.wait_for(lambda: probe.statuses("pre-1"), 10)
    probe.task_pub.publish(String(data=topics.encode_task("pick up the blue block", "pre-2")))
    probe.wait_for(lambda: [s for s in probe.statuses("pre-1") if s["state"] == topics.PREEMPTED], 10)
    final = probe.wait_for(lambda: [s for s in probe.statuses("pre-2") if s["state"] in topics.TERMINAL_STATES], 60)[-1]
    assert final["state"] == topics.SUCCEEDED
    # nothing of the pre-empted task reached the executor after it was pre-empted
    time.sleep(0.5)
    with probe.lock:
        events = list(probe.got[topics.EXECUTOR_EVENT.name])
    first_new = next(i for i, e in enumerate(events) if e["task_id"] == "pre-2")
    assert all(e["task_id"] != "pre-1" or e["event"] != "started" for e in events[first_new:])
