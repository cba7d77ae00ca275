"""Messages of one cycle that come from different processes keep no order between them over DDS.
Over real DDS: the policy node hearing the verifier's verdict before the executor's report, and
the verifier node hearing the executor's report before the policy's chunk. Either way the task
must go on, not wait for ever. A test node plays the other nodes."""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager

import numpy as np
import pytest

os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 90))
rclpy = pytest.importorskip("rclpy")

from background_spin import background_spin  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from vlm2vla_ros import topics  # noqa: E402
from vlm2vla_ros.nodes.common import qos_for  # noqa: E402
from vlm2vla_ros.nodes.images import to_msg  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@contextmanager
def spinning(make_node):
    """rclpy up, the node under test and a probe node spinning in a background thread; yields
    the probe, and tears everything down after."""
    rclpy.init()
    node = make_node()
    probe = rclpy.create_node("order_probe")
    try:
        with background_spin([node, probe]):
            yield probe
    finally:
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown()


def wait_until(pred, what, seen, tick=lambda: None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"no {what}; seen: {seen}"
        tick()
        time.sleep(0.05)


class ScriptedEngine:
    """Two subtasks, one step forward per cycle."""

    def subtasks(self, image, task):
        from vlm2vla_ros.policy.types import SubtaskResult

        return SubtaskResult(["move forward", "open the gripper"], "1. move forward\n2. open the gripper", {}, {})

    def cycle(self, image, task, subtask):
        from vlm2vla_ros.action_language.types import ActionChunk, ActionStep
        from vlm2vla_ros.policy.types import CycleResult

        return CycleResult("move forward", ActionChunk((ActionStep(1.0, 0.0, 0.0, 1),)), "move forward",
                           "[[1, 0, 0, 1]]", {}, {})


@contextmanager
def policy_probed(*publish, parameters=(), engine=None):
    """The policy node on ScriptedEngine, spinning with a probe that records its chunks and
    statuses and publishes frames, tasks and the `publish` topics; yields (probe, pubs, chunks,
    statuses, frame, seen), frame() publishing one camera frame, seen what a failed wait prints.
    Returns once the policy hears /task."""
    from vlm2vla_ros.nodes.policy_node import PolicyNode

    chunks, statuses = [], []
    with spinning(lambda: PolicyNode(engine=engine or ScriptedEngine(), parameter_overrides=list(parameters))) as probe:
        probe.create_subscription(String, topics.POLICY_CHUNK.name, lambda m: chunks.append(json.loads(m.data)),
                                  qos_for(topics.POLICY_CHUNK))
        probe.create_subscription(String, topics.POLICY_STATUS.name, lambda m: statuses.append(json.loads(m.data)),
                                  qos_for(topics.POLICY_STATUS))
        pubs = {t.name: probe.create_publisher(Image if t is topics.IMAGE else String, t.name, qos_for(t))
                for t in (topics.IMAGE, topics.TASK, *publish)}

        def frame():
            pubs[topics.IMAGE.name].publish(to_msg(np.zeros((32, 32, 3), np.uint8), probe.get_clock().now().to_msg(), "cam"))

        seen = {"chunks": chunks, "statuses": statuses}
        wait_until(lambda: pubs[topics.TASK.name].get_subscription_count() > 0, "policy subscription", seen, frame)
        yield probe, pubs, chunks, statuses, frame, seen


def test_a_verdict_before_the_executors_report_still_moves_the_task_on():
    with policy_probed(topics.VERDICT, topics.EXECUTOR_EVENT) as (probe, pubs, chunks, statuses, frame, seen):
        pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward, then open", "order-1")))
        for cycle in (1, 2):
            wait_until(lambda n=cycle: len(chunks) >= n, f"chunk of cycle {cycle}", seen, frame)
            assert chunks[-1]["cycle"] == cycle and chunks[-1]["task_id"] == "order-1"
            pubs[topics.VERDICT.name].publish(String(data=topics.encode(
                task_id="order-1", cycle=cycle, verdict="advance", reason="verifier heard first")))
            time.sleep(0.3)  # the verdict is in; the report comes after it
            assert not any(s["state"] == topics.SUCCEEDED for s in statuses)
            after = probe.get_clock().now().nanoseconds
            pubs[topics.EXECUTOR_EVENT.name].publish(String(data=topics.encode(
                event="done", task_id="order-1", cycle=cycle, steps_executed=1, after_stamp_ns=after)))
        wait_until(lambda: any(s["task_id"] == "order-1" and s["state"] == topics.SUCCEEDED for s in statuses),
                   "success", seen, frame)
        assert len(chunks) == 2  # one chunk per subtask, none sent again


def test_each_chunk_carries_its_subtasks_retries_for_the_verifiers_bar():
    with policy_probed(topics.VERDICT, topics.EXECUTOR_EVENT) as (probe, pubs, chunks, statuses, frame, seen):
        pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward, then open", "retries-1")))
        for cycle, verdict in ((1, "retry"), (2, "retry"), (3, "advance"), (4, "advance")):
            wait_until(lambda n=cycle: len(chunks) >= n, f"chunk of cycle {cycle}", seen, frame)
            pubs[topics.EXECUTOR_EVENT.name].publish(String(data=topics.encode(
                event="done", task_id="retries-1", cycle=cycle, steps_executed=1,
                after_stamp_ns=probe.get_clock().now().nanoseconds)))
            time.sleep(0.2)
            pubs[topics.VERDICT.name].publish(String(data=topics.encode(
                task_id="retries-1", cycle=cycle, verdict=verdict, reason="scripted")))
        wait_until(lambda: any(s["task_id"] == "retries-1" and s["state"] == topics.SUCCEEDED for s in statuses),
                   "success", seen, frame)
        assert [(c["subtask_index"], c["subtask_retries"]) for c in chunks] == [(0, 0), (0, 1), (0, 2), (1, 0)]


def test_a_retried_subtask_after_a_move_goes_back_to_the_move_unless_move_again_after_is_0():
    """The node's move_again_after reaches its TaskRun: "open the gripper" follows "move forward"."""
    from rclpy.parameter import Parameter

    for again, expected in ((None, [(0, 0), (1, 0), (0, 0), (1, 1)]), (0, [(0, 0), (1, 0), (1, 1)])):
        parameters = () if again is None else (Parameter("move_again_after", value=again),)
        task = f"again-{again}"
        with policy_probed(topics.VERDICT, topics.EXECUTOR_EVENT, parameters=parameters) as (
                probe, pubs, chunks, statuses, frame, seen):
            pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward, then open", task)))
            for cycle, verdict in enumerate(("advance", "retry", "advance", "advance")[:len(expected)], start=1):
                wait_until(lambda n=cycle: len(chunks) >= n, f"chunk of cycle {cycle}", seen, frame)
                pubs[topics.EXECUTOR_EVENT.name].publish(String(data=topics.encode(
                    event="done", task_id=task, cycle=cycle, steps_executed=1,
                    after_stamp_ns=probe.get_clock().now().nanoseconds)))
                time.sleep(0.2)
                pubs[topics.VERDICT.name].publish(String(data=topics.encode(
                    task_id=task, cycle=cycle, verdict=verdict, reason="scripted")))
            wait_until(lambda t=task: any(s["task_id"] == t and s["state"] == topics.SUCCEEDED for s in statuses),
                       "success", seen, frame)
            assert [(c["subtask_index"], c["subtask_retries"]) for c in chunks] == expected, again


def test_a_verifier_that_failed_ends_the_task_with_its_reason():
    """More chunks with nothing judging them would only move the robot: the task fails at once."""
    with policy_probed(topics.VERDICT, topics.EXECUTOR_EVENT) as (probe, pubs, chunks, statuses, frame, seen):
        pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward, then open", "broken-1")))
        wait_until(lambda: chunks, "the first chunk", seen, frame)
        pubs[topics.EXECUTOR_EVENT.name].publish(String(data=topics.encode(
            event="done", task_id="broken-1", cycle=1, steps_executed=1, after_stamp_ns=probe.get_clock().now().nanoseconds)))
        pubs[topics.VERDICT.name].publish(String(data=topics.encode(
            task_id="broken-1", cycle=1, verdict="retry", reason="verifier error: RuntimeError: out of memory", error=True)))
        wait_until(lambda: any(s["state"] == topics.FAILED for s in statuses), "failure", seen, frame)
        failed = [s for s in statuses if s["state"] == topics.FAILED]
        assert failed[0]["task_id"] == "broken-1"
        assert failed[0]["message"] == "the verifier failed on cycle 1: verifier error: RuntimeError: out of memory"
        time.sleep(0.5)
        assert len(chunks) == 1  # no retry chunk


def test_a_task_plans_from_a_frame_taken_after_it_came():
    """A camera that stopped before the task came leaves a last frame that may be minutes old: the
    task fails saying so instead of planning from it. Frames with no capture stamp are named."""
    from rclpy.parameter import Parameter

    with policy_probed(parameters=[Parameter("image_timeout_s", value=1.0)]) as (probe, pubs, chunks, statuses, frame, seen):
        frame()
        time.sleep(0.3)  # the camera's last frame, then silence

        def failed(task_id):
            return [s["message"] for s in statuses if s["task_id"] == task_id and s["state"] == topics.FAILED]

        pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward", "after-stop")))
        wait_until(lambda: failed("after-stop"), "failure without a new frame", seen)
        assert failed("after-stop") == ["no new camera frame on /camera/image_raw within 1 s"]
        assert chunks == []
        pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward", "fresh-frames")))
        wait_until(lambda: chunks, "a chunk once frames come again", seen, frame)
        assert chunks[0]["task_id"] == "fresh-frames"

        from builtin_interfaces.msg import Time

        def unstamped():
            pubs[topics.IMAGE.name].publish(to_msg(np.zeros((32, 32, 3), np.uint8), Time(), "cam"))

        pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward", "unstamped")))
        wait_until(lambda: failed("unstamped"), "failure on unstamped frames", seen, unstamped)
        assert "frames arrive, but with no capture stamp" in failed("unstamped")[0]


def test_the_verifier_judges_a_report_heard_before_its_chunk():
    from rclpy.parameter import Parameter

    from vlm2vla_ros.nodes.verifier_node import VerifierNode

    verdicts = []
    count_backend = [Parameter("backend", value="count")]  # advance after one chunk
    with spinning(lambda: VerifierNode(parameter_overrides=count_backend)) as probe:
        probe.create_subscription(String, topics.VERDICT.name, lambda m: verdicts.append(json.loads(m.data)),
                                  qos_for(topics.VERDICT))
        chunk_pub = probe.create_publisher(String, topics.POLICY_CHUNK.name, qos_for(topics.POLICY_CHUNK))
        event_pub = probe.create_publisher(String, topics.EXECUTOR_EVENT.name, qos_for(topics.EXECUTOR_EVENT))
        wait_until(lambda: chunk_pub.get_subscription_count() > 0 and event_pub.get_subscription_count() > 0,
                   "subscriptions", verdicts)
        event_pub.publish(String(data=topics.encode(event="done", task_id="order-2", cycle=1, steps_executed=1)))
        time.sleep(0.5)
        assert verdicts == []  # nothing to judge without the chunk's subtask
        chunk_pub.publish(String(data=topics.encode(task_id="order-2", cycle=1, subtask_index=0, subtask="grasp it",
                                                    next_subtask="lift it", steps=[[1.0, 0.0, 0.0, 1]])))
        wait_until(lambda: verdicts, "verdict", verdicts)
        (verdict,) = verdicts
        assert (verdict["task_id"], verdict["cycle"], verdict["subtask"], verdict["verdict"]) == (
            "order-2", 1, "grasp it", "advance")
        # a chunk whose cycle is not a number, or an infinite one (JSON 1e400), is ignored, and the node goes on
        chunk_pub.publish(String(data=topics.encode(task_id="order-2", cycle="two", subtask_index=1)))
        chunk_pub.publish(String(data='{"v": 1, "task_id": "order-2", "cycle": 1e400, "subtask_index": 1}'))
        event_pub.publish(String(data=topics.encode(event="done", task_id="order-2", cycle=2, steps_executed=1)))
        chunk_pub.publish(String(data=topics.encode(task_id="order-2", cycle=2, subtask_index=1, subtask="lift it")))
        wait_until(lambda: len(verdicts) == 2, "second verdict", verdicts)
        assert verdicts[1]["cycle"] == 2 and verdicts[1]["subtask"] == "lift it"


def test_a_task_fails_when_no_report_or_no_verdict_comes():
    """The executor or the verifier gone: the task fails with a reason that names which, instead
    of waiting for ever (report_timeout_s, verdict_timeout_s)."""
    from rclpy.parameter import Parameter

    limits = [Parameter("report_timeout_s", value=1.0), Parameter("verdict_timeout_s", value=1.5)]
    with policy_probed(topics.EXECUTOR_EVENT, parameters=limits) as (_probe, pubs, chunks, statuses, frame, seen):

        def failed(task_id):
            return [s for s in statuses if s["task_id"] == task_id and s["state"] == topics.FAILED]

        pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward", "no-executor")))
        wait_until(lambda: failed("no-executor"), "failure without a report", seen, frame)
        assert failed("no-executor")[0]["message"] == (
            "no report from the executor on /executor/event for cycle 1 in 1 s (is the executor running?)")
        assert [c["task_id"] for c in chunks] == ["no-executor"]  # one chunk, then nothing more

        pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward", "no-verifier")))
        wait_until(lambda: any(c["task_id"] == "no-verifier" for c in chunks), "chunk", seen, frame)
        pubs[topics.EXECUTOR_EVENT.name].publish(String(data=topics.encode(
            event="done", task_id="no-verifier", cycle=1, steps_executed=1)))
        wait_until(lambda: failed("no-verifier"), "failure without a verdict", seen, frame)
        assert "no verdict on /verifier/verdict for cycle 1 in 1.5 s" in failed("no-verifier")[0]["message"]


def test_a_task_fails_when_the_model_never_answers():
    """A hung GPU or a server that trickles bytes: the task fails with the reason instead of
    showing "planning" for ever, and so does the next one queued behind the hung call."""
    import threading

    from rclpy.parameter import Parameter

    class HungEngine(ScriptedEngine):
        def __init__(self):
            self.release = threading.Event()

        def subtasks(self, image, task):
            self.release.wait(30.0)
            return super().subtasks(image, task)

    engine = HungEngine()
    limits = [Parameter("generate_timeout_s", value=1.0)]
    try:
        with policy_probed(parameters=limits, engine=engine) as (_probe, pubs, chunks, statuses, frame, seen):

            def failed(task_id):
                return [s for s in statuses if s["task_id"] == task_id and s["state"] == topics.FAILED]

            for task_id in ("hung-1", "hung-2"):
                pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward", task_id)))
                wait_until(lambda task_id=task_id: failed(task_id), f"{task_id} failing", seen, frame)
                assert failed(task_id)[0]["message"] == (
                    "the model has not written the subtask list in 1 s (a hung model or server? generate_timeout_s)")
            engine.release.set()  # the late answers belong to failed tasks: no chunk goes out
            time.sleep(0.5)
            assert chunks == []
    finally:
        engine.release.set()


def test_a_task_under_the_running_tasks_id_is_refused_under_a_fresh_one():
    """A rejection published under the running task's id would read as that task ending (the
    executor stops its chunks); a second task under that id would mix the two runs' messages."""
    with policy_probed() as (_probe, pubs, chunks, statuses, frame, seen):
        pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward", "live-1")))
        wait_until(lambda: chunks, "the first chunk", seen, frame)  # live-1 now waits for the executor
        pubs[topics.TASK.name].publish(String(data=topics.encode_task("pick up the block", "live-1")))
        pubs[topics.TASK.name].publish(String(data=json.dumps({"task": "  ", "id": "live-1"})))
        wait_until(lambda: len([s for s in statuses if s["state"] == topics.REJECTED]) == 2, "two rejections", seen)
        rejected = [s for s in statuses if s["state"] == topics.REJECTED]
        assert all(s["task_id"] not in ("", "live-1") for s in rejected)
        messages = sorted(s["message"] for s in rejected)  # the two /task callbacks run in either order
        assert "task id live-1 is the running task's" in messages[0] and "empty" in messages[1]
        assert [s["state"] for s in statuses if s["task_id"] == "live-1"][-1] == topics.RUNNING  # still running


class RestartingEngine(ScriptedEngine):
    """ScriptedEngine that records when its sampling restarts and when it writes subtasks."""

    def __init__(self):
        self.calls = []

    def restart_sampling(self, key):
        self.calls.append(f"restart {key}")

    def subtasks(self, image, task):
        self.calls.append("subtasks")
        return super().subtasks(image, task)


def test_every_task_samples_as_it_would_alone():
    """Sampling seeds restart, keyed by the task's id, before each task's first generation, as in
    the evaluation's episodes."""
    engine = RestartingEngine()
    with policy_probed(engine=engine) as (_probe, pubs, chunks, _statuses, frame, seen):
        pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward", "alone-1")))
        wait_until(lambda: chunks, "the first task's chunk", seen, frame)
        pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward", "alone-2")))  # pre-empts it
        wait_until(lambda: any(c["task_id"] == "alone-2" for c in chunks), "the second task's chunk", seen, frame)
    assert engine.calls == ["restart alone-1", "subtasks", "restart alone-2", "subtasks"]


@contextmanager
def verifier_probed(monkeypatch, *parameters):
    """The vlm verifier node on SeeingEngine, spinning with a probe that records its verdicts and
    publishes frames, chunks and executor events; yields (pubs, engine, verdicts, t0), t0 the
    probe's clock once everything is matched."""
    from rclpy.parameter import Parameter

    from vlm2vla_ros.nodes import verifier_node
    from vlm2vla_ros.nodes.verifier_node import VerifierNode

    monkeypatch.setattr(verifier_node, "FRAME_WAIT_S", 5.0)  # DDS on a loaded 2-core machine can take a second
    engine, verdicts = SeeingEngine(), []
    node = lambda: VerifierNode(engine=engine, parameter_overrides=[Parameter("backend", value="vlm"), *parameters])  # noqa: E731
    with spinning(node) as probe:
        probe.create_subscription(String, topics.VERDICT.name, lambda m: verdicts.append(json.loads(m.data)),
                                  qos_for(topics.VERDICT))
        pubs = {t.name: probe.create_publisher(Image if t is topics.IMAGE else String, t.name, qos_for(t))
                for t in (topics.IMAGE, topics.POLICY_CHUNK, topics.EXECUTOR_EVENT)}
        wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), "subscriptions", verdicts)
        time.sleep(0.5)
        yield pubs, engine, verdicts, probe.get_clock().now().nanoseconds


