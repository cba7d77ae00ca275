"""The miniature's vision pretraining: heat-map and scene-summary targets, and the centring term."""

import pytest

torch = pytest.importorskip("torch")

from vlm2vla_ros.miniature.vision import (  # noqa: E402
    CHANNELS,
    GRIPPER_FIELDS,
    SUMMARY_FIELDS,
    SUMMARY_OBJECTS,
    SUMMARY_SCALE,
    heat_maps,
    image_independent_share,
    scene_summary,
)
from vlm2vla_ros.sim.render import Projection  # noqa: E402
from vlm2vla_ros.sim.world import BLOCK, BOWL, SimObject, SimWorld  # noqa: E402


def test_share_is_one_for_identical_images_and_zero_for_opposite_ones():
    token = torch.randn(1, 4, 8)
    assert image_independent_share(token.repeat(5, 1, 1)).item() == pytest.approx(1.0)
    assert image_independent_share(torch.cat([token, -token])).item() == pytest.approx(0.0, abs=1e-7)


def test_share_measures_the_constant_part():
    # A constant token of norm 3 plus image-dependent parts of norm 1 that cancel over the
    # batch: 9 of the 10 units of squared norm are the same for every image.
    constant = torch.zeros(1, 1, 4)
    constant[..., 0] = 3.0
    varying = torch.zeros(2, 1, 4)
    varying[0, 0, 1], varying[1, 0, 1] = 1.0, -1.0
    assert image_independent_share(constant + varying).item() == pytest.approx(0.9)


def test_block_heat_peaks_where_the_block_is_seen():
    red = SimObject("red block", BLOCK, "red", (220, 30, 30), "cube", 0.30, 0.10, 0.0, 0.045, 0.04)
    world = SimWorld([red], gripper_x=0.15, gripper_y=-0.15, gripper_z=0.2, gripper_open=True)
    grid, size = 8, 224
    maps = heat_maps(world, grid, size)
    channel = maps[:, :, CHANNELS.index("block:red")]
    row, col = divmod(int(channel.argmax()), grid)
    u, v = Projection(size, size).pt(red.x, red.y, red.top)
    assert (row, col) == (int(v / size * grid), int(u / size * grid))
    assert channel.max() > 0.5
    assert maps[:, :, CHANNELS.index("block:blue")].max() == 0.0
    background = maps[:, :, -1]
    assert background.min() >= 0.0 and background[row, col] < 0.5


def test_gripper_view_heat_follows_the_gripper():
    # In the gripper view the fingertips' heat is in the middle patch wherever the gripper is,
    # and a block 10 cm to its left is in the same place of the image at two gripper places.
    def world(gx, gy):
        red = SimObject("red block", BLOCK, "red", (220, 30, 30), "cube", gx, gy + 0.10, 0.0, 0.045, 0.04)
        return SimWorld([red], gripper_x=gx, gripper_y=gy, gripper_z=0.04, gripper_open=True)

    grid, size = 8, 224
    peaks = []
    for gx, gy in ((0.15, -0.15), (0.40, 0.12)):
        maps = heat_maps(world(gx, gy), grid, size, "gripper")
        tip = divmod(int(maps[:, :, CHANNELS.index("gripper")].argmax()), grid)
        assert tip in {(3, 3), (3, 4), (4, 3), (4, 4)}
        peaks.append(divmod(int(maps[:, :, CHANNELS.index("block:red")].argmax()), grid))
    assert peaks[0] == peaks[1]
    assert peaks[0][1] < 3  # left of the middle
    assert not (heat_maps(world(0.15, -0.15), grid, size) == heat_maps(world(0.15, -0.15), grid, size, "gripper")).all()


def test_scene_summary_places_every_object_and_the_gripper():
    red = SimObject("red block", BLOCK, "red", (220, 30, 30), "cube", 0.425, -0.15, 0.0, 0.045, 0.04)
    bowl = SimObject("bowl", BOWL, "white", (245, 245, 245), BOWL, 0.275, 0.15, 0.0, 0.14, 0.05)
    world = SimWorld([red, bowl], gripper_x=0.275, gripper_y=0.0, gripper_z=0.1, gripper_open=False)
    summary = scene_summary(world)
    assert summary.shape == (len(SUMMARY_OBJECTS) * len(SUMMARY_FIELDS) + len(GRIPPER_FIELDS),)

    def entry(key):
        k = SUMMARY_OBJECTS.index(key) * len(SUMMARY_FIELDS)
        return dict(zip(SUMMARY_FIELDS, summary[k : k + len(SUMMARY_FIELDS)].tolist()))

    # The table's far right corner and near left middle map to +-1 (SUMMARY_SCALE = 0.15 m).
    assert entry("block:red") == pytest.approx({"present": 1.0, "x": 1.0, "y": -1.0, "top": (0.04 - 0.1) / SUMMARY_SCALE})
    assert entry("bowl") == pytest.approx({"present": 1.0, "x": 0.0, "y": 1.0, "top": (0.05 - 0.1) / SUMMARY_SCALE})
    assert entry("block:blue") == {"present": 0.0, "x": 0.0, "y": 0.0, "top": 0.0}
    assert entry("plate")["present"] == 0.0
    gripper = dict(zip(GRIPPER_FIELDS, summary[-len(GRIPPER_FIELDS) :].tolist()))
    assert gripper == pytest.approx({"x": 0.0, "y": 0.0, "z": 0.0, "open": 0.0, "holding": 0.0})


def test_gripper_view_summary_is_from_the_gripper():
    red = SimObject("red block", BLOCK, "red", (220, 30, 30), "cube", 0.35, -0.05, 0.0, 0.045, 0.04)
    world = SimWorld([red], gripper_x=0.20, gripper_y=0.10, gripper_z=0.10, gripper_open=True)
    summary = scene_summary(world, "gripper")
    k = SUMMARY_OBJECTS.index("block:red") * len(SUMMARY_FIELDS)
    red_fields = dict(zip(SUMMARY_FIELDS, summary[k : k + len(SUMMARY_FIELDS)].tolist()))
    assert red_fields == pytest.approx({"present": 1.0, "x": 1.0, "y": -1.0, "top": (0.04 - 0.10) / SUMMARY_SCALE})
    # the gripper's own fields stay on the table's scale, as in the table view
    assert summary[-len(GRIPPER_FIELDS) :].tolist() == pytest.approx(scene_summary(world)[-len(GRIPPER_FIELDS) :].tolist())
