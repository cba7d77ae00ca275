"""The executor node's choice of embodiment: the simulator moves by the whole chunk."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlm2vla_ros.action_language import parse_action_chunk
from vlm2vla_ros.robot.config import RobotConfig

SHIPPED_ROBOT = Path(__file__).resolve().parents[1] / "config" / "stretch_re1.yaml"


@pytest.mark.ros
@pytest.mark.parametrize(("configured", "simulated", "scale"),
                         [("sim", True, 1.0), ("stretch_body", False, 0.3), ("sim", False, 0.3), ("stretch_body", True, 0.3)])
def test_only_the_simulator_executes_whole_chunks_the_robot_keeps_the_first_run_scale(configured, simulated, scale):
    """The robot config's action_scale (0.3 as shipped) throttles a first run on hardware; in the
    simulator, where the models were trained and evaluated at 1.0, the demo fell short of every
    block with it. A backend that is not the simulator never gets the simulator's scale, whatever
    the configuration says."""
    pytest.importorskip("rclpy")
    from vlm2vla_ros.nodes.executor_node import ExecutorNodeConfig, executed_embodiment
    from vlm2vla_ros.sim.backend import SimBackend
    from vlm2vla_ros.sim.scene import make_scene

    shipped = RobotConfig.from_yaml(SHIPPED_ROBOT).embodiment
    assert shipped.action_scale == 0.3
    backend = SimBackend(make_scene(3, "pick_up")[0]) if simulated else object()
    assert executed_embodiment(ExecutorNodeConfig(backend=configured), shipped, backend).action_scale == scale
    if simulated and configured == "sim":
        config = ExecutorNodeConfig(backend="sim", sim_action_scale=0.5)
        assert executed_embodiment(config, shipped, backend).action_scale == 0.5


@pytest.mark.ros
@pytest.mark.parametrize("value", [0.0, 1.5, float("nan")])
def test_a_sim_action_scale_outside_0_to_1_is_refused(value):
    pytest.importorskip("rclpy")
    from vlm2vla_ros.nodes.executor_node import ExecutorNodeConfig

    with pytest.raises(ValueError, match="sim_action_scale"):
        ExecutorNodeConfig(sim_action_scale=value)


@pytest.mark.parametrize("width, height", [(16, 224), (224, 0), (224, 5000)])
def test_a_sim_camera_size_the_renderer_cannot_draw_is_refused_at_start(width, height):
    """Not on the first frame, where it ended the node (the renderer draws 32-4096 a side)."""
    pytest.importorskip("rclpy")
    from vlm2vla_ros.nodes.executor_node import ExecutorNodeConfig

    with pytest.raises(ValueError, match="image_width/image_height: image .* must be an integer from 32 to 4096 pixels"):
        ExecutorNodeConfig(sim_camera=True, image_width=width, image_height=height)


@pytest.mark.ros
def test_a_sim_executor_node_moves_the_whole_step():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    from vlm2vla_ros.nodes.executor_node import ExecutorNode
    from vlm2vla_ros.sim.backend import SimBackend
    from vlm2vla_ros.sim.scene import make_scene

    sim = SimBackend(make_scene(3, "pick_up")[0])
    start = sim.status().joints.lift_m
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = ExecutorNode(backend=sim, context=context, parameter_overrides=[Parameter("backend", value="sim")])
        try:
            report = node.chunks.execute(parse_action_chunk("[[0.0, 0.0, 2.0, 1]]"))
            assert report.status == "done"
            assert sim.status().joints.lift_m == pytest.approx(start + 0.02)  # the whole 2 cm, not 0.6
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
