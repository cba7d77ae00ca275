"""SimBackend: the RobotBackend protocol over the sim, run-stop and bad commands."""

import math
import threading

import numpy as np
import pytest

from vlm2vla_ros.robot.interface import BackendError, JointDelta
from vlm2vla_ros.sim.backend import SimBackend, SimGeometry
from vlm2vla_ros.sim.scene import make_scene
from vlm2vla_ros.sim.world import BLOCK, SimObject, SimWorld


def backend():
    block = SimObject("red block", BLOCK, "red", (220, 30, 30), "cube", 0.30, 0.0, 0.0, 0.04, 0.04)
    return SimBackend(SimWorld([block], gripper_x=0.30, gripper_y=0.0, gripper_z=0.10))


def test_joint_state_maps_onto_the_gripper_position():
    sim = backend()
    g = SimGeometry()
    joints = sim.status().joints
    assert (joints.arm_m, joints.base_m, joints.lift_m) == pytest.approx(
        (0.30, 0.0, 0.10 + g.lift_at_table_m)
    )
    assert joints.gripper_pct == g.open_pct and sim.status().homed and not sim.status().runstopped
    sim.move_by(JointDelta(lift_m=-0.02, arm_m=0.05, base_m=0.03), timeout_s=2.0)
    assert sim.world.gripper == pytest.approx((0.35, 0.03, 0.08))
    assert sim.last_executed == JointDelta(
        lift_m=pytest.approx(-0.02), arm_m=pytest.approx(0.05), base_m=pytest.approx(0.03)
    )


def test_grasp_and_lift_through_the_backend():
    sim = backend()
    sim.move_by(JointDelta(lift_m=-0.08), timeout_s=2.0)
    sim.set_gripper(-50.0)
    sim.move_by(JointDelta(lift_m=0.1), timeout_s=2.0)
    world = sim.world
    assert world.held is not None and world.held.z == pytest.approx(0.1)
    sim.set_gripper(50.0)
    assert sim.world.object("red block").z == 0.0


def test_clamped_moves_record_what_was_executed():
    sim = backend()
    sim.move_by(JointDelta(arm_m=0.5), timeout_s=10.0)
    assert sim.last_executed.arm_m == pytest.approx(0.20)
    assert sim.status().joints.arm_m == pytest.approx(0.50)


def test_runstop_during_a_chunk_stops_the_sim_and_names_the_cause():
    sim = backend()
    chunk = [JointDelta(arm_m=0.01)] * 5
    done = 0
    with pytest.raises(BackendError, match="run-stop is pressed"):
        for i, delta in enumerate(chunk):
            if i == 2:
                sim.trigger_runstop()
            sim.move_by(delta, timeout_s=1.0)
            done += 1
    assert done == 2 and sim.status().runstopped
    assert sim.world.gripper_x == pytest.approx(0.32)  # nothing moved after the run-stop
    with pytest.raises(BackendError, match="run-stop"):
        sim.set_gripper(-50.0)
    sim.stop()  # never raises
    sim.clear_runstop()
    sim.move_by(JointDelta(arm_m=0.01), timeout_s=1.0)
    assert sim.world.gripper_x == pytest.approx(0.33)


@pytest.mark.parametrize("bad", [math.nan, math.inf, "0.1", None])
def test_garbage_commands_are_refused_without_moving(bad):
    sim = backend()
    before = sim.world.observation()
    with pytest.raises(BackendError, match="non-finite or non-numeric joint delta"):
        sim.move_by(JointDelta(lift_m=bad), timeout_s=1.0)
    with pytest.raises(BackendError, match="finite percentage"):
        sim.set_gripper(bad)
    with pytest.raises(BackendError, match="positive finite timeout"):
        sim.move_by(JointDelta(lift_m=0.01), timeout_s=-1)
    assert sim.world.observation() == before


def test_a_move_longer_than_its_timeout_stops_part_way():
    sim = backend()
    with pytest.raises(BackendError, match="timed out"):
        sim.move_by(JointDelta(arm_m=0.14), timeout_s=0.5)  # needs 1 s at 0.14 m/s
    assert sim.world.gripper_x == pytest.approx(0.37)


def test_closed_backend_refuses_commands():
    sim = backend()
    sim.close()
    with pytest.raises(BackendError, match="closed"):
        sim.move_by(JointDelta(arm_m=0.01), timeout_s=1.0)


def test_world_is_a_copy_and_reset_loads_a_scene():
    sim = backend()
    snapshot = sim.world
    snapshot.move_gripper(0.1, 0, 0)
    assert sim.world.gripper_x == pytest.approx(0.30)
    world, _ = make_scene(2)
    world.set_gripper(False)
    sim.reset(world)
    assert sim.world.observation() == world.observation()
    assert sim.status().joints.gripper_pct == SimGeometry().closed_pct


def test_render_from_another_thread_while_moving():
    sim = SimBackend(make_scene(0)[0])
    images, errors = [], []

    def camera():
        try:
            for _ in range(20):
                images.append(sim.render(64, 64))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=camera)
    thread.start()
    for i in range(200):
        sim.move_by(JointDelta(base_m=0.001 if i < 100 else -0.001), timeout_s=1.0)
    thread.join()
    assert not errors and len(images) == 20 and all(isinstance(im, np.ndarray) for im in images)


@pytest.mark.parametrize("time_scale", [-1.0, math.inf, math.nan, "1", True])
def test_a_time_scale_that_is_not_a_finite_number_at_least_zero_is_refused(time_scale):
    with pytest.raises(ValueError, match="time_scale must be a (finite )?number"):
        SimBackend(SimWorld([]), time_scale=time_scale)
