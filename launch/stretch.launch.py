"""Start vlm2vla_ros on the Stretch RE1 (or the simulated Stretch), whole or one half.

    ros2 launch vlm2vla_ros stretch.launch.py                       # everything on one machine
    ros2 launch vlm2vla_ros stretch.launch.py half:=robot           # on the robot: camera + executor
    ros2 launch vlm2vla_ros stretch.launch.py half:=compute model:=/models/vlm2vla   # GPU workstation
    ros2 launch vlm2vla_ros stretch.launch.py sim:=true record:=true bag_dir:=/tmp/run1

Arguments (documented in docs/ros_interface.md):
  config    ROS 2 parameters YAML of all nodes (default: the package's config/vlm2vla.yaml)
  model     model folder for policy and verifier ('' keeps the YAML's; 'tiny' = test model)
  adapter   LoRA adapter folder ('' keeps the YAML's)
  sim       true: simulated Stretch; the executor owns the sim and publishes its camera
            (no camera_node), so the topics are the same as on the robot
  dry_run   true: the executor plans and reports every chunk and moves nothing ('' = the YAML's)
  half      all | robot (camera + executor) | compute (policy + verifier)
  record    true: `ros2 bag record` of every rollout topic
  bag_dir   output folder of the bag (must not exist)
Machines without `ros2 launch`: python -m vlm2vla_ros.nodes.bringup (same YAML, same topics).
"""

import os

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "vlm2vla_ros"
HALVES = ("all", "robot", "compute")
ARGUMENTS = {
    "config": ("", "parameters YAML of all nodes ('' = the package's config/vlm2vla.yaml)"),
    "model": ("", "model folder for policy and verifier ('' = the YAML's; 'tiny' = tiny test model)"),
    "adapter": ("", "LoRA adapter folder ('' = the YAML's)"),
    "sim": ("false", "true: simulated Stretch (the executor owns the sim and publishes its camera)"),
    "dry_run": ("", "true: plan and report chunks, move nothing ('' = the YAML's executor dry_run)"),
    "half": ("all", "all | robot (camera + executor) | compute (policy + verifier)"),
    "record": ("false", "true: ros2 bag record every rollout topic"),
    "bag_dir": ("vlm2vla_bag", "output folder of the bag (must not exist)"),
}


def _default_config():
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory(PACKAGE), "config", "vlm2vla.yaml")


def _params(config, model):
    """The YAML's parameters with the model argument applied as vlm2vla-bringup's --model is."""
    from vlm2vla_ros.nodes.bringup import load_params, model_overrides

    return load_params(config, model_overrides(model, None))


def _sim_view(config, model):
    from vlm2vla_ros.nodes.bringup import sim_camera_view

    return sim_camera_view(_params(config, model))


def _verifier_params(config, model):
    """The policy's checkpoint as a verifier (and the policy's settings) for a verifier whose
    YAML leaves its model to the policy, or for the model argument, which leaves it so: its
    own process cannot share the policy's engine."""
    from vlm2vla_ros.nodes.bringup import verifier_process_params

    return verifier_process_params(_params(config, model))


def _nodes(context):
    from vlm2vla_ros.nodes.bringup import (
        action_limits_problem,
        launch_flag,
        unnamed_test_model_problem,
        untrained_model_problem,
    )
    from vlm2vla_ros.topics import ROLLOUT_TOPICS

    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    half = arg["half"]
    if half not in HALVES:
        raise RuntimeError(f"half must be one of {HALVES}, got {half!r}")
    config = arg["config"] or _default_config()
    sim, dry_run, record = (launch_flag(arg[name], name) for name in ("sim", "dry_run", "record"))
    model = {"model_path": arg["model"]} if arg["model"] else {}
    adapter = {"adapter_path": arg["adapter"]} if arg["adapter"] else {}
    actions = []
    # the tiny random test model must not drive the real robot; the compute half alone cannot
    # see the robot half's settings, so there it must be named. Both halves: the policy may not
    # write chunks the robot config rejects.
    if half == "all":
        params = _params(config, arg["model"])
        problem = untrained_model_problem(params, bool(sim), dry_run) or action_limits_problem(params)
    elif half == "compute":
        problem = unnamed_test_model_problem(_params(config, arg["model"]), arg["model"])
    else:
        problem = ""
    if problem:
        raise RuntimeError(problem)
    if half in ("all", "robot"):
        executor_params = {} if dry_run is None else {"dry_run": dry_run}  # not given: the YAML's stands
        if sim:
            executor_params.update(backend="sim", sim_camera=True)
            if half == "all":  # the simulated camera shows the policy the view its model was trained on
                executor_params["sim_view"] = _sim_view(config, arg["model"])
        else:
            actions.append(Node(package=PACKAGE, executable="camera_node", name="camera_node",
                                parameters=[config], output="screen"))
        actions.append(Node(package=PACKAGE, executable="executor_node", name="executor_node",
                            parameters=[config, executor_params], output="screen"))
    if half in ("all", "compute"):
        actions.append(Node(package=PACKAGE, executable="policy_node", name="policy_node",
                            parameters=[config, {**model, **adapter}], output="screen"))
        actions.append(Node(package=PACKAGE, executable="verifier_node", name="verifier_node",
                            parameters=[config, _verifier_params(config, arg["model"])], output="screen"))
    if record:
        if os.path.exists(arg["bag_dir"]):  # ros2 bag record would refuse it and exit while the robot runs unrecorded
            raise RuntimeError(f"bag_dir {arg['bag_dir']!r} exists: give a new folder (bag_dir:=...) or move the old bag")
        bag = ExecuteProcess(
            cmd=["ros2", "bag", "record", "-o", arg["bag_dir"], *[t.name for t in ROLLOUT_TOPICS]],
            output="screen",
        )
        # a recorder that exits (full disk, killed) ends the launch, the robot stopping with its
        # nodes, instead of leaving the tasks to run unrecorded (the bringup does the same)
        ended = "ros2 bag record exited: shutting down so that no run goes unrecorded"
        actions += [bag, RegisterEventHandler(OnProcessExit(target_action=bag, on_exit=[
            LogInfo(msg=ended), EmitEvent(event=Shutdown(reason=ended))]))]
    return actions


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