def publish_frame(pubs, value, stamp_ns, encoding="rgb8"):
    """An 8x8 frame of one value, stamped stamp_ns, on the camera topic."""
    from builtin_interfaces.msg import Time

    msg = to_msg(np.full((8, 8, 3), value, np.uint8), Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), "cam")
    msg.encoding = encoding
    pubs[topics.IMAGE.name].publish(msg)


class SeeingEngine:
    """A verifier model that records the frames it was shown (and the subtask's retries) and says done."""

    def __init__(self):
        self.shown, self.retries = [], []

    def verify(self, before, after, subtask, next_subtask, retries=0):
        from vlm2vla_ros.policy.types import VerifyResult

        if int(after[0, 0, 0]) == 50:
            raise RuntimeError("out of memory")
        self.shown.append((int(before[0, 0, 0]), int(after[0, 0, 0])))
        self.retries.append(retries)
        return VerifyResult(True, "advance", {}, {})


def test_the_verifier_judges_only_the_frames_the_report_names_and_survives_a_bad_one(monkeypatch):
    with verifier_probed(monkeypatch) as (pubs, engine, verdicts, t0):

        def judged(cycle, before, after):
            pubs[topics.POLICY_CHUNK.name].publish(String(data=topics.encode(
                task_id="frames-1", cycle=cycle, subtask_index=0, subtask="grasp it", next_subtask="",
                subtask_retries=2 if cycle == 1 else "three", steps=[[1, 0, 0, 1]])))
            time.sleep(0.2)
            pubs[topics.EXECUTOR_EVENT.name].publish(String(data=topics.encode(
                event="done", task_id="frames-1", cycle=cycle, steps_executed=1, before_stamp_ns=before, after_stamp_ns=after)))

        publish_frame(pubs, 10, t0)
        time.sleep(0.2)
        judged(1, t0, t0 + 10**9)
        time.sleep(0.3)
        publish_frame(pubs, 20, t0 + 10**9)  # the after frame arrives after the report: waited for
        wait_until(lambda: len(verdicts) == 1, "verdict 1", verdicts)
        assert verdicts[0]["verdict"] == "advance" and engine.shown == [(10, 20)]
        judged(2, t0, t0 + 5 * 10**9)  # no frame anywhere near the after stamp: not judged on another
        wait_until(lambda: len(verdicts) == 2, "verdict 2", verdicts)
        assert verdicts[1]["verdict"] == "retry" and "not received" in verdicts[1]["reason"] and len(engine.shown) == 1
        publish_frame(pubs, 30, t0 + 6 * 10**9, encoding="yuv422")  # a frame the node cannot decode
        time.sleep(0.2)
        judged(3, t0, t0 + 6 * 10**9)
        wait_until(lambda: len(verdicts) == 3, "verdict 3", verdicts)
        assert verdicts[2]["verdict"] == "retry" and len(engine.shown) == 1
        publish_frame(pubs, 40, t0 + 7 * 10**9)
        time.sleep(0.2)
        judged(4, t0, t0 + 7 * 10**9)  # and the node goes on judging
        wait_until(lambda: len(verdicts) == 4, "verdict 4", verdicts)
        assert verdicts[3]["verdict"] == "advance" and engine.shown[-1] == (10, 40)
        assert engine.retries == [2, 0]  # the chunk's count of the subtask's retries; 0 for one that is no count
        assert [v["error"] for v in verdicts] == [False] * 4  # a frame not received is a retry, not the verifier failing
        publish_frame(pubs, 50, t0 + 8 * 10**9)
        time.sleep(0.2)
        judged(5, t0, t0 + 8 * 10**9)  # the model raises: a retry that says the verifier itself failed
        wait_until(lambda: len(verdicts) == 5, "verdict 5", verdicts)
        assert (verdicts[4]["verdict"], verdicts[4]["error"]) == ("retry", True)
        assert verdicts[4]["reason"] == "verifier error: RuntimeError: out of memory"


