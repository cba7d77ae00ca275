"""ChunkExecutor: execution, dry-run, and the stop-and-latch rules."""

from __future__ import annotations

import math
import threading

import pytest
from recording_backend import RecordingBackend

from vlm2vla_ros.action_language.types import ActionChunk, ActionStep
from vlm2vla_ros.robot.embodiment import EmbodimentConfig
from vlm2vla_ros.robot.executor import ChunkExecutor
from vlm2vla_ros.robot.interface import BackendError, JointState

EMB, START = EmbodimentConfig(), JointState(0.5, 0.2, 0.0, 0.0)


def chunk(*steps):
    return ActionChunk(tuple(ActionStep(*s) for s in steps))


GOOD = chunk((1, 0, 0, 1), (0, 0, 2, 1), (0, 0, 0, 0))


@pytest.fixture
def safety():
    from vlm2vla_ros.robot.safety import SafetyConfig

    return SafetyConfig()


@pytest.fixture
def backend(safety):
    b = RecordingBackend(safety, EMB, START)
    b.new_chunk()
    return b


def names(b):
    return [c[0] for c in b.calls]


def test_a_good_chunk_runs_step_by_step(backend, safety):
    report = ChunkExecutor(backend, EMB, safety).execute(GOOD)
    assert report.status == "done" and report.reason == "" and report.steps_executed == 3
    # zero moves are not sent; the gripper is sent only when it changes
    assert names(backend) == ["move_by", "set_gripper", "move_by", "set_gripper"]
    assert report.start == START
    end = report.end
    assert (end.lift_m, end.arm_m, end.base_m, end.gripper_pct) == pytest.approx((0.52, 0.21, 0.0, -50.0))


def test_dry_run_plans_everything_and_moves_nothing(backend, safety):
    report = ChunkExecutor(backend, EMB, safety, dry_run=True).execute(GOOD)
    assert report.status == "dry_run" and len(report.commands) == 3 and report.steps_executed == 0
    assert backend.calls == []
    assert report.commands[-1].target.lift_m == pytest.approx(0.52)


def test_a_rejected_chunk_latches_until_a_new_task(backend, safety):
    ex = ChunkExecutor(backend, EMB, safety)
    bad = ex.execute(chunk((math.nan, 0, 0, 1)))
    assert bad.status == "rejected" and "NaN" in bad.reason
    later = ex.execute(GOOD)
    assert later.status == "rejected" and "latched" in later.reason and "NaN" in later.reason
    assert backend.calls == []
    ex.reset_for_new_task()
    assert ex.execute(GOOD).status == "done"


class Boom(RecordingBackend):
    def __init__(self, *a, fail_on_move=2, **k):
        super().__init__(*a, **k)
        self.moves, self.fail_on_move = 0, fail_on_move

    def move_by(self, delta, timeout_s):
        self.moves += 1
        if self.moves == self.fail_on_move:
            raise BackendError("the lift did not finish its move within 2.4 s")
        super().move_by(delta, timeout_s)


def test_a_backend_that_raises_mid_chunk_is_stopped_and_latched(safety):
    b = Boom(safety, EMB, START)
    b.new_chunk()
    ex = ChunkExecutor(b, EMB, safety)
    report = ex.execute(GOOD)
    assert report.status == "failed" and report.steps_executed == 1
    assert "step 1 failed: BackendError: the lift did not finish" in report.reason
    assert names(b)[-1] == "stop"
    assert ex.execute(GOOD).status == "rejected" and names(b)[-1] == "stop"


def test_should_abort_between_steps_stops_and_latches(backend, safety):
    ex = ChunkExecutor(backend, EMB, safety)
    report = ex.execute(GOOD, should_abort=lambda: len(backend.calls) >= 2)
    assert report.status == "aborted" and report.steps_executed == 1 and "before step 1" in report.reason
    assert names(backend) == ["move_by", "set_gripper", "stop"]
    assert ex.fault


