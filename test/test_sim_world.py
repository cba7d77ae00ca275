"""The simulator's kinematic rules: grasp, carry, release, gravity, stacking, bounds."""

import json
import math

import pytest

from vlm2vla_ros.sim.world import BLOCK, BOWL, PLATE, TABLE, SimObject, SimWorld


def block(name="red block", x=0.30, y=0.0, z=0.0, size=0.04, height=0.04, resting_on=TABLE):
    return SimObject(
        name, BLOCK, name.split()[0], (220, 30, 30), "cube", x, y, z, size, height, resting_on=resting_on
    )


def bowl(x=0.30, y=0.15):
    return SimObject("bowl", BOWL, "grey", (125, 125, 130), BOWL, x, y, 0.0, 0.14, 0.05)


def plate(x=0.30, y=-0.15):
    return SimObject("plate", PLATE, "white", (245, 245, 245), PLATE, x, y, 0.0, 0.16, 0.015)


def grasp(world, name):
    obj = world.object(name)
    world.move_gripper(
        obj.x - world.gripper_x, obj.y - world.gripper_y, obj.z + obj.height / 2 - world.gripper_z
    )
    return world.set_gripper(False)


def carry_to(world, x, y, z):
    world.move_gripper(0, 0, 0.15 - world.gripper_z)
    world.move_gripper(x - world.gripper_x, y - world.gripper_y, 0)
    world.move_gripper(0, 0, z - world.gripper_z)


def test_grasp_carry_release_onto_plate():
    world = SimWorld([block(), plate()], gripper_x=0.2, gripper_y=0.0, gripper_z=0.12)
    assert grasp(world, "red block") == "red block"
    red = world.object("red block")
    assert red.held and red.resting_on is None and world.held is red
    carry_to(world, 0.30, -0.15, 0.10)
    assert (red.x, red.y) == pytest.approx((0.30, -0.15)) and red.z == pytest.approx(0.08)
    assert world.set_gripper(True) == "red block"
    assert not red.held and red.resting_on == "plate"
    assert red.z == pytest.approx(0.015)  # fell onto the plate's top


def test_grasp_needs_the_block_between_the_fingers():
    world = SimWorld([block()], gripper_x=0.30, gripper_y=0.03, gripper_z=0.02)
    assert world.set_gripper(False) is None  # 3 cm to the side: nothing grasped
    assert world.held is None and not world.gripper_open
    world = SimWorld([block()], gripper_x=0.30, gripper_y=0.0, gripper_z=0.039)
    assert world.set_gripper(False) is None  # fingertips only 1 mm below the top
    world = SimWorld([block()], gripper_x=0.30, gripper_y=0.01, gripper_z=0.02)
    assert world.set_gripper(False) == "red block"  # 1 cm off is within tolerance


def test_release_in_mid_air_falls_to_the_table():
    world = SimWorld([block()], gripper_x=0.2, gripper_z=0.12)
    grasp(world, "red block")
    carry_to(world, 0.42, 0.1, 0.2)
    world.set_gripper(True)
    red = world.object("red block")
    assert red.z == 0.0 and red.resting_on == TABLE and (red.x, red.y) == pytest.approx((0.42, 0.1))


def test_stacking_and_a_covered_block_is_not_graspable():
    world = SimWorld([block("red block"), block("blue block", x=0.2, y=0.1, height=0.03)], gripper_z=0.12)
    grasp(world, "red block")
    carry_to(world, 0.205, 0.1, 0.08)
    world.set_gripper(True)
    red, blue = world.object("red block"), world.object("blue block")
    assert red.resting_on == "blue block" and red.z == pytest.approx(0.03)
    world.move_gripper(0, 0, 0.2)
    world.move_gripper(blue.x - world.gripper_x, blue.y - world.gripper_y, 0)
    world.move_gripper(0, 0, 0.015 - world.gripper_z)
    assert world.set_gripper(False) is None  # red rests on blue