def test_the_verifier_keeps_a_long_chunks_before_frame_past_its_buffer(monkeypatch):
    """A chunk that runs longer than image_buffer frames (a long chunk, a fast camera): the frame
    it started from is kept from the executor's "started" event on, and the cycle is judged on it."""
    from rclpy.parameter import Parameter

    with verifier_probed(monkeypatch, Parameter("image_buffer", value=3)) as (pubs, engine, verdicts, t0):

        def frame(value, stamp_ns):
            publish_frame(pubs, value, stamp_ns)
            time.sleep(0.05)

        def event(kind, **fields):
            pubs[topics.EXECUTOR_EVENT.name].publish(String(data=topics.encode(event=kind, task_id="long-1", cycle=1, **fields)))

        frame(10, t0)
        time.sleep(0.2)
        pubs[topics.POLICY_CHUNK.name].publish(String(data=topics.encode(
            task_id="long-1", cycle=1, subtask_index=0, subtask="grasp it", next_subtask="", steps=[[1, 0, 0, 1]])))
        event("started", before_stamp_ns=t0)
        time.sleep(0.3)
        for k in range(1, 8):  # the chunk runs on: seven frames, more than the buffer holds
            frame(10 + k, t0 + k * 10**8)
        time.sleep(0.2)
        event("done", steps_executed=1, before_stamp_ns=t0, after_stamp_ns=t0 + 7 * 10**8)
        wait_until(lambda: verdicts, "a verdict", verdicts)
        assert verdicts[0]["verdict"] == "advance" and engine.shown == [(10, 17)], verdicts[0]


