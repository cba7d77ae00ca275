"""Which model the verifier loads: the shipped 'mini' verifier of its own when there is one, and
in the one-process graph the policy's engine only when both nodes would load the same model."""

from __future__ import annotations

import os
import shutil

import pytest

from vlm2vla_ros.nodes import policy_node
from vlm2vla_ros.nodes.bringup import verifier_shares_policy_model
from vlm2vla_ros.nodes.policy_node import resolve_verifier_model


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A shipped checkpoint folder (base + adapter) in place of the package's."""
    for folder, name in (("base", "config.json"), ("adapter", "adapter_config.json")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text("{}")
    monkeypatch.setattr(policy_node, "shipped_model", lambda: (tmp_path / "base", tmp_path / "adapter"))
    return tmp_path


def test_mini_verifies_with_its_own_verifier_when_one_ships_else_with_its_base(shipped):
    assert resolve_verifier_model("mini") == str(shipped / "base")
    assert verifier_shares_policy_model({"model_path": "mini"}, {"model_path": "mini"})
    (shipped / "verifier").mkdir()
    (shipped / "verifier" / "config.json").write_text("{}")
    assert resolve_verifier_model("mini") == str(shipped / "verifier")
    assert not verifier_shares_policy_model({"model_path": "mini"}, {"model_path": "mini"})
    assert resolve_verifier_model("/models/judge") == "/models/judge"


@pytest.mark.parametrize(
    ("policy", "verifier", "shares"),
    [
        ({"model_path": "tiny"}, {"model_path": "tiny"}, True),
        ({"model_path": "tiny"}, {}, True),  # none named: the policy's
        ({"model_path": "/m/a", "adapter_path": "/m/lora"}, {"model_path": "/m/a"}, True),
        ({"model_path": "/m/a"}, {"model_path": "/m/judge"}, False),
        ({"model_path": "~/m"}, {"model_path": os.path.expanduser("~/m")}, True),
    ],
)
def test_the_one_process_graph_shares_the_engine_only_for_the_same_model(policy, verifier, shares):
    assert verifier_shares_policy_model(policy, verifier) is shares


@pytest.mark.ros
def test_a_verifier_given_another_model_loads_its_own_engine(tmp_path):
    """As in a process of its own: the weights it was given judge, not the policy's."""
    rclpy = pytest.importorskip("rclpy")
    from vlm2vla_ros.nodes.bringup import build_graph
    from vlm2vla_ros.policy.tiny_model import ensure_tiny_model

    judge = tmp_path / "judge"
    shutil.copytree(ensure_tiny_model(), judge)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rclpy.init()
    try:
        for verifier_model, shared in (("tiny", True), (str(judge), False)):
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
    finally:
        rclpy.shutdown()
