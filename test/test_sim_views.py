"""The simulated camera's views: a model folder says which one it was trained on, the sim backend
renders in it, and the node graph's simulated camera takes the policy model's own."""

from __future__ import annotations

import numpy as np
import pytest

from vlm2vla_ros.sim.backend import SimBackend
from vlm2vla_ros.sim.render import render
from vlm2vla_ros.sim.scene import make_scene
from vlm2vla_ros.sim.views import VIEW_FILE, image_size_problem, read_model_view, write_model_view


def test_a_model_folder_without_the_file_was_trained_on_the_table_view(tmp_path):
    assert read_model_view(tmp_path) == "table"
    assert read_model_view(tmp_path / "no such folder") == "table"


def test_the_written_view_is_read_back(tmp_path):
    write_model_view(tmp_path, "gripper")
    assert read_model_view(tmp_path) == "gripper"
    with pytest.raises(ValueError, match="camera view must be one of"):
        write_model_view(tmp_path, "ceiling")
    assert read_model_view(tmp_path) == "gripper"  # the refused view wrote nothing


@pytest.mark.parametrize("text", ["not json", "[]", '{"views": "table"}', '{"view": "ceiling"}'])
def test_a_broken_view_file_is_a_clear_error(tmp_path, text):
    (tmp_path / VIEW_FILE).write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="view"):
        read_model_view(tmp_path)


def test_the_backend_renders_in_its_view():
    world, _ = make_scene(5, "pick_up")
    table, gripper = SimBackend(world), SimBackend(world, view="gripper")
    assert table.view == "table"
    assert np.array_equal(table.render(64, 64), render(world, 64, 64))
    assert np.array_equal(gripper.render(64, 64), render(world, 64, 64, "gripper"))
    assert not np.array_equal(gripper.render(64, 64), table.render(64, 64))
    with pytest.raises(ValueError, match="camera view must be one of"):
        SimBackend(world, view="ceiling")


def test_the_graph_takes_the_policy_models_view_unless_the_executor_names_one(tmp_path):
    pytest.importorskip("rclpy")
    from vlm2vla_ros.nodes.bringup import policy_model_view, sim_camera_view
    from vlm2vla_ros.nodes.executor_node import ExecutorNodeConfig

    write_model_view(tmp_path, "gripper")
    assert policy_model_view({"policy_node": {"model_path": str(tmp_path)}}) == "gripper"
    assert policy_model_view({"policy_node": {"model_path": "tiny"}}) == "table"
    assert policy_model_view({}) == "table"
    model = {"policy_node": {"model_path": str(tmp_path)}}
    assert sim_camera_view(model) == "gripper"
    assert sim_camera_view({**model, "executor_node": {"sim_view": "table"}}) == "table"  # named by the executor
    assert sim_camera_view({**model, "executor_node": {"sim_view": ""}}) == "gripper"
    assert ExecutorNodeConfig(sim_view="gripper").sim_view == "gripper"
    with pytest.raises(ValueError, match="camera view must be one of"):
        ExecutorNodeConfig(sim_view="ceiling")


def test_executor_limits_must_be_finite_and_positive():
    """An infinite or NaN limit would switch a watchdog off without a word, a zero camera rate
    would fail deep in the timer: each is refused when the node reads its parameters."""
    pytest.importorskip("rclpy")
    from vlm2vla_ros.nodes.executor_node import ExecutorNodeConfig

    assert ExecutorNodeConfig(heartbeat_timeout_s=0.0).heartbeat_timeout_s == 0.0  # 0: the heartbeat check off
    for bad, why in [
        ({"watchdog_timeout_s": float("inf")}, "watchdog_timeout_s must be a finite number > 0"),
        ({"after_image_timeout_s": float("nan")}, "after_image_timeout_s must be a finite number > 0"),
        ({"sim_camera_rate_hz": 0.0}, "sim_camera_rate_hz must be a finite number > 0"),
        ({"heartbeat_timeout_s": float("nan")}, "heartbeat_timeout_s must be a finite number >= 0"),
        ({"heartbeat_timeout_s": -1.0}, "heartbeat_timeout_s must be a finite number >= 0"),
        ({"image_width": 0}, "image_width/image_height: image .* must be an integer from 32 to 4096 pixels"),
    ]:
        with pytest.raises(ValueError, match=why):
            ExecutorNodeConfig(**bad)


def test_a_chunk_report_carries_joints_only_when_they_are_numbers():
    """JSON has no NaN: a NaN reading would make the chunk's final report fail to encode, and the
    policy would wait on the chunk; the joints are left out instead."""
    pytest.importorskip("rclpy")
    from vlm2vla_ros.nodes.executor_node import _joints
    from vlm2vla_ros.robot.interface import JointState

    assert _joints(JointState(0.5, 0.1234567, 0.0, -50.0)) == [0.5, 0.12346, 0.0, -50.0]
    assert _joints(JointState(0.5, float("nan"), 0.0, -50.0)) is None
    assert _joints(None) is None


def test_one_image_size_check_names_the_side_and_takes_numpy_integers():
    """The renderer, the sim camera source and the executor all ask this one check."""
    assert image_size_problem(32, 4096) is None
    assert image_size_problem(np.int64(224), np.int32(180)) is None
    assert image_size_problem(224, 31) == "image height must be an integer from 32 to 4096 pixels, got 31"
    for bad in (True, 224.0, "224", 4097):
        assert image_size_problem(bad, 224).startswith("image width must be an integer")
