"""The real-hardware backend, through Hello Robot's stretch_body (0.7.x) API.

stretch_body is imported only when this backend is built: it cannot even be imported without
the robot's fleet configuration. The backend never homes the robot and refuses to move while
it is runstopped or not homed.

What "stop" means here: stretch_body's Robot.stop() shuts the robot down (it closes the serial
ports and releases the lock) and the per-joint stop() calls do the same for one device, so
neither is a motion stop. stop() therefore triggers the runstop in software
(pimu.runstop_event_trigger + push_command), which halts every joint exactly like the
button. It stays set: a person must release the runstop before the robot moves again,
which is the interlock we want after an e-stop or a failure. close() does that, then
Robot.stop().

Waiting: Robot.wait_command() also waits for the end-of-arm Dynamixels to reach their
setpoints, which a gripper closed on an object never does, so it would time out after every
grasp. move_by waits on the joints it moved instead (wait_while_is_moving, after the same
short pause wait_command takes for the motion to start).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..checks import check_keys, real
from .embodiment import GRIPPER_PCT_RANGE
from .head import PAN_LIMITS_RAD, TILT_LIMITS_RAD
from .interface import BackendError, JointDelta, JointState, RobotStatus
from .safety import HW_MAX_SPEED_MPS, PerJoint

FLEET_HINT = "check that HELLO_FLEET_PATH and HELLO_FLEET_ID point at this robot's calibration"


@dataclass(frozen=True)
class StretchBodySettings:
    gripper_settle_s: float = 1.0  # the gripper moves at once; give it this long to close or open
    motion_start_s: float = 0.1  # pause after push_command before asking whether joints move
    head_settle_s: float = 0.5  # the head moves at once; give it this long to reach its aim

    def __post_init__(self) -> None:
        real(self.gripper_settle_s, "stretch_body.gripper_settle_s", 0.0, 10.0)
        real(self.motion_start_s, "stretch_body.motion_start_s", 0.0, 1.0)
        real(self.head_settle_s, "stretch_body.head_settle_s", 0.0, 5.0)

    @classmethod
    def from_dict(cls, data: Any) -> StretchBodySettings:
        return cls(**check_keys(data, ("gripper_settle_s", "motion_start_s", "head_settle_s"), "stretch_body"))


def _start_robot() -> Any:
    """Import stretch_body and start a Robot, turning every known failure into one sentence."""
    try:
        import stretch_body.robot as sb_robot
    except ImportError as exc:
        raise BackendError(
            f"stretch_body is not installed ({exc}): pip install hello-robot-stretch-body"
        ) from exc
    except (KeyError, SystemExit, OSError) as exc:
        raise BackendError(
            f"stretch_body could not load the fleet configuration ({exc!r}): {FLEET_HINT}"
        ) from exc
    try:
        robot = sb_robot.Robot()
    except (KeyError, SystemExit, OSError) as exc:
        raise BackendError(
            f"stretch_body could not load the fleet configuration ({exc!r}): {FLEET_HINT}"
        ) from exc
    if not robot.startup():
        with contextlib.suppress(Exception):
            robot.stop()  # release whatever startup acquired
        raise BackendError(
            "could not start stretch_body: is another process (stretch_driver?) holding the robot?"
        )
    return robot


class StretchBodyBackend:
    """RobotBackend for a real Stretch RE1. Moves block until done; stop() may come from any thread."""

    name = "stretch_body"

    def __init__(self, speeds: PerJoint, settings: StretchBodySettings | None = None) -> None:
        for joint, v in zip(("lift", "arm", "base"), speeds.as_tuple()):
            real(v, f"speed of {joint}", 0.0, HW_MAX_SPEED_MPS[joint])
        self._speeds = speeds
        self._settings = settings or StretchBodySettings()
        self._stop_lock = threading.Lock()
        self._stopping_thread: int | None = None  # the thread inside stop(), if any
        self._robot: Any = _start_robot()

    def status(self) -> RobotStatus:
        r = self._require()
        try:
            s = r.get_status()
            base = s["base"]
            # Distance along the current heading: the executor never rotates the base.
            along = base["x"] * math.cos(base["theta"]) + base["y"] * math.sin(base["theta"])
            joints = JointState(
                lift_m=float(s["lift"]["pos"]),
                arm_m=float(s["arm"]["pos"]),
                base_m=float(along),
                gripper_pct=float(s["end_of_arm"]["stretch_gripper"]["pos_pct"]),
            )
            return RobotStatus(
                joints=joints, homed=bool(r.is_homed()), runstopped=bool(s["pimu"]["runstop_event"])
            )
        except KeyError as exc:
            raise BackendError(
                f"stretch_body status has no {exc} entry: is this an RE1 with a stretch_gripper?"
            ) from exc

    def move_by(self, delta: JointDelta, timeout_s: float) -> None:
        r = self._require()
        self._refuse_unless_ready("move")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise BackendError(f"move timeout must be a positive number of seconds, got {timeout_s!r}")
        moves = [
            (name, d)
            for name, d in (("lift", delta.lift_m), ("arm", delta.arm_m), ("base", delta.base_m))
            if d != 0.0
        ]
        for name, d in moves:
            if not math.isfinite(d):
                raise BackendError(f"refusing to move: {name} delta {d!r} is not a finite number")
        if not moves:
            return
        try:
            for name, d in moves:
                v = getattr(self._speeds, name)
                if name == "base":
                    r.base.translate_by(d, v_m=v)
                else:
                    getattr(r, name).move_by(d, v_m=v)
            r.push_command()
            time.sleep(self._settings.motion_start_s)
            deadline = time.monotonic() + timeout_s
            for name, _ in moves:
                left = max(0.1, deadline - time.monotonic())
                if not getattr(r, name).wait_while_is_moving(timeout=left):
                    raise BackendError(f"the {name} did not finish its move within {timeout_s:.1f} s")
        except BackendError:
            self.stop()
            raise
        except Exception as exc:
            self.stop()
            raise BackendError(f"stretch_body failed during a move: {type(exc).__name__}: {exc}") from exc
        if self.status().runstopped:
            raise BackendError("the robot was runstopped during the move")

    def set_gripper(self, pct: float) -> None:
        r = self._require()
        lo, hi = GRIPPER_PCT_RANGE
        if not lo <= pct <= hi:  # false for NaN too
            raise BackendError(f"gripper percent {pct!r} is outside [{lo}, {hi}]")
        self._refuse_unless_ready("move the gripper")
        try:
            r.end_of_arm.move_to("stretch_gripper", float(pct))
        except Exception as exc:
            self.stop()
            raise BackendError(
                f"stretch_body failed to move the gripper: {type(exc).__name__}: {exc}"
            ) from exc
        time.sleep(self._settings.gripper_settle_s)

    def point_head(self, pan_rad: float, tilt_rad: float) -> None:
        """head_pan and head_tilt to absolute angles (Dynamixels: they move at once, no push_command)."""
        r = self._require()
        for name, value, (lo, hi) in (("pan", pan_rad, PAN_LIMITS_RAD), ("tilt", tilt_rad, TILT_LIMITS_RAD)):
            if not lo <= value <= hi:  # false for NaN too
                raise BackendError(f"head {name} {value!r} rad is outside [{lo}, {hi}]")
        self._refuse_unless_ready("move the head")
        try:
            r.head.move_to("head_pan", float(pan_rad))
            r.head.move_to("head_tilt", float(tilt_rad))
        except Exception as exc:
            self.stop()
            raise BackendError(f"stretch_body failed to move the head: {type(exc).__name__}: {exc}") from exc
        time.sleep(self._settings.head_settle_s)

    def stop(self) -> None:
        """Software runstop: halts all joints; a person releases it. Never raises."""
        r = self._robot
        if r is None or self._stopping_thread == threading.get_ident():
            return  # a signal handler inside this thread's own stop: that stop goes on, and waiting would hang
        with self._stop_lock:
            self._stopping_thread = threading.get_ident()
            try:
                r.pimu.runstop_event_trigger()
                # the whole robot's push, not the pimu's alone: a move queued by another thread and
                # not yet pushed goes out now, milliseconds before the runstop stops it, instead of
                # staying queued and going out with the first command after a person releases it
                r.push_command()
            except Exception:  # nothing more can be done from software; the caller has latched
                pass
            finally:
                self._stopping_thread = None

    def close(self) -> None:
        """Stop, then shut stretch_body down (serial ports, lock). Safe to call twice."""
        r = self._robot
        if r is None:
            return
        self.stop()
        self._robot = None
        with contextlib.suppress(Exception):
            r.stop()

    def _require(self) -> Any:
        if self._robot is None:
            raise BackendError("the stretch_body backend is closed")
        return self._robot

    def _refuse_unless_ready(self, what: str) -> None:
        st = self.status()
        if st.runstopped:
            raise BackendError(f"refusing to {what}: the robot is runstopped (release the runstop button)")
        if not st.homed:
            raise BackendError(
                f"refusing to {what}: the robot is not homed (run stretch_robot_home.py; never done here)"
            )