def test_runstop_pressed_during_a_chunk_aborts(backend, safety):
    def press():
        backend.runstopped = True

    backend.set_gripper = lambda pct, _orig=backend.set_gripper: (_orig(pct), press())
    report = ChunkExecutor(backend, EMB, safety).execute(GOOD)
    assert report.status == "aborted" and "runstopped" in report.reason
    assert names(backend)[-1] == "stop"


def test_an_estop_during_the_last_steps_gripper_is_reported_aborted_not_done(backend, safety):
    """The stop lands while the last step's gripper closes: every step ran, but the cycle did not
    end as planned, and the policy and verifier must not take it as done."""
    ex = ChunkExecutor(backend, EMB, safety)
    last = chunk((1, 0, 0, 1), (0, 0, 0, 0))
    backend.set_gripper = lambda pct, _orig=backend.set_gripper: (_orig(pct), pct < 0 and ex.estop("e-stop button"))
    report = ex.execute(last)
    assert report.status == "aborted" and report.steps_executed == 2
    assert "after the last step: e-stop button" in report.reason
    assert names(backend)[-1] == "stop" and ex.execute(GOOD).status == "rejected"


class SlowMove(RecordingBackend):
    """move_by blocks until stop() is called, like a long move halted by the runstop."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.stopped = threading.Event()
        self.moving = threading.Event()

    def move_by(self, delta, timeout_s):
        super().move_by(delta, timeout_s)
        self.moving.set()
        assert self.stopped.wait(5.0), "the move was never stopped"

    def stop(self):
        super().stop()
        self.stopped.set()


def test_should_abort_stops_a_move_under_way(safety):
    b = SlowMove(safety, EMB, START)
    b.new_chunk()
    report = ChunkExecutor(b, EMB, safety).execute(GOOD, should_abort=b.moving.is_set)
    assert report.status == "aborted" and "during step 0" in report.reason and report.steps_executed == 0


def test_estop_from_another_thread_stops_a_move_and_latches(safety):
    b = SlowMove(safety, EMB, START)
    b.new_chunk()
    ex = ChunkExecutor(b, EMB, safety)
    t = threading.Thread(target=lambda: (b.moving.wait(5.0), ex.estop("e-stop button")))
    t.start()
    report = ex.execute(GOOD)
    t.join()
    assert report.status == "aborted" and "e-stop button" in report.reason
    assert ex.execute(GOOD).status == "rejected"


def test_keyboard_interrupt_stops_latches_and_propagates(safety):
    class Interrupted(RecordingBackend):
        def move_by(self, delta, timeout_s):
            raise KeyboardInterrupt

    b = Interrupted(safety, EMB, START)
    b.new_chunk()
    ex = ChunkExecutor(b, EMB, safety)
    with pytest.raises(KeyboardInterrupt):
        ex.execute(GOOD)
    assert names(b) == ["stop"] and ex.fault == "interrupted"


def test_a_status_read_failure_stops_and_latches(backend, safety):
    def broken():
        raise BackendError("serial port closed")

    backend.status = broken
    ex = ChunkExecutor(backend, EMB, safety)
    report = ex.execute(GOOD)
    assert report.status == "failed" and "serial port closed" in report.reason and names(backend) == ["stop"]


def test_the_factory_builds_the_simulator_and_the_executor_drives_it(safety):
    from vlm2vla_ros.robot.factory import make_backend
    from vlm2vla_ros.sim.world import SimWorld

    sim = make_backend("sim", world=SimWorld(objects=[]))
    before = sim.status().joints
    report = ChunkExecutor(sim, EMB, safety).execute(chunk((2, -1, 3, 1), (0, 0, 0, 0)))
    assert report.status == "done", report.reason
    after = sim.status().joints
    assert (
        after.arm_m - before.arm_m,
        after.base_m - before.base_m,
        after.lift_m - before.lift_m,
    ) == pytest.approx((0.02, -0.01, 0.03))
    assert not sim.world.gripper_open
