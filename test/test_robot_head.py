"""Head tracking: the aim against the URDF's own kinematic chains, its limits, and who moves the
head when (executor, stretch_body stand-in, simulator)."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import stretch_body_standin as standin
from recording_backend import RecordingBackend

from vlm2vla_ros.action_language.types import ActionChunk, ActionStep
from vlm2vla_ros.robot.config import RobotConfig
from vlm2vla_ros.robot.embodiment import EmbodimentConfig
from vlm2vla_ros.robot.executor import ChunkExecutor
from vlm2vla_ros.robot.head import HeadTrackingConfig, aim_at, grasp_centre_m
from vlm2vla_ros.robot.interface import BackendError, JointState
from vlm2vla_ros.robot.safety import SafetyConfig
from vlm2vla_ros.robot.stretch_body_backend import StretchBodyBackend, StretchBodySettings

# ---- an independent model: the RE1 URDF's joints, composed as the URDF states them --------
# (origin xyz, origin rpy, joint type) from hello-robot/stretch_ros stretch_description/batch/
# guthrie (stretch_main.xacro, stretch_gripper.xacro, stretch_d435i.xacro) and realsense2's D435.


def _rot(r: float, p: float, y: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _chain(joints) -> np.ndarray:
    """Compose (xyz, rpy, axis or None, value) joints: prismatic moves along axis, revolute turns."""
    pose = np.eye(4)
    for xyz, rpy, axis, value in joints:
        step = np.eye(4)
        step[:3, :3], step[:3, 3] = _rot(*rpy), xyz
        motion = np.eye(4)
        if axis == "slide":
            motion[2, 3] = value
        elif axis in ("turn", "turn-"):
            angle = value if axis == "turn" else -value
            motion[:3, :3] = _rot(0, 0, angle)
        pose = pose @ step @ motion
    return pose


MAST = ((-0.07, 0.135, 0.0284), (1.5707963267949, 0, 0.00925318926571245), None, 0)


def urdf_grasp_centre(lift: float, arm: float) -> np.ndarray:
    e = arm / 4
    return _chain([
        MAST,
        ((-0.0369217062323472, 0.1654712, -0.000341653286793524), (-1.57079632679552, 1.5615431375292, 0), "slide", lift),
        ((-0.25471, 0, 0), (1.5708, 0, -1.5708), None, 0),
        ((0, 0, 0.013), (0, 0, 0), "slide", e),
        ((0, 0, 0.013), (0, 0, 0), "slide", e),
        ((0, 0, 0.013), (0, 0, 0), "slide", e),
        ((0, 0, -0.01375), (0, 0, 0), "slide", e),
        ((0.083, -0.03075, 0), (1.5708, 0, 0), "turn-", 0.0),  # wrist yaw 0
        ((0, 0, 0), (3.14159, 0, -1.5708), None, 0),
        ((-0.205478, 0, -0.138154), (0, 0, 3.141579), None, 0),
    ])[:3, 3]


def urdf_optical_ray(pan: float, tilt: float) -> tuple[np.ndarray, np.ndarray]:
    """(origin, direction) of the colour camera's optical axis (its frame's +z)."""
    pose = _chain([
        MAST,
        ((0, 1.33, 0), (1.5708, -1.5615, 3.1416), None, 0),
        ((0.135, 0.0731, -0.003), (0, 0, 1.5708), "turn", pan),
        ((-0.0013, 0.027507, -0.053311), (1.5708, 0, 0), "turn", tilt),
        ((0.03, -0.0122, 0.0182), (0, 0, 0), None, 0),
        ((0.0106, 0.0175, 0.0125), (0, 0, 0), None, 0),
        ((0, 0.015, 0), (0, 0, 0), None, 0),
        ((0, 0, 0), (-math.pi / 2, 0, -math.pi / 2), None, 0),
    ])
    return pose[:3, 3], pose[:3, 2]


@pytest.mark.parametrize("lift", [0.1, 0.45, 0.8, 1.1])
@pytest.mark.parametrize("arm", [0.0, 0.2, 0.52])
def test_the_aim_puts_the_urdf_grasp_centre_on_the_optical_axis(lift, arm):
    joints = JointState(lift, arm, 0.37, 0.0)  # base travel carries head and gripper alike
    target = urdf_grasp_centre(lift, arm)
    assert np.allclose(grasp_centre_m(joints), target, atol=2e-4)
    pan, tilt = aim_at(grasp_centre_m(joints))
    origin, direction = urdf_optical_ray(pan, tilt)
    to_target = target - origin
    assert to_target @ direction > 0.2  # in front of the camera, not behind it
    miss = np.linalg.norm(to_target - (to_target @ direction) * direction)
    assert miss < 1e-3
    assert -math.pi / 2 - 0.1 < pan < -math.pi / 2  # looking along the arm, slightly behind
    assert tilt < 0  # the gripper is always below the head


def test_the_common_look_at_the_gripper_pose_is_what_the_aim_gives_midway():
    pan, tilt = aim_at(grasp_centre_m(JointState(0.8, 0.3, 0.0, 0.0)))
    assert pan == pytest.approx(-math.pi / 2, abs=0.05) and tilt == pytest.approx(-math.pi / 4, abs=0.15)


def test_directions_the_pan_range_cannot_reach_are_clipped_not_wrapped_forever():
    pan, _tilt = aim_at((-0.5, 0.5, 0.5))  # behind and to the left: about 2.36 rad, past the 1.5 limit
    assert pan == pytest.approx(2.356 - 2 * math.pi, abs=0.01)  # the same direction, below -3.9
    # A grasp centre left of the robot (only a nonsense arm reading puts it there): pan would be
    # about +1.6 rad, which the range [-3.9, 1.5] cannot reach either way round.
    pose = HeadTrackingConfig().pose_for(JointState(0.5, -0.9, 0.0, 0.0))
    assert pose.clipped and pose.pan_rad == -3.9


def test_a_point_on_the_pan_axis_has_no_aim():
    with pytest.raises(ValueError, match="pan axis"):
        aim_at((0.0030942, -0.0000032, 0.5))


def test_narrowed_ranges_clip_the_aim_and_say_so():
    low_arm = JointState(0.1, 0.0, 0.0, 0.0)  # tilt about -1.3 rad
    free = HeadTrackingConfig(track_gripper=True).pose_for(low_arm)
    assert not free.clipped and free.tilt_rad < -1.2
    narrow = HeadTrackingConfig(track_gripper=True, tilt_range_rad=(-1.0, 0.0)).pose_for(low_arm)
    assert narrow.clipped and narrow.tilt_rad == -1.0 and narrow.pan_rad == free.pan_rad


@pytest.mark.parametrize(
    "section, message",
    [
        ({"track_gripper": 1}, "true or false"),
        ({"pan_range_rad": [-4.5, 1.5]}, "pan_range_rad low"),  # wider than the URDF allows
        ({"tilt_range_rad": [0.5, -0.5]}, "low < high"),
        ({"tilt_range_rad": [0.0]}, r"\[low, high\]"),
        ({"settle_s": 1.0}, "unknown key"),
    ],
)
def test_bad_head_sections_are_refused(section, message):
    with pytest.raises(ValueError, match=message):
        RobotConfig.from_dict({"head": section})


def test_the_shipped_robot_config_reads_its_head_section():
    from vlm2vla_ros.nodes.common import config_path

    config = RobotConfig.from_yaml(config_path("stretch_re1.yaml"))
    assert config.head == HeadTrackingConfig()  # off until a gripper-view policy asks for it
    assert config.stretch_body.head_settle_s == 0.5


# ---- who moves the head, and when ---------------------------------------------------------

EMB, SAFETY = EmbodimentConfig(), SafetyConfig()
TRACK = HeadTrackingConfig(track_gripper=True)
CHUNK = ActionChunk((ActionStep(2.0, 0.0, 0.0, 1), ActionStep(0.0, 0.0, 3.0, 1)))
START = JointState(0.5, 0.2, 0.0, 0.0)


def recording(start: JointState = START) -> RecordingBackend:
    backend = RecordingBackend(SAFETY, EMB, start)
    backend.new_chunk()
    return backend


def test_a_chunk_that_runs_to_its_end_aims_the_head_at_where_the_gripper_ended():
    backend = recording()
    report = ChunkExecutor(backend, EMB, SAFETY, head=TRACK).execute(CHUNK)
    assert report.status == "done"
    name, pan, tilt = backend.calls[-1]
    assert name == "point_head"
    expected = TRACK.pose_for(report.end)
    assert (pan, tilt) == (expected.pan_rad, expected.tilt_rad)
    assert report.end.arm_m == pytest.approx(0.22) and report.end.lift_m == pytest.approx(0.53)


def test_a_head_that_fails_stops_and_latches_like_any_command():
    backend = recording()

    def broken(pan, tilt):
        raise BackendError("head Dynamixel overload")

    backend.point_head = broken
    executor = ChunkExecutor(backend, EMB, SAFETY, head=TRACK)
    report = executor.execute(CHUNK)
    assert report.status == "failed" and report.reason == "aiming the head failed: BackendError: head Dynamixel overload"
    assert report.steps_executed == 2 and backend.calls[-1] == ("stop",) and executor.fault


def test_no_head_motion_when_off_in_dry_run_or_after_an_abort():
    off = recording()
    assert ChunkExecutor(off, EMB, SAFETY).execute(CHUNK).status == "done"
    dry = recording()
    dry_executor = ChunkExecutor(dry, EMB, SAFETY, dry_run=True, head=TRACK)
    assert dry_executor.execute(CHUNK).status == "dry_run" and dry_executor.aim_head() is None
    aborted = recording()
    executor = ChunkExecutor(aborted, EMB, SAFETY, head=TRACK)
    steps = iter([False, False, True])  # abort after the last step, before the aim
    # answered in this thread only: the executor's watcher thread polls too, as often as the
    # machine's load lets it, and its calls would eat the sequence (a flake under load)
    main = threading.current_thread()
    report = executor.execute(CHUNK, lambda: threading.current_thread() is main and next(steps, True))
    assert report.status == "aborted" and "before aiming the head" in report.reason
    assert executor.aim_head() is None  # latched: nothing moves, the head included
    for backend in (off, dry, aborted):
        assert "point_head" not in [c[0] for c in backend.calls]


def test_aim_head_at_start_up_points_at_the_gripper_and_reports_refusals():
    backend = recording(JointState(0.9, 0.4, 0.0, 0.0))
    pose = ChunkExecutor(backend, EMB, SAFETY, head=TRACK).aim_head()
    assert backend.calls == [("point_head", pose.pan_rad, pose.tilt_rad)]
    assert pose == TRACK.pose_for(JointState(0.9, 0.4, 0.0, 0.0))
    assert ChunkExecutor(recording(), EMB, SAFETY).aim_head() is None  # tracking off
    runstopped = recording()
    runstopped.runstopped = True
    with pytest.raises(AssertionError, match="head command while not ready"):
        ChunkExecutor(runstopped, EMB, SAFETY, head=TRACK).aim_head()


@pytest.fixture
def world(monkeypatch):
    return standin.install(monkeypatch)


def stretch_body() -> StretchBodyBackend:
    return StretchBodyBackend(SAFETY.max_speed_mps, StretchBodySettings(gripper_settle_s=0.0, motion_start_s=0.0,
                                                                        head_settle_s=0.0))


def test_stretch_body_moves_head_pan_then_tilt_after_the_chunk(world):
    executor = ChunkExecutor(stretch_body(), EMB, SAFETY, head=TRACK)
    report = executor.execute(CHUNK)
    assert report.status == "done"
    moves = [c for c in world.motion_calls() if c[0] == "head.move_to"]
    expected = TRACK.pose_for(report.end)
    assert moves == [("head.move_to", ("head_pan", expected.pan_rad), {}),
                     ("head.move_to", ("head_tilt", expected.tilt_rad), {})]
    assert world.motion_calls()[-2:] == moves  # the aim is the chunk's last command
    assert (world.head_pan, world.head_tilt) == (expected.pan_rad, expected.tilt_rad)


@pytest.mark.parametrize("state", ["runstopped", "not homed"])
def test_stretch_body_refuses_to_move_the_head_of_a_robot_that_may_not_move(world, state):
    backend = stretch_body()
    if state == "runstopped":
        world.runstopped = True
    else:
        world.homed = False
    with pytest.raises(BackendError, match="refusing to move the head"):
        backend.point_head(-1.6, -0.8)
    assert not [c for c in world.calls if c[0] == "head.move_to"]


@pytest.mark.parametrize("pan, tilt", [(-4.0, -0.5), (-1.6, 0.8), (math.nan, -0.5), (-1.6, math.inf)])
def test_stretch_body_refuses_angles_outside_the_heads_ranges(world, pan, tilt):
    with pytest.raises(BackendError, match="outside"):
        stretch_body().point_head(pan, tilt)
    assert not [c for c in world.calls if c[0] == "head.move_to"]


def test_the_simulator_records_the_aim_and_refuses_it_when_runstopped():
    from vlm2vla_ros.sim.backend import SimBackend
    from vlm2vla_ros.sim.scene import make_scene

    world, _task = make_scene(3, "pick_up")
    sim = SimBackend(world)
    assert sim.head_pose is None
    pose = ChunkExecutor(sim, EMB, SAFETY, head=TRACK).aim_head()
    assert sim.head_pose == (pose.pan_rad, pose.tilt_rad)
    sim.trigger_runstop()
    with pytest.raises(BackendError, match="run-stop"):
        sim.point_head(-1.6, -0.8)


@pytest.mark.ros
@pytest.mark.parametrize("estop_latched", [False, True])
def test_the_executor_node_aims_the_head_when_it_starts_unless_the_estop_is_engaged(tmp_path, estop_latched):
    """A person who stopped the robot before the executor (re)started keeps the head still too."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from std_msgs.msg import Bool

    from vlm2vla_ros import topics
    from vlm2vla_ros.nodes import executor_node
    from vlm2vla_ros.nodes.common import qos_for
    from vlm2vla_ros.nodes.executor_node import ExecutorNode
    from vlm2vla_ros.sim.backend import SimBackend
    from vlm2vla_ros.sim.scene import make_scene

    robot_config = tmp_path / "robot.yaml"
    robot_config.write_text("head: {track_gripper: true}\n")
    sim = SimBackend(make_scene(3, "pick_up")[0])
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        operator = rclpy.create_node("operator", context=context)
        if estop_latched:  # latched (transient local), as an e-stop button's publisher is
            operator.create_publisher(Bool, topics.ESTOP.name, qos_for(topics.ESTOP)).publish(Bool(data=True))
        node = ExecutorNode(backend=sim, context=context, parameter_overrides=[
            Parameter("robot_config", value=str(robot_config)), Parameter("backend", value="sim")])
        assert sim.head_pose is None  # not from the constructor: the e-stop has not been heard yet
        time.sleep(executor_node.HEAD_AIM_DELAY_S + 0.5)  # built long before it spins (a model loading): still waits
        spin = SingleThreadedExecutor(context=context)
        for each in (node, operator):
            spin.add_node(each)
        deadline = time.monotonic() + executor_node.HEAD_AIM_DELAY_S + 5
        while sim.head_pose is None and not node._head_timer.is_canceled() and time.monotonic() < deadline:
            spin.spin_once(timeout_sec=0.1)
        if estop_latched:
            assert node.gate.estopped and sim.head_pose is None
        else:
            expected = TRACK.pose_for(sim.status().joints)
            assert sim.head_pose == (expected.pan_rad, expected.tilt_rad)
        spin.shutdown()
        node.destroy_node()
        operator.destroy_node()
    finally:
        rclpy.shutdown(context=context)


