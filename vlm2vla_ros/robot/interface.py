"""The one interface every robot backend (stretch_body hardware, simulator) implements.

Units are metres and gripper percent (stretch_body's own), never centimetres: the
embodiment map converts action-language steps into these before anything moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class JointState:
    lift_m: float  # 0 .. 1.10 on an RE1
    arm_m: float  # telescoping arm extension, 0 .. 0.52
    base_m: float  # base odometry along its travel direction since start-up
    gripper_pct: float  # stretch_gripper percent: about -100 closed .. +50 open (RE1)


@dataclass(frozen=True)
class RobotStatus:
    joints: JointState
    homed: bool
    runstopped: bool


@dataclass(frozen=True)
class JointDelta:
    """A relative move of the three prismatic joints, in metres."""

    lift_m: float = 0.0
    arm_m: float = 0.0
    base_m: float = 0.0


class BackendError(RuntimeError):
    """A backend refused or failed a command; the message says why in one sentence."""


class RobotBackend(Protocol):
    name: str

    def status(self) -> RobotStatus: ...

    def move_by(self, delta: JointDelta, timeout_s: float) -> None:
        """Move and block until the motion is done (or raise BackendError)."""

    def set_gripper(self, pct: float) -> None:
        """Command the gripper and return once it has had time to act (or raise BackendError)."""

    def point_head(self, pan_rad: float, tilt_rad: float) -> None:
        """Aim the head camera (radians, already within the head's ranges) and return once it has
        had time to get there (or raise BackendError)."""

    def stop(self) -> None:
        """Stop all motion now. Must never raise."""

    def close(self) -> None:
        """Stop and release the hardware. Must never raise."""
