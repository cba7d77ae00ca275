"""StretchBodyBackend against the stretch_body stand-in: exact calls for a chunk, e-stop,
runstop, not homed, failures and shutdown."""

from __future__ import annotations

import pytest
import stretch_body_standin as standin

from vlm2vla_ros.action_language.types import ActionChunk, ActionStep
from vlm2vla_ros.robot.config import RobotConfig
from vlm2vla_ros.robot.embodiment import EmbodimentConfig
from vlm2vla_ros.robot.executor import ChunkExecutor
from vlm2vla_ros.robot.factory import make_backend
from vlm2vla_ros.robot.interface import BackendError, JointDelta
from vlm2vla_ros.robot.safety import SafetyConfig
from vlm2vla_ros.robot.stretch_body_backend import StretchBodyBackend, StretchBodySettings

FAST = StretchBodySettings(gripper_settle_s=0.0, motion_start_s=0.0)
SAFETY, EMB = SafetyConfig(), EmbodimentConfig()
CHUNK = ActionChunk(
    (ActionStep(1.0, 0.0, 0.0, 1), ActionStep(0.0, -2.0, 2.0, 1), ActionStep(0.0, 0.0, 0.0, 0))
)
STOP = [("pimu.runstop_event_trigger", (), {}), ("push_command", (), {})]


@pytest.fixture
def world(monkeypatch):
    return standin.install(monkeypatch)


def backend():
    return StretchBodyBackend(SAFETY.max_speed_mps, FAST)


def without_timeouts(calls):
    """Calls with wait timeouts checked for sanity and then blanked, so sequences compare exactly."""
    out = []
    for name, args, kwargs in calls:
        if name.endswith("wait_while_is_moving"):
            assert 0 < kwargs["timeout"] <= 10.0
            kwargs = {}
        out.append((name, args, kwargs))
    return out


def test_start_up_then_status(world):
    b = backend()
    assert [c[0] for c in world.calls] == ["Robot", "startup"]
    s = b.status()
    assert (s.joints.lift_m, s.joints.arm_m, s.joints.base_m, s.homed, s.runstopped) == (
        0.5,
        0.1,
        0.0,
        True,
        False,
    )


def test_a_full_chunk_makes_exactly_these_calls(world):
    ex = ChunkExecutor(backend(), EMB, SAFETY)
    report = ex.execute(CHUNK)
    assert report.status == "done", report.reason
    assert without_timeouts(world.motion_calls()) == [
        ("Robot", (), {}),
        ("startup", (), {}),
        ("arm.move_by", (0.01,), {"v_m": 0.15}),
        ("push_command", (), {}),
        ("arm.wait_while_is_moving", (), {}),
        ("end_of_arm.move_to", ("stretch_gripper", 50.0), {}),
        ("lift.move_by", (0.02,), {"v_m": 0.10}),
        ("base.translate_by", (-0.02,), {"v_m": 0.10}),
        ("push_command", (), {}),
        ("lift.wait_while_is_moving", (), {}),
        ("base.wait_while_is_moving", (), {}),
        ("end_of_arm.move_to", ("stretch_gripper", -50.0), {}),
    ]
    assert (world.lift, world.arm, world.base_x, world.gripper_pct) == pytest.approx(
        (0.52, 0.11, -0.02, -50.0)
    )


def test_estop_mid_chunk_triggers_the_runstop_and_latches(world):
    ex = ChunkExecutor(backend(), EMB, SAFETY)
    world.hooks["lift.wait_while_is_moving"] = lambda: ex.estop("e-stop topic")
    report = ex.execute(CHUNK)
    assert report.status == "aborted" and "e-stop topic" in report.reason and report.steps_executed == 1
    calls = world.motion_calls()
    lift_wait = [c[0] for c in calls].index("lift.wait_while_is_moving")
    assert calls[lift_wait + 1 : lift_wait + 3] == STOP
    assert world.runstopped
    assert not any(c[0] == "end_of_arm.move_to" and c[1][1] == -50.0 for c in calls)  # later steps never ran
    n = len(world.motion_calls())
    assert ex.execute(CHUNK).status == "rejected" and len(world.motion_calls()) == n


def test_runstop_pressed_during_a_move_fails_the_move(world):
    def press():
        world.runstopped = True

    world.hooks["arm.wait_while_is_moving"] = press
    with pytest.raises(BackendError, match="runstopped during the move"):
        backend().move_by(JointDelta(arm_m=0.01), 2.0)


