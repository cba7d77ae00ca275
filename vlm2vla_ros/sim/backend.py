"""SimBackend: the RobotBackend protocol on top of a SimWorld, so the executor can drive the sim.

Joint space maps onto the gripper position with fixed geometry (SimGeometry): arm extension
moves x, base translation moves y, lift height moves z, and the gripper is open at or above a
percentage threshold. This is the same axis map as the default embodiment map, so an action
chunk executed here moves the simulated gripper as it would move the real one.
Moves are instantaneous unless time_scale > 0; a move longer than its timeout at the sim's
joint speeds executes the part that fits and then raises, as a real timeout would leave it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from vlm2vla_ros.checks import real
from vlm2vla_ros.robot.interface import BackendError, JointDelta, JointState, RobotStatus
from vlm2vla_ros.sim.views import TABLE_VIEW, check_view
from vlm2vla_ros.sim.world import SimWorld


@dataclass(frozen=True)
class SimGeometry:
    """Where the sim's gripper is for given joint positions, and how fast joints move."""

    arm_at_x0_m: float = 0.0  # arm extension that puts the fingertips at x = 0
    base_at_y0_m: float = 0.0  # base odometry that puts the fingertips at y = 0
    lift_at_table_m: float = 0.75  # lift height that puts the fingertips on the table
    open_threshold_pct: float = 10.0  # gripper_pct at or above this is open
    open_pct: float = 50.0  # reported after an open world is loaded
    closed_pct: float = -50.0  # reported after a closed world is loaded
    lift_speed_m_s: float = 0.095  # stretch_body defaults (RE1)
    arm_speed_m_s: float = 0.14
    base_speed_m_s: float = 0.1


class SimBackend:
    """A simulated Stretch end effector over a tabletop; safe to call from several threads."""

    name = "sim"

    def __init__(
        self, world: SimWorld, geometry: SimGeometry | None = None, time_scale: float = 0.0, view: str = TABLE_VIEW
    ) -> None:
        real(time_scale, "time_scale", lo=0.0)
        self.view = check_view(view)
        """The head camera's view (sim.views.VIEWS): the whole table, or following the gripper."""
        self.geometry = geometry or SimGeometry()
        self.time_scale = time_scale
        self._lock = threading.RLock()
        self._runstopped = False
        self._closed = False
        self._world = world.copy()
        self._gripper_pct = self._pct_for(self._world.gripper_open)
        self.last_executed = JointDelta()
        self.head_pose: tuple[float, float] | None = None
        """The last (pan, tilt) the executor aimed the head at; None before any."""

    # ---- the RobotBackend protocol ---------------------------------------------------------

    def status(self) -> RobotStatus:
        g = self.geometry
        with self._lock:
            x, y, z = self._world.gripper
            joints = JointState(
                lift_m=z + g.lift_at_table_m,
                arm_m=x + g.arm_at_x0_m,
                base_m=y + g.base_at_y0_m,
                gripper_pct=self._gripper_pct,
            )
            return RobotStatus(joints=joints, homed=True, runstopped=self._runstopped)

    def move_by(self, delta: JointDelta, timeout_s: float) -> None:
        values = (delta.lift_m, delta.arm_m, delta.base_m)
        if not all(_finite_number(v) for v in values):
            raise BackendError(f"sim move_by refused a non-finite or non-numeric joint delta {delta}.")
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise BackendError(f"sim move_by needs a positive finite timeout, got {timeout_s!r}.")
        g = self.geometry
        duration = max(
            abs(delta.lift_m) / g.lift_speed_m_s,
            abs(delta.arm_m) / g.arm_speed_m_s,
            abs(delta.base_m) / g.base_speed_m_s,
        )
        fraction = 1.0 if duration <= timeout_s else timeout_s / duration
        with self._lock:
            self._check_ready("move")
            dx, dy, dz = self._world.move_gripper(
                delta.arm_m * fraction, delta.base_m * fraction, delta.lift_m * fraction
            )
            self.last_executed = JointDelta(lift_m=dz, arm_m=dx, base_m=dy)
        if self.time_scale > 0:
            time.sleep(min(duration, timeout_s) * self.time_scale)
        if fraction < 1.0:
            raise BackendError(
                f"sim move timed out: it needs {duration:.2f} s at the sim's joint speeds but the timeout was "
                f"{timeout_s:.2f} s, so it stopped part way."
            )

    def set_gripper(self, pct: float) -> None:
        if not _finite_number(pct):
            raise BackendError(f"sim set_gripper needs a finite percentage, got {pct!r}.")
        with self._lock:
            self._check_ready("gripper command")
            self._world.set_gripper(pct >= self.geometry.open_threshold_pct)
            self._gripper_pct = float(pct)

    def point_head(self, pan_rad: float, tilt_rad: float) -> None:
        """Records the aim (head_pose). The rendered views need no head: the gripper view is
        drawn centred on the gripper, the whole-table view from a fixed pose."""
        if not (_finite_number(pan_rad) and _finite_number(tilt_rad)):
            raise BackendError(f"sim point_head needs finite angles, got {(pan_rad, tilt_rad)!r}.")
        with self._lock:
            self._check_ready("head command")
            self.head_pose = (float(pan_rad), float(tilt_rad))

    def stop(self) -> None:
        """Moves are atomic here, so there is never motion in flight to halt."""

    def close(self) -> None:
        with self._lock:
            self._closed = True

    # ---- sim extras ----------------------------------------------------------------------

    def trigger_runstop(self) -> None:
        """Press the simulated run-stop: every later command raises until clear_runstop()."""
        with self._lock:
            self._runstopped = True

    def clear_runstop(self) -> None:
        with self._lock:
            self._runstopped = False

    @property
    def world(self) -> SimWorld:
        """A copy of the current world (render it, check success) that later moves do not touch."""
        with self._lock:
            return self._world.copy()

    def reset(self, world: SimWorld) -> None:
        """Load a new scene; the run-stop state is kept."""
        with self._lock:
            self._world = world.copy()
            self._gripper_pct = self._pct_for(self._world.gripper_open)
            self.last_executed = JointDelta()

    def render(self, width: int = 224, height: int = 224) -> np.ndarray:
        from vlm2vla_ros.sim.render import render  # cv2 is only needed when rendering

        return render(self.world, width, height, self.view)

    def _pct_for(self, open_: bool) -> float:
        return self.geometry.open_pct if open_ else self.geometry.closed_pct

    def _check_ready(self, what: str) -> None:
        if self._closed:
            raise BackendError(f"sim {what} refused: the backend is closed.")
        if self._runstopped:
            raise BackendError(f"sim {what} refused: the run-stop is pressed.")


def _finite_number(value: object) -> bool:
    """A finite int or float (a bool is a typo, not a number, here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