def test_a_verdict_that_is_neither_advance_nor_retry_ends_the_task():
    """A broken verifier writing "yes" or "ADVANCE" must not read as a retry that moves the robot again."""
    with policy_probed(topics.EXECUTOR_EVENT, topics.VERDICT) as (_probe, pubs, chunks, statuses, frame, seen):
        pubs[topics.TASK.name].publish(String(data=topics.encode_task("move forward", "odd-1")))
        wait_until(lambda: chunks, "the first chunk", seen, frame)
        pubs[topics.EXECUTOR_EVENT.name].publish(String(data=topics.encode(
            event="done", task_id="odd-1", cycle=1, steps_executed=1)))
        wait_until(lambda: [s for s in statuses if s["task_id"] == "odd-1" and s.get("phase") == "verifying"],
                   "verifying", seen, frame)
        pubs[topics.VERDICT.name].publish(String(data=topics.encode(task_id="odd-1", cycle=1, verdict="yes")))
        wait_until(lambda: [s for s in statuses if s["task_id"] == "odd-1" and s["state"] == topics.FAILED],
                   "failure", seen, frame)
        failed = [s for s in statuses if s["state"] == topics.FAILED][0]
        assert "a verdict that is neither advance nor retry: 'yes'" in failed["message"]
        assert len(chunks) == 1


