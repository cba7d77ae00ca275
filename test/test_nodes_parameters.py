"""Node parameters are read once at start-up (nodes.common.load_config): a running node refuses
to change them rather than report a change it will never make (`ros2 param set ... dry_run true`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402

from vlm2vla_ros.nodes.common import load_config  # noqa: E402


@dataclass
class Settings:
    dry_run: bool = False
    rate_hz: float = 5.0


def test_parameters_come_from_overrides_once_and_are_read_only_after():
    rclpy.init()
    try:
        node = rclpy.create_node("params_probe", parameter_overrides=[Parameter("rate_hz", value=2)])
        try:
            settings = load_config(node, Settings)
            assert settings == Settings(dry_run=False, rate_hz=2.0)  # an int in YAML for a float field
            (result,) = node.set_parameters([Parameter("dry_run", value=True)])
            assert not result.successful and "read-only" in result.reason
            assert node.get_parameter("dry_run").value is False
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown()


def test_a_misspelt_parameter_stops_the_node_naming_it():
    """rclpy would drop `dry_rn: true` silently and the robot would move."""
    rclpy.init()
    try:
        node = rclpy.create_node("typo_probe", parameter_overrides=[Parameter("dry_rn", value=True)])
        try:
            with pytest.raises(ValueError, match=r"typo_probe has no parameter dry_rn \(a typo\?\); its parameters: dry_run, rate_hz"):
                load_config(node, Settings)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown()
