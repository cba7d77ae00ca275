"""One-process bringup: the whole graph (or one half) in one process with one executor.

For machines without `ros2 launch` (pip-installed ROS 2), for the offline demo and the tests,
and to share one model between policy and verifier when the verifier judges with the policy's
base model (the same weights with the LoRA adapter switched off); a verifier that judges with
another model (a verifier of its own, as the shipped 'mini' has) loads it, as in a process of
its own.
Parameters come from the same YAML the launch file uses (`node_name: ros__parameters:`); with
`sim` the simulated Stretch is one SimBackend object shared by the executor (which moves it)
and the camera (which renders it).
`record` writes every rollout topic to a rosbag2 folder with `rosbags`.

    python -m vlm2vla_ros.nodes.bringup --sim --model tiny --record --bag-dir out/bag
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rclpy.node import Node
from rclpy.parameter import Parameter

from .common import Shutdown, config_path, drain, spin_until, stop_executor

HALVES = ("all", "robot", "compute")
DEFAULT_CONFIG = "vlm2vla.yaml"


def load_params(path: str | None, overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """{node_name: {param: value}} from a ROS 2 parameters YAML (None/'' -> {}), with `overrides`
    (the same shape, e.g. model_overrides') laid over it."""
    data: Any = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read parameters file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"parameters file {path} must map node names to 'ros__parameters'")
    out: dict[str, dict[str, Any]] = {}
    for node, section in data.items():
        params = (section or {}).get("ros__parameters", {}) if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise ValueError(f"parameters file {path}: '{node}' needs a 'ros__parameters' mapping")
        out[str(node).lstrip("/")] = params
    for node, values in (overrides or {}).items():
        out.setdefault(node, {}).update(values)
    return out


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    by_name: dict[str, Node] = field(default_factory=dict)
    backend: Any = None
    engine: Any = None
    recorder: Any = None
    _owns_engine: bool = False
    _owns_backend: bool = False

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.by_name[node.get_name()] = node
        return node

    def stop_robot(self) -> None:
        """Urgent: stop motion now (signal handlers call this first)."""
        executor = self.by_name.get("executor_node")
        if executor is not None:
            executor.stop_robot()  # type: ignore[attr-defined]

    def finish_motion(self) -> None:
        """Stop the robot and wait for the running chunk's final event, so that a recorder
        drained after this has the chunk's end."""
        executor = self.by_name.get("executor_node")
        if executor is not None:
            executor.finish_chunk()  # type: ignore[attr-defined]

    def close(self) -> None:
        """Stop the robot, finish the bag, destroy every node; idempotent. A bag that fails to
        close is raised after the nodes, the engine and the robot backend are closed."""
        self.stop_robot()
        try:
            if self.recorder is not None:
                self.recorder.close()
        finally:
            for node in reversed(self.nodes):
                with contextlib.suppress(Exception):
                    node.destroy_node()
            self.nodes.clear()
            self.by_name.clear()
            if self._owns_engine and self.engine is not None and hasattr(self.engine, "close"):
                self.engine.close()
            if self._owns_backend and self.backend is not None:
                self.backend.close()


def launch_flag(text: str, name: str) -> bool | None:
    """A launch argument's true/false, or None when it was not given (''). Anything else is
    refused: a typo read as false could run the real robot (`sim:=ture`) or move it (`dry_run:=treu`)."""
    value = text.strip().lower()
    if not value:
        return None
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ValueError(f"launch argument {name} must be true or false, got {text!r}")


def untrained_model_problem(params: dict[str, dict[str, Any]], sim: bool, dry_run: bool | None) -> str:
    """'' unless the policy's model is the tiny test model (random weights) and the executor would
    move the real Stretch with its chunks: they pass every limit check and still go anywhere
    within them. The config's defaults are the robot's, so a launch that names no model must
    not drive it. params: the whole graph's; sim and dry_run: the command line's (dry_run None:
    the YAML's stands). One sentence saying what to give instead, else ''."""
    from .policy_node import TINY_MODEL

    policy, executor = params.get("policy_node", {}), params.get("executor_node", {})
    if str(policy.get("model_path", "")) != TINY_MODEL:
        return ""
    if sim or str(executor.get("backend", "stretch_body")) == "sim":
        return ""
    if dry_run if dry_run is not None else bool(executor.get("dry_run", False)):
        return ""
    return ("the policy's model is 'tiny', the untrained test model (random weights), and the executor would move "
            "the real Stretch by its chunks: give a trained model (model:=<folder> / --model <folder>), or run "
            "with dry_run:=true (executor_node dry_run) or in the simulator (sim:=true / --sim)")


