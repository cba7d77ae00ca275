"""The renderer: shape, determinism, legibility of the gripper and held objects, saved artefact."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from vlm2vla_ros.sim.render import Projection, annotate, render
from vlm2vla_ros.sim.scene import make_scene
from vlm2vla_ros.sim.world import BLOCK, SimObject, SimWorld

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
RED = (220, 30, 30)


def colour_mask(img, rgb, tol=12):
    return np.all(np.abs(img.astype(int) - np.array(rgb)) <= tol, axis=2)


def red_world(**gripper):
    return SimWorld(
        [SimObject("red block", BLOCK, "red", RED, "cube", 0.30, 0.0, 0.0, 0.05, 0.04)], **gripper
    )


@pytest.mark.parametrize(("w", "h"), [(64, 64), (224, 224), (640, 640), (320, 180)])
def test_shape_dtype_and_determinism(w, h):
    world, _ = make_scene(3)
    img = render(world, w, h)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert np.array_equal(img, render(world, w, h))


@pytest.mark.parametrize("bad", [0, 10, 5000, 224.0, "224", True])
def test_bad_sizes_are_refused(bad):
    world, _ = make_scene(0)
    with pytest.raises(ValueError, match="image width must be an integer"):
        render(world, bad, 224)


def test_gripper_view_keeps_the_fingertips_in_the_middle():
    world = red_world(gripper_x=0.30, gripper_y=0.0, gripper_z=0.10)
    offsets = []
    for move in ((0.0, 0.0, 0.0), (-0.12, 0.15, 0.05), (0.2, -0.25, -0.08)):
        world.move_gripper(*move)
        assert Projection.of(world, 64, 64, "gripper").pt(*world.gripper) == pytest.approx((32.0, 32.0))
        img = render(world, 224, 224, "gripper")
        assert np.array_equal(img, render(world, 224, 224, "gripper"))
        # the red block is drawn where the projection puts it, its place from the gripper
        v, u = np.argwhere(colour_mask(img, RED)).mean(axis=0)
        block = world.object("red block")
        bu, bv = Projection.of(world, 224, 224, "gripper").pt(block.x, block.y, block.top)
        assert abs(u - bu) < 8 and abs(v - bv) < 12
        offsets.append((u - 112, v - 112))
    # the table view draws the gripper where it is on the table, not in the middle
    assert Projection.of(world, 64, 64).pt(*world.gripper) != pytest.approx((32.0, 32.0), abs=2)
    assert offsets[1][0] > offsets[0][0] + 20  # gripper moved left (+y): the block is further right of it


def test_unknown_view_is_refused():
    with pytest.raises(ValueError, match="camera view must be one of"):
        render(make_scene(0)[0], 64, 64, "overhead")


def test_held_block_is_drawn_with_the_gripper():
    world = red_world(gripper_x=0.30, gripper_y=0.0, gripper_z=0.02)
    assert world.set_gripper(False) == "red block"
    low = colour_mask(render(world), RED)
    world.move_gripper(0.0, 0.1, 0.15)
    high = colour_mask(render(world), RED)
    assert low.sum() > 20 and high.sum() > 20  # visible at both places
    (low_v, low_u), (high_v, high_u) = (np.argwhere(m).mean(axis=0) for m in (low, high))
    assert high_u < low_u - 10  # moved left (+y is left in the image)
    assert high_v < low_v - 5  # lifted up the image


def test_open_and_closed_gripper_look_different():
    world = red_world(gripper_x=0.40, gripper_y=0.1, gripper_z=0.1)
    opened = render(world)
    world.set_gripper(False)
    closed = render(world)
    assert np.abs(opened.astype(int) - closed.astype(int)).sum(axis=2).astype(bool).sum() > 20


def test_every_object_colour_appears():
    world, _ = make_scene(5, "multi_step")
    img = render(world, 320, 320)
    for obj in world.objects:
        assert colour_mask(img, obj.rgb).sum() > 10, obj.name


def test_annotate_writes_on_a_copy():
    img = render(make_scene(1)[0])
    out = annotate(img, ["move above the red block", "muévete sobre el bloque rojo"])
    assert out.shape == img.shape and not np.array_equal(out[:30], img[:30])
    assert np.array_equal(out[-100:], img[-100:])
    with pytest.raises(ValueError, match="HxWx3 uint8 image"):
        annotate(img[:, :, 0], ["x"])


def test_saves_a_scene_a_person_can_look_at():
    world, task = make_scene(4, "put_in")
    img = annotate(render(world, 448, 448), [task.instruction()])
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "sim_scene.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, img)
    assert len(np.unique(back.reshape(-1, 3), axis=0)) > 50 and back.std() > 20