@pytest.mark.ros
def test_an_estop_during_the_start_up_aim_is_handled_at_once(tmp_path):
    """The head's aim waits for it to settle (0.5 s on the robot, here until the test lets it go):
    a stop sent meanwhile must not wait behind it."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from std_msgs.msg import Bool

    from vlm2vla_ros import topics
    from vlm2vla_ros.nodes.common import EVENTS_QOS
    from vlm2vla_ros.nodes.executor_node import ExecutorNode
    from vlm2vla_ros.sim.backend import SimBackend
    from vlm2vla_ros.sim.scene import make_scene

    class SlowHead(SimBackend):
        aiming, settle, stopped = threading.Event(), threading.Event(), threading.Event()

        def point_head(self, pan_rad, tilt_rad):
            super().point_head(pan_rad, tilt_rad)
            self.aiming.set()
            self.settle.wait(10.0)

        def stop(self):
            self.stopped.set()

    robot_config = tmp_path / "robot.yaml"
    robot_config.write_text("head: {track_gripper: true}\n")
    sim = SlowHead(make_scene(3, "pick_up")[0])
    context = rclpy.Context()
    rclpy.init(context=context)
    spin = MultiThreadedExecutor(num_threads=4, context=context)
    try:
        operator = rclpy.create_node("operator", context=context)
        stop = operator.create_publisher(Bool, topics.ESTOP.name, EVENTS_QOS)  # a plain `ros2 topic pub`
        node = ExecutorNode(backend=sim, context=context, parameter_overrides=[
            Parameter("robot_config", value=str(robot_config)), Parameter("backend", value="sim")])
        for each in (node, operator):
            spin.add_node(each)
        spinner = threading.Thread(target=spin.spin, daemon=True)
        spinner.start()
        assert sim.aiming.wait(10.0), "the head was never aimed"
        stop.publish(Bool(data=True))
        deadline = time.monotonic() + 5.0
        while not node.gate.estopped and time.monotonic() < deadline:
            time.sleep(0.02)
        stopped_while_aiming = node.gate.estopped and sim.stopped.is_set() and not sim.settle.is_set()
        sim.settle.set()
        assert stopped_while_aiming, "the e-stop waited for the head's aim"
    finally:
        sim.settle.set()
        spin.shutdown()
        rclpy.shutdown(context=context)
