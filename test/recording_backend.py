"""A RobotBackend for tests that integrates every command and fails on any outside the limits."""

from __future__ import annotations

import math

from vlm2vla_ros.robot.embodiment import EmbodimentConfig
from vlm2vla_ros.robot.interface import JointDelta, JointState, RobotStatus
from vlm2vla_ros.robot.safety import SafetyConfig

EPS = 1e-9


class LimitViolation(AssertionError):
    pass


class RecordingBackend:
    """A RobotBackend that integrates commands and records any that break the limits."""

    name = "recording"

    def __init__(
        self,
        safety: SafetyConfig,
        emb: EmbodimentConfig,
        start: JointState,
        homed: bool = True,
        runstopped: bool = False,
    ) -> None:
        self.safety, self.emb = safety, emb
        self.pos = [start.lift_m, start.arm_m, start.base_m]
        self.gripper = start.gripper_pct
        self.homed, self.runstopped = homed, runstopped
        self.anchor: list[float] = []
        self.travel = [0.0, 0.0, 0.0]
        self.calls: list[tuple] = []
        self.violations: list[str] = []
        # The limits, read once from the configuration (hard ranges: no planning margin).
        self.hard = (safety.lift_range_m, safety.arm_range_m, (-math.inf, math.inf))
        self.caps = safety.max_step_m.as_tuple()
        self.travel_caps = safety.max_chunk_travel_m.as_tuple()
        self.boxes = tuple(b + safety.limit_margin_m for b in safety.workspace_m.as_tuple())

    def new_task(self) -> None:
        self.anchor = []

    def new_chunk(self) -> None:
        self.travel = [0.0, 0.0, 0.0]
        if not self.anchor:
            self.anchor = list(self.pos)

    def _violation(self, msg: str) -> None:
        self.violations.append(msg)
        raise LimitViolation(msg)

    def status(self) -> RobotStatus:
        return RobotStatus(
            JointState(self.pos[0], self.pos[1], self.pos[2], self.gripper), self.homed, self.runstopped
        )

    def move_by(self, delta: JointDelta, timeout_s: float) -> None:
        self.calls.append(("move_by", delta, timeout_s))
        if not self.homed or self.runstopped:
            self._violation(f"move while homed={self.homed} runstopped={self.runstopped}")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            self._violation(f"bad timeout {timeout_s!r}")
        for k, dk in enumerate((delta.lift_m, delta.arm_m, delta.base_m)):
            p = self.pos[k]
            if not math.isfinite(dk):
                self._violation(f"joint {k}: non-finite move {dk!r}")
            if abs(dk) > self.caps[k] + EPS:
                self._violation(f"joint {k}: step {dk} above cap")
            if self.travel[k] + abs(dk) > self.travel_caps[k] + EPS:
                self._violation(f"joint {k}: chunk travel {self.travel[k] + abs(dk)} above cap")
            new = p + dk
            lo, hi = self.hard[k]
            if not min(lo, p) - EPS <= new <= max(hi, p) + EPS:
                self._violation(f"joint {k}: {p} + {dk} leaves the range [{lo}, {hi}]")
            if abs(new - self.anchor[k]) > max(self.boxes[k], abs(p - self.anchor[k])) + EPS:
                self._violation(f"joint {k}: {new} is outside the workspace box around {self.anchor[k]}")
            self.travel[k] += abs(dk)
            self.pos[k] = new

    def set_gripper(self, pct: float) -> None:
        self.calls.append(("set_gripper", pct))
        if not self.homed or self.runstopped:
            self._violation("gripper command while not ready")
        if pct not in (self.emb.gripper_open_pct, self.emb.gripper_closed_pct):
            self._violation(f"gripper percent {pct!r} is neither open nor closed")
        self.gripper = pct

    def point_head(self, pan_rad: float, tilt_rad: float) -> None:
        self.calls.append(("point_head", pan_rad, tilt_rad))
        if not self.homed or self.runstopped:
            self._violation("head command while not ready")

    def stop(self) -> None:
        self.calls.append(("stop",))

    def close(self) -> None:
        self.calls.append(("close",))
