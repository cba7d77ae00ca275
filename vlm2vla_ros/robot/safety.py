"""The safety layer: every chunk is checked here, as a whole, before anything moves.

validate_chunk turns an ActionChunk into a plan of SafeCommands, simulating the joint
positions through the chunk so that the absolute limits hold after every step, not only the
first. It trusts nothing: the chunk may come from a model, a topic or a bug.

Two kinds of problem, two treatments:
- Garbage (NaN/inf, non-numbers, values beyond the action language's range, too many or no
  steps, a gripper value other than 0/1) and an unsafe robot state (runstopped, not homed,
  NaN in the status): always rejected, whatever the mode.
- A well-formed move that would overrun a joint limit, the workspace box, a per-step cap or
  the chunk's travel budget: clipped (mode "clip") or rejected (mode "reject"), with the
  reason reported either way.

The workspace box is in joint space, relative to the joint positions at the start of the
task (the "anchor"): the base has no limits of its own, and per-chunk caps alone would let a
long task drift without bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..action_language.types import ActionChunk, ActionLimits, ActionStep
from ..checks import boolean, check_keys, integer, positive, real
from .embodiment import GRIPPER_PCT_RANGE, JOINTS, EmbodimentConfig, map_step
from .interface import JointDelta, JointState, RobotStatus

MODES = ("clip", "reject")
# Stretch RE1 hardware facts (docs/safety.md); configuration may narrow these, never widen them.
HW_RANGE_M = {"lift": (0.0, 1.10), "arm": (0.0, 0.52)}
# Base: 0.1 m/s is its cap whenever the lift is above 0.3 m or the arm out beyond 0.03 m,
# which is nearly always during manipulation, so it is the cap here at all times.
HW_MAX_SPEED_MPS = {"lift": 0.15, "arm": 0.30, "base": 0.10}
MAX_STEP_CAP_M = 0.25
MAX_STEPS_CAP = 256
EPS_M = 1e-9  # float rounding allowance when re-checking a planned move
_STATE_FIELDS = ("lift_m", "arm_m", "base_m", "gripper_pct")


@dataclass(frozen=True)
class PerJoint:
    """One positive number per prismatic joint, in metres (or m/s)."""

    lift: float
    arm: float
    base: float

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.lift, self.arm, self.base)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> PerJoint:
        d = check_keys(data, JOINTS, where)
        missing = [j for j in JOINTS if j not in d]
        if missing:
            raise ValueError(f"{where} is missing {missing}")
        return cls(**{j: positive(d[j], f"{where}.{j}") for j in JOINTS})


@dataclass(frozen=True)
class SafetyConfig:
    """Limits every chunk is held to; defaults are for a Stretch RE1 (see docs/safety.md)."""

    mode: str = "clip"
    max_steps: int = 16
    max_abs_cm: float = 10.0  # the action language's own range; beyond it a value is garbage
    lift_range_m: tuple[float, float] = HW_RANGE_M["lift"]
    arm_range_m: tuple[float, float] = HW_RANGE_M["arm"]
    limit_margin_m: float = 0.02  # planned moves stay this far inside the joint ranges
    max_step_m: PerJoint = PerJoint(0.10, 0.10, 0.10)
    max_chunk_travel_m: PerJoint = PerJoint(0.40, 0.40, 0.30)
    workspace_m: PerJoint = PerJoint(0.60, 0.52, 0.50)  # +- around the task's start position
    max_speed_mps: PerJoint = PerJoint(0.10, 0.15, 0.10)
    require_homed: bool = True
    timeout_factor: float = 2.0  # a move may take this many times its planned duration ...
    timeout_margin_s: float = 2.0  # ... plus this, before it counts as failed
    # (lo, hi) planning range per joint after the margin; the base has none (only the box).
    _plan_range: tuple[tuple[float, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"safety mode must be one of {list(MODES)}, got {self.mode!r}")
        integer(self.max_steps, "max_steps", 1, MAX_STEPS_CAP)
        positive(self.max_abs_cm, "max_abs_cm", 100.0)
        margin = real(self.limit_margin_m, "limit_margin_m", 0.0, 0.1)
        plan = []
        for joint, rng in (("lift", self.lift_range_m), ("arm", self.arm_range_m)):
            hw_lo, hw_hi = HW_RANGE_M[joint]
            if not isinstance(rng, tuple) or len(rng) != 2:
                raise ValueError(f"{joint}_range_m must be a (low, high) pair, got {rng!r}")
            lo = real(rng[0], f"{joint}_range_m low", hw_lo, hw_hi)
            hi = real(rng[1], f"{joint}_range_m high", hw_lo, hw_hi)
            if hi - lo <= 2 * margin:
                raise ValueError(f"{joint}_range_m {rng} leaves no room inside the {margin} m margin")
            plan.append((lo + margin, hi - margin))
        plan.append((-math.inf, math.inf))
        object.__setattr__(self, "_plan_range", tuple(plan))
        for name in ("max_step_m", "max_chunk_travel_m", "workspace_m", "max_speed_mps"):
            if not isinstance(getattr(self, name), PerJoint):
                raise ValueError(f"{name} must be a PerJoint, got {getattr(self, name)!r}")
        for j, v in zip(JOINTS, self.max_step_m.as_tuple()):
            positive(v, f"max_step_m.{j}", MAX_STEP_CAP_M)
        for j, v in zip(JOINTS, self.max_chunk_travel_m.as_tuple()):
            positive(v, f"max_chunk_travel_m.{j}")
        for j, v in zip(JOINTS, self.workspace_m.as_tuple()):
            positive(v, f"workspace_m.{j}")
        for j, v in zip(JOINTS, self.max_speed_mps.as_tuple()):
            positive(v, f"max_speed_mps.{j}", HW_MAX_SPEED_MPS[j])
        boolean(self.require_homed, "require_homed")
        real(self.timeout_factor, "timeout_factor", 1.0, 100.0)
        real(self.timeout_margin_s, "timeout_margin_s", 0.0, 60.0)

    @classmethod
    def from_dict(cls, data: Any) -> SafetyConfig:
        per_joint = ("max_step_m", "max_chunk_travel_m", "workspace_m", "max_speed_mps")
        plain = (
            "mode",
            "max_steps",
            "max_abs_cm",
            "limit_margin_m",
            "require_homed",
            "timeout_factor",
            "timeout_margin_s",
        )
        ranges = ("lift_range_m", "arm_range_m")
        d = check_keys(data, (*plain, *ranges, *per_joint), "safety")
        kwargs: dict = {k: d[k] for k in plain if k in d}
        for k in ranges:
            if k in d:
                if not isinstance(d[k], (list, tuple)):
                    raise ValueError(f"safety.{k} must be a [low, high] list, got {d[k]!r}")
                kwargs[k] = tuple(d[k])
        kwargs.update({k: PerJoint.from_dict(d[k], f"safety.{k}") for k in per_joint if k in d})
        return cls(**kwargs)


@dataclass(frozen=True)
class SafeCommand:
    """One checked step: a joint move (may be all zero), then a gripper command."""

    delta: JointDelta
    gripper_pct: float
    duration_s: float  # planned move time at the velocity caps
    timeout_s: float  # how long the backend may take before the move counts as failed
    target: JointState  # planned joint positions after this step (gripper: commanded percent)


@dataclass(frozen=True)
class SafetyReport:
    """The plan for a chunk, or why there is none. findings say what was clipped and why."""

    commands: tuple[SafeCommand, ...]
    findings: tuple[str, ...]
    reason: str = ""  # non-empty <=> rejected

    @property
    def ok(self) -> bool:
        return not self.reason


def _reject(reason: str, findings: list[str]) -> SafetyReport:
    return SafetyReport(commands=(), findings=tuple(findings), reason=reason)


def _finite_joints(state: Any, what: str) -> str:
    """'' if state is a JointState of finite numbers, else the problem."""
    if not isinstance(state, JointState):
        return f"{what} is not a JointState ({type(state).__name__})"
    a, b, c, d = state.lift_m, state.arm_m, state.base_m, state.gripper_pct
    # Fast path for the usual case: x - x is 0.0 exactly when a float x is finite.
    all_floats = type(a) is float and type(b) is float and type(c) is float and type(d) is float
    if all_floats and (a - a) + (b - b) + (c - c) + (d - d) == 0.0:
        return ""
    for name, v in zip(_STATE_FIELDS, (state.lift_m, state.arm_m, state.base_m, state.gripper_pct)):
        if type(v) is not float and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return f"{what} {name} is {v!r}, not a number"
        if not (-math.inf < v < math.inf):  # also false for NaN; an int of any size compares fine
            return f"{what} {name} is {v!r}, not a finite number"
        if type(v) is not float and abs(v) > 1e300:
            return f"{what} {name} is {v!r}, beyond any joint position"
    return ""


def chunk_image_problem(chunk_stamp_ns: int, newest_frame_ns: int | None, limit_s: float) -> str:
    """'' when a chunk was planned from a frame recent enough to act on, else one sentence why not.

    A chunk planned from a frame captured more than limit_s before the newest frame the executor
    has shows a world that may have changed since: a policy that stalled, or a chunk replayed
    from a bag onto a live robot. Both stamps are the camera's, so the policy's machine clock
    does not matter. Not checked (''): an unstamped chunk (0), no frame yet (the watchdog then
    refuses to move), or limit_s 0."""
    if limit_s <= 0 or chunk_stamp_ns <= 0 or not newest_frame_ns:
        return ""
    behind_s = (newest_frame_ns - chunk_stamp_ns) / 1e9
    if behind_s > limit_s:
        return (f"the chunk was planned from a frame captured {behind_s:.1f} s before the newest camera frame "
                f"(limit {limit_s} s, max_chunk_image_age_s): the world may have changed since (a stalled "
                "policy, or a chunk replayed from a bag)")
    return ""


def camera_frame_problem(received_age_s: float | None, captured_age_s: float | None, limit_s: float, topic: str) -> str:
    """'' when the last camera frame is recent enough to move on, else one sentence saying why not.

    A frame is as old as the older of two ages: since the executor received it (the camera
    stopped) and, when it carries a capture stamp, since it was captured (a frame that waited in
    a callback queue, or one replayed from a bag). A stamp further in the future than the limit
    means the camera's clock is not the executor's; an age that cannot be trusted is refused.
    `received_age_s` None: no frame yet; `captured_age_s` None: the frame has no stamp.
    """
    if received_age_s is None or received_age_s > limit_s:
        age = "ever" if received_age_s is None else f"{received_age_s:.1f} s"
        return f"watchdog: no camera frame on {topic} for {age} (limit {limit_s} s)"
    if captured_age_s is not None and captured_age_s > limit_s:
        return (
            f"watchdog: no camera frame on {topic} captured in the last {limit_s} s (the last one "
            f"received was captured {captured_age_s:.1f} s ago)"
        )
    if captured_age_s is not None and captured_age_s < -limit_s:
        return (
            f"watchdog: the camera frames on {topic} are stamped {-captured_age_s:.1f} s ahead of the "
            "executor's clock; the camera's clock must be the executor's (or set watchdog_checks_stamp "
            "false to count a frame's age from its receipt only)"
        )
    return ""


def status_problem(status: Any, cfg: SafetyConfig) -> str:
    """'' when the robot may move, else one sentence saying why not."""
    if not isinstance(status, RobotStatus):
        return f"robot status is not a RobotStatus ({type(status).__name__})"
    problem = _finite_joints(status.joints, "robot status")
    if problem:
        return problem
    if status.runstopped is not False:
        return "the robot is runstopped: release the runstop button to allow motion"
    if cfg.require_homed and status.homed is not True:
        return "the robot is not homed: run stretch_robot_home.py first (this code never homes by itself)"
    return ""


def policy_limits_problem(limits: ActionLimits, safety: SafetyConfig) -> str:
    """'' when every chunk a policy held to `limits` may write passes this robot's garbage checks,
    else one sentence saying what to change. A policy allowed more than the robot is safe (the
    executor rejects those chunks whole) but fails its tasks mid-run, so a graph that knows both
    configs refuses to start instead."""
    largest_cm = limits.largest_cm  # what the grammar can write, not the asked bound
    wider = []
    if largest_cm > safety.max_abs_cm:
        wider.append(f"moves of up to {largest_cm:g} cm a step (the robot's safety.max_abs_cm is {safety.max_abs_cm:g})")
    if limits.max_steps > safety.max_steps:
        wider.append(f"{limits.max_steps} steps a chunk (the robot's safety.max_steps is {safety.max_steps})")
    if not wider:
        return ""
    return ("the policy's action limits allow " + " and ".join(wider) + ", which the executor rejects as garbage, "
            "failing the task mid-run: narrow the policy config's limits (max_abs_cm, max_steps; its decoder then "
            "never writes beyond them) or widen the robot config's safety section. To move the robot less, lower "
            "embodiment.action_scale or safety.max_step_m instead, which scale or clip")


def _step_problem(i: int, step: Any, max_abs_cm: float) -> str:
    """'' when a step is well formed, else why it is garbage."""
    if not isinstance(step, ActionStep):
        return f"step {i} is not an ActionStep ({type(step).__name__})"
    for name in ("dx", "dy", "dz"):
        v = getattr(step, name)
        if type(v) is not float and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return f"step {i} {name} is {v!r}, not a number"
        if not (-math.inf < v < math.inf):  # NaN fails this too; huge ints compare without overflow
            return f"step {i} {name} is {v!r}: NaN and infinity are never executed"
        if abs(v) > max_abs_cm:
            return f"step {i} {name} = {v!r} cm is beyond the action range of +-{max_abs_cm} cm"
    g = step.gripper
    if isinstance(g, bool) or not isinstance(g, (int, float)) or g not in (0, 1):
        return f"step {i} gripper is {g!r}; it must be 1 (open) or 0 (closed)"
    return ""


def validate_chunk(
    chunk: Any,
    status: Any,
    emb: EmbodimentConfig,
    cfg: SafetyConfig,
    anchor: JointState | None = None,
) -> SafetyReport:
    """Check a whole chunk against the limits and plan it, or say why it cannot run.

    status: the robot now. anchor: the joint positions at the start of the task, which the
    workspace box is centred on (None: centre it on the current position).
    """
    problem = status_problem(status, cfg)
    if problem:
        return _reject(problem, [])
    if anchor is None:
        anchor = status.joints
    problem = _finite_joints(anchor, "task start position")
    if problem:
        return _reject(problem, [])
    steps = chunk.steps if isinstance(chunk, ActionChunk) else None
    if not isinstance(steps, tuple):
        return _reject(f"the chunk is not an ActionChunk with a tuple of steps ({type(chunk).__name__})", [])
    if not steps:
        return _reject("the chunk has no steps", [])
    if len(steps) > cfg.max_steps:
        return _reject(f"the chunk has {len(steps)} steps, more than the maximum of {cfg.max_steps}", [])
    for i, step in enumerate(steps):
        problem = _step_problem(i, step, cfg.max_abs_cm)
        if problem:
            return _reject(problem, [])

    j = status.joints
    pos = [float(j.lift_m), float(j.arm_m), float(j.base_m)]
    start = (float(anchor.lift_m), float(anchor.arm_m), float(anchor.base_m))
    box = cfg.workspace_m.as_tuple()
    # Allowed position range per joint: joint range (after margin) intersected with the box.
    # A joint already outside it may move back in but never further out.
    los = [max(cfg._plan_range[k][0], start[k] - box[k]) for k in range(3)]
    his = [min(cfg._plan_range[k][1], start[k] + box[k]) for k in range(3)]
    step_cap = cfg.max_step_m.as_tuple()
    travel_cap = cfg.max_chunk_travel_m.as_tuple()
    travel_left = list(travel_cap)
    speed = cfg.max_speed_mps.as_tuple()
    clip = cfg.mode == "clip"
    findings: list[str] = []
    commands = []
    for i, step in enumerate(steps):
        w_lift, w_arm, w_base, pct = map_step(step, emb)
        out = [w_lift, w_arm, w_base]
        for k in range(3):
            d = out[k]
            if d == 0.0:
                out[k] = 0.0  # no -0.0 reaches a backend
                continue
            p = pos[k]
            room = max(his[k], p) - p if d > 0 else p - min(los[k], p)
            limit = min(step_cap[k], travel_left[k], room)
            if abs(d) > limit:
                if limit == step_cap[k]:
                    why = f"per-step cap of {step_cap[k]:.3f} m"
                elif limit == travel_left[k]:
                    why = f"chunk travel cap of {travel_cap[k]:.3f} m"
                else:
                    why = f"limit/workspace range [{los[k]:.3f}, {his[k]:.3f}] m from {p:.3f} m"
                if not clip:
                    return _reject(f"step {i}: {JOINTS[k]} move {d:+.3f} m exceeds the {why}", findings)
                d = math.copysign(limit, d)
                findings.append(f"step {i}: {JOINTS[k]} {out[k]:+.3f} m clipped to {d:+.3f} m ({why})")
                out[k] = d
            pos[k] = p + d
            travel_left[k] = max(0.0, travel_left[k] - abs(d))
        duration = max(abs(out[0]) / speed[0], abs(out[1]) / speed[1], abs(out[2]) / speed[2])
        commands.append(
            SafeCommand(
                delta=JointDelta(lift_m=out[0], arm_m=out[1], base_m=out[2]),
                gripper_pct=pct,
                duration_s=duration,
                timeout_s=duration * cfg.timeout_factor + cfg.timeout_margin_s,
                target=JointState(lift_m=pos[0], arm_m=pos[1], base_m=pos[2], gripper_pct=pct),
            )
        )
    return SafetyReport(commands=tuple(commands), findings=tuple(findings))


def check_move(pos: JointState, cmd: SafeCommand, anchor: JointState, cfg: SafetyConfig) -> str:
    """Defence in depth, run right before a command reaches a backend: '' if it is in limits.

    Uses the robot's measured position and the hard ranges (the planning margin absorbs
    tracking error), so a plan that was made from a stale position is still caught.
    """
    problem = _finite_joints(pos, "measured position")
    if problem:
        return problem
    d = (cmd.delta.lift_m, cmd.delta.arm_m, cmd.delta.base_m)
    p = (pos.lift_m, pos.arm_m, pos.base_m)
    a = (anchor.lift_m, anchor.arm_m, anchor.base_m)
    hard = (
        (cfg.lift_range_m[0], cfg.lift_range_m[1]),
        (cfg.arm_range_m[0], cfg.arm_range_m[1]),
        (-math.inf, math.inf),
    )
    m = cfg.limit_margin_m
    caps, boxes = cfg.max_step_m.as_tuple(), cfg.workspace_m.as_tuple()
    for k in range(3):
        if not math.isfinite(d[k]):
            return f"{JOINTS[k]} move {d[k]!r} is not a finite number"
        if abs(d[k]) > caps[k] + EPS_M:
            return f"{JOINTS[k]} move {d[k]:+.3f} m is above the per-step cap"
        if d[k] == 0.0:
            continue
        box = boxes[k] + m
        lo = min(max(hard[k][0], a[k] - box), p[k]) - EPS_M
        hi = max(min(hard[k][1], a[k] + box), p[k]) + EPS_M
        if not lo <= p[k] + d[k] <= hi:
            return f"{JOINTS[k]} move {d[k]:+.3f} m from {p[k]:.3f} m would leave [{lo:.3f}, {hi:.3f}] m"
    g_lo, g_hi = GRIPPER_PCT_RANGE
    if not g_lo <= cmd.gripper_pct <= g_hi:  # also false for NaN
        return f"gripper percent {cmd.gripper_pct!r} is outside [{g_lo}, {g_hi}]"
    return ""
