"""Embodiment map, configuration loading and the safety layer's individual checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from vlm2vla_ros.action_language.types import ActionChunk, ActionLimits, ActionStep
from vlm2vla_ros.robot.config import RobotConfig
from vlm2vla_ros.robot.embodiment import AxisMap, EmbodimentConfig, step_to_joint_delta
from vlm2vla_ros.robot.interface import JointDelta, JointState, RobotStatus
from vlm2vla_ros.robot.safety import (
    PerJoint,
    SafeCommand,
    SafetyConfig,
    camera_frame_problem,
    check_move,
    chunk_image_problem,
    policy_limits_problem,
    validate_chunk,
)

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "stretch_re1.yaml"
READY = RobotStatus(JointState(0.5, 0.2, 0.0, 0.0), homed=True, runstopped=False)


def chunk(*steps):
    return ActionChunk(tuple(ActionStep(*s) for s in steps))


# ---- embodiment ----


def test_default_map_follows_stretch_md():
    delta, pct = step_to_joint_delta(ActionStep(2.0, -3.0, 4.0, 1), EmbodimentConfig())
    assert delta == pytest.approx(JointDelta(lift_m=0.04, arm_m=0.02, base_m=-0.03))
    assert pct == 50.0
    assert step_to_joint_delta(ActionStep(0, 0, 0, 0), EmbodimentConfig())[1] == -50.0


def test_axis_map_sign_scale_and_action_scale_apply():
    cfg = EmbodimentConfig(
        dx=AxisMap("lift", -1, 2.0), dy=AxisMap("none"), dz=AxisMap("arm"), action_scale=0.5
    )
    delta, _ = step_to_joint_delta(ActionStep(1.0, 9.0, 4.0, 1), cfg)
    assert delta.lift_m == pytest.approx(-0.01) and delta.arm_m == pytest.approx(0.02) and delta.base_m == 0.0


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"dx": AxisMap("arm"), "dy": AxisMap("arm")}, "one axis"),
        ({"action_scale": 0.0}, "action_scale"),
        ({"action_scale": 1.5}, "action_scale"),
        ({"gripper_open_pct": -60.0}, "must be above"),
        ({"gripper_closed_pct": math.nan}, "gripper_closed_pct"),
    ],
)
def test_bad_embodiment_is_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        EmbodimentConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs", [{"joint": "wrist"}, {"joint": "arm", "sign": 2}, {"joint": "arm", "scale": -1.0}]
)
def test_bad_axis_map_is_refused(kwargs):
    with pytest.raises(ValueError, match="axis"):
        AxisMap(**kwargs)


def test_gripper_must_be_zero_or_one():
    with pytest.raises(ValueError, match="gripper"):
        step_to_joint_delta(ActionStep(0, 0, 0, 2), EmbodimentConfig())


# ---- configuration ----


def test_repository_config_loads_with_a_conservative_scale():
    cfg = RobotConfig.from_yaml(REPO_CONFIG)
    assert cfg.embodiment.action_scale == 0.3
    assert cfg.safety == SafetyConfig()  # the YAML spells out the code defaults
    assert cfg.embodiment.dx == AxisMap("arm") and cfg.embodiment.dz == AxisMap("lift")


@pytest.mark.parametrize(
    "data, words",
    [
        ({"safety": {"max_spead_mps": {}}}, "unknown key"),
        ({"embodiment": {"dx": {"joint": "arm", "sgn": 1}}}, "unknown key"),
        ({"robot": {}}, "unknown key"),
        ({"safety": {"lift_range_m": [0.0, 1.5]}}, "lift_range_m high"),
        ({"safety": {"max_speed_mps": {"lift": 0.5, "arm": 0.1, "base": 0.1}}}, "max_speed_mps.lift"),
        ({"safety": {"max_speed_mps": {"lift": 0.1, "arm": 0.1}}}, "missing"),
        ({"safety": {"mode": "yolo"}}, "mode"),
        ({"safety": {"max_steps": "16"}}, "max_steps"),
        ({"safety": {"require_homed": "no"}}, "require_homed"),
        ({"stretch_body": {"gripper_settle_s": -1}}, "gripper_settle_s"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_config_is_refused_with_the_key_named(data, words):
    with pytest.raises(ValueError, match=words):
        RobotConfig.from_dict(data)


def test_unreadable_or_invalid_yaml_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        RobotConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("safety: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        RobotConfig.from_yaml(bad)


# ---- safety: garbage and robot state are rejected in every mode ----


@pytest.mark.parametrize("mode", ["clip", "reject"])
@pytest.mark.parametrize(
    "bad, words",
    [
        (chunk((math.nan, 0, 0, 1)), "NaN"),
        (chunk((0, -math.inf, 0, 1)), "NaN and infinity"),
        (chunk((0, 0, 1e9, 1)), "beyond the action range"),
        (chunk((0, 0, 0, 3)), "gripper"),
        (chunk(("1", 0, 0, 1)), "not a number"),
        (ActionChunk(()), "no steps"),
        (ActionChunk((ActionStep(1, 1, 1, 1),) * 17), "17 steps"),
        ("[[1, 2, 3, 1]]", "not an ActionChunk"),
    ],
)
def test_garbage_is_rejected_whatever_the_mode(mode, bad, words):
    report = validate_chunk(bad, READY, EmbodimentConfig(), SafetyConfig(mode=mode))
    assert not report.ok and not report.commands
    assert words in report.reason


@pytest.mark.parametrize(
    "status, words",
    [
        (RobotStatus(JointState(0.5, 0.2, 0.0, 0.0), homed=True, runstopped=True), "runstopped"),
        (RobotStatus(JointState(0.5, 0.2, 0.0, 0.0), homed=False, runstopped=False), "not homed"),
        (RobotStatus(JointState(math.nan, 0.2, 0.0, 0.0), homed=True, runstopped=False), "lift_m"),
        (RobotStatus(JointState(0.5, 0.2, 0.0, math.inf), homed=True, runstopped=False), "gripper_pct"),
        (None, "not a RobotStatus"),
    ],
)
def test_unsafe_robot_state_is_rejected(status, words):
    report = validate_chunk(chunk((1, 0, 0, 1)), status, EmbodimentConfig(), SafetyConfig())
    assert not report.ok and words in report.reason


def test_not_homed_may_be_allowed_for_the_simulator():
    status = RobotStatus(JointState(0.5, 0.2, 0.0, 0.0), homed=False, runstopped=False)
    assert validate_chunk(
        chunk((1, 0, 0, 1)), status, EmbodimentConfig(), SafetyConfig(require_homed=False)
    ).ok


# ---- safety: limits, clipped or rejected ----


def test_lift_is_clipped_at_the_upper_limit_across_steps():
    status = RobotStatus(JointState(1.0, 0.2, 0.0, 0.0), True, False)
    report = validate_chunk(
        chunk((0, 0, 5, 1), (0, 0, 5, 1), (0, 0, -1, 1)), status, EmbodimentConfig(), SafetyConfig()
    )
    lifts = [c.target.lift_m for c in report.commands]
    assert lifts == pytest.approx([1.05, 1.08, 1.07])  # 1.10 minus the 0.02 margin
    assert len(report.findings) == 1 and "step 1: lift" in report.findings[0]


def test_reject_mode_names_the_step_joint_and_limit():
    status = RobotStatus(JointState(0.5, 0.48, 0.0, 0.0), True, False)
    report = validate_chunk(
        chunk((1, 0, 0, 1), (5, 0, 0, 1)), status, EmbodimentConfig(), SafetyConfig(mode="reject")
    )
    assert not report.ok and report.reason.startswith("step 1: arm move +0.050 m exceeds the limit")


def test_per_step_cap_and_chunk_travel_cap():
    cfg = SafetyConfig(max_step_m=PerJoint(0.05, 0.05, 0.05), max_chunk_travel_m=PerJoint(0.4, 0.4, 0.08))
    report = validate_chunk(
        chunk((0, 10, 0, 1), (0, -10, 0, 1), (0, 10, 0, 1)), READY, EmbodimentConfig(), cfg
    )
    assert [c.delta.base_m for c in report.commands] == pytest.approx([0.05, -0.03, 0.0])
    assert "per-step cap" in report.findings[0] and "chunk travel cap" in report.findings[1]


def test_workspace_box_is_centred_on_the_task_start():
    cfg = SafetyConfig(workspace_m=PerJoint(0.6, 0.52, 0.15))
    anchor = JointState(0.5, 0.2, -0.1, 0.0)
    status = RobotStatus(JointState(0.5, 0.2, 0.0, 0.0), True, False)  # base already 0.10 m forward
    report = validate_chunk(chunk((0, 10, 0, 1)), status, EmbodimentConfig(), cfg, anchor=anchor)
    assert report.commands[0].delta.base_m == pytest.approx(0.05)
    assert "workspace" in report.findings[0]


def test_joint_outside_the_margin_may_move_back_but_not_further_out():
    status = RobotStatus(JointState(0.005, 0.2, 0.0, 0.0), True, False)
    down = validate_chunk(chunk((0, 0, -1, 1)), status, EmbodimentConfig(), SafetyConfig())
    up = validate_chunk(chunk((0, 0, 1, 1)), status, EmbodimentConfig(), SafetyConfig())
    assert down.commands[0].delta.lift_m == 0.0 and up.commands[0].delta.lift_m == pytest.approx(0.01)


def test_durations_follow_the_velocity_caps():
    cfg = SafetyConfig(max_speed_mps=PerJoint(0.1, 0.15, 0.05))
    report = validate_chunk(chunk((3, 2, 1, 1), (0, 0, 0, 0)), READY, EmbodimentConfig(), cfg)
    first, second = report.commands
    assert first.duration_s == pytest.approx(0.4)  # base 0.02 m at 0.05 m/s is the slowest
    assert first.timeout_s == pytest.approx(0.4 * 2.0 + 2.0)
    assert second.duration_s == 0.0 and second.gripper_pct == -50.0


def test_negative_zero_and_subnormals_become_plain_zero_moves():
    report = validate_chunk(chunk((-0.0, 5e-324, -5e-324, 1)), READY, EmbodimentConfig(), SafetyConfig())
    d = report.commands[0].delta
    assert report.ok and (d.lift_m, d.arm_m, d.base_m) == (0.0, 0.0, 0.0)
    assert all(math.copysign(1.0, v) == 1.0 for v in (d.lift_m, d.arm_m, d.base_m))


# ---- check_move: defence in depth ----


def _cmd(lift=0.0, arm=0.0, base=0.0, pct=50.0):
    return SafeCommand(JointDelta(lift, arm, base), pct, 0.0, 1.0, JointState(0, 0, 0, pct))


def test_check_move_catches_what_a_stale_plan_would_do():
    cfg, anchor = SafetyConfig(), JointState(0.5, 0.2, 0.0, 0.0)
    assert check_move(JointState(1.0, 0.2, 0.0, 0.0), _cmd(lift=0.08), anchor, cfg) == ""
    assert "would leave" in check_move(JointState(1.05, 0.2, 0.0, 0.0), _cmd(lift=0.08), anchor, cfg)
    assert "per-step cap" in check_move(JointState(0.5, 0.2, 0.0, 0.0), _cmd(arm=0.2), anchor, cfg)
    assert "not a finite" in check_move(JointState(0.5, 0.2, 0.0, 0.0), _cmd(base=math.nan), anchor, cfg)
    assert "gripper" in check_move(JointState(0.5, 0.2, 0.0, 0.0), _cmd(pct=math.nan), anchor, cfg)
    assert "measured position" in check_move(JointState(0.5, math.nan, 0.0, 0.0), _cmd(), anchor, cfg)


def test_a_camera_frame_is_as_old_as_the_older_of_its_receipt_and_its_capture():
    fresh = camera_frame_problem(0.1, 0.15, 2.0, "/camera/image_raw")
    assert fresh == ""
    assert camera_frame_problem(0.1, None, 2.0, "/cam") == ""  # unstamped: receipt alone
    never = camera_frame_problem(None, None, 2.0, "/cam")
    assert never.startswith("watchdog: no camera frame on /cam for ever")
    silent = camera_frame_problem(2.5, 0.1, 2.0, "/cam")
    assert "for 2.5 s (limit 2.0 s)" in silent
    # received just now, captured long ago: a frame that waited in a queue, or a replayed bag
    queued = camera_frame_problem(0.05, 3.2, 2.0, "/cam")
    assert queued.startswith("watchdog: no camera frame on /cam captured in the last 2.0 s")
    assert "captured 3.2 s ago" in queued
    # stamped from a clock that runs ahead: the age cannot be trusted
    ahead = camera_frame_problem(0.05, -4.0, 2.0, "/cam")
    assert "4.0 s ahead of the executor's clock" in ahead and "watchdog_checks_stamp" in ahead
    # small offsets either way (capture latency, clock jitter) are within the limit
    assert camera_frame_problem(0.05, -1.9, 2.0, "/cam") == camera_frame_problem(1.9, 1.9, 2.0, "/cam") == ""


def test_a_chunk_planned_from_a_frame_far_behind_the_newest_is_refused():
    s = 1_000_000_000
    newest = 7200 * s
    replayed = chunk_image_problem(newest - 3600 * s, newest, 30.0)  # a chunk from an hour-old bag
    assert "captured 3600.0 s before the newest camera frame (limit 30.0 s" in replayed
    assert "max_chunk_image_age_s" in replayed
    assert chunk_image_problem(newest - 31 * s, newest, 30.0) != ""
    assert chunk_image_problem(newest - 29 * s, newest, 30.0) == ""  # a slow policy, within the limit
    assert chunk_image_problem(newest + 5 * s, newest, 30.0) == ""  # planned from a frame newer than ours
    # not checked: the limit off, an unstamped chunk, no frame yet (the watchdog refuses to move then)
    assert chunk_image_problem(newest - 3600 * s, newest, 0.0) == ""
    assert chunk_image_problem(0, newest, 30.0) == ""
    assert chunk_image_problem(newest - 3600 * s, None, 30.0) == ""


def test_a_policy_allowed_more_than_the_robot_is_named_before_the_graph_starts():
    """Its chunks would be rejected whole mid-task; the shipped pair agrees, a narrower policy is fine."""
    robot = RobotConfig.from_yaml(REPO_CONFIG).safety
    assert policy_limits_problem(ActionLimits(), robot) == ""
    assert policy_limits_problem(ActionLimits(max_abs_cm=5.0, max_steps=4), robot) == ""
    assert policy_limits_problem(ActionLimits(max_abs_cm=10.04), robot) == ""  # writes at most 10.0 at 1 decimal
    wide = policy_limits_problem(ActionLimits(max_abs_cm=15.0), robot)
    assert "moves of up to 15 cm a step (the robot's safety.max_abs_cm is 10)" in wide
    assert "steps a chunk" not in wide and "narrow the policy config's limits" in wide
    long = policy_limits_problem(ActionLimits(max_steps=20), SafetyConfig(max_steps=8))
    assert "20 steps a chunk (the robot's safety.max_steps is 8)" in long and "cm a step" not in long
    both = policy_limits_problem(ActionLimits(max_abs_cm=15.0, max_steps=20), SafetyConfig(max_steps=8))
    assert "cm a step" in both and "steps a chunk" in both
    # what the policy may write really is refused by the robot's check, which the sentence predicts
    report = validate_chunk(chunk((15.0, 0.0, 0.0, 1)), READY, EmbodimentConfig(), robot)
    assert not report.ok and "beyond the action range" in report.reason