@pytest.mark.parametrize("flag, words", [("runstopped", "runstopped"), ("homed", "not homed")])
def test_refuses_to_move_when_runstopped_or_not_homed(world, flag, words):
    setattr(world, flag, flag == "runstopped")
    b = backend()
    for act in (lambda: b.move_by(JointDelta(lift_m=0.01), 2.0), lambda: b.set_gripper(50.0)):
        with pytest.raises(BackendError, match=words):
            act()
    assert [c[0] for c in world.motion_calls()] == ["Robot", "startup"]
    report = ChunkExecutor(b, EMB, SAFETY).execute(CHUNK)
    assert report.status == "rejected" and words in report.reason


def test_a_move_that_does_not_finish_is_stopped(world):
    world.moves_finish = False
    with pytest.raises(BackendError, match="did not finish its move within 2.0 s"):
        backend().move_by(JointDelta(lift_m=0.01), 2.0)
    assert world.motion_calls()[-2:] == STOP


def test_an_exception_inside_stretch_body_is_stopped_and_named(world):
    def fail():
        raise OSError("serial port /dev/hello-motor-lift vanished")

    world.hooks["push_command"] = fail
    with pytest.raises(BackendError, match="OSError: serial port"):
        backend().move_by(JointDelta(lift_m=0.01), 2.0)
    assert [c[0] for c in world.calls[-2:]] == ["pimu.runstop_event_trigger", "push_command"]


@pytest.mark.parametrize("bad", [JointDelta(lift_m=float("nan")), JointDelta(arm_m=float("inf"))])
def test_non_finite_moves_are_refused(world, bad):
    with pytest.raises(BackendError, match="not a finite number"):
        backend().move_by(bad, 2.0)
    assert not any(c[0].endswith(("move_by", "translate_by")) for c in world.calls)


def test_gripper_percent_out_of_range_is_refused(world):
    with pytest.raises(BackendError, match="outside"):
        backend().set_gripper(float("nan"))


def test_shutdown_stops_then_releases_and_is_idempotent(world):
    b = backend()
    b.close()
    b.close()
    assert world.motion_calls()[2:] == [*STOP, ("stop", (), {})]
    with pytest.raises(BackendError, match="closed"):
        b.move_by(JointDelta(lift_m=0.01), 2.0)
    b.stop()  # never raises, even after close


def test_a_stop_inside_a_stop_on_the_same_thread_returns_at_once(world):
    """A second signal's handler runs inside the first one's stop, on the main thread: it must
    return (the first stop goes on) instead of waiting for ever on the stop's own lock."""
    import threading

    ex = ChunkExecutor(backend(), EMB, SAFETY)
    world.hooks["pimu.runstop_event_trigger"] = lambda: ex.estop("second Ctrl-C")
    stopper = threading.Thread(target=ex.estop, args=("first Ctrl-C",), daemon=True)
    stopper.start()
    stopper.join(timeout=5.0)
    assert not stopper.is_alive(), "the nested stop waited on the stop's own lock"
    assert world.motion_calls()[2:] == STOP and world.runstopped and ex.fault == "first Ctrl-C"
    world.hooks.clear()
    ex.estop("later")  # the lock is free again: a stop after it runs in full
    assert world.motion_calls()[2:] == STOP * 2


def test_startup_failure_names_the_likely_cause(world):
    world.startup_ok = False
    with pytest.raises(BackendError, match="another process .stretch_driver.. holding the robot"):
        backend()
    assert world.calls[-1][0] == "stop"


@pytest.mark.parametrize("exc", [KeyError("HELLO_FLEET_ID"), SystemExit(1)])
def test_missing_fleet_configuration_names_the_variables(monkeypatch, exc):
    standin.install(monkeypatch, import_error=exc)
    with pytest.raises(BackendError, match="HELLO_FLEET_PATH and HELLO_FLEET_ID"):
        backend()
    world = standin.install(monkeypatch, standin.World(construct_error=exc))
    with pytest.raises(BackendError, match="HELLO_FLEET_PATH and HELLO_FLEET_ID"):
        backend()
    assert [c[0] for c in world.calls] == ["Robot"]


def test_missing_stretch_body_says_how_to_install(monkeypatch):
    standin.install(monkeypatch, import_error=ImportError("No module named 'stretch_body'"))
    with pytest.raises(BackendError, match="pip install hello-robot-stretch-body"):
        backend()


def test_factory_builds_the_hardware_backend_with_the_configured_speeds(world):
    b = make_backend(
        "stretch_body",
        RobotConfig.from_dict({"stretch_body": {"gripper_settle_s": 0.0, "motion_start_s": 0.0}}),
    )
    assert b.name == "stretch_body"
    b.move_by(JointDelta(base_m=0.01), 2.0)
    assert ("base.translate_by", (0.01,), {"v_m": 0.10}) in world.calls
    with pytest.raises(ValueError, match="unknown backend 'ros'"):
        make_backend("ros")