def test_a_question_about_a_task_that_ended_is_withdrawn_for_the_next_tasks():
    """Operator backend: the person was asked about a task that then ended (pre-empted); the
    question is withdrawn at once, no verdict goes out for it, and the running task's question
    comes now, not after the first one's timeout."""
    from rclpy.parameter import Parameter

    from vlm2vla_ros.nodes.verifier_node import VerifierNode

    requests, verdicts = [], []
    node = lambda: VerifierNode(parameter_overrides=[  # noqa: E731
        Parameter("backend", value="operator"), Parameter("operator_timeout_s", value=120.0)])
    with spinning(node) as probe:
        probe.create_subscription(String, topics.OPERATOR_REQUEST.name, lambda m: requests.append(json.loads(m.data)),
                                  qos_for(topics.OPERATOR_REQUEST))
        probe.create_subscription(String, topics.VERDICT.name, lambda m: verdicts.append(json.loads(m.data)),
                                  qos_for(topics.VERDICT))
        pubs = {t.name: probe.create_publisher(String, t.name, qos_for(t))
                for t in (topics.POLICY_CHUNK, topics.EXECUTOR_EVENT, topics.POLICY_STATUS, topics.OPERATOR_ANSWER)}
        heard = [pubs[t.name] for t in (topics.POLICY_CHUNK, topics.EXECUTOR_EVENT, topics.OPERATOR_ANSWER)]
        wait_until(lambda: all(p.get_subscription_count() > 0 for p in heard), "subscriptions", requests)
        time.sleep(0.5)  # (the status is latched: it reaches a subscription that matches later too)

        def executed(task_id):
            pubs[topics.POLICY_CHUNK.name].publish(String(data=topics.encode(
                task_id=task_id, cycle=1, subtask_index=0, subtask="grasp it", next_subtask="", steps=[[1, 0, 0, 1]])))
            time.sleep(0.2)
            pubs[topics.EXECUTOR_EVENT.name].publish(String(data=topics.encode(
                event="done", task_id=task_id, cycle=1, steps_executed=1)))

        executed("first")
        wait_until(lambda: requests, "the question about the first task", requests)
        pubs[topics.POLICY_STATUS.name].publish(String(data=topics.encode(
            task_id="first", task="pick it up", state=topics.PREEMPTED)))
        executed("second")
        wait_until(lambda: any(r["task_id"] == "second" for r in requests), "the second task's question", requests,
                   timeout=10.0)
        pubs[topics.OPERATOR_ANSWER.name].publish(String(data=json.dumps(
            {"task_id": "second", "cycle": 1, "verdict": "advance", "reason": "it holds the block"})))
        wait_until(lambda: verdicts, "a verdict", verdicts)
        time.sleep(0.3)
        assert [(v["task_id"], v["verdict"]) for v in verdicts] == [("second", "advance")]
