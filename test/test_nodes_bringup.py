"""Which model the verifier loads: by default the policy's checkpoint (one engine in one process), the
shipped 'mini' verifier of its own when there is one, and another model only when given one; and
the tiny untrained model never drives the real robot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("rclpy")  # (bringup and policy_node are node modules)

from vlm2vla_ros import shipped as shipped_module
from vlm2vla_ros.nodes.bringup import (
    action_limits_problem,
    build_graph,
    load_params,
    model_overrides,
    unnamed_test_model_problem,
    untrained_model_problem,
    verifier_process_params,
    verifier_shares_policy_model,
)
from vlm2vla_ros.shipped import resolve_verifier_model


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A shipped checkpoint folder (base + adapter) in place of the package's."""
    for folder, name in (("base", "config.json"), ("adapter", "adapter_config.json")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text("{}")
    monkeypatch.setattr(shipped_module, "shipped_model", lambda: (tmp_path / "base", tmp_path / "adapter"))
    return tmp_path


def test_mini_verifies_with_its_own_verifier_when_one_ships_else_with_its_base(shipped):
    both = model_overrides("mini", None)
    assert both == {"policy_node": {"model_path": "mini"}, "verifier_node": {"model_path": ""}}
    assert resolve_verifier_model("mini") == str(shipped / "base")
    assert verifier_shares_policy_model(both["policy_node"], both["verifier_node"])
    # 'mini' for the policy alone (the verifier's '' is the policy's checkpoint): its base, shared
    assert verifier_shares_policy_model({"model_path": "mini"}, {"model_path": ""})
    assert verifier_process_params({"policy_node": {"model_path": "mini"}}) == {"model_path": str(shipped / "base")}
    (shipped / "verifier").mkdir()
    (shipped / "verifier" / "config.json").write_text("{}")
    assert resolve_verifier_model("mini") == str(shipped / "verifier")
    assert not verifier_shares_policy_model(both["policy_node"], both["verifier_node"])
    # ... and once a verifier ships with it, that verifier, in one process and in its own alike
    assert not verifier_shares_policy_model({"model_path": "mini"}, {"model_path": ""})
    assert verifier_process_params({"policy_node": {"model_path": "mini"}}) == {"model_path": str(shipped / "verifier")}
    assert resolve_verifier_model("/models/judge") == "/models/judge"


def test_the_shipped_yaml_gives_the_verifier_the_policys_model():
    """Set for the policy alone, the model is the verifier's too: shared in one process, and
    the model a verifier process is launched with (the YAML's verifier model_path is '')."""
    params = load_params(str(Path(__file__).resolve().parents[1] / "config" / "vlm2vla.yaml"))
    assert params["verifier_node"]["model_path"] == ""
    params["policy_node"]["model_path"] = "/models/vlm2vla"
    params["policy_node"]["policy_config"] = "/cfg/policy.yaml"
    assert verifier_shares_policy_model(params["policy_node"], params["verifier_node"])
    assert verifier_process_params(params) == {"model_path": "/models/vlm2vla", "policy_config": "/cfg/policy.yaml"}
    params["verifier_node"]["policy_config"] = "/cfg/verifier.yaml"
    assert verifier_process_params(params) == {"model_path": "/models/vlm2vla"}
    params["verifier_node"]["model_path"] = "/models/judge"
    assert verifier_process_params(params) == {}  # the YAML's own stands
    assert not verifier_shares_policy_model(params["policy_node"], params["verifier_node"])


@pytest.mark.parametrize(
    ("policy", "verifier", "shares"),
    [
        ({"model_path": "tiny"}, {"model_path": "tiny"}, True),
        ({"model_path": "tiny"}, {}, True),  # none named: the policy's
        ({"model_path": "/m/a", "adapter_path": "/m/lora"}, {"model_path": "/m/a/"}, True),
        ({"model_path": "/m/a"}, {"model_path": "/m/judge"}, False),
        ({"model_path": "~/m"}, {"model_path": os.path.join(os.path.expanduser("~"), "m")}, True),
    ],
)
def test_the_one_process_graph_shares_the_engine_only_for_the_same_model(policy, verifier, shares):
    assert verifier_shares_policy_model(policy, verifier) is shares


@pytest.mark.ros
def test_a_verifier_given_another_model_loads_its_own_engine(tmp_path, monkeypatch):
    """As in a process of its own: the weights it was given judge, not the policy's."""
    import rclpy

    from vlm2vla_ros.nodes.bringup import build_graph
    from vlm2vla_ros.nodes.verifier_node import VerifierNode
    from vlm2vla_ros.policy.tiny_model import ensure_tiny_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    judge = tmp_path / "judge"
    shutil.copytree(ensure_tiny_model(), judge)
    rclpy.init()
    try:
        for verifier_model, shared in (("", True), ("tiny", True), (str(judge), False)):
            graph = build_graph(None, "compute", overrides={
                "policy_node": {"model_path": "tiny"}, "verifier_node": {"model_path": verifier_model},
            })
            try:
                verifier = graph.by_name["verifier_node"]
                assert (verifier.engine is graph.engine) is shared
                if not shared:
                    assert verifier.engine.config.model_path == str(judge)
            finally:
                graph.close()
        # the shipped checkpoint with the YAML's verifier model '': its verifier of its own judges
        graph = build_graph(None, "compute", overrides={"policy_node": {"model_path": "mini"}})
        try:
            verifier = graph.by_name["verifier_node"]
            assert verifier.engine is not graph.engine
            assert verifier.engine.config.model_path == str(shipped_module.shipped_model()[0].parent / "verifier")
        finally:
            graph.close()
        # alone, '' has no policy engine to share: refused, not loaded from nowhere
        with pytest.raises(ValueError, match="needs model_path"):
            VerifierNode(parameter_overrides=[rclpy.parameter.Parameter("model_path", value="")])
    finally:
        rclpy.shutdown()


def test_the_untrained_test_model_never_drives_the_real_robot():
    """The shipped YAML's defaults are the robot's (stretch_body, live) with the tiny random model:
    its chunks pass every limit and go anywhere within them, so that graph is refused."""
    yaml_path = str(Path(__file__).resolve().parents[1] / "config" / "vlm2vla.yaml")
    params = load_params(yaml_path)
    problem = untrained_model_problem(params, sim=False, dry_run=None)
    assert "'tiny', the untrained test model" in problem and "dry_run:=true" in problem
    assert untrained_model_problem(params, sim=True, dry_run=None) == ""
    assert untrained_model_problem(params, sim=False, dry_run=True) == ""
    params["executor_node"]["dry_run"] = True  # the YAML's dry run, unless the command line says false
    assert untrained_model_problem(params, sim=False, dry_run=None) == ""
    assert untrained_model_problem(params, sim=False, dry_run=False) == problem
    trained = load_params(yaml_path, model_overrides("/models/vlm2vla", None))
    assert untrained_model_problem(trained, sim=False, dry_run=None) == ""
    with pytest.raises(ValueError, match="the untrained test model"):  # before any node or robot connection
        build_graph(yaml_path, "all", sim=False)


def test_the_compute_half_runs_the_untrained_test_model_only_when_named():
    """On two machines the compute half cannot see whether the robot half moves the real Stretch
    (dry_run and sim are the robot half's): the YAML's default tiny model is refused there, and
    runs when the command line names it (model:=tiny, --model tiny)."""
    yaml_path = str(Path(__file__).resolve().parents[1] / "config" / "vlm2vla.yaml")
    problem = unnamed_test_model_problem(load_params(yaml_path), "")
    assert "this compute half cannot see whether the robot half moves the real Stretch" in problem
    assert "model:=tiny" in problem
    assert unnamed_test_model_problem(load_params(yaml_path, model_overrides("tiny", None)), "tiny") == ""
    assert unnamed_test_model_problem(load_params(yaml_path, model_overrides("/models/vlm2vla", None)), "/models/vlm2vla") == ""
    with pytest.raises(ValueError, match="this compute half cannot see"):  # before any model loads
        build_graph(yaml_path, "compute", sim=False)


def test_a_graph_whose_policy_may_write_chunks_the_robot_rejects_does_not_start(tmp_path):
    """Both halves in one graph: the policy config's limits are checked against the executor's
    robot config before any node, model or robot connection exists."""
    yaml_path = str(Path(__file__).resolve().parents[1] / "config" / "vlm2vla.yaml")
    assert action_limits_problem(load_params(yaml_path)) == ""  # the shipped configs agree
    wide = tmp_path / "policy.yaml"
    wide.write_text("limits: {max_abs_cm: 15.0}\n")
    params = load_params(yaml_path, {"policy_node": {"policy_config": str(wide)}})
    assert "moves of up to 15 cm a step" in action_limits_problem(params)
    robot = tmp_path / "robot.yaml"
    robot.write_text("safety: {max_abs_cm: 20.0}\n")  # the robot widened to match: agreed again
    params["executor_node"]["robot_config"] = str(robot)
    assert action_limits_problem(params) == ""
    with pytest.raises(ValueError, match="moves of up to 15 cm a step"):
        build_graph(yaml_path, "all", sim=True, overrides={"policy_node": {"model_path": "tiny", "policy_config": str(wide)}})
