"""The embodiment map: task-frame steps in centimetres -> Stretch joint deltas in metres.

The action language is robot-agnostic (+dx forward along the arm, +dy left, +dz up); this is
the one place that decides which Stretch joint each axis drives, with which sign and scale.
Default (docs/safety.md, config/stretch_re1.yaml): +dx extends the arm, +dy drives the base forward, +dz raises the lift.
It does not check limits: the safety layer does that on what this returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..action_language.types import ActionStep
from ..checks import check_keys, positive, real
from .interface import JointDelta

JOINTS = ("lift", "arm", "base")
AXES = ("dx", "dy", "dz")
NO_JOINT = "none"  # an axis mapped to "none" is ignored (e.g. no base motion on a first run)
CM_TO_M = 0.01
MAX_AXIS_SCALE = 10.0
GRIPPER_PCT_RANGE = (-100.0, 100.0)  # stretch_gripper's own percent scale


@dataclass(frozen=True)
class AxisMap:
    """Which joint one task axis drives: joint metres = sign * scale * action_scale * cm / 100."""

    joint: str
    sign: int = 1
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.joint not in (*JOINTS, NO_JOINT):
            raise ValueError(f"axis joint must be one of {[*JOINTS, NO_JOINT]}, got {self.joint!r}")
        if isinstance(self.sign, bool) or self.sign not in (1, -1):
            raise ValueError(f"axis sign must be 1 or -1, got {self.sign!r}")
        positive(self.scale, "axis scale", MAX_AXIS_SCALE)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> AxisMap:
        d = check_keys(data, ("joint", "sign", "scale"), where)
        if "joint" not in d:
            raise ValueError(f"{where} needs a 'joint' ({[*JOINTS, NO_JOINT]})")
        return cls(joint=d["joint"], sign=d.get("sign", 1), scale=d.get("scale", 1.0))


@dataclass(frozen=True)
class EmbodimentConfig:
    """How action-language steps drive a Stretch RE1.

    action_scale multiplies every move: start at 0.3 on a new robot, raise it once the
    motions look right. gripper_closed_pct -50 squeezes firmly without the -100 maximum
    force that can crush soft objects; 0 is fingertips touching, +50 fully open on an RE1.
    """

    dx: AxisMap = AxisMap("arm")
    dy: AxisMap = AxisMap("base")
    dz: AxisMap = AxisMap("lift")
    action_scale: float = 1.0
    gripper_open_pct: float = 50.0
    gripper_closed_pct: float = -50.0
    # (joint index or -1, metres per cm) for dx, dy, dz; derived once so mapping a step is cheap.
    _factors: tuple[tuple[int, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positive(self.action_scale, "action_scale", 1.0)
        lo, hi = GRIPPER_PCT_RANGE
        real(self.gripper_open_pct, "gripper_open_pct", lo, hi)
        real(self.gripper_closed_pct, "gripper_closed_pct", lo, hi)
        if self.gripper_open_pct <= self.gripper_closed_pct:
            raise ValueError(
                f"gripper_open_pct ({self.gripper_open_pct}) must be above gripper_closed_pct "
                f"({self.gripper_closed_pct})"
            )
        axes = (self.dx, self.dy, self.dz)
        driven = [a.joint for a in axes if a.joint != NO_JOINT]
        if len(driven) != len(set(driven)):
            raise ValueError(f"each joint may be driven by one axis only, got {driven}")
        factors = tuple(
            (-1, 0.0)
            if a.joint == NO_JOINT
            else (JOINTS.index(a.joint), a.sign * a.scale * self.action_scale * CM_TO_M)
            for a in axes
        )
        object.__setattr__(self, "_factors", factors)

    @classmethod
    def from_dict(cls, data: Any) -> EmbodimentConfig:
        d: Mapping[str, Any] = check_keys(
            data, (*AXES, "action_scale", "gripper_open_pct", "gripper_closed_pct"), "embodiment"
        )
        kwargs: dict = {k: AxisMap.from_dict(d[k], f"embodiment.{k}") for k in AXES if k in d}
        kwargs.update({k: d[k] for k in ("action_scale", "gripper_open_pct", "gripper_closed_pct") if k in d})
        return cls(**kwargs)


def step_to_joint_delta(step: ActionStep, cfg: EmbodimentConfig) -> tuple[JointDelta, float]:
    """Map one step to (joint delta in metres, gripper percent).

    Values are taken as they are (NaN stays NaN): the safety layer rejects those before and
    checks every limit after. Only the gripper must be exactly 0 or 1.
    """
    lift, arm, base, pct = map_step(step, cfg)
    return JointDelta(lift_m=lift, arm_m=arm, base_m=base), pct


def map_step(step: ActionStep, cfg: EmbodimentConfig) -> tuple[float, float, float, float]:
    """step_to_joint_delta as a plain tuple (lift_m, arm_m, base_m, gripper_pct), for hot loops."""
    out = [0.0, 0.0, 0.0]
    for (joint, factor), value in zip(cfg._factors, (step.dx, step.dy, step.dz)):
        if joint >= 0:
            out[joint] += factor * value
    if step.gripper == 1:
        pct = cfg.gripper_open_pct
    elif step.gripper == 0:
        pct = cfg.gripper_closed_pct
    else:
        raise ValueError(f"gripper must be 1 (open) or 0 (closed), got {step.gripper!r}")
    return out[0], out[1], out[2], pct