def unnamed_test_model_problem(params: dict[str, dict[str, Any]], model_arg: str) -> str:
    """The compute half of a two-machine launch cannot see whether the robot half moves the real
    Stretch, so it runs the tiny test model only when the command line names it (model:=tiny),
    never as the YAML's default. '' or one sentence saying what to give."""
    from .policy_node import TINY_MODEL

    if model_arg or str(params.get("policy_node", {}).get("model_path", "")) != TINY_MODEL:
        return ""
    return ("the policy's model is the YAML's default 'tiny', the untrained test model (random weights), and this "
            "compute half cannot see whether the robot half moves the real Stretch: give a trained model "
            "(model:=<folder>), or model:=tiny to run it knowingly against a robot half with dry_run:=true or sim:=true")


def action_limits_problem(params: dict[str, dict[str, Any]]) -> str:
    """'' unless the policy's config lets it write chunks the executor's robot config rejects
    (robot.safety.policy_limits_problem). Only a graph with both halves can check this; each half
    alone still refuses such a chunk, with the reason, when it comes."""
    from ..action_language.types import ActionLimits
    from ..policy.config import PolicyConfig
    from ..robot.config import RobotConfig
    from ..robot.safety import policy_limits_problem
    from .common import config_path

    policy_yaml = str(params.get("policy_node", {}).get("policy_config", ""))
    robot_yaml = str(params.get("executor_node", {}).get("robot_config", "")) or config_path("stretch_re1.yaml")
    limits = PolicyConfig.from_yaml(policy_yaml).limits if policy_yaml else ActionLimits()
    return policy_limits_problem(limits, RobotConfig.from_yaml(robot_yaml).safety)


def policy_model_view(params: dict[str, dict[str, Any]]) -> str:
    """The camera view the policy node's model was trained on (sim.views.VIEW_FILE in its
    folder; the whole table when it does not say), for a simulated camera that shows the same."""
    from ..shipped import resolve_shipped
    from ..sim.views import TABLE_VIEW, read_model_view

    p = params.get("policy_node", {})
    model, _ = resolve_shipped(str(p.get("model_path", "")), str(p.get("adapter_path", "")))
    return read_model_view(os.path.expanduser(model)) if model else TABLE_VIEW


def sim_camera_view(params: dict[str, dict[str, Any]]) -> str:
    """The simulated camera's view: the executor's sim_view when set, else the policy model's own."""
    return str(params.get("executor_node", {}).get("sim_view", "")) or policy_model_view(params)


def build_graph(
    params_file: str | None = None,
    half: str = "all",
    sim: bool = True,
    overrides: dict[str, dict[str, Any]] | None = None,
    engine: Any = None,
    backend: Any = None,
    record_dir: str | None = None,
    sim_seed: int = 0,
    sim_task_kind: str | None = None,
) -> Graph:
    """Create the nodes of `half` in this process (rclpy must be initialised)."""
    from .camera_node import CameraNode
    from .executor_node import ExecutorNode
    from .policy_node import PolicyNode, load_engine
    from .recorder import RecorderNode
    from .verifier_node import VerifierNode

    if half not in HALVES:
        raise ValueError(f"half must be one of {HALVES}, got {half!r}")
    params = load_params(params_file, overrides)
    if sim:
        params.setdefault("executor_node", {})["backend"] = "sim"
        # The sim renders an upright head-camera view: the RE1 mount's rotation does not apply.
        params.setdefault("camera_node", {}).update(source="sim", rotate_deg=0)

    if engine is None:  # one graph knows both the model and the robot; the compute half alone does not
        named = str((overrides or {}).get("policy_node", {}).get("model_path", ""))
        problem = (untrained_model_problem(params, sim, None) or action_limits_problem(params) if half == "all"
                   else unnamed_test_model_problem(params, named) if half == "compute" else "")
        if problem:
            raise ValueError(problem)

    def kw(name: str) -> dict[str, Any]:
        return {"parameter_overrides": [Parameter(k, value=v) for k, v in params.get(name, {}).items()]}

    graph = Graph()
    try:
        if record_dir:
            graph.recorder = graph.add(RecorderNode(record_dir))
        if half in ("all", "robot"):
            if sim and backend is None:
                from ..sim.backend import SimBackend
                from ..sim.scene import make_scene

                world, _task = make_scene(sim_seed, sim_task_kind)
                time_scale = float(params.get("executor_node", {}).get("sim_time_scale", 0.0))
                backend = SimBackend(world, time_scale=time_scale, view=sim_camera_view(params))
                graph._owns_backend = True
            graph.backend = backend
            graph.add(ExecutorNode(backend=backend, **kw("executor_node")))
            graph.add(CameraNode(sim_backend=backend if sim else None, **kw("camera_node")))
        if half in ("all", "compute"):
            p, v = params.get("policy_node", {}), params.get("verifier_node", {})
            if engine is None:
                engine = load_engine(str(p.get("policy_config", "")), str(p.get("model_path", "")), str(p.get("adapter_path", "")))
                graph._owns_engine = True
            graph.engine = engine
            graph.add(PolicyNode(engine=engine, **kw("policy_node")))
            shares = v.get("backend", "vlm") == "vlm" and verifier_shares_policy_model(p, v)
            # Not shared: a model of its own, the policy's checkpoint's verifier when it names none.
            own = {**v, **verifier_process_params(params)} if not shares else v
            overrides = [Parameter(k, value=value) for k, value in own.items()]
            graph.add(VerifierNode(engine=engine if shares else None, parameter_overrides=overrides))
    except BaseException:
        graph.close()
        raise
    return graph


