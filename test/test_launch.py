"""launch/stretch.launch.py: parses, declares the documented arguments, and (where the ROS 2
`launch` packages are importable) lists the expected nodes for each half."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "stretch.launch.py"
EXPECTED_ARGS = {"config", "model", "adapter", "sim", "dry_run", "half", "record", "bag_dir"}


def declared_arguments():
    tree = ast.parse(LAUNCH.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ARGUMENTS" for t in node.targets):
            return {k.value for k in node.value.keys}
    raise AssertionError("ARGUMENTS not found")


def test_launch_file_parses_and_declares_the_documented_arguments():
    args = declared_arguments()
    assert args == EXPECTED_ARGS
    doc = (REPO / "docs" / "ros_interface.md").read_text()
    for name in args:
        assert f"`{name}`" in doc, f"launch argument {name} is not documented in docs/ros_interface.md"
    assert "generate_launch_description" in LAUNCH.read_text()


def test_dry_run_is_the_yamls_unless_given_and_a_flag_typo_is_refused():
    """A launch default of false would switch off a dry run set in the YAML; a typo read as false
    would run the real robot (sim:=ture) or move it (dry_run:=treu)."""
    pytest.importorskip("rclpy")  # (bringup is a node module)
    from vlm2vla_ros.nodes.bringup import launch_flag

    tree = ast.parse(LAUNCH.read_text())
    defaults = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                    and any(getattr(t, "id", "") == "ARGUMENTS" for t in node.targets))
    dry_run = {k.value: v.elts[0].value for k, v in zip(defaults.keys, defaults.values)}["dry_run"]
    assert dry_run == "" and launch_flag(dry_run, "dry_run") is None
    assert [launch_flag(t, "sim") for t in ("true", " TRUE", "1", "yes", "false", "0", "no")] == [True] * 4 + [False] * 3
    for typo in ("ture", "flase", "on"):
        with pytest.raises(ValueError, match=f"launch argument sim must be true or false, got '{typo}'"):
            launch_flag(typo, "sim")
    assert 'executor_params = {} if dry_run is None else {"dry_run": dry_run}' in LAUNCH.read_text()


def _launch_available():
    try:
        return importlib.util.find_spec("launch_ros") is not None and importlib.util.find_spec("launch.actions") is not None
    except (ImportError, ValueError):
        return False


@pytest.mark.skipif(not _launch_available(), reason="ROS 2 launch/launch_ros are not installed (no pip wheels)")
@pytest.mark.parametrize("half, sim, expected", [
    ("all", "false", {"camera_node", "executor_node", "policy_node", "verifier_node"}),
    ("all", "true", {"executor_node", "policy_node", "verifier_node"}),
    ("robot", "false", {"camera_node", "executor_node"}),
    ("compute", "false", {"policy_node", "verifier_node"}),
])
def test_launch_description_lists_the_expected_nodes(half, sim, expected):
    module, context = _launch_context(half=half, sim=sim, model="mini")
    nodes = module._nodes(context)
    names = {n.node_executable for n in nodes if hasattr(n, "node_executable")}
    assert names == expected


@pytest.mark.skipif(not _launch_available(), reason="ROS 2 launch/launch_ros are not installed (no pip wheels)")
def test_the_untrained_test_model_never_drives_the_real_robot():
    """The YAML's defaults are the robot's, its model the tiny random one: a launch naming no
    model refuses to start the live graph, and starts it as a dry run or in the simulator."""
    module, context = _launch_context(half="all", sim="false")
    with pytest.raises(RuntimeError, match="'tiny', the untrained test model"):
        module._nodes(context)
    for arguments in ({"dry_run": "true"}, {"sim": "true"}, {"model": "mini"}):
        module, context = _launch_context(**{"half": "all", "sim": "false", **arguments})
        assert module._nodes(context)
    # the compute half alone cannot see the robot half's settings: the YAML's tiny model is refused,
    # the model named on the command line runs
    module, context = _launch_context(half="compute", sim="false")
    with pytest.raises(RuntimeError, match="this compute half cannot see whether the robot half moves"):
        module._nodes(context)
    for model in ("tiny", "mini"):
        module, context = _launch_context(half="compute", sim="false", model=model)
        assert module._nodes(context)


@pytest.mark.skipif(not _launch_available(), reason="ROS 2 launch/launch_ros are not installed (no pip wheels)")
def test_a_bag_recorder_that_exits_shuts_the_launch_down(tmp_path):
    from launch.actions import ExecuteProcess, RegisterEventHandler
    from launch.event_handlers import OnProcessExit

    module, context = _launch_context(half="all", sim="true", record="true", bag_dir=str(tmp_path / "bag"))
    actions = module._nodes(context)
    (bag,) = [a for a in actions if type(a) is ExecuteProcess]
    assert "bag" in " ".join(str(part) for part in bag.cmd)
    (handler,) = [a for a in actions if isinstance(a, RegisterEventHandler)]
    assert isinstance(handler.event_handler, OnProcessExit)


def _launch_context(**arguments):
    """The launch file's module and a context with its declared defaults and `arguments`."""
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument

    spec = importlib.util.spec_from_file_location("stretch_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = LaunchContext()
    for action in module.generate_launch_description().entities:
        if isinstance(action, DeclareLaunchArgument):
            action.visit(context)
    context.launch_configurations.update({"config": str(REPO / "config" / "vlm2vla.yaml"), **arguments})
    return module, context