def test_bowl_floor_versus_rim():
    world = SimWorld([block(), bowl()], gripper_z=0.12)
    grasp(world, "red block")
    carry_to(world, 0.30, 0.15, 0.1)
    world.set_gripper(True)
    red = world.object("red block")
    assert red.resting_on == "bowl" and red.z == pytest.approx(0.01)  # the floor
    world = SimWorld([block(), bowl()], gripper_z=0.12)
    grasp(world, "red block")
    carry_to(world, 0.30, 0.15 + 0.065, 0.12)  # over the rim ring
    world.set_gripper(True)
    assert world.object("red block").z == pytest.approx(0.05)


def test_workspace_clamp_reports_the_executed_delta():
    world = SimWorld([], gripper_x=0.45, gripper_y=0.0, gripper_z=0.1)
    executed = world.move_gripper(0.2, 0.0, -1.0)
    assert executed == pytest.approx((0.05, 0.0, -0.1))
    assert world.gripper == pytest.approx((0.5, 0.0, 0.0))


def test_vertical_collisions():
    world = SimWorld([block()], gripper_x=0.30, gripper_z=0.1, gripper_open=False)
    world.move_gripper(0, 0, -0.2)
    assert world.gripper_z == pytest.approx(0.04)  # closed: stops on the block's top
    world = SimWorld([block()], gripper_x=0.30, gripper_z=0.1, gripper_open=True)
    world.move_gripper(0, 0, -0.2)
    assert world.gripper_z == 0.0  # open: straddles the block down to the table
    world = SimWorld([block(), plate()], gripper_z=0.12)
    grasp(world, "red block")
    world.move_gripper(0, 0, -0.2)
    assert world.object("red block").z == 0.0  # a held block cannot go through the table
    carry_to(world, 0.30, -0.15, 0.0)
    assert world.object("red block").z == pytest.approx(0.015)  # nor through the plate


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1", None, True])
def test_garbage_moves_are_refused_without_moving(bad):
    world = SimWorld([block()])
    before = world.observation()
    with pytest.raises(ValueError, match="dy must be a finite number"):
        world.move_gripper(0.01, bad, 0.0)
    assert world.observation() == before


def test_bad_world_definitions_are_refused():
    with pytest.raises(TypeError, match="True \\(open\\) or False"):
        SimWorld([]).set_gripper(1)
    with pytest.raises(ValueError, match="unique"):
        SimWorld([block(), block()])
    with pytest.raises(ValueError, match="shape"):
        SimObject("x", BLOCK, "red", (1, 2, 3), "sphere", 0, 0, 0, 0.04, 0.04)
    with pytest.raises(KeyError, match="no object named 'green block'"):
        SimWorld([block()]).object("green block")


def test_keeping_cuts_a_world_down_to_copies_of_some_objects():
    world = SimWorld([block(), block("blue block", x=0.20), bowl()], gripper_x=0.22, gripper_z=0.12, gripper_open=False)
    cut = world.keeping([world.object("blue block")])
    assert [o.name for o in cut.objects] == ["blue block"]
    assert (cut.gripper, cut.gripper_open, cut.workspace, cut.held_offset) == (
        world.gripper, world.gripper_open, world.workspace, world.held_offset)
    cut.set_gripper(True)
    grasp(cut, "blue block")
    cut.move_gripper(0, 0, 0.05)
    assert cut.object("blue block").held and cut.object("blue block").z > 0.04
    assert world.object("blue block").z == 0.0 and not world.object("blue block").held  # the source is untouched


def test_copy_is_independent_and_observation_is_json():
    world = SimWorld([block()], gripper_z=0.12)
    snapshot = world.copy()
    grasp(world, "red block")
    world.move_gripper(0, 0, 0.05)
    assert snapshot.held is None and snapshot.object("red block").z == 0.0
    obs = json.loads(json.dumps(world.observation()))
    assert obs["gripper"]["holding"] == "red block" and obs["objects"][0]["held"] is True