def verifier_model(policy: dict[str, Any], verifier: dict[str, Any]) -> str:
    """The model the verifier judges with: its own model_path, or when it names none ('') the
    policy's checkpoint as a verifier ('mini': the shipped verifier of its own when one ships,
    else the shipped base; any other model: itself, the adapter off)."""
    from ..shipped import resolve_verifier_model

    return resolve_verifier_model(str(verifier.get("model_path", "")) or str(policy.get("model_path", "")))


def verifier_shares_policy_model(policy: dict[str, Any], verifier: dict[str, Any]) -> bool:
    """Whether the verifier judges with the policy's own base model, so one process gives it the
    policy's engine instead of loading the weights twice."""
    from ..shipped import resolve_shipped

    own = verifier_model(policy, verifier)
    base, _adapter = resolve_shipped(str(policy.get("model_path", "")), str(policy.get("adapter_path", "")))
    return not own or _same_folder(own, base)


def _same_folder(a: str, b: str) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def verifier_process_params(params: dict[str, dict[str, Any]]) -> dict[str, str]:
    """What a verifier node that loads its own model is given when its YAML leaves the model to
    the policy (model_path '', the default): the policy's checkpoint as a verifier
    (verifier_model), and the policy's policy_config (device, dtype, 4-bit) unless it names its own."""
    verifier, policy = params.get("verifier_node", {}), params.get("policy_node", {})
    if str(verifier.get("model_path", "")):
        return {}
    out = {}
    own = verifier_model(policy, verifier)
    if own and verifier.get("backend", "vlm") == "vlm":  # openai names its model in policy_config
        out["model_path"] = own
    if not str(verifier.get("policy_config", "")) and str(policy.get("policy_config", "")):
        out["policy_config"] = str(policy["policy_config"])
    return out


def run_graph(graph: Graph, done: Callable[[], bool] | None = None, shutdown: Shutdown | None = None) -> Shutdown:
    """Spin the graph until SIGINT/SIGTERM (robot stopped first), done(), or a recording that
    fails (its messages from then on would be lost); stop the robot and let the chunk under way
    report its end; drain the recorder; then close it, which raises a recording's failure. A
    callback's exception, which ends the spin, is raised after the same stop, drain and close."""
    shutdown = shutdown or Shutdown()
    shutdown.urgent.append(graph.stop_robot)
    shutdown.install()

    def stop_spinning() -> bool:
        recording_failed = getattr(graph.recorder, "failure", None) is not None
        return recording_failed or (done is not None and done())

    try:
        stop_executor(spin_until(graph.nodes, shutdown, stop_spinning))
    finally:
        try:
            graph.finish_motion()  # the interrupted chunk's final event goes out before the drain
            if graph.recorder is not None:
                drain(graph.recorder)  # what was delivered before the signal belongs in the bag
        finally:
            graph.close()
    return shutdown


def model_overrides(model: str | None, adapter: str | None) -> dict[str, dict[str, Any]]:
    """Parameters for a --model and --adapter: the model is the policy's, and the verifier's is
    left to it ('': the policy's checkpoint as a verifier, for 'mini' the shipped verifier of its
    own), as with the launch file's model argument."""
    overrides: dict[str, dict[str, Any]] = {}
    if model:
        overrides["policy_node"] = {"model_path": model}
        overrides["verifier_node"] = {"model_path": ""}
    if adapter:
        overrides.setdefault("policy_node", {})["adapter_path"] = adapter
    return overrides


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="vlm2vla-bringup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=config_path(DEFAULT_CONFIG), help="ROS 2 parameters YAML (default: %(default)s)")
    ap.add_argument("--half", choices=HALVES, default="all", help="robot: camera+executor; compute: policy+verifier")
    ap.add_argument("--sim", action="store_true", help="simulated Stretch instead of stretch_body")
    ap.add_argument("--seed", type=int, default=0, help="sim scene seed")
    ap.add_argument("--task-kind", default=None, help="sim task kind (default: drawn from the seed)")
    ap.add_argument("--model", default=None, help="model folder of policy and verifier ('tiny': the tiny random test model)")
    ap.add_argument("--adapter", default=None, help="LoRA adapter folder")
    ap.add_argument("--record", action="store_true", help="record every rollout topic to a rosbag2 folder")
    ap.add_argument("--bag-dir", default="vlm2vla_bag", help="bag folder for --record (must not exist)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import rclpy

    args = parse_args(sys.argv[1:] if argv is None else argv)
    overrides = model_overrides(args.model, args.adapter)
    rclpy.init()
    try:
        graph = build_graph(
            args.config, args.half, args.sim, overrides,
            record_dir=args.bag_dir if args.record else None, sim_seed=args.seed, sim_task_kind=args.task_kind,
        )
        run_graph(graph)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
